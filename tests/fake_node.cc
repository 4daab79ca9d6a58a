// dtx_fake_node: a test-only stand-in for dtx-participant / dtx-coordinator so
// the supervisor and dtxctl can be tested without the real nodes. It takes the
// nodes' flags (participant/main.cc, coordinator/main.cc; node/README.md
// "Listeners and access"), serves the client service its --name implies
// on --listen and the Admin service (GetStatus / ListInDoubt / SetFailpoint /
// GetTrace) on --admin-listen, each with a stock TSimpleServer, and exits 0
// on SIGTERM (over TLS with --certs-dir, plaintext with --insecure). Started
// through a symlink named dtx-participant or dtx-coordinator. The peer
// listener's flags (--peer-listen, --participant-clients, --peer-client) are
// taken and not served: no fake node speaks the peer protocol.
//
// Environment knobs (tests set them for `dtxctl cluster up`):
//   DTX_FAKE_EXIT_AT_START=<code>   print a message and exit with <code> at once
//   DTX_FAKE_EXIT_NODE=<name>       ... only for this node (default: every node)
//   DTX_FAKE_IGNORE_SIGTERM=1       ignore SIGTERM (only SIGKILL stops it)
// A coordinator reports the --role it was given ("primary" by default);
// SetFailpoint("fake.role", ROLE) changes it (a stand-in for a failover).
// SetFailpoint("fake.exit", CODE) answers, then appends a "fail-stop: ..."
// line to --log-file and exits with CODE (74: a node whose WAL sync failed).
#include <signal.h>
#include <unistd.h>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/server/TSimpleServer.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSSLServerSocket.h>
#include <thrift/transport/TSSLSocket.h>
#include <thrift/transport/TServerSocket.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include "Admin.h"
#include "Coordinator.h"
#include "Participant.h"
#include "common/wire.h"
#include "tools/cluster_config.h"

namespace po = boost::program_options;
using namespace apache::thrift;

namespace {

const auto kStart = std::chrono::steady_clock::now();
std::string g_name;
bool g_coordinator = false;
std::mutex g_mu;  // the two servers' threads share what follows
std::string g_armed;
std::string g_role = "primary";  // a coordinator's reported role
std::string g_log_file;          // --log-file

// "primary" -> PRIMARY; a name that is no role reports as 0 (not a role).
dtx::rpc::NodeRole::type RoleFromName(const std::string& name) {
  for (dtx::NodeRole r : {dtx::NodeRole::kParticipant, dtx::NodeRole::kPrimary,
                          dtx::NodeRole::kStarting, dtx::NodeRole::kBackup}) {
    if (name == dtx::NodeRoleName(r)) return dtx::ToRpc(r);
  }
  return static_cast<dtx::rpc::NodeRole::type>(0);
}

void FillStatus(dtx::rpc::NodeStatus& s, std::string role) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (role.empty()) role = g_role;
  s.name = g_name;
  s.role = RoleFromName(role);
  s.epoch = 1;
  s.uptime_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - kStart)
                    .count();
  s.durable_lsn = 0;
  s.in_flight = 0;
  s.in_doubt = 0;
  if (!g_armed.empty()) s.__set_counters({{"fake_failpoint_" + g_armed, 1}});
}

class FakeParticipant : public dtx::rpc::ParticipantIf {
 public:
  void Read(dtx::rpc::ReadResult& r, const std::string&) override { r.found = false; }
  void GetStatus(dtx::rpc::NodeStatus& s) override { FillStatus(s, "participant"); }
};

class FakeCoordinator : public dtx::rpc::CoordinatorIf {
 public:
  void GetShardMap(dtx::rpc::ShardMap& m) override { m.scheme = "hash"; }
  void Commit(dtx::rpc::CommitResult& r, const dtx::rpc::CommitRequest&) override {
    r.outcome = dtx::rpc::Outcome::ABORTED;
  }
  dtx::rpc::Outcome::type GetOutcome(const dtx::rpc::TxId&) override {
    return dtx::rpc::Outcome::UNKNOWN;
  }
  void GetStatus(dtx::rpc::NodeStatus& s) override { FillStatus(s, ""); }
};

class FakeAdmin : public dtx::rpc::AdminIf {
 public:
  void GetStatus(dtx::rpc::NodeStatus& s) override {
    FillStatus(s, g_coordinator ? "" : "participant");
  }
  void ListInDoubt(std::vector<dtx::rpc::InDoubtTx>&) override {}
  // A node without tracing: GetTrace fails like a method it does not serve.
  void GetTrace(dtx::rpc::TraceResponse&, const dtx::rpc::TxId&) override {
    throw TApplicationException(TApplicationException::UNKNOWN_METHOD, "GetTrace: no tracing");
  }
  // "fake.role" sets the role a coordinator reports (a stand-in for a
  // failover); "bad" is refused as an unknown failpoint.
  void SetFailpoint(const std::string& name, const std::string& action) override {
    if (name == "bad") {
      dtx::rpc::DtxError e;
      e.code = dtx::rpc::ErrorCode::BAD_ARGUMENT;
      e.message = "unknown failpoint 'bad'";
      throw e;
    }
    if (name == "fake.exit") {
      const int code = std::atoi(action.c_str());
      std::thread([code] {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the answer goes first
        std::ofstream(g_log_file, std::ios::app)
            << "2026-01-01T00:00:00.000000Z error node=" << g_name
            << " fail-stop: fake: told to exit with status " << code << "; exiting\n";
        ::_exit(code);
      }).detach();
      return;
    }
    std::lock_guard<std::mutex> lock(g_mu);
    if (g_coordinator && name == "fake.role") {
      g_role = action;
      return;
    }
    g_armed = name + "=" + action;
  }
};

// Serves `processor` on host:port until the process exits.
// With --certs-dir: Thrift's own TLS server socket with the node's
// certificate, requiring a client certificate of the CA (the fake node does
// not check whose: dtxctl's side of the handshake is what the tests cover).
std::shared_ptr<transport::TSSLSocketFactory> g_tls;

class AllowAnyVerifiedPeer : public transport::AccessManager {
 public:
  Decision verify(const sockaddr_storage& /*sa*/) noexcept override { return ALLOW; }
};

void Serve(std::shared_ptr<TProcessor> processor, const std::string& host, int port) {
  std::shared_ptr<transport::TServerSocket> socket;
  if (g_tls != nullptr) {
    socket = std::make_shared<transport::TSSLServerSocket>(host, port, g_tls);
  } else {
    socket = std::make_shared<transport::TServerSocket>(host, port);
  }
  server::TSimpleServer server(std::move(processor), socket,
                               std::make_shared<transport::TFramedTransportFactory>(),
                               std::make_shared<protocol::TBinaryProtocolFactory>());
  server.serve();
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen, admin_listen, dir, coordinator, coordinators, participants, log_level, role,
      peer, peer_listen, participant_clients, peer_client, certs_dir;
  bool insecure = false;
  po::options_description desc("dtx_fake_node");
  desc.add_options()("name", po::value<std::string>(&g_name)->required(), "")(
      "listen", po::value<std::string>(&listen)->required(), "")(
      "admin-listen", po::value<std::string>(&admin_listen), "")(
      "peer-listen", po::value<std::string>(&peer_listen), "")(
      "participant-clients", po::value<std::string>(&participant_clients), "")(
      "peer-client", po::value<std::string>(&peer_client), "")(
      "dir", po::value<std::string>(&dir)->required(), "")(
      "coordinator", po::value<std::string>(&coordinator), "")(
      "coordinators", po::value<std::string>(&coordinators), "")(
      "participants", po::value<std::string>(&participants), "")(
      "log-file", po::value<std::string>(&g_log_file), "")("log-level",
                                                           po::value<std::string>(&log_level), "")(
      "role", po::value<std::string>(&role), "")("peer", po::value<std::string>(&peer), "")(
      "enable-failpoints", po::bool_switch(), "")("insecure", po::bool_switch(&insecure), "")(
      "certs-dir", po::value<std::string>(&certs_dir), "");
  try {
    po::variables_map vm;
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "dtx_fake_node: " << e.what() << "\n";
    return 2;
  }
  if (insecure == !certs_dir.empty()) {
    std::cerr << "dtx_fake_node: give --certs-dir DIR or --insecure\n";
    return 2;
  }
  if (!certs_dir.empty()) {
    try {
      // SSLTLS: OpenSSL's flexible method, so TLS 1.3 (the only version the
      // dtx side speaks, common/tls.h) is negotiated.
      g_tls = std::make_shared<transport::TSSLSocketFactory>(transport::SSLProtocol::SSLTLS);
      g_tls->server(true);
      g_tls->loadCertificate((certs_dir + "/" + g_name + ".crt").c_str());
      g_tls->loadPrivateKey((certs_dir + "/" + g_name + ".key").c_str());
      g_tls->loadTrustedCertificates((certs_dir + "/ca.crt").c_str());
      g_tls->authenticate(true);
      g_tls->access(std::make_shared<AllowAnyVerifiedPeer>());
    } catch (const std::exception& e) {
      std::cerr << "dtx_fake_node " << g_name << ": --certs-dir: " << e.what() << "\n";
      return 1;
    }
  }
  const char* exit_code = std::getenv("DTX_FAKE_EXIT_AT_START");
  const char* exit_node = std::getenv("DTX_FAKE_EXIT_NODE");
  if (exit_code != nullptr && (exit_node == nullptr || g_name == exit_node)) {
    std::cerr << "dtx_fake_node " << g_name << ": exiting at start as told\n";
    return std::atoi(exit_code);
  }
  if (!role.empty()) g_role = role;
  auto hp = dtx::tools::ParseHostPort(listen);
  if (!hp.ok()) {
    std::cerr << "dtx_fake_node: " << hp.status().ToString() << "\n";
    return 2;
  }
  // OpenSSL writes (an alert, close_notify) to a peer that already closed
  // its end, as dtxctl does after each call: that must be an error of that
  // connection, not a SIGPIPE that kills the node.
  ::signal(SIGPIPE, SIG_IGN);
  if (std::getenv("DTX_FAKE_IGNORE_SIGTERM") != nullptr) {
    ::signal(SIGTERM, SIG_IGN);
  } else {
    ::signal(SIGTERM, [](int) { ::_exit(0); });
  }
  std::shared_ptr<TProcessor> processor;
  auto dash = g_name.find('-');
  g_coordinator = g_name.substr(0, dash) == "coordinator";
  if (g_coordinator) {
    processor =
        std::make_shared<dtx::rpc::CoordinatorProcessor>(std::make_shared<FakeCoordinator>());
  } else {
    processor =
        std::make_shared<dtx::rpc::ParticipantProcessor>(std::make_shared<FakeParticipant>());
  }
  try {
    if (!admin_listen.empty()) {
      auto admin_hp = dtx::tools::ParseHostPort(admin_listen);
      if (!admin_hp.ok()) {
        std::cerr << "dtx_fake_node: --admin-listen: " << admin_hp.status().ToString() << "\n";
        return 2;
      }
      std::thread([host = admin_hp->host, port = admin_hp->port] {
        try {
          Serve(std::make_shared<dtx::rpc::AdminProcessor>(std::make_shared<FakeAdmin>()), host,
                port);
        } catch (const std::exception& e) {
          std::cerr << "dtx_fake_node " << g_name << " admin: " << e.what() << "\n";
          ::_exit(1);
        }
      }).detach();
    }
    std::cerr << "dtx_fake_node " << g_name << " serving on " << listen << "\n";
    Serve(processor, hp->host, hp->port);
  } catch (const std::exception& e) {
    std::cerr << "dtx_fake_node " << g_name << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
