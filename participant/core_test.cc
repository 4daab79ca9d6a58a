// Step-by-step tests of the participant core: every protocol step, NO votes,
// duplicate and late messages, unknown txids, read-only and one-phase paths,
// reads waiting on prepared keys, epochs, and replay after a crash that loses
// the unsynced tail of the log.
#include "participant/core.h"

#include <gtest/gtest.h>

#include <limits>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "participant/mem_store.h"

namespace dtx::participant {
namespace {

constexpr TxId kT1{7, 1};
constexpr TxId kT2{7, 2};
constexpr TxId kT3{7, 3};

// One participant with an in-memory log: records appended by the core stay
// "unsynced" until Sync(); Crash() drops them, builds a new core and replays
// the synced ones (the store survives or not, as asked).
class Node {
 public:
  explicit Node(CoreOptions options = {}) : options_(options) {
    Status s = Restart(/*keep_store=*/true);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }

  Core& core() { return *core_; }
  MemStore& store() { return *store_; }
  uint64_t now = 1000;

  Token Read(const std::string& key) {
    Token t = next_token_++;
    core_->Read(t, key, now);
    Drain();
    return t;
  }
  Token Prepare(PrepareRequest req) {
    Token t = next_token_++;
    core_->Prepare(t, std::move(req), now);
    Drain();
    return t;
  }
  Token Commit(const TxId& tx, Epoch epoch = 1) {
    Token t = next_token_++;
    core_->Commit(t, tx, epoch, now);
    Drain();
    return t;
  }
  Token Abort(const TxId& tx, Epoch epoch = 1, Attempt attempt = {}) {
    Token t = next_token_++;
    core_->Abort(t, tx, epoch, now, attempt);
    Drain();
    return t;
  }
  Token AdoptEpoch(Epoch epoch, const std::string& coordinator) {
    Token t = next_token_++;
    core_->AdoptEpoch(t, epoch, coordinator, now);
    Drain();
    return t;
  }
  // The decision on the attempt held (these tests prepare unstamped).
  void Decide(const TxId& tx, Decision d) {
    core_->OnDecision(tx, d, now, Attempt{});
    Drain();
  }
  void Tick(uint64_t advance_ms) {
    now += advance_ms;
    core_->Tick(now);
    Drain();
  }
  // Makes every appended record durable.
  void Sync() {
    if (unsynced_.empty()) return;
    uint64_t last = unsynced_.back().tag;
    for (PersistOp& op : unsynced_) {
      EXPECT_EQ(op.tag, log_base_ + log_.size()) << "tags are LSNs";
      log_.push_back({static_cast<uint8_t>(op.type), op.payload});
    }
    unsynced_.clear();
    core_->OnPersisted(last, now);
    Drain();
  }
  // A checkpoint as the runtime takes it: the store as it is now becomes
  // what survives a crash, and the log loses every record below retain_from
  // (exactly: the real WAL drops whole segments, so keeps more).
  Checkpoint TakeCheckpoint() {
    std::optional<Checkpoint> cp = core_->TakeCheckpoint();
    EXPECT_TRUE(cp.has_value());
    checkpoint_ = *cp;
    checkpoint_store_ = std::make_unique<MemStore>(*store_);
    while (log_base_ < cp->retain_from && !log_.empty()) {
      log_.erase(log_.begin());
      ++log_base_;
    }
    return *cp;
  }
  uint64_t log_base() const { return log_base_; }

  // Crash: unsynced records are lost; replay the rest into a new core.
  // After a checkpoint the store reverts to its state at the checkpoint
  // (later store writes were not synced), else as asked.
  Status Crash(bool keep_store) {
    unsynced_.clear();
    replies_.clear();
    sent_.clear();
    return Restart(keep_store);
  }

  bool Replied(Token t) const { return replies_.count(t) != 0; }
  const Reply& reply(Token t) const {
    auto it = replies_.find(t);
    EXPECT_NE(it, replies_.end()) << "no reply for token " << t;
    static const Reply kNone;
    return it == replies_.end() ? kNone : it->second;
  }
  const std::vector<PersistOp>& unsynced() const { return unsynced_; }
  size_t log_size() const { return log_.size(); }
  std::vector<QueryDecisionMsg>& sent() { return sent_; }
  const Status& fatal() const { return fatal_; }
  std::vector<std::pair<uint8_t, std::string>>& log() { return log_; }

  Status Restart(bool keep_store) {
    core_.reset();
    if (checkpoint_.has_value()) {
      store_ = std::make_unique<MemStore>(*checkpoint_store_);
    } else if (!keep_store || !store_) {
      store_ = std::make_unique<MemStore>();
    }
    core_ = std::make_unique<Core>(options_, store_.get());
    if (checkpoint_.has_value()) core_->RestoreCheckpoint(*checkpoint_);
    uint64_t lsn = log_base_;
    for (auto& [type, payload] : log_) DTX_RETURN_IF_ERROR(core_->Replay(lsn++, type, payload));
    core_->FinishRecovery(now, log_base_ + log_.size() - 1);
    Drain();
    return Status::OK();
  }

  // Collects what the core emitted (after a direct call on core()).
  void Drain() {
    Ready r = core_->TakeReady();
    for (PersistOp& op : r.persist) {
      if (!unsynced_.empty()) {
        EXPECT_EQ(op.tag, unsynced_.back().tag + 1);
      }
      unsynced_.push_back(std::move(op));
    }
    for (Reply& rep : r.replies) {
      EXPECT_EQ(replies_.count(rep.token), 0u) << "two replies for token " << rep.token;
      replies_[rep.token] = std::move(rep);
    }
    for (auto& m : r.send) sent_.push_back(std::move(m));
    if (!r.fatal.ok()) fatal_ = r.fatal;
  }

 private:
  CoreOptions options_;
  std::unique_ptr<MemStore> store_;
  std::unique_ptr<Core> core_;
  std::vector<std::pair<uint8_t, std::string>> log_;  // synced records, from LSN log_base_
  uint64_t log_base_ = 1;
  std::optional<Checkpoint> checkpoint_;
  std::unique_ptr<MemStore> checkpoint_store_;
  std::vector<PersistOp> unsynced_;
  std::map<Token, Reply> replies_;
  std::vector<QueryDecisionMsg> sent_;
  Status fatal_;
  Token next_token_ = 1;
};

PrepareRequest Req(const TxId& tx, std::vector<ReadOp> reads, std::vector<WriteOp> writes,
                   bool one_phase = false, bool read_only_tx = false, Epoch epoch = 1) {
  PrepareRequest r;
  r.txid = tx;
  r.epoch = epoch;
  r.reads = std::move(reads);
  r.writes = std::move(writes);
  r.one_phase = one_phase;
  r.read_only_tx = read_only_tx;
  r.coordinator = "127.0.0.1:9";
  return r;
}
WriteOp Put(const std::string& k, const std::string& v) { return {k, v}; }
WriteOp Del(const std::string& k) { return {k, std::nullopt}; }

// Commits key=value through one-phase and returns the version it got.
Version Seed(Node& n, const std::string& key, const std::string& value, Epoch epoch = 1) {
  static uint64_t lo = 1000;
  Token t = n.Prepare(Req({99, ++lo}, {}, {Put(key, value)}, /*one_phase=*/true, false, epoch));
  n.Sync();
  EXPECT_EQ(n.reply(t).vote, Vote::kYes);
  return n.store().data().at(key).first;
}

// --- reads -------------------------------------------------------------------

TEST(ParticipantCoreTest, ReadOfAbsentKeyIsNotFoundWithVersionZero) {
  Node n;
  Token t = n.Read("nope");
  ASSERT_TRUE(n.Replied(t));
  EXPECT_EQ(n.reply(t).error, ErrorCode::kOk);
  EXPECT_FALSE(n.reply(t).found);
  EXPECT_EQ(n.reply(t).version, 0);
}

TEST(ParticipantCoreTest, ReadRejectsEmptyAndOversizedKeys) {
  Node n;
  Token a = n.Read("");
  Token b = n.Read(std::string(kKeyBytesMax + 1, 'k'));
  EXPECT_EQ(n.reply(a).error, ErrorCode::kBadArgument);
  EXPECT_EQ(n.reply(b).error, ErrorCode::kBadArgument);
  EXPECT_NE(n.reply(b).message.find("kKeyBytesMax"), std::string::npos);
}

TEST(ParticipantCoreTest, SharedLocksNeverBlockReads) {
  Node n;
  Version v = Seed(n, "k", "old");
  n.Prepare(Req(kT1, {{"k", v}}, {Put("other", "x")}));
  n.Sync();
  Token t = n.Read("k");
  ASSERT_TRUE(n.Replied(t));
  EXPECT_EQ(n.reply(t).value, "old");
}

TEST(ParticipantCoreTest, ReadOfKeyHeldByPreparedWriterWaitsAndSeesTheCommit) {
  Node n;
  Seed(n, "k", "old");
  n.Prepare(Req(kT1, {}, {Put("k", "new")}));
  n.Sync();
  Token r = n.Read("k");
  EXPECT_FALSE(n.Replied(r)) << "a read of a prepared key must wait for the outcome";
  n.Tick(10);
  EXPECT_FALSE(n.Replied(r));
  n.Commit(kT1);
  EXPECT_FALSE(n.Replied(r)) << "the read must not see the value before COMMIT is durable";
  n.Sync();
  ASSERT_TRUE(n.Replied(r));
  EXPECT_EQ(n.reply(r).value, "new");
}

TEST(ParticipantCoreTest, ReadOfKeyHeldByPreparedWriterSeesOldValueAfterAbort) {
  Node n;
  Seed(n, "k", "old");
  n.Prepare(Req(kT1, {}, {Put("k", "new")}));
  n.Sync();
  Token r = n.Read("k");
  EXPECT_FALSE(n.Replied(r));
  n.Abort(kT1);
  ASSERT_TRUE(n.Replied(r));
  EXPECT_EQ(n.reply(r).value, "old");
}

TEST(ParticipantCoreTest, ReadWaitingOnPreparedKeyTimesOut) {
  CoreOptions o;
  o.read_wait_ms = 50;
  Node n(o);
  n.Prepare(Req(kT1, {}, {Put("k", "new")}));
  n.Sync();
  Token r = n.Read("k");
  n.Tick(49);
  EXPECT_FALSE(n.Replied(r));
  n.Tick(1);
  ASSERT_TRUE(n.Replied(r));
  EXPECT_EQ(n.reply(r).error, ErrorCode::kTimeout);
  EXPECT_NE(n.reply(r).message.find(kT1.ToString()), std::string::npos);
  EXPECT_EQ(n.core().stats().parked_reads, 0u);
  n.Commit(kT1);  // the timed-out read is not answered twice (Drain checks)
  n.Sync();
}

TEST(ParticipantCoreTest, ParkedReadsAreBounded) {
  CoreOptions o;
  o.parked_reads_max = 2;
  Node n(o);
  n.Prepare(Req(kT1, {}, {Put("k", "v")}));
  n.Read("k");
  n.Read("k");
  Token third = n.Read("k");
  EXPECT_EQ(n.reply(third).error, ErrorCode::kUnavailable);
}

// --- prepare -------------------------------------------------------------------

TEST(ParticipantCoreTest, PrepareVotesYesOnlyAfterPrepareRecordIsDurable) {
  Node n;
  Token p = n.Prepare(Req(kT1, {{"r", 0}}, {Put("w", "1")}));
  EXPECT_FALSE(n.Replied(p));
  ASSERT_EQ(n.unsynced().size(), 2u);  // EPOCH (epoch rose 0 -> 1), PREPARE
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kEpoch);
  EXPECT_EQ(n.unsynced()[1].type, RecordType::kPrepare);
  EXPECT_TRUE(n.unsynced()[1].forced);
  auto rec = DecodePrepare(n.unsynced()[1].payload);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(rec->read_keys, std::vector<std::string>{"r"});
  EXPECT_EQ(rec->coordinator, "127.0.0.1:9");
  n.Sync();
  ASSERT_TRUE(n.Replied(p));
  EXPECT_EQ(n.reply(p).vote, Vote::kYes);
}

TEST(ParticipantCoreTest, PrepareVotesNoAtOnceOnLockConflictAndLogsNothing) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  size_t logged = n.log_size();
  Token p = n.Prepare(Req(kT2, {}, {Put("j", "2"), Put("k", "2")}));
  ASSERT_TRUE(n.Replied(p));
  EXPECT_EQ(n.reply(p).vote, Vote::kNo);
  EXPECT_EQ(n.reply(p).no_cause, NoVoteCause::kLockConflict);
  EXPECT_NE(n.reply(p).detail.find("'k'"), std::string::npos) << n.reply(p).detail;
  EXPECT_TRUE(n.unsynced().empty());
  EXPECT_EQ(n.log_size(), logged);
  // T2's lock on j was released: T3 can take it.
  Token p3 = n.Prepare(Req(kT3, {}, {Put("j", "3")}));
  n.Sync();
  EXPECT_EQ(n.reply(p3).vote, Vote::kYes);
}

TEST(ParticipantCoreTest, PrepareBehindACommittingHolderWaitsForItsCommitThenSeesIt) {
  // A client told COMMITTED that writes the same key at once: its PREPARE
  // may overtake the COMMIT record's sync. It waits for that sync, not NO.
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  Token c = n.Commit(kT1);
  Version v1 = n.core().stats().commit_counter;
  // Resumed in arrival order: T3 (which read k before T1 wrote it), then T2.
  Token stale = n.Prepare(Req(kT3, {{"k", 0}}, {Put("j", "3")}));
  Token blind = n.Prepare(Req(kT2, {}, {Put("k", "2")}));
  EXPECT_FALSE(n.Replied(blind));
  EXPECT_FALSE(n.Replied(stale));
  EXPECT_EQ(n.core().stats().prepares_waiting, 2u);
  EXPECT_EQ(n.core().stats().prepares_behind_commit, 2u);
  n.Sync();  // T1's COMMIT durable and applied; T2 and T3 evaluated now
  EXPECT_EQ(n.reply(c).error, ErrorCode::kOk);
  ASSERT_TRUE(n.Replied(stale));
  EXPECT_EQ(n.reply(stale).vote, Vote::kNo);
  EXPECT_EQ(n.reply(stale).no_cause, NoVoteCause::kStaleRead) << n.reply(stale).detail;
  EXPECT_FALSE(n.Replied(blind)) << "a YES waits for T2's own PREPARE";
  n.Sync();
  EXPECT_EQ(n.reply(blind).vote, Vote::kYes);
  EXPECT_EQ(n.core().stats().prepares_waiting, 0u);
  n.Commit(kT2);
  n.Sync();
  EXPECT_EQ(n.store().data().at("k").second, "2");
  EXPECT_GT(n.store().data().at("k").first, v1);
}

TEST(ParticipantCoreTest, PrepareBehindACommittingHolderAbortedMeanwhileVotesNo) {
  // The coordinator gave up on T2 (an ABORT overtook its held PREPARE):
  // once the lock is free it votes NO, as for an ABORT that overtook it on
  // the wire.
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  n.Commit(kT1);
  Token p = n.Prepare(Req(kT2, {}, {Put("k", "2")}));
  Token a = n.Abort(kT2);
  EXPECT_EQ(n.reply(a).error, ErrorCode::kOk);
  n.Sync();
  ASSERT_TRUE(n.Replied(p));
  EXPECT_EQ(n.reply(p).vote, Vote::kNo);
  EXPECT_EQ(n.reply(p).no_cause, NoVoteCause::kAlreadyAborted);
  EXPECT_EQ(n.store().data().at("k").second, "1");
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
}

TEST(ParticipantCoreTest, HeldPreparesCountAgainstTheInFlightBound) {
  CoreOptions o;
  o.tx_in_flight_max = 2;
  Node n(o);
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  n.Commit(kT1);
  Token held = n.Prepare(Req(kT2, {}, {Put("k", "2")}));
  EXPECT_FALSE(n.Replied(held));
  Token over = n.Prepare(Req(kT3, {}, {Put("j", "3")}));
  ASSERT_TRUE(n.Replied(over));
  EXPECT_EQ(n.reply(over).error, ErrorCode::kUnavailable);
  n.Sync();
  n.Sync();
  EXPECT_EQ(n.reply(held).vote, Vote::kYes);
}

TEST(ParticipantCoreTest, SharedLockConflictsWithWriterBothWays) {
  Node n;
  n.Prepare(Req(kT1, {{"k", 0}}, {Put("a", "1")}));
  n.Sync();
  Token w = n.Prepare(Req(kT2, {}, {Put("k", "2")}));
  EXPECT_EQ(n.reply(w).vote, Vote::kNo);
  Token r = n.Prepare(Req(kT3, {{"k", 0}}, {Put("b", "3")}));  // shared + shared: fine
  n.Sync();
  EXPECT_EQ(n.reply(r).vote, Vote::kYes);
}

TEST(ParticipantCoreTest, PrepareVotesNoOnStaleRead) {
  Node n;
  Version v1 = Seed(n, "k", "a");
  Seed(n, "k", "b");
  Token p = n.Prepare(Req(kT1, {{"k", v1}}, {Put("w", "1")}));
  ASSERT_TRUE(n.Replied(p));
  EXPECT_EQ(n.reply(p).vote, Vote::kNo);
  EXPECT_EQ(n.reply(p).no_cause, NoVoteCause::kStaleRead);
  EXPECT_NE(n.reply(p).detail.find("stale read of key 'k'"), std::string::npos)
      << n.reply(p).detail;
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
  // Reading "absent" is stale once the key exists.
  Token q = n.Prepare(Req(kT2, {{"k", 0}}, {}));
  EXPECT_EQ(n.reply(q).vote, Vote::kNo);
}

TEST(ParticipantCoreTest, KeyBothReadAndWrittenTakesExclusiveLock) {
  Node n;
  Version v = Seed(n, "k", "a");
  n.Prepare(Req(kT1, {{"k", v}}, {Put("k", "b")}));
  n.Sync();
  Token other = n.Prepare(Req(kT2, {{"k", v}}, {}));
  EXPECT_EQ(n.reply(other).vote, Vote::kNo);
  Token r = n.Read("k");
  EXPECT_FALSE(n.Replied(r));
}

TEST(ParticipantCoreTest, PrepareRejectsBadArguments) {
  Node n;
  auto err = [&](PrepareRequest req) {
    Token t = n.Prepare(std::move(req));
    return n.reply(t).error;
  };
  EXPECT_EQ(err(Req(kT1, {}, {Put("", "v")})), ErrorCode::kBadArgument);
  EXPECT_EQ(err(Req(kT1, {}, {Put(std::string(kKeyBytesMax + 1, 'k'), "v")})),
            ErrorCode::kBadArgument);
  EXPECT_EQ(err(Req(kT1, {}, {Put("k", std::string(kValueBytesMax + 1, 'v'))})),
            ErrorCode::kBadArgument);
  EXPECT_EQ(err(Req(kT1, {}, {Put("k", "1"), Put("k", "2")})), ErrorCode::kBadArgument);
  EXPECT_EQ(err(Req(kT1, {}, {Put("k", "1")}, false, /*read_only_tx=*/true)),
            ErrorCode::kBadArgument);
  std::vector<ReadOp> many;
  for (size_t i = 0; i <= kTxKeysMax; ++i) many.push_back({"k" + std::to_string(i), 0});
  EXPECT_EQ(err(Req(kT1, many, {})), ErrorCode::kBadArgument);
  EXPECT_EQ(err(Req(kT1, {}, {Put("k", "1")}, false, false, /*epoch=*/-1)),
            ErrorCode::kBadArgument);
  EXPECT_TRUE(n.unsynced().empty());
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
}

TEST(ParticipantCoreTest, DuplicatePrepareWhilePreparingGetsTheSameVoteAfterDurability) {
  Node n;
  Token a = n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  Token b = n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  EXPECT_FALSE(n.Replied(a));
  EXPECT_FALSE(n.Replied(b));
  EXPECT_EQ(n.unsynced().size(), 2u) << "a duplicate must not log PREPARE again";
  n.Sync();
  EXPECT_EQ(n.reply(a).vote, Vote::kYes);
  EXPECT_EQ(n.reply(b).vote, Vote::kYes);
  Token c = n.Prepare(Req(kT1, {}, {Put("k", "1")}));  // after durability: at once
  ASSERT_TRUE(n.Replied(c));
  EXPECT_EQ(n.reply(c).vote, Vote::kYes);
}

TEST(ParticipantCoreTest, PrepareOfDecidedTransactionGetsTheRecordedOutcome) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  n.Commit(kT1);
  n.Sync();
  Token late = n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  EXPECT_EQ(n.reply(late).vote, Vote::kYes);
  EXPECT_TRUE(n.unsynced().empty());
  n.Prepare(Req(kT2, {}, {Put("j", "1")}));
  n.Sync();
  n.Abort(kT2);
  Token late2 = n.Prepare(Req(kT2, {}, {Put("j", "1")}));
  EXPECT_EQ(n.reply(late2).vote, Vote::kNo);
  // Abort of a never-seen transaction, then its late Prepare: NO, not a new prepare.
  n.Abort(kT3);
  Token late3 = n.Prepare(Req(kT3, {}, {Put("z", "1")}));
  EXPECT_EQ(n.reply(late3).vote, Vote::kNo);
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
}

TEST(ParticipantCoreTest, InFlightTransactionsAreBounded) {
  CoreOptions o;
  o.tx_in_flight_max = 1;
  Node n(o);
  n.Prepare(Req(kT1, {}, {Put("a", "1")}));
  Token p = n.Prepare(Req(kT2, {}, {Put("b", "1")}));
  EXPECT_EQ(n.reply(p).error, ErrorCode::kUnavailable);
}

// --- commit / abort --------------------------------------------------------------

TEST(ParticipantCoreTest, CommitLogsForcedCommitThenAppliesReleasesAndAcks) {
  Node n;
  Seed(n, "gone", "x");
  n.Prepare(Req(kT1, {}, {Put("k", "1"), Del("gone")}));
  n.Sync();
  Version before = n.core().stats().commit_counter;
  Token c = n.Commit(kT1);
  EXPECT_FALSE(n.Replied(c));
  ASSERT_EQ(n.unsynced().size(), 1u);
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kCommit);
  EXPECT_TRUE(n.unsynced()[0].forced);
  EXPECT_EQ(n.store().data().count("k"), 0u) << "applied before COMMIT was durable";
  n.Sync();
  ASSERT_TRUE(n.Replied(c));
  EXPECT_EQ(n.reply(c).error, ErrorCode::kOk);
  EXPECT_EQ(n.store().data().at("k"), (std::pair<Version, std::string>{before + 1, "1"}));
  EXPECT_EQ(n.store().data().count("gone"), 0u);
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
  EXPECT_EQ(n.core().stats().in_flight, 0u);
}

TEST(ParticipantCoreTest, EveryCommitGetsANewHigherVersion) {
  Node n;
  Version v1 = Seed(n, "a", "1");
  Version v2 = Seed(n, "b", "1");
  n.Prepare(Req(kT1, {}, {Put("a", "2"), Put("b", "2")}));
  n.Sync();
  n.Commit(kT1);
  n.Sync();
  EXPECT_LT(v1, v2);
  EXPECT_EQ(n.store().data().at("a").first, v2 + 1);
  EXPECT_EQ(n.store().data().at("b").first, v2 + 1);
}

TEST(ParticipantCoreTest, DuplicateAndUnknownCommitsAreAcked) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  Token a = n.Commit(kT1);
  Token b = n.Commit(kT1);  // while COMMIT is not durable yet
  EXPECT_EQ(n.unsynced().size(), 1u);
  n.Sync();
  EXPECT_EQ(n.reply(a).error, ErrorCode::kOk);
  EXPECT_EQ(n.reply(b).error, ErrorCode::kOk);
  Token c = n.Commit(kT1);  // already committed
  EXPECT_EQ(n.reply(c).error, ErrorCode::kOk);
  Token d = n.Commit(kT3);  // never seen: committed and forgotten
  EXPECT_EQ(n.reply(d).error, ErrorCode::kOk);
  EXPECT_TRUE(n.unsynced().empty());
  EXPECT_EQ(n.store().applies(), 1);
}

TEST(ParticipantCoreTest, AbortReleasesLocksLogsNonForcedAbortAndAcksAtOnce) {
  Node n;
  n.Prepare(Req(kT1, {{"r", 0}}, {Put("k", "1")}));
  n.Sync();
  Token a = n.Abort(kT1);
  ASSERT_TRUE(n.Replied(a));
  EXPECT_EQ(n.reply(a).error, ErrorCode::kOk);
  ASSERT_EQ(n.unsynced().size(), 1u);
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kAbort);
  EXPECT_FALSE(n.unsynced()[0].forced);
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
  EXPECT_EQ(n.store().data().count("k"), 0u);
  Token again = n.Abort(kT1);
  EXPECT_EQ(n.reply(again).error, ErrorCode::kOk);
  Token unknown = n.Abort(kT3);
  EXPECT_EQ(n.reply(unknown).error, ErrorCode::kOk);
  EXPECT_EQ(n.unsynced().size(), 1u) << "unknown txids log nothing";
}

TEST(ParticipantCoreTest, AbortWhilePrepareIsNotDurableAnswersNoNotYes) {
  Node n;
  n.Abort(kT3);  // adopt epoch 1 first, so no reply waits for an EPOCH record
  n.Sync();
  Token p = n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Abort(kT1);
  ASSERT_TRUE(n.Replied(p));
  EXPECT_EQ(n.reply(p).vote, Vote::kNo);
  n.Sync();  // PREPARE becomes durable late: nothing more happens
  EXPECT_EQ(n.core().stats().in_flight, 0u);
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
}

TEST(ParticipantCoreTest, AbortOfCommittedTransactionIsAnError) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  n.Commit(kT1);
  Token during = n.Abort(kT1);
  EXPECT_EQ(n.reply(during).error, ErrorCode::kInternal);
  n.Sync();
  Token after = n.Abort(kT1);
  EXPECT_EQ(n.reply(after).error, ErrorCode::kInternal);
  EXPECT_EQ(n.store().data().at("k").second, "1");
}

TEST(ParticipantCoreTest, CommitOfAbortedTransactionIsAnError) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  n.Abort(kT1);
  Token c = n.Commit(kT1);
  EXPECT_EQ(n.reply(c).error, ErrorCode::kInternal);
  EXPECT_EQ(n.store().data().count("k"), 0u);
}

// --- read-only and one-phase --------------------------------------------------------

TEST(ParticipantCoreTest, ReadOnlyTransactionVotesReadOnlyReleasesLocksAndLogsNothing) {
  Node n;
  Version v = Seed(n, "k", "a");
  size_t logged = n.log_size();
  Token p = n.Prepare(Req(kT1, {{"k", v}}, {}, false, /*read_only_tx=*/true));
  ASSERT_TRUE(n.Replied(p));
  EXPECT_EQ(n.reply(p).vote, Vote::kReadOnly);
  EXPECT_TRUE(n.unsynced().empty());
  EXPECT_EQ(n.log_size(), logged);
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
  // Still validated: a stale read-only transaction votes NO.
  Seed(n, "k", "b");
  Token q = n.Prepare(Req(kT2, {{"k", v}}, {}, false, true));
  EXPECT_EQ(n.reply(q).vote, Vote::kNo);
}

TEST(ParticipantCoreTest, ParticipantWithoutWritesInAWritingTransactionKeepsSharedLocks) {
  Node n;
  Version v = Seed(n, "k", "a");
  Token p = n.Prepare(Req(kT1, {{"k", v}}, {}));  // read_only_tx = false: full path
  EXPECT_FALSE(n.Replied(p)) << "must force PREPARE before voting";
  ASSERT_EQ(n.unsynced().size(), 1u);
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kPrepare);
  n.Sync();
  EXPECT_EQ(n.reply(p).vote, Vote::kYes);
  EXPECT_EQ(n.core().stats().locked_keys, 1u);
  Token w = n.Prepare(Req(kT2, {}, {Put("k", "b")}));
  EXPECT_EQ(n.reply(w).vote, Vote::kNo);
  n.Commit(kT1);
  n.Sync();
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
}

// Write skew across two participants A (holds x) and B (holds y):
//   T1 reads y, writes x; T2 reads x, writes y; both read the initial values.
// Any serial order lets one see the other's write, so at most one may commit.
// Schedule: T1 prepares at B (its read-only participant), T2 prepares at B and
// A, T2 commits, T1 prepares at A. If B dropped T1's shared lock on y early,
// every step would succeed and both would commit.
TEST(ParticipantCoreTest, WriteSkewScheduleIsRefusedBecauseReadLocksAreHeldUntilTheDecision) {
  Node a, b;
  Version vx = Seed(a, "x", "0");
  Version vy = Seed(b, "y", "0");

  Token t1b = b.Prepare(Req(kT1, {{"y", vy}}, {}));  // B is read-only for T1
  b.Sync();
  ASSERT_EQ(b.reply(t1b).vote, Vote::kYes);

  Token t2b = b.Prepare(Req(kT2, {}, {Put("y", "T2")}));
  ASSERT_TRUE(b.Replied(t2b));
  EXPECT_EQ(b.reply(t2b).vote, Vote::kNo)
      << "T2's write of y must conflict with T1's held read lock";
  EXPECT_NE(b.reply(t2b).detail.find(kT1.ToString()), std::string::npos);

  // T2 aborts (one NO); T1 goes on and commits: one of the two, serializable.
  b.Abort(kT2);
  Token t1a = a.Prepare(Req(kT1, {}, {Put("x", "T1")}));
  a.Sync();
  ASSERT_EQ(a.reply(t1a).vote, Vote::kYes);
  a.Commit(kT1);
  b.Commit(kT1);
  a.Sync();
  b.Sync();
  EXPECT_EQ(a.store().data().at("x").second, "T1");
  EXPECT_EQ(b.store().data().at("y").second, "0");
  (void)vx;
}

// The same schedule with T1 marked read-only at B would be the mistake the
// read_only_tx flag exists to prevent: show that the participant does then
// release at once (so the coordinator must only set it for wholly read-only
// transactions) and that the write skew would go through.
TEST(ParticipantCoreTest, ReadOnlyVoteReleasesLocksSoItIsOnlySafeForWhollyReadOnlyTransactions) {
  Node a, b;
  Version vx = Seed(a, "x", "0");
  Version vy = Seed(b, "y", "0");
  Token t1b = b.Prepare(Req(kT1, {{"y", vy}}, {}, false, /*read_only_tx=*/true));
  EXPECT_EQ(b.reply(t1b).vote, Vote::kReadOnly);
  Token t2b = b.Prepare(Req(kT2, {}, {Put("y", "T2")}));
  Token t2a = a.Prepare(Req(kT2, {{"x", vx}}, {}));
  b.Sync();
  a.Sync();
  EXPECT_EQ(b.reply(t2b).vote, Vote::kYes);
  EXPECT_EQ(a.reply(t2a).vote, Vote::kYes);
  // With correct flags T1 would still be prepared at B and T2 refused (test above).
}

// ABA at validation: a read-only transaction reads k as absent; before it
// validates, T2 creates k and T3 deletes it. The value is "absent" again, but
// T1 read before T2 and validates after T3, and another participant may have
// served T1 a read that saw T2's effects elsewhere - so "absent then absent"
// must not validate as unchanged. The delete leaves a tombstone with its
// version, which the stale read of version 0 no longer matches.
TEST(ParticipantCoreTest, ReadOnlyValidationRefusesAbsentCreatedDeletedKey) {
  Node n;
  Token r = n.Read("k");
  ASSERT_FALSE(n.reply(r).found);
  ASSERT_EQ(n.reply(r).version, 0) << "never written: version 0";
  Version created = Seed(n, "k", "v");
  Token d = n.Prepare(Req(kT2, {}, {Del("k")}, /*one_phase=*/true));
  n.Sync();
  ASSERT_EQ(n.reply(d).vote, Vote::kYes);
  Token r2 = n.Read("k");
  EXPECT_FALSE(n.reply(r2).found);
  EXPECT_GT(n.reply(r2).version, created) << "a deleted key keeps the version of its delete";
  EXPECT_EQ(n.store().tombstones().at("k"), n.reply(r2).version);

  Token stale = n.Prepare(Req(kT1, {{"k", 0}}, {}, false, /*read_only_tx=*/true));
  EXPECT_EQ(n.reply(stale).vote, Vote::kNo) << "absent, created, deleted validated as unchanged";
  EXPECT_NE(n.reply(stale).detail.find("stale read"), std::string::npos);
  // The version Read returned with found=false validates.
  Token fresh = n.Prepare(Req(kT3, {{"k", n.reply(r2).version}}, {}, false, /*read_only_tx=*/true));
  EXPECT_EQ(n.reply(fresh).vote, Vote::kReadOnly);
}

TEST(ParticipantCoreTest, TombstoneSurvivesReplayAndRecreatingTheKeyGetsAHigherVersion) {
  Node n;
  Seed(n, "k", "v");
  n.Prepare(Req(kT1, {}, {Del("k")}));
  n.Sync();
  n.Commit(kT1);
  n.Sync();
  Version deleted = n.store().tombstones().at("k");
  ASSERT_TRUE(n.Crash(/*keep_store=*/false).ok());
  Token r = n.Read("k");
  EXPECT_FALSE(n.reply(r).found);
  EXPECT_EQ(n.reply(r).version, deleted);
  Version again = Seed(n, "k", "w");
  EXPECT_GT(again, deleted);
  EXPECT_EQ(n.store().tombstones().count("k"), 0u);
}

TEST(ParticipantCoreTest, OnePhaseCommitIsOneForcedRecordAndYesMeansCommitted) {
  Node n;
  Seed(n, "x", "0");
  size_t logged = n.log_size();
  Version v = n.store().data().at("x").first;
  Token p = n.Prepare(Req(kT1, {{"x", v}}, {Put("x", "1"), Put("y", "1")}, /*one_phase=*/true));
  EXPECT_FALSE(n.Replied(p));
  ASSERT_EQ(n.unsynced().size(), 1u);
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kCommit);
  auto rec = DecodeCommit(n.unsynced()[0].payload);
  ASSERT_TRUE(rec.ok());
  EXPECT_TRUE(rec->one_phase);
  EXPECT_EQ(rec->writes.size(), 2u);
  Token r = n.Read("x");
  EXPECT_FALSE(n.Replied(r)) << "read of a key being committed waits";
  n.Sync();
  EXPECT_EQ(n.log_size(), logged + 1);
  EXPECT_EQ(n.reply(p).vote, Vote::kYes);
  EXPECT_EQ(n.reply(r).value, "1");
  EXPECT_EQ(n.store().data().at("y").second, "1");
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
}

TEST(ParticipantCoreTest, OnePhaseRefusedThenDuplicatedStaysRefused) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "held")}));
  n.Sync();
  Token p = n.Prepare(Req(kT2, {}, {Put("k", "2")}, true));
  EXPECT_EQ(n.reply(p).vote, Vote::kNo);
  n.Abort(kT1);
  Token dup = n.Prepare(Req(kT2, {}, {Put("k", "2")}, true));
  EXPECT_EQ(n.reply(dup).vote, Vote::kNo)
      << "a duplicate must not commit what the client was told aborted";
  EXPECT_EQ(n.store().data().count("k"), 0u);
}

TEST(ParticipantCoreTest, OnePhaseWithoutWritesCommitsWithoutLogging) {
  Node n;
  Token p = n.Prepare(Req(kT1, {{"k", 0}}, {}, true));
  ASSERT_EQ(n.unsynced().size(), 1u);
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kEpoch);
  n.Sync();
  EXPECT_EQ(n.reply(p).vote, Vote::kYes);
  Token q = n.Prepare(Req(kT2, {{"k", 0}}, {}, true));
  EXPECT_EQ(n.reply(q).vote, Vote::kYes);
  EXPECT_TRUE(n.unsynced().empty());
}

// --- epochs ----------------------------------------------------------------------------

TEST(ParticipantCoreTest, OlderEpochIsRefusedWithStaleEpoch) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("a", "1")}, false, false, /*epoch=*/5));
  n.Sync();
  Token p = n.Prepare(Req(kT2, {}, {Put("b", "1")}, false, false, 4));
  EXPECT_EQ(n.reply(p).error, ErrorCode::kStaleEpoch);
  Token c = n.Commit(kT1, 4);
  EXPECT_EQ(n.reply(c).error, ErrorCode::kStaleEpoch);
  Token a = n.Abort(kT1, 3);
  EXPECT_EQ(n.reply(a).error, ErrorCode::kStaleEpoch);
  EXPECT_EQ(n.core().stats().in_flight, 1u);
}

TEST(ParticipantCoreTest, RaisedEpochIsLoggedAndTheReplyWaitsForIt) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("a", "1")}, false, false, 1));
  n.Sync();
  Token a = n.Abort(kT3, 2);  // unknown tx, but the epoch rises
  EXPECT_FALSE(n.Replied(a)) << "the reply reveals the new epoch: it waits for the EPOCH record";
  ASSERT_EQ(n.unsynced().size(), 1u);
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kEpoch);
  n.Sync();
  EXPECT_EQ(n.reply(a).error, ErrorCode::kOk);
  EXPECT_EQ(n.core().epoch(), 2);
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  EXPECT_EQ(n.core().epoch(), 2);
  Token old = n.Commit(kT1, 1);
  EXPECT_EQ(n.reply(old).error, ErrorCode::kStaleEpoch);
}

// AdoptEpoch (coordinator fencing): one coordinator per epoch.
TEST(ParticipantCoreTest, AdoptEpochGrantsEachEpochToOneCoordinatorOnly) {
  Node n;
  Token a = n.AdoptEpoch(3, "c0");
  EXPECT_FALSE(n.Replied(a)) << "acked only once EPOCH 3 is durable";
  n.Sync();
  EXPECT_EQ(n.reply(a).error, ErrorCode::kOk);
  EXPECT_EQ(n.core().epoch(), 3);
  // A retry by the same coordinator is acked; anyone else gets STALE_EPOCH.
  EXPECT_EQ(n.reply(n.AdoptEpoch(3, "c0")).error, ErrorCode::kOk);
  EXPECT_EQ(n.reply(n.AdoptEpoch(3, "c1")).error, ErrorCode::kStaleEpoch);
  EXPECT_EQ(n.reply(n.AdoptEpoch(2, "c1")).error, ErrorCode::kStaleEpoch);
  Token b = n.AdoptEpoch(4, "c1");
  n.Sync();
  EXPECT_EQ(n.reply(b).error, ErrorCode::kOk);
  EXPECT_EQ(n.reply(n.AdoptEpoch(4, "c0")).error, ErrorCode::kStaleEpoch);
  // An epoch raised by a stamped call has no known owner: refused to all.
  n.Abort(kT3, 5);
  n.Sync();
  EXPECT_EQ(n.reply(n.AdoptEpoch(5, "c1")).error, ErrorCode::kStaleEpoch);
  // After a restart the owner is forgotten: equal is refused, newer adopted.
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  EXPECT_EQ(n.core().epoch(), 5);
  EXPECT_EQ(n.reply(n.AdoptEpoch(5, "c1")).error, ErrorCode::kStaleEpoch);
  Token c = n.AdoptEpoch(6, "c1");
  n.Sync();
  EXPECT_EQ(n.reply(c).error, ErrorCode::kOk);
  EXPECT_EQ(n.reply(n.AdoptEpoch(0, "c1")).error, ErrorCode::kBadArgument);
}

// The owner of an adopted epoch is persisted with it (EPOCH record, then the
// checkpoint): a restarted participant still grants the epoch to that
// coordinator's retry and to nobody else, and a refusal names the current
// epoch and its owner (the coordinator's HaCore uses them to skip an epoch
// nobody can have established; coordinator/README.md "Skipping an epoch
// nobody can establish").
TEST(ParticipantCoreTest, AdoptedEpochOwnerSurvivesRestartAndCheckpointAndRefusalsNameIt) {
  Node n;
  Token a = n.AdoptEpoch(3, "c0");
  n.Sync();
  ASSERT_EQ(n.reply(a).error, ErrorCode::kOk);
  const Reply& refused = n.reply(n.AdoptEpoch(3, "c1"));
  EXPECT_EQ(refused.error, ErrorCode::kStaleEpoch);
  EXPECT_EQ(refused.current_epoch, 3);
  EXPECT_EQ(refused.epoch_owner, "c0");
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  EXPECT_EQ(n.core().epoch(), 3);
  EXPECT_EQ(n.reply(n.AdoptEpoch(3, "c0")).error, ErrorCode::kOk)
      << "the owner's retry after a restart";
  const Reply& again = n.reply(n.AdoptEpoch(3, "c1"));
  EXPECT_EQ(again.error, ErrorCode::kStaleEpoch);
  EXPECT_EQ(again.epoch_owner, "c0");
  // Past a checkpoint that truncated the EPOCH record.
  n.TakeCheckpoint();
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  EXPECT_EQ(n.reply(n.AdoptEpoch(3, "c0")).error, ErrorCode::kOk) << "owner from the checkpoint";
  EXPECT_EQ(n.reply(n.AdoptEpoch(3, "c1")).error, ErrorCode::kStaleEpoch);
  // A stamped call at a newer epoch: owner unknown, reported empty.
  n.Commit(kT1, 4);
  n.Sync();
  const Reply& unknown = n.reply(n.AdoptEpoch(4, "c0"));
  EXPECT_EQ(unknown.error, ErrorCode::kStaleEpoch);
  EXPECT_EQ(unknown.current_epoch, 4);
  EXPECT_EQ(unknown.epoch_owner, "");
  const Reply& older = n.reply(n.Commit(kT1, 2));
  EXPECT_EQ(older.error, ErrorCode::kStaleEpoch);
  EXPECT_EQ(older.current_epoch, 4);
  EXPECT_EQ(n.reply(n.AdoptEpoch(3, std::string(kCoordinatorAddressBytesMax + 1, 'x'))).error,
            ErrorCode::kBadArgument);
}

// Epoch bounds (common/types.h kEpochJumpMax): one forged AdoptEpoch(10^15)
// must not fence every coordinator out for good. It is refused naming the
// bound, nothing is logged, and the real coordinator's next epoch is still
// granted; the same for a stamped call. Near INT64_MAX nothing overflows.
TEST(ParticipantCoreTest, AdoptEpochFarAboveTheCurrentOneIsRefusedAndNothingPersisted) {
  Node n;
  Token a = n.AdoptEpoch(3, "c0");
  n.Sync();
  ASSERT_EQ(n.reply(a).error, ErrorCode::kOk);
  const size_t log_size = n.log_size();

  const Reply& forged = n.reply(n.AdoptEpoch(1'000'000'000'000'000, "127.0.0.1:1"));
  EXPECT_EQ(forged.error, ErrorCode::kBadArgument);
  EXPECT_NE(forged.message.find("kEpochJumpMax (1000000)"), std::string::npos) << forged.message;
  EXPECT_EQ(n.core().epoch(), 3);
  EXPECT_TRUE(n.unsynced().empty()) << "no EPOCH record for a refused epoch";
  EXPECT_EQ(n.core().stats().epoch_jump_refusals, 1u);
  // Stamped calls far ahead are refused the same way, before anything else.
  EXPECT_EQ(n.reply(n.Prepare(Req(kT1, {}, {Put("a", "1")}, false, false,
                                  /*epoch=*/3 + kEpochJumpMax + 1)))
                .error,
            ErrorCode::kBadArgument);
  EXPECT_EQ(n.reply(n.Commit(kT2, std::numeric_limits<Epoch>::max())).error,
            ErrorCode::kBadArgument);
  EXPECT_EQ(n.reply(n.Abort(kT3, std::numeric_limits<Epoch>::max())).error,
            ErrorCode::kBadArgument);
  EXPECT_TRUE(n.unsynced().empty());
  EXPECT_EQ(n.core().epoch(), 3);
  EXPECT_EQ(n.core().stats().epoch_jump_refusals, 4u);

  // The real coordinators go on: the owner's retry, the next epoch, and a
  // jump of exactly the bound.
  EXPECT_EQ(n.reply(n.AdoptEpoch(3, "c0")).error, ErrorCode::kOk);
  Token next = n.AdoptEpoch(4, "c1");
  n.Sync();
  EXPECT_EQ(n.reply(next).error, ErrorCode::kOk);
  Token far = n.AdoptEpoch(4 + kEpochJumpMax, "c0");
  n.Sync();
  EXPECT_EQ(n.reply(far).error, ErrorCode::kOk);
  EXPECT_EQ(n.core().epoch(), 4 + kEpochJumpMax);
  EXPECT_GT(n.log_size(), log_size);
  // Survives a restart with the old epoch, and a forged one stays refused.
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  EXPECT_EQ(n.core().epoch(), 4 + kEpochJumpMax);
  EXPECT_EQ(n.reply(n.AdoptEpoch(1'000'000'000'000'000, "x")).error, ErrorCode::kBadArgument);
}

TEST(ParticipantCoreTest, EpochsNearTheTopOfTheRangeDoNotOverflow) {
  Node n;
  constexpr Epoch kMax = std::numeric_limits<Epoch>::max();
  // Reached one bounded step at a time would take 9 * 10^12 failovers; a
  // replayed EPOCH record puts the participant there at once.
  n.log().push_back({static_cast<uint8_t>(RecordType::kEpoch), EncodeEpoch({kMax - 2, "c0"})});
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  ASSERT_EQ(n.core().epoch(), kMax - 2);
  Token a = n.AdoptEpoch(kMax, "c0");
  n.Sync();
  EXPECT_EQ(n.reply(a).error, ErrorCode::kOk);
  EXPECT_EQ(n.core().epoch(), kMax);
  EXPECT_EQ(n.reply(n.AdoptEpoch(kMax, "c1")).error, ErrorCode::kStaleEpoch);
  EXPECT_EQ(n.reply(n.Commit(kT1, 0)).error, ErrorCode::kStaleEpoch);
}

TEST(ParticipantCoreTest, AdoptedEpochAsksAboutTransactionsPreparedUnderAnOlderOneSoon) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("a", "1")}, false, false, /*epoch=*/1));
  n.Sync();
  n.Tick(100);
  EXPECT_TRUE(n.sent().empty()) << "normally asked only after decision_query_after_ms";
  Token a = n.AdoptEpoch(2, "c1");
  n.Sync();
  EXPECT_EQ(n.reply(a).error, ErrorCode::kOk);
  n.Tick(kQueryAfterEpochChangeMs);
  ASSERT_EQ(n.sent().size(), 1u);
  EXPECT_EQ(n.sent()[0].txid, kT1);
  EXPECT_EQ(n.sent()[0].epoch, 1);
}

// --- NO votes: the cause is typed, the wire reason follows from it --------------------

TEST(ParticipantCoreTest, PrepareNoVoteOnReadLockConflictNamesLockConflict) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  Token p = n.Prepare(Req(kT2, {{"k", 0}}, {Put("j", "2")}));
  ASSERT_TRUE(n.Replied(p));
  EXPECT_EQ(n.reply(p).vote, Vote::kNo);
  EXPECT_EQ(n.reply(p).no_cause, NoVoteCause::kLockConflict);
  EXPECT_EQ(WireAbortReason(n.reply(p).no_cause), AbortReason::kConflict);
}

TEST(ParticipantCoreTest, PrepareNoVoteOnStaleReadNamesStaleReadNotLockConflict) {
  Node n;
  Version v1 = Seed(n, "k", "a");
  Seed(n, "k", "b");
  // The detail of a stale read is free text; only no_cause classifies it.
  Token p = n.Prepare(Req(kT1, {{"k", v1}}, {Put("w", "1")}));
  ASSERT_TRUE(n.Replied(p));
  EXPECT_EQ(n.reply(p).no_cause, NoVoteCause::kStaleRead);
  EXPECT_EQ(WireAbortReason(n.reply(p).no_cause), AbortReason::kConflict);
}

TEST(ParticipantCoreTest, DuplicatePrepareAfterNoVoteNamesAlreadyAborted) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  n.Prepare(Req(kT2, {}, {Put("k", "2")}));  // NO: lock conflict, remembered
  n.Commit(kT1);
  n.Sync();
  Token again = n.Prepare(Req(kT2, {}, {Put("k", "2")}));
  ASSERT_TRUE(n.Replied(again));
  EXPECT_EQ(n.reply(again).vote, Vote::kNo);
  EXPECT_EQ(n.reply(again).no_cause, NoVoteCause::kAlreadyAborted);
  EXPECT_EQ(WireAbortReason(n.reply(again).no_cause), AbortReason::kConflict);
}

TEST(ParticipantCoreTest, AbortBeforePrepareIsDurableVotesNoAbortedBeforeVoteWithReasonTimeout) {
  Node n;
  Token p = n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  EXPECT_FALSE(n.Replied(p));
  n.Abort(kT1);
  n.Sync();
  ASSERT_TRUE(n.Replied(p));
  EXPECT_EQ(n.reply(p).vote, Vote::kNo);
  EXPECT_EQ(n.reply(p).no_cause, NoVoteCause::kAbortedBeforeVote);
  EXPECT_EQ(WireAbortReason(n.reply(p).no_cause), AbortReason::kTimeout);
}

TEST(ParticipantCoreTest, EveryNoVoteCauseHasANameAndAWireReason) {
  for (NoVoteCause c :
       {NoVoteCause::kLockConflict, NoVoteCause::kStaleRead, NoVoteCause::kStoreReadFailed,
        NoVoteCause::kAlreadyAborted, NoVoteCause::kAbortedBeforeVote}) {
    EXPECT_STRNE(NoVoteCauseName(c), "unknown");
    const int wire = static_cast<int>(WireAbortReason(c));
    EXPECT_TRUE(wire == static_cast<int>(AbortReason::kConflict) ||
                wire == static_cast<int>(AbortReason::kTimeout));
  }
}

// --- in doubt: whom to ask, whose answer counts (QueryDecisionMsg) ---------------------

// A transaction prepared under `epoch`, overdue: the core has just asked the
// coordinator named in its PREPARE (returned).
QueryDecisionMsg PrepareAndLetItBecomeInDoubt(Node& n, Epoch epoch) {
  CoreOptions o;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}, false, false, epoch));
  n.Sync();
  n.sent().clear();
  n.Tick(o.decision_query_after_ms);
  EXPECT_EQ(n.sent().size(), 1u);
  return n.sent().empty() ? QueryDecisionMsg{} : n.sent().back();
}

DecisionAnswer Unreachable(std::string hint = "") {
  DecisionAnswer a;
  a.primary_hint = std::move(hint);
  return a;
}
DecisionAnswer Answered(Decision d) {
  DecisionAnswer a;
  a.reached = true;
  a.decision = d;
  return a;
}

TEST(ParticipantCoreTest, InDoubtStep1AsksTheCoordinatorNamedInThePrepare) {
  Node n;
  QueryDecisionMsg m = PrepareAndLetItBecomeInDoubt(n, 3);
  EXPECT_EQ(m.kind, QueryDecisionMsg::Kind::kAsk);
  EXPECT_EQ(m.txid, kT1);
  EXPECT_EQ(m.coordinator, "127.0.0.1:9");
  EXPECT_EQ(m.epoch, 3);
  EXPECT_FALSE(m.fall_back);
}

TEST(ParticipantCoreTest, InDoubtStep1DecisionFromTheNamedCoordinatorIsTaken) {
  Node n;
  QueryDecisionMsg m = PrepareAndLetItBecomeInDoubt(n, 1);
  n.sent().clear();
  n.core().OnDecisionAnswer(m, Answered(Decision::kCommit), n.now);
  n.Drain();
  EXPECT_TRUE(n.sent().empty()) << "a decision needs no fall-back";
  n.Sync();
  EXPECT_EQ(n.store().data().at("k").second, "1");
}

TEST(ParticipantCoreTest, InDoubtStep2UnreachableNamedCoordinatorStartsTheSearchForAPrimary) {
  Node n;
  QueryDecisionMsg m = PrepareAndLetItBecomeInDoubt(n, 2);
  n.sent().clear();
  n.core().OnDecisionAnswer(m, Unreachable("10.0.0.2:7"), n.now);
  n.Drain();
  ASSERT_EQ(n.sent().size(), 1u);
  const QueryDecisionMsg& find = n.sent()[0];
  EXPECT_EQ(find.kind, QueryDecisionMsg::Kind::kFindPrimary);
  EXPECT_EQ(find.txid, kT1);
  EXPECT_EQ(find.coordinator, "127.0.0.1:9") << "the one that could not answer is skipped";
  EXPECT_EQ(find.epoch, 2);
  EXPECT_EQ(find.primary_hint, "10.0.0.2:7");
}

TEST(ParticipantCoreTest, InDoubtStep2UnknownFromTheNamedCoordinatorStartsTheSearchForAPrimary) {
  Node n;
  QueryDecisionMsg m = PrepareAndLetItBecomeInDoubt(n, 2);
  n.sent().clear();
  n.core().OnDecisionAnswer(m, Answered(Decision::kUnknown), n.now);
  n.Drain();
  ASSERT_EQ(n.sent().size(), 1u);
  EXPECT_EQ(n.sent()[0].kind, QueryDecisionMsg::Kind::kFindPrimary);
  EXPECT_EQ(n.sent()[0].primary_hint, "");
  EXPECT_EQ(n.core().stats().in_flight, 1u) << "UNKNOWN decides nothing";
}

TEST(ParticipantCoreTest, InDoubtStep3AsksOnlyAPrimaryAtTheTransactionsEpochOrLater) {
  Node n;
  PrepareAndLetItBecomeInDoubt(n, 5);
  n.sent().clear();
  n.core().OnCoordinatorStatus(kT1, "backup:1", NodeRole::kBackup, 7, n.now);
  n.core().OnCoordinatorStatus(kT1, "starting:1", NodeRole::kStarting, 7, n.now);
  n.core().OnCoordinatorStatus(kT1, "deposed:1", NodeRole::kPrimary, 4, n.now);
  n.Drain();
  EXPECT_TRUE(n.sent().empty())
      << "a backup, a starting primary and a primary at an older epoch may not answer";
  n.core().OnCoordinatorStatus(kT1, "same:1", NodeRole::kPrimary, 5, n.now);
  n.core().OnCoordinatorStatus(kT1, "later:1", NodeRole::kPrimary, 6, n.now);
  n.Drain();
  ASSERT_EQ(n.sent().size(), 2u);
  for (const QueryDecisionMsg& ask : n.sent()) {
    EXPECT_EQ(ask.kind, QueryDecisionMsg::Kind::kAsk);
    EXPECT_TRUE(ask.fall_back);
    EXPECT_EQ(ask.txid, kT1);
  }
  EXPECT_EQ(n.sent()[0].coordinator, "same:1");
  EXPECT_EQ(n.sent()[1].coordinator, "later:1");
}

TEST(ParticipantCoreTest, InDoubtStep3FallBackDecisionIsTakenAndAFailedFallBackGoesNoFurther) {
  Node n;
  PrepareAndLetItBecomeInDoubt(n, 1);
  n.sent().clear();
  n.core().OnCoordinatorStatus(kT1, "primary:1", NodeRole::kPrimary, 2, n.now);
  n.Drain();
  ASSERT_EQ(n.sent().size(), 1u);
  QueryDecisionMsg ask = n.sent()[0];
  n.sent().clear();
  n.core().OnDecisionAnswer(ask, Unreachable("elsewhere:1"), n.now);
  n.core().OnDecisionAnswer(ask, Answered(Decision::kUnknown), n.now);
  n.Drain();
  EXPECT_TRUE(n.sent().empty()) << "no search from a fall-back's failure";
  n.core().OnDecisionAnswer(ask, Answered(Decision::kAbort), n.now);
  n.Drain();
  EXPECT_EQ(n.core().stats().in_flight, 0u);
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
}

TEST(ParticipantCoreTest, InDoubtAnswersAfterTheDecisionAskNobody) {
  Node n;
  QueryDecisionMsg m = PrepareAndLetItBecomeInDoubt(n, 1);
  n.Commit(kT1);
  n.Sync();
  n.sent().clear();
  n.core().OnDecisionAnswer(m, Unreachable(), n.now);
  n.core().OnCoordinatorStatus(kT1, "primary:1", NodeRole::kPrimary, 9, n.now);
  n.Drain();
  EXPECT_TRUE(n.sent().empty());
}

// --- recovery --------------------------------------------------------------------------

TEST(ParticipantCoreTest, CrashBeforePrepareIsDurableForgetsTheTransaction) {
  Node n;
  Token p = n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  EXPECT_FALSE(n.Replied(p));
  ASSERT_TRUE(n.Crash(true).ok());
  EXPECT_EQ(n.core().stats().in_flight, 0u);
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
  Token r = n.Read("k");
  EXPECT_TRUE(n.Replied(r));
}

TEST(ParticipantCoreTest, CrashAfterPrepareIsDurableLeavesItInDoubtAskingTheCoordinator) {
  CoreOptions o;
  o.read_wait_ms = 100;
  o.decision_query_interval_ms = 500;
  Node n(o);
  n.Prepare(Req(kT1, {{"r", 0}}, {Put("k", "1")}));
  n.Sync();
  ASSERT_TRUE(n.Crash(true).ok());
  EXPECT_EQ(n.core().stats().in_flight, 1u);
  auto doubt = n.core().ListInDoubt(n.now);
  ASSERT_EQ(doubt.size(), 1u);
  EXPECT_EQ(doubt[0].txid, kT1);
  EXPECT_EQ(doubt[0].coordinator, "127.0.0.1:9");
  // Its locks are back: a conflicting prepare votes NO, a read of k waits.
  Token w = n.Prepare(Req(kT2, {}, {Put("r", "2")}));
  EXPECT_EQ(n.reply(w).vote, Vote::kNo);
  Token r = n.Read("k");
  EXPECT_FALSE(n.Replied(r));
  Token free_read = n.Read("other");  // keys not in doubt are served meanwhile
  EXPECT_TRUE(n.Replied(free_read));
  // Asked at the first tick, then every interval while the answer is UNKNOWN.
  n.Tick(1);
  ASSERT_EQ(n.sent().size(), 1u);
  EXPECT_EQ(n.sent()[0].txid, kT1);
  n.Decide(kT1, Decision::kUnknown);
  n.Tick(100);
  EXPECT_EQ(n.reply(r).error, ErrorCode::kTimeout);
  EXPECT_EQ(n.sent().size(), 1u);
  n.Tick(400);
  EXPECT_EQ(n.sent().size(), 2u);
  EXPECT_EQ(n.core().ListInDoubt(n.now)[0].age_ms, 501u);
  n.Decide(kT1, Decision::kCommit);
  ASSERT_EQ(n.unsynced().size(), 1u);
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kCommit);
  n.Sync();
  EXPECT_EQ(n.store().data().at("k").second, "1");
  EXPECT_TRUE(n.core().ListInDoubt(n.now).empty());
  n.Tick(1000);
  EXPECT_EQ(n.sent().size(), 2u) << "no more questions once decided";
  n.Decide(kT1, Decision::kAbort);  // a late, contradictory answer changes nothing
  EXPECT_EQ(n.store().data().at("k").second, "1");
}

TEST(ParticipantCoreTest, InDoubtTransactionResolvedAbortReleasesItsLocks) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  ASSERT_TRUE(n.Crash(true).ok());
  n.Tick(1);
  n.Decide(kT1, Decision::kAbort);
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
  EXPECT_EQ(n.unsynced().size(), 1u);
  n.Sync();
  ASSERT_TRUE(n.Crash(true).ok());
  EXPECT_EQ(n.core().stats().in_flight, 0u) << "the ABORT record settles it on the next replay";
}

TEST(ParticipantCoreTest, PreparedTransactionWithoutDecisionIsAskedAfterTheQueryDelay) {
  CoreOptions o;
  o.decision_query_after_ms = 2000;
  Node n(o);
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  n.Tick(1999);
  EXPECT_TRUE(n.sent().empty());
  EXPECT_TRUE(n.core().ListInDoubt(n.now).empty());
  n.Tick(1);
  ASSERT_EQ(n.sent().size(), 1u);
  EXPECT_EQ(n.core().stats().in_doubt, 1u);
  n.Commit(kT1);
  n.Sync();
  EXPECT_EQ(n.core().stats().in_doubt, 0u);
}

TEST(ParticipantCoreTest, CommitForInDoubtTransactionFromTheCoordinatorCompletesIt) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  ASSERT_TRUE(n.Crash(false).ok());
  Token c = n.Commit(kT1);
  n.Sync();
  EXPECT_EQ(n.reply(c).error, ErrorCode::kOk);
  EXPECT_EQ(n.store().data().at("k").second, "1");
}

TEST(ParticipantCoreTest, CrashAfterCommitIsDurableReappliesOnReplayIdempotently) {
  for (bool keep_store : {true, false}) {
    Node n;
    Seed(n, "k", "0");
    n.Prepare(Req(kT1, {}, {Put("k", "1"), Put("j", "1")}));
    n.Sync();
    n.Commit(kT1);
    n.Sync();
    auto before = n.store().data();
    // A later commit must not be undone by replaying the earlier one.
    n.Prepare(Req(kT2, {}, {Put("k", "2")}));
    n.Sync();
    n.Commit(kT2);
    n.Sync();
    auto expected = n.store().data();
    ASSERT_TRUE(n.Crash(keep_store).ok());
    EXPECT_EQ(n.store().data(), expected) << "keep_store=" << keep_store;
    EXPECT_EQ(n.core().stats().in_flight, 0u);
    EXPECT_EQ(n.core().stats().locked_keys, 0u);
    // The commit counter resumes above every replayed version.
    Token p = n.Prepare(Req(kT3, {}, {Put("z", "1")}, true));
    n.Sync();
    EXPECT_EQ(n.reply(p).vote, Vote::kYes);
    EXPECT_GT(n.store().data().at("z").first, expected.at("k").first);
    (void)before;
  }
}

TEST(ParticipantCoreTest, CrashWithCommitNotYetDurableIsInDoubtAgain) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  Token c = n.Commit(kT1);
  ASSERT_TRUE(n.Crash(true).ok());
  EXPECT_FALSE(n.Replied(c));
  EXPECT_EQ(n.store().data().count("k"), 0u);
  EXPECT_EQ(n.core().ListInDoubt(n.now).size(), 1u);
  Token again = n.Commit(kT1);  // the coordinator re-sends COMMIT
  n.Sync();
  EXPECT_EQ(n.reply(again).error, ErrorCode::kOk);
  EXPECT_EQ(n.store().data().at("k").second, "1");
}

TEST(ParticipantCoreTest, CrashWithAbortRecordLostIsInDoubtAndTheLaterPrepareWinsItsLocks) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  n.Abort(kT1);  // ABORT not forced ...
  Token p2 = n.Prepare(Req(kT2, {{"k", 0}}, {Put("k", "2")}));
  // ... T2's PREPARE is synced, but pretend the ABORT record before it was not
  // written (its write lost): drop it from the log by hand.
  n.Sync();
  EXPECT_EQ(n.reply(p2).vote, Vote::kYes);
  auto& log = n.log();
  for (size_t i = 0; i < log.size(); ++i) {
    if (log[i].first == static_cast<uint8_t>(RecordType::kAbort)) {
      log.erase(log.begin() + static_cast<long>(i));
      break;
    }
  }
  ASSERT_TRUE(n.Crash(true).ok());
  // T1's later conflicting PREPARE proves T1 aborted; T2 holds k.
  EXPECT_EQ(n.core().stats().replay_inferred_aborts, 1u);
  auto doubt = n.core().ListInDoubt(n.now);
  ASSERT_EQ(doubt.size(), 1u);
  EXPECT_EQ(doubt[0].txid, kT2);
  n.Commit(kT2);
  n.Sync();
  EXPECT_EQ(n.store().data().at("k").second, "2");
}

TEST(ParticipantCoreTest, OnePhaseCommitSurvivesCrashOnlyOnceDurable) {
  Node n;
  Token p = n.Prepare(Req(kT1, {}, {Put("k", "1")}, true));
  ASSERT_TRUE(n.Crash(false).ok());
  EXPECT_FALSE(n.Replied(p));
  EXPECT_EQ(n.store().data().count("k"), 0u);
  Token q = n.Prepare(Req(kT2, {}, {Put("k", "2")}, true));
  n.Sync();
  EXPECT_EQ(n.reply(q).vote, Vote::kYes);
  ASSERT_TRUE(n.Crash(false).ok());
  EXPECT_EQ(n.store().data().at("k").second, "2");
  Token dup = n.Prepare(Req(kT2, {}, {Put("k", "2")}, true));
  EXPECT_EQ(n.reply(dup).vote, Vote::kYes) << "recorded outcome after replay";
  EXPECT_TRUE(n.unsynced().empty());
}

// --- checkpoints ---------------------------------------------------------------

TEST(ParticipantCoreTest,
     CheckpointCoversDurableRecordsAndRetainsThePrepareOfEveryPreparedTransaction) {
  Node n;
  Seed(n, "a", "1");                          // LSN 1 EPOCH 1, LSN 2 COMMIT
  n.Prepare(Req(kT3, {}, {Put("b", "T3")}));  // LSN 3
  n.Prepare(Req(kT1, {}, {Put("c", "T1")}));  // LSN 4: stays prepared
  n.Sync();
  n.Commit(kT3);  // LSN 5
  n.Sync();
  n.Prepare(Req(kT2, {}, {Put("d", "T2")}));  // LSN 6: not durable yet
  Checkpoint cp = n.TakeCheckpoint();
  EXPECT_EQ(cp.lsn, 6u) << "everything durable and applied";
  EXPECT_EQ(cp.retain_from, 4u) << "T1's PREPARE";
  EXPECT_EQ(cp.commit_counter, n.core().stats().commit_counter);
  EXPECT_EQ(cp.epoch, 1);
  n.Sync();
  n.Commit(kT1);
  n.Sync();
  EXPECT_EQ(n.TakeCheckpoint().retain_from, 6u) << "T2's PREPARE is now the oldest needed";
}

// A transaction in doubt for long (its coordinator gone) must not pin the
// WAL: its PREPARE is copied near the head, the checkpoint's retain_from moves
// past the first copy once the copy is durable, and a crash after the
// truncation still restores the transaction, locks and all.
TEST(ParticipantCoreTest, APrepareFarBehindIsCarriedForwardSoTheWalCanBeTruncated) {
  CoreOptions o;
  o.prepare_relog_lsn_gap = 8;
  Node n(o);
  n.Prepare(Req(kT1, {}, {Put("held", "T1")}));  // stays prepared: no decision comes
  n.Sync();
  const uint64_t first = n.TakeCheckpoint().retain_from;
  for (int i = 0; i < 12; ++i) Seed(n, "k" + std::to_string(i), "v");
  EXPECT_EQ(n.TakeCheckpoint().retain_from, first) << "only the first copy so far";
  n.Tick(1);  // the copy is appended, not durable yet
  ASSERT_EQ(n.unsynced().size(), 1u);
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kPrepare);
  EXPECT_EQ(n.TakeCheckpoint().retain_from, first) << "the copy is not durable yet";
  EXPECT_EQ(n.core().stats().prepares_relogged, 0u);
  n.Sync();
  EXPECT_EQ(n.core().stats().prepares_relogged, 1u);
  const Checkpoint cp = n.TakeCheckpoint();
  EXPECT_GT(cp.retain_from, first + 8) << "the WAL is still pinned by the first PREPARE";
  EXPECT_GT(n.log_base(), first);

  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  ASSERT_EQ(n.core().ListInDoubt(n.now).size(), 1u) << "T1 was lost with the first copy";
  EXPECT_EQ(n.core().ListInDoubt(n.now)[0].txid, kT1);
  Token blocked = n.Prepare(Req(kT2, {}, {Put("held", "T2")}));
  EXPECT_EQ(n.reply(blocked).vote, Vote::kNo) << "T1's lock was not restored";
  n.Decide(kT1, Decision::kCommit);
  n.Sync();
  EXPECT_EQ(n.store().data().at("held").second, "T1");
}

// The WAL keeps only what the checkpoint needs: T3's PREPARE is gone, its
// COMMIT is still there (below the checkpoint), T1's PREPARE is there. After a
// crash the store is as of the checkpoint; records after it are re-applied.
TEST(ParticipantCoreTest,
     RestartFromCheckpointKeepsCommittedWritesInDoubtTransactionsEpochAndVersions) {
  Node n;
  Seed(n, "a", "1", 3);
  Seed(n, "gone", "x", 3);
  n.Prepare(Req(kT3, {}, {Put("b", "T3")}, false, false, /*epoch=*/3));
  n.Prepare(Req(kT1, {}, {Put("c", "T1")}, false, false, 3));
  n.Sync();
  n.Commit(kT3, 3);
  Token del = n.Prepare(Req({7, 9}, {}, {Del("gone")}, /*one_phase=*/true, false, 3));
  n.Sync();
  ASSERT_EQ(n.reply(del).vote, Vote::kYes);
  Checkpoint cp = n.TakeCheckpoint();
  ASSERT_GT(n.log_base(), 1u) << "the EPOCH record and T3's PREPARE are truncated";
  // After the checkpoint: more commits (only in the log) and a new prepare.
  Seed(n, "a", "2", 3);
  n.Prepare(Req(kT2, {}, {Put("d", "T2")}, false, false, 3));
  n.Sync();
  auto live = n.store().data();
  auto tombstones = n.store().tombstones();
  Version counter = n.core().stats().commit_counter;

  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  EXPECT_EQ(n.store().data(), live) << "committed writes after the checkpoint are re-applied";
  EXPECT_EQ(n.store().tombstones(), tombstones);
  EXPECT_EQ(n.core().epoch(), 3) << "the epoch comes from the checkpoint";
  EXPECT_EQ(n.core().stats().commit_counter, counter);
  std::vector<InDoubtInfo> in_doubt = n.core().ListInDoubt(n.now);
  ASSERT_EQ(in_doubt.size(), 2u);
  EXPECT_EQ(in_doubt[0].txid, kT1);
  EXPECT_EQ(in_doubt[1].txid, kT2);
  // T1's writes come from its PREPARE below the checkpoint.
  n.Commit(kT1, 3);
  n.Sync();
  EXPECT_EQ(n.store().data().at("c").second, "T1");
  EXPECT_GT(n.store().data().at("c").first, counter) << "versions never go back";
  EXPECT_LE(cp.retain_from, cp.lsn);
  Token stale = n.Prepare(Req({7, 50}, {}, {Put("x", "1")}, true, false, /*epoch=*/2));
  EXPECT_EQ(n.reply(stale).error, ErrorCode::kStaleEpoch);
}

// tests/sim/README.md KB2b: a one-phase transaction commits, its YES is lost,
// a checkpoint truncates its COMMIT and the participant restarts. The
// client's retry (same txid, same reads) must hear YES (= committed), not a
// NO on its own stale read, and must not be applied again.
TEST(ParticipantCoreTest, OnePhaseRetryAfterCheckpointTruncationAndRestartIsStillCommitted) {
  Node n;
  Version v = Seed(n, "acct", "100");
  PrepareRequest t = Req(kT1, {{"acct", v}}, {Put("acct", "90")}, /*one_phase=*/true);
  Token first = n.Prepare(t);
  n.Sync();
  ASSERT_EQ(n.reply(first).vote, Vote::kYes);
  const Version committed = n.store().data().at("acct").first;
  n.TakeCheckpoint();
  ASSERT_EQ(n.log_size(), 0u) << "the COMMIT is truncated";
  ASSERT_TRUE(n.Crash(/*keep_store=*/false).ok());
  const int applies = n.store().applies();
  Token again = n.Prepare(t);
  ASSERT_TRUE(n.Replied(again));
  EXPECT_EQ(n.reply(again).error, ErrorCode::kOk);
  EXPECT_EQ(n.reply(again).vote, Vote::kYes) << n.reply(again).detail;
  EXPECT_EQ(n.store().applies(), applies) << "not applied again";
  EXPECT_EQ(n.store().data().at("acct").first, committed);
  EXPECT_TRUE(n.unsynced().empty()) << "nothing logged";
}

// The two-phase case: a repeated Prepare of a transaction that committed
// before the checkpoint and restart answers YES from the remembered outcome
// without taking locks or preparing again; a repeated Commit is acked.
TEST(ParticipantCoreTest, TwoPhaseRepeatAfterCheckpointAndRestartAnswersTheRecordedOutcome) {
  Node n;
  PrepareRequest t = Req(kT1, {}, {Put("b", "T1")});
  n.Prepare(t);
  n.Sync();
  n.Commit(kT1);
  n.Sync();
  const Version committed = n.store().data().at("b").first;
  n.TakeCheckpoint();
  ASSERT_TRUE(n.Crash(/*keep_store=*/false).ok());
  Token again = n.Prepare(t);
  EXPECT_EQ(n.reply(again).vote, Vote::kYes);
  EXPECT_TRUE(n.unsynced().empty()) << "not prepared again";
  EXPECT_EQ(n.core().stats().locked_keys, 0u);
  Token commit = n.Commit(kT1);
  EXPECT_EQ(n.reply(commit).error, ErrorCode::kOk);
  EXPECT_EQ(n.store().data().at("b").first, committed) << "not applied again";
  // A refused transaction stays refused across the restart too.
  Token stale = n.Prepare(Req(kT2, {{"b", committed - 1}}, {Put("b", "T2")}, /*one_phase=*/true));
  ASSERT_EQ(n.reply(stale).vote, Vote::kNo);
  n.TakeCheckpoint();
  ASSERT_TRUE(n.Crash(/*keep_store=*/false).ok());
  Token dup = n.Prepare(Req(kT2, {{"b", committed}}, {Put("b", "T2")}, /*one_phase=*/true));
  EXPECT_EQ(n.reply(dup).vote, Vote::kNo) << "the NO is remembered through the checkpoint";
}

// Past outcomes_remembered_max the outcome is forgotten. A retry that votes
// NO but may be that forgotten commit is told "outcome unknown" (kUnknownTx),
// not NO, and is not remembered as aborted; transactions that provably did
// not commit here still get their NO. The watermark survives a restart.
TEST(ParticipantCoreTest, RetryOfAForgottenCommitIsAnsweredOutcomeUnknownNotNo) {
  CoreOptions o;
  o.outcomes_remembered_max = 2;
  Node n(o);
  Version va = Seed(n, "a", "1");
  Version vb = Seed(n, "b", "1");
  PrepareRequest t =
      Req(kT1, {{"a", va}, {"b", vb}}, {Put("a", "0"), Put("b", "2")}, /*one_phase=*/true);
  Token first = n.Prepare(t);
  n.Sync();
  ASSERT_EQ(n.reply(first).vote, Vote::kYes);
  EXPECT_EQ(n.core().stats().forgotten_version, va) << "the first seed is forgotten";
  Seed(n, "c", "1");
  Seed(n, "d", "1");  // T1 is forgotten now
  const Version forgotten = n.core().stats().forgotten_version;
  ASSERT_GE(forgotten, vb + 1);
  n.TakeCheckpoint();
  ASSERT_TRUE(n.Crash(/*keep_store=*/false).ok());
  EXPECT_EQ(n.core().stats().forgotten_version, forgotten) << "carried by the checkpoint";

  const auto before = n.store().data();
  // A first attempt cannot have committed before: its NO stands (the
  // coordinator marks a client's retry, PrepareRequest::is_retry).
  Token first_attempt = n.Prepare(Req(kT3, {{"a", va}, {"b", vb}}, {Put("a", "0"), Put("b", "2")},
                                      /*one_phase=*/true));
  EXPECT_EQ(n.reply(first_attempt).vote, Vote::kNo) << n.reply(first_attempt).message;
  t.is_retry = true;
  Token again = n.Prepare(t);
  EXPECT_EQ(n.reply(again).error, ErrorCode::kUnknownTx) << n.reply(again).message;
  EXPECT_NE(n.reply(again).message.find("stale read"), std::string::npos) << n.reply(again).message;
  EXPECT_EQ(n.store().data(), before);
  EXPECT_EQ(n.core().stats().forgotten_outcome_refusals, 1u);
  Token twice = n.Prepare(t);
  EXPECT_EQ(n.reply(twice).error, ErrorCode::kUnknownTx) << "not remembered as aborted";
  // The coordinator then sends ABORT (dtx-sim --small-tables --seed 221): it
  // is acked, but remembering it would make the client's next retry a NO -
  // "aborted" for what committed here.
  Token abort = n.Abort(kT1);
  EXPECT_EQ(n.reply(abort).error, ErrorCode::kOk) << n.reply(abort).message;
  Token thrice = n.Prepare(t);
  EXPECT_EQ(n.reply(thrice).error, ErrorCode::kUnknownTx)
      << "an ABORT after an unknown-outcome answer is not remembered: " << n.reply(thrice).message;

  // Stale on "a", and it writes "e", never written: it never committed here
  // (it would have written "e"), so a plain NO.
  PrepareRequest partly_req = Req(kT2, {{"a", va}}, {Put("a", "0"), Put("e", "2")}, true);
  partly_req.is_retry = true;
  Token partly = n.Prepare(partly_req);
  EXPECT_EQ(n.reply(partly).vote, Vote::kNo);
  // A read at or above the watermark: any commit of it would be remembered.
  Version vd = n.store().data().at("d").first;
  ASSERT_GE(vd, forgotten);
  PrepareRequest recent_req = Req({7, 9}, {{"d", vd - 1}}, {Put("d", "2")}, true);
  recent_req.is_retry = true;
  Token recent = n.Prepare(recent_req);
  EXPECT_EQ(n.reply(recent).vote, Vote::kNo);
  // A new transaction with current reads commits as usual.
  Token fresh =
      n.Prepare(Req({7, 4}, {{"a", n.store().data().at("a").first}}, {Put("a", "5")}, true));
  n.Sync();
  EXPECT_EQ(n.reply(fresh).vote, Vote::kYes);
}

TEST(ParticipantCoreTest, TwoPhaseCommitBelowTheCheckpointMayLackItsPrepareButNotAbove) {
  Node n;
  n.Prepare(Req(kT3, {}, {Put("b", "T3")}));  // LSN 1 EPOCH, LSN 2 PREPARE: truncated
  n.Prepare(Req(kT1, {}, {Put("c", "T1")}));  // LSN 3, in doubt
  n.Sync();
  n.Commit(kT3);  // LSN 4, below the checkpoint
  n.Sync();
  n.TakeCheckpoint();
  ASSERT_EQ(n.log_base(), 3u);
  ASSERT_TRUE(n.Crash(true).ok());
  EXPECT_EQ(n.store().data().at("b").second, "T3");
  EXPECT_EQ(n.core().ListInDoubt(n.now).size(), 1u);
  // The same log without a checkpoint: the COMMIT at LSN 4 lacks its PREPARE.
  Core fresh({}, &n.store());
  ASSERT_TRUE(fresh.Replay(3, n.log()[0].first, n.log()[0].second).ok());
  Status s = fresh.Replay(4, n.log()[1].first, n.log()[1].second);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST(ParticipantCoreTest, CorruptOrUnknownRecordStopsReplayNamingTheLsn) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  n.log()[1].second.resize(5);
  Status s = n.Crash(true);
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("LSN 2"), std::string::npos) << s.ToString();
  Node m;
  m.log().push_back({77, "x"});
  Status u = m.Crash(true);
  EXPECT_TRUE(u.IsCorruption()) << u.ToString();
  Node c;
  c.log().push_back({static_cast<uint8_t>(RecordType::kCommit), EncodeCommit({kT3, 5, false, {}})});
  EXPECT_TRUE(c.Crash(true).IsCorruption());
}

TEST(ParticipantCoreTest, StoreFailureAfterDurableCommitIsFatal) {
  Node n;
  n.Prepare(Req(kT1, {}, {Put("k", "1")}));
  n.Sync();
  Token c = n.Commit(kT1);
  n.store().FailApplyWith(Status::IOError("disk gone"));
  n.Sync();
  EXPECT_FALSE(n.fatal().ok());
  EXPECT_FALSE(n.Replied(c)) << "never ack a commit that was not applied";
  Token r = n.Read("x");
  EXPECT_EQ(n.reply(r).error, ErrorCode::kUnavailable);
}

TEST(ParticipantCoreTest, SameInputsGiveSameOutputs) {
  auto run = [] {
    Node n;
    std::string trace;
    for (uint64_t i = 0; i < 50; ++i) {
      TxId tx{3, i};
      Token p = n.Prepare(Req(tx, {{"k" + std::to_string(i % 7), 0}},
                              {Put("k" + std::to_string(i % 5), "v")}, i % 3 == 0));
      if (i % 4 == 0) n.Sync();
      if (i % 2 == 0) n.Commit(tx);
      else n.Abort(tx);
      n.Tick(3);
      if (n.Replied(p)) trace += std::to_string(static_cast<int>(n.reply(p).vote));
    }
    n.Sync();
    for (auto& [k, v] : n.store().data()) trace += k + std::to_string(v.first);
    return trace;
  };
  EXPECT_EQ(run(), run());
}

}  // namespace
}  // namespace dtx::participant

// ---- transaction identity (docs/design.md "Transaction identity") -------------------

namespace dtx::participant {
namespace {

constexpr Fingerprint kF1{0x1111, 0x2222};
constexpr Fingerprint kF2{0x3333, 0x4444};

PrepareRequest WithFingerprint(PrepareRequest r, const Fingerprint& f) {
  r.fingerprint = f;
  return r;
}

// PREPARE step, duplicate check: a prepared txid asked to prepare other
// content votes NO (txid reused) and the prepared transaction is untouched:
// it keeps its locks and commits when told.
TEST(ParticipantCoreTest, PrepareOfAPreparedTxidWithAnotherFingerprintIsRefusedAndChangesNothing) {
  Node n;
  Token first = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("a", "1")}), kF1));
  n.Sync();
  ASSERT_EQ(n.reply(first).vote, Vote::kYes);
  Token other = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("b", "2")}), kF2));
  ASSERT_TRUE(n.Replied(other));
  EXPECT_EQ(n.reply(other).vote, Vote::kNo);
  EXPECT_EQ(n.reply(other).no_cause, NoVoteCause::kTxidReused);
  EXPECT_NE(n.reply(other).detail.find("txid reused with different content"), std::string::npos)
      << n.reply(other).detail;
  EXPECT_TRUE(n.unsynced().empty()) << "nothing logged for the refused request";
  EXPECT_EQ(n.core().stats().txid_reused_refusals, 1u);
  // The same content is a duplicate: YES again.
  Token dup = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("a", "1")}), kF1));
  EXPECT_EQ(n.reply(dup).vote, Vote::kYes);
  Token c = n.Commit(kT1);
  n.Sync();
  ASSERT_TRUE(n.Replied(c));
  EXPECT_EQ(n.reply(c).error, ErrorCode::kOk);
  EXPECT_EQ(n.store().data().count("a"), 1u);
  EXPECT_EQ(n.store().data().count("b"), 0u);
}

// A remembered outcome (committed, or aborted by a NO vote) is not given to
// another transaction under the same txid; a PREPARE without a fingerprint
// (an older coordinator) is not checked.
TEST(ParticipantCoreTest, RememberedOutcomeIsNotGivenToAnotherTransactionUnderTheSameTxid) {
  Node n;
  Token t = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("a", "1")}, /*one_phase=*/true), kF1));
  n.Sync();
  ASSERT_EQ(n.reply(t).vote, Vote::kYes);
  Token other = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("b", "2")}, true), kF2));
  EXPECT_EQ(n.reply(other).vote, Vote::kNo);
  EXPECT_EQ(n.reply(other).no_cause, NoVoteCause::kTxidReused);
  EXPECT_EQ(n.store().data().count("b"), 0u);
  Token same = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("a", "1")}, true), kF1));
  EXPECT_EQ(n.reply(same).vote, Vote::kYes);
  Token unchecked = n.Prepare(Req(kT1, {}, {Put("b", "2")}, true));
  EXPECT_EQ(n.reply(unchecked).vote, Vote::kYes) << "no fingerprint: the remembered answer";
  EXPECT_EQ(n.store().data().count("b"), 0u) << "never applied";

  // Aborted by a NO vote (stale read): remembered with its fingerprint too.
  Seed(n, "x", "0");
  Token no = n.Prepare(WithFingerprint(Req(kT2, {{"x", 0}}, {Put("x", "1")}), kF1));
  ASSERT_EQ(n.reply(no).vote, Vote::kNo);
  EXPECT_EQ(n.reply(no).no_cause, NoVoteCause::kStaleRead);
  Token reuse = n.Prepare(WithFingerprint(Req(kT2, {}, {Put("y", "1")}), kF2));
  EXPECT_EQ(n.reply(reuse).no_cause, NoVoteCause::kTxidReused);
}

// Recovery: the PREPARE and one-phase COMMIT records carry the fingerprint,
// so the check holds after a crash.
TEST(ParticipantCoreTest, FingerprintSurvivesACrashInThePrepareAndCommitRecords) {
  Node n;
  Token p = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("a", "1")}), kF1));
  Token one = n.Prepare(WithFingerprint(Req(kT2, {}, {Put("b", "1")}, /*one_phase=*/true), kF1));
  n.Sync();
  ASSERT_EQ(n.reply(p).vote, Vote::kYes);
  ASSERT_EQ(n.reply(one).vote, Vote::kYes);
  ASSERT_TRUE(n.Crash(/*keep_store=*/false).ok());
  for (const TxId& tx : {kT1, kT2}) {
    Token again = n.Prepare(WithFingerprint(Req(tx, {}, {Put("c", "1")}), kF2));
    ASSERT_TRUE(n.Replied(again));
    EXPECT_EQ(n.reply(again).vote, Vote::kNo) << tx.ToString();
    EXPECT_EQ(n.reply(again).no_cause, NoVoteCause::kTxidReused) << tx.ToString();
  }
  // The recovered prepared transaction is still in doubt and commits.
  n.Decide(kT1, Decision::kCommit);
  n.Sync();
  EXPECT_EQ(n.store().data().count("a"), 1u);
  EXPECT_EQ(n.store().data().count("c"), 0u);
}

// A 2PC COMMIT record carries the fingerprint too: replayed after a
// checkpoint truncated the transaction's PREPARE, the outcome is still
// checked. (An outcome known only from the checkpoint is not: records.md.)
TEST(ParticipantCoreTest, TwoPhaseCommitRecordKeepsTheFingerprintWhenThePrepareIsGone) {
  Node n;
  Token p1 = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("a", "1")}), kF1));
  n.Sync();
  Token p3 = n.Prepare(WithFingerprint(Req(kT3, {}, {Put("z", "1")}), kF1));
  n.Sync();
  ASSERT_EQ(n.reply(p1).vote, Vote::kYes);
  ASSERT_EQ(n.reply(p3).vote, Vote::kYes);
  n.Commit(kT1);
  n.Sync();
  // Kept from kT3's PREPARE on: kT1's PREPARE goes, its COMMIT stays.
  n.TakeCheckpoint();
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  Token again = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("c", "1")}), kF2));
  ASSERT_TRUE(n.Replied(again));
  EXPECT_EQ(n.reply(again).vote, Vote::kNo);
  EXPECT_EQ(n.reply(again).no_cause, NoVoteCause::kTxidReused);
}

// A committed outcome known only from a checkpoint has no fingerprint: a
// PREPARE with one cannot be told apart from another transaction under the
// txid, so neither YES (it would commit elsewhere, not here) nor NO (a real
// retry would hear "aborted"): outcome unknown.
TEST(ParticipantCoreTest, CommittedOutcomeFromACheckpointIsUnknownToAPrepareWithAFingerprint) {
  Node n;
  Token p = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("a", "1")}, /*one_phase=*/true), kF1));
  n.Sync();
  ASSERT_EQ(n.reply(p).vote, Vote::kYes);
  n.TakeCheckpoint();  // the COMMIT record goes; the outcome stays, without its fingerprint
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  for (const Fingerprint& f : {kF1, kF2}) {
    Token again = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("a", "1")}, true), f));
    ASSERT_TRUE(n.Replied(again));
    EXPECT_EQ(n.reply(again).error, ErrorCode::kUnknownTx) << n.reply(again).message;
  }
  Token old = n.Prepare(Req(kT1, {}, {Put("a", "1")}, true));  // an older coordinator
  EXPECT_EQ(n.reply(old).vote, Vote::kYes);
  EXPECT_EQ(n.store().data().at("a").first, 1) << "applied once";
}

// In doubt: the QueryDecision carries the transaction's fingerprint, and an
// answer about another transaction under the same txid is not applied.
TEST(ParticipantCoreTest, DecisionAnswerCountsOnlyForTheTransactionAskedAbout) {
  CoreOptions o;
  o.decision_query_after_ms = 100;
  Node n(o);
  Token p = n.Prepare(WithFingerprint(Req(kT1, {}, {Put("a", "1")}), kF1));
  n.Sync();
  ASSERT_EQ(n.reply(p).vote, Vote::kYes);
  n.Tick(200);
  ASSERT_EQ(n.sent().size(), 1u);
  QueryDecisionMsg asked = n.sent()[0];
  EXPECT_EQ(asked.fingerprint, kF1);
  QueryDecisionMsg about_other = asked;
  about_other.fingerprint = kF2;
  n.core().OnDecisionAnswer(about_other, DecisionAnswer{true, Decision::kAbort, ""}, n.now);
  n.Drain();
  EXPECT_EQ(n.core().stats().in_flight, 1u) << "still prepared";
  n.core().OnDecisionAnswer(asked, DecisionAnswer{true, Decision::kCommit, ""}, n.now);
  n.Drain();
  n.Sync();
  EXPECT_EQ(n.core().stats().in_flight, 0u);
  EXPECT_EQ(n.store().data().count("a"), 1u);
}

// --- attempts (docs/design.md "Attempts") -------------------------------------

PrepareRequest Stamped(PrepareRequest r, Attempt a) {
  r.attempt = a;
  r.epoch = a.epoch;
  return r;
}

// The race the 2 s abort hold used to cover (tests/sim/README.md, seed
// 21554): attempt 1 prepared here and was ended by the coordinator, whose
// ABORT is slow; attempt 2 (the client's retry) is prepared here too and
// voted YES; the old ABORT arrives - here, after any delay - and must not
// drop attempt 2, which the coordinator may decide COMMIT.
TEST(ParticipantCoreTest, LateAbortOfAnEarlierAttemptLeavesTheNewerAttemptPrepared) {
  Node n;
  Token p1 = n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 1}));
  n.Sync();
  ASSERT_EQ(n.reply(p1).vote, Vote::kYes);
  Token p2 = n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 2}));
  EXPECT_FALSE(n.Replied(p2)) << "the YES for attempt 2 waits for its PREPARE record";
  ASSERT_EQ(n.unsynced().size(), 1u);
  EXPECT_EQ(n.unsynced()[0].type, RecordType::kPrepare);
  n.Sync();
  ASSERT_EQ(n.reply(p2).vote, Vote::kYes);
  EXPECT_EQ(n.core().stats().attempts_restamped, 1u);

  n.now += 30000;  // the ABORT of attempt 1, 30 s late
  Token a = n.Abort(kT1, 1, {1, 1});
  ASSERT_TRUE(n.Replied(a));
  EXPECT_EQ(n.reply(a).error, ErrorCode::kOk) << "acked: that attempt is over";
  EXPECT_EQ(n.core().stats().stale_attempt_aborts, 1u);
  EXPECT_EQ(n.core().stats().in_flight, 1u) << "attempt 2 is still prepared";
  n.Commit(kT1);
  n.Sync();
  EXPECT_EQ(n.store().data().count("a"), 1u) << "attempt 2 commits";
}

TEST(ParticipantCoreTest, NewerAttemptIsDurableAndSurvivesACrash) {
  Node n;
  n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 1}));
  n.Sync();
  Token p2 = n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {2, 1}));
  n.Sync();
  ASSERT_EQ(n.reply(p2).vote, Vote::kYes);
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  n.Abort(kT1, 2, {1, 1});
  EXPECT_EQ(n.core().stats().in_flight, 1u) << "replay took the newer attempt's stamp";
  n.Commit(kT1, 2);
  n.Sync();
  EXPECT_EQ(n.store().data().count("a"), 1u);
}

TEST(ParticipantCoreTest, AbortOfTheHeldAttemptOrANewerOneDropsIt) {
  Node n;
  n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 2}));
  n.Prepare(Stamped(Req(kT2, {}, {Put("b", "1")}), {1, 3}));
  n.Sync();
  ASSERT_EQ(n.core().stats().in_flight, 2u);
  n.Abort(kT1, 1, {1, 2});  // the held attempt
  n.Abort(kT2, 2, {2, 1});  // a newer one: the held attempt has ended
  EXPECT_EQ(n.core().stats().in_flight, 0u);
  EXPECT_EQ(n.core().stats().stale_attempt_aborts, 0u);
}

TEST(ParticipantCoreTest, AbortOfAnEarlierAttemptBeforeTheNewerOneIsDurableLeavesItPrepared) {
  Node n;
  Token p1 = n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 1}));
  Token p2 = n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 2}));
  n.Abort(kT1, 1, {1, 1});
  n.Sync();
  EXPECT_EQ(n.reply(p1).vote, Vote::kYes);
  EXPECT_EQ(n.reply(p2).vote, Vote::kYes);
  EXPECT_EQ(n.core().stats().in_flight, 1u);
}

TEST(ParticipantCoreTest, AbortAnswerAboutAnEarlierAttemptIsIgnored) {
  CoreOptions o;
  o.decision_query_after_ms = 100;
  Node n(o);
  n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 1}));
  n.Sync();
  n.Tick(200);
  ASSERT_EQ(n.sent().size(), 1u);
  QueryDecisionMsg asked = n.sent()[0];
  EXPECT_EQ(asked.attempt, (Attempt{1, 1})) << "the question names the attempt held";
  // Attempt 2 prepares here while the answer about attempt 1 is on its way.
  n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 2}));
  n.Sync();
  n.core().OnDecisionAnswer(asked, DecisionAnswer{true, Decision::kAbort, ""}, n.now);
  n.Drain();
  EXPECT_EQ(n.core().stats().in_flight, 1u) << "the answer was about attempt 1";
  EXPECT_EQ(n.core().stats().stale_attempt_aborts, 1u);
  // A COMMIT answer is about the txid, whatever attempt asked.
  n.core().OnDecisionAnswer(asked, DecisionAnswer{true, Decision::kCommit, ""}, n.now);
  n.Drain();
  n.Sync();
  EXPECT_EQ(n.store().data().count("a"), 1u);
}

// A retried blind write whose txid is no longer remembered here: had it
// committed (and been forgotten) a YES would apply it a second time, so the
// answer is "outcome unknown" - unless it provably did not commit here.
TEST(ParticipantCoreTest, RetriedBlindWriteThatMayHaveCommittedIsNeverAppliedTwice) {
  CoreOptions o;
  o.outcomes_remembered_max = 2;
  Node n(o);
  Seed(n, "x", "0");
  PrepareRequest blind = Req(kT1, {}, {Put("x", "blind")}, /*one_phase=*/true);
  Token first = n.Prepare(blind);
  n.Sync();
  ASSERT_EQ(n.reply(first).vote, Vote::kYes);
  const Version applied = n.store().data().at("x").first;
  Seed(n, "c", "1");
  Seed(n, "d", "1");
  Seed(n, "e", "1");  // T1 is forgotten now
  ASSERT_GE(n.core().stats().forgotten_version, applied);
  blind.is_retry = true;
  Token retry = n.Prepare(blind);
  n.Sync();
  EXPECT_EQ(n.reply(retry).error, ErrorCode::kUnknownTx) << n.reply(retry).message;
  EXPECT_NE(n.reply(retry).message.find("would vote YES"), std::string::npos)
      << n.reply(retry).message;
  EXPECT_EQ(n.store().data().at("x").first, applied) << "not applied a second time";
  EXPECT_EQ(n.core().stats().in_flight, 0u) << "nothing prepared, no lock held";
  // A retried write of a key never written: it did not commit here before.
  PrepareRequest fresh = Req(kT2, {}, {Put("never-written", "1")}, /*one_phase=*/true);
  fresh.is_retry = true;
  Token ok = n.Prepare(fresh);
  n.Sync();
  EXPECT_EQ(n.reply(ok).vote, Vote::kYes);
}

// An abort is about the attempts up to the one it ended. An ABORT that
// overtook its attempt's PREPARE makes that PREPARE vote NO when it comes;
// the next attempt (the client's retry) is evaluated afresh, not refused as
// "already aborted" - the txid may have committed here earlier and been
// forgotten (dtx-sim --small-tables --failover --seed 2046).
TEST(ParticipantCoreTest, RememberedAbortRefusesItsAttemptButNotANewerOne) {
  Node n;
  n.Abort(kT1, 1, {1, 4});  // before its PREPARE
  n.Sync();                 // the epoch it raised
  Token late = n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 4}));
  EXPECT_EQ(n.reply(late).vote, Vote::kNo);
  EXPECT_EQ(n.reply(late).no_cause, NoVoteCause::kAlreadyAborted);
  Token older = n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 3}));
  EXPECT_EQ(n.reply(older).vote, Vote::kNo);
  Token newer = n.Prepare(Stamped(Req(kT1, {}, {Put("a", "1")}), {1, 5}));
  n.Sync();
  EXPECT_EQ(n.reply(newer).vote, Vote::kYes) << n.reply(newer).detail;
}

// Anyone who may call Abort can name random txids; each is remembered as
// aborted. Commits are remembered apart, so such a flood never pushes a
// commit out: a retry of it still gets YES (never evaluated afresh), also
// after a checkpoint and a restart.
TEST(ParticipantCoreTest, AbortsOfRandomTxidsNeverPushACommitOut) {
  CoreOptions o;
  o.outcomes_remembered_max = 4;
  Node n(o);
  Version va = Seed(n, "a", "1");
  PrepareRequest t = Req(kT1, {{"a", va}}, {Put("a", "2")}, /*one_phase=*/true);
  Token first = n.Prepare(t);
  n.Sync();
  ASSERT_EQ(n.reply(first).vote, Vote::kYes);
  for (uint64_t i = 0; i < 1000; ++i) n.Abort(TxId{0xbad, i});
  n.Sync();
  EXPECT_EQ(n.core().stats().forgotten_version, 0) << "no commit was forgotten";
  t.is_retry = true;
  Token retry = n.Prepare(t);
  EXPECT_EQ(n.reply(retry).vote, Vote::kYes) << n.reply(retry).message;
  n.TakeCheckpoint();
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  Token after = n.Prepare(t);
  EXPECT_EQ(n.reply(after).vote, Vote::kYes) << "the checkpoint kept it too";
  // Aborts stay bounded: the oldest random one is forgotten.
  Token late = n.Prepare(Req(TxId{0xbad, 0}, {}, {Put("z", "1")}, /*one_phase=*/true));
  n.Sync();
  EXPECT_EQ(n.reply(late).vote, Vote::kYes) << "evaluated afresh: its abort was forgotten";
}

// The attempt fence (tests/sim/README.md "The adversary", seed 67): a late
// copy of a one-phase PREPARE that committed here, arriving after its
// outcome was forgotten, is refused (outcome unknown), never applied again -
// also after a checkpoint and a restart. A newer attempt is evaluated.
TEST(ParticipantCoreTest, LateCopyOfAForgottenCommitIsNotAppliedAgain) {
  CoreOptions o;
  o.outcomes_remembered_max = 2;
  Node n(o);
  const PrepareRequest t1 = Stamped(Req(kT1, {}, {Put("k", "1")}, /*one_phase=*/true), {1, 1});
  Token p = n.Prepare(t1);
  n.Sync();
  ASSERT_EQ(n.reply(p).vote, Vote::kYes);
  const Version v1 = n.store().data().at("k").first;
  for (uint64_t i = 2; i <= 4; ++i) {  // three newer commits push T1's outcome out
    Token q = n.Prepare(Stamped(Req(TxId{8, i}, {}, {Put("j" + std::to_string(i), "x")}, true),
                                {1, i}));
    n.Sync();
    ASSERT_EQ(n.reply(q).vote, Vote::kYes);
  }
  EXPECT_EQ(n.core().stats().forgotten_attempt, (Attempt{1, 2}));
  Token copy = n.Prepare(t1);
  n.Sync();
  EXPECT_EQ(n.reply(copy).error, ErrorCode::kUnknownTx) << n.reply(copy).message;
  EXPECT_EQ(n.store().data().at("k").first, v1) << "applied a second time";
  EXPECT_EQ(n.core().stats().stale_prepare_refusals, 1u);
  // A newer attempt of another transaction is evaluated as usual.
  Token fresh = n.Prepare(Stamped(Req(kT2, {}, {Put("k", "2")}, true), {1, 5}));
  n.Sync();
  EXPECT_EQ(n.reply(fresh).vote, Vote::kYes);

  n.TakeCheckpoint();
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  EXPECT_EQ(n.core().stats().forgotten_attempt, (Attempt{1, 3})) << "the checkpoint carries it";
  Token after = n.Prepare(t1);
  n.Sync();
  EXPECT_EQ(n.reply(after).error, ErrorCode::kUnknownTx) << n.reply(after).message;
  EXPECT_EQ(n.store().data().at("k").second, "2");
}

// Outcomes restored from a checkpoint carry no attempt: when one is
// forgotten later, the fence moves to the newest attempt the checkpoint had
// seen (not further: later attempts are still evaluated).
TEST(ParticipantCoreTest, ForgettingARestoredOutcomeFencesUpToTheCheckpointsNewestAttempt) {
  CoreOptions o;
  o.outcomes_remembered_max = 2;
  Node n(o);
  for (uint64_t i = 1; i <= 2; ++i) {
    n.Prepare(Stamped(Req(TxId{8, i}, {}, {Put("a" + std::to_string(i), "x")}, true), {1, i}));
    n.Sync();
  }
  n.TakeCheckpoint();
  ASSERT_TRUE(n.Crash(/*keep_store=*/true).ok());
  EXPECT_EQ(n.core().stats().forgotten_attempt, (Attempt{}));
  Token q = n.Prepare(Stamped(Req(TxId{8, 3}, {}, {Put("a3", "x")}, true), {1, 7}));
  n.Sync();
  ASSERT_EQ(n.reply(q).vote, Vote::kYes);
  EXPECT_EQ(n.core().stats().forgotten_attempt, (Attempt{1, 2}));
  // A copy of T{8,1}'s PREPARE (its outcome was the one forgotten).
  Token copy = n.Prepare(Stamped(Req(TxId{8, 1}, {}, {Put("a1", "x")}, true), {1, 1}));
  EXPECT_EQ(n.reply(copy).error, ErrorCode::kUnknownTx);
  Token late = n.Prepare(Stamped(Req(TxId{8, 4}, {}, {Put("a4", "x")}, true), {1, 6}));
  n.Sync();
  EXPECT_EQ(n.reply(late).vote, Vote::kYes) << "newer than anything the checkpoint saw";
}

}  // namespace
}  // namespace dtx::participant
