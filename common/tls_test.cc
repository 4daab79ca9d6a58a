// TLS 1.3 in the transport (common/tls.h, RpcServer, PeerChannel): the
// memory-BIO session on its own, then servers and channels over loopback:
// round trips, the verified identity reaching the processor factory, and
// every refusal at the handshake with its log line (another CA, expired, no
// client certificate, plaintext on a TLS port, TLS on a plaintext port, the
// wrong server). Certificates come from common/certs.h, made once per run.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "Participant.h"
#include "common/certs.h"
#include "common/check.h"
#include "common/event_loop.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/tls.h"

namespace dtx {
namespace {

using apache::thrift::TDelayedException;

// ---- certificates, made once for the whole binary ----

struct TestCerts {
  std::string dir;        // the cluster CA and its principals
  std::string other_dir;  // another cluster's CA and principals

  TlsFiles Files(const std::string& name) const {
    return {CaCertPath(dir), CertPath(dir, name), KeyPath(dir, name)};
  }
};

const TestCerts& Certs() {
  static const TestCerts* certs = [] {
    auto* c = new TestCerts;
    std::string tmpl = ::testing::TempDir() + "dtx-tls-XXXXXX";
    DTX_CHECK(::mkdtemp(tmpl.data()) != nullptr);
    c->dir = tmpl + "/cluster";
    c->other_dir = tmpl + "/other";
    auto ok = [](const Status& s) { DTX_CHECK_MSG(s.ok(), s.ToString().c_str()); };
    ok(CreateCa(c->dir, {}));
    ok(CreateCert(c->dir, PrincipalKind::kParticipant, "participant-1", {}));
    ok(CreateCert(c->dir, PrincipalKind::kParticipant, "participant-2", {}));
    ok(CreateCert(c->dir, PrincipalKind::kCoordinator, "coordinator-0", {}));
    ok(CreateCert(c->dir, PrincipalKind::kClient, "bench", {}));
    CertOptions expired;
    const int64_t now = static_cast<int64_t>(std::time(nullptr));
    expired.not_before_unix = now - 10 * 86400;
    expired.not_after_unix = now - 86400;
    ok(CreateCert(c->dir, PrincipalKind::kClient, "old-bench", expired));
    ok(CreateCa(c->other_dir, {}));
    ok(CreateCert(c->other_dir, PrincipalKind::kCoordinator, "coordinator-0", {}));
    std::atexit(
        [] { std::filesystem::remove_all(std::filesystem::path(Certs().dir).parent_path()); });
    return c;
  }();
  return *certs;
}

std::shared_ptr<const TlsContext> Context(const TlsFiles& files, TlsSide side,
                                          TlsContextOptions options = {}) {
  auto ctx = TlsContext::Create(files, side, options);
  DTX_CHECK_MSG(ctx.ok(), ctx.status().ToString().c_str());
  return *ctx;
}
std::shared_ptr<const TlsContext> ServerContext(const std::string& name) {
  return Context(Certs().Files(name), TlsSide::kServer);
}
std::shared_ptr<const TlsContext> ClientContext(const std::string& name) {
  return Context(Certs().Files(name), TlsSide::kClient);
}

// Captures what the process logs while it lives (thread-safe sink).
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("tls_test", sink);
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() {
    spdlog::default_logger()->flush();
    return out_.str();
  }
  // The first line that contains `needle` ("" if none).
  std::string Line(const std::string& needle) {
    const std::string t = text();
    size_t at = t.find(needle);
    if (at == std::string::npos) return "";
    size_t begin = t.rfind('\n', at);
    begin = begin == std::string::npos ? 0 : begin + 1;
    return t.substr(begin, t.find('\n', at) - begin);
  }
  size_t Count(const std::string& needle) {
    const std::string t = text();
    size_t n = 0;
    for (size_t at = t.find(needle); at != std::string::npos; at = t.find(needle, at + 1)) ++n;
    return n;
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

// ---- the session alone, over memory ----

// Moves every byte each side has to send to the other until both are quiet.
void Pump(TlsSession& client, TlsSession& server, std::vector<uint8_t>* client_in,
          std::vector<uint8_t>* server_in, Status* client_status, Status* server_status) {
  for (int round = 0; round < 16; ++round) {
    std::string to_server, to_client;
    client.TakeOutput(&to_server);
    if (!to_server.empty()) {
      *server_status = server.Receive(reinterpret_cast<const uint8_t*>(to_server.data()),
                                      to_server.size(), server_in);
    }
    server.TakeOutput(&to_client);
    if (!to_client.empty()) {
      *client_status = client.Receive(reinterpret_cast<const uint8_t*>(to_client.data()),
                                      to_client.size(), client_in);
    }
    if (to_server.empty() && to_client.empty()) return;
  }
}

TEST(TlsSessionTest, HandshakeReportsBothVerifiedIdentitiesThenCarriesBytes) {
  auto server = TlsSession::Create(ServerContext("participant-1"));
  auto client = TlsSession::Create(ClientContext("coordinator-0"),
                                   TlsExpectedPeer{PrincipalKind::kParticipant, "participant-1"});
  ASSERT_TRUE(client->Start().ok());
  std::vector<uint8_t> client_in, server_in;
  Status cs, ss;
  Pump(*client, *server, &client_in, &server_in, &cs, &ss);
  ASSERT_TRUE(cs.ok()) << cs.ToString();
  ASSERT_TRUE(ss.ok()) << ss.ToString();
  ASSERT_TRUE(client->handshake_done());
  ASSERT_TRUE(server->handshake_done());
  EXPECT_TRUE(server->peer().Is(PrincipalKind::kCoordinator, "coordinator-0"));
  EXPECT_TRUE(client->peer().Is(PrincipalKind::kParticipant, "participant-1"));

  const std::string hello = "hello over tls";
  ASSERT_TRUE(client->Send(reinterpret_cast<const uint8_t*>(hello.data()), hello.size()).ok());
  std::string wire;
  client->TakeOutput(&wire);
  EXPECT_EQ(wire.find(hello), std::string::npos);  // encrypted on the wire
  ASSERT_TRUE(
      server->Receive(reinterpret_cast<const uint8_t*>(wire.data()), wire.size(), &server_in).ok());
  EXPECT_EQ(std::string(server_in.begin(), server_in.end()), hello);
}

TEST(TlsSessionTest, ServerRefusesPlaintextFirstByte) {
  auto server = TlsSession::Create(ServerContext("participant-1"));
  std::vector<uint8_t> in;
  const uint8_t frame[] = {0x00, 0x00, 0x00, 0x10, 0x80, 0x01};
  Status s = server->Receive(frame, sizeof(frame), &in);
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_NE(s.message().find("plaintext sent to a TLS port"), std::string::npos) << s.ToString();
  EXPECT_TRUE(server->failed());
  EXPECT_TRUE(in.empty());
}

TEST(TlsContextTest, OwnCertificateThatPeersWillRefuseIsAWarning) {
  LogCapture log;
  EXPECT_TRUE(TlsContext::Create(Certs().Files("old-bench"), TlsSide::kClient).ok());
  EXPECT_EQ(log.Count("TLS: our certificate expired on "), 1u) << log.text();
  TlsFiles foreign{CaCertPath(Certs().dir), CertPath(Certs().other_dir, "coordinator-0"),
                   KeyPath(Certs().other_dir, "coordinator-0")};
  EXPECT_TRUE(TlsContext::Create(foreign, TlsSide::kServer).ok());
  EXPECT_EQ(log.Count("TLS: our certificate not signed by the cluster CA"), 1u) << log.text();
  EXPECT_TRUE(TlsContext::Create(Certs().Files("participant-1"), TlsSide::kServer).ok());
  EXPECT_EQ(log.Count("peers will refuse it"), 2u) << log.text();
}

TEST(TlsContextTest, ClearErrorsForMissingFilesAndMismatchedKeys) {
  TlsFiles missing = Certs().Files("participant-1");
  missing.ca_file = Certs().dir + "/no-such-ca.crt";
  auto a = TlsContext::Create(missing, TlsSide::kServer);
  ASSERT_FALSE(a.ok());
  EXPECT_TRUE(a.status().IsInvalidArgument());
  EXPECT_NE(a.status().message().find("no-such-ca.crt"), std::string::npos);
  EXPECT_NE(a.status().message().find("No such file"), std::string::npos) << a.status().ToString();

  TlsFiles mismatch = Certs().Files("participant-1");
  mismatch.key_file = KeyPath(Certs().dir, "participant-2");
  auto b = TlsContext::Create(mismatch, TlsSide::kServer);
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("does not match the certificate"), std::string::npos)
      << b.status().ToString();

  TlsFiles no_cert{CaCertPath(Certs().dir), "", ""};
  EXPECT_FALSE(TlsContext::Create(no_cert, TlsSide::kServer).ok());  // a server needs one
  auto client = TlsContext::Create(no_cert, TlsSide::kClient);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  EXPECT_FALSE((*client)->local_identity().authenticated());
  EXPECT_TRUE(ServerContext("participant-2")
                  ->local_identity()
                  .Is(PrincipalKind::kParticipant, "participant-2"));
}

// ---- servers and channels on one loop ----

class TestParticipant : virtual public rpc::ParticipantCobSvIf {
 public:
  void Read(std::function<void(const rpc::ReadResult&)> cob,
            std::function<void(TDelayedException*)>, const std::string& key) override {
    ++reads;
    if (key.rfind("hold:", 0) == 0) {
      held.push_back({key, std::move(cob)});
      return;
    }
    cob(Result(key));
  }
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override {
    cob(rpc::NodeStatus());
  }
  static rpc::ReadResult Result(const std::string& key) {
    rpc::ReadResult r;
    r.found = true;
    r.value = "v:" + key;
    r.version = static_cast<int64_t>(key.size());
    return r;
  }
  void ReleaseReverse() {
    auto h = std::move(held);
    held.clear();
    for (auto it = h.rbegin(); it != h.rend(); ++it) it->second(Result(it->first));
  }

  int reads = 0;
  std::vector<std::pair<std::string, std::function<void(const rpc::ReadResult&)>>> held;
};

bool RunUntil(EventLoop& loop, const std::function<bool()>& done, int timeout_ms = 5000) {
  if (done()) return true;
  TimerId poll = loop.RunEvery(1, [&] {
    if (done()) loop.Stop();
  });
  TimerId guard = loop.RunAfter(static_cast<uint64_t>(timeout_ms), [&] { loop.Stop(); });
  loop.Run();
  loop.Cancel(poll);
  loop.Cancel(guard);
  return done();
}

class TlsRpcTest : public ::testing::Test {
 protected:
  // A server as `name` (null context: plaintext) whose factory records every
  // identity it is given.
  void StartServer(std::shared_ptr<const TlsContext> tls, RpcServerOptions options = {}) {
    options.tls = std::move(tls);
    server_ = std::make_unique<RpcServer>(
        &loop_,
        [this](const PeerIdentity& who) {
          identities_.push_back(who);
          handlers_.push_back(std::make_shared<TestParticipant>());
          return std::make_shared<rpc::ParticipantAsyncProcessor>(handlers_.back());
        },
        options);
    ASSERT_TRUE(server_->Start().ok());
  }
  std::string Address() const { return "127.0.0.1:" + std::to_string(server_->port()); }
  PeerChannelOptions ChannelOptions(std::shared_ptr<const TlsContext> tls,
                                    TlsExpectedPeer expected = {}) {
    PeerChannelOptions o;
    o.tls = std::move(tls);
    o.expected_server = std::move(expected);
    return o;
  }
  // One Read on a fresh channel; its status.
  RpcStatus ReadOnce(const PeerChannelOptions& options, const std::string& key = "k") {
    ParticipantStub stub(&loop_, Address(), options);
    RpcStatus result = Status::Internal("no reply");
    bool done = false;
    stub.Read(key, 3000, [&](const RpcStatus& s, const rpc::ReadResult&) {
      result = s;
      done = true;
    });
    EXPECT_TRUE(RunUntil(loop_, [&] { return done; }));
    stub.channel()->Close();
    return result;
  }
  // Runs the loop until the server has refused `n` handshakes in total.
  void WaitForRefusals(uint64_t n) {
    EXPECT_TRUE(RunUntil(loop_, [&] { return server_->stats().tls_handshakes_failed >= n; }))
        << "the server refused " << server_->stats().tls_handshakes_failed << " handshake(s)";
  }
  void TearDown() override {
    for (auto& h : handlers_) h->held.clear();
  }

  LogCapture log_;
  EventLoop loop_;
  std::unique_ptr<RpcServer> server_;
  std::vector<PeerIdentity> identities_;
  std::vector<std::shared_ptr<TestParticipant>> handlers_;
};

TEST_F(TlsRpcTest, PipelinedOutOfOrderRepliesAndAMultiMegabyteFrameOverTls) {
  StartServer(ServerContext("participant-1"));
  ParticipantStub stub(&loop_, Address(),
                       ChannelOptions(ClientContext("coordinator-0"),
                                      {PrincipalKind::kParticipant, "participant-1"}));
  constexpr int kCalls = 200;
  std::map<std::string, std::string> replies;
  std::vector<int> order;
  int failures = 0;
  for (int i = 0; i < kCalls; ++i) {
    std::string key = "hold:" + std::to_string(i);
    stub.Read(key, 10000, [&, key, i](const RpcStatus& s, const rpc::ReadResult& r) {
      if (!s.ok()) ++failures;
      replies[key] = r.value;
      order.push_back(i);
    });
  }
  ASSERT_TRUE(
      RunUntil(loop_, [&] { return !handlers_.empty() && handlers_[0]->held.size() == kCalls; }));
  handlers_[0]->ReleaseReverse();
  // 6 MiB out (the key) and 6 MiB back (the value): hundreds of TLS records.
  const std::string big(6u << 20, 'x');
  RpcStatus big_status = Status::Internal("unset");
  std::string big_value;
  stub.Read(big, 10000, [&](const RpcStatus& s, const rpc::ReadResult& r) {
    big_status = s;
    big_value = r.value;
  });
  ASSERT_TRUE(RunUntil(
      loop_, [&] { return replies.size() == kCalls && !big_value.empty(); }, 10000));
  EXPECT_EQ(failures, 0);
  for (const auto& [key, value] : replies) EXPECT_EQ(value, "v:" + key);
  EXPECT_EQ(order.front(), kCalls - 1);  // answered in reverse
  EXPECT_EQ(order.back(), 0);
  ASSERT_TRUE(big_status.ok()) << big_status.ToString();
  EXPECT_EQ(big_value, "v:" + big);
  EXPECT_EQ(stub.channel()->stats().connects, 1u);
  EXPECT_EQ(server_->stats().tls_handshakes, 1u);
  EXPECT_EQ(server_->stats().tls_handshakes_failed, 0u);
}

// Back-pressure works on decrypted frames as on plaintext ones: past the
// per-connection limit the server stops reading, then resumes as replies go.
TEST_F(TlsRpcTest, ServerStopsReadingPastPerConnectionInFlightLimitOverTls) {
  RpcServerOptions so;
  so.in_flight_per_connection_max = 4;
  StartServer(ServerContext("participant-1"), so);
  ParticipantStub stub(&loop_, Address(), ChannelOptions(ClientContext("coordinator-0")));
  int ok = 0;
  for (int i = 0; i < 10; ++i) {
    stub.Read("hold:" + std::to_string(i), 5000, [&](const RpcStatus& s, const rpc::ReadResult&) {
      if (s.ok()) ++ok;
    });
  }
  ASSERT_TRUE(
      RunUntil(loop_, [&] { return !handlers_.empty() && handlers_[0]->held.size() == 4; }));
  RunUntil(
      loop_, [] { return false; }, 30);
  EXPECT_EQ(handlers_[0]->held.size(), 4u);  // the rest wait, decrypted or in the socket
  ASSERT_TRUE(RunUntil(loop_, [&] {
    if (!handlers_[0]->held.empty()) handlers_[0]->ReleaseReverse();
    return ok == 10;
  }));
  EXPECT_EQ(handlers_[0]->reads, 10);
}

TEST_F(TlsRpcTest, FactorySeesTheCertificateIdentityOfEachConnection) {
  StartServer(ServerContext("participant-1"));
  EXPECT_TRUE(ReadOnce(ChannelOptions(ClientContext("coordinator-0"))).ok());
  EXPECT_TRUE(ReadOnce(ChannelOptions(ClientContext("bench"))).ok());
  ASSERT_EQ(identities_.size(), 2u);
  EXPECT_TRUE(identities_[0].Is(PrincipalKind::kCoordinator, "coordinator-0"))
      << identities_[0].Describe();
  EXPECT_TRUE(identities_[1].Is(PrincipalKind::kClient, "bench")) << identities_[1].Describe();
  for (const PeerIdentity& who : identities_) {
    EXPECT_EQ(who.address.rfind("127.0.0.1:", 0), 0u) << who.address;
  }
}

TEST_F(TlsRpcTest, ClientCertificateFromAnotherCaIsRefusedAtTheHandshake) {
  StartServer(ServerContext("participant-1"));
  TlsFiles foreign{CaCertPath(Certs().dir), CertPath(Certs().other_dir, "coordinator-0"),
                   KeyPath(Certs().other_dir, "coordinator-0")};
  RpcStatus s = ReadOnce(ChannelOptions(Context(foreign, TlsSide::kClient)));
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("refused our certificate: not signed by the CA"), std::string::npos)
      << s.ToString();
  WaitForRefusals(1);
  EXPECT_TRUE(identities_.empty());  // no handler ever saw it
  EXPECT_EQ(log_.Count("TLS handshake with 127.0.0.1:"), 1u) << log_.text();
  EXPECT_EQ(log_.Count("client certificate not signed by the cluster CA (CN=coordinator-0"), 1u)
      << log_.text();
}

// A flood of refused handshakes (every one counted) writes at most 20 lines
// per 10 s window to the log, however long it lasts (common/log_limiter.h):
// a log cannot be grown without bound from outside.
TEST_F(TlsRpcTest, AFloodOfRefusedHandshakesLogsAtMostTwentyLines) {
  StartServer(ServerContext("participant-1"));
  TlsFiles foreign{CaCertPath(Certs().dir), CertPath(Certs().other_dir, "coordinator-0"),
                   KeyPath(Certs().other_dir, "coordinator-0")};
  constexpr int kAttempts = 60;
  for (int i = 0; i < kAttempts; ++i) {
    RpcStatus s = ReadOnce(ChannelOptions(Context(foreign, TlsSide::kClient)));
    ASSERT_TRUE(s.IsPermissionDenied()) << s.ToString();
  }
  WaitForRefusals(kAttempts);
  EXPECT_EQ(server_->stats().tls_handshakes_failed, static_cast<uint64_t>(kAttempts));
  EXPECT_EQ(log_.Count("TLS handshake with 127.0.0.1:"), 20u) << log_.text();
}

TEST_F(TlsRpcTest, ExpiredClientCertificateIsRefusedAtTheHandshake) {
  StartServer(ServerContext("participant-1"));
  RpcStatus s = ReadOnce(ChannelOptions(ClientContext("old-bench")));
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("refused our certificate: expired"), std::string::npos)
      << s.ToString();
  WaitForRefusals(1);
  EXPECT_TRUE(identities_.empty());
  EXPECT_EQ(log_.Count("failed: client certificate expired on "), 1u) << log_.text();
  EXPECT_NE(log_.Line("failed: client certificate expired on ").find("CN=old-bench"),
            std::string::npos)
      << log_.text();
}

TEST_F(TlsRpcTest, ClientWithoutCertificateIsRefusedWhereOneIsRequired) {
  StartServer(ServerContext("participant-1"));
  auto anonymous = Context({CaCertPath(Certs().dir), "", ""}, TlsSide::kClient);
  RpcStatus s = ReadOnce(ChannelOptions(anonymous));
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("requires a client certificate"), std::string::npos) << s.ToString();
  WaitForRefusals(1);
  EXPECT_TRUE(identities_.empty());
  EXPECT_EQ(log_.Count("failed: no client certificate"), 1u) << log_.text();
}

TEST_F(TlsRpcTest, ClientWithoutCertificateIsUnauthenticatedWhereNoneIsRequired) {
  StartServer(Context(Certs().Files("participant-1"), TlsSide::kServer,
                      TlsContextOptions{.require_client_cert = false}));
  auto anonymous = Context({CaCertPath(Certs().dir), "", ""}, TlsSide::kClient);
  EXPECT_TRUE(ReadOnce(ChannelOptions(anonymous)).ok());
  ASSERT_EQ(identities_.size(), 1u);
  EXPECT_FALSE(identities_[0].authenticated());
}

TEST_F(TlsRpcTest, ServerNamedOtherThanExpectedFailsTheCallsAndLogsOnce) {
  StartServer(ServerContext("participant-1"));
  PeerChannelOptions o = ChannelOptions(ClientContext("coordinator-0"),
                                        {PrincipalKind::kParticipant, "participant-2"});
  o.reconnect_backoff_initial_ms = 1;
  o.reconnect_backoff_max_ms = 2;
  ParticipantStub stub(&loop_, Address(), o);
  std::vector<RpcStatus> results;
  for (int attempt = 0; attempt < 3; ++attempt) {
    bool done = false;
    stub.Read("k", 3000, [&](const RpcStatus& s, const rpc::ReadResult&) {
      results.push_back(s);
      done = true;
    });
    ASSERT_TRUE(RunUntil(loop_, [&] { return done; }));
    RunUntil(
        loop_, [] { return false; }, 10);  // past the backoff
  }
  for (const RpcStatus& s : results) {
    EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
    EXPECT_NE(s.message().find("server name mismatch: expected participant-2 (participant), the "
                               "server's certificate names participant-1 (participant)"),
              std::string::npos)
        << s.ToString();
  }
  EXPECT_EQ(stub.channel()->stats().tls_handshake_failures, 3u);
  EXPECT_EQ(stub.channel()->stats().connects, 0u);
  EXPECT_EQ(log_.Count("server name mismatch"), 1u) << log_.text();
  EXPECT_TRUE(identities_.empty());  // the server never served it
  // A kind-only expectation accepts any participant.
  EXPECT_TRUE(
      ReadOnce(ChannelOptions(ClientContext("coordinator-0"), {PrincipalKind::kParticipant, ""}))
          .ok());
  RpcStatus wrong_kind =
      ReadOnce(ChannelOptions(ClientContext("coordinator-0"), {PrincipalKind::kCoordinator, ""}));
  EXPECT_TRUE(wrong_kind.IsPermissionDenied()) << wrong_kind.ToString();
}

TEST_F(TlsRpcTest, ServerCertificateFromAnotherCaIsRefusedByTheClient) {
  StartServer(Context({CaCertPath(Certs().dir), CertPath(Certs().other_dir, "coordinator-0"),
                       KeyPath(Certs().other_dir, "coordinator-0")},
                      TlsSide::kServer));
  RpcStatus s = ReadOnce(ChannelOptions(ClientContext("coordinator-0")));
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("server certificate not signed by the cluster CA (CN=coordinator-0"),
            std::string::npos)
      << s.ToString();
  WaitForRefusals(1);
  EXPECT_EQ(log_.Count("failed: the peer refused our certificate: not signed by the CA"), 1u)
      << log_.text();
  EXPECT_TRUE(identities_.empty());
}

// A client's certificate (extendedKeyUsage clientAuth only) cannot serve.
TEST_F(TlsRpcTest, ClientOnlyCertificateCannotServe) {
  StartServer(ServerContext("bench"));
  RpcStatus s = ReadOnce(ChannelOptions(ClientContext("coordinator-0")));
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("server certificate not issued for this use"), std::string::npos)
      << s.ToString();
  WaitForRefusals(1);
  EXPECT_EQ(log_.Count("the peer refused our certificate: not issued for this use"), 1u)
      << log_.text();
  EXPECT_TRUE(identities_.empty());
}

TEST_F(TlsRpcTest, TlsClientOnPlaintextPortFailsFastWithAClearMessage) {
  StartServer(nullptr);
  auto start = std::chrono::steady_clock::now();
  RpcStatus s = ReadOnce(ChannelOptions(ClientContext("coordinator-0")));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2000));
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_TRUE(s.not_sent());
  EXPECT_NE(s.message().find("closed the connection during the TLS handshake (a plaintext port"),
            std::string::npos)
      << s.ToString();
  EXPECT_EQ(log_.Count("a TLS client on a plaintext port"), 1u) << log_.text();
}

TEST_F(TlsRpcTest, ReconnectMakesANewSession) {
  StartServer(ServerContext("participant-1"));
  const int port = server_->port();
  PeerChannelOptions o = ChannelOptions(ClientContext("coordinator-0"));
  o.reconnect_backoff_initial_ms = 5;
  ParticipantStub stub(&loop_, Address(), o);
  RpcStatus first = Status::Internal("unset");
  stub.Read("a", 1000, [&](const RpcStatus& s, const rpc::ReadResult&) { first = s; });
  ASSERT_TRUE(RunUntil(loop_, [&] { return first.ok(); }));
  server_.reset();
  RunUntil(
      loop_, [] { return false; }, 20);
  RpcServerOptions so;
  so.port = port;
  StartServer(ServerContext("participant-1"), so);
  RpcStatus again = Status::Internal("unset");
  for (int i = 0; i < 50 && !again.ok(); ++i) {
    bool done = false;
    stub.Read("b", 1000, [&](const RpcStatus& s, const rpc::ReadResult&) {
      again = s;
      done = true;
    });
    ASSERT_TRUE(RunUntil(loop_, [&] { return done; }));
    if (!again.ok())
      RunUntil(
          loop_, [] { return false; }, 10);
  }
  EXPECT_TRUE(again.ok()) << again.ToString();
  EXPECT_EQ(stub.channel()->stats().connects, 2u);
  EXPECT_EQ(identities_.size(), 2u);
}

// ---- a TLS server on its own thread, called with blocking sockets ----

class ThreadedTlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_thread_.Start();
    loop_thread_.RunSync([&] {
      RpcServerOptions so;
      so.tls = ServerContext("participant-1");
      so.tls_handshake_timeout_ms = 200;
      server_ = std::make_unique<RpcServer>(
          loop_thread_.loop(),
          std::make_shared<rpc::ParticipantAsyncProcessor>(std::make_shared<TestParticipant>()),
          so);
      start_status_ = server_->Start();
      port_ = server_->port();
    });
    ASSERT_TRUE(start_status_.ok()) << start_status_.ToString();
  }
  void TearDown() override {
    loop_thread_.RunSync([&] { server_.reset(); });
    loop_thread_.Stop();
  }
  int Connect() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    EXPECT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return fd;
  }
  RpcServerStats Stats() {
    RpcServerStats s;
    loop_thread_.RunSync([&] { s = server_->stats(); });
    return s;
  }
  bool WaitForRefusals(uint64_t n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (std::chrono::steady_clock::now() < deadline) {
      if (Stats().tls_handshakes_failed >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return false;
  }

  LogCapture log_;
  LoopThread loop_thread_;
  std::unique_ptr<RpcServer> server_;
  Status start_status_;
  int port_ = 0;
};

// Bad input inside TLS is handled as without TLS: a zero-length frame closes
// that connection only (here from a TlsSession driven over a blocking socket).
TEST_F(ThreadedTlsServerTest, BadFrameInsideTlsClosesOnlyThatConnection) {
  int fd = Connect();
  auto session = TlsSession::Create(ClientContext("coordinator-0"));
  ASSERT_TRUE(session->Start().ok());
  std::vector<uint8_t> plaintext;
  auto send_output = [&] {
    std::string out;
    session->TakeOutput(&out);
    ASSERT_EQ(send(fd, out.data(), out.size(), MSG_NOSIGNAL), static_cast<ssize_t>(out.size()));
  };
  send_output();
  char buf[16384];
  while (!session->handshake_done()) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    ASSERT_GT(n, 0);
    ASSERT_TRUE(
        session->Receive(reinterpret_cast<uint8_t*>(buf), static_cast<size_t>(n), &plaintext).ok());
  }
  send_output();  // our Finished
  const uint8_t zero_length[4] = {0, 0, 0, 0};
  ASSERT_TRUE(session->Send(zero_length, sizeof(zero_length)).ok());
  send_output();
  ssize_t n = 0;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
  }
  EXPECT_EQ(n, 0) << "the server did not close the connection";
  close(fd);
  EXPECT_EQ(Stats().connections_closed_bad_input, 1u);
  EXPECT_EQ(Stats().tls_handshakes, 1u);
  EXPECT_EQ(log_.Count("malformed frame: zero length"), 1u) << log_.text();
  // Other connections are served.
  EventLoop loop;
  PeerChannelOptions options;
  options.tls = ClientContext("bench");
  ParticipantStub stub(&loop, "127.0.0.1:" + std::to_string(port_), options);
  RpcStatus status = Status::Internal("no reply");
  bool done = false;
  stub.Read("k", 3000, [&](const RpcStatus& s, const rpc::ReadResult&) {
    status = s;
    done = true;
  });
  ASSERT_TRUE(RunUntil(loop, [&] { return done; }));
  EXPECT_TRUE(status.ok()) << status.ToString();
  stub.channel()->Close();
}

TEST_F(ThreadedTlsServerTest, StockPlaintextThriftClientIsToldThePortRequiresTls) {
  auto socket = std::make_shared<apache::thrift::transport::TSocket>("127.0.0.1", port_);
  socket->setRecvTimeout(5000);
  auto transport = std::make_shared<apache::thrift::transport::TFramedTransport>(socket);
  rpc::ParticipantClient client(
      std::make_shared<apache::thrift::protocol::TBinaryProtocol>(transport));
  transport->open();
  rpc::ReadResult r;
  // The server answers the plaintext call once, in plaintext, with the cause,
  // then closes: the client's error says what is wrong.
  try {
    client.Read(r, "k");
    ADD_FAILURE() << "a plaintext call to a TLS port was answered";
  } catch (const apache::thrift::TApplicationException& e) {
    EXPECT_NE(std::string(e.what()).find("this port requires TLS"), std::string::npos) << e.what();
  }
  EXPECT_THROW(client.Read(r, "k"), apache::thrift::transport::TTransportException)
      << "the connection stays closed";
  transport->close();
  ASSERT_TRUE(WaitForRefusals(1));
  EXPECT_EQ(Stats().tls_handshakes, 0u);
  EXPECT_EQ(log_.Count("TLS handshake with 127.0.0.1:"), 1u) << log_.text();
  EXPECT_EQ(log_.Count("plaintext sent to a TLS port: the first byte 0x00"), 1u) << log_.text();
}

TEST_F(ThreadedTlsServerTest, SilentConnectionIsClosedWhenTheHandshakeTimesOut) {
  int fd = Connect();
  auto start = std::chrono::steady_clock::now();
  char buf[16];
  EXPECT_EQ(recv(fd, buf, sizeof(buf), 0), 0);  // the server closes it
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  close(fd);
  ASSERT_TRUE(WaitForRefusals(1));
  EXPECT_EQ(log_.Count("no TLS handshake within 200 ms"), 1u) << log_.text();
  EXPECT_EQ(Stats().connections_accepted, 1u);
}

}  // namespace
}  // namespace dtx
