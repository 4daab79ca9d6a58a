// Step-by-step tests of the coordinator core. A small harness plays the
// runtime: it keeps an in-memory WAL (records get LSNs when appended and are
// "durable" only once the test syncs them), and the tests feed votes, acks,
// ticks and crashes by hand.
#include "coordinator/core.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dtx::coordinator {
namespace {

const std::vector<std::string> kParticipants = {"127.0.0.1:5000", "127.0.0.1:5001",
                                                "127.0.0.1:5002"};

CoreOptions Opts(size_t n = 3) {
  CoreOptions o;
  o.participants.assign(kParticipants.begin(), kParticipants.begin() + n);
  o.self_address = "127.0.0.1:4000";
  return o;
}

// A key that the "hash" scheme places on `shard` of `n`.
std::string KeyOn(size_t shard, size_t n = 3, int nth = 0) {
  for (int i = 0;; ++i) {
    std::string k = "key" + std::to_string(i);
    if (ShardHash(k) % n == shard && nth-- == 0) return k;
  }
}

CommitRequest Req(TxId txid, std::vector<ReadItem> reads, std::vector<WriteItem> writes) {
  CommitRequest r;
  r.txid = txid;
  r.reads = std::move(reads);
  r.writes = std::move(writes);
  r.shard_map_version = 1;
  return r;
}

// A write on each of the given shards.
CommitRequest Writes(TxId txid, std::vector<size_t> shards, size_t n = 3) {
  std::vector<WriteItem> w;
  for (size_t s : shards) w.push_back(WriteItem{KeyOn(s, n), std::string("v")});
  return Req(txid, {}, std::move(w));
}

struct LogEntry {
  uint64_t lsn;
  uint8_t type;
  std::string payload;
  PersistTag tag;
  bool forced;
  bool durable;
};

class Harness {
 public:
  explicit Harness(CoreOptions o = Opts())
      : options_(o), core_(std::make_unique<CoordinatorCore>(o)) {}

  CoordinatorCore& core() { return *core_; }

  // Drains the core's output, appending records to the in-memory log.
  Ready Drain() {
    Ready r = core_->TakeReady();
    size_t copies = 0;
    for (const PersistRecord& p : r.persist) {
      log_.push_back(
          LogEntry{next_lsn_++, static_cast<uint8_t>(p.type), p.payload, p.tag, p.forced, false});
      copies += p.relog ? 1 : 0;
    }
    most_copies_at_once = std::max(most_copies_at_once, copies);
    return r;
  }
  // The most DECISIONs written again (PersistRecord::relog) in one Ready.
  size_t most_copies_at_once = 0;

  // Syncs the log: every appended record becomes durable, forced ones are
  // reported to the core in LSN order. Returns what that produced.
  Ready Sync() {
    for (LogEntry& e : log_) {
      if (e.durable) continue;
      e.durable = true;
      if (e.forced) core_->OnPersisted(now, e.tag, e.lsn);
    }
    return Drain();
  }

  // Drain, then Sync: what an input produces once its records are durable
  // (an ABORTED answer waits for its abort DECISION), in one Ready.
  Ready Settle() {
    Ready r = Drain();
    Ready later = Sync();
    for (PersistRecord& p : later.persist) r.persist.push_back(std::move(p));
    for (OutMessage& m : later.send) r.send.push_back(std::move(m));
    for (Reply& rep : later.replies) r.replies.push_back(std::move(rep));
    r.truncate_before = std::max(r.truncate_before, later.truncate_before);
    return r;
  }

  void StartFresh() {
    core_->Start(now);
    Ready r = Drain();
    EXPECT_EQ(r.persist.size(), 1u);
    Sync();
  }

  // Crash: unsynced records are lost; a new core replays the rest.
  Status CrashAndRecover() {
    std::erase_if(log_, [](const LogEntry& e) { return !e.durable; });
    core_ = std::make_unique<CoordinatorCore>(options_);
    for (const LogEntry& e : log_) DTX_RETURN_IF_ERROR(core_->Replay(e.lsn, e.type, e.payload));
    // LSNs are never reused, as in wal::Log (the lost ones were never durable).
    if (!log_.empty()) next_lsn_ = std::max(next_lsn_, log_.back().lsn + 1);
    core_->Start(now);
    return Status::OK();
  }

  const std::vector<LogEntry>& log() const { return log_; }
  void TruncateBefore(uint64_t lsn) {
    std::erase_if(log_, [lsn](const LogEntry& e) { return e.lsn < lsn; });
  }

  uint64_t now = 1000;

 private:
  CoreOptions options_;
  std::unique_ptr<CoordinatorCore> core_;
  std::vector<LogEntry> log_;
  uint64_t next_lsn_ = 1;
};

template <typename T>
std::vector<std::pair<OutMessage, T>> Msgs(const Ready& r) {
  std::vector<std::pair<OutMessage, T>> out;
  for (const OutMessage& m : r.send) {
    if (const T* t = std::get_if<T>(&m.body)) out.emplace_back(m, *t);
  }
  return out;
}

const CommitResult& ResultFor(const Ready& r, RequestToken token) {
  for (const Reply& rep : r.replies) {
    if (rep.token == token) {
      const CommitResult* c = std::get_if<CommitResult>(&rep.body);
      EXPECT_NE(c, nullptr) << "reply is not a CommitResult";
      if (c != nullptr) return *c;
    }
  }
  ADD_FAILURE() << "no reply for token " << token;
  static CommitResult none;
  return none;
}

const Error* ErrorFor(const Ready& r, RequestToken token) {
  for (const Reply& rep : r.replies) {
    if (rep.token == token) return std::get_if<Error>(&rep.body);
  }
  return nullptr;
}

std::optional<Decision> DecisionFor(const Ready& r, RequestToken token) {
  for (const Reply& rep : r.replies) {
    if (rep.token == token) {
      if (const Decision* d = std::get_if<Decision>(&rep.body)) return *d;
    }
  }
  return std::nullopt;
}

PrepareReply Vote_(const OutMessage& m, Vote v, CallStatus s = CallStatus::kOk) {
  PrepareReply r;
  r.msg_id = m.id;
  r.txid = std::get<PrepareMsg>(m.body).txid;
  r.participant = m.to;
  r.status = s;
  r.vote = v;
  if (v == Vote::kNo) {
    r.reason = AbortReason::kConflict;
    r.detail = "key 'x' locked";
  }
  if (s != CallStatus::kOk) r.error = "boom";
  return r;
}

AckReply Ack(const OutMessage& m, CallStatus s = CallStatus::kOk) {
  AckReply a;
  a.msg_id = m.id;
  a.txid = std::holds_alternative<CommitMsg>(m.body) ? std::get<CommitMsg>(m.body).txid
                                                     : std::get<AbortMsg>(m.body).txid;
  a.participant = m.to;
  a.status = s;
  if (s != CallStatus::kOk) a.error = "boom";
  return a;
}

const TxId kTx1{0xabc, 1};
const TxId kTx2{0xabc, 2};
const TxId kTx3{0xabc, 3};

// Runs kTx-style multi-participant tx up to "DECISION durable"; returns the
// COMMIT messages sent.
std::vector<std::pair<OutMessage, CommitMsg>> CommitThrough(Harness& h, TxId txid,
                                                            RequestToken token,
                                                            std::vector<size_t> shards) {
  h.core().Commit(h.now, token, Writes(txid, shards));
  Ready r = h.Drain();
  for (auto& [m, p] : Msgs<PrepareMsg>(r)) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  h.Drain();
  Ready after = h.Sync();
  EXPECT_EQ(ResultFor(after, token).outcome, Outcome::kCommitted);
  return Msgs<CommitMsg>(after);
}

// ---- start-up and epoch -------------------------------------------------------------

TEST(CoordinatorCore, FreshLogWritesEpochOneForcedAndRefusesCommitsUntilDurable) {
  Harness h;
  h.core().Start(h.now);
  Ready r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(r.persist[0].type, RecordType::kEpoch);
  EXPECT_TRUE(r.persist[0].forced);
  EXPECT_EQ(h.core().epoch(), 1);
  const PersistTag epoch_tag = r.persist[0].tag;

  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  r = h.Drain();
  const Error* e = ErrorFor(r, 1);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kUnavailable);
  EXPECT_TRUE(r.send.empty());

  h.Sync();
  // A repeated or unknown durability notice is harmless.
  h.core().OnPersisted(h.now, epoch_tag, 1);
  h.core().OnPersisted(h.now, 12345, 1);
  EXPECT_TRUE(h.Drain().empty());
  h.core().Commit(h.now, 2, Writes(kTx1, {0, 1}));
  r = h.Drain();
  EXPECT_EQ(Msgs<PrepareMsg>(r).size(), 2u);
  for (auto& [m, p] : Msgs<PrepareMsg>(r)) EXPECT_EQ(p.epoch, 1);
}

// ---- the multi-participant commit path, step by step ------------------------------

TEST(CoordinatorCore, TwoPhaseCommitEveryStep) {
  Harness h;
  h.StartFresh();
  CommitRequest req = Writes(kTx1, {0, 2});
  req.reads.push_back(ReadItem{KeyOn(1), 7});
  h.core().Commit(h.now, 11, req);

  // Step 1: PREPARE to every involved participant, in shard order, in parallel.
  Ready r = h.Drain();
  EXPECT_TRUE(r.persist.empty());
  EXPECT_TRUE(r.replies.empty());
  auto prepares = Msgs<PrepareMsg>(r);
  ASSERT_EQ(prepares.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(prepares[i].first.to, kParticipants[i]);
    EXPECT_EQ(prepares[i].first.timeout_ms, 2000u);
    EXPECT_FALSE(prepares[i].second.one_phase);
    EXPECT_FALSE(prepares[i].second.read_only_tx);
    EXPECT_EQ(prepares[i].second.coordinator, "127.0.0.1:4000");
    EXPECT_EQ(prepares[i].second.txid, kTx1);
  }
  EXPECT_EQ(prepares[1].second.reads.size(), 1u);
  EXPECT_EQ(prepares[1].second.reads[0].version, 7);
  EXPECT_TRUE(prepares[1].second.writes.empty());
  EXPECT_EQ(prepares[0].second.writes.size(), 1u);
  EXPECT_EQ(h.core().in_flight(), 1u);

  // Step 2: votes. Nothing happens until the last YES.
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  h.core().OnPrepareReply(h.now, Vote_(prepares[1].first, Vote::kYes));
  EXPECT_TRUE(h.Drain().empty());
  h.core().OnPrepareReply(h.now, Vote_(prepares[2].first, Vote::kYes));

  // Step 3: DECISION forced; no reply and no COMMIT before it is durable.
  r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(r.persist[0].type, RecordType::kDecision);
  EXPECT_TRUE(r.persist[0].forced);
  EXPECT_TRUE(r.send.empty());
  EXPECT_TRUE(r.replies.empty());
  Result<Record> rec = DecodeRecord(2, r.persist[0].payload);
  ASSERT_TRUE(rec.ok());
  const auto& d = std::get<DecisionRecord>(*rec);
  EXPECT_EQ(d.txid, kTx1);
  EXPECT_EQ(d.epoch, 1);
  EXPECT_EQ(d.participants, kParticipants);

  // The commit point: COMMITTED to the client and COMMIT to every YES voter.
  r = h.Sync();
  EXPECT_EQ(ResultFor(r, 11).outcome, Outcome::kCommitted);
  auto commits = Msgs<CommitMsg>(r);
  ASSERT_EQ(commits.size(), 3u);
  EXPECT_TRUE(commits[0].second.first_of_tx);
  EXPECT_FALSE(commits[1].second.first_of_tx);
  EXPECT_EQ(commits[0].second.epoch, 1);
  EXPECT_EQ(h.core().committing(), 1u);

  // Step 4: acks; END (not forced) after the last one, then the tx is forgotten.
  h.core().OnCommitReply(h.now, Ack(commits[0].first));
  h.core().OnCommitReply(h.now, Ack(commits[1].first));
  EXPECT_TRUE(h.Drain().persist.empty());
  h.core().OnCommitReply(h.now, Ack(commits[2].first));
  r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(r.persist[0].type, RecordType::kEnd);
  EXPECT_FALSE(r.persist[0].forced);
  EXPECT_EQ(h.core().in_flight(), 0u);
  EXPECT_EQ(h.core().committing(), 0u);
  EXPECT_EQ(h.core().stats().commits, 1u);

  // END'ed transactions stay idempotent.
  h.core().Commit(h.now, 12, req);
  h.core().QueryDecision(h.now, 13, kTx1);
  r = h.Drain();
  EXPECT_EQ(ResultFor(r, 12).outcome, Outcome::kCommitted);
  EXPECT_EQ(DecisionFor(r, 13), Decision::kCommit);
  EXPECT_TRUE(r.send.empty());
}

TEST(CoordinatorCore, VoteNoAbortsWithConflictAndReleasesOnlyLockHolders) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1, 2}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  h.core().OnPrepareReply(h.now, Vote_(prepares[1].first, Vote::kNo));
  Ready r = h.Drain();
  EXPECT_TRUE(r.replies.empty()) << "ABORTED waits for its abort DECISION";
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_TRUE(r.persist[0].forced);
  Result<Record> logged = DecodeRecord(static_cast<uint8_t>(r.persist[0].type), r.persist[0].payload);
  ASSERT_TRUE(logged.ok());
  EXPECT_FALSE(std::get<DecisionRecord>(*logged).commit);
  EXPECT_TRUE(std::get<DecisionRecord>(*logged).participants.empty());
  EXPECT_EQ(std::get<DecisionRecord>(*logged).reason, AbortReason::kConflict);
  EXPECT_EQ(h.core().stats().aborts_logged, 1u);
  Ready answered = h.Sync();
  for (Reply& rep : answered.replies) r.replies.push_back(std::move(rep));
  const CommitResult& c = ResultFor(r, 1);
  EXPECT_EQ(c.outcome, Outcome::kAborted);
  EXPECT_EQ(c.reason, AbortReason::kConflict);
  EXPECT_NE(c.detail.find("key 'x' locked"), std::string::npos);
  auto aborts = Msgs<AbortMsg>(r);
  ASSERT_EQ(aborts.size(), 2u);  // the YES voter and the one that has not voted
  EXPECT_EQ(aborts[0].first.to, kParticipants[0]);
  EXPECT_EQ(aborts[1].first.to, kParticipants[2]);
  EXPECT_EQ(h.core().in_flight(), 0u);
  // Abort acks (and their failures) need nothing.
  h.core().OnAbortReply(h.now, Ack(aborts[0].first));
  h.core().OnAbortReply(h.now, Ack(aborts[1].first, CallStatus::kUnavailable));
  EXPECT_TRUE(h.Settle().empty());
}

TEST(CoordinatorCore, PrepareTimeoutAbortsWithTimeout) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  h.core().Tick(h.now + 1999);
  EXPECT_TRUE(h.Settle().empty());
  h.core().Tick(h.now + 2000);
  Ready r = h.Settle();
  EXPECT_EQ(ResultFor(r, 1).reason, AbortReason::kTimeout);
  EXPECT_EQ(Msgs<AbortMsg>(r).size(), 2u);
  // The vote that arrives afterwards is late and harmless; a late YES gets
  // the ABORT again (it may have overtaken the PREPARE).
  h.core().OnPrepareReply(h.now + 2500, Vote_(prepares[1].first, Vote::kYes));
  r = h.Settle();
  EXPECT_TRUE(r.replies.empty());
  EXPECT_TRUE(r.persist.empty());
  ASSERT_EQ(Msgs<AbortMsg>(r).size(), 1u);
  EXPECT_EQ(Msgs<AbortMsg>(r)[0].first.to, kParticipants[1]);
}

TEST(CoordinatorCore, TransportFailureAbortsWithParticipantUnavailable) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[1].first, Vote::kYes, CallStatus::kUnavailable));
  Ready r = h.Settle();
  EXPECT_EQ(ResultFor(r, 1).reason, AbortReason::kParticipantUnavailable);
  EXPECT_EQ(Msgs<AbortMsg>(r).size(), 2u);  // the failed one may have prepared
}

TEST(CoordinatorCore, RpcTimeoutAndErrorRepliesAbort) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes, CallStatus::kTimeout));
  EXPECT_EQ(ResultFor(h.Settle(), 1).reason, AbortReason::kTimeout);

  h.core().Commit(h.now, 2, Writes(kTx2, {0, 1}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes, CallStatus::kError));
  EXPECT_EQ(ResultFor(h.Settle(), 2).reason, AbortReason::kParticipantUnavailable);
}

TEST(CoordinatorCore, DuplicateAndStaleVotesAreIgnored) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));  // duplicate
  EXPECT_TRUE(h.Drain().empty());
  PrepareReply stale = Vote_(prepares[1].first, Vote::kNo);
  stale.msg_id = 999;  // a reply to some other message
  h.core().OnPrepareReply(h.now, stale);
  PrepareReply stranger = Vote_(prepares[1].first, Vote::kNo);
  stranger.participant = "127.0.0.1:9";  // not in this transaction
  h.core().OnPrepareReply(h.now, stranger);
  PrepareReply unknown = Vote_(prepares[1].first, Vote::kYes);
  unknown.txid = TxId{77, 77};  // no such transaction
  h.core().OnPrepareReply(h.now, unknown);
  EXPECT_TRUE(h.Drain().empty());
  h.core().OnPrepareReply(h.now, Vote_(prepares[1].first, Vote::kYes));
  Ready r = h.Drain();
  EXPECT_EQ(r.persist.size(), 1u);
  h.core().OnPrepareReply(h.now, Vote_(prepares[1].first, Vote::kYes));  // late duplicate
  EXPECT_TRUE(h.Drain().empty());
}

TEST(CoordinatorCore, DuplicateLateAndUnknownAcksAreHarmless) {
  Harness h;
  h.StartFresh();
  auto commits = CommitThrough(h, kTx1, 1, {0, 1});
  ASSERT_EQ(commits.size(), 2u);
  h.core().OnCommitReply(h.now, Ack(commits[0].first));
  h.core().OnCommitReply(h.now, Ack(commits[0].first));  // duplicate
  AckReply stranger = Ack(commits[1].first);
  stranger.participant = "127.0.0.1:9";
  h.core().OnCommitReply(h.now, stranger);
  AckReply unknown = Ack(commits[1].first);
  unknown.txid = TxId{5, 5};
  h.core().OnCommitReply(h.now, unknown);
  EXPECT_TRUE(h.Drain().empty());
  h.core().OnCommitReply(h.now, Ack(commits[1].first));
  EXPECT_EQ(h.Drain().persist.size(), 1u);               // END
  h.core().OnCommitReply(h.now, Ack(commits[1].first));  // after END
  h.core().OnCommitReply(h.now, Ack(commits[0].first, CallStatus::kUnavailable));
  EXPECT_TRUE(h.Drain().empty());
}

TEST(CoordinatorCore, Phase2ResendsCommitWithBackoffUntilAcked) {
  Harness h;
  h.StartFresh();
  auto commits = CommitThrough(h, kTx1, 1, {0, 1});
  h.core().OnCommitReply(h.now, Ack(commits[0].first));
  OutMessage last = commits[1].first;
  uint64_t t = h.now;
  // Failed attempts: re-sent after 50, 100, 200, ... ms, capped at 2000.
  std::vector<uint64_t> expected = {50, 100, 200, 400, 800, 1600, 2000, 2000};
  for (uint64_t wait : expected) {
    h.core().OnCommitReply(t, Ack(last, CallStatus::kUnavailable));
    h.core().Tick(t + wait - 1);
    EXPECT_TRUE(h.Drain().send.empty()) << "re-sent before " << wait << " ms";
    h.core().Tick(t + wait);
    auto again = Msgs<CommitMsg>(h.Drain());
    ASSERT_EQ(again.size(), 1u) << "not re-sent after " << wait << " ms";
    EXPECT_EQ(again[0].first.to, kParticipants[1]);
    EXPECT_FALSE(again[0].second.first_of_tx);
    last = again[0].first;
    t += wait;
  }
  // A lost message (no reply at all) counts as failed once its timeout passes.
  h.core().Tick(t + 2000);
  EXPECT_TRUE(h.Drain().send.empty());
  h.core().Tick(t + 2000 + 2000);
  auto again = Msgs<CommitMsg>(h.Drain());
  ASSERT_EQ(again.size(), 1u);
  // A late ack of an older attempt still counts: COMMIT is idempotent.
  h.core().OnCommitReply(t, Ack(commits[1].first));
  Ready r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(r.persist[0].type, RecordType::kEnd);
  EXPECT_GE(h.core().stats().commit_resends, expected.size());
}

// ---- idempotency by txid --------------------------------------------------------------

TEST(CoordinatorCore, RepeatedCommitJoinsTheRunningTransaction) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().Commit(h.now, 2, Writes(kTx1, {0, 1}));  // while preparing
  EXPECT_TRUE(h.Drain().empty()) << "no second 2PC run";
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  h.Drain();
  h.core().Commit(h.now, 3, Writes(kTx1, {0, 1}));  // while the DECISION syncs
  EXPECT_TRUE(h.Drain().empty());
  Ready r = h.Sync();
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kCommitted);
  EXPECT_EQ(ResultFor(r, 2).outcome, Outcome::kCommitted);
  EXPECT_EQ(ResultFor(r, 3).outcome, Outcome::kCommitted);
  h.core().Commit(h.now, 4, Writes(kTx1, {0, 1}));  // in phase 2
  r = h.Drain();
  EXPECT_EQ(ResultFor(r, 4).outcome, Outcome::kCommitted);
  EXPECT_TRUE(r.send.empty());
}

TEST(CoordinatorCore, RepeatedCommitAfterAbortReturnsTheRecordedOutcome) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().Commit(h.now, 2, Writes(kTx1, {0, 1}));
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kNo));
  Ready r = h.Settle();
  EXPECT_EQ(ResultFor(r, 1).reason, AbortReason::kConflict);
  EXPECT_EQ(ResultFor(r, 2).reason, AbortReason::kConflict);
  h.core().Commit(h.now, 3, Writes(kTx1, {0, 1}));
  r = h.Settle();
  EXPECT_EQ(ResultFor(r, 3).outcome, Outcome::kAborted);
  EXPECT_EQ(ResultFor(r, 3).reason, AbortReason::kConflict);
  EXPECT_TRUE(r.send.empty()) << "no new 2PC run";
}

// Found by the simulator's adversary (dtx-sim --adversary --seed 866): a
// retry was told ABORTED, the coordinator restarted and forgot the abort
// (presumed abort logged none), and another retry of the txid committed.
// The ABORTED answer is now given only once its abort DECISION is durable,
// and a restarted core answers from it.
TEST(CoordinatorCore, AnAbortedAnswerIsLoggedFirstAndOutlivesARestart) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kNo));
  Ready r = h.Drain();
  EXPECT_TRUE(r.replies.empty());
  EXPECT_EQ(Msgs<AbortMsg>(r).size(), 1u) << "the locks are released at once";
  // Meanwhile a repeat waits with it, and a participant hears ABORT.
  h.core().Commit(h.now, 2, Writes(kTx1, {0, 1}));
  h.core().QueryDecision(h.now, 3, kTx1);
  r = h.Drain();
  EXPECT_EQ(DecisionFor(r, 3), Decision::kAbort);
  EXPECT_EQ(ErrorFor(r, 2), nullptr);
  r = h.Sync();
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kAborted);
  EXPECT_EQ(ResultFor(r, 2).reason, AbortReason::kConflict);
  EXPECT_EQ(h.core().RememberedOutcome(kTx1), Outcome::kAborted);

  ASSERT_TRUE(h.CrashAndRecover().ok());
  h.Settle();  // the new EPOCH
  CommitRequest retry = Writes(kTx1, {0, 1});
  retry.is_retry = true;
  h.core().Commit(h.now, 4, retry);
  r = h.Settle();
  EXPECT_TRUE(Msgs<PrepareMsg>(r).empty()) << "never run again";
  EXPECT_EQ(ResultFor(r, 4).outcome, Outcome::kAborted);
  EXPECT_EQ(ResultFor(r, 4).reason, AbortReason::kConflict);
  EXPECT_EQ(h.core().RememberedOutcome(kTx1), Outcome::kAborted);
  // Other content under the txid is still refused.
  h.core().Commit(h.now, 5, Writes(kTx1, {2}));
  ASSERT_NE(ErrorFor(h.Settle(), 5), nullptr);
}

// An abort whose record never became durable was told to nobody: after a
// crash the retry runs a new attempt.
TEST(CoordinatorCore, AnAbortLostBeforeItsRecordWasDurableWasToldToNobody) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kNo));
  EXPECT_TRUE(h.Drain().replies.empty());
  ASSERT_TRUE(h.CrashAndRecover().ok());
  h.Settle();  // the new EPOCH
  CommitRequest retry = Writes(kTx1, {0, 1});
  retry.is_retry = true;
  h.core().Commit(h.now, 2, retry);
  EXPECT_EQ(Msgs<PrepareMsg>(h.Settle()).size(), 2u);
}

// Aborts remembered are bounded (aborted_outcomes_max) apart from commits,
// and a primary's snapshot restates what its log keeps (ClosedOutcomes).
TEST(CoordinatorCore, AbortsRememberedBoundTheLogAndGoIntoTheSnapshot) {
  CoreOptions o = Opts();
  o.aborted_outcomes_max = 2;
  Harness h(o);
  h.StartFresh();
  // One commit, ended.
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  for (auto& [m, p] : Msgs<PrepareMsg>(h.Drain())) {
    h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  }
  h.Drain();
  for (auto& [m, c] : Msgs<CommitMsg>(h.Sync())) h.core().OnCommitReply(h.now, Ack(m));
  h.Settle();
  // Three aborts: the first is forgotten.
  for (uint64_t i = 0; i < 3; ++i) {
    h.core().Commit(h.now, 10 + i, Writes(TxId{50, i}, {0, 1}));
    auto prepares = Msgs<PrepareMsg>(h.Drain());
    h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kNo));
    h.Drain();
    EXPECT_EQ(ResultFor(h.Sync(), 10 + i).outcome, Outcome::kAborted);
  }
  EXPECT_EQ(h.core().RememberedOutcome(TxId{50, 0}), Outcome::kUnknown);
  EXPECT_EQ(h.core().RememberedOutcome(TxId{50, 2}), Outcome::kAborted);
  std::vector<Record> closed = h.core().ClosedOutcomes();
  ASSERT_EQ(closed.size(), 4u);  // the commit (DECISION + END), then two aborts
  const auto& commit = std::get<DecisionRecord>(closed[0]);
  EXPECT_TRUE(commit.commit);
  EXPECT_EQ(commit.txid, kTx1);
  EXPECT_TRUE(commit.participants.empty()) << "nothing left to deliver";
  EXPECT_EQ(std::get<EndRecord>(closed[1]).txid, kTx1);
  EXPECT_EQ(std::get<DecisionRecord>(closed[2]).txid, (TxId{50, 1}));
  EXPECT_FALSE(std::get<DecisionRecord>(closed[2]).commit);
  EXPECT_EQ(std::get<DecisionRecord>(closed[3]).txid, (TxId{50, 2}));
  // Within a byte budget: the newest that fit.
  std::vector<Record> newest = h.core().ClosedOutcomes(EncodePayload(closed[3]).size() + 16);
  ASSERT_EQ(newest.size(), 1u);
  EXPECT_EQ(std::get<DecisionRecord>(newest[0]).txid, (TxId{50, 2}));
  EXPECT_TRUE(h.core().ClosedOutcomes(10).empty());
  // A fresh core fed the snapshot's records answers as this one does.
  CoordinatorCore mirror(o);
  uint64_t lsn = 1;
  ASSERT_TRUE(mirror.Replay(lsn++, 1, EncodePayload(EpochRecord{1})).ok());
  for (const Record& rec : closed) {
    ASSERT_TRUE(mirror.Replay(lsn++, static_cast<uint8_t>(TypeOf(rec)), EncodePayload(rec)).ok());
  }
  mirror.Start(h.now);
  EXPECT_EQ(mirror.RememberedOutcome(kTx1), Outcome::kCommitted);
  EXPECT_EQ(mirror.RememberedOutcome(TxId{50, 2}), Outcome::kAborted);
  EXPECT_TRUE(mirror.OpenDecisions().empty());
}

// A sparse abort among many commits does not hold the log back: outcomes
// are bounded by age in the log too (2 x (commits + aborts remembered)
// records), and the log is truncated past the forgotten abort.
TEST(CoordinatorCore, ASparseAbortDoesNotPinTheLog) {
  CoreOptions o = Opts();
  o.committed_outcomes_max = 2;
  o.aborted_outcomes_max = 2;
  o.epoch_rewrite_lsn_gap = 4;  // the EPOCH record moves on too
  Harness h(o);
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kNo));
  h.Drain();
  const uint64_t abort_lsn = h.log().back().lsn;
  h.Settle();
  uint64_t truncate_before = 0;
  for (uint64_t i = 0; i < 10; ++i) {
    h.core().Commit(h.now, 10 + i, Writes(TxId{60, i}, {0, 1}));
    for (auto& [m, p] : Msgs<PrepareMsg>(h.Drain())) {
      h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
    }
    Ready r = h.Settle();
    truncate_before = std::max(truncate_before, r.truncate_before);
    for (auto& [m, c] : Msgs<CommitMsg>(r)) h.core().OnCommitReply(h.now, Ack(m));
    r = h.Settle();
    truncate_before = std::max(truncate_before, r.truncate_before);
  }
  EXPECT_EQ(h.core().RememberedOutcome(kTx1), Outcome::kUnknown) << "forgotten by age";
  EXPECT_GT(truncate_before, abort_lsn);
  EXPECT_EQ(h.core().RememberedOutcome(TxId{60, 9}), Outcome::kCommitted);
}

// A one-phase PREPARE refused STALE_EPOCH, whether it fences us or was
// stamped with the epoch we just left, is UNKNOWN: the participant alone
// decides, and another copy of the PREPARE may have committed before it
// adopted the newer epoch (dtx-sim --failover --seed 2633 and
// --failover --small-tables --seed 469, once ABORTED answers were logged).
TEST(CoordinatorCore, OnePhaseStaleEpochIsUnknownNeverAborted) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_TRUE(prepares[0].second.one_phase);
  h.core().BumpEpoch(h.now, h.core().epoch() + 1);
  h.Settle();
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes, CallStatus::kStaleEpoch));
  Ready r = h.Settle();
  EXPECT_FALSE(h.core().fenced()) << "stamped with our previous epoch";
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kUnknown);
  EXPECT_EQ(h.core().stats().aborts_logged, 0u);

  h.core().Commit(h.now, 2, Writes(kTx2, {1}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes, CallStatus::kStaleEpoch));
  r = h.Settle();
  EXPECT_TRUE(h.core().fenced());
  EXPECT_EQ(ResultFor(r, 2).outcome, Outcome::kUnknown);
}

// ---- QueryDecision in every state -------------------------------------------------------

TEST(CoordinatorCore, QueryDecisionInEveryState) {
  Harness h;
  h.StartFresh();
  // Unknown txid: presumed abort.
  h.core().QueryDecision(h.now, 100, TxId{9, 9});
  EXPECT_EQ(DecisionFor(h.Settle(), 100), Decision::kAbort);

  // Preparing: aborted on the spot, the client hears ABORTED.
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().QueryDecision(h.now, 101, kTx1);
  Ready r = h.Settle();
  EXPECT_EQ(DecisionFor(r, 101), Decision::kAbort);
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kAborted);
  EXPECT_EQ(Msgs<AbortMsg>(r).size(), 2u);
  // ... and stays aborted: a YES arriving now decides nothing.
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  EXPECT_TRUE(h.Settle().persist.empty());
  h.core().QueryDecision(h.now, 102, kTx1);
  EXPECT_EQ(DecisionFor(h.Settle(), 102), Decision::kAbort);

  // Deciding (DECISION appended, not durable): answered COMMIT once durable.
  h.core().Commit(h.now, 2, Writes(kTx2, {0, 1}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  h.Drain();
  h.core().QueryDecision(h.now, 103, kTx2);
  EXPECT_TRUE(h.Drain().replies.empty());
  r = h.Sync();
  EXPECT_EQ(DecisionFor(r, 103), Decision::kCommit);
  auto commits = Msgs<CommitMsg>(r);

  // Committing: COMMIT.
  h.core().QueryDecision(h.now, 104, kTx2);
  EXPECT_EQ(DecisionFor(h.Settle(), 104), Decision::kCommit);
  // Ended: COMMIT.
  for (auto& [m, c] : commits) h.core().OnCommitReply(h.now, Ack(m));
  h.Settle();
  h.core().QueryDecision(h.now, 105, kTx2);
  EXPECT_EQ(DecisionFor(h.Settle(), 105), Decision::kCommit);

  // One-phase in progress: only the participant knows.
  h.core().Commit(h.now, 3, Writes(kTx3, {2}));
  h.Settle();
  h.core().QueryDecision(h.now, 106, kTx3);
  EXPECT_EQ(DecisionFor(h.Settle(), 106), Decision::kUnknown);
  EXPECT_EQ(h.core().in_flight(), 1u);
}

// ---- read-only and one-phase -----------------------------------------------------------

TEST(CoordinatorCore, ReadOnlyTransactionNeedsNoLogAndNoPhase2) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Req(kTx1, {{KeyOn(0), 3}, {KeyOn(1), 4}}, {}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  for (auto& [m, p] : prepares) {
    EXPECT_TRUE(p.read_only_tx);
    EXPECT_FALSE(p.one_phase);
  }
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kReadOnly));
  Ready r = h.Drain();
  EXPECT_TRUE(r.persist.empty());
  EXPECT_TRUE(r.send.empty());
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kCommitted);
  EXPECT_EQ(h.core().stats().commits_read_only, 1u);
}

TEST(CoordinatorCore, ReadOnlyVotersAreLeftOutOfPhase2) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Req(kTx1, {{KeyOn(0), 3}, {KeyOn(1), 4}}, {}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kReadOnly));
  h.core().OnPrepareReply(h.now, Vote_(prepares[1].first, Vote::kYes));
  Ready r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  auto rec = DecodeRecord(2, r.persist[0].payload);
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(std::get<DecisionRecord>(*rec).participants,
            std::vector<std::string>{kParticipants[1]});
  r = h.Sync();
  ASSERT_EQ(Msgs<CommitMsg>(r).size(), 1u);
  EXPECT_EQ(Msgs<CommitMsg>(r)[0].first.to, kParticipants[1]);
}

TEST(CoordinatorCore, OnePhaseCommitLogsNothingHere) {
  Harness h;
  h.StartFresh();
  const CommitRequest req = Req(kTx1, {{KeyOn(1, 3, 1), 2}}, {{KeyOn(1), std::string("v")}});
  h.core().Commit(h.now, 1, req);
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 1u);
  EXPECT_TRUE(prepares[0].second.one_phase);
  EXPECT_EQ(prepares[0].first.to, kParticipants[1]);
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  Ready r = h.Drain();
  EXPECT_TRUE(r.persist.empty());
  EXPECT_TRUE(r.send.empty());
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kCommitted);
  h.core().Commit(h.now, 2, req);
  EXPECT_EQ(ResultFor(h.Drain(), 2).outcome, Outcome::kCommitted);
  h.core().QueryDecision(h.now, 3, kTx1);
  EXPECT_EQ(DecisionFor(h.Drain(), 3), Decision::kCommit);
}

TEST(CoordinatorCore, OnePhaseNoIsAbortedAndSilenceIsUnknown) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kNo));
  Ready r = h.Settle();
  EXPECT_EQ(ResultFor(r, 1).reason, AbortReason::kConflict);
  EXPECT_TRUE(Msgs<AbortMsg>(r).empty()) << "a one-phase NO holds no locks";

  // No answer: the participant may have committed, so the outcome is UNKNOWN
  // and not remembered: a retry with the same txid asks the participant again.
  h.core().Commit(h.now, 2, Writes(kTx2, {0}));
  h.Settle();
  h.core().Tick(h.now + 2000);
  EXPECT_EQ(ResultFor(h.Settle(), 2).outcome, Outcome::kUnknown);
  h.core().Commit(h.now, 3, Writes(kTx2, {0}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 1u);
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes, CallStatus::kUnavailable));
  EXPECT_EQ(ResultFor(h.Settle(), 3).outcome, Outcome::kUnknown);
}

// ---- validation and limits ---------------------------------------------------------------

TEST(CoordinatorCore, BadRequestsGetClearErrors) {
  Harness h;
  h.StartFresh();
  auto expect_error = [&](CommitRequest req, ErrorCode code, std::string_view needle) {
    static RequestToken token = 1000;
    ++token;
    h.core().Commit(h.now, token, std::move(req));
    Ready r = h.Drain();
    const Error* e = ErrorFor(r, token);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->code, code);
    EXPECT_NE(e->message.find(needle), std::string::npos) << e->message;
    EXPECT_TRUE(r.send.empty());
  };
  expect_error(Req(kTx1, {}, {{"", std::string("v")}}), ErrorCode::kBadArgument, "empty");
  expect_error(Req(kTx1, {{"", 1}}, {}), ErrorCode::kBadArgument, "empty");
  expect_error(Req(kTx1, {}, {{std::string(kKeyBytesMax + 1, 'k'), std::string("v")}}),
               ErrorCode::kBadArgument, "key of");
  expect_error(Req(kTx1, {}, {{"k", std::string(kValueBytesMax + 1, 'v')}}),
               ErrorCode::kBadArgument, "value of");
  expect_error(Req(kTx1, {}, {{"k", std::string("a")}, {"k", std::nullopt}}),
               ErrorCode::kBadArgument, "written twice");
  expect_error(Req(kTx1, {{"k", -1}}, {}), ErrorCode::kBadArgument, "negative");
  std::vector<WriteItem> many;
  for (size_t i = 0; i <= kTxKeysMax; ++i) many.push_back({"k" + std::to_string(i), std::nullopt});
  expect_error(Req(kTx1, {}, many), ErrorCode::kBadArgument, "keys");
  std::vector<WriteItem> big;
  for (int i = 0; i < 5; ++i)
    big.push_back({"k" + std::to_string(i), std::string(kValueBytesMax, 'v')});
  expect_error(Req(kTx1, {}, big), ErrorCode::kBadArgument, "bytes");
  CommitRequest wrong = Writes(kTx1, {0});
  wrong.shard_map_version = 2;
  expect_error(wrong, ErrorCode::kWrongShard, "shard map version");
  EXPECT_EQ(h.core().in_flight(), 0u);

  Harness empty(Opts(0));
  empty.StartFresh();
  empty.core().Commit(empty.now, 1, Req(kTx1, {}, {{"k", std::string("v")}}));
  Ready er = empty.Drain();
  const Error* e = ErrorFor(er, 1);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kUnavailable);
  EXPECT_EQ(empty.core().shard_map().participants.size(), 0u);
}

TEST(CoordinatorCore, InFlightLimitRefusesWithTooBusy) {
  CoreOptions o = Opts();
  o.in_flight_tx_max = 2;
  Harness h(o);
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  h.core().Commit(h.now, 2, Writes(kTx2, {0, 1}));
  h.core().Commit(h.now, 3, Writes(kTx3, {0, 1}));
  Ready r = h.Drain();
  const Error* e = ErrorFor(r, 3);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kUnavailable);
  EXPECT_NE(e->message.find("too busy"), std::string::npos);
  EXPECT_EQ(Msgs<PrepareMsg>(r).size(), 4u);
  EXPECT_EQ(h.core().stats().rejected_busy, 1u);
}

TEST(CoordinatorCore, TooManyParticipantsIsRefused) {
  CoreOptions o = Opts();
  o.participants_per_tx_max = 2;
  Harness h(o);
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1, 2}));
  Ready r = h.Drain();
  const Error* e = ErrorFor(r, 1);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kBadArgument);
}

// ---- epochs and fencing ----------------------------------------------------------------

// Epoch bounds (common/types.h kEpochJumpMax): a STALE_EPOCH naming an epoch
// no coordinator can hold (a participant poisoned before epochs were
// bounded) fails that call only; one within the bound still fences.
TEST(CoordinatorCore, StaleEpochFarAboveOursDoesNotFence) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  h.core().Commit(h.now, 2, Writes(kTx2, {0, 2}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  PrepareReply forged = Vote_(prepares[0].first, Vote::kYes, CallStatus::kStaleEpoch);
  forged.current_epoch = 1'000'000'000'000'000;
  h.core().OnPrepareReply(h.now, forged);
  AckReply ack{prepares[0].first.id,    kTx1,   prepares[0].first.to,
               CallStatus::kStaleEpoch, "boom", forged.current_epoch};
  h.core().OnCommitReply(h.now, ack);
  h.core().OnAbortReply(h.now, ack);
  Ready r = h.Settle();
  EXPECT_FALSE(h.core().fenced());
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kAborted) << "that participant failed the call";
  // The other transaction is unaffected and commits.
  for (const auto& [m, p] : prepares) {
    if (p.txid == kTx2) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  }
  r = h.Settle();
  EXPECT_FALSE(r.persist.empty()) << "kTx2's DECISION";
  // Within the bound: a newer coordinator may exist.
  h.core().Commit(h.now, 3, Writes(kTx3, {0, 1}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  PrepareReply newer = Vote_(prepares[0].first, Vote::kYes, CallStatus::kStaleEpoch);
  newer.current_epoch = h.core().epoch() + kEpochJumpMax;
  h.core().OnPrepareReply(h.now, newer);
  h.Settle();
  EXPECT_TRUE(h.core().fenced());
}

TEST(CoordinatorCore, StaleEpochFencesTheCoordinator) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  h.core().Commit(h.now, 2, Writes(kTx2, {0, 2}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes, CallStatus::kStaleEpoch));
  Ready r = h.Settle();
  EXPECT_TRUE(h.core().fenced());
  EXPECT_EQ(ResultFor(r, 1).reason, AbortReason::kCoordinatorFailover);
  EXPECT_EQ(ResultFor(r, 2).reason, AbortReason::kCoordinatorFailover);
  ASSERT_EQ(r.persist.size(), 2u) << "each ABORTED answer is logged first";
  h.core().Commit(h.now, 3, Writes(kTx3, {0, 1}));
  h.core().QueryDecision(h.now, 4, TxId{8, 8});
  r = h.Settle();
  ASSERT_NE(ErrorFor(r, 3), nullptr);
  EXPECT_EQ(ErrorFor(r, 3)->code, ErrorCode::kNotPrimary);
  EXPECT_EQ(DecisionFor(r, 4), Decision::kUnknown);
  // Known outcomes are still answered.
  h.core().Commit(h.now, 5, Writes(kTx1, {0, 1}));
  EXPECT_EQ(ResultFor(h.Settle(), 5).reason, AbortReason::kCoordinatorFailover);
}

// ---- recovery ------------------------------------------------------------------------------

TEST(CoordinatorCore, RecoveryResendsCommitForDecisionWithoutEnd) {
  Harness h;
  h.StartFresh();
  auto c1 = CommitThrough(h, kTx1, 1, {0, 1});  // stays without END
  auto c2 = CommitThrough(h, kTx2, 2, {1, 2});
  for (auto& [m, c] : c2) h.core().OnCommitReply(h.now, Ack(m));
  h.Drain();
  h.Sync();  // END of kTx2 durable

  ASSERT_TRUE(h.CrashAndRecover().ok());
  Ready r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u) << "a new epoch for the new incarnation";
  EXPECT_EQ(r.persist[0].type, RecordType::kEpoch);
  EXPECT_EQ(h.core().epoch(), 2);
  auto commits = Msgs<CommitMsg>(r);
  ASSERT_EQ(commits.size(), 2u);
  EXPECT_EQ(commits[0].second.txid, kTx1);
  EXPECT_FALSE(commits[0].second.first_of_tx);
  EXPECT_EQ(commits[0].first.to, kParticipants[0]);
  EXPECT_EQ(commits[1].first.to, kParticipants[1]);

  // Both outcomes are known after the restart.
  h.core().Commit(h.now, 10, Writes(kTx1, {0, 1}));
  h.core().Commit(h.now, 11, Writes(kTx2, {1, 2}));
  h.core().QueryDecision(h.now, 12, kTx2);
  r = h.Drain();
  EXPECT_EQ(ResultFor(r, 10).outcome, Outcome::kCommitted);
  EXPECT_EQ(ResultFor(r, 11).outcome, Outcome::kCommitted);
  EXPECT_EQ(DecisionFor(r, 12), Decision::kCommit);
  EXPECT_TRUE(r.send.empty());

  // The re-driven transaction ends normally.
  for (auto& [m, c] : commits) h.core().OnCommitReply(h.now, Ack(m));
  r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(r.persist[0].type, RecordType::kEnd);
}

TEST(CoordinatorCore, CrashBeforeDecisionIsDurableMeansAbort) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  for (auto& [m, p] : Msgs<PrepareMsg>(h.Drain()))
    h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  EXPECT_EQ(h.Drain().persist.size(), 1u);  // DECISION appended, never synced
  ASSERT_TRUE(h.CrashAndRecover().ok());
  EXPECT_TRUE(h.Drain().send.empty());
  h.core().QueryDecision(h.now, 2, kTx1);
  EXPECT_EQ(DecisionFor(h.Drain(), 2), Decision::kAbort);
}

TEST(CoordinatorCore, CrashAfterEndLostOnlyResendsCommit) {
  Harness h;
  h.StartFresh();
  auto commits = CommitThrough(h, kTx1, 1, {0, 2});
  for (auto& [m, c] : commits) h.core().OnCommitReply(h.now, Ack(m));
  EXPECT_EQ(h.Drain().persist.size(), 1u);  // END, not synced: lost in the crash
  ASSERT_TRUE(h.CrashAndRecover().ok());
  auto again = Msgs<CommitMsg>(h.Drain());
  EXPECT_EQ(again.size(), 2u);
}

TEST(CoordinatorCore, CorruptRecordStopsReplay) {
  CoordinatorCore core(Opts());
  EXPECT_TRUE(core.Replay(1, 1, EncodePayload(EpochRecord{2})).ok());
  Status s = core.Replay(2, 2, "short");
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("LSN 2"), std::string::npos);
  EXPECT_TRUE(core.Replay(3, 1, EncodePayload(EpochRecord{1})).IsCorruption())
      << "the epoch never goes back";
}

TEST(CoordinatorCore, RecoveredEpochIsFollowedByANewOneStampedOnEveryMessage) {
  CoordinatorCore core(Opts());
  ASSERT_TRUE(core.Replay(1, 1, EncodePayload(EpochRecord{1})).ok());
  ASSERT_TRUE(core.Replay(2, 1, EncodePayload(EpochRecord{4})).ok());
  core.Start(5);
  Ready r = core.TakeReady();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(std::get<EpochRecord>(
                *DecodeRecord(static_cast<uint8_t>(r.persist[0].type), r.persist[0].payload))
                .epoch,
            5);
  EXPECT_EQ(core.epoch(), 5);
  core.OnPersisted(5, r.persist[0].tag, 3);
  core.Commit(5, 1, Writes(kTx1, {0, 1}));
  r = core.TakeReady();
  auto prepares = Msgs<PrepareMsg>(r);
  ASSERT_EQ(prepares.size(), 2u);
  for (auto& [m, p] : prepares) {
    EXPECT_EQ(p.epoch, 5);
    EXPECT_EQ(p.attempt, (Attempt{5, 1}));
  }
}

// HaCore starts a core at the epoch it has just established (its EPOCH
// record is the last one replayed): no second bump.
TEST(CoordinatorCore, StartAtTheReplayedEpochWritesNoEpoch) {
  CoordinatorCore core(Opts());
  ASSERT_TRUE(core.Replay(1, 1, EncodePayload(EpochRecord{4})).ok());
  core.Start(5, CoordinatorCore::StartEpoch::kReplayed);
  EXPECT_TRUE(core.TakeReady().persist.empty());
  EXPECT_EQ(core.epoch(), 4);
}

// ---- log retention ------------------------------------------------------------------------

TEST(CoordinatorCore, TruncationKeepsUnendedDecisionsRememberedCommitsAndTheEpoch) {
  CoreOptions o = Opts();
  o.committed_outcomes_max = 2;
  o.epoch_rewrite_lsn_gap = 3;
  Harness h(o);
  h.StartFresh();  // EPOCH at LSN 1
  // kTx1: DECISION at LSN 2, never acknowledged: it pins the log.
  CommitThrough(h, kTx1, 1, {0, 1});
  uint64_t truncate = 0;
  for (uint64_t i = 10; i < 20; ++i) {  // DECISION at 3, 5, ..., 21; END at 4, ..., 22
    auto commits = CommitThrough(h, TxId{1, i}, i, {1, 2});
    for (auto& [m, c] : commits) h.core().OnCommitReply(h.now, Ack(m));
    truncate = std::max(truncate, h.Drain().truncate_before);
    truncate = std::max(truncate, h.Sync().truncate_before);
  }
  EXPECT_LE(truncate, 2u) << "kTx1's DECISION (LSN 2) is still needed";

  // After a restart kTx1 is re-driven; once it ends, only the two remembered
  // commits (DECISIONs at 19 and 21) and the EPOCH are needed. The EPOCH is
  // re-written so the cut can pass the old one.
  ASSERT_TRUE(h.CrashAndRecover().ok());
  Ready r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(r.persist[0].type, RecordType::kEpoch) << "the restart's new epoch";
  EXPECT_TRUE(r.persist[0].forced);
  for (auto& [m, c] : Msgs<CommitMsg>(r)) h.core().OnCommitReply(h.now, Ack(m));
  r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(r.persist[0].type, RecordType::kEnd);
  EXPECT_EQ(r.truncate_before, 0u) << "not before the new EPOCH is durable";
  r = h.Sync();
  EXPECT_EQ(r.truncate_before, 19u);

  h.TruncateBefore(r.truncate_before);
  ASSERT_TRUE(h.CrashAndRecover().ok());
  r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u) << "the EPOCH survived the cut, and the next one follows it";
  EXPECT_TRUE(r.send.empty()) << "nothing left to re-drive";
  EXPECT_EQ(h.core().epoch(), 3);
  h.core().Commit(h.now, 98, Writes(TxId{1, 18}, {1, 2}));
  h.core().Commit(h.now, 99, Writes(TxId{1, 19}, {1, 2}));
  r = h.Drain();
  EXPECT_EQ(ResultFor(r, 98).outcome, Outcome::kCommitted);
  EXPECT_EQ(ResultFor(r, 99).outcome, Outcome::kCommitted);
}

// A participant that never acknowledges COMMIT (down for hours) must not pin
// the decision log: its open DECISION is written again near the head, and
// truncation moves past the first copy; a restart from the truncated log
// still re-drives it.
TEST(CoordinatorCore, AnOpenDecisionFarBehindIsWrittenAgainSoTheLogCanBeTruncated) {
  CoreOptions o = Opts();
  o.committed_outcomes_max = 2;
  o.epoch_rewrite_lsn_gap = 3;
  o.decision_relog_lsn_gap = 6;
  Harness h(o);
  h.StartFresh();  // EPOCH at LSN 1
  // kTx1: DECISION at LSN 2; participant 0 never acknowledges.
  auto first = CommitThrough(h, kTx1, 1, {0, 1});
  for (auto& [m, c] : first) {
    if (m.to == kParticipants[1]) h.core().OnCommitReply(h.now, Ack(m));
  }
  uint64_t truncate = 0;
  for (uint64_t i = 10; i < 30; ++i) {
    auto commits = CommitThrough(h, TxId{1, i}, i, {1, 2});
    for (auto& [m, c] : commits) h.core().OnCommitReply(h.now, Ack(m));
    truncate = std::max(truncate, h.Drain().truncate_before);
    truncate = std::max(truncate, h.Sync().truncate_before);
  }
  EXPECT_GE(h.core().stats().decisions_relogged, 2u) << "kTx1's DECISION was not carried forward";
  EXPECT_GT(truncate, 30u) << "the log is still pinned by kTx1's first DECISION";

  h.TruncateBefore(truncate);
  ASSERT_TRUE(h.CrashAndRecover().ok());
  Ready r = h.Drain();
  bool redriven = false;
  for (auto& [m, c] : Msgs<CommitMsg>(r)) {
    if (c.txid == kTx1 && m.to == kParticipants[0]) redriven = true;
    h.core().OnCommitReply(h.now, Ack(m));
  }
  EXPECT_TRUE(redriven) << "kTx1's COMMIT is not re-sent after the restart";
  r = h.Drain();
  bool ended = false;
  for (const PersistRecord& p : r.persist) ended |= p.type == RecordType::kEnd && p.txid == kTx1;
  EXPECT_TRUE(ended);
}

TEST(CoordinatorCore, OpenDecisionsFarBehindAreCopiedTogetherInOneGroupCommit) {
  // Five transactions participant 0 never acknowledges (it stopped after its
  // votes). One copy at a time, each waiting for the sync of the one before,
  // fell behind the traffic; the older half is copied at once.
  CoreOptions o = Opts();
  o.committed_outcomes_max = 2;
  o.epoch_rewrite_lsn_gap = 8;
  o.decision_relog_lsn_gap = 8;
  Harness h(o);
  h.StartFresh();
  for (uint64_t i = 1; i <= 5; ++i) {
    auto commits = CommitThrough(h, TxId{7, i}, i, {0, 1});
    for (auto& [m, c] : commits) {
      if (m.to == kParticipants[1]) h.core().OnCommitReply(h.now, Ack(m));
    }
  }
  uint64_t truncate = 0;
  for (uint64_t i = 10; i < 40; ++i) {
    auto commits = CommitThrough(h, TxId{1, i}, i, {1, 2});
    for (auto& [m, c] : commits) h.core().OnCommitReply(h.now, Ack(m));
    truncate = std::max(truncate, h.Drain().truncate_before);
    truncate = std::max(truncate, h.Sync().truncate_before);
  }
  EXPECT_EQ(h.most_copies_at_once, 5u) << "the open DECISIONs were not copied together";
  EXPECT_GE(h.core().stats().decisions_relogged, 10u);
  EXPECT_GT(truncate, 40u) << "the log is still pinned by the first DECISIONs";
}

// ---- determinism ---------------------------------------------------------------------------

std::string Trace(Harness& h) {
  std::string out;
  auto dump = [&](const Ready& r) {
    for (const PersistRecord& p : r.persist)
      out += "P" + std::to_string(static_cast<int>(p.type)) + p.payload;
    for (const OutMessage& m : r.send)
      out += "S" + std::to_string(m.id) + m.to + std::to_string(m.body.index());
    for (const Reply& rep : r.replies)
      out += "R" + std::to_string(rep.token) + std::to_string(rep.body.index());
  };
  h.core().Start(h.now);
  dump(h.Drain());
  dump(h.Sync());
  for (uint64_t i = 1; i <= 20; ++i) {
    h.core().Commit(h.now, i, Writes(TxId{3, i}, {i % 3, (i + 1) % 3}));
  }
  Ready r = h.Drain();
  dump(r);
  int n = 0;
  for (auto& [m, p] : Msgs<PrepareMsg>(r)) {
    h.core().OnPrepareReply(h.now, Vote_(m, ++n % 7 == 0 ? Vote::kNo : Vote::kYes));
  }
  dump(h.Drain());
  dump(h.Sync());
  h.core().Tick(h.now + 5000);
  dump(h.Drain());
  return out;
}

TEST(CoordinatorCore, SameInputsGiveSameOutputs) {
  Harness a, b;
  std::string ta = Trace(a), tb = Trace(b);
  EXPECT_FALSE(ta.empty());
  EXPECT_EQ(ta, tb);
}

// ---- failure detection (docs/design.md "Failure detection, replication, fencing") ------

TEST(CoordinatorCore, SuspectedParticipantAbortsUndecidedTransactionsWaitingForItsVote) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));  // waits on 0 and 1
  h.core().Commit(h.now, 2, Writes(kTx2, {1, 2}));  // does not touch 0
  Ready r = h.Settle();
  auto prepares = Msgs<PrepareMsg>(r);
  ASSERT_EQ(prepares.size(), 4u);
  h.core().SetParticipantSuspected(h.now, kParticipants[0], true);
  r = h.Settle();
  const CommitResult& c = ResultFor(r, 1);
  EXPECT_EQ(c.outcome, Outcome::kAborted);
  EXPECT_EQ(c.reason, AbortReason::kParticipantUnavailable);
  // ABORT goes to both (either may hold locks); kTx2 is untouched.
  EXPECT_EQ(Msgs<AbortMsg>(r).size(), 2u);
  EXPECT_EQ(r.replies.size(), 1u);
  EXPECT_EQ(h.core().in_flight(), 1u);
  // A repeated verdict changes nothing.
  h.core().SetParticipantSuspected(h.now, kParticipants[0], true);
  EXPECT_TRUE(h.Settle().empty());
}

TEST(CoordinatorCore, NewTransactionTouchingASuspectedShardFailsFastWithoutSending) {
  Harness h;
  h.StartFresh();
  h.core().SetParticipantSuspected(h.now, kParticipants[2], true);
  EXPECT_TRUE(h.core().participant_suspected(kParticipants[2]));
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 2}));
  Ready r = h.Settle();
  EXPECT_TRUE(r.send.empty());
  EXPECT_EQ(ResultFor(r, 1).reason, AbortReason::kParticipantUnavailable);
  // Transactions that do not touch it still commit.
  auto commits = CommitThrough(h, kTx2, 2, {0, 1});
  EXPECT_EQ(commits.size(), 2u);
  // Back again: new transactions reach it.
  h.core().SetParticipantSuspected(h.now, kParticipants[2], false);
  h.core().Commit(h.now, 3, Writes(kTx3, {0, 2}));
  EXPECT_EQ(Msgs<PrepareMsg>(h.Drain()).size(), 2u);
}

TEST(CoordinatorCore, SuspectedOnePhaseParticipantGivesUnknownNotAbort) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {1}));
  h.Settle();
  h.core().SetParticipantSuspected(h.now, kParticipants[1], true);
  EXPECT_EQ(ResultFor(h.Settle(), 1).outcome, Outcome::kUnknown);
  // A retry of the same txid while it is suspected: still unknown, never a
  // fast-fail ABORTED (it may have committed there).
  h.core().Commit(h.now, 2, Writes(kTx1, {1}));
  EXPECT_EQ(ResultFor(h.Settle(), 2).outcome, Outcome::kUnknown);
  h.core().Commit(h.now, 3, Writes(kTx2, {1}));
  EXPECT_EQ(ResultFor(h.Settle(), 3).outcome, Outcome::kAborted);
}

// KB2a (tests/sim): after a coordinator restart the in-memory memory of an
// unknown one-phase outcome is gone, so only the client's is_retry flag says
// that an earlier attempt may have committed.
TEST(CoordinatorCore, RetryAfterRestartIsNotFastFailedAsAborted) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {1}));  // one-phase, answer lost
  Ready r = h.Settle();
  ASSERT_EQ(Msgs<PrepareMsg>(r).size(), 1u);
  ASSERT_TRUE(h.CrashAndRecover().ok());
  h.Settle();
  h.Sync();
  h.core().SetParticipantSuspected(h.now, kParticipants[1], true);
  h.Settle();
  CommitRequest retry = Writes(kTx1, {1});
  retry.is_retry = true;
  h.core().Commit(h.now, 2, retry);
  r = h.Settle();
  EXPECT_TRUE(r.send.empty());
  EXPECT_EQ(ResultFor(r, 2).outcome, Outcome::kUnknown) << ResultFor(r, 2).detail;
  // Not remembered as anything: once the participant is back, a further retry asks it.
  h.core().SetParticipantSuspected(h.now, kParticipants[1], false);
  h.Settle();
  h.core().Commit(h.now, 3, retry);
  r = h.Settle();
  auto prepares = Msgs<PrepareMsg>(r);
  ASSERT_EQ(prepares.size(), 1u);
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  EXPECT_EQ(ResultFor(h.Settle(), 3).outcome, Outcome::kCommitted);
  // A multi-participant retry is not fast-failed as ABORTED either; a first
  // attempt (no is_retry) still is.
  h.core().SetParticipantSuspected(h.now, kParticipants[0], true);
  h.Settle();
  CommitRequest multi = Writes(kTx2, {0, 2});
  multi.is_retry = true;
  h.core().Commit(h.now, 4, multi);
  EXPECT_EQ(ResultFor(h.Settle(), 4).outcome, Outcome::kUnknown);
  h.core().Commit(h.now, 5, Writes(kTx3, {0, 2}));
  EXPECT_EQ(ResultFor(h.Settle(), 5).outcome, Outcome::kAborted);
}

TEST(CoordinatorCore, OnePhaseUnknownTxFromParticipantIsUnknownNeverAborted) {
  Harness h;
  h.StartFresh();
  // Not even a retry: the participant's "outcome unknown" alone decides it.
  h.core().Commit(h.now, 1, Writes(kTx1, {2}));
  Ready r = h.Settle();
  auto prepares = Msgs<PrepareMsg>(r);
  ASSERT_EQ(prepares.size(), 1u);
  ASSERT_TRUE(prepares[0].second.one_phase);
  PrepareReply unknown = Vote_(prepares[0].first, Vote::kNo, CallStatus::kError);
  unknown.error_code = ErrorCode::kUnknownTx;
  h.core().OnPrepareReply(h.now, unknown);
  r = h.Settle();
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kUnknown) << ResultFor(r, 1).detail;
  EXPECT_TRUE(Msgs<AbortMsg>(r).empty());
  // Another error code on a first attempt is still an abort ...
  h.core().Commit(h.now, 2, Writes(kTx2, {2}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 1u);
  PrepareReply refused = Vote_(prepares[0].first, Vote::kNo, CallStatus::kError);
  refused.error_code = ErrorCode::kUnavailable;
  h.core().OnPrepareReply(h.now, refused);
  EXPECT_EQ(ResultFor(h.Settle(), 2).outcome, Outcome::kAborted);
  // ... but not on a retry (an earlier attempt may have committed), nor a stale epoch.
  CommitRequest retry = Writes(kTx3, {2});
  retry.is_retry = true;
  h.core().Commit(h.now, 3, retry);
  prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 1u);
  refused.msg_id = prepares[0].first.id;
  refused.txid = kTx3;
  h.core().OnPrepareReply(h.now, refused);
  EXPECT_EQ(ResultFor(h.Settle(), 3).outcome, Outcome::kUnknown);
  CommitRequest retry2 = Writes(TxId{0xabc, 4}, {2});
  retry2.is_retry = true;
  h.core().Commit(h.now, 4, retry2);
  prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 1u);
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kNo, CallStatus::kStaleEpoch));
  EXPECT_EQ(ResultFor(h.Settle(), 4).outcome, Outcome::kUnknown);
}

// Found by the failover simulator: after a failover the new primary does not
// remember decisions ENDed before its last snapshot, so a retried
// multi-participant commit whose attempt fails without a NO vote may be one
// that committed long ago: UNKNOWN (ask again), never ABORTED, and nothing
// remembered. A NO vote still aborts it.
TEST(CoordinatorCore, MultiParticipantRetryFailingWithoutAVoteIsUnknown) {
  Harness h;
  h.StartFresh();
  CommitRequest retry = Writes(kTx1, {0, 1});
  retry.is_retry = true;
  h.core().Commit(h.now, 1, retry);
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  h.core().OnPrepareReply(h.now, Vote_(prepares[1].first, Vote::kYes, CallStatus::kTimeout));
  Ready r = h.Settle();
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kUnknown) << ResultFor(r, 1).detail;
  EXPECT_FALSE(Msgs<AbortMsg>(r).empty()) << "the locks of this attempt are still released";
  // Not remembered: the next retry runs again at once (a new attempt, which
  // the late ABORTs of this one cannot touch) and can commit.
  h.core().Commit(h.now, 2, retry);
  prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  h.Drain();
  EXPECT_EQ(ResultFor(h.Sync(), 2).outcome, Outcome::kCommitted);
  // Prepare timeout of a retry: UNKNOWN too; a first attempt is ABORTED.
  h.core().Commit(h.now, 3, [] {
    CommitRequest c = Writes(kTx2, {0, 1});
    c.is_retry = true;
    return c;
  }());
  h.core().Commit(h.now, 4, Writes(kTx3, {0, 1}));
  h.Settle();
  h.now += 5000;
  h.core().Tick(h.now);
  r = h.Settle();
  EXPECT_EQ(ResultFor(r, 3).outcome, Outcome::kUnknown);
  EXPECT_EQ(ResultFor(r, 4).outcome, Outcome::kAborted);
  // A NO vote proves it: ABORTED even for a retry.
  CommitRequest no = Writes(TxId{0xabc, 9}, {0, 1});
  no.is_retry = true;
  h.core().Commit(h.now, 5, no);
  prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kNo));
  EXPECT_EQ(ResultFor(h.Settle(), 5).outcome, Outcome::kAborted);
}

// Found by the simulator (tests/sim/README.md, `--small-tables --seed 21554`):
// attempt k of a retried txid ends without a vote (UNKNOWN, nothing
// remembered) and its ABORT to participant 0 is still on its way when the
// client's retry starts attempt k+1. The two attempts carry different stamps,
// and the ABORT names attempt k: participant 0 applies it to nothing newer
// (participant/core_test.cc LateAbortOfAnEarlierAttempt...). So the retry
// runs at once - once a 2 s "abort hold" answered it UNKNOWN instead.
TEST(CoordinatorCore, EveryAttemptHasItsOwnStampAndItsAbortNamesIt) {
  Harness h;
  h.StartFresh();
  CommitRequest retry = Writes(kTx1, {0, 1});
  retry.is_retry = true;
  // Attempt k: participant 0 votes YES, participant 1 is unreachable.
  h.core().Commit(h.now, 1, retry);
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  const Attempt k = prepares[0].second.attempt;
  EXPECT_TRUE(k.known());
  EXPECT_EQ(k.epoch, h.core().epoch());
  EXPECT_EQ(prepares[1].second.attempt, k) << "one stamp for every PREPARE of an attempt";
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  h.core().OnPrepareReply(h.now, Vote_(prepares[1].first, Vote::kNo, CallStatus::kUnavailable));
  Ready r = h.Drain();
  ASSERT_EQ(ResultFor(r, 1).outcome, Outcome::kUnknown) << ResultFor(r, 1).detail;
  auto aborts = Msgs<AbortMsg>(r);
  ASSERT_FALSE(aborts.empty());
  EXPECT_EQ(aborts[0].second.attempt, k) << "the ABORT names the attempt it ends";
  // The retry comes at once: attempt k+1, a newer stamp.
  h.now += 1;
  h.core().Commit(h.now, 2, retry);
  prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  EXPECT_GT(prepares[0].second.attempt, k);
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  h.Drain();
  EXPECT_EQ(ResultFor(h.Sync(), 2).outcome, Outcome::kCommitted);
}

// A participant's question names the attempt it holds; the answer is about
// that attempt, and an earlier attempt's question does not end the one
// running now.
TEST(CoordinatorCore, QueryDecisionAboutAnEarlierAttemptDoesNotAbortTheRunningOne) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  const Attempt running = prepares[0].second.attempt;
  h.core().QueryDecision(h.now, 2, kTx1, Fingerprint{}, Attempt{running.epoch, running.seq - 1});
  Ready r = h.Drain();
  ASSERT_EQ(r.replies.size(), 1u);
  EXPECT_EQ(std::get<Decision>(r.replies[0].body), Decision::kAbort);
  EXPECT_TRUE(Msgs<AbortMsg>(r).empty()) << "the running attempt goes on";
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  h.Drain();
  EXPECT_EQ(ResultFor(h.Sync(), 1).outcome, Outcome::kCommitted);
  // An attempt of a newer epoch than ours: another coordinator's, unknown here.
  h.core().QueryDecision(h.now, 3, kTx2, Fingerprint{}, Attempt{h.core().epoch() + 1, 1});
  EXPECT_EQ(std::get<Decision>(h.Drain().replies.at(0).body), Decision::kUnknown);
}

// Every start is a new epoch (stamps restart at seq 1), persisted before any
// commit is decided: the previous incarnation's attempts - and its late
// ABORTs - belong to an older epoch.
TEST(CoordinatorCore, EveryStartDecidesAtANewEpoch) {
  Harness h;
  h.StartFresh();
  const Epoch first = h.core().epoch();
  EXPECT_EQ(first, 1);
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  const Attempt before = Msgs<PrepareMsg>(h.Drain()).at(0).second.attempt;
  ASSERT_TRUE(h.CrashAndRecover().ok());
  EXPECT_EQ(h.core().epoch(), first + 1);
  Ready r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(r.persist[0].type, RecordType::kEpoch);
  EXPECT_TRUE(r.persist[0].forced);
  h.core().Commit(h.now, 2, Writes(kTx2, {0, 1}));
  r = h.Drain();
  const Error* e = ErrorFor(r, 2);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kUnavailable) << "no commit before the new epoch is durable";
  h.Sync();
  h.core().Commit(h.now, 3, Writes(kTx2, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  EXPECT_GT(prepares[0].second.attempt, before);
  EXPECT_EQ(prepares[0].second.attempt.epoch, first + 1);
  EXPECT_EQ(prepares[0].second.epoch, first + 1);
  // A restart without a crash in between moves on again.
  ASSERT_TRUE(h.CrashAndRecover().ok());
  EXPECT_EQ(h.core().epoch(), first + 2);
}

// A participant's QueryDecision of a txid unknown here is a presumed abort,
// remembered; any participant can ask about random txids. One-phase commits
// are remembered apart from those aborts, so the flood never pushes one out:
// the client's retry still gets COMMITTED, without running the transaction
// again.
TEST(CoordinatorCore, PresumedAbortsOfRandomTxidsNeverPushAOnePhaseCommitOut) {
  CoreOptions o = Opts();
  o.other_outcomes_max = 2;
  Harness h(o);
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 1u);
  ASSERT_TRUE(prepares[0].second.one_phase);
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  ASSERT_EQ(ResultFor(h.Settle(), 1).outcome, Outcome::kCommitted);
  for (uint64_t i = 0; i < 100; ++i) h.core().QueryDecision(h.now, 100 + i, TxId{0xbad, i});
  h.Settle();
  CommitRequest retry = Writes(kTx1, {0});
  retry.is_retry = true;
  h.core().Commit(h.now, 2, retry);
  Ready r = h.Settle();
  EXPECT_TRUE(Msgs<PrepareMsg>(r).empty()) << "answered from memory";
  EXPECT_EQ(ResultFor(r, 2).outcome, Outcome::kCommitted);
  // The aborts stay bounded: the oldest presumed abort is forgotten.
  // (A client's GetOutcome reports a presumed abort only once it is logged,
  // so what is remembered is seen through a repeated Commit.)
  EXPECT_EQ(h.core().RememberedOutcome(TxId{0xbad, 99}), Outcome::kUnknown);
  h.core().Commit(h.now, 3, Writes(TxId{0xbad, 0}, {0}));
  EXPECT_EQ(Msgs<PrepareMsg>(h.Settle()).size(), 1u) << "forgotten: runs";
  h.core().Commit(h.now, 4, Writes(TxId{0xbad, 99}, {0}));
  r = h.Settle();
  EXPECT_TRUE(Msgs<PrepareMsg>(r).empty());
  EXPECT_EQ(ResultFor(r, 4).outcome, Outcome::kAborted);
  EXPECT_EQ(h.core().RememberedOutcome(TxId{0xbad, 99}), Outcome::kAborted) << "now logged";
}

// Found by the failover simulator: the HA layer holds a durable DECISION back
// from OnPersisted until the backup acked it, while a later EPOCH (the
// primary fencing its lost backup out) becomes durable. Truncation must not
// pass the held DECISION, or a crash loses a decision that then commits.
TEST(CoordinatorCore, TruncationNeverPassesADecisionHeldBeforeItsCommitPoint) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  Ready r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  ASSERT_EQ(r.persist[0].type, RecordType::kDecision);
  const PersistTag decision_tag = r.persist[0].tag;
  const uint64_t decision_lsn = h.log().back().lsn;
  h.core().BumpEpoch(h.now, 2);
  r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  ASSERT_EQ(r.persist[0].type, RecordType::kEpoch);
  // Only the EPOCH is reported durable; the DECISION waits.
  uint64_t truncate = 0;
  h.core().OnPersisted(h.now, r.persist[0].tag, h.log().back().lsn);
  truncate = std::max(truncate, h.Drain().truncate_before);
  EXPECT_LE(truncate, decision_lsn) << "the held DECISION would be truncated";
  h.core().OnPersisted(h.now, decision_tag, decision_lsn);
  r = h.Drain();
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kCommitted);
  EXPECT_LE(r.truncate_before, decision_lsn) << "an un-ENDed DECISION is kept";
}

TEST(CoordinatorCore, DecidedCommitIsDeliveredWhenTheSuspectedParticipantReturns) {
  Harness h;
  h.StartFresh();
  auto commits = CommitThrough(h, kTx1, 1, {0, 1});
  ASSERT_EQ(commits.size(), 2u);
  h.core().OnCommitReply(h.now, Ack(commits[0].first));
  h.core().OnCommitReply(h.now, Ack(commits[1].first, CallStatus::kUnavailable));  // backoff
  h.core().SetParticipantSuspected(h.now, kParticipants[1], true);
  Ready r = h.Drain();
  EXPECT_TRUE(Msgs<CommitMsg>(r).empty());
  EXPECT_EQ(h.core().committing(), 1u);
  h.core().SetParticipantSuspected(h.now, kParticipants[1], false);
  r = h.Drain();
  auto again = Msgs<CommitMsg>(r);
  ASSERT_EQ(again.size(), 1u);  // re-sent at once, not after the backoff
  EXPECT_EQ(again[0].first.to, kParticipants[1]);
  h.core().OnCommitReply(h.now, Ack(again[0].first));
  r = h.Drain();
  ASSERT_EQ(r.persist.size(), 1u);
  EXPECT_EQ(r.persist[0].type, RecordType::kEnd);
}

// ---- replication support ----------------------------------------------------------

TEST(CoordinatorCore, OpenDecisionsListsDecidedTransactionsUntilEnd) {
  Harness h;
  h.StartFresh();
  auto commits = CommitThrough(h, kTx1, 1, {0, 2});
  std::vector<DecisionRecord> open = h.core().OpenDecisions();
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].txid, kTx1);
  EXPECT_EQ(open[0].participants, (std::vector<std::string>{kParticipants[0], kParticipants[2]}));
  for (auto& [m, c] : commits) h.core().OnCommitReply(h.now, Ack(m));
  h.Drain();
  EXPECT_TRUE(h.core().OpenDecisions().empty());
}

TEST(CoordinatorCore, SyncRecordClosesEarlierOpenDecisionsOnReplay) {
  // A backup's log: DECISION A, then a snapshot restating only B.
  CoordinatorCore core(Opts());
  DecisionRecord a{kTx1, 1, true, {kParticipants[0], kParticipants[1]}};
  DecisionRecord b{kTx2, 1, true, {kParticipants[1], kParticipants[2]}};
  ASSERT_TRUE(core.Replay(1, 1, EncodePayload(EpochRecord{1})).ok());
  ASSERT_TRUE(core.Replay(2, 2, EncodePayload(a)).ok());
  ASSERT_TRUE(core.Replay(3, 4, EncodePayload(SyncRecord{2})).ok());
  ASSERT_TRUE(core.Replay(4, 1, EncodePayload(EpochRecord{1})).ok());
  ASSERT_TRUE(core.Replay(5, 2, EncodePayload(b)).ok());
  core.Start(1000);
  Ready r = core.TakeReady();
  auto commits = Msgs<CommitMsg>(r);
  ASSERT_EQ(commits.size(), 2u);  // only B is re-driven
  for (auto& [m, c] : commits) EXPECT_EQ(c.txid, kTx2);
  // Nothing before SYNC counts (a stepped-down node's log may hold DECISIONs
  // that never reached a commit point): A is not known, B is.
  EXPECT_FALSE(core.KnowsCommitted(kTx1));
  EXPECT_TRUE(core.KnowsCommitted(kTx2));
}

}  // namespace
}  // namespace dtx::coordinator

// ---- transaction identity (docs/design.md "Transaction identity") -----------------------

namespace dtx::coordinator {
namespace {

// Commit of a known txid: same content joins or gets the outcome; other
// content is BAD_ARGUMENT "txid reused with different content" in every state
// the txid can be known in - running, deciding, committing, ended.
TEST(CoordinatorCore, TxidReusedWithOtherContentIsRefusedNeverGivenTheOutcome) {
  Harness h;
  h.StartFresh();
  const CommitRequest original = Writes(kTx1, {0, 1});
  CommitRequest other = original;
  other.writes[0].value = "another value";
  auto expect_refused = [&](RequestToken token, const char* when) {
    Ready r = h.Drain();
    const Error* e = ErrorFor(r, token);
    ASSERT_NE(e, nullptr) << when;
    EXPECT_EQ(e->code, ErrorCode::kBadArgument) << when;
    EXPECT_NE(e->message.find("txid reused with different content"), std::string::npos)
        << e->message;
    EXPECT_TRUE(r.send.empty()) << when;
    EXPECT_TRUE(r.persist.empty()) << when;
  };
  h.core().Commit(h.now, 1, original);
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  h.core().Commit(h.now, 2, other);
  expect_refused(2, "preparing");
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  h.Drain();
  h.core().Commit(h.now, 3, other);
  expect_refused(3, "deciding");
  Ready r = h.Sync();
  EXPECT_EQ(ResultFor(r, 1).outcome, Outcome::kCommitted);
  auto commits = Msgs<CommitMsg>(r);
  h.core().Commit(h.now, 4, other);
  expect_refused(4, "committing");
  for (auto& [m, c] : commits) h.core().OnCommitReply(h.now, Ack(m));
  h.Drain();
  h.Sync();  // END
  ASSERT_EQ(h.core().in_flight(), 0u);
  h.core().Commit(h.now, 5, other);
  expect_refused(5, "ended");
  // Order does not matter; the same content is a retry with the recorded outcome.
  CommitRequest reordered = original;
  std::swap(reordered.writes[0], reordered.writes[1]);
  h.core().Commit(h.now, 6, reordered);
  EXPECT_EQ(ResultFor(h.Drain(), 6).outcome, Outcome::kCommitted);
  EXPECT_EQ(h.core().stats().rejected_txid_reused, 4u);
  // Reads count as content too.
  CommitRequest with_read = original;
  with_read.reads.push_back(ReadItem{KeyOn(2), 3});
  h.core().Commit(h.now, 7, with_read);
  expect_refused(7, "a read added");
}

// Aborted, one-phase and unknown outcomes are remembered with their content.
TEST(CoordinatorCore, TxidReuseIsRefusedAfterAbortOnePhaseAndUnknownOutcomes) {
  Harness h;
  h.StartFresh();
  // Aborted (a NO vote).
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kNo));
  ASSERT_EQ(ResultFor(h.Settle(), 1).outcome, Outcome::kAborted);
  h.core().Commit(h.now, 2, Writes(kTx1, {0, 2}));
  Ready d2 = h.Settle();
  const Error* e = ErrorFor(d2, 2);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kBadArgument);
  // One-phase committed.
  h.core().Commit(h.now, 3, Writes(kTx2, {1}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  ASSERT_EQ(ResultFor(h.Settle(), 3).outcome, Outcome::kCommitted);
  h.core().Commit(h.now, 4, Writes(kTx2, {2}));
  Ready d4 = h.Settle();
  e = ErrorFor(d4, 4);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kBadArgument);
  // One-phase without an answer (unknown outcome, not remembered as one).
  h.core().Commit(h.now, 5, Writes(kTx3, {1}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes, CallStatus::kUnavailable));
  ASSERT_EQ(ResultFor(h.Settle(), 5).outcome, Outcome::kUnknown);
  h.core().Commit(h.now, 6, Writes(kTx3, {0}));
  Ready d6 = h.Settle();
  e = ErrorFor(d6, 6);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kBadArgument);
  h.core().Commit(h.now, 7, Writes(kTx3, {1}));  // the same content: asked again
  EXPECT_EQ(Msgs<PrepareMsg>(h.Drain()).size(), 1u);
}

// PREPARE carries the fingerprint of the whole transaction (the same to every
// participant), and the DECISION record keeps it: after a restart a reuse is
// still refused.
TEST(CoordinatorCore, PrepareCarriesTheFingerprintAndTheDecisionKeepsItAcrossARestart) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 2}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 2u);
  EXPECT_TRUE(prepares[0].second.fingerprint.known());
  EXPECT_EQ(prepares[0].second.fingerprint, prepares[1].second.fingerprint);
  const Fingerprint f = prepares[0].second.fingerprint;
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  h.Drain();
  h.Sync();
  bool decision_seen = false;
  for (const LogEntry& e : h.log()) {
    if (e.type != static_cast<uint8_t>(RecordType::kDecision)) continue;
    Result<Record> rec = DecodeRecord(e.type, e.payload);
    ASSERT_TRUE(rec.ok());
    EXPECT_EQ(std::get<DecisionRecord>(*rec).fingerprint, f);
    decision_seen = true;
  }
  EXPECT_TRUE(decision_seen);
  EXPECT_EQ(h.core().OpenDecisions().at(0).fingerprint, f) << "what a backup is sent";

  ASSERT_TRUE(h.CrashAndRecover().ok());
  h.Drain();
  h.core().Commit(h.now, 2, Writes(kTx1, {0, 1}));
  Ready d2 = h.Drain();
  const Error* e = ErrorFor(d2, 2);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kBadArgument);
  h.core().Commit(h.now, 3, Writes(kTx1, {0, 2}));
  EXPECT_EQ(ResultFor(h.Drain(), 3).outcome, Outcome::kCommitted);
}

// PREPARE step, a participant's refusal: it knows the txid as another
// transaction (NO with txid_reused). The client gets BAD_ARGUMENT, not
// ABORTED (the other transaction may have committed); ABORT goes to whoever
// may have prepared this attempt, not to the refusing participant; nothing is
// remembered, so the refusal does not stick to the txid here.
TEST(CoordinatorCore, ParticipantRefusingAReusedTxidMakesTheCommitBadArgumentNotAborted) {
  Harness h;
  h.StartFresh();
  h.core().Commit(h.now, 1, Writes(kTx1, {0, 1, 2}));
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 3u);
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  PrepareReply refused = Vote_(prepares[1].first, Vote::kNo);
  refused.txid_reused = true;
  refused.detail = "txid reused with different content: known here as another transaction";
  h.core().OnPrepareReply(h.now, refused);
  Ready r = h.Drain();
  const Error* e = ErrorFor(r, 1);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kBadArgument);
  EXPECT_NE(e->message.find("txid reused with different content"), std::string::npos);
  EXPECT_NE(e->message.find(kParticipants[1]), std::string::npos) << e->message;
  auto aborts = Msgs<AbortMsg>(r);
  ASSERT_EQ(aborts.size(), 2u);
  EXPECT_EQ(aborts[0].first.to, kParticipants[0]);  // voted YES
  EXPECT_EQ(aborts[1].first.to, kParticipants[2]);  // may still vote YES
  EXPECT_TRUE(r.persist.empty());
  EXPECT_EQ(h.core().in_flight(), 0u);
  EXPECT_EQ(h.core().RememberedOutcome(kTx1), Outcome::kUnknown);
  EXPECT_EQ(h.core().stats().rejected_txid_reused, 1u);
  EXPECT_EQ(h.core().stats().aborts_conflict, 0u);

  // One-phase: the only participant refused; nothing to abort.
  h.core().Commit(h.now, 2, Writes(kTx2, {2}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  ASSERT_EQ(prepares.size(), 1u);
  refused = Vote_(prepares[0].first, Vote::kNo);
  refused.txid_reused = true;
  h.core().OnPrepareReply(h.now, refused);
  r = h.Drain();
  e = ErrorFor(r, 2);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->code, ErrorCode::kBadArgument);
  EXPECT_TRUE(r.send.empty());
  EXPECT_EQ(h.core().RememberedOutcome(kTx2), Outcome::kUnknown);
}

// QueryDecision from a participant holding another transaction under a known
// txid: that content was never decided commit here, so ABORT - and the
// transaction known here is untouched.
TEST(CoordinatorCore, QueryDecisionAboutOtherContentUnderAKnownTxidIsAbortAndChangesNothing) {
  Harness h;
  h.StartFresh();
  const CommitRequest one_phase = Writes(kTx1, {1});
  h.core().Commit(h.now, 1, one_phase);
  auto prepares = Msgs<PrepareMsg>(h.Drain());
  const Fingerprint f1 = prepares[0].second.fingerprint;
  h.core().OnPrepareReply(h.now, Vote_(prepares[0].first, Vote::kYes));
  ASSERT_EQ(ResultFor(h.Drain(), 1).outcome, Outcome::kCommitted);
  const Fingerprint other{f1.hi ^ 1, f1.lo};
  h.core().QueryDecision(h.now, 2, kTx1, other);
  h.core().QueryDecision(h.now, 3, kTx1, f1);
  h.core().QueryDecision(h.now, 4, kTx1);  // an older participant: no fingerprint
  Ready r = h.Drain();
  EXPECT_EQ(DecisionFor(r, 2), Decision::kAbort);
  EXPECT_EQ(DecisionFor(r, 3), Decision::kCommit);
  EXPECT_EQ(DecisionFor(r, 4), Decision::kCommit);
  EXPECT_EQ(h.core().RememberedOutcome(kTx1), Outcome::kCommitted);

  // A running transaction is not aborted by a question about other content.
  h.core().Commit(h.now, 5, Writes(kTx2, {0, 2}));
  prepares = Msgs<PrepareMsg>(h.Drain());
  const Fingerprint f2 = prepares[0].second.fingerprint;
  h.core().QueryDecision(h.now, 6, kTx2, Fingerprint{f2.hi, f2.lo ^ 1});
  r = h.Drain();
  EXPECT_EQ(DecisionFor(r, 6), Decision::kAbort);
  EXPECT_TRUE(r.send.empty()) << "no ABORT for the running transaction";
  for (auto& [m, p] : prepares) h.core().OnPrepareReply(h.now, Vote_(m, Vote::kYes));
  h.Drain();
  EXPECT_EQ(ResultFor(h.Sync(), 5).outcome, Outcome::kCommitted);
}

}  // namespace
}  // namespace dtx::coordinator
