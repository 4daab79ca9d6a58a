// node/: the WAL appender hands each forced record's LSN to the loop and
// drops notices of a closed log; fail-stop and failpoint semantics; the
// lifetime token, the drain guard and the trace ring's minimum size; the
// listeners' metrics.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <prometheus/text_serializer.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "CoordinatorPeer.h"
#include "common/address.h"
#include "common/failpoint.h"
#include "node/fail_stop.h"
#include "node/handler.h"
#include "node/lifetime.h"
#include "node/node.h"
#include "node/wal_appender.h"
#include "tests/metrics_scrape.h"

namespace dtx::node {
namespace {

namespace fs = std::filesystem;

class WalAppenderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dtx-node-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    loop_.Start();
    loop_.RunSync([&] {
      appender_ = std::make_unique<WalAppender>(loop_.loop(), "test log");
      ASSERT_TRUE(appender_->Open(wal::Options{}, dir_ + "/wal", nullptr).ok());
    });
  }
  void TearDown() override {
    loop_.RunSync([&] { appender_.reset(); });
    loop_.Stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  // Lets every notice already posted run.
  void Drain() {
    for (int i = 0; i < 3; ++i) loop_.RunSync([] {});
  }

  // On the loop thread: returns once the notices of every record appended
  // so far are queued for the loop. Not log().WaitDurable(): the log wakes
  // its waiters before its flusher runs the records' callbacks, which queue
  // the notices. The flusher runs them one after the other in LSN order, so
  // once the on_synced of a record appended now has run, the earlier
  // records' notices are queued.
  void WaitUntilNoticesQueued() {
    std::promise<void> queued;
    appender_->Append(1, "barrier", nullptr, [&] { queued.set_value(); });
    queued.get_future().wait();
  }

  std::string dir_;
  LoopThread loop_;
  std::unique_ptr<WalAppender> appender_;
};

TEST_F(WalAppenderTest, ForcedRecordsAreReportedDurableWithTheirLsnOnTheLoopThread) {
  std::vector<wal::Lsn> returned, durable;
  std::atomic<int> synced{0};
  std::promise<void> done;
  loop_.RunSync([&] {
    for (int i = 0; i < 4; ++i) {
      const bool forced = i % 2 == 1;
      RecordLog::DurableFn on_durable;
      if (forced) {
        on_durable = [&, i](wal::Lsn lsn, bool /*more*/) {
          EXPECT_TRUE(loop_.loop()->InLoopThread());
          durable.push_back(lsn);
          if (i == 3) done.set_value();
        };
      }
      returned.push_back(appender_->Append(1, "payload-" + std::to_string(i), std::move(on_durable),
                                           [&] { ++synced; }));
    }
  });
  done.get_future().wait();
  Drain();
  loop_.RunSync([&] {
    EXPECT_EQ(returned, (std::vector<wal::Lsn>{1, 2, 3, 4}));
    EXPECT_EQ(durable, (std::vector<wal::Lsn>{2, 4}));  // the forced ones, with their own LSN
    EXPECT_GE(appender_->log().durable_lsn(), 4u);
  });
  EXPECT_EQ(synced.load(), 4);
}

TEST_F(WalAppenderTest, NoticesOfAClosedLogDoNothing) {
  int notices = 0;
  loop_.RunSync([&] {
    appender_->Append(1, "x", [&](wal::Lsn, bool) { ++notices; });
    // Close syncs the record; its notice is posted but must find the log's
    // lifetime over (as after the coordinator's log reload).
    appender_->Close();
  });
  Drain();
  EXPECT_EQ(notices, 0);
  // Reopened: notices of the new log arrive again, numbered on.
  std::promise<wal::Lsn> lsn;
  loop_.RunSync([&] {
    ASSERT_TRUE(appender_->Open(wal::Options{}, dir_ + "/wal", nullptr).ok());
    appender_->Append(1, "y", [&](wal::Lsn l, bool) { lsn.set_value(l); });
  });
  EXPECT_EQ(lsn.get_future().get(), 2u);
}

// Records made durable while the loop is busy reach it as one batch: one
// wake-up, the notices back to back in LSN order, `more` on all but the last.
TEST_F(WalAppenderTest, RecordsDurableTogetherArriveAsOneBatchWithMoreOnAllButTheLast) {
  std::vector<std::pair<wal::Lsn, bool>> notices;
  loop_.RunSync([&] {
    for (int i = 0; i < 8; ++i) {
      appender_->Append(1, "r" + std::to_string(i),
                               [&](wal::Lsn lsn, bool more) { notices.emplace_back(lsn, more); });
    }
    // The loop thread waits here, so every notice queues before any runs,
    // even when the records took more than one sync.
    WaitUntilNoticesQueued();
    EXPECT_TRUE(notices.empty());
  });
  Drain();
  loop_.RunSync([&] {
    ASSERT_EQ(notices.size(), 8u);
    for (size_t i = 0; i < notices.size(); ++i) {
      EXPECT_EQ(notices[i].first, i + 1);
      EXPECT_EQ(notices[i].second, i + 1 < notices.size()) << "notice " << i;
    }
  });
}

// A notice that closes the log (the coordinator's reload after a step-down)
// ends its batch: the notices after it belong to the old log.
TEST_F(WalAppenderTest, ABatchStopsAtTheNoticeThatClosedTheLog) {
  int ran = 0;
  loop_.RunSync([&] {
    for (int i = 0; i < 4; ++i) {
      appender_->Append(1, "r", [&, i](wal::Lsn, bool) {
        ++ran;
        if (i == 1) appender_->Close();
      });
    }
    WaitUntilNoticesQueued();  // one batch of four
  });
  Drain();
  loop_.RunSync([&] { EXPECT_EQ(ran, 2); });
}

TEST(FailStopTest, ExitsWithStatusOne) {
  EXPECT_EXIT(FailStop("test"), ::testing::ExitedWithCode(kFailStopExitCode), "");
}

// Once a sync of a WAL failed in the process, every stop is exit status 74
// (common/exit_codes.h), whatever the stop's own reason: the supervisor must
// not restart the node blindly.
TEST(FailStopTest, ExitsWithTheSyncFailedStatusOnceAWalSyncFailed) {
  // A fresh process for the child: the flag is process-wide and sticky.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        if (StopExitCode() != kFailStopExitCode) std::_Exit(10);
        char tmpl[] = "/tmp/dtx-node-XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) std::_Exit(15);
        const std::string dir = tmpl;
        auto log = wal::Log::Open(wal::Options{}, dir + "/wal", nullptr);
        if (!log.ok()) std::_Exit(11);
        if (!fp::Arm("wal.before_sync", "error").ok()) std::_Exit(12);
        auto lsn = (*log)->Append(1, "x");
        if (!lsn.ok() || (*log)->WaitDurable(*lsn).ok()) std::_Exit(13);
        if (StopExitCode() != kSyncFailedExitCode) std::_Exit(14);
        std::error_code ec;
        fs::remove_all(dir, ec);
        FailStop("test: after the failed sync");
      },
      ::testing::ExitedWithCode(kSyncFailedExitCode), "");
}

TEST(FailStopTest, FailpointErrorFailStopsOrIsReturnedAsTheNodeRequires) {
  fp::DisarmAll();
  EXPECT_TRUE(EvalFailpoint(fp::Point::kCoordinatorEndBeforeLog, OnFailpointError::kFailStop).ok());
  ASSERT_TRUE(fp::Arm("coordinator.end.before_log", "error").ok());
  Status s = EvalFailpoint(fp::Point::kCoordinatorEndBeforeLog, OnFailpointError::kReturn);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_EXIT((void)EvalFailpoint(fp::Point::kCoordinatorEndBeforeLog, OnFailpointError::kFailStop,
                                  "txid=1"),
              ::testing::ExitedWithCode(kFailStopExitCode), "");
  ASSERT_TRUE(fp::Arm("coordinator.end.before_log", "crash").ok());
  EXPECT_EXIT((void)EvalFailpoint(fp::Point::kCoordinatorEndBeforeLog, OnFailpointError::kReturn),
              ::testing::ExitedWithCode(fp::kCrashExitCode), "");
  fp::DisarmAll();
}

TEST(LifetimeTokenTest, GuardedCallbacksDoNothingOnceTheLifetimeEnded) {
  LifetimeToken token;
  int runs = 0;
  auto before = token.Guard([&](int n) { runs += n; });
  before(1);
  EXPECT_EQ(runs, 1);
  token.Renew();
  before(10);  // started in the old lifetime
  EXPECT_EQ(runs, 1);
  token.Guard([&](int n) { runs += n; })(100);
  EXPECT_EQ(runs, 101);
  std::weak_ptr<int> watch = token;
  token.Expire();
  EXPECT_TRUE(watch.expired());
  EXPECT_TRUE(token.expired());
}

TEST(DrainGuardTest, AnInnerCallReturnsAndTheOuterDrains) {
  DrainGuard guard;
  int drained = 0;
  std::function<void()> process = [&] {
    DrainGuard::Scope scope = guard.Enter();
    if (!scope.entered()) return;
    while (drained < 3) {
      ++drained;
      process();  // an output's handler re-entering
    }
  };
  process();
  EXPECT_EQ(drained, 3);
  EXPECT_FALSE(guard.draining());
  EXPECT_TRUE(guard.Enter().entered());
}

TEST(NodeTest, TraceRingHasOneMinimumAndZeroTurnsTracingOff) {
  LoopThread loop;
  loop.Start();
  loop.RunSync([&] {
    Node one(loop.loop(), NodeOptions{.name = "n",
                                      .dir = "/tmp",
                                      .metrics_enabled = false,
                                      .trace_events = 1,
                                      .identify = {}});
    EXPECT_TRUE(one.tracing());
    EXPECT_EQ(one.trace().capacity(), obs::kTraceEventsMin);
    one.Trace(TxId{1, 2}, obs::span::kReceived);
    EXPECT_EQ(one.trace().Lookup(TxId{1, 2}).size(), 1u);

    Node off(loop.loop(), NodeOptions{.name = "n",
                                      .dir = "/tmp",
                                      .metrics_enabled = false,
                                      .trace_events = 0,
                                      .identify = {}});
    EXPECT_FALSE(off.tracing());
    off.Trace(TxId{1, 2}, obs::span::kReceived);
    EXPECT_EQ(off.trace().recorded(), 0u);
    EXPECT_TRUE(off.Shutdown());
    EXPECT_FALSE(off.Shutdown());
  });
  loop.Stop();
}

// A handler whose own calls only say whether they still reach their target.
struct Target {
  int calls = 0;
  rpc::NodeStatus GetStatus() const {
    rpc::NodeStatus st;
    st.name = "serving";
    return st;
  }
  std::vector<rpc::InDoubtTx> ListInDoubt() const { return {rpc::InDoubtTx()}; }
};
class TestHandler final : public Handler<rpc::CoordinatorPeerCobSvIf, Target> {
 public:
  using Handler<rpc::CoordinatorPeerCobSvIf, Target>::Handler;
  void QueryDecision(std::function<void(const rpc::Decision::type&)> cob, ExnCob, const rpc::TxId&,
                     const std::string&, const rpc::Attempt&) override {
    cob(rpc::Decision::UNKNOWN);
  }
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override {
    rpc::NodeStatus st;
    st.name = target() == nullptr ? "detached" : "serving";
    if (target() != nullptr) ++target()->calls;
    cob(st);
  }
  void Replicate(std::function<void(const rpc::ReplicateResponse&)> cob, ExnCob,
                 const rpc::ReplicateRequest&) override {
    cob({});
  }
  void Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob, ExnCob,
                 const rpc::HeartbeatRequest&) override {
    cob({});
  }
};
using TestAdmin = AdminHandler<Target>;

// The error code an exn_cob received (nullopt: none). throw_it() frees the
// exception.
struct Refusal {
  std::optional<rpc::ErrorCode::type> code;
  std::string message;
  std::function<void(apache::thrift::TDelayedException*)> Cob() {
    return [this](apache::thrift::TDelayedException* e) {
      try {
        e->throw_it();
      } catch (const rpc::DtxError& err) {
        code = err.code;
        message = err.message;
      } catch (...) {
        code = rpc::ErrorCode::INTERNAL;
      }
    };
  }
};

TEST(NodeTest, ShutdownDetachesTheHandlerAndAdminCallsAreAnsweredOnce) {
  fp::DisarmAll();
  LoopThread loop;
  loop.Start();
  loop.RunSync([&] {
    Node node(loop.loop(), NodeOptions{.name = "node-x",
                                       .dir = "/tmp",
                                       .metrics_enabled = false,
                                       .trace_events = 16,
                                       .enable_failpoints = true,
                                       .identify = {}});
    Target target;
    const AccessPolicy policy = AccessPolicy::Insecure();
    auto shared = std::make_shared<HandlerTarget<Target>>(&target, &node, &policy);
    auto handler = std::make_shared<TestHandler>(shared, PeerIdentity{});
    auto admin = std::make_shared<TestAdmin>(shared, PeerIdentity{}, rpc::NodeRole::PRIMARY);
    auto admin_bound = node.Serve("admin", TestAdmin::Factory(shared, rpc::NodeRole::PRIMARY),
                                  shared, "127.0.0.1", 0);
    ASSERT_TRUE(admin_bound.ok());
    auto bound =
        node.Serve("peer", HandlerFactory<rpc::CoordinatorPeerAsyncProcessor, TestHandler>(shared),
                   shared, "127.0.0.1", 0);
    ASSERT_TRUE(bound.ok());
    EXPECT_EQ(node.address(), *admin_bound) << "the first listener bound";
    EXPECT_NE(*bound, *admin_bound);
    // Each listener as bound, plaintext without NodeOptions::tls.
    ASSERT_EQ(node.listeners().size(), 2u);
    EXPECT_EQ(node.listeners()[0].name, "admin");
    EXPECT_EQ(node.listeners()[1].name, "peer");
    EXPECT_EQ(node.listeners()[1].address, *bound);
    EXPECT_FALSE(node.listeners()[1].tls);
    EXPECT_FALSE(node.listeners()[1].client_cert_required);
    node.Trace(TxId{7, 7}, obs::span::kReceived, "x");

    std::string role;
    handler->GetStatus([&](const rpc::NodeStatus& st) { role = st.name; });
    EXPECT_EQ(role, "serving");
    rpc::TraceResponse trace;
    rpc::TxId txid;
    txid.hi = 7;
    txid.lo = 7;
    Refusal none;
    admin->GetTrace([&](const rpc::TraceResponse& r) { trace = r; }, none.Cob(), txid);
    EXPECT_EQ(trace.name, "node-x");
    ASSERT_EQ(trace.events.size(), 1u);
    EXPECT_EQ(trace.events[0].event, "received");

    bool armed = false;
    Refusal bad;
    admin->SetFailpoint([&] { armed = true; }, bad.Cob(), "no.such.point", "error");
    EXPECT_EQ(bad.code, rpc::ErrorCode::BAD_ARGUMENT);
    EXPECT_FALSE(armed);
    admin->SetFailpoint([&] { armed = true; }, none.Cob(), "coordinator.end.before_log", "error");
    EXPECT_TRUE(armed);
    EXPECT_EQ(fp::Armed(), std::vector<std::string>{"coordinator.end.before_log=error"});
    fp::DisarmAll();
    EXPECT_FALSE(none.code.has_value());

    EXPECT_TRUE(node.Shutdown());
    handler->GetStatus([&](const rpc::NodeStatus& st) { role = st.name; });
    EXPECT_EQ(role, "detached");
    EXPECT_EQ(target.calls, 1);
    admin->GetTrace([&](const rpc::TraceResponse& r) { trace = r; }, none.Cob(), txid);
    EXPECT_TRUE(trace.events.empty());
    admin->GetStatus([&](const rpc::NodeStatus& st) { role = st.name; });
    EXPECT_EQ(role, "") << "detached";
  });
  loop.Stop();
}

// Trust boundary (node/access.h): with a secure policy the admin calls of
// node/handler.h answer PERMISSION_DENIED to anyone but an admin certificate,
// and do nothing.
TEST(NodeTest, AdminCallsAreRefusedToNonAdminsUnderASecurePolicy) {
  fp::DisarmAll();
  LoopThread loop;
  loop.Start();
  loop.RunSync([&] {
    Node node(loop.loop(), NodeOptions{.name = "node-y",
                                       .dir = "/tmp",
                                       .metrics_enabled = false,
                                       .trace_events = 16,
                                       .enable_failpoints = true,
                                       .identify = {}});
    Target target;
    const AccessPolicy policy(
        true, {ConfiguredPeer{"coordinator-1", "127.0.0.1:7001", PrincipalKind::kCoordinator}});
    auto shared = std::make_shared<HandlerTarget<Target>>(&target, &node, &policy);
    rpc::TxId txid;
    for (PeerIdentity who :
         {PeerIdentity{PrincipalKind::kNone, "", "127.0.0.1:1"},
          PeerIdentity{PrincipalKind::kClient, "bench", "127.0.0.1:2"},
          PeerIdentity{PrincipalKind::kCoordinator, "coordinator-1", "127.0.0.1:3"}}) {
      TestAdmin handler(shared, who, rpc::NodeRole::PRIMARY);
      bool armed = false;
      Refusal refused;
      handler.SetFailpoint([&] { armed = true; }, refused.Cob(), "coordinator.end.before_log",
                           "crash");
      EXPECT_FALSE(armed) << who.Describe();
      EXPECT_EQ(refused.code, rpc::ErrorCode::PERMISSION_DENIED) << who.Describe();
      EXPECT_NE(refused.message.find("SetFailpoint refused"), std::string::npos) << refused.message;
      EXPECT_TRUE(fp::Armed().empty());
      Refusal trace_refused;
      handler.GetTrace([](const rpc::TraceResponse&) { ADD_FAILURE() << "answered"; },
                       trace_refused.Cob(), txid);
      EXPECT_EQ(trace_refused.code, rpc::ErrorCode::PERMISSION_DENIED) << who.Describe();
      Refusal list_refused;
      handler.ListInDoubt([](const std::vector<rpc::InDoubtTx>&) { ADD_FAILURE() << "answered"; },
                          list_refused.Cob());
      EXPECT_EQ(list_refused.code, rpc::ErrorCode::PERMISSION_DENIED) << who.Describe();
      std::string status_name;
      handler.GetStatus([&](const rpc::NodeStatus& st) { status_name = st.name; });
      EXPECT_EQ(status_name, "serving") << "GetStatus is open to whoever reaches the listener";
    }
    TestAdmin admin(shared, PeerIdentity{PrincipalKind::kAdmin, "admin", "127.0.0.1:4"},
                    rpc::NodeRole::PRIMARY);
    size_t listed = 0;
    Refusal none_listed;
    admin.ListInDoubt([&](const std::vector<rpc::InDoubtTx>& v) { listed = v.size(); },
                      none_listed.Cob());
    EXPECT_EQ(listed, 1u);
    bool armed = false;
    Refusal none;
    admin.SetFailpoint([&] { armed = true; }, none.Cob(), "coordinator.end.before_log", "error");
    EXPECT_TRUE(armed);
    EXPECT_FALSE(none.code.has_value());
    fp::DisarmAll();
    EXPECT_TRUE(node.Shutdown());
  });
  loop.Stop();
}

// A node started without --enable-failpoints (the default): SetFailpoint is
// PERMISSION_DENIED and the point stays disarmed, before and after Detach.
TEST(NodeTest, SetFailpointIsRefusedUnlessFailpointsAreEnabled) {
  fp::DisarmAll();
  LoopThread loop;
  loop.Start();
  loop.RunSync([&] {
    Node node(
        loop.loop(),
        NodeOptions{.name = "node-y", .dir = "/tmp", .metrics_enabled = false, .identify = {}});
    EXPECT_FALSE(node.failpoints_enabled());
    Target target;
    const AccessPolicy policy = AccessPolicy::Insecure();
    auto shared = std::make_shared<HandlerTarget<Target>>(&target, &node, &policy);
    auto handler = std::make_shared<TestAdmin>(shared, PeerIdentity{}, rpc::NodeRole::PRIMARY);
    for (int round = 0; round < 2; ++round) {
      bool armed = false;
      std::optional<rpc::DtxError> refusal;
      handler->SetFailpoint([&] { armed = true; },
                            [&](apache::thrift::TDelayedException* e) {
                              try {
                                e->throw_it();  // deletes e
                              } catch (const rpc::DtxError& err) {
                                refusal = err;
                              }
                            },
                            "coordinator.end.before_log", "crash");
      EXPECT_FALSE(armed);
      ASSERT_TRUE(refusal.has_value());
      EXPECT_EQ(refusal->code, rpc::ErrorCode::PERMISSION_DENIED);
      EXPECT_NE(refusal->message.find("--enable-failpoints"), std::string::npos)
          << refusal->message;
      EXPECT_TRUE(fp::Armed().empty());
      shared->Detach();  // the second round: after shutdown
    }
  });
  loop.Stop();
}

// The node's listener metrics as a scrape would show them: Node::UpdateMetrics
// on the loop (what a runtime's tick does), then the registry in the text
// format, series -> value.
std::map<std::string, double> ScrapeListeners(LoopThread& loop, Node& node) {
  std::string text;
  loop.RunSync([&] {
    node.UpdateMetrics();
    text = prometheus::TextSerializer().Serialize(node.registry().Collect());
  });
  return test_metrics::ParseMetrics(text);
}

// node/listener_metrics.h: each listener's RpcServerStats counters and open
// connections are in the registry under listener="NAME", each counted once
// however often the tick copies them.
TEST(NodeTest, ListenerMetricsCountEachListenersConnectionsUnderItsLabel) {
  LoopThread loop;
  loop.Start();
  std::unique_ptr<Node> node;
  Target target;
  const AccessPolicy policy = AccessPolicy::Insecure();
  int client_port = 0;
  int admin_port = 0;
  loop.RunSync([&] {
    node = std::make_unique<Node>(
        loop.loop(),
        NodeOptions{.name = "node-m", .dir = "/tmp", .metrics_enabled = false, .identify = {}});
    auto shared = std::make_shared<HandlerTarget<Target>>(&target, node.get(), &policy);
    auto client = node->Serve(
        "client", HandlerFactory<rpc::CoordinatorPeerAsyncProcessor, TestHandler>(shared), shared,
        "127.0.0.1", 0);
    ASSERT_TRUE(client.ok());
    client_port = ParseHostPort(*client)->port;
    auto admin = node->Serve("admin", TestAdmin::Factory(shared, rpc::NodeRole::PRIMARY), shared,
                             "127.0.0.1", 0);
    ASSERT_TRUE(admin.ok());
    admin_port = ParseHostPort(*admin)->port;
  });
  ASSERT_GT(client_port, 0);
  ASSERT_GT(admin_port, 0);
  const auto series = test_metrics::ListenerSeries;

  // Every family has a series per listener from the start, at 0.
  std::map<std::string, double> m = ScrapeListeners(loop, *node);
  for (const char* listener : {"client", "admin"}) {
    for (const RpcServerCounter& c : kRpcServerCounters) {
      EXPECT_EQ(m.count(series(c.name, listener)), 1u) << series(c.name, listener);
      EXPECT_EQ(m[series(c.name, listener)], 0) << series(c.name, listener);
    }
    for (const RpcServerGauge& g : kRpcServerGauges) {
      EXPECT_EQ(m.count(series(g.name, listener)), 1u) << series(g.name, listener);
      EXPECT_EQ(m[series(g.name, listener)], 0) << series(g.name, listener);
    }
  }

  // The client listener: one call answered on a stock Thrift connection,
  // closed; then garbage (it reads as an absurd frame length) on another.
  {
    auto socket = std::make_shared<apache::thrift::transport::TSocket>("127.0.0.1", client_port);
    socket->setRecvTimeout(5000);
    auto transport = std::make_shared<apache::thrift::transport::TFramedTransport>(socket);
    rpc::CoordinatorPeerClient stock(
        std::make_shared<apache::thrift::protocol::TBinaryProtocol>(transport));
    transport->open();
    rpc::NodeStatus st;
    stock.GetStatus(st);
    EXPECT_EQ(st.name, "serving");
    transport->close();
  }
  EXPECT_TRUE(test_metrics::SendGarbage(client_port));
  // The admin listener: one connection held open, silent.
  const int held = test_metrics::ConnectLoopback(admin_port);
  EXPECT_GE(held, 0);

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  do {
    m = ScrapeListeners(loop, *node);
    if (m[series("dtx_rpc_connections_accepted_total", "client")] == 2 &&
        m[series("dtx_rpc_connections_open", "client")] == 0 &&
        m[series("dtx_rpc_connections_open", "admin")] == 1) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } while (std::chrono::steady_clock::now() < deadline);
  // Scraped again: Update() adds only what the servers counted since.
  m = ScrapeListeners(loop, *node);
  EXPECT_EQ(m[series("dtx_rpc_connections_accepted_total", "client")], 2);
  EXPECT_EQ(m[series("dtx_rpc_connections_closed_bad_input_total", "client")], 1);
  EXPECT_EQ(m[series("dtx_rpc_frames_received_total", "client")], 1);
  EXPECT_EQ(m[series("dtx_rpc_replies_sent_total", "client")], 1);
  EXPECT_EQ(m[series("dtx_rpc_reply_writes_total", "client")], 1);
  EXPECT_EQ(m[series("dtx_rpc_tls_handshakes_total", "client")], 0) << "plaintext";
  EXPECT_EQ(m[series("dtx_rpc_connections_open", "client")], 0);
  EXPECT_EQ(m[series("dtx_rpc_reply_bytes_queued", "client")], 0) << "the reply left";
  EXPECT_EQ(m[series("dtx_rpc_connections_accepted_total", "admin")], 1);
  EXPECT_EQ(m[series("dtx_rpc_connections_closed_bad_input_total", "admin")], 0);
  EXPECT_EQ(m[series("dtx_rpc_frames_received_total", "admin")], 0);
  EXPECT_EQ(m[series("dtx_rpc_connections_open", "admin")], 1);
  EXPECT_EQ(m.count(series("dtx_rpc_connections_open", "peer")), 0u) << "not served here";

  // A tick after Shutdown (the servers closed) is harmless.
  loop.RunSync([&] { EXPECT_TRUE(node->Shutdown()); });
  ScrapeListeners(loop, *node);
  if (held >= 0) ::close(held);
  loop.RunSync([&] { node.reset(); });
  loop.Stop();
}

}  // namespace
}  // namespace dtx::node
