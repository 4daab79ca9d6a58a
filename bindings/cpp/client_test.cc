// The C++ binding's own logic against a fake coordinator and fake
// participants built on RpcServer (no real cluster): shard routing, read
// caching, the commit request, argument checks, finished-transaction errors,
// abort reasons, unknown outcomes, NOT_PRIMARY redirects, Run()'s retries and
// the async API with many transactions in flight.
#include "dtx/client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <chrono>
#include <thread>

#include "Coordinator.h"
#include "Participant.h"
#include "common/event_loop.h"
#include "common/rpc_error.h"
#include "common/rpc_server.h"

namespace dtx {
namespace {

using apache::thrift::TDelayedException;

class FakeParticipant : public rpc::ParticipantCobSvIf {
 public:
  void Read(std::function<void(const rpc::ReadResult&)> cob,
            std::function<void(TDelayedException*)>, const std::string& key) override {
    std::lock_guard<std::mutex> lock(mu);
    keys_read.push_back(key);
    rpc::ReadResult r;
    auto it = data.find(key);
    r.found = it != data.end();
    r.value = r.found ? it->second.first : "";
    r.version = r.found ? it->second.second : 0;
    cob(r);
  }
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override { cob({}); }

  void Set(const std::string& k, const std::string& v, int64_t version) {
    std::lock_guard<std::mutex> lock(mu);
    data[k] = {v, version};
  }
  std::vector<std::string> KeysRead() {
    std::lock_guard<std::mutex> lock(mu);
    return keys_read;
  }

  std::mutex mu;
  std::map<std::string, std::pair<std::string, int64_t>> data;
  std::vector<std::string> keys_read;
};

// Scripted commit answers; with no script left, COMMITTED.
struct CommitAnswer {
  std::optional<rpc::CommitResult> result;
  std::optional<rpc::DtxError> error;
  bool hold = false;  // never answer
};

class FakeCoordinator : public rpc::CoordinatorCobSvIf {
 public:
  void GetShardMap(std::function<void(const rpc::ShardMap&)> cob,
                   std::function<void(TDelayedException*)> exn) override {
    std::lock_guard<std::mutex> lock(mu);
    ++shard_map_calls;
    if (redirect_to) {
      exn(TDelayedException::delayException(
          MakeDtxError(rpc::ErrorCode::NOT_PRIMARY, "backup", *redirect_to)));
      return;
    }
    cob(map);
  }
  void Commit(std::function<void(const rpc::CommitResult&)> cob,
              std::function<void(TDelayedException*)> exn, const rpc::CommitRequest& req) override {
    std::lock_guard<std::mutex> lock(mu);
    requests.push_back(req);
    if (redirect_to) {
      exn(TDelayedException::delayException(
          MakeDtxError(rpc::ErrorCode::NOT_PRIMARY, "backup", *redirect_to)));
      return;
    }
    CommitAnswer a;
    if (!script.empty()) {
      a = script.front();
      script.pop_front();
    }
    if (a.hold) {
      held.push_back(cob);
      return;
    }
    if (a.error) {
      exn(TDelayedException::delayException(*a.error));
      return;
    }
    if (a.result) {
      cob(*a.result);
      return;
    }
    rpc::CommitResult ok;
    ok.outcome = rpc::Outcome::COMMITTED;
    cob(ok);
  }
  void GetOutcome(std::function<void(const rpc::Outcome::type&)> cob,
                  std::function<void(TDelayedException*)>, const rpc::TxId&) override {
    cob(rpc::Outcome::UNKNOWN);
  }
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override {
    std::lock_guard<std::mutex> lock(mu);
    ++status_calls;
    if (hang_status) {
      held_status.push_back(cob);  // a hung process: never answers
      return;
    }
    cob(status);
  }

  size_t Requests() {
    std::lock_guard<std::mutex> lock(mu);
    return requests.size();
  }
  rpc::CommitRequest Last() {
    std::lock_guard<std::mutex> lock(mu);
    return requests.back();
  }
  void Script(std::initializer_list<CommitAnswer> answers) {
    std::lock_guard<std::mutex> lock(mu);
    script.insert(script.end(), answers);
  }

  std::mutex mu;
  rpc::ShardMap map;
  std::optional<std::string> redirect_to;
  std::vector<rpc::CommitRequest> requests;
  std::deque<CommitAnswer> script;
  std::vector<std::function<void(const rpc::CommitResult&)>> held;
  int shard_map_calls = 0;
  rpc::NodeStatus status;  // GetStatus answer (role 0 by default: not primary)
  bool hang_status = false;
  int status_calls = 0;
  std::vector<std::function<void(const rpc::NodeStatus&)>> held_status;
};

rpc::NodeStatus CoordinatorStatusAs(rpc::NodeRole::type role, rpc::Epoch epoch) {
  rpc::NodeStatus st;
  st.name = "fake";
  st.role = role;
  st.epoch = epoch;
  return st;
}

CommitAnswer Aborted(rpc::AbortReason::type reason, const std::string& detail) {
  rpc::CommitResult r;
  r.outcome = rpc::Outcome::ABORTED;
  r.__set_reason(reason);
  r.__set_detail(detail);
  return CommitAnswer{r, std::nullopt, false};
}

class ClientTest : public ::testing::Test {
 protected:
  static constexpr int kParticipants = 3;

  void SetUp() override {
    nodes_.Start();
    nodes_.RunSync([&] {
      std::vector<std::string> addresses;
      for (int i = 0; i < kParticipants; ++i) {
        participants_.push_back(std::make_shared<FakeParticipant>());
        servers_.push_back(std::make_unique<RpcServer>(
            nodes_.loop(), std::make_shared<rpc::ParticipantAsyncProcessor>(participants_[i]),
            ServerOptions()));
        ASSERT_TRUE(servers_.back()->Start().ok());
        addresses.push_back(servers_.back()->address());
      }
      coordinator_ = std::make_shared<FakeCoordinator>();
      coordinator_->map.version = 3;
      coordinator_->map.scheme = "hash";
      coordinator_->map.participants = addresses;
      coordinator_server_ = StartCoordinator(coordinator_);
    });
  }
  void TearDown() override {
    client_.reset();
    nodes_.RunSync([&] {
      servers_.clear();
      coordinator_server_.reset();
      backup_server_.reset();
      // A held completion refers to the processor, which refers to the
      // handler: break the cycle.
      for (auto* c : {coordinator_.get(), backup_.get()}) {
        if (c == nullptr) continue;
        std::lock_guard<std::mutex> lock(c->mu);
        c->held.clear();
        c->held_status.clear();
      }
    });
    nodes_.Stop();
  }

  std::unique_ptr<RpcServer> StartCoordinator(std::shared_ptr<FakeCoordinator> c) {
    auto s = std::make_unique<RpcServer>(
        nodes_.loop(), std::make_shared<rpc::CoordinatorAsyncProcessor>(c), ServerOptions());
    EXPECT_TRUE(s->Start().ok());
    return s;
  }

  // The fake nodes' server options (a derived fixture changes them).
  virtual RpcServerOptions ServerOptions() const { return {}; }

  void ConnectClient(ClientOptions o = {}) {
    if (o.coordinators.empty()) o.coordinators = {coordinator_server_->address()};
    auto c = Client::Connect(o);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    client_ = std::move(c).value();
  }

  Transaction Begin() {
    auto tx = client_->Begin();
    EXPECT_TRUE(tx.ok()) << tx.status().ToString();
    return std::move(tx).value();
  }

  size_t TotalReads() {
    size_t n = 0;
    for (auto& p : participants_) n += p->KeysRead().size();
    return n;
  }

  LoopThread nodes_;
  std::vector<std::shared_ptr<FakeParticipant>> participants_;
  std::vector<std::unique_ptr<RpcServer>> servers_;
  std::shared_ptr<FakeCoordinator> coordinator_;
  std::unique_ptr<RpcServer> coordinator_server_;
  std::unique_ptr<RpcServer> backup_server_;
  std::shared_ptr<FakeCoordinator> backup_;  // set by tests that use a second coordinator
  std::unique_ptr<Client> client_;
};

// Nodes that close idle connections quickly (common/rpc_server.h).
class IdleNodesClientTest : public ClientTest {
 protected:
  RpcServerOptions ServerOptions() const override {
    RpcServerOptions o;
    o.idle_timeout_ms = 300;
    return o;
  }
  // Idle closes on the participant serving `key`, and on the coordinator.
  uint64_t ParticipantIdleCloses(const std::string& key) {
    uint64_t n = 0;
    nodes_.RunSync([&] { n = servers_[client_->ShardOf(key)]->stats().connections_closed_idle; });
    return n;
  }
  uint64_t CoordinatorIdleCloses() {
    uint64_t n = 0;
    nodes_.RunSync([&] { n = coordinator_server_->stats().connections_closed_idle; });
    return n;
  }
};

// The client's connections to the coordinator and to a participant are
// closed by the nodes for being idle: the next transaction reads and commits
// over new connections, with no error and no commit retry - also when the
// read follows the close at once (a channel that backed off after the close
// would fail it fast).
TEST_F(IdleNodesClientTest, ClientWhoseConnectionsTheNodesClosedIdleWorksOnItsNextCalls) {
  ConnectClient();
  participants_[client_->ShardOf("k")]->Set("k", "v", 4);
  {
    Transaction tx = Begin();
    ASSERT_TRUE(tx.Get("k").ok());
    ASSERT_TRUE(tx.Put("k", "w").ok());
    ASSERT_TRUE(tx.Commit().ok());
  }
  // Each node closes within ~1.3 s; the read goes out as soon as the
  // participant has closed.
  for (int i = 0; i < 10000 && ParticipantIdleCloses("k") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  ASSERT_EQ(ParticipantIdleCloses("k"), 1u) << "the participant did not close the idle connection";
  Transaction tx = Begin();
  GetResult got = tx.Get("k");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(**got, "v");
  ASSERT_TRUE(tx.Put("k", "x").ok());
  for (int i = 0; i < 1000 && CoordinatorIdleCloses() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(CoordinatorIdleCloses(), 1u) << "the coordinator did not close the idle connection";
  Status committed = tx.Commit();
  EXPECT_TRUE(committed.ok()) << committed.ToString();
  EXPECT_EQ(coordinator_->Requests(), 2u) << "one Commit each, none repeated";
  EXPECT_FALSE(coordinator_->Last().__isset.is_retry && coordinator_->Last().is_retry);
}

TEST_F(ClientTest, ConnectFetchesAndCachesTheShardMap) {
  ConnectClient();
  EXPECT_EQ(client_->participants(), coordinator_->map.participants);
  EXPECT_EQ(client_->shard_map_version(), 3);
  for (std::string key : {"a", "bb", "user:17", "zzz"}) {
    EXPECT_EQ(client_->ShardOf(key), ShardHash(key) % kParticipants);
  }
}

TEST_F(ClientTest, GetsGoToTheOwningParticipant) {
  ConnectClient();
  std::vector<std::string> keys;
  for (int i = 0; i < 60; ++i) keys.push_back("key-" + std::to_string(i));
  for (const auto& k : keys) participants_[ShardHash(k) % kParticipants]->Set(k, "v-" + k, 7);
  Transaction tx = Begin();
  for (const auto& k : keys) {
    GetResult r = tx.Get(k);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(r->has_value()) << k;
    EXPECT_EQ(**r, "v-" + k);
  }
  std::set<size_t> used;
  for (int p = 0; p < kParticipants; ++p) {
    for (const auto& k : participants_[p]->KeysRead()) {
      EXPECT_EQ(ShardHash(k) % kParticipants, static_cast<size_t>(p)) << k;
      used.insert(static_cast<size_t>(p));
    }
  }
  EXPECT_EQ(used.size(), static_cast<size_t>(kParticipants));  // spread over all
  EXPECT_EQ(TotalReads(), keys.size());
}

TEST_F(ClientTest, RepeatedGetReturnsFirstReadOrBufferedWrite) {
  ConnectClient();
  participants_[client_->ShardOf("k")]->Set("k", "old", 4);
  Transaction tx = Begin();
  GetResult a = tx.Get("k");
  ASSERT_TRUE(a.ok() && a->has_value());
  EXPECT_EQ(**a, "old");
  participants_[client_->ShardOf("k")]->Set("k", "new", 5);
  GetResult b = tx.Get("k");
  ASSERT_TRUE(b.ok() && b->has_value());
  EXPECT_EQ(**b, "old");  // the first read, not a newer value
  EXPECT_EQ(TotalReads(), 1u);

  ASSERT_TRUE(tx.Put("k", "mine").ok());
  EXPECT_EQ(**tx.Get("k"), "mine");
  ASSERT_TRUE(tx.Delete("k").ok());
  GetResult d = tx.Get("k");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->has_value());
  EXPECT_EQ(TotalReads(), 1u);  // buffered answers send nothing

  GetResult absent = tx.Get("never-written");
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->has_value());
}

TEST_F(ClientTest, CommitSendsReadVersionsWriteSetAndClientTxId) {
  ConnectClient();
  participants_[client_->ShardOf("r1")]->Set("r1", "x", 11);
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Get("r1").ok());
  ASSERT_TRUE(tx.Get("absent").ok());
  ASSERT_TRUE(tx.Put("w1", "value-1").ok());
  ASSERT_TRUE(tx.Delete("w2").ok());
  TxId id = tx.txid();
  ASSERT_TRUE(tx.Commit().ok());
  ASSERT_EQ(coordinator_->Requests(), 1u);
  rpc::CommitRequest req = coordinator_->Last();
  EXPECT_EQ(static_cast<uint64_t>(req.txid.hi), id.hi);
  EXPECT_EQ(static_cast<uint64_t>(req.txid.lo), id.lo);
  EXPECT_EQ(req.shard_map_version, 3);
  std::map<std::string, int64_t> reads;
  for (const auto& r : req.reads) reads[r.key] = r.version;
  EXPECT_EQ(reads, (std::map<std::string, int64_t>{{"absent", 0}, {"r1", 11}}));
  ASSERT_EQ(req.writes.size(), 2u);
  std::map<std::string, rpc::WriteItem> writes;
  for (const auto& w : req.writes) writes[w.key] = w;
  EXPECT_TRUE(writes["w1"].__isset.value);
  EXPECT_EQ(writes["w1"].value, "value-1");
  EXPECT_FALSE(writes["w2"].__isset.value);  // delete

  // Same client: same hi, next lo.
  Transaction tx2 = Begin();
  EXPECT_EQ(tx2.txid().hi, id.hi);
  EXPECT_EQ(tx2.txid().lo, id.lo + 1);
}

TEST_F(ClientTest, BadArgumentsFailBeforeAnythingIsSent) {
  ConnectClient();
  Transaction tx = Begin();
  EXPECT_TRUE(tx.Get("").status().IsInvalidArgument());
  EXPECT_TRUE(tx.Get(std::string(kKeyBytesMax + 1, 'k')).status().IsInvalidArgument());
  EXPECT_TRUE(tx.Put("", "v").IsInvalidArgument());
  EXPECT_TRUE(tx.Put(std::string(kKeyBytesMax + 1, 'k'), "v").IsInvalidArgument());
  EXPECT_TRUE(tx.Put("k", std::string(kValueBytesMax + 1, 'v')).IsInvalidArgument());
  EXPECT_TRUE(tx.Put(std::string(kKeyBytesMax, 'k'), std::string(kValueBytesMax, 'v')).ok());
  EXPECT_TRUE(tx.Delete("").IsInvalidArgument());
  EXPECT_EQ(TotalReads(), 0u);
  EXPECT_EQ(coordinator_->Requests(), 0u);

  Transaction many = Begin();
  for (size_t i = 0; i < kTxKeysMax; ++i) {
    ASSERT_TRUE(many.Put("k" + std::to_string(i), "v").ok()) << i;
  }
  Status too_many = many.Put("one-more", "v");
  EXPECT_TRUE(too_many.IsInvalidArgument()) << too_many.ToString();
  EXPECT_NE(too_many.message().find("too many keys"), std::string::npos);
  EXPECT_TRUE(many.Get("another").status().IsInvalidArgument());
  EXPECT_TRUE(many.Put("k0", "overwrite is fine").ok());

  Transaction big = Begin();
  Status last;
  for (int i = 0; i < 10 && last.ok(); ++i) {
    last = big.Put("big" + std::to_string(i), std::string(kValueBytesMax, 'x'));
  }
  EXPECT_TRUE(last.IsInvalidArgument()) << last.ToString();  // > kTxBytesMax
  EXPECT_EQ(TotalReads(), 0u);
  EXPECT_EQ(coordinator_->Requests(), 0u);
}

TEST_F(ClientTest, FinishedTransactionRejectsEverythingAndSendsNothing) {
  ConnectClient();
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Put("a", "1").ok());
  ASSERT_TRUE(tx.Commit().ok());
  EXPECT_EQ(coordinator_->Requests(), 1u);
  for (Status s :
       {tx.Commit(), tx.Put("b", "2"), tx.Delete("a"), tx.Abort(), tx.Get("a").status()}) {
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
    EXPECT_EQ(s.message(), "transaction already finished");
  }
  EXPECT_EQ(coordinator_->Requests(), 1u);

  Transaction aborted = Begin();
  ASSERT_TRUE(aborted.Put("a", "1").ok());
  ASSERT_TRUE(aborted.Abort().ok());
  Status s = aborted.Commit();
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_EQ(s.message(), "transaction already finished");
  EXPECT_EQ(coordinator_->Requests(), 1u);
  EXPECT_EQ(TotalReads(), 0u);
}

TEST_F(ClientTest, EmptyTransactionCommitsLocally) {
  ConnectClient();
  Transaction tx = Begin();
  EXPECT_TRUE(tx.Commit().ok());
  EXPECT_EQ(coordinator_->Requests(), 0u);
}

TEST_F(ClientTest, AbortedCommitCarriesTypedReason) {
  ConnectClient();
  coordinator_->Script({Aborted(rpc::AbortReason::CONFLICT, "key w1 locked"),
                        Aborted(rpc::AbortReason::PARTICIPANT_UNAVAILABLE, "participant-2"),
                        Aborted(rpc::AbortReason::TIMEOUT, "votes late")});
  struct Want {
    AbortReason reason;
    const char* text;
  };
  for (Want w : {Want{AbortReason::kConflict, "conflict"},
                 Want{AbortReason::kParticipantUnavailable, "participant_unavailable"},
                 Want{AbortReason::kTimeout, "timeout"}}) {
    Transaction tx = Begin();
    ASSERT_TRUE(tx.Put("w1", "v").ok());
    Status s = tx.Commit();
    EXPECT_TRUE(s.IsAborted()) << s.ToString();
    EXPECT_NE(s.message().find(w.text), std::string::npos) << s.ToString();
    ASSERT_TRUE(tx.abort_reason().has_value());
    EXPECT_EQ(*tx.abort_reason(), w.reason);
    EXPECT_FALSE(tx.outcome_unknown());
    // The accessor survives a second (rejected) Commit.
    EXPECT_TRUE(tx.Commit().IsInvalidArgument());
    EXPECT_EQ(*tx.abort_reason(), w.reason);
  }
}

TEST_F(ClientTest, UnknownOutcomeIsResolvedByAskingAgainWithTheSameTxid) {
  ConnectClient();
  rpc::CommitResult unknown;
  unknown.outcome = rpc::Outcome::UNKNOWN;
  coordinator_->Script({CommitAnswer{unknown, std::nullopt, false}});
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Put("k", "v").ok());
  EXPECT_TRUE(tx.Commit().ok());
  EXPECT_FALSE(tx.outcome_unknown());
  ASSERT_EQ(coordinator_->Requests(), 2u);
  EXPECT_EQ(coordinator_->requests[0].txid, coordinator_->requests[1].txid);
  // The repeat says it is one (KB2a): the coordinator must not answer
  // ABORTED unless it can prove the first attempt did not commit.
  EXPECT_FALSE(coordinator_->requests[0].__isset.is_retry && coordinator_->requests[0].is_retry);
  EXPECT_TRUE(coordinator_->requests[1].__isset.is_retry && coordinator_->requests[1].is_retry);
}

TEST_F(ClientTest, PhaseTimingsOfTheCommitResultAreExposed) {
  ConnectClient();
  rpc::CommitResult timed;
  timed.outcome = rpc::Outcome::COMMITTED;
  timed.__set_prepare_us(321);
  timed.__set_decision_us(654);
  coordinator_->Script({CommitAnswer{timed, std::nullopt, false}});
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Put("k", "v").ok());
  ASSERT_TRUE(tx.Commit().ok());
  EXPECT_EQ(tx.prepare_us(), std::optional<int64_t>(321));
  EXPECT_EQ(tx.decision_us(), std::optional<int64_t>(654));
  // Async API; a result without timings leaves them unset.
  auto atx = client_->BeginAsync();
  ASSERT_TRUE(atx.ok());
  ASSERT_TRUE((*atx)->Put("k", "w").ok());
  std::promise<CommitOutcome> p;
  (*atx)->Commit([&p](const CommitOutcome& o) { p.set_value(o); });
  CommitOutcome o = p.get_future().get();
  ASSERT_TRUE(o.status.ok()) << o.status.ToString();
  EXPECT_FALSE(o.prepare_us.has_value());
  EXPECT_FALSE(o.decision_us.has_value());
}

TEST_F(ClientTest, UnknownOutcomeIsDistinct) {
  ClientOptions o;
  o.failover_timeout_ms = 300;  // keeps asking (same txid) for this long
  ConnectClient(o);
  rpc::CommitResult unknown;
  unknown.outcome = rpc::Outcome::UNKNOWN;
  for (int i = 0; i < kCommitAttemptsMax; ++i) {
    coordinator_->Script({CommitAnswer{unknown, std::nullopt, false}});
  }
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Put("k", "v").ok());
  Status s = tx.Commit();
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_NE(s.message().find("outcome unknown"), std::string::npos);
  EXPECT_TRUE(tx.outcome_unknown());
  EXPECT_FALSE(tx.abort_reason().has_value());
}

TEST_F(ClientTest, ConnectionLostAfterCommitSentIsOutcomeUnknown) {
  ClientOptions o;
  o.commit_timeout_ms = 2000;
  o.failover_timeout_ms = 300;
  ConnectClient(o);
  coordinator_->Script({CommitAnswer{std::nullopt, std::nullopt, true}});
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Put("k", "v").ok());
  std::thread killer([&] {
    while (coordinator_->Requests() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    nodes_.RunSync([&] { coordinator_server_->Close(); });
  });
  Status s = tx.Commit();
  killer.join();
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  EXPECT_TRUE(tx.outcome_unknown()) << s.ToString();
  EXPECT_NE(s.message().find("outcome unknown"), std::string::npos);
}

TEST_F(ClientTest, CoordinatorDownBeforeCommitIsPlainUnavailable) {
  ConnectClient();
  nodes_.RunSync([&] { coordinator_server_->Close(); });
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Put("k", "v").ok());
  Status s = tx.Commit();
  EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
  // The first attempt may have raced the close; what matters is that a
  // commit that never reached a coordinator is not reported as unknown.
  if (coordinator_->Requests() == 0) {
    EXPECT_FALSE(tx.outcome_unknown()) << s.ToString();
  }
}

// A coordinator shedding load (UNAVAILABLE with retry_after_ms) did nothing:
// the commit is not retried (not even at the other coordinator) and comes
// back as a plain, retryable Unavailable; once most recent commits were
// refused so, Begin refuses new transactions itself (bindings/cpp/
// shed_throttle.h) - and takes them on again once the coordinator does.
TEST_F(ClientTest, AnOverloadedRefusalIsNotRetriedAndThrottlesNewTransactions) {
  ConnectClient();
  rpc::DtxError shed = SheddingError("coordinator-0: overloaded: 16 commits in flight", 100);
  for (int i = 0; i < 20; ++i) {
    coordinator_->Script({CommitAnswer{std::nullopt, shed, false}});
  }
  int refused_by_client = 0;
  int refused_by_coordinator = 0;
  for (int i = 0; i < 20; ++i) {
    auto begun = client_->Begin();
    if (!begun.ok()) {
      EXPECT_TRUE(begun.status().IsBusy()) << begun.status().ToString();
      EXPECT_NE(begun.status().message().find("overloaded"), std::string::npos);
      ++refused_by_client;
      continue;
    }
    Transaction tx = std::move(begun).value();
    ASSERT_TRUE(tx.Put("k" + std::to_string(i), "v").ok());
    const size_t before = coordinator_->Requests();
    Status s = tx.Commit();
    EXPECT_TRUE(s.IsUnavailable()) << s.ToString();
    EXPECT_NE(s.message().find("overloaded"), std::string::npos) << s.ToString();
    EXPECT_FALSE(tx.outcome_unknown());
    EXPECT_EQ(coordinator_->Requests(), before + 1) << "an overloaded refusal was retried";
    ++refused_by_coordinator;
  }
  EXPECT_GT(refused_by_client, 0);
  EXPECT_GT(refused_by_coordinator, 0);
  // The coordinator takes everything on again (the script is used up or
  // answers COMMITTED): the throttle lets transactions through again.
  {
    std::lock_guard<std::mutex> lock(coordinator_->mu);
    coordinator_->script.clear();
  }
  // The refusals fade as the throttle's counts decay (a time constant of
  // ShedThrottle::kDecayNs) and commits are taken on: a few seconds; the
  // deadline only bounds the test (TSan runs it too).
  int committed = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (committed < 50 && std::chrono::steady_clock::now() < deadline) {
    auto begun = client_->Begin();
    if (!begun.ok()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    Transaction tx = std::move(begun).value();
    ASSERT_TRUE(tx.Put("k", "v").ok());
    if (tx.Commit().ok()) ++committed;
  }
  EXPECT_EQ(committed, 50);
}

TEST_F(ClientTest, NotPrimaryRedirectsShardMapAndCommitToThePrimary) {
  std::shared_ptr<FakeCoordinator> backup = std::make_shared<FakeCoordinator>();
  nodes_.RunSync([&] {
    backup->redirect_to = coordinator_server_->address();
    backup_server_ = StartCoordinator(backup);
  });
  ClientOptions o;
  o.coordinators = {backup_server_->address()};
  ConnectClient(o);
  EXPECT_EQ(client_->participants(), coordinator_->map.participants);
  EXPECT_EQ(backup->shard_map_calls, 1);
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Put("k", "v").ok());
  Status s = tx.Commit();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(coordinator_->Requests(), 1u);
  EXPECT_EQ(backup->Requests(), 0u);  // the client now talks to the primary
}

// The primary hangs (its Commit and GetStatus never answer) and the other
// coordinator says it is primary at a newer epoch: the commit moves there
// well before commit_timeout_ms, with the same txid flagged is_retry, and the
// result is the new primary's answer; the old primary's late answer is
// ignored.
TEST_F(ClientTest, CommitHangingAtThePrimaryMovesToANewerPrimary) {
  backup_ = std::make_shared<FakeCoordinator>();
  nodes_.RunSync([&] {
    coordinator_->status = CoordinatorStatusAs(rpc::NodeRole::PRIMARY, 3);
    backup_->map = coordinator_->map;
    backup_->status = CoordinatorStatusAs(rpc::NodeRole::BACKUP, 3);
    backup_server_ = StartCoordinator(backup_);
  });
  ClientOptions o;
  o.coordinators = {coordinator_server_->address(), backup_server_->address()};
  o.commit_timeout_ms = 20000;
  o.primary_probe_delay_ms = 200;
  ConnectClient(o);
  // The client learns the primary's epoch after the shard map.
  for (int i = 0; i < 200; ++i) {
    std::lock_guard<std::mutex> lock(coordinator_->mu);
    if (coordinator_->status_calls > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  nodes_.RunSync([&] {
    std::lock_guard<std::mutex> lock(coordinator_->mu);
    coordinator_->hang_status = true;
  });
  coordinator_->Script({CommitAnswer{std::nullopt, std::nullopt, true}});
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Put("k", "v").ok());
  auto promote = std::thread([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    nodes_.RunSync([&] {
      std::lock_guard<std::mutex> lock(backup_->mu);
      backup_->status = CoordinatorStatusAs(rpc::NodeRole::PRIMARY, 4);
    });
  });
  auto t0 = std::chrono::steady_clock::now();
  Status s = tx.Commit();
  auto took = std::chrono::steady_clock::now() - t0;
  promote.join();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_LT(took, std::chrono::milliseconds(2500));
  EXPECT_GE(took, std::chrono::milliseconds(450));  // not before the promotion
  EXPECT_EQ(client_->primary_switches(), 1u);
  ASSERT_EQ(coordinator_->Requests(), 1u);
  ASSERT_EQ(backup_->Requests(), 1u);
  EXPECT_EQ(backup_->Last().txid, coordinator_->Last().txid);
  EXPECT_TRUE(backup_->Last().__isset.is_retry && backup_->Last().is_retry);
  EXPECT_FALSE(coordinator_->Last().__isset.is_retry && coordinator_->Last().is_retry);
  // The old primary's late ABORTED changes nothing; the next commit goes to
  // the new primary directly.
  nodes_.RunSync([&] {
    std::lock_guard<std::mutex> lock(coordinator_->mu);
    rpc::CommitResult r;
    r.outcome = rpc::Outcome::ABORTED;
    for (auto& cob : coordinator_->held) cob(r);
    coordinator_->held.clear();
  });
  Transaction tx2 = Begin();
  ASSERT_TRUE(tx2.Put("k2", "v").ok());
  EXPECT_TRUE(tx2.Commit().ok());
  EXPECT_EQ(coordinator_->Requests(), 1u);
  EXPECT_EQ(backup_->Requests(), 2u);
}

// A slow primary whose peer claims "primary" at an older epoch (a deposed
// primary that has not noticed) is not abandoned: the commit waits for the
// primary's answer.
TEST_F(ClientTest, SlowCommitStaysWhenNoNewerPrimaryAnswers) {
  backup_ = std::make_shared<FakeCoordinator>();
  nodes_.RunSync([&] {
    coordinator_->status = CoordinatorStatusAs(rpc::NodeRole::PRIMARY, 5);
    backup_->map = coordinator_->map;
    backup_->status = CoordinatorStatusAs(rpc::NodeRole::PRIMARY, 4);
    backup_server_ = StartCoordinator(backup_);
  });
  ClientOptions o;
  o.coordinators = {coordinator_server_->address(), backup_server_->address()};
  o.primary_probe_delay_ms = 100;
  ConnectClient(o);
  coordinator_->Script({CommitAnswer{std::nullopt, std::nullopt, true}});
  auto tx = client_->BeginAsync();
  ASSERT_TRUE(tx.ok());
  ASSERT_TRUE((*tx)->Put("k", "v").ok());
  std::promise<CommitOutcome> p;
  auto f = p.get_future();
  (*tx)->Commit([&p](const CommitOutcome& out) { p.set_value(out); });
  ASSERT_EQ(f.wait_for(std::chrono::milliseconds(800)), std::future_status::timeout);
  {
    std::lock_guard<std::mutex> lock(backup_->mu);
    EXPECT_GE(backup_->status_calls, 2);  // it was probed, repeatedly
  }
  EXPECT_EQ(backup_->Requests(), 0u);
  EXPECT_EQ(client_->primary_switches(), 0u);
  nodes_.RunSync([&] {
    std::lock_guard<std::mutex> lock(coordinator_->mu);
    rpc::CommitResult r;
    r.outcome = rpc::Outcome::COMMITTED;
    for (auto& cob : coordinator_->held) cob(r);
    coordinator_->held.clear();
  });
  CommitOutcome out = f.get();
  EXPECT_TRUE(out.status.ok()) << out.status.ToString();
}

// A primary cut off from the participants answers ABORTED
// (PARTICIPANT_UNAVAILABLE) at once instead of hanging: that answer stands,
// and a probe moves the next commits to the newer primary.
TEST_F(ClientTest, ParticipantUnavailableAbortProbesForANewerPrimary) {
  backup_ = std::make_shared<FakeCoordinator>();
  nodes_.RunSync([&] {
    coordinator_->status = CoordinatorStatusAs(rpc::NodeRole::PRIMARY, 3);
    backup_->map = coordinator_->map;
    backup_->status = CoordinatorStatusAs(rpc::NodeRole::PRIMARY, 4);
    backup_server_ = StartCoordinator(backup_);
  });
  ClientOptions o;
  o.coordinators = {coordinator_server_->address(), backup_server_->address()};
  ConnectClient(o);
  coordinator_->Script({Aborted(rpc::AbortReason::PARTICIPANT_UNAVAILABLE, "suspected")});
  Transaction tx = Begin();
  ASSERT_TRUE(tx.Put("k", "v").ok());
  Status s = tx.Commit();
  EXPECT_TRUE(s.IsAborted()) << s.ToString();
  EXPECT_EQ(tx.abort_reason(), AbortReason::kParticipantUnavailable);
  for (int i = 0; i < 400 && client_->primary_switches() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(client_->primary_switches(), 1u);
  Transaction tx2 = Begin();
  ASSERT_TRUE(tx2.Put("k", "v2").ok());
  EXPECT_TRUE(tx2.Commit().ok());
  EXPECT_EQ(coordinator_->Requests(), 1u);
  EXPECT_EQ(backup_->Requests(), 1u);
  EXPECT_FALSE(backup_->Last().__isset.is_retry && backup_->Last().is_retry);  // a new txid
}

TEST_F(ClientTest, NegativeProbeDelayIsRejected) {
  ClientOptions o;
  o.coordinators = {coordinator_server_->address()};
  o.primary_probe_delay_ms = -1;
  EXPECT_TRUE(Client::Connect(o).status().IsInvalidArgument());
}

TEST_F(ClientTest, ConnectFailsWhenNoCoordinatorAnswers) {
  std::string dead = coordinator_server_->address();
  nodes_.RunSync([&] { coordinator_server_->Close(); });
  ClientOptions o;
  o.coordinators = {dead};
  o.request_timeout_ms = 500;
  auto c = Client::Connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().IsUnavailable()) << c.status().ToString();

  EXPECT_TRUE(Client::Connect(ClientOptions{}).status().IsInvalidArgument());
  ClientOptions bad;
  bad.coordinators = {"nonsense"};
  EXPECT_TRUE(Client::Connect(bad).status().IsInvalidArgument());
}

TEST_F(ClientTest, RunRetriesConflictsWithBackoffThenSucceeds) {
  ConnectClient();
  coordinator_->Script({Aborted(rpc::AbortReason::CONFLICT, "c1"),
                        Aborted(rpc::AbortReason::PARTICIPANT_UNAVAILABLE, "p2")});
  int calls = 0;
  Status s = client_->Run(
      [&](Transaction& tx) {
        ++calls;
        return tx.Put("counter", std::to_string(calls));
      },
      5);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(coordinator_->Requests(), 3u);
  EXPECT_EQ(client_->open_transactions(), 0u);
}

TEST_F(ClientTest, RunGivesUpAfterRetriesAndDoesNotRetryOtherErrors) {
  ConnectClient();
  coordinator_->Script(
      {Aborted(rpc::AbortReason::CONFLICT, "1"), Aborted(rpc::AbortReason::CONFLICT, "2")});
  int calls = 0;
  Status s = client_->Run(
      [&](Transaction& tx) {
        ++calls;
        return tx.Put("k", "v");
      },
      1);
  EXPECT_TRUE(s.IsAborted()) << s.ToString();
  EXPECT_EQ(calls, 2);

  calls = 0;
  s = client_->Run([&](Transaction&) {
    ++calls;
    return Status::InvalidArgument("application says no");
  });
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_EQ(calls, 1);

  ClientOptions no_failover_wait;
  no_failover_wait.failover_timeout_ms = 0;  // report an unknown outcome at once
  ConnectClient(no_failover_wait);
  rpc::CommitResult unknown;
  unknown.outcome = rpc::Outcome::UNKNOWN;
  coordinator_->Script({CommitAnswer{unknown, std::nullopt, false}});
  calls = 0;
  s = client_->Run([&](Transaction& tx) {
    ++calls;
    return tx.Put("k", "v");
  });
  EXPECT_TRUE(s.IsUnavailable());
  EXPECT_EQ(calls, 1);  // an unknown outcome is never retried blindly
  EXPECT_EQ(client_->open_transactions(), 0u);
}

TEST_F(ClientTest, ManyAsyncTransactionsFromOneThread) {
  ClientOptions o;
  o.in_flight_tx_max = 1000;
  ConnectClient(o);
  constexpr int kTx = 500;
  std::atomic<int> committed{0};
  std::atomic<int> failed{0};
  std::atomic<bool> off_loop{false};
  std::vector<std::shared_ptr<AsyncTransaction>> txs;
  std::thread::id test_thread = std::this_thread::get_id();
  for (int i = 0; i < kTx; ++i) {
    auto tx = client_->BeginAsync();
    ASSERT_TRUE(tx.ok()) << tx.status().ToString();
    std::shared_ptr<AsyncTransaction> t = *tx;
    txs.push_back(t);
    std::string key = "acct-" + std::to_string(i);
    t->Get(key, [&, t, key, test_thread](GetResult r) {
      if (std::this_thread::get_id() == test_thread) off_loop = true;
      if (!r.ok()) {
        ++failed;
        return;
      }
      if (!t->Put(key, "1").ok()) ++failed;
      t->Commit([&](const CommitOutcome& c) {
        if (c.status.ok()) {
          ++committed;
        } else {
          ++failed;
        }
      });
    });
  }
  EXPECT_LE(client_->open_transactions(), static_cast<size_t>(kTx));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (committed + failed < kTx && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_EQ(committed.load(), kTx);
  EXPECT_EQ(failed.load(), 0);
  EXPECT_FALSE(off_loop);
  EXPECT_EQ(coordinator_->Requests(), static_cast<size_t>(kTx));
  EXPECT_EQ(client_->open_transactions(), 0u);
}

TEST_F(ClientTest, OpenTransactionLimitGivesBusy) {
  ClientOptions o;
  o.in_flight_tx_max = 2;
  ConnectClient(o);
  auto a = client_->BeginAsync();
  auto b = client_->Begin();
  ASSERT_TRUE(a.ok() && b.ok());
  auto c = client_->BeginAsync();
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.status().IsBusy());
  ASSERT_TRUE((*a)->Abort().ok());
  EXPECT_TRUE(client_->BeginAsync().ok());  // freed slot (and dropped again at once)
  a->reset();
  EXPECT_EQ(client_->open_transactions(), 1u);
}

TEST_F(ClientTest, TransactionOutlivingTheClientFailsCleanly) {
  ConnectClient();
  auto tx = client_->BeginAsync();
  ASSERT_TRUE(tx.ok());
  std::shared_ptr<AsyncTransaction> t = *tx;
  client_.reset();
  std::optional<Status> got;
  t->Get("k", [&](GetResult r) { got = r.status(); });  // inline once closed
  ASSERT_TRUE(got.has_value());
  EXPECT_TRUE(got->IsUnavailable()) << got->ToString();
  std::optional<Status> committed;
  ASSERT_TRUE(t->Put("k", "v").ok());
  t->Commit([&](const CommitOutcome& o) { committed = o.status; });
  ASSERT_TRUE(committed.has_value());
  EXPECT_TRUE(committed->IsUnavailable());
}

// A cluster directory as `dtxctl cluster up` writes it, with empty stand-ins
// for the certificate files (FromClusterDir only names them).
class ClusterDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "dtx-cluster-dir-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    Write("cluster.conf",
          "# dtx local cluster\n"
          "participant-0 127.0.0.1:7100 admin=127.0.0.1:7200 peer=127.0.0.1:7300\n"
          "coordinator-1 127.0.0.1:7111 admin=127.0.0.1:7211 peer=127.0.0.1:7311\n"
          "coordinator-0 127.0.0.1:7101 admin=127.0.0.1:7201 peer=127.0.0.1:7301  # primary\n");
    Write("security.conf", "tls on\ncerts certs\n");
    std::filesystem::create_directory(dir_ + "/certs");
    for (const char* f : {"ca.crt", "client.crt", "client.key", "app.crt", "app.key"}) {
      Write(std::string("certs/") + f, "");
    }
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  std::string dir_;
};

TEST_F(ClusterDirTest, CoordinatorsComeFromClusterConfPrimaryFirstAndTlsFromSecurityConf) {
  auto o = ClientOptions::FromClusterDir(dir_);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->coordinators, (std::vector<std::string>{"127.0.0.1:7101", "127.0.0.1:7111"}));
  EXPECT_EQ(o->tls_ca_file, dir_ + "/certs/ca.crt");
  EXPECT_EQ(o->tls_cert_file, dir_ + "/certs/client.crt");
  EXPECT_EQ(o->tls_key_file, dir_ + "/certs/client.key");
  EXPECT_EQ(o->request_timeout_ms, kClientRequestTimeoutMsDefault);  // the rest: defaults

  auto app = ClientOptions::FromClusterDir(dir_, "app");
  ASSERT_TRUE(app.ok()) << app.status().ToString();
  EXPECT_EQ(app->tls_cert_file, dir_ + "/certs/app.crt");
  EXPECT_EQ(app->tls_key_file, dir_ + "/certs/app.key");
}

TEST_F(ClusterDirTest, InsecureOrPreTlsClusterIsPlaintext) {
  Write("security.conf", "tls off    # --insecure\n");
  auto off = ClientOptions::FromClusterDir(dir_);
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_EQ(off->coordinators.size(), 2u);
  EXPECT_TRUE(off->tls_ca_file.empty() && off->tls_cert_file.empty() && off->tls_key_file.empty());
  std::filesystem::remove(dir_ + "/security.conf");
  auto none = ClientOptions::FromClusterDir(dir_);
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_TRUE(none->tls_ca_file.empty());
}

// A cluster file (docs/deploy.md): its own tls/certs lines, else the
// security.conf beside it; with neither it is refused, never plaintext.
TEST_F(ClusterDirTest, ClusterFileCarriesItsOwnTlsSettings) {
  Write("hosts.conf",
        "tls on\ncerts certs\n"
        "coordinator-0 10.0.0.1:7000 peer=10.0.0.1:7100\n"
        "participant-0 10.0.0.2:7000 peer=10.0.0.2:7100\n");
  auto o = ClientOptions::FromClusterFile(dir_ + "/hosts.conf", "app");
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->coordinators, (std::vector<std::string>{"10.0.0.1:7000"}));
  EXPECT_EQ(o->tls_ca_file, dir_ + "/certs/ca.crt");
  EXPECT_EQ(o->tls_cert_file, dir_ + "/certs/app.crt");
  EXPECT_TRUE(ClientOptions::FromClusterFile(dir_ + "/hosts.conf", "bench")
                  .status()
                  .IsInvalidArgument());
  // The local cluster's own cluster.conf: TLS from security.conf beside it.
  auto local = ClientOptions::FromClusterFile(dir_ + "/cluster.conf");
  ASSERT_TRUE(local.ok()) << local.status().ToString();
  EXPECT_EQ(local->tls_cert_file, dir_ + "/certs/client.crt");
  Write("plain.conf", "tls off\ncoordinator-0 10.0.0.1:7000\nparticipant-0 10.0.0.2:7000\n");
  auto plain = ClientOptions::FromClusterFile(dir_ + "/plain.conf");
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_TRUE(plain->tls_ca_file.empty());
  std::filesystem::remove(dir_ + "/security.conf");
  auto neither = ClientOptions::FromClusterFile(dir_ + "/cluster.conf");
  ASSERT_FALSE(neither.ok());
  EXPECT_NE(neither.status().message().find("no 'tls on' or 'tls off' line"), std::string::npos)
      << neither.status().ToString();
  EXPECT_TRUE(ClientOptions::FromClusterFile(dir_ + "/missing.conf").status().IsNotFound());
}

TEST_F(ClusterDirTest, MistakesNameTheFileAndLine) {
  auto missing_cert = ClientOptions::FromClusterDir(dir_, "bench");
  ASSERT_FALSE(missing_cert.ok());
  EXPECT_TRUE(missing_cert.status().IsInvalidArgument());
  EXPECT_NE(missing_cert.status().message().find("dtxctl certs create-client bench"),
            std::string::npos)
      << missing_cert.status().ToString();
  EXPECT_TRUE(ClientOptions::FromClusterDir(dir_, "../ca").status().IsInvalidArgument());

  Write("security.conf", "tls on\ncolour blue\n");
  auto bad_security = ClientOptions::FromClusterDir(dir_);
  ASSERT_FALSE(bad_security.ok());
  EXPECT_NE(bad_security.status().message().find("security.conf line 2"), std::string::npos)
      << bad_security.status().ToString();

  Write("cluster.conf", "coordinator-0 127.0.0.1:7101\nparticipant-0 127.0.0.1:7100 admin\n");
  auto bad_conf = ClientOptions::FromClusterDir(dir_);
  ASSERT_FALSE(bad_conf.ok());
  EXPECT_TRUE(bad_conf.status().IsInvalidArgument());
  EXPECT_NE(bad_conf.status().message().find(dir_ + "/cluster.conf: cluster.conf line 2"),
            std::string::npos)
      << bad_conf.status().ToString();

  std::filesystem::remove(dir_ + "/cluster.conf");
  EXPECT_TRUE(ClientOptions::FromClusterDir(dir_).status().IsNotFound());
}

}  // namespace
}  // namespace dtx
