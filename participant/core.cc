#include "participant/core.h"

#include <algorithm>
#include <cstdio>

#include "common/check.h"
#include "common/probe.h"

namespace dtx::participant {

namespace {

// Keys are binary: print at most this many bytes, escaping the rest.
constexpr size_t kKeyPrintBytesMax = 64;

std::string Printable(std::string_view key) {
  std::string out;
  for (size_t i = 0; i < key.size() && i < kKeyPrintBytesMax; ++i) {
    unsigned char c = static_cast<unsigned char>(key[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[5];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  if (key.size() > kKeyPrintBytesMax) out += "...";
  return "'" + out + "'";
}

std::optional<std::string> CheckKey(std::string_view key) {
  if (key.empty()) return "empty key";
  if (key.size() > kKeyBytesMax) {
    return "key of " + std::to_string(key.size()) + " bytes exceeds kKeyBytesMax (" +
           std::to_string(kKeyBytesMax) + ")";
  }
  return std::nullopt;
}

std::optional<std::string> CheckPrepare(const PrepareRequest& req) {
  if (req.epoch < 0) return "negative epoch " + std::to_string(req.epoch);
  if (req.reads.size() + req.writes.size() > kTxKeysMax) {
    return std::to_string(req.reads.size() + req.writes.size()) + " keys exceed kTxKeysMax (" +
           std::to_string(kTxKeysMax) + ")";
  }
  if (req.coordinator.size() > kCoordinatorAddressBytesMax) return "coordinator address too long";
  if (req.read_only_tx && !req.writes.empty()) return "read_only_tx with writes";
  size_t bytes = 0;
  std::set<std::string_view> written;
  for (const WriteOp& w : req.writes) {
    if (auto e = CheckKey(w.key)) return "write: " + *e;
    if (w.value.has_value() && w.value->size() > kValueBytesMax) {
      return "value of " + std::to_string(w.value->size()) + " bytes for key " + Printable(w.key) +
             " exceeds kValueBytesMax (" + std::to_string(kValueBytesMax) + ")";
    }
    if (!written.insert(w.key).second) return "key " + Printable(w.key) + " written twice";
    bytes += w.key.size() + (w.value ? w.value->size() : 0);
  }
  for (const ReadOp& r : req.reads) {
    if (auto e = CheckKey(r.key)) return "read: " + *e;
    if (r.version < 0) return "negative read version for key " + Printable(r.key);
    bytes += r.key.size();
  }
  if (bytes > kTxBytesMax) {
    return std::to_string(bytes) + " bytes of keys and values exceed kTxBytesMax (" +
           std::to_string(kTxBytesMax) + ")";
  }
  return std::nullopt;
}

Status AtLsn(uint64_t lsn, const Status& s) {
  if (!s.IsCorruption()) return s;
  return Status::Corruption("LSN " + std::to_string(lsn) + ": " + s.message());
}

}  // namespace

const char* NoVoteCauseName(NoVoteCause c) {
  switch (c) {
    case NoVoteCause::kLockConflict: return "lock conflict";
    case NoVoteCause::kStaleRead: return "stale read";
    case NoVoteCause::kStoreReadFailed: return "store read failed";
    case NoVoteCause::kAlreadyAborted: return "already aborted";
    case NoVoteCause::kAbortedBeforeVote: return "aborted before the vote";
    case NoVoteCause::kTxidReused: return "txid reused with different content";
  }
  return "unknown";
}

AbortReason WireAbortReason(NoVoteCause c) {
  switch (c) {
    case NoVoteCause::kLockConflict:
    case NoVoteCause::kStaleRead:
    case NoVoteCause::kStoreReadFailed:
    case NoVoteCause::kAlreadyAborted:
    // Only a coordinator that sends fingerprints can meet it, and that one
    // reads PrepareResponse.txid_reused, not the reason.
    case NoVoteCause::kTxidReused: return AbortReason::kConflict;
    case NoVoteCause::kAbortedBeforeVote: return AbortReason::kTimeout;
  }
  DTX_CHECK(false);
  return AbortReason::kConflict;
}

struct Core::ParkedRead : LockWaiter {
  uint64_t id = 0;
  Token token = 0;
  std::string key;
  uint64_t deadline_ms = 0;
  uint64_t parked_at_ms = 0;
  TxId holder;
};

Core::Core(const CoreOptions& options, Store* store) : options_(options), store_(store) {
  DTX_CHECK(store_ != nullptr);
  DTX_CHECK(options_.decision_query_interval_ms > 0);
}

Core::~Core() = default;

// ---------------------------------------------------------------------------
// Output helpers

uint64_t Core::Append(RecordType type, std::string payload, bool forced, const TxId& txid) {
  PersistOp op;
  op.tag = next_tag_++;
  op.type = type;
  op.payload = std::move(payload);
  op.forced = forced;
  op.txid = txid;
  ready_.persist.push_back(std::move(op));
  return ready_.persist.back().tag;
}

void Core::Respond(Reply r, uint64_t wait_tag) {
  DTX_CHECK(r.token != 0);
  if (wait_tag <= durable_tag_) {
    ready_.replies.push_back(std::move(r));
  } else {
    deferred_.emplace(wait_tag, std::move(r));
  }
}

void Core::RespondError(Token token, Reply::Kind kind, const TxId& txid, ErrorCode code,
                        std::string message) {
  Reply r;
  r.token = token;
  r.kind = kind;
  r.txid = txid;
  r.error = code;
  r.message = std::move(message);
  if (code == ErrorCode::kStaleEpoch) {
    r.current_epoch = epoch_;
    r.epoch_owner = epoch_owner_;
  }
  Respond(std::move(r), 0);
}

void Core::RespondVote(Token token, const TxId& txid, Vote vote, uint64_t wait_tag,
                       NoVoteCause cause, std::string detail) {
  Reply r;
  r.token = token;
  r.kind = Reply::Kind::kPrepare;
  r.txid = txid;
  r.vote = vote;
  if (vote == Vote::kNo) {
    r.no_cause = cause;
    r.detail = std::move(detail);
  }
  Respond(std::move(r), wait_tag);
}

void Core::RespondAck(Token token, Reply::Kind kind, const TxId& txid, uint64_t wait_tag) {
  Reply r;
  r.token = token;
  r.kind = kind;
  r.txid = txid;
  Respond(std::move(r), wait_tag);
}

void Core::Fail(Status s) {
  DTX_CHECK(!s.ok());
  if (fatal_.ok()) {
    fatal_ = s;
    ready_.fatal = std::move(s);
  }
}

void Core::FailIfCorrupt(const Status& s) {
  if (s.IsCorruption()) Fail(s);
}

Ready Core::TakeReady() {
  Ready out = std::move(ready_);
  ready_ = Ready();
  return out;
}

// ---------------------------------------------------------------------------
// Bookkeeping

void Core::Remember(const TxId& txid, Outcome o, Version version, const Fingerprint& fingerprint,
                    Attempt attempt) {
  const Remembered r{o, o == Outcome::kCommitted ? version : 0, fingerprint, attempt};
  auto [it, inserted] = outcomes_.try_emplace(txid, r);
  if (!inserted) {
    const Outcome was = it->second.outcome;
    const Fingerprint kept = it->second.fingerprint;
    const Attempt kept_attempt = it->second.attempt;
    it->second = r;
    if (!fingerprint.known()) it->second.fingerprint = kept;
    it->second.attempt = std::max(kept_attempt, attempt);
    it->second.maybe_committed = false;
    if (was == o) return;
    // An abort of an earlier attempt, now committed: it moves to the
    // committed order (its entry in the aborted order is skipped there).
  }
  std::deque<TxId>& order = o == Outcome::kCommitted ? committed_order_ : aborted_order_;
  order.push_back(txid);
  while (order.size() > options_.outcomes_remembered_max) {
    auto old = outcomes_.find(order.front());
    order.pop_front();
    if (old == outcomes_.end() || old->second.outcome != o) continue;  // moved on
    if (o == Outcome::kCommitted) {
      forgotten_version_ = std::max(forgotten_version_, old->second.version);
    }
    // The attempt fence (Prepare): an outcome of no known attempt came from
    // the checkpoint, whose outcomes ended attempts no newer than the newest
    // it had seen.
    const Attempt ended = old->second.attempt.known() ? old->second.attempt : restored_attempt_;
    forgotten_attempt_ = std::max(forgotten_attempt_, ended);
    outcomes_.erase(old);
  }
}

std::optional<Core::Outcome> Core::Recall(const TxId& txid) const {
  auto it = outcomes_.find(txid);
  if (it == outcomes_.end()) return std::nullopt;
  return it->second.outcome;
}

Fingerprint Core::KnownFingerprint(const TxId& txid) const {
  if (auto t = txs_.find(txid); t != txs_.end()) return t->second.fingerprint;
  if (auto o = outcomes_.find(txid); o != outcomes_.end()) return o->second.fingerprint;
  return Fingerprint{};
}

bool Core::MayBeForgottenCommit(const PrepareRequest& req) {
  // Had the transaction committed here at version v, with its outcome
  // forgotten since: v <= forgotten_version_ (every later commit is
  // remembered); v > every version it read (it read before it committed);
  // and every key it wrote has a version >= v now (versions only grow).
  // If any of that fails, it did not commit here: a NO is the truth.
  if (forgotten_version_ == 0 || req.writes.empty()) return false;
  Version read_max = 0;
  for (const ReadOp& r : req.reads) read_max = std::max(read_max, r.version);
  if (read_max >= forgotten_version_) return false;
  for (const WriteOp& w : req.writes) {
    auto got = store_->Get(w.key);
    if (!got.ok()) {
      FailIfCorrupt(got.status());
      return true;  // cannot tell: do not claim an outcome
    }
    if (got->version <= read_max) return false;
  }
  return true;
}

void Core::Schedule(Tx& tx, uint64_t at_ms) {
  Unschedule(tx);
  tx.query_at_ms = std::max<uint64_t>(at_ms, 1);
  queries_.emplace(tx.query_at_ms, tx.txid);
}

void Core::Unschedule(Tx& tx) {
  if (tx.query_at_ms != 0) queries_.erase({tx.query_at_ms, tx.txid});
  tx.query_at_ms = 0;
}

void Core::EraseTx(std::map<TxId, Tx>::iterator it) {
  Tx& tx = it->second;
  Unschedule(tx);
  for (uint64_t tag : {tx.prepare_tag, tx.commit_tag}) {
    auto d = on_durable_.find(tag);
    if (tag != 0 && d != on_durable_.end() && d->second == tx.txid) on_durable_.erase(d);
  }
  txs_.erase(it);
}

void Core::ReleaseLocks(const TxId& txid) {
  std::vector<LockWaiter*> woken;
  locks_.ReleaseAll(txid, &woken);
  for (LockWaiter* w : woken) {
    auto* p = static_cast<ParkedRead*>(w);
    if (auto holder = locks_.ExclusiveHolder(p->key)) {
      p->holder = *holder;
      locks_.Park(p->key, p);
      continue;
    }
    uint64_t id = p->id;
    read_deadlines_.erase({p->deadline_ms, id});
    ServeRead(p->token, p->key);
    parked_.erase(id);
  }
}

std::string Core::EpochJumpRefusal(Epoch epoch) const {
  return "epoch " + std::to_string(epoch) + " is more than kEpochJumpMax (" +
         std::to_string(kEpochJumpMax) + ") above this participant's epoch " +
         std::to_string(epoch_) + ": refused, nothing adopted";
}

bool Core::CheckEpoch(Token token, Reply::Kind kind, const TxId& txid, Epoch epoch) {
  if (EpochJumpTooFar(epoch_, epoch)) {
    ++stats_.epoch_jump_refusals;
    RespondError(token, kind, txid, ErrorCode::kBadArgument, EpochJumpRefusal(epoch));
    return false;
  }
  if (epoch < epoch_) {
    ++stats_.stale_epoch_refusals;
    RespondError(token, kind, txid, ErrorCode::kStaleEpoch,
                 "epoch " + std::to_string(epoch) + " is older than this participant's epoch " +
                     std::to_string(epoch_));
    return false;
  }
  if (epoch > epoch_) {
    epoch_ = epoch;
    epoch_owner_.clear();
    epoch_tag_ =
        Append(RecordType::kEpoch, EncodeEpoch({epoch, std::string()}), /*forced=*/true, TxId{});
  }
  return true;
}

void Core::AdoptEpoch(Token token, Epoch epoch, const std::string& coordinator, uint64_t now_ms) {
  DTX_CHECK(!recovering_);
  if (!fatal_.ok()) {
    RespondError(token, Reply::Kind::kAdoptEpoch, TxId{}, ErrorCode::kUnavailable,
                 "participant failed: " + fatal_.ToString());
    return;
  }
  if (epoch < 1 || coordinator.empty() || coordinator.size() > kCoordinatorAddressBytesMax) {
    RespondError(token, Reply::Kind::kAdoptEpoch, TxId{}, ErrorCode::kBadArgument,
                 "AdoptEpoch needs an epoch >= 1 and a coordinator address (at most " +
                     std::to_string(kCoordinatorAddressBytesMax) + " bytes)");
    return;
  }
  if (EpochJumpTooFar(epoch_, epoch)) {
    ++stats_.epoch_jump_refusals;
    RespondError(token, Reply::Kind::kAdoptEpoch, TxId{}, ErrorCode::kBadArgument,
                 EpochJumpRefusal(epoch));
    return;
  }
  if (epoch > epoch_) {
    epoch_ = epoch;
    epoch_owner_ = coordinator;
    epoch_tag_ =
        Append(RecordType::kEpoch, EncodeEpoch({epoch, coordinator}), /*forced=*/true, TxId{});
  } else if (epoch < epoch_ || epoch_owner_ != coordinator) {
    ++stats_.stale_epoch_refusals;
    RespondError(
        token, Reply::Kind::kAdoptEpoch, TxId{}, ErrorCode::kStaleEpoch,
        "epoch " + std::to_string(epoch) + " is not newer than this participant's epoch " +
            std::to_string(epoch_) +
            (epoch != epoch_ ? std::string()
             : epoch_owner_.empty()
                 ? std::string(
                       " (made current by a stamped call or before a restart; owner unknown)")
                 : " (granted to " + epoch_owner_ + ")"));
    return;
  }
  // Transactions prepared under an older epoch will get no decision from
  // their coordinator any more (a newer one took over, or fenced it out):
  // ask about them soon rather than after decision_query_after_ms.
  for (auto& [txid, tx] : txs_) {
    if (tx.phase == Phase::kPrepared && !tx.one_phase && tx.epoch < epoch_) {
      Schedule(tx, now_ms + kQueryAfterEpochChangeMs);
    }
  }
  RespondAck(token, Reply::Kind::kAdoptEpoch, TxId{}, epoch_tag_);
}

// ---------------------------------------------------------------------------
// Reads

void Core::ServeRead(Token token, const std::string& key) {
  auto got = store_->Get(key);
  if (!got.ok()) {
    FailIfCorrupt(got.status());  // the error below then never leaves
    RespondError(token, Reply::Kind::kRead, TxId{}, ErrorCode::kInternal,
                 "store read of key " + Printable(key) + " failed: " + got.status().ToString());
    return;
  }
  Reply r;
  r.token = token;
  r.kind = Reply::Kind::kRead;
  r.found = got->found;
  r.value = std::move(got->value);
  r.version = got->version;
  Respond(std::move(r), 0);
}

void Core::Read(Token token, std::string key, uint64_t now_ms) {
  DTX_CHECK(!recovering_);
  if (!fatal_.ok()) {
    RespondError(token, Reply::Kind::kRead, TxId{}, ErrorCode::kUnavailable,
                 "participant failed: " + fatal_.ToString());
    return;
  }
  if (auto e = CheckKey(key)) {
    RespondError(token, Reply::Kind::kRead, TxId{}, ErrorCode::kBadArgument, *e);
    return;
  }
  std::optional<TxId> holder = locks_.ExclusiveHolder(key);
  if (!holder.has_value()) {
    ServeRead(token, key);
    return;
  }
  // A transaction that may commit holds the key for writing: wait for its
  // outcome, so no reader sees a value older than a commit already reported.
  if (parked_.size() >= options_.parked_reads_max) {
    RespondError(token, Reply::Kind::kRead, TxId{}, ErrorCode::kUnavailable,
                 "too many reads waiting on locked keys (" +
                     std::to_string(options_.parked_reads_max) + ")");
    return;
  }
  auto p = std::make_unique<ParkedRead>();
  p->id = next_read_id_++;
  p->token = token;
  p->key = std::move(key);
  p->parked_at_ms = now_ms;
  p->deadline_ms = now_ms + options_.read_wait_ms;
  p->holder = *holder;
  locks_.Park(p->key, p.get());
  read_deadlines_.emplace(p->deadline_ms, p->id);
  parked_.emplace(p->id, std::move(p));
}

// ---------------------------------------------------------------------------
// Prepare

std::optional<Core::NoVote> Core::LockAll(const TxId& txid, const std::vector<ReadOp>& reads,
                                          const std::vector<WriteOp>& writes,
                                          std::optional<TxId>* committing_holder) {
  auto conflict = [&](const std::string& key, LockMode mode) -> std::optional<NoVote> {
    if (locks_.TryLock(txid, key, mode) != LockTable::Result::kConflict) return std::nullopt;
    std::optional<TxId> holder = locks_.ConflictingHolder(txid, key, mode);
    DTX_CHECK(holder.has_value());
    ReleaseLocks(txid);
    if (auto h = txs_.find(*holder); h != txs_.end() && h->second.phase == Phase::kCommitting) {
      *committing_holder = *holder;
    }
    return NoVote{NoVoteCause::kLockConflict,
                  std::string("lock conflict on key ") + Printable(key) + " (" +
                      (mode == LockMode::kExclusive ? "write" : "read") + ") with transaction " +
                      holder->ToString()};
  };
  for (const WriteOp& w : writes) {
    if (auto c = conflict(w.key, LockMode::kExclusive)) return c;
  }
  for (const ReadOp& r : reads) {
    if (auto c = conflict(r.key, LockMode::kShared)) return c;
  }
  return std::nullopt;
}

std::optional<Core::NoVote> Core::ValidateReads(const std::vector<ReadOp>& reads) {
  for (const ReadOp& r : reads) {
    auto got = store_->Get(r.key);
    if (!got.ok()) {
      FailIfCorrupt(got.status());
      return NoVote{NoVoteCause::kStoreReadFailed, "store read of key " + Printable(r.key) +
                                                       " failed: " + got.status().ToString()};
    }
    if (got->version != r.version) {
      return NoVote{NoVoteCause::kStaleRead, "stale read of key " + Printable(r.key) +
                                                 ": read version " + std::to_string(r.version) +
                                                 ", current version " +
                                                 std::to_string(got->version)};
    }
  }
  return std::nullopt;
}

void Core::Prepare(Token token, PrepareRequest req, uint64_t now_ms) {
  DTX_CHECK(!recovering_);
  (void)now_ms;
  const TxId txid = req.txid;
  if (!fatal_.ok()) {
    RespondError(token, Reply::Kind::kPrepare, txid, ErrorCode::kUnavailable,
                 "participant failed: " + fatal_.ToString());
    return;
  }
  if (auto e = CheckPrepare(req)) {
    RespondError(token, Reply::Kind::kPrepare, txid, ErrorCode::kBadArgument, *e);
    return;
  }
  if (!CheckEpoch(token, Reply::Kind::kPrepare, txid, req.epoch)) return;
  attempt_seen_ = std::max(attempt_seen_, req.attempt);

  // A txid means one transaction: another transaction under a known txid
  // gets neither the known one's vote nor its locks.
  if (const Fingerprint known = KnownFingerprint(txid); Contradicts(known, req.fingerprint)) {
    ++stats_.txid_reused_refusals;
    RespondVote(token, txid, Vote::kNo, epoch_tag_, NoVoteCause::kTxidReused,
                "txid reused with different content: transaction " + txid.ToString() +
                    " is known here with fingerprint " + known.ToString() + ", this PREPARE " +
                    req.fingerprint.ToString());
    return;
  }
  if (auto o = outcomes_.find(txid); o != outcomes_.end() && txs_.count(txid) == 0 &&
                                     o->second.outcome == Outcome::kCommitted &&
                                     !o->second.fingerprint.known() && req.fingerprint.known()) {
    // Committed here, but with a content not known here (remembered from a
    // checkpoint, whose outcomes carry no fingerprint: records.md). A YES
    // could be given to another transaction under this txid, which would
    // then commit elsewhere and not here; a NO would tell a real retry
    // "aborted". Neither is true for sure: the outcome is unknown.
    ++stats_.txid_reused_refusals;
    RespondError(token, Reply::Kind::kPrepare, txid, ErrorCode::kUnknownTx,
                 "outcome of transaction " + txid.ToString() +
                     " unknown: it committed here, but with a content not known here (from a "
                     "checkpoint), so this PREPARE may be another transaction reusing its txid");
    return;
  }

  // Duplicate or late Prepare: the same answer again.
  if (auto it = txs_.find(txid); it != txs_.end()) {
    Tx& tx = it->second;
    if (!tx.one_phase && tx.phase != Phase::kCommitting && req.attempt > tx.attempt) {
      // A newer attempt of a transaction prepared here (the coordinator
      // ended the earlier one, whose ABORT may still be on its way): it is
      // this attempt's now, durably before the YES, so that the earlier
      // attempt's ABORT cannot drop it - not even after a restart.
      tx.attempt = req.attempt;
      tx.epoch = req.epoch;
      tx.coordinator = std::move(req.coordinator);
      const uint64_t tag = AppendPrepare(tx);
      ++stats_.attempts_restamped;
      DTX_PROBE(participant_attempt_restamped);
      if (tx.phase == Phase::kPreparing) {
        tx.prepare_waiters.push_back({token, std::max(tag, epoch_tag_)});
      } else {
        RespondVote(token, txid, Vote::kYes, std::max(tag, epoch_tag_));
      }
      return;
    }
    if (tx.phase == Phase::kPreparing || (tx.phase == Phase::kCommitting && tx.one_phase)) {
      tx.prepare_waiters.push_back({token, epoch_tag_});
    } else {
      RespondVote(token, txid, Vote::kYes, std::max(tx.prepare_tag, epoch_tag_));
    }
    return;
  }
  if (auto o = outcomes_.find(txid); o != outcomes_.end()) {
    if (o->second.outcome == Outcome::kCommitted) {
      RespondVote(token, txid, Vote::kYes, epoch_tag_);
      return;
    }
    // An abort is about the attempts up to the one it ended: a newer attempt
    // (a retry the coordinator started after it) is evaluated afresh below -
    // the txid may have committed here before and been forgotten, which a
    // NO "already aborted" would deny.
    if (req.attempt <= o->second.attempt) {
      RespondVote(token, txid, Vote::kNo, epoch_tag_, NoVoteCause::kAlreadyAborted,
                  "transaction already aborted here");
      return;
    }
  }
  // The attempt fence: a PREPARE of an attempt no newer than one whose
  // outcome was forgotten here may be a late copy of a PREPARE that
  // committed here (a one-phase one above all) or of an attempt that was
  // aborted here - evaluated afresh it could apply twice, or apply what its
  // client was told ABORTED. Its outcome is unknown; a retry (a newer
  // attempt) is evaluated afresh. A live attempt refused this way voted
  // nowhere yet here, so its coordinator may abort it. (tests/sim/README.md
  // "The adversary".)
  if (req.attempt.known() && req.attempt <= forgotten_attempt_) {
    ++stats_.stale_prepare_refusals;
    RespondError(token, Reply::Kind::kPrepare, txid, ErrorCode::kUnknownTx,
                 "outcome of transaction " + txid.ToString() + " attempt " +
                     req.attempt.ToString() + " unknown: an outcome of attempt " +
                     forgotten_attempt_.ToString() +
                     " or newer was forgotten here, so this may be a late copy of a PREPARE "
                     "that ended here; a retry is evaluated afresh");
    return;
  }
  if (txs_.size() + held_prepares_count_ >= options_.tx_in_flight_max) {
    RespondError(
        token, Reply::Kind::kPrepare, txid, ErrorCode::kUnavailable,
        "too many transactions in flight (" + std::to_string(options_.tx_in_flight_max) + ")");
    return;
  }

  // Atomically (nothing else runs in between): lock, then validate.
  std::optional<TxId> committing_holder;
  std::optional<NoVote> no = LockAll(txid, req.reads, req.writes, &committing_holder);
  if (committing_holder.has_value()) {
    // The lock is about to go: its holder is committed and waits only for
    // its COMMIT record's sync. A NO now would abort the transaction a
    // client starts right after being told COMMITTED on the same keys; held
    // until that commit is applied, it is evaluated then (OnPersisted) and
    // sees the new values. Each wait is one sync, so nothing waits forever.
    held_prepares_[*committing_holder].push_back({token, std::move(req)});
    ++held_prepares_count_;
    ++stats_.prepares_behind_commit;
    return;
  }
  ++stats_.prepares;
  if (!no.has_value()) {
    no = ValidateReads(req.reads);
    if (no.has_value()) ReleaseLocks(txid);
  }
  // A retry (the client does not know how an earlier attempt ended) of a
  // txid not remembered here may be a commit made here and forgotten since:
  // a NO would tell it "aborted", a YES would apply it a second time. Only a
  // retry: a first attempt cannot have committed before, and its NO is true.
  // (Evaluated once: it reads the store for every written key.)
  const bool maybe_forgotten = (req.is_retry || no.has_value()) && MayBeForgottenCommit(req);
  if (req.is_retry && maybe_forgotten) {
    if (!no.has_value()) ReleaseLocks(txid);
    ++stats_.forgotten_outcome_refusals;
    if (unknown_answered_.insert(txid).second) {
      unknown_answered_order_.push_back(txid);
      while (unknown_answered_order_.size() > options_.outcomes_remembered_max) {
        unknown_answered_.erase(unknown_answered_order_.front());
        unknown_answered_order_.pop_front();
      }
    }
    RespondError(token, Reply::Kind::kPrepare, txid, ErrorCode::kUnknownTx,
                 "outcome of transaction " + txid.ToString() +
                     " unknown: it is not among the outcomes remembered here, and it may have "
                     "committed here before its outcome was forgotten (commits up to version " +
                     std::to_string(forgotten_version_) + "); evaluated afresh it would vote " +
                     (no.has_value() ? "NO: " + no->detail : std::string("YES")) +
                     ". A new transaction should read again and use a new txid");
    return;
  }
  if (no.has_value()) {
    // Remembered (for this attempt and older ones) so a duplicate of this
    // Prepare (a one-phase one above all) cannot commit what was refused.
    // A first attempt's NO is the truth - unless this is a late copy of a
    // PREPARE of an attempt that committed here and was forgotten since: a
    // COMMIT of that attempt may still come, and is then acked (Commit).
    Remember(txid, Outcome::kAborted, 0, req.fingerprint, req.attempt);
    if (maybe_forgotten) outcomes_.at(txid).maybe_committed = true;
    ++stats_.votes_no;
    RespondVote(token, txid, Vote::kNo, epoch_tag_, no->cause, std::move(no->detail));
    return;
  }

  if (req.read_only_tx || (req.one_phase && req.writes.empty())) {
    // The whole transaction writes nothing: it is serializable at this
    // validation point, so its locks go at once and nothing is logged.
    ReleaseLocks(txid);
    if (req.read_only_tx) {
      ++stats_.votes_read_only;
      RespondVote(token, txid, Vote::kReadOnly, epoch_tag_);
    } else {
      ++stats_.votes_yes;
      RespondVote(token, txid, Vote::kYes, epoch_tag_);
    }
    return;
  }

  Tx& tx = txs_[txid];
  tx.txid = txid;
  tx.epoch = req.epoch;
  tx.coordinator = std::move(req.coordinator);
  tx.writes = std::move(req.writes);
  tx.fingerprint = req.fingerprint;
  tx.attempt = req.attempt;
  for (ReadOp& r : req.reads) {
    if (locks_.Holds(txid, r.key, LockMode::kExclusive)) continue;  // read and written
    tx.read_keys.push_back(std::move(r.key));
  }
  std::sort(tx.read_keys.begin(), tx.read_keys.end());
  tx.read_keys.erase(std::unique(tx.read_keys.begin(), tx.read_keys.end()), tx.read_keys.end());
  tx.prepare_waiters.push_back({token, epoch_tag_});

  if (req.one_phase) {
    tx.one_phase = true;
    StartCommit(tx);
    return;
  }
  tx.phase = Phase::kPreparing;
  tx.prepare_tag = AppendPrepare(tx);
  on_durable_.emplace(tx.prepare_tag, txid);
}

uint64_t Core::AppendPrepare(const Tx& tx) {
  PrepareRecord rec;
  rec.txid = tx.txid;
  rec.epoch = tx.epoch;
  rec.coordinator = tx.coordinator;
  rec.writes = tx.writes;
  rec.read_keys = tx.read_keys;
  rec.fingerprint = tx.fingerprint;
  rec.attempt = tx.attempt;
  return Append(RecordType::kPrepare, EncodePrepare(rec), /*forced=*/true, tx.txid);
}

// ---------------------------------------------------------------------------
// Commit / abort

void Core::StartCommit(Tx& tx) {
  DTX_CHECK(tx.phase != Phase::kCommitting);
  Unschedule(tx);
  tx.phase = Phase::kCommitting;
  tx.commit_version = ++commit_counter_;
  CommitRecord rec;
  rec.txid = tx.txid;
  rec.version = tx.commit_version;
  rec.one_phase = tx.one_phase;
  rec.fingerprint = tx.fingerprint;
  if (tx.one_phase) {
    rec.writes = tx.writes;
    rec.attempt = tx.attempt;
  }
  tx.commit_tag = Append(RecordType::kCommit, EncodeCommit(rec), /*forced=*/true, tx.txid);
  on_durable_.emplace(tx.commit_tag, tx.txid);
}

void Core::FinishCommits(const std::vector<TxId>& txids, std::vector<HeldPrepare>* resumed) {
  if (txids.empty()) return;
  std::vector<Store::Commit> batch;
  batch.reserve(txids.size());
  for (const TxId& txid : txids) {
    const Tx& tx = txs_.at(txid);
    batch.push_back(Store::Commit{&tx.writes, tx.commit_version});
  }
  Status s = store_->ApplyBatch(batch);
  if (!s.ok()) {
    // The COMMITs are durable but the store refused them: reads would go stale.
    Fail(Status::IOError("applying " + std::to_string(txids.size()) +
                         " committed transaction(s) from " + txids.front().ToString() +
                         " on failed: " + s.ToString()));
    return;
  }
  ++stats_.store_batches;
  for (const TxId& txid : txids) {
    auto it = txs_.find(txid);
    Tx& tx = it->second;
    ++stats_.commits;
    if (tx.one_phase) ++stats_.votes_yes;
    Remember(txid, Outcome::kCommitted, tx.commit_version, tx.fingerprint, tx.attempt);
    for (const Waiter& w : tx.prepare_waiters) RespondVote(w.token, txid, Vote::kYes, w.wait_tag);
    for (const Waiter& w : tx.commit_waiters)
      RespondAck(w.token, Reply::Kind::kCommit, txid, w.wait_tag);
    EraseTx(it);
    ReleaseLocks(txid);  // after the apply: woken reads see the new values
    if (auto h = held_prepares_.find(txid); h != held_prepares_.end()) {
      for (HeldPrepare& p : h->second) resumed->push_back(std::move(p));
      held_prepares_.erase(h);
    }
  }
}

void Core::DropAborted(Tx& tx, bool log_abort) {
  DTX_CHECK(tx.phase != Phase::kCommitting);
  // Not forced: under presumed abort a lost ABORT only makes recovery ask
  // the coordinator, which answers ABORT. Logging it at all spares that
  // question (and lets a checkpoint drop the PREPARE).
  // Every preparing/prepared transaction has a PREPARE (appended live or
  // replayed).
  if (log_abort) Append(RecordType::kAbort, EncodeAbort({tx.txid}), /*forced=*/false, tx.txid);
  for (const Waiter& w : tx.prepare_waiters) {
    RespondVote(w.token, tx.txid, Vote::kNo, w.wait_tag, NoVoteCause::kAbortedBeforeVote,
                "aborted by the coordinator before the vote was durable");
  }
  ++stats_.aborts;
  Remember(tx.txid, Outcome::kAborted, 0, tx.fingerprint, tx.attempt);
  TxId txid = tx.txid;
  EraseTx(txs_.find(txid));
  ReleaseLocks(txid);
}

void Core::Commit(Token token, const TxId& txid, Epoch epoch, uint64_t now_ms) {
  DTX_CHECK(!recovering_);
  (void)now_ms;
  if (!fatal_.ok()) {
    RespondError(token, Reply::Kind::kCommit, txid, ErrorCode::kUnavailable,
                 "participant failed: " + fatal_.ToString());
    return;
  }
  if (epoch < 0) {
    RespondError(token, Reply::Kind::kCommit, txid, ErrorCode::kBadArgument, "negative epoch");
    return;
  }
  if (!CheckEpoch(token, Reply::Kind::kCommit, txid, epoch)) return;
  if (auto it = txs_.find(txid); it != txs_.end()) {
    Tx& tx = it->second;
    tx.commit_waiters.push_back({token, epoch_tag_});
    if (tx.phase != Phase::kCommitting) StartCommit(tx);
    return;
  }
  if (auto o = outcomes_.find(txid); o != outcomes_.end() &&
                                     o->second.outcome == Outcome::kAborted &&
                                     !o->second.maybe_committed) {
    RespondError(token, Reply::Kind::kCommit, txid, ErrorCode::kInternal,
                 "commit of transaction " + txid.ToString() + ", which was aborted here");
    return;
  }
  // Committed here already, or committed and forgotten.
  RespondAck(token, Reply::Kind::kCommit, txid, epoch_tag_);
}

void Core::Abort(Token token, const TxId& txid, Epoch epoch, uint64_t now_ms, Attempt attempt) {
  DTX_CHECK(!recovering_);
  (void)now_ms;
  if (!fatal_.ok()) {
    RespondError(token, Reply::Kind::kAbort, txid, ErrorCode::kUnavailable,
                 "participant failed: " + fatal_.ToString());
    return;
  }
  if (epoch < 0) {
    RespondError(token, Reply::Kind::kAbort, txid, ErrorCode::kBadArgument, "negative epoch");
    return;
  }
  if (!CheckEpoch(token, Reply::Kind::kAbort, txid, epoch)) return;
  if (auto it = txs_.find(txid); it != txs_.end()) {
    Tx& tx = it->second;
    if (tx.phase == Phase::kCommitting) {
      RespondError(token, Reply::Kind::kAbort, txid, ErrorCode::kInternal,
                   "abort of transaction " + txid.ToString() + ", which is committing here");
      return;
    }
    if (attempt < tx.attempt) {
      // The ABORT of an attempt that ended before the one held here began:
      // that attempt is over; this one is not the coordinator's to drop by it.
      ++stats_.stale_attempt_aborts;
      DTX_PROBE(participant_stale_attempt_abort);
      RespondAck(token, Reply::Kind::kAbort, txid, epoch_tag_);
      return;
    }
    DropAborted(tx, /*log_abort=*/true);
    RespondAck(token, Reply::Kind::kAbort, txid, epoch_tag_);
    return;
  }
  if (Recall(txid) == Outcome::kCommitted) {
    RespondError(token, Reply::Kind::kAbort, txid, ErrorCode::kInternal,
                 "abort of transaction " + txid.ToString() + ", which committed here");
    return;
  }
  // Presumed abort: unknown is fine. Remembered so a late Prepare votes NO -
  // unless we answered its Prepare "outcome unknown" (it may have committed
  // here long ago): then a late Prepare is evaluated again and, as versions
  // only grow, answered kUnknownTx again, never YES.
  if (unknown_answered_.count(txid) == 0) Remember(txid, Outcome::kAborted, 0, {}, attempt);
  RespondAck(token, Reply::Kind::kAbort, txid, epoch_tag_);
}

void Core::OnDecision(const TxId& txid, Decision decision, uint64_t now_ms, Attempt attempt) {
  (void)now_ms;
  if (recovering_ || !fatal_.ok()) return;
  auto it = txs_.find(txid);
  if (it == txs_.end()) return;  // late answer: already decided
  Tx& tx = it->second;
  if (tx.phase == Phase::kCommitting) return;
  if (decision == Decision::kAbort && attempt < tx.attempt) {
    // About an earlier attempt (asked before a newer one prepared here).
    ++stats_.stale_attempt_aborts;
    DTX_PROBE(participant_stale_attempt_abort);
    return;
  }
  switch (decision) {
    case Decision::kCommit: StartCommit(tx); break;
    case Decision::kAbort: DropAborted(tx, /*log_abort=*/true); break;
    case Decision::kUnknown: break;  // asked again at the next query time
  }
}

void Core::OnDecisionAnswer(const QueryDecisionMsg& asked, const DecisionAnswer& answer,
                            uint64_t now_ms) {
  DTX_CHECK(asked.kind == QueryDecisionMsg::Kind::kAsk);
  if (auto it = txs_.find(asked.txid);
      it != txs_.end() && Contradicts(it->second.fingerprint, asked.fingerprint)) {
    return;  // an answer about another transaction under this txid
  }
  if (answer.reached && answer.decision != Decision::kUnknown) {
    OnDecision(asked.txid, answer.decision, now_ms, asked.attempt);
    return;
  }
  // A fall-back's question that got no decision goes no further: the
  // transaction is asked about again at its next query time.
  if (asked.fall_back || recovering_ || !fatal_.ok()) return;
  auto it = txs_.find(asked.txid);
  if (it == txs_.end() || it->second.phase != Phase::kPrepared) return;  // decided meanwhile
  QueryDecisionMsg find;
  find.kind = QueryDecisionMsg::Kind::kFindPrimary;
  find.txid = asked.txid;
  find.coordinator = asked.coordinator;
  find.epoch = it->second.epoch;
  find.fingerprint = it->second.fingerprint;
  find.attempt = it->second.attempt;
  if (!answer.reached) find.primary_hint = answer.primary_hint;
  ready_.send.push_back(std::move(find));
}

void Core::OnCoordinatorStatus(const TxId& txid, const std::string& coordinator, NodeRole role,
                               Epoch coordinator_epoch, uint64_t now_ms) {
  (void)now_ms;
  if (recovering_ || !fatal_.ok()) return;
  auto it = txs_.find(txid);
  if (it == txs_.end() || it->second.phase != Phase::kPrepared) return;  // decided meanwhile
  const Tx& tx = it->second;
  // QueryDecisionMsg, step 3: only a primary at the transaction's epoch or
  // later holds its decision.
  if (role != NodeRole::kPrimary || coordinator_epoch < tx.epoch) return;
  QueryDecisionMsg ask;
  ask.kind = QueryDecisionMsg::Kind::kAsk;
  ask.txid = txid;
  ask.coordinator = coordinator;
  ask.epoch = tx.epoch;
  ask.fall_back = true;
  ask.fingerprint = tx.fingerprint;
  ask.attempt = tx.attempt;
  ready_.send.push_back(std::move(ask));
}

// ---------------------------------------------------------------------------
// Durability and time

void Core::OnPersisted(uint64_t tag, uint64_t now_ms) {
  DTX_CHECK(tag < next_tag_);
  if (tag <= durable_tag_) return;
  durable_tag_ = tag;
  std::vector<HeldPrepare> resumed;  // held behind a commit applied here
  std::vector<TxId> committed;       // durable COMMITs, applied together below
  while (!on_durable_.empty() && on_durable_.begin()->first <= durable_tag_ && fatal_.ok()) {
    auto [t, txid] = *on_durable_.begin();
    on_durable_.erase(on_durable_.begin());
    auto it = txs_.find(txid);
    if (it == txs_.end()) continue;
    Tx& tx = it->second;
    if (t == tx.prepare_tag) {
      if (tx.phase == Phase::kPreparing) {
        tx.phase = Phase::kPrepared;
        tx.prepared_at_ms = now_ms;
        Schedule(tx, now_ms + (tx.epoch < epoch_ ? kQueryAfterEpochChangeMs
                                                 : options_.decision_query_after_ms));
        ++stats_.votes_yes;
      }
      for (const Waiter& w : tx.prepare_waiters) RespondVote(w.token, txid, Vote::kYes, w.wait_tag);
      tx.prepare_waiters.clear();
    } else if (t == tx.commit_tag) {
      committed.push_back(txid);
    }
  }
  FinishCommits(committed, &resumed);
  while (!relog_pending_.empty() && relog_pending_.begin()->first <= durable_tag_) {
    auto [t, txid] = *relog_pending_.begin();
    relog_pending_.erase(relog_pending_.begin());
    auto it = txs_.find(txid);
    if (it == txs_.end() || it->second.relog_tag != t) continue;  // ended, or a new one
    it->second.prepare_tag = t;  // the checkpoint's retain_from may pass the first copy
    it->second.relog_tag = 0;
    ++stats_.prepares_relogged;
    DTX_PROBE(participant_prepare_relogged);
  }
  while (!deferred_.empty() && deferred_.begin()->first <= durable_tag_) {
    ready_.replies.push_back(std::move(deferred_.begin()->second));
    deferred_.erase(deferred_.begin());
  }
  // After the loop: a resumed Prepare appends records of its own.
  held_prepares_count_ -= resumed.size();
  for (HeldPrepare& p : resumed) {
    if (fatal_.ok()) {
      Prepare(p.token, std::move(p.req), now_ms);
    } else {
      RespondError(p.token, Reply::Kind::kPrepare, p.req.txid, ErrorCode::kUnavailable,
                   "participant failed: " + fatal_.ToString());
    }
  }
}

void Core::CarryForwardPrepares() {
  const uint64_t gap = options_.prepare_relog_lsn_gap;
  if (gap == 0 || !fatal_.ok() || next_tag_ < relog_scan_tag_ + std::max<uint64_t>(gap / 4, 1)) {
    return;
  }
  relog_scan_tag_ = next_tag_;
  for (auto& [txid, tx] : txs_) {
    if (tx.phase != Phase::kPrepared || tx.relog_tag != 0 || tx.prepare_tag == 0 ||
        tx.prepare_tag + gap >= next_tag_) {
      continue;
    }
    // The same content as the first (AppendPrepare writes the whole
    // transaction), so either copy alone restores it (ReplayPrepare keeps
    // the newest). prepare_tag moves only once the copy is durable
    // (OnPersisted): until then the first is what a restart has.
    tx.relog_tag = AppendPrepare(tx);
    relog_pending_.emplace(tx.relog_tag, txid);
  }
}

void Core::Tick(uint64_t now_ms) {
  if (recovering_) return;
  CarryForwardPrepares();
  while (!read_deadlines_.empty() && read_deadlines_.begin()->first <= now_ms) {
    uint64_t id = read_deadlines_.begin()->second;
    read_deadlines_.erase(read_deadlines_.begin());
    auto it = parked_.find(id);
    DTX_CHECK(it != parked_.end());
    ParkedRead& p = *it->second;
    ++stats_.read_timeouts;
    RespondError(p.token, Reply::Kind::kRead, TxId{}, ErrorCode::kTimeout,
                 "read of key " + Printable(p.key) + " waited " +
                     std::to_string(now_ms - p.parked_at_ms) + " ms for prepared transaction " +
                     p.holder.ToString());
    parked_.erase(it);  // the waiter unlinks itself
  }
  size_t sent = 0;
  while (!queries_.empty() && queries_.begin()->first <= now_ms &&
         sent < options_.decision_queries_per_tick_max) {
    TxId txid = queries_.begin()->second;
    auto it = txs_.find(txid);
    DTX_CHECK(it != txs_.end());
    Tx& tx = it->second;
    tx.queried = true;
    QueryDecisionMsg ask;
    ask.kind = QueryDecisionMsg::Kind::kAsk;
    ask.txid = txid;
    ask.coordinator = tx.coordinator;
    ask.epoch = tx.epoch;
    ask.fingerprint = tx.fingerprint;
    ask.attempt = tx.attempt;
    ready_.send.push_back(std::move(ask));
    ++stats_.decision_queries;
    ++sent;
    Schedule(tx, now_ms + options_.decision_query_interval_ms);
  }
}

// ---------------------------------------------------------------------------
// Recovery

void Core::RestoreCheckpoint(const Checkpoint& cp) {
  DTX_CHECK_MSG(recovering_ && last_replayed_lsn_ == 0, "RestoreCheckpoint after Replay");
  replay_from_ = cp.lsn;
  replay_retain_from_ = cp.retain_from;
  if (cp.epoch > epoch_) {
    epoch_ = cp.epoch;
    epoch_owner_ = cp.epoch_owner;
  }
  commit_counter_ = std::max(commit_counter_, cp.commit_counter);
  forgotten_version_ = std::max(forgotten_version_, cp.forgotten_version);
  forgotten_attempt_ = std::max(forgotten_attempt_, cp.forgotten_attempt);
  attempt_seen_ = std::max(attempt_seen_, cp.attempt_seen);
  restored_attempt_ = cp.attempt_seen;
  for (const CheckpointOutcome& o : cp.outcomes) {
    Remember(o.txid, o.version > 0 ? Outcome::kCommitted : Outcome::kAborted, o.version);
  }
}

Status Core::Replay(uint64_t lsn, uint8_t type, std::string_view payload) {
  DTX_CHECK_MSG(recovering_, "Replay after FinishRecovery");
  if (lsn <= last_replayed_lsn_) {
    return Status::Corruption("LSN " + std::to_string(lsn) + " replayed after LSN " +
                              std::to_string(last_replayed_lsn_));
  }
  last_replayed_lsn_ = lsn;
  ++stats_.replayed_records;
  // Below retain_from every transaction finished before the checkpoint, and
  // the checkpoint carries the epoch and the commit counter: nothing to do
  // (the WAL keeps such records only because it truncates whole segments).
  if (lsn < replay_retain_from_) return Status::OK();
  switch (static_cast<RecordType>(type)) {
    case RecordType::kPrepare: {
      auto r = DecodePrepare(payload);
      if (!r.ok()) return AtLsn(lsn, r.status());
      return AtLsn(lsn, ReplayPrepare(std::move(r.value()), lsn));
    }
    case RecordType::kCommit: {
      auto r = DecodeCommit(payload);
      if (!r.ok()) return AtLsn(lsn, r.status());
      return AtLsn(lsn, ReplayCommit(*r, lsn));
    }
    case RecordType::kAbort: {
      auto r = DecodeAbort(payload);
      if (!r.ok()) return AtLsn(lsn, r.status());
      Fingerprint fingerprint;
      Attempt attempt;
      if (auto it = txs_.find(r->txid); it != txs_.end()) {
        fingerprint = it->second.fingerprint;
        attempt = it->second.attempt;
        EraseTx(it);
        ReleaseLocks(r->txid);
      }
      Remember(r->txid, Outcome::kAborted, 0, fingerprint, attempt);
      return Status::OK();
    }
    case RecordType::kEpoch: {
      auto r = DecodeEpoch(payload);
      if (!r.ok()) return AtLsn(lsn, r.status());
      if (r->epoch > epoch_) {
        epoch_ = r->epoch;
        epoch_owner_ = r->owner;
      } else if (r->epoch == epoch_ && !r->owner.empty()) {
        epoch_owner_ = r->owner;  // e.g. after a checkpoint that did not carry it
      }
      return Status::OK();
    }
  }
  return Status::Corruption("LSN " + std::to_string(lsn) + ": unknown participant record type " +
                            std::to_string(type));
}

Status Core::ReplayPrepare(PrepareRecord r, uint64_t lsn) {
  attempt_seen_ = std::max(attempt_seen_, r.attempt);
  if (auto it = txs_.find(r.txid); it != txs_.end()) {
    // Prepared again: a newer attempt moved the transaction to its stamp
    // (Prepare), or a copy carried it forward (CarryForwardPrepares);
    // anything else is a duplicate of the same state. Every PREPARE record
    // holds the whole transaction, so the newest is the one to retain.
    Tx& tx = it->second;
    if (r.attempt > tx.attempt) {
      tx.attempt = r.attempt;
      tx.epoch = r.epoch;
      tx.coordinator = std::move(r.coordinator);
    }
    tx.prepare_tag = lsn;
    return Status::OK();
  }
  auto take = [&](const std::string& key, LockMode mode) -> Status {
    for (;;) {
      if (locks_.TryLock(r.txid, key, mode) != LockTable::Result::kConflict) return Status::OK();
      // The holder released this lock before this PREPARE was written. A
      // prepared transaction releases only on commit (its forced COMMIT
      // precedes this record and was replayed) or on abort: so it aborted
      // and its non-forced ABORT was lost.
      std::optional<TxId> holder = locks_.ConflictingHolder(r.txid, key, mode);
      DTX_CHECK(holder.has_value());
      auto it = txs_.find(*holder);
      if (it == txs_.end()) {
        return Status::Corruption("PREPARE of " + r.txid.ToString() + " conflicts on key " +
                                  Printable(key) + " with unknown holder " + holder->ToString());
      }
      ++stats_.replay_inferred_aborts;
      const Fingerprint fingerprint = it->second.fingerprint;
      const Attempt attempt = it->second.attempt;
      EraseTx(it);
      ReleaseLocks(*holder);
      Remember(*holder, Outcome::kAborted, 0, fingerprint, attempt);
    }
  };
  for (const WriteOp& w : r.writes) DTX_RETURN_IF_ERROR(take(w.key, LockMode::kExclusive));
  for (const std::string& k : r.read_keys) DTX_RETURN_IF_ERROR(take(k, LockMode::kShared));
  Tx& tx = txs_[r.txid];
  tx.txid = r.txid;
  tx.epoch = r.epoch;
  tx.coordinator = std::move(r.coordinator);
  tx.writes = std::move(r.writes);
  tx.read_keys = std::move(r.read_keys);
  tx.fingerprint = r.fingerprint;
  tx.attempt = r.attempt;
  tx.phase = Phase::kPrepared;
  tx.recovered = true;
  tx.prepare_tag = lsn;  // tags are LSNs: the checkpoint's retain_from needs it
  return Status::OK();
}

Status Core::ReplayCommit(const CommitRecord& r, uint64_t lsn) {
  commit_counter_ = std::max(commit_counter_, r.version);
  // Below the checkpoint the store has the writes already (durably), and the
  // PREPARE of a 2PC COMMIT may have been truncated.
  const bool in_store = lsn < replay_from_;
  if (r.one_phase) {
    if (!in_store) DTX_RETURN_IF_ERROR(store_->Apply(r.writes, r.version));
    attempt_seen_ = std::max(attempt_seen_, r.attempt);
    Remember(r.txid, Outcome::kCommitted, r.version, r.fingerprint, r.attempt);
    return Status::OK();
  }
  auto it = txs_.find(r.txid);
  if (it == txs_.end()) {
    if (in_store) {
      Remember(r.txid, Outcome::kCommitted, r.version, r.fingerprint);
      return Status::OK();
    }
    return Status::Corruption("COMMIT of " + r.txid.ToString() + " without a PREPARE before it");
  }
  if (!in_store) DTX_RETURN_IF_ERROR(store_->Apply(it->second.writes, r.version));
  const Fingerprint fingerprint = r.fingerprint.known() ? r.fingerprint : it->second.fingerprint;
  const Attempt attempt = it->second.attempt;
  EraseTx(it);
  ReleaseLocks(r.txid);
  Remember(r.txid, Outcome::kCommitted, r.version, fingerprint, attempt);
  return Status::OK();
}

void Core::FinishRecovery(uint64_t now_ms, uint64_t last_lsn) {
  DTX_CHECK(recovering_);
  DTX_CHECK_MSG(last_lsn == 0 || last_lsn >= last_replayed_lsn_, "last LSN below a replayed one");
  recovering_ = false;
  durable_tag_ = std::max(last_lsn, last_replayed_lsn_);
  next_tag_ = durable_tag_ + 1;
  for (auto& [txid, tx] : txs_) {
    tx.prepared_at_ms = now_ms;
    Schedule(tx, now_ms);  // in doubt: ask at the first tick
  }
}

std::optional<Checkpoint> Core::TakeCheckpoint() const {
  if (recovering_ || !fatal_.ok()) return std::nullopt;
  // OnPersisted applies every COMMIT up to durable_tag_ before it returns.
  Checkpoint cp;
  cp.lsn = durable_tag_ + 1;
  cp.retain_from = cp.lsn;
  for (const auto& [txid, tx] : txs_) {
    if (tx.prepare_tag != 0) cp.retain_from = std::min(cp.retain_from, tx.prepare_tag);
  }
  cp.epoch = epoch_;
  cp.epoch_owner = epoch_owner_;
  cp.commit_counter = commit_counter_;
  // Each kind oldest first (a restore re-remembers them in that order),
  // commits before aborts; past kCheckpointOutcomesMax the oldest aborts go
  // first, then the oldest commits (which the checkpoint then counts as
  // forgotten).
  cp.forgotten_version = forgotten_version_;
  cp.attempt_seen = attempt_seen_;
  std::vector<TxId> commits, aborts;
  for (const TxId& t : committed_order_) {
    auto it = outcomes_.find(t);
    if (it != outcomes_.end() && it->second.outcome == Outcome::kCommitted) commits.push_back(t);
  }
  for (const TxId& t : aborted_order_) {
    auto it = outcomes_.find(t);
    if (it != outcomes_.end() && it->second.outcome == Outcome::kAborted) aborts.push_back(t);
  }
  const size_t keep_commits = std::min(commits.size(), kCheckpointOutcomesMax);
  const size_t keep_aborts = std::min(aborts.size(), kCheckpointOutcomesMax - keep_commits);
  cp.outcomes.reserve(keep_commits + keep_aborts);
  for (size_t i = 0; i < commits.size(); ++i) {
    const Version v = outcomes_.at(commits[i]).version;
    if (i < commits.size() - keep_commits) {
      cp.forgotten_version = std::max(cp.forgotten_version, v);  // left out: forgotten
    } else {
      cp.outcomes.push_back({commits[i], v});
    }
  }
  for (size_t i = aborts.size() - keep_aborts; i < aborts.size(); ++i) {
    cp.outcomes.push_back({aborts[i], 0});
  }
  // The outcomes carry no attempt: one left out counts as the newest seen.
  cp.forgotten_attempt = forgotten_attempt_;
  if (keep_commits < commits.size() || keep_aborts < aborts.size()) {
    cp.forgotten_attempt = std::max(cp.forgotten_attempt, attempt_seen_);
  }
  return cp;
}

// ---------------------------------------------------------------------------
// Queries

std::vector<InDoubtInfo> Core::ListInDoubt(uint64_t now_ms) const {
  std::vector<InDoubtInfo> out;
  for (const auto& [txid, tx] : txs_) {
    if (tx.phase != Phase::kPrepared || !(tx.recovered || tx.queried)) continue;
    out.push_back(
        {txid, now_ms >= tx.prepared_at_ms ? now_ms - tx.prepared_at_ms : 0, tx.coordinator});
  }
  return out;
}

CoreStats Core::stats() const {
  CoreStats s = stats_;
  s.epoch = epoch_;
  s.commit_counter = commit_counter_;
  s.in_flight = txs_.size();
  s.in_doubt = 0;
  for (const auto& [txid, tx] : txs_) {
    if (tx.phase == Phase::kPrepared && (tx.recovered || tx.queried)) ++s.in_doubt;
  }
  s.parked_reads = parked_.size();
  s.prepares_waiting = held_prepares_count_;
  s.forgotten_attempt = forgotten_attempt_;
  s.locked_keys = locks_.key_count();
  s.forgotten_version = forgotten_version_;
  return s;
}

}  // namespace dtx::participant
