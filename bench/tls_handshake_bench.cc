// dtx-tls-handshake-bench: what a TLS 1.3 handshake costs a connection.
//
//   memory   both ends of a TlsSession handshake in one thread, no socket:
//            the CPU time of one mutual-TLS handshake (client + server)
//   loopback a PeerChannel connects to an RpcServer on its own loop thread
//            and makes one small call, plaintext and TLS, alternating:
//            the latency a new connection adds before its first reply
//
//   records  on an established session: one small message (--message-bytes)
//            encrypted by one end and decrypted by the other, in memory, and
//            one Read round trip over loopback, plaintext and TLS alternating:
//            what TLS adds to every message once the handshake is paid
//
// Prints the median and p99 in microseconds. Certificates are made in a
// temporary directory with common/certs.h (--key-type ecdsa|rsa). Not a
// test: numbers depend on the machine and its load.
#include <boost/program_options.hpp>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "Participant.h"
#include "common/certs.h"
#include "common/log.h"
#include "common/event_loop.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/tls.h"

namespace po = boost::program_options;
using namespace dtx;
using Clock = std::chrono::steady_clock;
using apache::thrift::TDelayedException;

namespace {

// Answers Read at once; nothing else is called.
class ReadOnlyParticipant : public rpc::ParticipantCobSvIf {
 public:
  void Read(std::function<void(const rpc::ReadResult&)> cob,
            std::function<void(TDelayedException*)>, const std::string&) override {
    cob(rpc::ReadResult());
  }
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override {
    cob(rpc::NodeStatus());
  }
};

struct Summary {
  double median_us = 0;
  double p99_us = 0;
};

Summary Summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  Summary s;
  if (us.empty()) return s;
  s.median_us = us[us.size() / 2];
  s.p99_us = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  return s;
}

void Check(const Status& s, const char* what) {
  if (!s.ok()) {
    std::cerr << what << ": " << s.ToString() << "\n";
    std::exit(1);
  }
}

std::shared_ptr<const TlsContext> MakeContext(const std::string& dir, const std::string& name,
                                              TlsSide side) {
  auto ctx = TlsContext::Create({CaCertPath(dir), CertPath(dir, name), KeyPath(dir, name)}, side);
  Check(ctx.status(), "TlsContext::Create");
  return *ctx;
}

// Runs the handshake between two fresh sessions in memory, to completion.
void Handshake(TlsSession& client, TlsSession& server) {
  Check(client.Start(), "Start");
  std::vector<uint8_t> sink;
  for (int round = 0; round < 8 && !(client.handshake_done() && server.handshake_done()); ++round) {
    std::string bytes;
    client.TakeOutput(&bytes);
    Check(server.Receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &sink),
          "server handshake");
    bytes.clear();
    server.TakeOutput(&bytes);
    Check(client.Receive(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &sink),
          "client handshake");
  }
  if (!client.handshake_done() || !server.handshake_done()) Check(Status::Internal("stuck"), "");
}

// One in-memory mutual handshake; its wall time in microseconds.
double MemoryHandshakeUs(const std::shared_ptr<const TlsContext>& server_ctx,
                         const std::shared_ptr<const TlsContext>& client_ctx) {
  auto start = Clock::now();
  auto server = TlsSession::Create(server_ctx);
  auto client = TlsSession::Create(client_ctx, {PrincipalKind::kParticipant, "participant-0"});
  Handshake(*client, *server);
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// Microseconds per message: `batch` messages of `bytes` bytes, each encrypted
// by `from` and decrypted by `to` (Send, TakeOutput, Receive), in memory.
double MemoryRecordUs(TlsSession& from, TlsSession& to, size_t bytes, int batch) {
  const std::vector<uint8_t> message(bytes, 0x5a);
  std::vector<uint8_t> plaintext;
  std::string wire;
  auto start = Clock::now();
  for (int i = 0; i < batch; ++i) {
    Check(from.Send(message.data(), message.size()), "Send");
    wire.clear();
    from.TakeOutput(&wire);
    plaintext.clear();
    Check(to.Receive(reinterpret_cast<const uint8_t*>(wire.data()), wire.size(), &plaintext),
          "Receive");
  }
  if (plaintext.size() != bytes) Check(Status::Internal("lost bytes"), "records");
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count() / batch;
}

// One Read round trip on an established channel; wall time in microseconds.
double CallUs(EventLoop& loop, ParticipantStub& stub) {
  auto start = Clock::now();
  bool done = false;
  RpcStatus status;
  stub.Read("k", 5000, [&](const RpcStatus& s, const rpc::ReadResult&) {
    status = s;
    done = true;
    loop.Stop();
  });
  while (!done) loop.Run();
  Check(status, "Read");
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// Connects a fresh channel, makes one Read, closes; wall time in microseconds.
double ConnectAndCallUs(EventLoop& loop, const std::string& address,
                        const PeerChannelOptions& options) {
  auto start = Clock::now();
  ParticipantStub stub(&loop, address, options);
  CallUs(loop, stub);
  double us = std::chrono::duration<double, std::micro>(Clock::now() - start).count();
  stub.channel()->Close();
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  int connections = 1000;
  int message_bytes = 200;
  std::string key_type = "ecdsa";
  po::options_description desc("dtx-tls-handshake-bench options");
  desc.add_options()("help", "this text")("connections",
                                          po::value<int>(&connections)->default_value(connections),
                                          "handshakes per measurement")(
      "message-bytes", po::value<int>(&message_bytes)->default_value(message_bytes),
      "size of the messages timed on an established session")(
      "key-type", po::value<std::string>(&key_type),
      "ecdsa (P-256, the default of common/certs.h) or rsa (2048)");
  po::variables_map vm;
  po::store(po::parse_command_line(argc, argv, desc), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (connections < 1 || message_bytes < 1 || message_bytes > (1 << 20) ||
      (key_type != "ecdsa" && key_type != "rsa")) {
    std::cerr << desc << "\n";
    return 2;
  }
  std::string tmpl = std::filesystem::temp_directory_path().string() + "/dtx-tls-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string dir = tmpl;
  CertOptions cert_options;
  cert_options.key_type = key_type == "rsa" ? KeyType::kRsa2048 : KeyType::kEcdsaP256;
  Check(CreateCa(dir, cert_options), "CreateCa");
  Check(CreateCert(dir, PrincipalKind::kParticipant, "participant-0", cert_options), "CreateCert");
  Check(CreateCert(dir, PrincipalKind::kCoordinator, "coordinator-0", cert_options), "CreateCert");
  auto server_ctx = MakeContext(dir, "participant-0", TlsSide::kServer);
  auto client_ctx = MakeContext(dir, "coordinator-0", TlsSide::kClient);

  std::vector<double> memory;
  for (int i = 0; i < connections; ++i) memory.push_back(MemoryHandshakeUs(server_ctx, client_ctx));

  // Records on one established session pair, in batches of 100 messages.
  std::vector<double> record_us;
  {
    auto server = TlsSession::Create(server_ctx);
    auto client = TlsSession::Create(client_ctx, {PrincipalKind::kParticipant, "participant-0"});
    Handshake(*client, *server);
    for (int i = 0; i < connections; ++i) {
      record_us.push_back(
          MemoryRecordUs(*client, *server, static_cast<size_t>(message_bytes), 100));
    }
  }

  spdlog::set_level(spdlog::level::warn);
  LoopThread server_thread;
  server_thread.Start();
  std::unique_ptr<RpcServer> plain, secure;
  server_thread.RunSync([&] {
    auto processor =
        std::make_shared<rpc::ParticipantAsyncProcessor>(std::make_shared<ReadOnlyParticipant>());
    plain = std::make_unique<RpcServer>(server_thread.loop(), processor, RpcServerOptions{});
    RpcServerOptions tls_options;
    tls_options.tls = server_ctx;
    secure = std::make_unique<RpcServer>(server_thread.loop(), processor, tls_options);
    Check(plain->Start(), "plaintext server");
    Check(secure->Start(), "TLS server");
  });
  EventLoop loop;
  PeerChannelOptions plain_options;
  PeerChannelOptions tls_options;
  tls_options.tls = client_ctx;
  tls_options.expected_server = {PrincipalKind::kParticipant, "participant-0"};
  std::vector<double> plain_us, tls_us;
  for (int i = 0; i < connections; ++i) {  // alternating, so load drifts hit both alike
    plain_us.push_back(ConnectAndCallUs(loop, plain->address(), plain_options));
    tls_us.push_back(ConnectAndCallUs(loop, secure->address(), tls_options));
  }
  std::vector<double> plain_call_us, tls_call_us;
  {
    ParticipantStub plain_stub(&loop, plain->address(), plain_options);
    ParticipantStub tls_stub(&loop, secure->address(), tls_options);
    CallUs(loop, plain_stub);  // connect (and handshake) first
    CallUs(loop, tls_stub);
    for (int i = 0; i < connections * 10; ++i) {
      plain_call_us.push_back(CallUs(loop, plain_stub));
      tls_call_us.push_back(CallUs(loop, tls_stub));
    }
    plain_stub.channel()->Close();
    tls_stub.channel()->Close();
  }
  server_thread.RunSync([&] {
    plain.reset();
    secure.reset();
  });
  server_thread.Stop();
  std::filesystem::remove_all(dir);

  Summary m = Summarize(memory), p = Summarize(plain_us), t = Summarize(tls_us);
  Summary r = Summarize(record_us), pc = Summarize(plain_call_us), tc = Summarize(tls_call_us);
  std::printf("TLS 1.3 mutual handshake, %s keys, %d connections each\n",
              key_type == "rsa" ? "RSA-2048" : "ECDSA P-256", connections);
  std::printf("%-44s %10s %10s\n", "", "median us", "p99 us");
  std::printf("%-44s %10.1f %10.1f\n", "handshake in memory (client + server CPU)", m.median_us,
              m.p99_us);
  std::printf("%-44s %10.1f %10.1f\n", "loopback connect + first call, plaintext", p.median_us,
              p.p99_us);
  std::printf("%-44s %10.1f %10.1f\n", "loopback connect + first call, TLS", t.median_us, t.p99_us);
  std::printf("%-44s %10.1f\n", "TLS adds per new connection (median)", t.median_us - p.median_us);
  std::printf("established session, %d-byte messages\n", message_bytes);
  std::printf("%-44s %10.2f %10.2f\n", "one record, encrypt + decrypt, in memory", r.median_us,
              r.p99_us);
  std::printf("%-44s %10.1f %10.1f\n", "loopback Read round trip, plaintext", pc.median_us,
              pc.p99_us);
  std::printf("%-44s %10.1f %10.1f\n", "loopback Read round trip, TLS", tc.median_us, tc.p99_us);
  std::printf("%-44s %10.1f\n", "TLS adds per round trip (median)", tc.median_us - pc.median_us);
  return 0;
}
