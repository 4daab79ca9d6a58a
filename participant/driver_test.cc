// ParticipantDriver over a recording ParticipantIo: the drain's ordering
// rule (a PREPARE is durable before the YES leaves), the wire -> core
// conversions (values read off the wire are checked), the in-doubt
// fall-back's calls, and the failpoints it evaluates.
#include "participant/driver.h"

#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/failpoint.h"
#include "common/rpc_client.h"
#include "common/wire.h"
#include "participant/mem_store.h"

namespace dtx::participant {
namespace {

// Records every call; the test completes them by hand.
class RecordingIo final : public ParticipantIo {
 public:
  struct Appended {
    RecordType type;
    bool forced;
    DurableFn on_durable;
    uint64_t lsn;
  };
  using QueryDone = std::function<void(const RpcStatus&, const rpc::Decision::type&)>;
  using StatusDone = std::function<void(const RpcStatus&, const rpc::NodeStatus&)>;
  uint64_t now_ms = 1000;
  std::vector<Appended> log;
  std::vector<std::pair<std::string, QueryDone>> queries;
  std::vector<std::pair<std::string, StatusDone>> statuses;
  std::optional<std::string> fail_stop;
  uint64_t synced = 0;  // the highest LSN SyncAll covered

  uint64_t NowMs() override { return now_ms; }
  uint64_t Append(RecordType type, const std::string&, bool forced, const TxId&,
                  DurableFn on_durable) override {
    const uint64_t lsn = log.size() + 1;
    log.push_back(Appended{type, forced, std::move(on_durable), lsn});
    return lsn;
  }
  void QueryDecision(const std::string& to, const rpc::TxId&, const std::string&,
                     const rpc::Attempt&, int, QueryDone done) override {
    queries.emplace_back(to, std::move(done));
  }
  void GetStatus(const std::string& to, int, StatusDone done) override {
    statuses.emplace_back(to, std::move(done));
  }
  void FlushSends() override {}  // sends are recorded at once
  void FailStop(const std::string& why) override { fail_stop = why; }

  // Makes every record appended so far durable (as a sync would).
  void SyncAll() {
    const uint64_t from = synced;
    synced = log.size();
    std::vector<Appended> pending;  // the forced ones: one batch, as one sync's
    for (auto it = log.begin() + static_cast<long>(from); it != log.end(); ++it) {
      if (it->forced && it->on_durable) pending.push_back(*it);
    }
    for (size_t i = 0; i < pending.size(); ++i)
      pending[i].on_durable(pending[i].lsn, i + 1 < pending.size());
  }
};

rpc::NodeStatus StatusOf(rpc::NodeRole::type role, int64_t epoch) {
  rpc::NodeStatus s;
  s.role = role;
  s.epoch = epoch;
  return s;
}

class ParticipantDriverTest : public ::testing::Test {
 protected:
  ParticipantDriverTest() : core_(CoreOptions{}, &store_) {
    core_.FinishRecovery(io_.now_ms);
    ParticipantDriverOptions o;
    o.name = "participant-0";
    o.coordinator = "c0:1";
    o.coordinators = {"c0:1", "c1:1", "c2:1", "c3:1", "c4:1"};
    driver_ = std::make_unique<ParticipantDriver>(o, &core_, &io_, &hooks_);
    driver_->Start();
  }
  ~ParticipantDriverTest() override { fp::DisarmAll(); }

  // A two-phase Prepare writing one key, stamped with `epoch`.
  void Prepare(const TxId& txid, Epoch epoch) {
    rpc::PrepareRequest req;
    req.txid = ToRpc(txid);
    req.epoch = epoch;
    rpc::WriteItem w;
    w.key = "k" + std::to_string(txid.lo);
    w.__set_value("v");
    req.writes.push_back(w);
    driver_->Prepare(
        req, [this](const rpc::PrepareResponse& r) { vote_ = r; },
        [this](const rpc::DtxError& e) { error_ = e; });
  }

  // Prepares `txid` under `epoch`, makes it durable, and lets the decision
  // query come due: the first QueryDecision goes to the PREPARE's coordinator.
  void InDoubt(const TxId& txid, Epoch epoch) {
    Prepare(txid, epoch);
    io_.SyncAll();
    ASSERT_TRUE(vote_.has_value());
    ASSERT_EQ(vote_->vote, rpc::Vote::YES);
    io_.now_ms += kDecisionQueryAfterMsDefault + 1;
    driver_->Tick();
    ASSERT_EQ(io_.queries.size(), 1u);
    EXPECT_EQ(io_.queries[0].first, "c0:1");
  }

  MemStore store_;
  Core core_;
  RecordingIo io_;
  ParticipantHooks hooks_;
  std::unique_ptr<ParticipantDriver> driver_;
  std::optional<rpc::PrepareResponse> vote_;
  std::optional<rpc::DtxError> error_;
};

// 2PC step "prepare": the vote YES leaves only once the PREPARE is durable.
TEST_F(ParticipantDriverTest, NoVoteBeforeThePrepareIsDurable) {
  Prepare(TxId{1, 1}, 0);
  ASSERT_EQ(io_.log.size(), 1u);
  EXPECT_EQ(io_.log[0].type, RecordType::kPrepare);
  EXPECT_TRUE(io_.log[0].forced);
  EXPECT_FALSE(vote_.has_value());
  io_.SyncAll();
  ASSERT_TRUE(vote_.has_value());
  EXPECT_EQ(vote_->vote, rpc::Vote::YES);
  EXPECT_FALSE(error_.has_value());
}

// The COMMITs one sync made durable go to the store in one write, and each
// is acked.
TEST_F(ParticipantDriverTest, CommitsDurableTogetherAreAppliedInOneStoreWrite) {
  for (uint64_t i = 1; i <= 3; ++i) Prepare(TxId{7, i}, 0);
  io_.SyncAll();
  int acked = 0;
  for (uint64_t i = 1; i <= 3; ++i) {
    driver_->Commit(
        ToRpc(TxId{7, i}), 0, [&] { ++acked; },
        [](const rpc::DtxError& e) { ADD_FAILURE() << e.message; });
  }
  EXPECT_EQ(acked, 0);  // not before the COMMITs are durable
  io_.SyncAll();
  EXPECT_EQ(acked, 3);
  EXPECT_EQ(store_.batches(), 1);
  EXPECT_EQ(store_.applies(), 3);
  for (uint64_t i = 1; i <= 3; ++i) EXPECT_EQ(store_.Get("k" + std::to_string(i))->value, "v");
  EXPECT_EQ(core_.stats().store_batches, 1u);
  EXPECT_EQ(core_.stats().commits, 3u);
}

// A request past kTxKeysMax is refused BAD_ARGUMENT before the core sees it.
TEST_F(ParticipantDriverTest, TooManyKeysIsABadArgument) {
  rpc::PrepareRequest req;
  req.txid = ToRpc(TxId{1, 2});
  req.reads.resize(kTxKeysMax + 1);
  driver_->Prepare(
      req, [this](const rpc::PrepareResponse& r) { vote_ = r; },
      [this](const rpc::DtxError& e) { error_ = e; });
  ASSERT_TRUE(error_.has_value());
  EXPECT_EQ(error_->code, rpc::ErrorCode::BAD_ARGUMENT);
  EXPECT_TRUE(io_.log.empty());
}

// Fencing: an epoch granted to one coordinator is refused to another, and the
// refusal carries the current epoch and its owner (DtxError fields 4, 5).
TEST_F(ParticipantDriverTest, StaleEpochRefusalNamesTheEpochAndItsOwner) {
  bool adopted = false;
  driver_->AdoptEpoch(
      5, "c0:1", [&] { adopted = true; }, [this](const rpc::DtxError& e) { error_ = e; });
  EXPECT_FALSE(adopted);  // the EPOCH record is forced first
  io_.SyncAll();
  EXPECT_TRUE(adopted);
  driver_->AdoptEpoch(
      5, "c1:1", [] {}, [this](const rpc::DtxError& e) { error_ = e; });
  ASSERT_TRUE(error_.has_value());
  EXPECT_EQ(error_->code, rpc::ErrorCode::STALE_EPOCH);
  ASSERT_TRUE(error_->__isset.current_epoch);
  EXPECT_EQ(error_->current_epoch, 5);
  ASSERT_TRUE(error_->__isset.epoch_owner);
  EXPECT_EQ(error_->epoch_owner, "c0:1");
}

// In doubt: a decision outside the IDL's enum is no answer (the transaction
// stays in doubt and the fall-back starts); COMMIT resolves it.
TEST_F(ParticipantDriverTest, AnUndefinedDecisionIsNoAnswer) {
  InDoubt(TxId{1, 3}, 0);
  io_.queries[0].second(RpcStatus(), static_cast<rpc::Decision::type>(99));
  EXPECT_EQ(driver_->ListInDoubt().size(), 1u);
  EXPECT_FALSE(io_.statuses.empty());  // step 2: looking for a primary

  io_.now_ms += kDecisionQueryIntervalMsDefault + 1;
  driver_->Tick();
  ASSERT_EQ(io_.queries.size(), 2u);
  io_.queries[1].second(RpcStatus(), rpc::Decision::COMMIT);
  io_.SyncAll();  // the COMMIT record
  EXPECT_TRUE(driver_->ListInDoubt().empty());
  EXPECT_EQ(store_.Get("k3")->value, "v");
}

// The fall-back (participant/core.h QueryDecisionMsg step 3): when the
// PREPARE's coordinator cannot answer, only a primary at the transaction's
// epoch or later is asked - not an older primary, not a backup, not a node
// claiming a role the IDL does not define.
TEST_F(ParticipantDriverTest, FallBackAsksOnlyAPrimaryAtTheTransactionsEpochOrLater) {
  InDoubt(TxId{1, 4}, 5);
  io_.queries[0].second(RpcStatus(Status::Unavailable("down")), rpc::Decision::UNKNOWN);
  ASSERT_EQ(io_.statuses.size(), 4u);  // every coordinator known but c0
  std::vector<std::pair<std::string, RecordingIo::StatusDone>> statuses = std::move(io_.statuses);
  for (auto& [to, done] : statuses) {
    if (to == "c1:1") done(RpcStatus(), StatusOf(rpc::NodeRole::PRIMARY, 4));  // deposed
    if (to == "c2:1") done(RpcStatus(), StatusOf(rpc::NodeRole::BACKUP, 6));
    if (to == "c3:1") done(RpcStatus(), StatusOf(static_cast<rpc::NodeRole::type>(99), 9));
    if (to == "c4:1") done(RpcStatus(), StatusOf(rpc::NodeRole::PRIMARY, 5));
  }
  ASSERT_EQ(io_.queries.size(), 2u);
  EXPECT_EQ(io_.queries[1].first, "c4:1");
}

// A coordinator's heartbeat makes it a fall-back candidate, and the answer
// names this node as a participant at its epoch.
TEST_F(ParticipantDriverTest, HeartbeatSendersAreFallBackCandidates) {
  rpc::HeartbeatRequest hb;
  hb.sender = "c9:1";
  hb.role = rpc::NodeRole::BACKUP;
  rpc::HeartbeatResponse resp = driver_->Heartbeat(hb);
  EXPECT_EQ(resp.name, "participant-0");
  EXPECT_EQ(resp.role, rpc::NodeRole::PARTICIPANT);
  ASSERT_EQ(driver_->coordinators_seen().count("c9:1"), 1u);
  EXPECT_EQ(driver_->coordinators_seen().at("c9:1").role, "backup");

  InDoubt(TxId{1, 5}, 0);
  io_.queries[0].second(RpcStatus(Status::Unavailable("down")), rpc::Decision::UNKNOWN);
  bool asked = false;
  for (const auto& [to, done] : io_.statuses) asked = asked || to == "c9:1";
  EXPECT_TRUE(asked);
}

// Failpoint participant.prepare.before_log armed with `error`: the node
// fail-stops before the PREPARE is logged, and nothing is answered.
TEST_F(ParticipantDriverTest, AFailingFailpointBeforeTheLogStopsTheNode) {
  ASSERT_TRUE(fp::Arm("participant.prepare.before_log", "error").ok());
  Prepare(TxId{1, 6}, 0);
  EXPECT_TRUE(io_.fail_stop.has_value());
  EXPECT_TRUE(driver_->stopped());
  EXPECT_TRUE(io_.log.empty());
  EXPECT_FALSE(vote_.has_value());
  EXPECT_FALSE(error_.has_value());
}

// A store that reports Corruption (participant/level_store.h: a LevelDB
// block failed its checksum) stops the node with the store's message: a
// Read gets no value and no error, and a Prepare whose read validation hits
// it gets no vote (a NO would claim the store was read).
TEST_F(ParticipantDriverTest, ACorruptStoreStopsTheNodeInsteadOfAnswering) {
  const std::string why = "LevelDB store d is corrupt: block checksum mismatch";
  store_.FailGetWith(Status::Corruption(why));
  std::optional<rpc::ReadResult> read;
  driver_->Read(
      "k", [&](const rpc::ReadResult& r) { read = r; },
      [this](const rpc::DtxError& e) { error_ = e; });
  ASSERT_TRUE(io_.fail_stop.has_value());
  EXPECT_NE(io_.fail_stop->find(why), std::string::npos) << *io_.fail_stop;
  EXPECT_TRUE(driver_->stopped());
  EXPECT_FALSE(read.has_value());
  EXPECT_FALSE(error_.has_value());
}

TEST_F(ParticipantDriverTest, ACorruptStoreDuringReadValidationStopsTheNodeWithoutAVote) {
  store_.FailGetWith(Status::Corruption("LevelDB store d is corrupt"));
  rpc::PrepareRequest req;
  req.txid = ToRpc(TxId{1, 7});
  req.epoch = 0;
  rpc::ReadItem r;
  r.key = "k";
  r.version = 0;
  req.reads.push_back(r);
  rpc::WriteItem w;
  w.key = "w";
  w.__set_value("v");
  req.writes.push_back(w);
  req.one_phase = true;
  driver_->Prepare(
      req, [this](const rpc::PrepareResponse& v) { vote_ = v; },
      [this](const rpc::DtxError& e) { error_ = e; });
  ASSERT_TRUE(io_.fail_stop.has_value());
  EXPECT_NE(io_.fail_stop->find("is corrupt"), std::string::npos) << *io_.fail_stop;
  EXPECT_FALSE(vote_.has_value());
  EXPECT_FALSE(error_.has_value());
  EXPECT_TRUE(io_.log.empty());
}

// Any other store error fails only the request: the node keeps serving.
TEST_F(ParticipantDriverTest, AStoreReadErrorThatIsNotCorruptionFailsOnlyTheRead) {
  store_.FailGetWith(Status::IOError("EIO"));
  driver_->Read(
      "k", [](const rpc::ReadResult&) {}, [this](const rpc::DtxError& e) { error_ = e; });
  EXPECT_FALSE(io_.fail_stop.has_value());
  ASSERT_TRUE(error_.has_value());
  EXPECT_EQ(error_->code, rpc::ErrorCode::INTERNAL);
}

}  // namespace
}  // namespace dtx::participant
