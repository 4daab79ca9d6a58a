// The trust boundary end to end (issue 13 "Tests"): a real cluster started by
// `dtxctl cluster up` (TLS on, its default), attacked with stock generated
// Thrift clients over plain TSocket or Thrift's own TSSLSocket, as anyone on
// the network could:
//   - a forged participant Abort of a transaction held between votes and
//     decision is refused, and the transaction commits all-or-nothing;
//   - peer and admin calls (AdoptEpoch, SetFailpoint, Prepare/Commit/Abort,
//     Replicate, spoofed Heartbeats) from a connection without a certificate
//     and from a client certificate are refused; afterwards the bank workload
//     commits with its invariant, and no participant's epoch moved;
//   - participant-1's node certificate cannot act as a coordinator;
//   - a certificate from another CA, an expired one, no certificate and
//     plaintext are refused at the handshake, with a log line saying why;
//   - SetFailpoint from an admin certificate is refused by a participant
//     started by hand with TLS and without --enable-failpoints.
// "Refused" is, for a caller without a valid certificate of the cluster CA, a
// connection the node closes during the TLS handshake (common/tls.h); for one
// with such a certificate, PERMISSION_DENIED from the handler
// (common/identity.h, node/access.h) or a listener that does not serve the
// method. Any other answer counts as accepted. Every test first makes the
// same kind of call with the right certificate and expects it to work, so a
// refusal is the trust boundary and not a broken harness or a dead node.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSSLSocket.h>
#include <thrift/transport/TSocket.h>
#include <thrift/transport/TTransportException.h>

#include <chrono>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/address.h"
#include "common/certs.h"
#include "common/check.h"
#include "tests/cluster_fixture.h"

namespace dtx::testing {
namespace {

using apache::thrift::TApplicationException;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::AccessManager;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TSocket;
using apache::thrift::transport::TSSLSocketFactory;
using apache::thrift::transport::TTransportException;

constexpr int kConnectTimeoutMs = 2000;
constexpr int kRecvTimeoutMs = 5000;
// How long the coordinator holds the transaction between votes and decision.
constexpr int kHoldMs = 2500;
// How long to wait for a node to write a log line.
constexpr int kLogWaitMs = 5000;

// Whoever opens the connection: plaintext, or TLS with or without a
// certificate. Every TLS client checks the server against the cluster CA: the
// CA certificate is public (every node shows it), and Thrift's TSSLSocket
// refuses a server it cannot verify, which would hide the node's answer.
struct Credentials {
  std::string label;
  bool tls = true;
  std::string ca_file;    // the cluster CA, to check the server with
  std::string cert_file;  // "": present no certificate
  std::string key_file;
  // cert_file is a valid certificate signed by the cluster CA.
  bool cluster_certificate = false;
};

enum class Answer {
  kAccepted,          // the call returned normally
  kPermissionDenied,  // DtxError PERMISSION_DENIED
  kConnectionClosed,  // transport error: the TLS handshake was refused, or no connection
  kUnknownMethod,     // the listener does not serve that method at all
  kTlsRequired,       // a plaintext call, answered "this port requires TLS" and closed
  kOtherError,        // any other DtxError or exception
};

struct CallOutcome {
  Answer answer = Answer::kOtherError;
  std::string detail;

  // Refused as `who` must be: a connection without a certificate of the
  // cluster CA never gets past the handshake; one with such a certificate
  // reaches the handler, which refuses (or the listener does not serve the
  // method at all).
  bool RefusedAsExpectedFor(const Credentials& who) const;
  std::string Describe() const {
    static const char* kNames[] = {"accepted",       "PERMISSION_DENIED", "connection closed",
                                   "unknown method", "TLS required",      "other error"};
    return std::string(kNames[static_cast<int>(answer)]) + (detail.empty() ? "" : ": " + detail);
  }
};

bool CallOutcome::RefusedAsExpectedFor(const Credentials& who) const {
  if (!who.cluster_certificate) {
    return answer == Answer::kConnectionClosed || answer == Answer::kTlsRequired;
  }
  return answer == Answer::kPermissionDenied || answer == Answer::kUnknownMethod;
}

std::ostream& operator<<(std::ostream& os, Answer a) { return os << CallOutcome{a, ""}.Describe(); }

// The server's chain is verified against the CA (when one is given); its name
// is not checked, since the listener is reached by IP address.
class AnyNameAccessManager : public AccessManager {
 public:
  Decision verify(const sockaddr_storage& /*sa*/) noexcept override { return ALLOW; }
};

// Thrift's TSSLSocketFactory would otherwise clean up OpenSSL when its last
// instance goes, under this process's own use of it (common/certs.h).
void InitThriftSslOnce() {
  static const bool done = [] {
    TSSLSocketFactory::setManualOpenSSLInitialization(true);
    apache::thrift::transport::initializeOpenSSL();
    return true;
  }();
  (void)done;
}

// One call on a fresh connection from `who` to `address` with the stock
// generated client ClientT; the connection is closed afterwards.
template <class ClientT>
CallOutcome Call(const Credentials& who, const std::string& address,
                 const std::function<void(ClientT&)>& fn) {
  auto hp = ParseHostPort(address);
  if (!hp.ok()) return {Answer::kOtherError, "bad address " + address};
  std::shared_ptr<TSSLSocketFactory> factory;  // outlives the socket
  std::shared_ptr<TSocket> socket;
  try {
    if (who.tls) {
      InitThriftSslOnce();
      factory = std::make_shared<TSSLSocketFactory>();
      factory->authenticate(true);
      factory->loadTrustedCertificates(who.ca_file.c_str());
      if (!who.cert_file.empty()) {
        factory->loadCertificate(who.cert_file.c_str());
        factory->loadPrivateKey(who.key_file.c_str());
      }
      factory->access(std::make_shared<AnyNameAccessManager>());
      socket = factory->createSocket(hp->host, hp->port);
    } else {
      socket = std::make_shared<TSocket>(hp->host, hp->port);
    }
  } catch (const std::exception& e) {
    return {Answer::kOtherError, std::string("cannot set up the client: ") + e.what()};
  }
  socket->setConnTimeout(kConnectTimeoutMs);
  socket->setRecvTimeout(kRecvTimeoutMs);
  socket->setSendTimeout(kRecvTimeoutMs);
  auto transport = std::make_shared<TFramedTransport>(socket);
  ClientT client(std::make_shared<TBinaryProtocol>(transport));
  CallOutcome out;
  try {
    transport->open();
    fn(client);
    out = {Answer::kAccepted, ""};
  } catch (const rpc::DtxError& e) {
    out = {e.code == rpc::ErrorCode::PERMISSION_DENIED ? Answer::kPermissionDenied
                                                       : Answer::kOtherError,
           "DtxError " + std::to_string(static_cast<int>(e.code)) + ": " + e.message};
  } catch (const TApplicationException& e) {
    const bool tls_required = std::string(e.what()).rfind("this port requires TLS", 0) == 0;
    out = {e.getType() == TApplicationException::UNKNOWN_METHOD ? Answer::kUnknownMethod
           : tls_required                                       ? Answer::kTlsRequired
                                                                : Answer::kOtherError,
           std::string("TApplicationException: ") + e.what()};
  } catch (const TTransportException& e) {  // TSSLException is one
    out = {Answer::kConnectionClosed, std::string("transport: ") + e.what()};
  } catch (const std::exception& e) {
    out = {Answer::kOtherError, e.what()};
  }
  try {
    transport->close();
  } catch (const std::exception&) {
  }
  return out;
}

rpc::TxId RandomTxId() {
  static std::mt19937_64 rng(std::random_device{}());
  rpc::TxId t;
  t.hi = static_cast<int64_t>(rng() | 1);
  t.lo = static_cast<int64_t>(rng() >> 1);
  return t;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t NowUnix() { return static_cast<int64_t>(std::time(nullptr)); }

// A cluster of coordinator-0 and three participants. SetUp returns once a
// transaction on every participant has committed: each participant has then
// seen the primary's epoch, which does not move by itself afterwards.
class SecurityTest : public ClusterTest {
 protected:
  void SetUp() override {
    tools::QuietThriftLogging();
    ClusterTest::SetUp();
    if (HasFatalFailure()) return;
    auto sec = tools::ClusterSecurity::Load(cluster_.dir());
    ASSERT_TRUE(sec.ok()) << sec.status().ToString();
    ASSERT_TRUE(sec->tls) << "dtxctl cluster up must default to TLS";
    certs_ = sec->CertsDir(cluster_.dir());
    ASSERT_TRUE(std::filesystem::exists(CaCertPath(certs_))) << certs_;
    std::map<std::string, std::optional<std::string>> warm_up;  // one key on every participant
    for (size_t i = 0; i < kParticipants; ++i) warm_up[KeyOnShard(i, "warm-up")] = "1";
    Status s = Write(warm_up);
    ASSERT_TRUE(s.ok()) << "the first transaction: " << s.ToString();
  }

  // The cluster CA's certificate for `name` (certs/NAME.{crt,key}).
  Credentials Cert(const std::string& name) const {
    return {name + "'s certificate", true, CaCertPath(certs_), CertPath(certs_, name),
            KeyPath(certs_, name),   true};
  }
  Credentials Operator() const { return Cert(tools::kAdminCertName); }
  static Credentials Plaintext() { return {"plaintext", false, "", "", ""}; }
  Credentials NoCertificate() const {
    return {"TLS without a certificate", true, CaCertPath(certs_), "", ""};
  }

  // A CA of our own and a certificate it signs claiming to be coordinator-0.
  Credentials ForeignCaCertificate() {
    const std::string dir = scratch_.path() + "/foreign";
    Status s = CreateCa(dir, {});
    if (s.ok()) s = CreateCert(dir, PrincipalKind::kCoordinator, "coordinator-0", {});
    EXPECT_TRUE(s.ok()) << s.ToString();
    return {"coordinator-0 from another CA", true, CaCertPath(certs_),
            CertPath(dir, "coordinator-0"), KeyPath(dir, "coordinator-0")};
  }

  // coordinator-0's name, signed by the cluster CA, expired yesterday.
  Credentials ExpiredCertificate() {
    const std::string dir = scratch_.path() + "/expired";
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(CaCertPath(certs_), CaCertPath(dir));
    std::filesystem::copy_file(CaKeyPath(certs_), CaKeyPath(dir));
    CertOptions o;
    o.not_before_unix = NowUnix() - 3 * 86400;
    o.not_after_unix = NowUnix() - 86400;
    Status s = CreateCert(dir, PrincipalKind::kCoordinator, "coordinator-0", o);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return {"expired coordinator-0", true, CaCertPath(certs_), CertPath(dir, "coordinator-0"),
            KeyPath(dir, "coordinator-0")};
  }

  const tools::NodeEntry& Node(const std::string& name) const {
    const tools::NodeEntry* n = cluster_.config().Find(name);
    DTX_CHECK(n != nullptr);
    return *n;
  }

  // Where the node serves its peer service: NODEDIR/peer.addr when the node
  // has a peer listener of its own, else its client listener.
  std::string PeerAddress(const std::string& name) const {
    std::string a = ReadFile(tools::NodeDir(cluster_.dir(), name) + "/peer.addr");
    while (!a.empty() && (a.back() == '\n' || a.back() == ' ')) a.pop_back();
    return a.empty() ? Node(name).address : a;
  }
  // The peer listener, and the client listener if it is another one.
  std::vector<std::string> PeerServiceTargets(const std::string& name) const {
    std::vector<std::string> t{PeerAddress(name)};
    if (Node(name).address != t[0]) t.push_back(Node(name).address);
    return t;
  }

  rpc::NodeStatus StatusOf(const std::string& name) {
    rpc::NodeStatus st;
    CallOutcome o = Call<rpc::AdminClient>(Operator(), Node(name).admin_address,
                                           [&](rpc::AdminClient& c) { c.GetStatus(st); });
    EXPECT_EQ(o.answer, Answer::kAccepted) << "GetStatus on " << name << ": " << o.Describe();
    return st;
  }

  // The right certificate works: coordinator-0 aborts an unknown transaction
  // at `participant` (presumed abort: a no-op) over its peer listener.
  void ExpectCoordinatorMayAbortAt(const std::string& participant, rpc::Epoch epoch) {
    const rpc::TxId txid = RandomTxId();
    CallOutcome o = Call<rpc::ParticipantPeerClient>(
        Cert("coordinator-0"), PeerAddress(participant),
        [&](rpc::ParticipantPeerClient& c) { c.Abort(txid, epoch, rpc::Attempt()); });
    EXPECT_EQ(o.answer, Answer::kAccepted)
        << "coordinator-0's Abort at " << participant << ": " << o.Describe();
  }

  // Waits for a line containing `text` in NODE/node.log.
  bool LogHas(const std::string& node, const std::string& text) {
    const std::string path = tools::NodeDir(cluster_.dir(), node) + "/" + tools::kNodeLogFile;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kLogWaitMs);
    while (std::chrono::steady_clock::now() < deadline) {
      if (ReadFile(path).find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  std::string certs_;
  TempDir scratch_{"dtx-security"};
};

// With a backup coordinator (coordinator-1), so that Replicate and Heartbeat
// have a real target.
class SecurityWithBackupTest : public SecurityTest {
 protected:
  void CustomizeCluster(LocalCluster::Options* o) override { o->backup = true; }
};

// The forged-Abort scenario: a transaction writing ka (participant-0)
// and kb (participant-1) is held by a sleep failpoint after every vote is in
// and before the decision; meanwhile participant-0 is asked to Abort it from a
// connection without a certificate, with a client certificate, and with
// participant-1's node certificate. Every forgery is refused, the client is
// told COMMITTED, and both writes are visible.
TEST_F(SecurityTest, ForgedAbortOfAHeldTransactionIsRefusedAndItCommitsAllOrNothing) {
  const std::string ka = KeyOnShard(0, "ka");
  const std::string kb = KeyOnShard(1, "kb");
  const rpc::Epoch epoch = StatusOf("participant-0").epoch;
  ExpectCoordinatorMayAbortAt("participant-0", epoch);

  CommandResult r = cluster_.Dtxctl({"failpoint", "coordinator-0", "coordinator.votes.after_all",
                                     "sleep(" + std::to_string(kHoldMs) + ")"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  auto commit = std::async(std::launch::async, [&] { return Write({{ka, "va"}, {kb, "vb"}}); });

  // The txid, as an attacker who saw it would have it: participant-0's
  // in-doubt list (read here with the operator's certificate).
  std::optional<rpc::TxId> txid;
  for (int i = 0; i < 50 && !txid; ++i) {
    std::vector<rpc::InDoubtTx> doubt;
    CallOutcome o = Call<rpc::AdminClient>(Operator(), Node("participant-0").admin_address,
                                           [&](rpc::AdminClient& c) { c.ListInDoubt(doubt); });
    ASSERT_EQ(o.answer, Answer::kAccepted) << "ListInDoubt: " << o.Describe();
    if (!doubt.empty()) txid = doubt.front().txid;
    else std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(txid.has_value()) << "the transaction never became prepared at participant-0";

  for (const Credentials& who :
       {Plaintext(), NoCertificate(), Cert(tools::kClientCertName), Cert("participant-1")}) {
    for (const std::string& target : PeerServiceTargets("participant-0")) {
      CallOutcome o = Call<rpc::ParticipantPeerClient>(
          who, target,
          [&](rpc::ParticipantPeerClient& c) { c.Abort(*txid, epoch, rpc::Attempt()); });
      EXPECT_TRUE(o.RefusedAsExpectedFor(who))
          << "Abort from " << who.label << " at " << target << ": " << o.Describe();
    }
  }
  r = cluster_.Dtxctl({"failpoint", "coordinator-0", "coordinator.votes.after_all", "off"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();

  Status s = commit.get();
  EXPECT_TRUE(s.ok()) << "the held transaction: " << s.ToString();
  auto va = Read(ka);
  auto vb = Read(kb);
  ASSERT_TRUE(va.ok() && vb.ok()) << va.status().ToString() << " / " << vb.status().ToString();
  EXPECT_EQ(*va, std::optional<std::string>("va")) << "ka (participant-0)";
  EXPECT_EQ(*vb, std::optional<std::string>("vb")) << "kb (participant-1)";
}

// Every peer and admin call an outsider could use to fence, freeze or corrupt
// the cluster, from a connection without a certificate and from a client's
// certificate, with identity fields naming the real nodes.
TEST_F(SecurityWithBackupTest, SpoofedPeerAndAdminCallsAreRefusedAndTheBankStillCommits) {
  std::map<std::string, rpc::Epoch> epochs;
  for (const auto& p : cluster_.config().participants()) epochs[p.name] = StatusOf(p.name).epoch;
  const rpc::NodeStatus primary_before = StatusOf("coordinator-0");
  ASSERT_EQ(primary_before.role, rpc::NodeRole::PRIMARY);
  ExpectCoordinatorMayAbortAt("participant-0", epochs["participant-0"]);
  const std::string c0 = PeerAddress("coordinator-0");
  const std::string c1 = PeerAddress("coordinator-1");
  const std::string planted = KeyOnShard(0, "planted");

  using PP = rpc::ParticipantPeerClient;
  using CP = rpc::CoordinatorPeerClient;
  int attempts = 0;
  for (const Credentials& who : {Plaintext(), NoCertificate(), Cert(tools::kClientCertName)}) {
    auto expect_refused = [&](const std::string& what, const std::string& target,
                              const CallOutcome& o) {
      ++attempts;
      EXPECT_TRUE(o.RefusedAsExpectedFor(who))
          << what << " from " << who.label << " at " << target << ": " << o.Describe();
    };
    for (const auto& p : cluster_.config().participants()) {
      const rpc::Epoch e = epochs[p.name];
      for (const std::string& t : PeerServiceTargets(p.name)) {
        expect_refused("AdoptEpoch(10^15)", t,
                       Call<PP>(who, t, [&](PP& c) { c.AdoptEpoch(1'000'000'000'000'000, c0); }));
        expect_refused("AdoptEpoch(current+1)", t,
                       Call<PP>(who, t, [&](PP& c) { c.AdoptEpoch(e + 1, c0); }));
        expect_refused("Abort", t,
                       Call<PP>(who, t, [&](PP& c) { c.Abort(RandomTxId(), e, rpc::Attempt()); }));
        expect_refused("Commit", t, Call<PP>(who, t, [&](PP& c) { c.Commit(RandomTxId(), e); }));
        if (p.index == 0) {
          rpc::PrepareRequest req;
          req.txid = RandomTxId();
          req.epoch = e;
          rpc::WriteItem w;
          w.key = planted;
          w.__set_value("forged");
          req.writes.push_back(w);
          req.one_phase = true;
          req.read_only_tx = false;
          req.__set_coordinator(c0);
          expect_refused("one-phase Prepare", t, Call<PP>(who, t, [&](PP& c) {
                           rpc::PrepareResponse resp;
                           c.Prepare(resp, req);
                         }));
        }
        rpc::HeartbeatRequest hb;
        hb.sender = c0;
        hb.role = rpc::NodeRole::PRIMARY;
        hb.epoch = e + 1;
        expect_refused("Heartbeat as coordinator-0", t, Call<PP>(who, t, [&](PP& c) {
                         rpc::HeartbeatResponse resp;
                         c.Heartbeat(resp, hb);
                       }));
      }
      expect_refused("SetFailpoint", p.admin_address,
                     Call<rpc::AdminClient>(who, p.admin_address, [&](rpc::AdminClient& c) {
                       c.SetFailpoint("participant.prepare.before_log", "crash");
                     }));
    }
    for (const std::string coordinator : {"coordinator-0", "coordinator-1"}) {
      const std::string other = coordinator == "coordinator-0" ? c1 : c0;
      for (const std::string& t : PeerServiceTargets(coordinator)) {
        rpc::ReplicateRequest rep;
        rep.epoch = primary_before.epoch;
        rep.primary = c0;
        rep.generation = int64_t{1} << 40;
        rep.snapshot = true;  // an empty snapshot: "forget every open decision"
        expect_refused("Replicate as coordinator-0", t, Call<CP>(who, t, [&](CP& c) {
                         rpc::ReplicateResponse resp;
                         c.Replicate(resp, rep);
                       }));
        rpc::HeartbeatRequest hb;
        hb.sender = other;
        hb.role = rpc::NodeRole::PRIMARY;
        hb.epoch = primary_before.epoch + 1;
        expect_refused("Heartbeat as the other coordinator", t, Call<CP>(who, t, [&](CP& c) {
                         rpc::HeartbeatResponse resp;
                         c.Heartbeat(resp, hb);
                       }));
      }
      const std::string admin = Node(coordinator).admin_address;
      expect_refused("SetFailpoint", admin,
                     Call<rpc::AdminClient>(who, admin, [&](rpc::AdminClient& c) {
                       c.SetFailpoint("coordinator.votes.after_all", "sleep(86400000)");
                     }));
    }
  }
  EXPECT_GT(attempts, 0);

  // Nothing the forgeries asked for happened.
  auto planted_value = Read(planted);
  ASSERT_TRUE(planted_value.ok()) << planted_value.status().ToString();
  EXPECT_FALSE(planted_value->has_value()) << "a forged one-phase Prepare wrote " << planted;
  CommandResult r =
      RunCommand({DTX_BENCH_PATH, "--workload", "bank", "--cluster", cluster_.dir(), "--clients",
                  "4", "--duration", "2", "--warmup", "0", "--accounts", "50", "--seed", "13"},
                 120000);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("invariant: ok"), std::string::npos) << r.Describe();
  for (const auto& [name, epoch] : epochs) {
    EXPECT_EQ(StatusOf(name).epoch, epoch) << name << "'s epoch moved";
  }
  const rpc::NodeStatus primary_after = StatusOf("coordinator-0");
  EXPECT_EQ(primary_after.role, rpc::NodeRole::PRIMARY);
  EXPECT_EQ(primary_after.epoch, primary_before.epoch);
}

// A participant's own, valid node certificate does not make it a coordinator:
// the handshake succeeds and the handler refuses.
TEST_F(SecurityTest, ParticipantCertificateCannotActAsCoordinator) {
  const rpc::Epoch e = StatusOf("participant-0").epoch;
  ExpectCoordinatorMayAbortAt("participant-0", e);
  const Credentials p1 = Cert("participant-1");
  const std::string t = PeerAddress("participant-0");
  using PP = rpc::ParticipantPeerClient;
  rpc::PrepareRequest req;
  req.txid = RandomTxId();
  req.epoch = e;
  rpc::WriteItem w;
  w.key = KeyOnShard(0, "p1-forged");
  w.__set_value("x");
  req.writes.push_back(w);
  req.one_phase = true;
  req.read_only_tx = false;
  req.__set_coordinator(PeerAddress("participant-1"));
  std::vector<std::pair<std::string, CallOutcome>> calls = {
      {"Prepare", Call<PP>(p1, t,
                           [&](PP& c) {
                             rpc::PrepareResponse resp;
                             c.Prepare(resp, req);
                           })},
      {"Abort", Call<PP>(p1, t, [&](PP& c) { c.Abort(RandomTxId(), e, rpc::Attempt()); })},
      {"Commit", Call<PP>(p1, t, [&](PP& c) { c.Commit(RandomTxId(), e); })},
      {"AdoptEpoch",
       Call<PP>(p1, t, [&](PP& c) { c.AdoptEpoch(e + 1, PeerAddress("participant-1")); })},
  };
  for (const auto& [what, o] : calls) {
    EXPECT_EQ(o.answer, Answer::kPermissionDenied)
        << what << " with participant-1's certificate: " << o.Describe();
  }
  EXPECT_EQ(StatusOf("participant-0").epoch, e);
}

// Certificates the cluster must not trust, and no TLS at all, never get past
// the handshake; the refusing node logs why.
TEST_F(SecurityTest, ForeignExpiredAndPlaintextClientsAreRefusedAtTheHandshakeWithALogLine) {
  const rpc::Epoch e = StatusOf("participant-0").epoch;
  ExpectCoordinatorMayAbortAt("participant-0", e);
  struct Case {
    Credentials who;
    std::string log_text;  // what the node's log says (common/tls.cc)
    Answer answer;         // what the client sees
  };
  const std::vector<Case> cases = {
      {ForeignCaCertificate(), "client certificate not signed by the cluster CA",
       Answer::kConnectionClosed},
      {ExpiredCertificate(), "client certificate expired", Answer::kConnectionClosed},
      {NoCertificate(), "no client certificate", Answer::kConnectionClosed},
      // Told why in plaintext (common/rpc_server.cc TlsRequiredReply), then closed.
      {Plaintext(), "plaintext sent to a TLS port", Answer::kTlsRequired},
  };
  for (const Case& c : cases) {
    CallOutcome peer = Call<rpc::ParticipantPeerClient>(
        c.who, PeerAddress("participant-0"),
        [&](rpc::ParticipantPeerClient& p) { p.Abort(RandomTxId(), e, rpc::Attempt()); });
    EXPECT_EQ(peer.answer, c.answer)
        << c.who.label << " at participant-0's peer listener: " << peer.Describe();
    EXPECT_TRUE(LogHas("participant-0", c.log_text))
        << "participant-0's node.log has no line with \"" << c.log_text << "\" for " << c.who.label;

    CallOutcome admin = Call<rpc::AdminClient>(
        c.who, Node("coordinator-0").admin_address,
        [&](rpc::AdminClient& a) { a.SetFailpoint("wal.before_sync", "off"); });
    EXPECT_EQ(admin.answer, c.answer)
        << c.who.label << " at coordinator-0's admin listener: " << admin.Describe();
    EXPECT_TRUE(LogHas("coordinator-0", c.log_text))
        << "coordinator-0's node.log has no line with \"" << c.log_text << "\" for " << c.who.label;
  }
}

using testing::FreePort;

// A participant started by hand with TLS and without --enable-failpoints
// refuses SetFailpoint even from the operator's admin certificate (which the
// same listener accepts for GetStatus). participant/smoke_test.cc
// (FailpointsAreRefusedWithoutEnableFailpoints) covers the same flag without
// TLS.
TEST(SecurityByHandTest, SetFailpointFromAnAdminIsRefusedWithoutEnableFailpoints) {
  tools::QuietThriftLogging();
  TempDir dir("dtx-security-by-hand");
  const std::string certs = dir.path() + "/" + tools::kCertsDirName;
  Status s = MakeClusterCerts(dir.path(), {"participant-0", "coordinator-0"});  // and admin
  ASSERT_TRUE(s.ok()) << s.ToString();
  const int port = FreePort();
  const int coordinator_port = FreePort();  // nothing listens there
  ASSERT_GT(port, 0);
  ASSERT_GT(coordinator_port, 0);
  const std::string coordinator = "127.0.0.1:" + std::to_string(coordinator_port);
  const std::string node_dir = dir.path() + "/participant-0";
  ChildProcess node;
  s = node.Start({DTX_PARTICIPANT_PATH, "--name", "participant-0", "--listen",
                  "127.0.0.1:" + std::to_string(port), "--admin-listen", "127.0.0.1:0",
                  "--metrics-listen", "off", "--dir", node_dir, "--coordinator", coordinator,
                  "--coordinators", "coordinator-0=" + coordinator, "--certs-dir", certs},
                 dir.path() + "/console.log");
  ASSERT_TRUE(s.ok()) << s.ToString();

  const Credentials admin{"admin's certificate",   true,
                          CaCertPath(certs),       CertPath(certs, "admin"),
                          KeyPath(certs, "admin"), true};
  std::string admin_address;
  CallOutcome status;
  for (int i = 0; i < 100 && status.answer != Answer::kAccepted; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    admin_address = ReadFile(node_dir + "/admin.addr");
    while (!admin_address.empty() && admin_address.back() == '\n') admin_address.pop_back();
    if (admin_address.empty()) continue;
    status = Call<rpc::AdminClient>(admin, admin_address, [](rpc::AdminClient& c) {
      rpc::NodeStatus st;
      c.GetStatus(st);
    });
  }
  ASSERT_EQ(status.answer, Answer::kAccepted)
      << "admin GetStatus: " << status.Describe() << "\n"
      << TailOfFile(dir.path() + "/console.log", 20) << TailOfFile(node_dir + "/node.log", 20);

  CallOutcome o = Call<rpc::AdminClient>(admin, admin_address, [](rpc::AdminClient& c) {
    c.SetFailpoint("participant.prepare.before_log", "crash");
  });
  EXPECT_EQ(o.answer, Answer::kPermissionDenied) << o.Describe();
  EXPECT_NE(o.detail.find("--enable-failpoints"), std::string::npos) << o.Describe();
  // Still serving: nothing was armed and nothing crashed.
  status = Call<rpc::AdminClient>(admin, admin_address, [](rpc::AdminClient& c) {
    rpc::NodeStatus st;
    c.GetStatus(st);
  });
  EXPECT_EQ(status.answer, Answer::kAccepted) << status.Describe();
  node.Signal(SIGTERM);
  node.Stop(5000);
}

}  // namespace
}  // namespace dtx::testing
