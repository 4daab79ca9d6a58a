#include "coordinator/core.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "common/check.h"
#include "common/probe.h"
#include "coordinator/fingerprint.h"

namespace dtx::coordinator {
namespace {

constexpr size_t kNpos = std::numeric_limits<size_t>::max();
// Open DECISIONs copied near the head in one batch: the rest wait for the
// next (a bound on one turn's work, not on correctness).
constexpr size_t kRelogBatchMax = 4096;

CommitResult Committed(std::string detail = {}) {
  return CommitResult{Outcome::kCommitted, std::nullopt, std::move(detail)};
}

CommitResult Aborted(AbortReason reason, std::string detail) {
  return CommitResult{Outcome::kAborted, reason, std::move(detail)};
}

// Drops the oldest (LSN, txid) of an outcome table's fifo, and the outcome
// with it unless a newer record of that txid holds it (its entry's LSN).
template <typename Table>
void ForgetOldest(std::deque<std::pair<uint64_t, TxId>>& fifo, Table& table) {
  auto [old_lsn, old_txid] = fifo.front();
  fifo.pop_front();
  auto it = table.find(old_txid);
  if (it != table.end() && it->second.lsn == old_lsn) table.erase(it);
}

}  // namespace

CoordinatorCore::CoordinatorCore(CoreOptions options) : opts_(std::move(options)) {
  for (const std::string& p : opts_.participants) {
    DTX_CHECK_MSG(!p.empty() && p.size() <= kParticipantAddressBytesMax,
                  "participant address empty or too long");
  }
  for (size_t i = 0; i < opts_.participants.size(); ++i) {
    for (size_t j = i + 1; j < opts_.participants.size(); ++j) {
      DTX_CHECK_MSG(opts_.participants[i] != opts_.participants[j], "participant listed twice");
    }
  }
  DTX_CHECK(opts_.participants_per_tx_max <= kDecisionParticipantsMax);
  DTX_CHECK(opts_.commit_retry_initial_ms > 0 && opts_.commit_timeout_ms > 0);
  DTX_CHECK(opts_.prepare_timeout_ms > 0);
  DTX_CHECK(opts_.committed_outcomes_max > 0 && opts_.other_outcomes_max > 0 &&
            opts_.aborted_outcomes_max > 0);
}

// ---- recovery -------------------------------------------------------------------

Status CoordinatorCore::Replay(uint64_t lsn, uint8_t type, std::string_view payload) {
  DTX_CHECK(!started_);
  Result<Record> rec = DecodeRecord(type, payload);
  if (!rec.ok()) {
    return Status::Corruption("LSN " + std::to_string(lsn) + ": " + rec.status().message());
  }
  max_lsn_seen_ = std::max(max_lsn_seen_, lsn);
  if (const auto* e = std::get_if<EpochRecord>(&*rec)) {
    if (e->epoch < epoch_) {
      return Status::Corruption("LSN " + std::to_string(lsn) + ": EPOCH " +
                                std::to_string(e->epoch) + " after EPOCH " +
                                std::to_string(epoch_));
    }
    epoch_ = e->epoch;
    epoch_lsn_ = lsn;
    epoch_durable_ = true;
  } else if (auto* d = std::get_if<DecisionRecord>(&*rec)) {
    if (!d->commit) {
      RememberAborted(d->txid, lsn, d->fingerprint,
                      Aborted(d->reason, "aborted (the coordinator's log remembers it)"));
      return Status::OK();
    }
    RememberCommitted(d->txid, lsn, d->fingerprint);
    replayed_open_[d->txid] = {lsn, std::move(*d)};
  } else if (std::holds_alternative<SyncRecord>(*rec)) {
    // A backup's log: the primary's snapshot of its open decisions follows
    // and restates every one still open; anything before is delivered - or
    // was never a decision: a node that stepped down may hold DECISIONs that
    // never reached a commit point. So nothing learnt before SYNC counts.
    replayed_open_.clear();
    committed_.clear();
    committed_fifo_.clear();
    aborted_.clear();
    aborted_fifo_.clear();
  } else {
    replayed_open_.erase(std::get<EndRecord>(*rec).txid);
  }
  return Status::OK();
}

void CoordinatorCore::Start(uint64_t now_ms, StartEpoch how) {
  DTX_CHECK(!started_);
  started_ = true;
  if (how == StartEpoch::kNew || epoch_ == 0) {
    // An epoch of this incarnation's own: attempt stamps restart at seq 1,
    // so they must not share an epoch with the previous incarnation's (whose
    // ABORTs may still be on their way), and the participants, once they see
    // it, refuse that incarnation's late calls as STALE_EPOCH.
    DTX_CHECK_MSG(epoch_ < std::numeric_limits<Epoch>::max(), "coordinator epoch exhausted");
    epoch_ = epoch_ + 1;
    epoch_durable_ = false;
    epoch_tag_ = Persist(EpochRecord{epoch_}, /*forced=*/true, TxId{});
  }
  // Every DECISION without END: the participants may not all have heard
  // COMMIT, so deliver it again until each acknowledges.
  for (auto& [txid, entry] : replayed_open_) {
    Tx tx;
    tx.txid = txid;
    tx.phase = Phase::kCommitting;
    tx.decision_lsn = entry.first;
    tx.first_commit_sent = true;  // a re-send, not the first COMMIT of phase 2
    tx.fingerprint = entry.second.fingerprint;
    for (const std::string& address : entry.second.participants) {
      Part p;
      p.address = address;
      tx.parts.push_back(std::move(p));
    }
    auto [it, inserted] = txs_.emplace(txid, std::move(tx));
    DTX_CHECK(inserted);
    ++committing_count_;
    active_decisions_.emplace(entry.first, txid);
    EnterCommitting(now_ms, it->second);
    MaybeEnd(it->second);  // a DECISION naming no participant needs no phase 2
  }
  replayed_open_.clear();
  UpdateTruncation();
}

// ---- client requests ------------------------------------------------------------

void CoordinatorCore::Commit(uint64_t now_ms, RequestToken token, CommitRequest req) {
  if (!started_) {
    ReplyTo(token, Error{ErrorCode::kUnavailable, "coordinator is starting"});
    return;
  }
  // A txid means one transaction: a repeat with other content is refused
  // before it can join a running transaction or be given its outcome.
  const Fingerprint fingerprint = TxFingerprint(req.reads, req.writes);
  if (std::optional<Error> reused = CheckReuse(req.txid, fingerprint)) {
    ++stats_.rejected_txid_reused;
    ReplyTo(token, std::move(*reused));
    return;
  }
  // Idempotency by txid: join a running transaction or return its outcome.
  if (Tx* tx = FindTx(req.txid)) {
    if (tx->phase == Phase::kCommitting) {
      ReplyTo(token, Committed());
    } else {
      // A repeat (same content: CheckReuse) only waits for the outcome.
      tx->waiters.push_back(token);
    }
    return;
  }
  if (const CommitResult* outcome = FindOutcome(req.txid)) {
    if (outcome->outcome == Outcome::kAborted && aborted_.count(req.txid) == 0) {
      // A presumed abort answered to a participant, remembered in memory
      // only: a client hears of it once it is logged like any other.
      LogAbortOf(token, req.txid, fingerprint, *outcome);
      return;
    }
    ReplyTo(token, *outcome);
    return;
  }
  if (fenced_) {
    ReplyTo(token, Error{ErrorCode::kNotPrimary,
                         "a participant reported a newer coordinator epoch than " +
                             std::to_string(epoch_) + "; this coordinator no longer decides"});
    return;
  }
  if (!epoch_durable_) {
    // Remembered outcomes are answered above; a new attempt needs the epoch
    // it is stamped with to be durable (Start, BumpEpoch).
    ReplyTo(token,
            Error{ErrorCode::kUnavailable, "coordinator is starting: its epoch " +
                                               std::to_string(epoch_) + " is not durable yet"});
    return;
  }
  if (std::optional<Error> err = Validate(req)) {
    if (err->code == ErrorCode::kBadArgument) ++stats_.rejected_bad_argument;
    ReplyTo(token, std::move(*err));
    return;
  }
  StartTx(now_ms, token, std::move(req), fingerprint);
}

std::pair<Fingerprint, const char*> CoordinatorCore::KnownFingerprint(const TxId& txid) const {
  if (auto t = txs_.find(txid); t != txs_.end()) return {t->second.fingerprint, "running here"};
  if (auto c = committed_.find(txid); c != committed_.end())
    return {c->second.fingerprint, "committed here"};
  if (auto a = aborted_.find(txid); a != aborted_.end())
    return {a->second.fingerprint, "aborted here"};
  if (auto o = other_.find(txid); o != other_.end())
    return {o->second.fingerprint, "finished here"};
  if (auto u = unknown_.find(txid); u != unknown_.end())
    return {u->second, "run here with an unknown outcome"};
  return {Fingerprint{}, "unknown here"};
}

std::optional<Error> CoordinatorCore::CheckReuse(const TxId& txid,
                                                 const Fingerprint& fingerprint) const {
  const auto [known, where] = KnownFingerprint(txid);
  if (!Contradicts(known, fingerprint)) return std::nullopt;
  return Error{ErrorCode::kBadArgument,
               "txid reused with different content: transaction " + txid.ToString() + " (" + where +
                   ") has fingerprint " + known.ToString() + ", this request " +
                   fingerprint.ToString() + "; a new transaction needs a new txid"};
}

std::optional<Error> CoordinatorCore::Validate(const CommitRequest& req) const {
  if (req.shard_map_version != opts_.shard_map_version) {
    return Error{ErrorCode::kWrongShard,
                 "shard map version " + std::to_string(req.shard_map_version) +
                     " is not current (" + std::to_string(opts_.shard_map_version) +
                     "); fetch GetShardMap and retry"};
  }
  size_t keys = req.reads.size() + req.writes.size();
  if (keys > kTxKeysMax) {
    return Error{ErrorCode::kBadArgument, "transaction has " + std::to_string(keys) +
                                              " keys (reads + writes), max " +
                                              std::to_string(kTxKeysMax)};
  }
  size_t bytes = 0;
  auto check_key = [&](const std::string& key, const char* what) -> std::optional<Error> {
    if (key.empty()) return Error{ErrorCode::kBadArgument, std::string("empty ") + what + " key"};
    if (key.size() > kKeyBytesMax) {
      return Error{ErrorCode::kBadArgument, std::string(what) + " key of " +
                                                std::to_string(key.size()) + " bytes, max " +
                                                std::to_string(kKeyBytesMax)};
    }
    bytes += key.size();
    return std::nullopt;
  };
  std::set<std::string_view> seen;
  for (const ReadItem& r : req.reads) {
    if (auto e = check_key(r.key, "read")) return *e;
    if (r.version < 0) {
      return Error{ErrorCode::kBadArgument, "negative read version " + std::to_string(r.version)};
    }
    if (!seen.insert(r.key).second) return Error{ErrorCode::kBadArgument, "key read twice"};
  }
  seen.clear();
  for (const WriteItem& w : req.writes) {
    if (auto e = check_key(w.key, "write")) return *e;
    if (w.value && w.value->size() > kValueBytesMax) {
      return Error{ErrorCode::kBadArgument, "value of " + std::to_string(w.value->size()) +
                                                " bytes, max " + std::to_string(kValueBytesMax)};
    }
    if (w.value) bytes += w.value->size();
    if (!seen.insert(w.key).second) return Error{ErrorCode::kBadArgument, "key written twice"};
  }
  if (bytes > kTxBytesMax) {
    return Error{ErrorCode::kBadArgument, "transaction carries " + std::to_string(bytes) +
                                              " bytes of keys and values, max " +
                                              std::to_string(kTxBytesMax)};
  }
  if (keys > 0 && opts_.participants.empty()) {
    return Error{ErrorCode::kUnavailable, "no participants configured"};
  }
  return std::nullopt;
}

void CoordinatorCore::StartTx(uint64_t now_ms, RequestToken token, CommitRequest req,
                              const Fingerprint& fingerprint) {
  if (req.reads.empty() && req.writes.empty()) {
    // Nothing to validate or write anywhere: trivially committed, nothing
    // to remember.
    ReplyTo(token, Committed("empty transaction"));
    return;
  }
  const size_t n = opts_.participants.size();
  const bool read_only = req.writes.empty();
  std::map<size_t, PrepareMsg> by_shard;  // ordered: PREPAREs go out in shard order
  for (ReadItem& r : req.reads) {
    by_shard[ShardHash(r.key) % n].reads.push_back(std::move(r));
  }
  for (WriteItem& w : req.writes) {
    by_shard[ShardHash(w.key) % n].writes.push_back(std::move(w));
  }
  if (by_shard.size() > opts_.participants_per_tx_max) {
    ++stats_.rejected_bad_argument;
    ReplyTo(token,
            Error{ErrorCode::kBadArgument, "transaction spans " + std::to_string(by_shard.size()) +
                                               " participants, max " +
                                               std::to_string(opts_.participants_per_tx_max)});
    return;
  }
  for (const auto& [shard, msg] : by_shard) {
    const std::string& address = opts_.participants[shard];
    if (suspected_.count(address) != 0) {
      // Fail fast: the failure detector says the participant is down, so a
      // PREPARE would only wait for a timeout.
      ++stats_.rejected_suspected;
      if (req.is_retry || unknown_.count(req.txid) != 0) {
        // A retry whose earlier attempt's outcome the client does not know
        // (or a one-phase commit whose first attempt got no answer here):
        // it may have committed - a one-phase commit leaves no record here,
        // and a restarted coordinator remembers no unknown outcomes - so
        // without asking the participant the outcome stays unknown.
        ++stats_.outcomes_unknown;
        ReplyTo(token,
                CommitResult{Outcome::kUnknown, std::nullopt,
                             "participant " + address +
                                 " is suspected (no heartbeat) and "
                                 "an earlier attempt of this transaction may have committed"});
        return;
      }
      ++stats_.aborts_unavailable;
      LogAbortOf(token, req.txid, fingerprint,
                 Aborted(AbortReason::kParticipantUnavailable,
                         "participant " + address + " is suspected (no heartbeat)"));
      return;
    }
  }
  const size_t undecided = txs_.size() - committing_count_;
  if (undecided >= opts_.in_flight_tx_max) {
    ++stats_.rejected_busy;
    ReplyTo(token,
            Error{ErrorCode::kUnavailable, "too busy: " + std::to_string(undecided) +
                                               " transactions in flight (max " +
                                               std::to_string(opts_.in_flight_tx_max) + ")"});
    return;
  }
  if (committing_count_ >= opts_.committing_tx_max) {
    ++stats_.rejected_busy;
    ReplyTo(token, Error{ErrorCode::kUnavailable,
                         "too busy: " + std::to_string(committing_count_) +
                             " decided transactions still delivering COMMIT (max " +
                             std::to_string(opts_.committing_tx_max) + ")"});
    return;
  }

  Tx tx;
  tx.txid = req.txid;
  tx.one_phase = by_shard.size() == 1;
  tx.read_only = read_only;
  tx.retry = req.is_retry || unknown_.count(req.txid) != 0;
  tx.fingerprint = fingerprint;
  tx.attempt = Attempt{epoch_, ++attempt_seq_};
  tx.waiters.push_back(token);
  tx.deadline_ms = now_ms + opts_.prepare_timeout_ms;
  for (auto& [shard, msg] : by_shard) {
    msg.txid = tx.txid;
    msg.epoch = epoch_;
    msg.one_phase = tx.one_phase;
    msg.read_only_tx = tx.read_only;
    msg.coordinator = opts_.self_address;
    msg.fingerprint = fingerprint;
    msg.attempt = tx.attempt;
    msg.is_retry = tx.retry;
    Part p;
    p.address = opts_.participants[shard];
    p.state = PState::kPrepareSent;
    p.msg_id = Send(p.address, opts_.prepare_timeout_ms, std::move(msg));
    tx.parts.push_back(std::move(p));
  }
  auto [it, inserted] = txs_.emplace(tx.txid, std::move(tx));
  DTX_CHECK(inserted);
  SetTimer(it->second, it->second.deadline_ms);
}

void CoordinatorCore::QueryDecision(uint64_t /*now_ms*/, RequestToken token, TxId txid,
                                    const Fingerprint& fingerprint, Attempt attempt) {
  ++stats_.queries;
  if (!started_) {
    ReplyTo(token, Error{ErrorCode::kUnavailable, "coordinator is starting"});
    return;
  }
  if (attempt.epoch > epoch_) {
    // A coordinator at a newer epoch started that attempt: only it (or its
    // successor) knows what became of it.
    ReplyTo(token, Decision::kUnknown);
    return;
  }
  if (Contradicts(KnownFingerprint(txid).first, fingerprint)) {
    // The participant holds another transaction under this txid (a client
    // reused it). Had that one been decided commit here, its DECISION would
    // be known here under txid, and this one refused. A fenced coordinator
    // cannot say so: a newer one may have decided it.
    ReplyTo(token, fenced_ ? Decision::kUnknown : Decision::kAbort);
    return;
  }
  if (Tx* tx = FindTx(txid)) {
    switch (tx->phase) {
      case Phase::kCommitting: ReplyTo(token, Decision::kCommit); return;
      case Phase::kAborting: ReplyTo(token, Decision::kAbort); return;
      case Phase::kDeciding:
        // DECISION is in the log but not yet durable: it cannot be taken
        // back, so answer COMMIT once it is durable.
        tx->query_waiters.push_back(token);
        return;
      case Phase::kPreparing:
        if (tx->one_phase) {
          // The participant itself decides a one-phase transaction.
          ReplyTo(token, Decision::kUnknown);
          return;
        }
        if (attempt.known() && attempt < tx->attempt) {
          // An earlier attempt, which ended before this one started: it did
          // not commit. The answer is about it alone (the participant
          // applies it only while it still holds that attempt); this one
          // runs on.
          ReplyTo(token, Decision::kAbort);
          return;
        }
        // Presumed abort: undecided means not committed; abort it now so the
        // answer stays true.
        Abort(*tx, AbortReason::kParticipantUnavailable,
              "a participant asked for the decision before all votes arrived");
        ReplyTo(token, Decision::kAbort);
        return;
    }
  }
  if (const CommitResult* outcome = FindOutcome(txid)) {
    ReplyTo(token, outcome->outcome == Outcome::kCommitted ? Decision::kCommit : Decision::kAbort);
    return;
  }
  // Unknown: a commit decision is forced to the log before any participant
  // hears of it and its committed outcome is kept as long as the log keeps
  // the DECISION (and until every participant acknowledged), so an unknown
  // txid provably never committed here. A fenced coordinator cannot say
  // that: a newer one may have decided it.
  if (fenced_) {
    ReplyTo(token, Decision::kUnknown);
    return;
  }
  // Remember the answer: a later Commit of the same txid (a client resolving
  // an unknown outcome) must not decide it the other way.
  DTX_PROBE(coordinator_query_presumed_abort);
  // With the asker's fingerprint: a Commit of other content under this txid
  // (a client reused it) is then refused, not told this answer.
  RememberOther(txid,
                Aborted(AbortReason::kParticipantUnavailable,
                        "presumed abort: a participant asked before any decision here"),
                fingerprint);
  ReplyTo(token, Decision::kAbort);
}

// ---- participant replies --------------------------------------------------------

void CoordinatorCore::OnPrepareReply(uint64_t now_ms, const PrepareReply& r_in) {
  PrepareReply r = r_in;
  if (r.status == CallStatus::kStaleEpoch && !StaleEpochBelievable(epoch_, r.current_epoch)) {
    r.status = CallStatus::kError;
  }
  if (r.status == CallStatus::kStaleEpoch) {
    if (r.msg_id >= first_msg_of_epoch_) {
      Fence();
    } else {
      r.status = CallStatus::kError;  // stamped with our previous epoch
    }
  }
  Tx* tx = FindTx(r.txid);
  if (tx == nullptr || tx->phase != Phase::kPreparing) {
    // Late or duplicate vote. A YES for a transaction aborted here means
    // the participant holds locks (our ABORT may have overtaken its
    // PREPARE): tell it again. Anything else needs nothing.
    if (r.status == CallStatus::kOk && r.vote == Vote::kYes &&
        (tx == nullptr || tx->phase == Phase::kAborting)) {
      const CommitResult* outcome = tx != nullptr ? &tx->abort_result : FindOutcome(r.txid);
      if (outcome != nullptr && outcome->outcome == Outcome::kAborted) {
        DTX_PROBE(coordinator_late_yes_aborted_again);
        Send(r.participant, opts_.abort_timeout_ms, AbortMsg{r.txid, epoch_, r.attempt});
      }
    }
    return;
  }
  size_t i = FindPart(*tx, r.participant);
  if (i == kNpos) return;
  Part& p = tx->parts[i];
  if (p.state != PState::kPrepareSent || p.msg_id != r.msg_id) return;

  if (r.status == CallStatus::kOk && r.vote == Vote::kNo && r.txid_reused) {
    RefuseReused(*tx, r.participant, r.detail);
    return;
  }
  if (tx->one_phase) {
    CommitResult result;
    // The status as the participant sent it: a STALE_EPOCH that does not
    // fence us (to a message of our previous epoch, or naming an
    // unbelievable epoch; r.status says kError) is still a refusal of this
    // copy only (dtx-sim --failover --seed 2633: a duplicate PREPARE stamped
    // with the epoch this coordinator had just left).
    switch (r_in.status) {
      case CallStatus::kOk:
        if (r.vote == Vote::kNo) {
          result = Aborted(r.reason.value_or(AbortReason::kConflict), r.detail);
        } else {
          result = Committed();
        }
        break;
      case CallStatus::kUnavailable:
      case CallStatus::kTimeout:
        // The participant may have committed: only it knows. Not recorded
        // here, so a retry with the same txid asks it again.
        result = CommitResult{Outcome::kUnknown, std::nullopt,
                              "no answer from participant " + r.participant + ": " + r.error};
        break;
      case CallStatus::kStaleEpoch:
        // This message was refused, but the participant alone decides: it
        // may have committed this attempt from another copy of the PREPARE
        // that reached it before it adopted the newer epoch (found by the
        // simulator: an ABORTED answer here, logged, outlived a step-down
        // and was told to the client's retry). A coordinator at the newer
        // epoch asks it.
        result = CommitResult{Outcome::kUnknown, std::nullopt,
                              "participant " + r.participant + " refused the PREPARE's epoch (" +
                                  r.error + "); ask again with the same txid"};
        break;
      case CallStatus::kError:
        if (r.error_code == ErrorCode::kUnknownTx) {
          // The participant forgot an old outcome of this txid and cannot
          // tell whether it committed: an ABORTED answer would be a lie.
          result = CommitResult{
              Outcome::kUnknown, std::nullopt,
              "participant " + r.participant + " does not know the outcome: " + r.error};
        } else if (tx->retry) {
          result = CommitResult{Outcome::kUnknown, std::nullopt,
                                "participant " + r.participant + " refused: " + r.error +
                                    "; an earlier attempt of this transaction may have committed"};
        } else {
          result = Aborted(AbortReason::kParticipantUnavailable,
                           "participant " + r.participant + " refused: " + r.error);
        }
        break;
    }
    FinishOnePhase(*tx, std::move(result));
    return;
  }

  switch (r.status) {
    case CallStatus::kOk:
      if (r.vote == Vote::kYes) {
        p.state = PState::kYes;
      } else if (r.vote == Vote::kReadOnly) {
        p.state = PState::kReadOnly;
      } else {
        p.state = PState::kNo;
        Abort(*tx, r.reason.value_or(AbortReason::kConflict),
              "participant " + r.participant + " voted NO" +
                  (r.detail.empty() ? std::string() : ": " + r.detail),
              /*vote=*/true);
        return;
      }
      break;
    case CallStatus::kUnavailable:
      p.state = PState::kFailed;
      Abort(*tx, AbortReason::kParticipantUnavailable,
            "participant " + r.participant + " unreachable: " + r.error);
      return;
    case CallStatus::kTimeout:
      p.state = PState::kFailed;
      Abort(*tx, AbortReason::kTimeout,
            "no vote from participant " + r.participant + ": " + r.error);
      return;
    case CallStatus::kStaleEpoch:
      // Fence() above already aborted every undecided transaction.
      return;
    case CallStatus::kError:
      p.state = PState::kFailed;
      Abort(*tx, AbortReason::kParticipantUnavailable,
            "participant " + r.participant + " refused prepare: " + r.error);
      return;
  }
  for (const Part& q : tx->parts) {
    if (q.state != PState::kYes && q.state != PState::kReadOnly) return;
  }
  Decide(now_ms, *tx);
}

void CoordinatorCore::OnCommitReply(uint64_t now_ms, const AckReply& r) {
  if (r.status == CallStatus::kStaleEpoch && r.msg_id >= first_msg_of_epoch_ &&
      StaleEpochBelievable(epoch_, r.current_epoch)) {
    Fence();
  }
  Tx* tx = FindTx(r.txid);
  if (tx == nullptr || tx->phase != Phase::kCommitting) return;  // late, duplicate or unknown
  size_t i = FindPart(*tx, r.participant);
  if (i == kNpos) return;
  Part& p = tx->parts[i];
  if (p.state == PState::kAcked) return;
  if (r.status == CallStatus::kOk) {
    // An ack from any attempt counts: COMMIT is idempotent at the participant.
    p.state = PState::kAcked;
    if (MaybeEnd(*tx)) return;
  } else if (p.state == PState::kCommitSent && p.msg_id == r.msg_id) {
    CommitAttemptFailed(now_ms, p);
  } else {
    return;
  }
  SetTimer(*tx, NextTimer(*tx));
}

void CoordinatorCore::OnAbortReply(uint64_t /*now_ms*/, const AckReply& r) {
  // ABORT is fire-and-forget (a participant still in doubt asks
  // QueryDecision); only a newer epoch matters.
  if (r.status == CallStatus::kStaleEpoch && r.msg_id >= first_msg_of_epoch_ &&
      StaleEpochBelievable(epoch_, r.current_epoch)) {
    Fence();
  }
}

void CoordinatorCore::OnPersisted(uint64_t now_ms, PersistTag tag, uint64_t lsn) {
  max_lsn_seen_ = std::max(max_lsn_seen_, lsn);
  if (tag != 0 && tag == epoch_tag_) {
    epoch_tag_ = 0;
    epoch_durable_ = true;
    epoch_lsn_ = lsn;
    UpdateTruncation();
    return;
  }
  if (auto relog = relog_pending_.find(tag); tag != 0 && relog != relog_pending_.end()) {
    // The copy is durable: the transaction's DECISION is now the one at
    // `lsn`, and the log may be truncated past the first (Replay keeps the
    // newest copy of a txid's DECISION). If phase 2 ended meanwhile, its END
    // follows the copy in the log, and nothing is open.
    Tx* tx = FindTx(relog->second);
    relog_pending_.erase(relog);
    if (tx != nullptr && tx->phase == Phase::kCommitting && tx->decision_lsn < lsn) {
      active_decisions_.erase({tx->decision_lsn, tx->txid});
      tx->decision_lsn = lsn;
      active_decisions_.emplace(lsn, tx->txid);
      ++stats_.decisions_relogged;
      DTX_PROBE(coordinator_decision_relogged);
    }
    UpdateTruncation();
    return;
  }
  if (auto aborted = pending_aborts_.find(tag); aborted != pending_aborts_.end()) {
    // The abort is durable: only now may a client hear ABORTED.
    Tx* tx = FindTx(aborted->second);
    pending_aborts_.erase(aborted);
    pending_floor_.erase(tag);
    DTX_CHECK(tx != nullptr && tx->phase == Phase::kAborting);
    RememberAborted(tx->txid, lsn, tx->fingerprint, tx->abort_result);
    ReplyAll(*tx, tx->abort_result);
    Forget(tx->txid);
    UpdateTruncation();
    return;
  }
  auto pending = pending_decisions_.find(tag);
  if (pending == pending_decisions_.end()) return;
  TxId txid = pending->second;
  pending_decisions_.erase(pending);
  pending_floor_.erase(tag);
  Tx* tx = FindTx(txid);
  DTX_CHECK(tx != nullptr && tx->phase == Phase::kDeciding);
  // The commit point: DECISION is durable. Only now may anyone hear of it.
  tx->decision_lsn = lsn;
  tx->phase = Phase::kCommitting;
  ++committing_count_;
  ++stats_.commits;
  active_decisions_.emplace(lsn, txid);
  RememberCommitted(txid, lsn, tx->fingerprint);
  ReplyAll(*tx, Committed());
  for (RequestToken t : tx->query_waiters) ReplyTo(t, Decision::kCommit);
  tx->query_waiters.clear();
  EnterCommitting(now_ms, *tx);
  UpdateTruncation();
}

void CoordinatorCore::Tick(uint64_t now_ms) {
  while (!timers_.empty() && timers_.begin()->first <= now_ms) {
    TxId txid = timers_.begin()->second;
    Tx* tx = FindTx(txid);
    DTX_CHECK(tx != nullptr);
    SetTimer(*tx, 0);
    if (tx->phase == Phase::kPreparing) {
      std::string missing;
      for (Part& p : tx->parts) {
        if (p.state == PState::kPrepareSent) {
          p.state = PState::kFailed;
          missing += (missing.empty() ? "" : ",") + p.address;
        }
      }
      std::string detail =
          "no vote within " + std::to_string(opts_.prepare_timeout_ms) + " ms from " + missing;
      if (tx->one_phase) {
        FinishOnePhase(*tx, CommitResult{Outcome::kUnknown, std::nullopt, std::move(detail)});
      } else {
        Abort(*tx, AbortReason::kTimeout, std::move(detail));
      }
    } else if (tx->phase == Phase::kCommitting) {
      for (Part& p : tx->parts) {
        if (p.deadline_ms > now_ms) continue;
        if (p.state == PState::kCommitSent) {
          CommitAttemptFailed(now_ms, p);  // no reply at all: the message was lost
        } else if (p.state == PState::kBackoff) {
          DTX_PROBE(coordinator_commit_resent);
          ++stats_.commit_resends;
          SendCommit(now_ms, *tx, p);
        }
      }
      SetTimer(*tx, NextTimer(*tx));
    }
  }
}

void CoordinatorCore::SetParticipantSuspected(uint64_t now_ms, const std::string& address,
                                              bool suspected) {
  if (std::find(opts_.participants.begin(), opts_.participants.end(), address) ==
      opts_.participants.end()) {
    return;
  }
  if (!suspected) {
    if (suspected_.erase(address) == 0) return;
    // It is back: deliver waiting COMMITs now rather than after the backoff.
    for (auto& [txid, tx] : txs_) {
      if (tx.phase != Phase::kCommitting) continue;
      bool resent = false;
      for (Part& p : tx.parts) {
        if (p.address == address && p.state == PState::kBackoff) {
          ++stats_.commit_resends;
          p.backoff_ms = opts_.commit_retry_initial_ms;
          SendCommit(now_ms, tx, p);
          resent = true;
        }
      }
      if (resent) SetTimer(tx, NextTimer(tx));
    }
    return;
  }
  if (!suspected_.insert(address).second) return;
  std::vector<TxId> waiting;
  for (const auto& [txid, tx] : txs_) {
    if (tx.phase != Phase::kPreparing) continue;
    for (const Part& p : tx.parts) {
      if (p.address == address && p.state == PState::kPrepareSent) {
        waiting.push_back(txid);
        break;
      }
    }
  }
  for (const TxId& txid : waiting) {
    Tx& tx = *FindTx(txid);
    std::string detail = "participant " + address + " is suspected (no heartbeat)";
    if (tx.one_phase) {
      // Only the participant knows whether it committed.
      FinishOnePhase(tx, CommitResult{Outcome::kUnknown, std::nullopt, std::move(detail)});
    } else {
      for (Part& p : tx.parts) {
        if (p.address == address) p.state = PState::kFailed;
      }
      Abort(tx, AbortReason::kParticipantUnavailable, std::move(detail));
    }
  }
}

void CoordinatorCore::BumpEpoch(uint64_t /*now_ms*/, Epoch epoch) {
  DTX_CHECK(started_ && epoch > epoch_);
  epoch_ = epoch;
  epoch_durable_ = false;
  fenced_ = false;
  first_msg_of_epoch_ = next_msg_id_;
  epoch_tag_ = Persist(EpochRecord{epoch}, /*forced=*/true, TxId{});
}

std::vector<DecisionRecord> CoordinatorCore::OpenDecisions() const {
  std::vector<DecisionRecord> out;
  if (!started_) {
    for (const auto& [txid, entry] : replayed_open_) out.push_back(entry.second);
    return out;
  }
  // A transaction whose abort DECISION is not durable yet is here too (as
  // that record): its ABORTED answer waits for the backup like a commit.
  for (const auto& [txid, tx] : txs_) {
    if (tx.phase == Phase::kPreparing) continue;
    out.push_back(DecisionOf(tx));
  }
  return out;
}

DecisionRecord CoordinatorCore::DecisionOf(const Tx& tx) const {
  DecisionRecord d;
  d.txid = tx.txid;
  d.epoch = epoch_;
  d.fingerprint = tx.fingerprint;
  if (tx.phase == Phase::kAborting) {
    d.commit = false;
    d.reason = tx.abort_result.reason.value_or(AbortReason::kConflict);
    return d;
  }
  d.commit = true;
  for (const Part& p : tx.parts) d.participants.push_back(p.address);
  return d;
}

// ---- transitions --------------------------------------------------------------------

void CoordinatorCore::Decide(uint64_t /*now_ms*/, Tx& tx) {
  DTX_CHECK(tx.phase == Phase::kPreparing && !fenced_);
  SetTimer(tx, 0);
  // READ_ONLY participants released their locks and need no phase 2.
  std::erase_if(tx.parts, [](const Part& p) { return p.state == PState::kReadOnly; });
  if (tx.parts.empty()) {
    ++stats_.commits_read_only;
    CommitResult result = Committed("read-only");
    ReplyAll(tx, result);
    RememberOther(tx.txid, result, tx.fingerprint);
    Forget(tx.txid);
    return;
  }
  tx.phase = Phase::kDeciding;
  tx.decision_tag = Persist(DecisionOf(tx), /*forced=*/true, tx.txid);
  pending_decisions_.emplace(tx.decision_tag, tx.txid);
  // Its LSN is not known until OnPersisted, but it is above every LSN known
  // now: truncation must stay below that until the DECISION reached its
  // commit point (the runtime may hold OnPersisted back for the backup's ack
  // while later records - a newer EPOCH - become durable).
  pending_floor_.emplace(tx.decision_tag, max_lsn_seen_ + 1);
}

void CoordinatorCore::Abort(Tx& tx, AbortReason reason, std::string detail, bool vote) {
  DTX_CHECK(tx.phase == Phase::kPreparing);
  // Presumed abort towards the participants: no record is needed for them
  // (no record means "not committed", which is what QueryDecision answers
  // for a txid it does not know). The client's ABORTED answer is logged
  // first (LogAbort): once told, no later attempt of the txid may commit,
  // across a restart or a failover.
  for (const Part& p : tx.parts) {
    // NO voters released their locks; the rest may hold them.
    if (p.state == PState::kPrepareSent || p.state == PState::kYes || p.state == PState::kFailed) {
      Send(p.address, opts_.abort_timeout_ms, AbortMsg{tx.txid, epoch_, tx.attempt});
    }
  }
  if (tx.retry && !vote) {
    // An earlier attempt of this txid may have committed (under another
    // coordinator, or before this one forgot it): only a NO vote proves
    // otherwise. The client asks again with the same txid.
    ++stats_.outcomes_unknown;
    ReplyAll(tx,
             CommitResult{Outcome::kUnknown, std::nullopt,
                          detail + "; an earlier attempt of this transaction may have committed"});
    Forget(tx.txid);
    return;
  }
  switch (reason) {
    case AbortReason::kConflict: ++stats_.aborts_conflict; break;
    case AbortReason::kParticipantUnavailable: ++stats_.aborts_unavailable; break;
    case AbortReason::kTimeout: ++stats_.aborts_timeout; break;
    case AbortReason::kCoordinatorFailover: ++stats_.aborts_failover; break;
    case AbortReason::kClientAbort: break;
  }
  LogAbort(tx, Aborted(reason, std::move(detail)));
}

void CoordinatorCore::LogAbort(Tx& tx, CommitResult result) {
  DTX_CHECK(tx.phase == Phase::kPreparing && result.outcome == Outcome::kAborted);
  DTX_CHECK(tx.query_waiters.empty());  // only a deciding transaction has them
  SetTimer(tx, 0);
  tx.phase = Phase::kAborting;
  tx.abort_result = std::move(result);
  const PersistTag tag = Persist(DecisionOf(tx), /*forced=*/true, tx.txid);
  pending_aborts_.emplace(tag, tx.txid);
  pending_floor_.emplace(tag, max_lsn_seen_ + 1);
  ++stats_.aborts_logged;
}

void CoordinatorCore::LogAbortOf(RequestToken token, const TxId& txid,
                                 const Fingerprint& fingerprint, CommitResult result) {
  Tx tx;
  tx.txid = txid;
  tx.fingerprint = fingerprint;
  tx.waiters.push_back(token);
  auto [it, inserted] = txs_.emplace(txid, std::move(tx));
  DTX_CHECK(inserted);
  LogAbort(it->second, std::move(result));
}

void CoordinatorCore::RefuseReused(Tx& tx, const std::string& participant,
                                   const std::string& detail) {
  DTX_CHECK(tx.phase == Phase::kPreparing);
  // The refusing participant prepared nothing for this attempt; whoever voted
  // YES or may still vote did - for this attempt only, since a participant
  // that knew the txid as another transaction would refuse too.
  for (const Part& p : tx.parts) {
    if (p.address == participant) continue;
    if (p.state == PState::kPrepareSent || p.state == PState::kYes || p.state == PState::kFailed) {
      Send(p.address, opts_.abort_timeout_ms, AbortMsg{tx.txid, epoch_, tx.attempt});
    }
  }
  ++stats_.rejected_txid_reused;
  const Error refusal{
      ErrorCode::kBadArgument,
      "txid reused with different content: participant " + participant + " knows transaction " +
          tx.txid.ToString() + " as another one (this request's fingerprint " +
          tx.fingerprint.ToString() + ")" + (detail.empty() ? std::string() : ": " + detail) +
          "; a new transaction needs a new txid"};
  for (RequestToken t : tx.waiters) ReplyTo(t, refusal);
  tx.waiters.clear();
  DTX_CHECK(tx.query_waiters.empty());  // only a deciding transaction has them
  Forget(tx.txid);
}

void CoordinatorCore::FinishOnePhase(Tx& tx, CommitResult result) {
  // One participant: its forced COMMIT record is the commit point and no
  // other participant can be in doubt, so the coordinator logs nothing. Its
  // memory of the outcome only serves repeated client requests.
  switch (result.outcome) {
    case Outcome::kCommitted: ++stats_.commits_one_phase; break;
    case Outcome::kAborted:
      if (result.reason == AbortReason::kConflict) ++stats_.aborts_conflict;
      else if (result.reason == AbortReason::kCoordinatorFailover) ++stats_.aborts_failover;
      else ++stats_.aborts_unavailable;
      break;
    case Outcome::kUnknown: ++stats_.outcomes_unknown; break;
  }
  if (result.outcome == Outcome::kAborted) {
    // A retry of a one-phase transaction is evaluated afresh by its
    // participant, and may commit: the ABORTED answer is logged first.
    LogAbort(tx, std::move(result));
    return;
  }
  ReplyAll(tx, result);
  if (result.outcome != Outcome::kUnknown) {
    RememberOther(tx.txid, result, tx.fingerprint);
  } else {
    RememberUnknown(tx.txid, tx.fingerprint);
  }
  Forget(tx.txid);
}

void CoordinatorCore::EnterCommitting(uint64_t now_ms, Tx& tx) {
  for (Part& p : tx.parts) SendCommit(now_ms, tx, p);
  SetTimer(tx, NextTimer(tx));
}

void CoordinatorCore::SendCommit(uint64_t now_ms, Tx& tx, Part& p) {
  CommitMsg msg{tx.txid, epoch_, /*first_of_tx=*/!tx.first_commit_sent};
  tx.first_commit_sent = true;
  p.state = PState::kCommitSent;
  p.msg_id = Send(p.address, opts_.commit_timeout_ms, msg);
  p.deadline_ms = now_ms + opts_.commit_timeout_ms;
  if (p.backoff_ms == 0) p.backoff_ms = opts_.commit_retry_initial_ms;
}

void CoordinatorCore::CommitAttemptFailed(uint64_t now_ms, Part& p) {
  p.state = PState::kBackoff;
  p.deadline_ms = now_ms + p.backoff_ms;
  p.backoff_ms = std::min(p.backoff_ms * 2, opts_.commit_retry_max_ms);
}

bool CoordinatorCore::MaybeEnd(Tx& tx) {
  for (const Part& p : tx.parts) {
    if (p.state != PState::kAcked) return false;
  }
  // Every participant has COMMIT durably: END needs no sync (losing it only
  // re-sends COMMIT after a restart). The committed outcome stays remembered.
  Persist(EndRecord{tx.txid}, /*forced=*/false, tx.txid);
  DTX_CHECK(committing_count_ > 0);
  --committing_count_;
  active_decisions_.erase({tx.decision_lsn, tx.txid});
  Forget(tx.txid);
  UpdateTruncation();
  return true;
}

void CoordinatorCore::Fence() {
  if (fenced_) return;
  fenced_ = true;
  // Never decide commit again here: abort everything undecided (a one-phase
  // transaction is decided by its participant and runs to its end).
  std::vector<TxId> undecided;
  for (const auto& [txid, tx] : txs_) {
    if (tx.phase == Phase::kPreparing && !tx.one_phase) undecided.push_back(txid);
  }
  for (const TxId& txid : undecided) {
    Abort(*FindTx(txid), AbortReason::kCoordinatorFailover,
          "a participant reported a newer coordinator epoch");
  }
}

// ---- helpers ----------------------------------------------------------------------

void CoordinatorCore::Forget(const TxId& txid) {
  Tx* tx = FindTx(txid);
  DTX_CHECK(tx != nullptr);
  SetTimer(*tx, 0);
  DTX_CHECK(tx->waiters.empty() && tx->query_waiters.empty());
  txs_.erase(txid);
}

void CoordinatorCore::SetTimer(Tx& tx, uint64_t at_ms) {
  if (tx.timer_ms != 0) timers_.erase({tx.timer_ms, tx.txid});
  tx.timer_ms = at_ms;
  if (at_ms != 0) timers_.emplace(at_ms, tx.txid);
}

uint64_t CoordinatorCore::NextTimer(const Tx& tx) const {
  if (tx.phase == Phase::kPreparing) return tx.deadline_ms;
  if (tx.phase == Phase::kDeciding || tx.phase == Phase::kAborting) return 0;
  uint64_t next = 0;
  for (const Part& p : tx.parts) {
    if (p.state == PState::kAcked) continue;
    if (next == 0 || p.deadline_ms < next) next = p.deadline_ms;
  }
  return next;
}

void CoordinatorCore::ReplyTo(RequestToken token,
                              std::variant<CommitResult, Decision, Error> body) {
  ready_.replies.push_back(Reply{token, std::move(body)});
}

void CoordinatorCore::ReplyAll(Tx& tx, const CommitResult& result) {
  for (RequestToken t : tx.waiters) ReplyTo(t, result);
  tx.waiters.clear();
  for (RequestToken t : tx.query_waiters) {
    ReplyTo(t, result.outcome == Outcome::kCommitted ? Decision::kCommit : Decision::kAbort);
  }
  tx.query_waiters.clear();
}

MessageId CoordinatorCore::Send(std::string to, uint64_t timeout_ms,
                                std::variant<PrepareMsg, CommitMsg, AbortMsg> body) {
  MessageId id = next_msg_id_++;
  ready_.send.push_back(OutMessage{id, std::move(to), timeout_ms, std::move(body)});
  return id;
}

PersistTag CoordinatorCore::Persist(const Record& r, bool forced, TxId txid) {
  PersistTag tag = next_tag_++;
  ready_.persist.push_back(PersistRecord{tag, TypeOf(r), EncodePayload(r), forced, txid});
  return tag;
}

void CoordinatorCore::RememberCommitted(const TxId& txid, uint64_t lsn,
                                        const Fingerprint& fingerprint) {
  if (!committed_.emplace(txid, CommittedEntry{lsn, fingerprint}).second) return;
  committed_fifo_.emplace_back(lsn, txid);
  while (committed_fifo_.size() > opts_.committed_outcomes_max) {
    ForgetOldest(committed_fifo_, committed_);
  }
}

void CoordinatorCore::RememberAborted(const TxId& txid, uint64_t lsn,
                                      const Fingerprint& fingerprint, const CommitResult& result) {
  auto [it, inserted] = aborted_.emplace(txid, AbortedEntry{lsn, fingerprint, result});
  if (!inserted) {
    if (it->second.lsn >= lsn) return;
    it->second.lsn = lsn;  // the newer record holds it in the log from now on
  }
  aborted_fifo_.emplace_back(lsn, txid);
  while (aborted_fifo_.size() > opts_.aborted_outcomes_max) ForgetOldest(aborted_fifo_, aborted_);
}

std::vector<Record> CoordinatorCore::ClosedOutcomes(size_t max_bytes) const {
  // Both tables from the newest back, while the payloads fit in max_bytes,
  // then in LSN order, so a backup replaying them forgets in the same order
  // as this core. An entry whose txid has a newer one in its table (the fifo
  // keeps the old pair) or is still running is skipped.
  // Each record also costs its framing in the Replicate call (type, length).
  constexpr size_t kRecordOverhead = 16;
  const size_t end_size = EncodePayload(EndRecord{}).size() + kRecordOverhead;
  std::vector<Record> newest_first;
  size_t bytes = 0;
  auto c = committed_fifo_.rbegin();
  auto a = aborted_fifo_.rbegin();
  while (c != committed_fifo_.rend() || a != aborted_fifo_.rend()) {
    const bool take_commit =
        a == aborted_fifo_.rend() || (c != committed_fifo_.rend() && c->first > a->first);
    DecisionRecord d;
    if (take_commit) {
      const auto& [lsn, txid] = *c++;
      auto it = committed_.find(txid);
      if (it == committed_.end() || it->second.lsn != lsn || txs_.count(txid) != 0) continue;
      d.txid = txid;
      d.fingerprint = it->second.fingerprint;
    } else {
      const auto& [lsn, txid] = *a++;
      auto it = aborted_.find(txid);
      if (it == aborted_.end() || it->second.lsn != lsn) continue;
      d.txid = txid;
      d.commit = false;
      d.reason = it->second.result.reason.value_or(AbortReason::kConflict);
      d.fingerprint = it->second.fingerprint;
    }
    d.epoch = epoch_;
    const size_t size = EncodePayload(d).size() + kRecordOverhead + (d.commit ? end_size : 0);
    if (bytes + size > max_bytes) break;
    bytes += size;
    if (d.commit) newest_first.emplace_back(EndRecord{d.txid});
    newest_first.emplace_back(std::move(d));
  }
  return {newest_first.rbegin(), newest_first.rend()};
}

void CoordinatorCore::RememberUnknown(const TxId& txid, const Fingerprint& fingerprint) {
  if (!unknown_.emplace(txid, fingerprint).second) return;
  unknown_fifo_.push_back(txid);
  while (unknown_fifo_.size() > opts_.other_outcomes_max) {
    unknown_.erase(unknown_fifo_.front());
    unknown_fifo_.pop_front();
  }
}

void CoordinatorCore::RememberOther(const TxId& txid, const CommitResult& result,
                                    const Fingerprint& fingerprint) {
  if (!other_.emplace(txid, Other{result, fingerprint}).second) return;
  std::deque<TxId>& fifo =
      result.outcome == Outcome::kCommitted ? other_committed_fifo_ : other_aborted_fifo_;
  fifo.push_back(txid);
  while (fifo.size() > opts_.other_outcomes_max) {
    other_.erase(fifo.front());
    fifo.pop_front();
  }
}

CoordinatorCore::Memory CoordinatorCore::ExportMemory() const {
  Memory m;
  m.outcomes.reserve(other_committed_fifo_.size() + other_aborted_fifo_.size());
  for (const std::deque<TxId>* fifo : {&other_committed_fifo_, &other_aborted_fifo_}) {
    for (const TxId& t : *fifo) {
      const Other& o = other_.at(t);
      m.outcomes.push_back(Memory::Remembered{t, o.result, o.fingerprint});
    }
  }
  m.unknown.reserve(unknown_fifo_.size());
  for (const TxId& t : unknown_fifo_) m.unknown.emplace_back(t, unknown_.at(t));
  return m;
}

void CoordinatorCore::ImportMemory(const Memory& m) {
  for (const Memory::Remembered& o : m.outcomes) RememberOther(o.txid, o.result, o.fingerprint);
  for (const auto& [txid, fingerprint] : m.unknown) RememberUnknown(txid, fingerprint);
}

const CommitResult* CoordinatorCore::FindOutcome(const TxId& txid) const {
  static const CommitResult kCommitted = Committed();
  if (committed_.count(txid) != 0) return &kCommitted;
  if (auto a = aborted_.find(txid); a != aborted_.end()) return &a->second.result;
  auto it = other_.find(txid);
  return it == other_.end() ? nullptr : &it->second.result;
}

void CoordinatorCore::UpdateTruncation() {
  if (!started_ || epoch_lsn_ == 0) return;
  // The oldest LSN still needed: an un-ENDed DECISION (must be re-driven
  // after a restart), a remembered committed outcome (idempotency), or the
  // EPOCH record.
  const uint64_t gap = opts_.decision_relog_lsn_gap;
  if (gap != 0 && relog_pending_.empty() && !active_decisions_.empty() &&
      max_lsn_seen_ > active_decisions_.begin()->first &&
      max_lsn_seen_ - active_decisions_.begin()->first > gap) {
    // The oldest open DECISION is far behind the head (a participant that
    // does not acknowledge its COMMIT): write it again, so that truncation
    // can move on once the copy is durable - and with it every open DECISION
    // more than half the distance behind, in one group commit. One copy at a
    // time fell behind: with hundreds open (every transaction a participant
    // was in when it stopped) each copy waited for the sync of the one
    // before, and the log grew to seven times its budget
    // (bindings/python/tests/test_long_outage.py). Copying the older half at
    // once writes each open DECISION about once per half the distance. No
    // new batch while one is on its way: until it is durable the oldest is
    // still behind, and every call would walk the batch again.
    for (auto it = active_decisions_.begin();
         it != active_decisions_.end() && max_lsn_seen_ > it->first &&
         max_lsn_seen_ - it->first > gap / 2 && relog_pending_.size() < kRelogBatchMax;
         ++it) {
      Tx* tx = FindTx(it->second);
      DTX_CHECK(tx != nullptr && tx->phase == Phase::kCommitting);
      relog_pending_.emplace(Persist(DecisionOf(*tx), /*forced=*/true, tx->txid), tx->txid);
      ready_.persist.back().relog = true;
    }
  }
  // Remembered outcomes are bounded by age in the log too, not only by
  // count: aborts are sparse where commits are dense (and the other way
  // round), and the oldest of the sparser kind would otherwise keep every
  // record since it (bindings/python/tests/test_long_outage.py: the log grew
  // from the start, held by the oldest of 1,000 remembered aborts).
  const uint64_t window = 2 * (opts_.committed_outcomes_max + opts_.aborted_outcomes_max);
  if (max_lsn_seen_ > window) {
    const uint64_t oldest = max_lsn_seen_ - window;
    while (!committed_fifo_.empty() && committed_fifo_.front().first < oldest) {
      ForgetOldest(committed_fifo_, committed_);
    }
    while (!aborted_fifo_.empty() && aborted_fifo_.front().first < oldest) {
      ForgetOldest(aborted_fifo_, aborted_);
    }
  }
  uint64_t keep = max_lsn_seen_ + 1;
  if (!committed_fifo_.empty()) keep = std::min(keep, committed_fifo_.front().first);
  if (!aborted_fifo_.empty()) keep = std::min(keep, aborted_fifo_.front().first);
  if (!active_decisions_.empty()) keep = std::min(keep, active_decisions_.begin()->first);
  if (!pending_floor_.empty())
    keep = std::min(keep, pending_floor_.begin()->second);  // oldest tag: lowest floor
  if (epoch_tag_ == 0 && keep > epoch_lsn_ && keep - epoch_lsn_ > opts_.epoch_rewrite_lsn_gap) {
    // Only the EPOCH record holds truncation back: write it again; once the
    // copy is durable the old one may go.
    epoch_tag_ = Persist(EpochRecord{epoch_}, /*forced=*/true, TxId{});
  }
  keep = std::min(keep, epoch_lsn_);
  if (keep > truncate_emitted_) {
    truncate_emitted_ = keep;
    ready_.truncate_before = keep;
  }
}

CoordinatorCore::Tx* CoordinatorCore::FindTx(const TxId& txid) {
  auto it = txs_.find(txid);
  return it == txs_.end() ? nullptr : &it->second;
}

size_t CoordinatorCore::FindPart(const Tx& tx, std::string_view address) const {
  for (size_t i = 0; i < tx.parts.size(); ++i) {
    if (tx.parts[i].address == address) return i;
  }
  return kNpos;
}

Ready CoordinatorCore::TakeReady() {
  Ready out = std::move(ready_);
  ready_ = Ready{};
  return out;
}

ShardMap CoordinatorCore::shard_map() const {
  return ShardMap{opts_.shard_map_version, "hash", opts_.participants};
}

}  // namespace dtx::coordinator
