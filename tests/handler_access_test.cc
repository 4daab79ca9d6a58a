// The trust boundary at the handlers (node/access.h, docs/design.md "Trust
// boundary"): a participant and a coordinator runtime in this process, each
// with a secure AccessPolicy, called over loopback by the stock Thrift
// clients. The transport does not authenticate anyone yet, so the test forges
// each connection's PeerIdentity (RuntimeOptions::identify) the way TLS will
// fill it in from the certificate, and checks that the peer and admin calls
// are refused to the wrong caller (PERMISSION_DENIED, nothing done) and taken
// from the right one.
#include <gtest/gtest.h>
#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "Admin.h"
#include "Coordinator.h"
#include "CoordinatorPeer.h"
#include "Participant.h"
#include "ParticipantPeer.h"
#include "common/address.h"
#include "common/event_loop.h"
#include "common/failpoint.h"
#include "common/identity.h"
#include "coordinator/runtime.h"
#include "node/access.h"
#include "participant/runtime.h"

namespace dtx {
namespace {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TSocket;

constexpr char kCoordinator0[] = "127.0.0.1:7001";  // configured, never started
constexpr char kCoordinator1[] = "127.0.0.1:7002";
constexpr char kParticipant0[] = "127.0.0.1:7201";

const PeerIdentity kClient{PrincipalKind::kClient, "bench", ""};
const PeerIdentity kAdmin{PrincipalKind::kAdmin, "admin", ""};
const PeerIdentity kAsCoordinator0{PrincipalKind::kCoordinator, "coordinator-0", ""};
const PeerIdentity kAsCoordinator1{PrincipalKind::kCoordinator, "coordinator-1", ""};
const PeerIdentity kAsParticipant0{PrincipalKind::kParticipant, "participant-0", ""};
const PeerIdentity kAsParticipant1{PrincipalKind::kParticipant, "participant-1", ""};

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/dtx-access-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Who the next accepted connection is (the test's stand-in for TLS).
class ForgedIdentity {
 public:
  void Set(const PeerIdentity& who) {
    std::lock_guard<std::mutex> lock(mu_);
    next_ = who;
  }
  PeerIdentity Identify(const PeerIdentity& transport) {
    std::lock_guard<std::mutex> lock(mu_);
    PeerIdentity who = next_;
    who.address = transport.address;
    return who;
  }

 private:
  std::mutex mu_;
  PeerIdentity next_;
};

// A stock synchronous client of service Client on `address`.
template <typename Client>
class Connection {
 public:
  explicit Connection(const std::string& address) {
    auto hp = ParseHostPort(address);
    EXPECT_TRUE(hp.ok());
    auto socket = std::make_shared<TSocket>(hp->host, hp->port);
    socket->setRecvTimeout(5000);
    transport_ = std::make_shared<TFramedTransport>(socket);
    client_ = std::make_unique<Client>(std::make_shared<TBinaryProtocol>(transport_));
    transport_->open();
  }
  ~Connection() { transport_->close(); }
  Client* operator->() { return client_.get(); }

 private:
  std::shared_ptr<TFramedTransport> transport_;
  std::unique_ptr<Client> client_;
};

// The DtxError code `call` threw (nullopt: it returned).
template <typename F>
std::optional<rpc::ErrorCode::type> ErrorOf(F&& call) {
  try {
    call();
    return std::nullopt;
  } catch (const rpc::DtxError& e) {
    return e.code;
  }
}

// True when `call` was answered with Thrift's UNKNOWN_METHOD: the service on
// that listener has no such method.
template <typename F>
bool UnknownMethod(F&& call) {
  try {
    call();
    return false;
  } catch (const apache::thrift::TApplicationException& e) {
    return e.getType() == apache::thrift::TApplicationException::UNKNOWN_METHOD;
  } catch (const std::exception&) {
    return false;
  }
}

rpc::TxId SomeTxId() {
  rpc::TxId txid;
  txid.hi = 42;
  txid.lo = 7;
  return txid;
}

class ParticipantAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fp::DisarmAll();
    loop_.Start();
    participant::RuntimeOptions o;
    o.name = "participant-0";
    o.dir = dir_.path();
    o.coordinator = kCoordinator0;
    o.coordinators = {kCoordinator0, kCoordinator1};
    o.secure = true;
    o.enable_failpoints = true;
    o.coordinator_peers = {
        node::ConfiguredPeer{"coordinator-0", kCoordinator0, PrincipalKind::kCoordinator},
        node::ConfiguredPeer{"coordinator-1", kCoordinator1, PrincipalKind::kCoordinator}};
    o.identify = [this](const PeerIdentity& t) { return forged_.Identify(t); };
    o.metrics_enabled = false;
    loop_.RunSync([&] {
      auto rt = participant::Runtime::Start(loop_.loop(), o);
      ASSERT_TRUE(rt.ok()) << rt.status().ToString();
      runtime_ = std::move(*rt);
    });
    ASSERT_NE(runtime_, nullptr);
  }
  void TearDown() override {
    fp::DisarmAll();
    loop_.RunSync([&] {
      if (runtime_) runtime_->Shutdown();
      runtime_.reset();
    });
    loop_.Stop();
  }
  // A new connection of `who` to the peer listener.
  Connection<rpc::ParticipantPeerClient> As(const PeerIdentity& who) {
    forged_.Set(who);
    return Connection<rpc::ParticipantPeerClient>(runtime_->peer_address());
  }
  // A new connection of `who` to the client listener.
  Connection<rpc::ParticipantClient> ClientAs(const PeerIdentity& who) {
    forged_.Set(who);
    return Connection<rpc::ParticipantClient>(runtime_->address());
  }
  // A new connection of `who` to the admin listener.
  Connection<rpc::AdminClient> AdminAs(const PeerIdentity& who) {
    forged_.Set(who);
    return Connection<rpc::AdminClient>(runtime_->admin_address());
  }
  int64_t Epoch() {
    rpc::NodeStatus st;
    As(kClient)->GetStatus(st);
    return st.epoch;
  }

  TempDir dir_;
  LoopThread loop_;
  ForgedIdentity forged_;
  std::unique_ptr<participant::Runtime> runtime_;
};

TEST_F(ParticipantAccessTest, AbortCommitPrepareFromAClientOrAParticipantAreRefused) {
  for (const PeerIdentity& who : {kClient, PeerIdentity{}, kAsParticipant1}) {
    EXPECT_EQ(ErrorOf([&] { As(who)->Abort(SomeTxId(), 0, rpc::Attempt()); }),
              rpc::ErrorCode::PERMISSION_DENIED)
        << who.Describe();
    EXPECT_EQ(ErrorOf([&] { As(who)->Commit(SomeTxId(), 0); }), rpc::ErrorCode::PERMISSION_DENIED)
        << who.Describe();
    rpc::PrepareRequest req;
    req.txid = SomeTxId();
    rpc::PrepareResponse resp;
    EXPECT_EQ(ErrorOf([&] { As(who)->Prepare(resp, req); }), rpc::ErrorCode::PERMISSION_DENIED)
        << who.Describe();
  }
  // The same Abort from a configured coordinator is taken (presumed abort of
  // an unknown txid).
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator0)->Abort(SomeTxId(), 0, rpc::Attempt()); }),
            std::nullopt);
}

TEST_F(ParticipantAccessTest, AdoptEpochSpeakingForAnotherCoordinatorIsRefused) {
  const int64_t before = Epoch();
  // coordinator-0's certificate, coordinator-1's address.
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator0)->AdoptEpoch(before + 1000, kCoordinator1); }),
            rpc::ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorOf([&] { As(kClient)->AdoptEpoch(before + 1000, kCoordinator0); }),
            rpc::ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(Epoch(), before);
  // For itself, the configured coordinator's AdoptEpoch is taken.
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator0)->AdoptEpoch(before + 1, kCoordinator0); }),
            std::nullopt);
  EXPECT_EQ(Epoch(), before + 1);
}

TEST_F(ParticipantAccessTest, HeartbeatMustComeFromTheCoordinatorItNames) {
  rpc::HeartbeatRequest req;
  req.sender = kCoordinator1;
  req.role = rpc::NodeRole::PRIMARY;
  req.epoch = 0;
  rpc::HeartbeatResponse resp;
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator0)->Heartbeat(resp, req); }),
            rpc::ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorOf([&] { As(kClient)->Heartbeat(resp, req); }), rpc::ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator1)->Heartbeat(resp, req); }), std::nullopt);
  EXPECT_EQ(resp.name, "participant-0");
}

TEST_F(ParticipantAccessTest, AdminCallsOnlyFromAnAdmin) {
  for (const PeerIdentity& who : {kClient, kAsCoordinator0}) {
    EXPECT_EQ(
        ErrorOf([&] { AdminAs(who)->SetFailpoint("participant.commit.before_ack", "crash"); }),
        rpc::ErrorCode::PERMISSION_DENIED)
        << who.Describe();
    EXPECT_TRUE(fp::Armed().empty());
    std::vector<rpc::InDoubtTx> doubt;
    EXPECT_EQ(ErrorOf([&] { AdminAs(who)->ListInDoubt(doubt); }),
              rpc::ErrorCode::PERMISSION_DENIED);
    rpc::TraceResponse trace;
    EXPECT_EQ(ErrorOf([&] { AdminAs(who)->GetTrace(trace, SomeTxId()); }),
              rpc::ErrorCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(
      ErrorOf([&] { AdminAs(kAdmin)->SetFailpoint("participant.commit.before_ack", "error"); }),
      std::nullopt);
  std::vector<rpc::InDoubtTx> doubt;
  EXPECT_EQ(ErrorOf([&] { AdminAs(kAdmin)->ListInDoubt(doubt); }), std::nullopt);
  // SetFailpoint arms right after its reply is written (node/handler.h), so
  // the node's next call, not the reply, orders the arming before us.
  EXPECT_EQ(fp::Armed(), std::vector<std::string>{"participant.commit.before_ack=error"});
  // Client calls stay open to every caller.
  rpc::ReadResult read;
  EXPECT_EQ(ErrorOf([&] { ClientAs(kClient)->Read(read, "k"); }), std::nullopt);
}

// The admin calls are not on the client/peer listener at all: a stock Admin
// client sending SetFailpoint there gets Thrift's UNKNOWN_METHOD, even as an
// admin. The admin listener is bound to loopback by default.
TEST_F(ParticipantAccessTest, AdminCallsAreUnknownOnTheClientListenerAndAdminIsOnLoopback) {
  forged_.Set(kAdmin);
  Connection<rpc::AdminClient> wrong_port(runtime_->address());
  try {
    wrong_port->SetFailpoint("participant.commit.before_ack", "crash");
    ADD_FAILURE() << "SetFailpoint answered on the client listener";
  } catch (const apache::thrift::TApplicationException& e) {
    EXPECT_EQ(e.getType(), apache::thrift::TApplicationException::UNKNOWN_METHOD) << e.what();
  }
  EXPECT_TRUE(fp::Armed().empty());
  EXPECT_EQ(runtime_->admin_address().rfind("127.0.0.1:", 0), 0u) << runtime_->admin_address();
  EXPECT_NE(runtime_->admin_address(), runtime_->address());
}

// The peer calls are not on the client listener either (issue 13, "Three
// listeners per node"): a stock ParticipantPeer client sending them to the
// client port gets UNKNOWN_METHOD even as a configured coordinator, and
// nothing happens; the same calls on the peer listener are served.
TEST_F(ParticipantAccessTest, PeerCallsAreUnknownOnTheClientListenerAndServedOnThePeerListener) {
  const int64_t epoch = Epoch();
  // Each on a new connection: the server closes one after an unknown method.
  auto on_client_port = [&] {
    forged_.Set(kAsCoordinator0);
    return Connection<rpc::ParticipantPeerClient>(runtime_->address());
  };
  rpc::PrepareRequest prepare;
  prepare.txid = SomeTxId();
  prepare.epoch = epoch;
  prepare.coordinator = kCoordinator0;
  rpc::PrepareResponse vote;
  EXPECT_TRUE(UnknownMethod([&] { on_client_port()->Prepare(vote, prepare); }));
  EXPECT_TRUE(UnknownMethod([&] { on_client_port()->Commit(SomeTxId(), epoch); }));
  EXPECT_TRUE(UnknownMethod([&] { on_client_port()->Abort(SomeTxId(), epoch, rpc::Attempt()); }));
  EXPECT_TRUE(UnknownMethod([&] { on_client_port()->AdoptEpoch(epoch + 100, kCoordinator0); }));
  rpc::HeartbeatRequest hb;
  hb.sender = kCoordinator0;
  hb.role = rpc::NodeRole::PRIMARY;
  hb.epoch = epoch;
  rpc::HeartbeatResponse hb_resp;
  EXPECT_TRUE(UnknownMethod([&] { on_client_port()->Heartbeat(hb_resp, hb); }));
  EXPECT_EQ(Epoch(), epoch);
  // The client service is all the client listener serves.
  rpc::NodeStatus st;
  ClientAs(kClient)->GetStatus(st);
  EXPECT_EQ(st.name, "participant-0");
  // GetStatus names each listener; without TLS (the runtime's default
  // NodeSecurity, what --insecure gives) each is plaintext.
  std::vector<std::string> listeners;
  for (const rpc::ListenerStatus& l : st.listeners) {
    listeners.push_back(l.name + " " + l.address + (l.tls ? " tls" : "") +
                        (l.client_cert_required ? " cert" : ""));
  }
  EXPECT_EQ(listeners, (std::vector<std::string>{"client " + runtime_->address(),
                                                 "peer " + runtime_->peer_address(),
                                                 "admin " + runtime_->admin_address()}));
  // On the peer listener the same coordinator is served.
  EXPECT_NE(runtime_->peer_address(), runtime_->address());
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator0)->Heartbeat(hb_resp, hb); }), std::nullopt);
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator0)->Abort(SomeTxId(), epoch, rpc::Attempt()); }),
            std::nullopt);
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator0)->AdoptEpoch(epoch + 1, kCoordinator0); }),
            std::nullopt);
  EXPECT_EQ(Epoch(), epoch + 1);
}

class CoordinatorAccessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fp::DisarmAll();
    loop_.Start();
    coordinator::RuntimeOptions o;
    o.name = "coordinator-0";
    o.dir = dir_.path();
    o.participants = {kParticipant0};
    o.ha.role = coordinator::Role::kPrimary;
    o.ha.peer = kCoordinator1;
    o.secure = true;
    o.enable_failpoints = true;
    o.named_peers = {
        node::ConfiguredPeer{"participant-0", kParticipant0, PrincipalKind::kParticipant},
        node::ConfiguredPeer{"coordinator-1", kCoordinator1, PrincipalKind::kCoordinator}};
    o.identify = [this](const PeerIdentity& t) { return forged_.Identify(t); };
    o.metrics_enabled = false;
    loop_.RunSync([&] {
      auto rt = coordinator::Runtime::Start(loop_.loop(), o);
      ASSERT_TRUE(rt.ok()) << rt.status().ToString();
      runtime_ = std::move(*rt);
    });
    ASSERT_NE(runtime_, nullptr);
  }
  void TearDown() override {
    fp::DisarmAll();
    loop_.RunSync([&] {
      if (runtime_) runtime_->Shutdown();
      runtime_.reset();
    });
    loop_.Stop();
  }
  // A new connection of `who` to the peer listener.
  Connection<rpc::CoordinatorPeerClient> As(const PeerIdentity& who) {
    forged_.Set(who);
    return Connection<rpc::CoordinatorPeerClient>(runtime_->peer_address());
  }
  Connection<rpc::AdminClient> AdminAs(const PeerIdentity& who) {
    forged_.Set(who);
    return Connection<rpc::AdminClient>(runtime_->admin_address());
  }

  TempDir dir_;
  LoopThread loop_;
  ForgedIdentity forged_;
  std::unique_ptr<coordinator::Runtime> runtime_;
};

TEST_F(CoordinatorAccessTest, ReplicateAndHeartbeatOnlyFromThePeerCoordinatorForItself) {
  rpc::ReplicateRequest rep;
  rep.epoch = 1'000'000;
  rep.primary = kCoordinator1;
  rep.snapshot = true;
  rpc::ReplicateResponse rep_resp;
  rpc::HeartbeatRequest hb;
  hb.sender = kCoordinator1;
  hb.role = rpc::NodeRole::PRIMARY;
  hb.epoch = 1'000'000;
  rpc::HeartbeatResponse hb_resp;
  for (const PeerIdentity& who : {kClient, PeerIdentity{}, kAsParticipant0}) {
    EXPECT_EQ(ErrorOf([&] { As(who)->Replicate(rep_resp, rep); }),
              rpc::ErrorCode::PERMISSION_DENIED)
        << who.Describe();
    EXPECT_EQ(ErrorOf([&] { As(who)->Heartbeat(hb_resp, hb); }), rpc::ErrorCode::PERMISSION_DENIED)
        << who.Describe();
  }
  // coordinator-1 speaking for coordinator-0's address.
  rep.primary = kCoordinator0;
  hb.sender = kCoordinator0;
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator1)->Replicate(rep_resp, rep); }),
            rpc::ErrorCode::PERMISSION_DENIED);
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator1)->Heartbeat(hb_resp, hb); }),
            rpc::ErrorCode::PERMISSION_DENIED);
  // Nothing forged reached the HA core: still the primary at its own epoch.
  rpc::NodeStatus st;
  As(kClient)->GetStatus(st);
  EXPECT_NE(st.role, rpc::NodeRole::BACKUP);
  EXPECT_LT(st.epoch, 1'000'000);
  // The configured peer, for itself: past the access check.
  hb.sender = kCoordinator1;
  hb.epoch = 0;
  hb.role = rpc::NodeRole::BACKUP;
  EXPECT_EQ(ErrorOf([&] { As(kAsCoordinator1)->Heartbeat(hb_resp, hb); }), std::nullopt);
  EXPECT_EQ(hb_resp.name, "coordinator-0");
}

TEST_F(CoordinatorAccessTest, QueryDecisionFromParticipantsAndThePeerOnly) {
  rpc::Decision::type d{};
  EXPECT_EQ(
      ErrorOf([&] { d = As(kClient)->QueryDecision(SomeTxId(), std::string(), rpc::Attempt()); }),
      rpc::ErrorCode::PERMISSION_DENIED);
  try {
    As(kAsParticipant1)
        ->QueryDecision(SomeTxId(), std::string(), rpc::Attempt());  // not configured here
    ADD_FAILURE() << "answered";
  } catch (const rpc::DtxError& e) {
    EXPECT_EQ(e.code, rpc::ErrorCode::PERMISSION_DENIED);
    EXPECT_NE(e.message.find("neither a configured participant nor the peer coordinator"),
              std::string::npos)
        << e.message;
  }
  // Past the access check (answered, or NOT_PRIMARY while not established).
  EXPECT_NE(ErrorOf([&] {
              d = As(kAsParticipant0)->QueryDecision(SomeTxId(), std::string(), rpc::Attempt());
            }),
            rpc::ErrorCode::PERMISSION_DENIED);
  EXPECT_NE(ErrorOf([&] {
              d = As(kAsCoordinator1)->QueryDecision(SomeTxId(), std::string(), rpc::Attempt());
            }),
            rpc::ErrorCode::PERMISSION_DENIED);
}

// A stock CoordinatorPeer client on the coordinator's client port gets
// UNKNOWN_METHOD for Replicate, Heartbeat and QueryDecision, even as the
// configured peer; the client service answers there.
TEST_F(CoordinatorAccessTest, PeerCallsAreUnknownOnTheClientListener) {
  auto on_client_port = [&] {
    forged_.Set(kAsCoordinator1);
    return Connection<rpc::CoordinatorPeerClient>(runtime_->address());
  };
  rpc::ReplicateRequest rep;
  rep.epoch = 1'000'000;
  rep.primary = kCoordinator1;
  rep.snapshot = true;
  rpc::ReplicateResponse rep_resp;
  EXPECT_TRUE(UnknownMethod([&] { on_client_port()->Replicate(rep_resp, rep); }));
  rpc::HeartbeatRequest hb;
  hb.sender = kCoordinator1;
  hb.role = rpc::NodeRole::PRIMARY;
  hb.epoch = 1'000'000;
  rpc::HeartbeatResponse hb_resp;
  EXPECT_TRUE(UnknownMethod([&] { on_client_port()->Heartbeat(hb_resp, hb); }));
  EXPECT_TRUE(UnknownMethod(
      [&] { on_client_port()->QueryDecision(SomeTxId(), std::string(), rpc::Attempt()); }));
  forged_.Set(kClient);
  Connection<rpc::CoordinatorClient> client(runtime_->address());
  rpc::NodeStatus st;
  client->GetStatus(st);
  EXPECT_NE(st.role, rpc::NodeRole::BACKUP);
  EXPECT_LT(st.epoch, 1'000'000);
  EXPECT_EQ(client->GetOutcome(SomeTxId()), rpc::Outcome::UNKNOWN);
  EXPECT_NE(runtime_->peer_address(), runtime_->address());
}

TEST_F(CoordinatorAccessTest, SetFailpointFromACoordinatorIsRefused) {
  EXPECT_EQ(ErrorOf([&] {
              AdminAs(kAsCoordinator1)->SetFailpoint("coordinator.end.before_log", "crash");
            }),
            rpc::ErrorCode::PERMISSION_DENIED);
  EXPECT_TRUE(fp::Armed().empty());
  EXPECT_EQ(ErrorOf([&] { AdminAs(kAdmin)->SetFailpoint("coordinator.end.before_log", "error"); }),
            std::nullopt);
  // Armed right after the reply is written (node/handler.h): the node's next
  // call orders the arming before us.
  std::vector<rpc::InDoubtTx> doubt;
  EXPECT_EQ(ErrorOf([&] { AdminAs(kAdmin)->ListInDoubt(doubt); }), std::nullopt);
  EXPECT_EQ(fp::Armed(), std::vector<std::string>{"coordinator.end.before_log=error"});
}

}  // namespace
}  // namespace dtx
