// CoordinatorDriver over a recording CoordinatorIo: the drain's ordering rule
// (a DECISION is durable before any COMMIT or COMMITTED reply), the reply ->
// core conversions, and the served calls' answers.
#include "coordinator/driver.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/rpc_client.h"

namespace dtx::coordinator {
namespace {

const std::vector<std::string> kParticipants = {"p0:1", "p1:1"};

// Records every call; the test completes them by hand.
class RecordingIo final : public CoordinatorIo {
 public:
  struct Appended {
    RecordType type;
    bool forced;
    std::function<void(uint64_t)> on_durable;
    uint64_t lsn;
  };
  uint64_t now_ms = 1000;
  std::vector<Appended> log;
  std::vector<
      std::pair<std::string, std::function<void(const RpcStatus&, const rpc::PrepareResponse&)>>>
      prepares;
  std::vector<std::pair<std::string, Done>> commits;
  std::vector<std::string> events;  // "append DECISION", "commit p0:1", ...
  std::optional<std::string> fail_stop;

  uint64_t NowMs() override { return now_ms; }
  void Prepare(const std::string& to, const rpc::PrepareRequest&, int,
               std::function<void(const RpcStatus&, const rpc::PrepareResponse&)> done) override {
    events.push_back("prepare " + to);
    prepares.emplace_back(to, std::move(done));
  }
  void Commit(const std::string& to, const rpc::TxId&, rpc::Epoch, int, Done done) override {
    events.push_back("commit " + to);
    commits.emplace_back(to, std::move(done));
  }
  void Abort(const std::string& to, const rpc::TxId&, rpc::Epoch, const rpc::Attempt&, int,
             Done) override {
    events.push_back("abort " + to);
  }
  void ProbeParticipant(const std::string&, const rpc::HeartbeatRequest&, int, Done) override {}
  void AdoptEpoch(const std::string&, rpc::Epoch, const std::string&, int, AdoptDone) override {}
  void PeerHeartbeat(
      const rpc::HeartbeatRequest&, int,
      std::function<void(const RpcStatus&, const rpc::HeartbeatResponse&)>) override {}
  void PeerReplicate(
      const rpc::ReplicateRequest&, int,
      std::function<void(const RpcStatus&, const rpc::ReplicateResponse&)>) override {}
  uint64_t Append(RecordType type, const std::string&, bool forced,
                  std::function<void(uint64_t)> on_durable) override {
    const uint64_t lsn = log.size() + 1;
    events.push_back(std::string("append ") +
                     (type == RecordType::kDecision ? "DECISION" : "other"));
    log.push_back(Appended{type, forced, std::move(on_durable), lsn});
    return lsn;
  }
  uint64_t durable_lsn() override { return 0; }
  Status ReloadLog(const ReplayFn&) override { return Status::OK(); }
  Status TruncateBefore(uint64_t) override { return Status::OK(); }
  void FlushSends() override {}  // sends are recorded at once
  void FailStop(const std::string& why) override { fail_stop = why; }

  // Makes every forced record appended so far durable (as a sync would).
  void SyncAll() {
    std::vector<Appended> pending = log;
    for (Appended& a : pending) {
      if (a.forced && a.on_durable) a.on_durable(a.lsn);
    }
  }
};

class DriverTest : public ::testing::Test {
 protected:
  DriverTest() {
    CoreOptions co;
    co.participants = kParticipants;
    co.self_address = "c:1";
    HaCoreOptions ho;
    ho.self_address = "c:1";
    ha_ = std::make_unique<HaCore>(ho, co);
    DriverOptions d;
    d.name = "coordinator-0";
    d.self_address = "c:1";
    d.participants = kParticipants;
    driver_ = std::make_unique<CoordinatorDriver>(d, ha_.get(), &io_, &hooks_);
    ha_->Start(io_.now_ms);
    driver_->Process();
    io_.SyncAll();  // the EPOCH of a fresh log
    io_.events.clear();
  }

  // A two-participant transaction: one key on each shard.
  rpc::CommitRequest TwoShardCommit() {
    rpc::CommitRequest req;
    req.txid = ToRpc(TxId{7, 9});
    req.shard_map_version = 1;
    bool have[2] = {false, false};
    for (int i = 0; !(have[0] && have[1]); ++i) {
      const std::string key = "k" + std::to_string(i);
      const size_t shard = ShardHash(key) % kParticipants.size();
      if (have[shard]) continue;
      have[shard] = true;
      rpc::WriteItem w;
      w.key = key;
      w.__set_value("v");
      req.writes.push_back(w);
    }
    return req;
  }

  RecordingIo io_;
  CoordinatorHooks hooks_;
  std::unique_ptr<HaCore> ha_;
  std::unique_ptr<CoordinatorDriver> driver_;
  std::optional<rpc::CommitResult> result_;
  std::optional<rpc::DtxError> error_;
};

rpc::PrepareResponse VoteOf(rpc::Vote::type v) {
  rpc::PrepareResponse r;
  r.vote = v;
  return r;
}

// 2PC step "decision": the DECISION is appended once every vote is YES, and
// neither a COMMIT nor the COMMITTED reply leaves before it is durable.
TEST_F(DriverTest, NoCommitAndNoReplyBeforeTheDecisionIsDurable) {
  driver_->Commit(
      TwoShardCommit(), [this](const rpc::CommitResult& r) { result_ = r; },
      [this](const rpc::DtxError& e) { error_ = e; });
  ASSERT_EQ(io_.prepares.size(), 2u);
  for (auto& [to, done] : io_.prepares) done(RpcStatus(), VoteOf(rpc::Vote::YES));
  ASSERT_FALSE(io_.log.empty());
  EXPECT_EQ(io_.log.back().type, RecordType::kDecision);
  EXPECT_TRUE(io_.log.back().forced);
  EXPECT_TRUE(io_.commits.empty());
  EXPECT_FALSE(result_.has_value());

  io_.SyncAll();
  EXPECT_EQ(io_.commits.size(), 2u);
  ASSERT_TRUE(result_.has_value());
  EXPECT_EQ(result_->outcome, rpc::Outcome::COMMITTED);
  EXPECT_FALSE(error_.has_value());
}

// 2PC step "votes": a vote the wire does not define is an error reply, not a
// YES: the transaction aborts.
TEST_F(DriverTest, AnUndefinedVoteAborts) {
  driver_->Commit(
      TwoShardCommit(), [this](const rpc::CommitResult& r) { result_ = r; },
      [this](const rpc::DtxError& e) { error_ = e; });
  ASSERT_EQ(io_.prepares.size(), 2u);
  io_.prepares[0].second(RpcStatus(), VoteOf(rpc::Vote::YES));
  io_.prepares[1].second(RpcStatus(), VoteOf(static_cast<rpc::Vote::type>(99)));
  io_.SyncAll();
  ASSERT_TRUE(result_.has_value());
  EXPECT_EQ(result_->outcome, rpc::Outcome::ABORTED);
  EXPECT_TRUE(io_.commits.empty());
}

// A NO vote's reason reaches the client as the participant gave it.
TEST_F(DriverTest, ANoVoteAbortsWithTheParticipantsReason) {
  driver_->Commit(
      TwoShardCommit(), [this](const rpc::CommitResult& r) { result_ = r; },
      [this](const rpc::DtxError& e) { error_ = e; });
  ASSERT_EQ(io_.prepares.size(), 2u);
  rpc::PrepareResponse no = VoteOf(rpc::Vote::NO);
  no.__set_reason(rpc::AbortReason::CONFLICT);
  no.__set_detail("lock conflict");
  io_.prepares[0].second(RpcStatus(), no);
  io_.SyncAll();
  ASSERT_TRUE(result_.has_value());
  EXPECT_EQ(result_->outcome, rpc::Outcome::ABORTED);
  ASSERT_TRUE(result_->__isset.reason);
  EXPECT_EQ(result_->reason, rpc::AbortReason::CONFLICT);
}

// A backup refuses Commit NOT_PRIMARY and names its peer as the primary.
TEST(DriverBackupTest, NotPrimaryNamesThePeer) {
  RecordingIo io;
  CoordinatorHooks hooks;
  CoreOptions co;
  co.participants = kParticipants;
  co.self_address = "c1:1";
  HaCoreOptions ho;
  ho.role = Role::kBackup;
  ho.self_address = "c1:1";
  ho.peer = "c0:1";
  HaCore ha(ho, co);
  DriverOptions d;
  d.self_address = "c1:1";
  d.peer = "c0:1";
  CoordinatorDriver driver(d, &ha, &io, &hooks);
  ha.Start(io.now_ms);
  driver.Process();
  std::optional<rpc::DtxError> error;
  rpc::CommitRequest req;
  req.txid = ToRpc(TxId{1, 2});
  driver.Commit(
      req, [](const rpc::CommitResult&) {}, [&](const rpc::DtxError& e) { error = e; });
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, rpc::ErrorCode::NOT_PRIMARY);
  ASSERT_TRUE(error->__isset.primary);
  EXPECT_EQ(error->primary, "c0:1");
}

TEST(ToCallStatusTest, ErrorRepliesTimeoutsAndTransportFailures) {
  EXPECT_EQ(ToCallStatus(RpcStatus()), CallStatus::kOk);
  EXPECT_EQ(ToCallStatus(RpcStatus(Status::Timeout("t"))), CallStatus::kTimeout);
  EXPECT_EQ(ToCallStatus(RpcStatus(Status::Unavailable("u"))), CallStatus::kUnavailable);
  rpc::DtxError stale = MakeDtxError(rpc::ErrorCode::STALE_EPOCH, "stale");
  EXPECT_EQ(ToCallStatus(StatusFromDtxError(stale)), CallStatus::kStaleEpoch);
  rpc::DtxError other = MakeDtxError(rpc::ErrorCode::UNAVAILABLE, "busy");
  EXPECT_EQ(ToCallStatus(StatusFromDtxError(other)), CallStatus::kError);
}

}  // namespace
}  // namespace dtx::coordinator
