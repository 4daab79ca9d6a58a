// The coordinator's two-phase-commit state machine: pure, deterministic, no I/O.
//
// Shape (etcd raft's RawNode): inputs are method
// calls - a client request arrived (with an opaque RequestToken), a reply from
// a participant arrived (or its transport failure/timeout), a forced record
// became durable (OnPersisted), a timer tick (Tick), recovery replay (Replay).
// Time comes in as `now_ms` on every input; the core has no clock, thread,
// randomness or I/O of its own. Outputs collect in a Ready the caller drains
// with TakeReady() after every input (see Ready for the ordering rule).
//
// Protocol (docs/design.md "Durability and the commit path (classic: presumed abort)"):
//   * one participant involved: one-phase Prepare; its vote is the outcome.
//   * several: PREPARE to all in parallel; all YES/READ_ONLY -> DECISION
//     (forced) -> reply COMMITTED + COMMIT to every YES participant, re-sent
//     with backoff until acknowledged -> END (not forced) -> forget, keeping
//     the outcome in a bounded table. Any NO / error / timeout -> ABORTED,
//     nothing logged (presumed abort), ABORT sent once to the participants that
//     may hold locks (anyone still in doubt asks QueryDecision and hears ABORT).
//
// Idempotency by txid: a repeated Commit joins the running transaction or gets
// the remembered outcome - if it carries the same content. Every Commit's read
// and write sets are fingerprinted here (coordinator/fingerprint.h); a Commit
// of a txid known here (running, or in an outcome table) with another
// fingerprint is refused with BAD_ARGUMENT "txid reused with different
// content", never given the other transaction's outcome. PREPARE carries the
// fingerprint, and a participant that knows the txid with another one votes
// NO with PrepareReply::txid_reused: the same refusal (docs/design.md
// "Transaction identity"). Committed outcomes are remembered as long as the log
// keeps their DECISION (rebuilt on restart); aborted and one-phase outcomes
// only in memory (bounded), so after a restart or eviction a repeated Commit
// of an aborted txid runs 2PC again - a new attempt, atomic on its own, which
// participants that remember the abort refuse with NO. A committed txid is
// never run again while its DECISION is in the log.
//
// Attempts (docs/design.md "Attempts"): every run of PREPARE is an attempt
// stamped (epoch, seq) - seq grows within this core, and every core decides
// at an epoch of its own (Start persists a new one; HaCore establishes one).
// PREPARE and ABORT carry the stamp, and a participant applies an ABORT only
// to the attempt it holds under that stamp or an older one. So an ABORT of an
// earlier attempt, however late, cannot drop a newer attempt that voted YES;
// a new attempt may start as soon as the previous one ended. A QueryDecision
// names the attempt it asks about, and the answer is about that attempt.
//
// Message ids and request tokens are per instance: a restarted core starts
// again from 1, so replies to a previous instance's messages must not be fed
// to the new one (the runtime's connections die with the process).
//
// Ownership and threading: a CoordinatorCore owns all of its state; it keeps
// no pointers to caller objects. It is not thread-safe: one thread (the
// runtime's loop thread, or the simulator) calls every method.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>
#include <vector>

#include "common/status.h"
#include "common/types.h"
#include "coordinator/records.h"

namespace dtx::coordinator {

// Identifies a client request; chosen by the caller, echoed in Reply.
using RequestToken = uint64_t;
// Identifies one outgoing message; chosen by the core, echoed in the reply
// input so a late reply to an older message is told apart.
using MessageId = uint64_t;
// Identifies a forced record; echoed in OnPersisted.
using PersistTag = uint64_t;

// The wire vocabulary (common/types.h; checked against idl/dtx.thrift in
// common/wire.cc).
using ErrorCode = ::dtx::ErrorCode;
using Outcome = ::dtx::Outcome;
using Decision = ::dtx::Decision;
using Vote = ::dtx::Vote;

struct Error {
  ErrorCode code = ErrorCode::kInternal;
  std::string message;
  friend bool operator==(const Error&, const Error&) = default;
};

struct ReadItem {
  std::string key;
  Version version = 0;
};

struct WriteItem {
  std::string key;
  std::optional<std::string> value;  // nullopt: delete the key
};

struct CommitRequest {
  TxId txid;
  std::vector<ReadItem> reads;
  std::vector<WriteItem> writes;
  int64_t shard_map_version = 0;
  // The client re-sends a txid whose earlier attempt's outcome it does not
  // know. Such a request is never answered ABORTED unless the core can prove
  // the transaction did not commit: the suspected-participant fast-fail and a
  // one-phase Prepare that fails without a vote answer UNKNOWN instead.
  bool is_retry = false;
};

struct CommitResult {
  Outcome outcome = Outcome::kUnknown;
  std::optional<AbortReason> reason;  // with kAborted
  std::string detail;
  friend bool operator==(const CommitResult&, const CommitResult&) = default;
};

struct ShardMap {
  int64_t version = 0;
  std::string scheme;                     // "hash"
  std::vector<std::string> participants;  // host:port, index = shard
};

// ---- outputs ----------------------------------------------------------------

// A record to append to the WAL. `forced`: the core waits for
// OnPersisted(tag, lsn) before emitting anything that depends on it. A
// non-forced record needs no notification (the caller still appends it in
// order and treats a failure to make it durable as fatal).
struct PersistRecord {
  PersistTag tag = 0;
  RecordType type = RecordType::kEpoch;
  std::string payload;
  bool forced = false;
  TxId txid;  // the record's transaction (DECISION, END); zero for EPOCH
  // A DECISION written again for a transaction already in phase 2 (so the
  // log can be truncated past the first copy), not a new decision: no
  // commit point waits for it.
  bool relog = false;
};

struct PrepareMsg {
  TxId txid;
  Epoch epoch = 0;
  std::vector<ReadItem> reads;
  std::vector<WriteItem> writes;
  bool one_phase = false;
  bool read_only_tx = false;
  std::string coordinator;       // our address, for QueryDecision
  Fingerprint fingerprint = {};  // the whole transaction's content (not only this part)
  Attempt attempt;               // this attempt's stamp
  bool is_retry = false;         // an earlier attempt may have committed (Tx::retry)
};
struct CommitMsg {
  TxId txid;
  Epoch epoch = 0;
  // The first COMMIT of this transaction's phase 2 (failpoint
  // coordinator.phase2.after_first_commit goes right after sending it).
  bool first_of_tx = false;
};
struct AbortMsg {
  TxId txid;
  Epoch epoch = 0;
  Attempt attempt;  // the attempt that ended (a participant holding a newer one ignores it)
};

struct OutMessage {
  MessageId id = 0;
  std::string to;           // participant host:port
  uint64_t timeout_ms = 0;  // give up and report kTimeout after this long
  std::variant<PrepareMsg, CommitMsg, AbortMsg> body;
};

// The answer to one request: CommitResult for Commit, Decision for
// QueryDecision, Error for either.
struct Reply {
  RequestToken token = 0;
  std::variant<CommitResult, Decision, Error> body;
};

// Everything the caller must do after an input.
//
// ORDERING RULE: append `persist` to the WAL in order BEFORE sending `send`
// and delivering `replies`. Nothing in `send` or `replies` depends on a forced
// record of the same Ready: the core emits dependants only after
// OnPersisted(tag), i.e. only once the record is durable. So "a record is
// durable before any message that depends on it is sent" holds as long as
// the caller calls OnPersisted only after fdatasync returned 0.
struct Ready {
  std::vector<PersistRecord> persist;
  std::vector<OutMessage> send;
  std::vector<Reply> replies;
  // When non-zero: every WAL record with LSN < truncate_before is no longer
  // needed (the caller may wal::Log::TruncateBefore it, at its own pace).
  uint64_t truncate_before = 0;

  bool empty() const {
    return persist.empty() && send.empty() && replies.empty() && truncate_before == 0;
  }
};

// ---- inputs from participants ---------------------------------------------------

// How an outgoing call ended.
enum class CallStatus {
  kOk,
  kUnavailable,  // transport failure: could not send / connection lost
  kTimeout,      // no reply within the message's timeout
  kStaleEpoch,   // the participant adopted a newer epoch: a newer coordinator exists
  kError,        // any other error reply (DtxError)
};

struct PrepareReply {
  MessageId msg_id = 0;
  TxId txid;
  std::string participant;
  CallStatus status = CallStatus::kOk;
  std::string error;  // with status != kOk
  // With kError: the participant's DtxError code, if known. kUnknownTx from a
  // participant means "outcome unknown" (it forgot an old outcome of this
  // txid): a one-phase transaction then ends UNKNOWN, never ABORTED.
  std::optional<ErrorCode> error_code;
  Vote vote = Vote::kNo;
  std::optional<AbortReason> reason;  // with kNo
  std::string detail;                 // with kNo
  // With kStaleEpoch: the participant's current epoch, when it sent it.
  std::optional<Epoch> current_epoch;
  // With a NO vote: the participant knows this txid as a transaction with
  // another fingerprint; it prepared nothing for this request.
  bool txid_reused = false;
  // The stamp of the PREPARE this answers (PrepareMsg::attempt), filled in by
  // the caller from the message it sent.
  Attempt attempt;
};

// Reply to a CommitMsg or AbortMsg.
struct AckReply {
  MessageId msg_id = 0;
  TxId txid;
  std::string participant;
  CallStatus status = CallStatus::kOk;
  std::string error;
  // With kStaleEpoch: the participant's current epoch, when it sent it.
  std::optional<Epoch> current_epoch = std::nullopt;
};

// A STALE_EPOCH reply fences the core (a newer coordinator exists) unless
// it names an epoch more than kEpochJumpMax (common/types.h) above `ours`:
// no coordinator can hold that (participants refuse such a jump), so it is
// handled as an error reply (coordinator/README.md "Epoch bounds").
inline bool StaleEpochBelievable(Epoch ours, const std::optional<Epoch>& theirs) {
  return !theirs || !EpochJumpTooFar(ours, *theirs);
}

// ---- configuration and observability ---------------------------------------------

struct CoreOptions {
  std::vector<std::string> participants;  // host:port, index = shard
  int64_t shard_map_version = 1;
  std::string self_address;  // sent in PREPARE for QueryDecision

  uint64_t prepare_timeout_ms = 2000;
  uint64_t commit_timeout_ms = 2000;  // one COMMIT attempt
  uint64_t abort_timeout_ms = 1000;
  uint64_t commit_retry_initial_ms = 50;  // phase-2 re-send backoff
  uint64_t commit_retry_max_ms = 2000;

  // Undecided transactions (preparing or waiting for DECISION to be durable).
  size_t in_flight_tx_max = 4096;
  // Decided transactions still delivering COMMIT (bounded so a participant
  // that stays down turns into "too busy", not unbounded memory).
  size_t committing_tx_max = 65536;
  size_t participants_per_tx_max = kDecisionParticipantsMax;
  // Committed outcomes remembered for idempotency; the WAL is kept back far
  // enough (truncate_before) that these are exactly the DECISIONs it holds.
  size_t committed_outcomes_max = 100000;
  // ABORTED outcomes answered to clients, each logged before it was
  // answered (an abort DECISION), remembered and kept in the log the same
  // way, apart from the committed ones so neither pushes the other out.
  size_t aborted_outcomes_max = 100000;
  // One-phase and read-only committed outcomes, and presumed aborts answered
  // to a participant's QueryDecision, remembered in memory only (one-phase
  // commits are recorded by the participant; a presumed abort is logged
  // once a client is told it). The bound holds for the committed ones and
  // the aborted ones apart: aborts - which any participant's QueryDecision
  // of a random txid adds - never push a commit out.
  size_t other_outcomes_max = 100000;
  // Re-write EPOCH when it is this many LSNs behind, so truncation can move.
  uint64_t epoch_rewrite_lsn_gap = 100000;
  // Re-write the oldest open DECISION (phase 2 not finished: a participant
  // that does not acknowledge COMMIT, e.g. one down for hours) when it is
  // this many LSNs behind, so truncation moves past it: the decision log
  // stays bounded whatever is down and for how long (docs/design.md
  // "Long outages"). 0: never (--carry-forward-records 0).
  uint64_t decision_relog_lsn_gap = 100000;
};

struct CoreStats {
  uint64_t commits = 0;  // multi-participant, decided commit
  uint64_t commits_one_phase = 0;
  uint64_t commits_read_only = 0;  // every participant voted READ_ONLY
  uint64_t aborts_conflict = 0;
  uint64_t aborts_unavailable = 0;
  uint64_t aborts_timeout = 0;
  uint64_t aborts_failover = 0;
  uint64_t outcomes_unknown = 0;  // one-phase without an answer; retries fast-failed UNKNOWN
  uint64_t commit_resends = 0;
  uint64_t rejected_busy = 0;
  uint64_t rejected_bad_argument = 0;
  // Commits of a known txid with other content (here or at a participant).
  uint64_t rejected_txid_reused = 0;
  uint64_t rejected_suspected = 0;  // new transactions touching a suspected participant
  uint64_t queries = 0;
  uint64_t decisions_relogged = 0;  // open DECISIONs written again near the head
  uint64_t aborts_logged = 0;       // abort DECISIONs written before an ABORTED answer
};

// ---- the core ---------------------------------------------------------------

class CoordinatorCore {
 public:
  explicit CoordinatorCore(CoreOptions options);

  CoordinatorCore(const CoordinatorCore&) = delete;
  CoordinatorCore& operator=(const CoordinatorCore&) = delete;

  // Recovery: every WAL record, in LSN order, before Start. Corruption for a
  // record that does not decode.
  Status Replay(uint64_t lsn, uint8_t type, std::string_view payload);
  // How Start treats the epoch replayed from the log.
  enum class StartEpoch {
    // Move to a new epoch (replayed + 1; 1 on a fresh log), persisted
    // (forced) before any commit is decided: a coordinator alone. Its
    // previous incarnation's attempt stamps and messages (an ABORT still on
    // its way) then belong to an older epoch.
    kNew,
    // Decide at the replayed epoch: HaCore has just established it (its EPOCH
    // record is the last one replayed).
    kReplayed,
  };
  // Ends recovery; re-sends COMMIT for every DECISION without END. Commits
  // are refused with UNAVAILABLE until the epoch's record is durable. Called
  // once.
  void Start(uint64_t now_ms, StartEpoch epoch = StartEpoch::kNew);

  // A client's Commit. Replies (now or later) with a CommitResult or Error.
  void Commit(uint64_t now_ms, RequestToken token, CommitRequest req);
  // A participant's QueryDecision. Replies with a Decision or Error.
  // `fingerprint`: of the transaction the participant holds under txid (not
  // known: not checked). When this core knows txid with another fingerprint,
  // that content was never decided commit here: ABORT (UNKNOWN when fenced),
  // and nothing here changes - the transaction known here is another one.
  // `attempt`: the attempt the participant holds (not known: an older
  // participant, or a replayed unstamped PREPARE). The answer is about it:
  // ABORT without touching a newer attempt running here; UNKNOWN for an
  // attempt of an epoch newer than ours (a newer coordinator started it).
  void QueryDecision(uint64_t now_ms, RequestToken token, TxId txid,
                     const Fingerprint& fingerprint = Fingerprint{}, Attempt attempt = {});
  // A client's GetOutcome: the outcome remembered for txid (what a repeated
  // Commit would answer), or kUnknown (in flight, never seen, or forgotten).
  // Reads only: unlike QueryDecision it never decides or aborts anything, so
  // an abort is reported only once it is logged (a presumed abort answered
  // to a participant is not: a repeated Commit would log it first).
  Outcome RememberedOutcome(const TxId& txid) const {
    const CommitResult* r = FindOutcome(txid);
    if (r == nullptr) return Outcome::kUnknown;
    if (r->outcome == Outcome::kAborted && aborted_.count(txid) == 0) return Outcome::kUnknown;
    return r->outcome;
  }

  void OnPrepareReply(uint64_t now_ms, const PrepareReply& r);
  void OnCommitReply(uint64_t now_ms, const AckReply& r);
  void OnAbortReply(uint64_t now_ms, const AckReply& r);
  // A forced record is durable; `lsn` is its WAL LSN. Unknown tags are ignored.
  void OnPersisted(uint64_t now_ms, PersistTag tag, uint64_t lsn);
  // Drives timeouts and re-sends; call periodically (e.g. every 10 ms).
  void Tick(uint64_t now_ms);
  // The failure detector's verdict on a participant changed (heartbeats;
  // docs/design.md "Failure detection, replication, fencing"). Suspected: every undecided
  // transaction still waiting for that participant's vote ends at once (multi-participant:
  // ABORTED/PARTICIPANT_UNAVAILABLE; one-phase: UNKNOWN, as the participant
  // alone decides it), and new transactions touching its shard are refused
  // with ABORTED/PARTICIPANT_UNAVAILABLE without being sent anywhere.
  // Decided transactions keep re-sending COMMIT; when the participant is no
  // longer suspected, COMMITs waiting in backoff for it go out at once.
  // Unknown addresses are ignored.
  void SetParticipantSuspected(uint64_t now_ms, const std::string& address, bool suspected);
  bool participant_suspected(const std::string& address) const {
    return suspected_.count(address) != 0;
  }

  // True if a DECISION (commit) for txid is remembered: decided here, or
  // replayed. Valid before Start too (a backup's mirror of the primary).
  bool KnowsCommitted(const TxId& txid) const { return committed_.count(txid) != 0; }

  // The outcomes the log keeps (committed, and aborted as answered to a
  // client) of transactions with nothing left to do, oldest first, as
  // records: an abort DECISION, or a commit DECISION naming no participant
  // followed by its END. A primary's snapshot for its backup carries them
  // (coordinator/ha_core.cc StartSync), so a promoted backup answers a
  // repeated Commit as the primary did. The newest whose payloads fit in
  // max_bytes (a snapshot is one Replicate frame).
  std::vector<Record> ClosedOutcomes(size_t max_bytes = SIZE_MAX) const;

  // The outcomes remembered only in memory (aborted and one-phase outcomes,
  // one-phase transactions left unknown), oldest first. HaCore carries them
  // into the fresh core it builds on a step-down: the process and its
  // clients' connections live on, so a late copy of an answered request can
  // still arrive and must not run the transaction again (found by the
  // simulator, tests/sim/README.md).
  struct Memory {
    struct Remembered {
      TxId txid;
      CommitResult result;
      Fingerprint fingerprint = {};
    };
    std::vector<Remembered> outcomes;
    std::vector<std::pair<TxId, Fingerprint>> unknown;
  };
  Memory ExportMemory() const;
  // Adds `m` to what this core remembers (bounded as usual). Call before
  // Start; a committed outcome replayed from the log takes precedence.
  void ImportMemory(const Memory& m);

  // Every decision not yet known to be delivered (DECISION appended, END not
  // yet; before Start: replayed without END), and every abort DECISION not
  // yet durable: what a backup must hold to take over. Ordered by txid.
  std::vector<DecisionRecord> OpenDecisions() const;

  // A running core moves to `epoch` (> epoch()): its EPOCH record is persisted
  // (forced), every later message carries it, and new commits wait (refused
  // UNAVAILABLE) until the record is durable. The caller has made a majority
  // of participants adopt it first (coordinator/README.md "Epochs are owned").
  void BumpEpoch(uint64_t now_ms, Epoch epoch);
  // True while a forced EPOCH record is not yet durable.
  bool epoch_pending() const { return epoch_tag_ != 0; }

  Ready TakeReady();

  ShardMap shard_map() const;
  Epoch epoch() const { return epoch_; }
  bool started() const { return started_; }
  // A participant reported STALE_EPOCH: a newer coordinator exists; no new
  // commits are decided here.
  bool fenced() const { return fenced_; }
  // Undecided + committing transactions.
  size_t in_flight() const { return txs_.size(); }
  size_t committing() const { return committing_count_; }
  const CoreStats& stats() const { return stats_; }

 private:
  // kAborting: decided abort, its abort DECISION not yet durable; the
  // ABORTED answer waits for it (docs/design.md "Aborts answered are logged").
  enum class Phase { kPreparing, kDeciding, kCommitting, kAborting };
  enum class PState { kPrepareSent, kYes, kNo, kReadOnly, kFailed, kCommitSent, kBackoff, kAcked };

  struct Part {
    std::string address;
    std::vector<ReadItem> reads;
    std::vector<WriteItem> writes;
    PState state = PState::kPrepareSent;
    MessageId msg_id = 0;      // outstanding message
    uint64_t deadline_ms = 0;  // kCommitSent: give up on this attempt; kBackoff: send again
    uint64_t backoff_ms = 0;
  };

  struct Tx {
    TxId txid;
    Phase phase = Phase::kPreparing;
    bool one_phase = false;
    bool read_only = false;
    // An earlier attempt of this txid may have committed (the request said
    // is_retry, or an earlier one-phase attempt here ended UNKNOWN): a
    // failure without a vote must not be answered ABORTED.
    bool retry = false;
    std::vector<Part> parts;                  // shard order
    std::vector<RequestToken> waiters;        // Commit callers
    std::vector<RequestToken> query_waiters;  // QueryDecision while kDeciding
    uint64_t deadline_ms = 0;                 // kPreparing: the prepare timeout
    uint64_t timer_ms = 0;                    // key in timers_, 0 if none
    PersistTag decision_tag = 0;
    uint64_t decision_lsn = 0;  // kCommitting: 0 until durable (recovered: from replay)
    bool first_commit_sent = false;
    Fingerprint fingerprint = {};  // recovered from a DECISION of an old format: not known
    Attempt attempt;               // not known for a decision recovered from the log
    CommitResult abort_result;     // kAborting: the answer once its record is durable
  };

  // nullopt when the request may run.
  std::optional<Error> Validate(const CommitRequest& req) const;
  // The fingerprint txid is known here with (not known: none, or the txid is
  // not known) and where it is known ("running here", ...).
  std::pair<Fingerprint, const char*> KnownFingerprint(const TxId& txid) const;
  // The refusal of a Commit of txid with content `fingerprint` when this core
  // knows txid as another transaction; nullopt otherwise.
  std::optional<Error> CheckReuse(const TxId& txid, const Fingerprint& fingerprint) const;
  void StartTx(uint64_t now_ms, RequestToken token, CommitRequest req,
               const Fingerprint& fingerprint);
  void Decide(uint64_t now_ms, Tx& tx);
  // Ends an undecided transaction: ABORT to whoever may hold locks, nothing
  // logged. `vote`: a participant voted NO. Without a NO vote a retried
  // transaction (tx.retry) is answered UNKNOWN, not ABORTED, and no aborted
  // outcome is remembered: an earlier attempt may have committed under
  // another coordinator (after a failover the new primary does not remember
  // decisions that were ENDed before its last snapshot).
  void Abort(Tx& tx, AbortReason reason, std::string detail, bool vote = false);
  void FinishOnePhase(Tx& tx, CommitResult result);
  // Ends tx with an ABORTED answer: logs its abort DECISION (forced) and
  // answers every waiter once it is durable (OnPersisted). Until then tx
  // stays, in kAborting: repeats of the Commit wait with it.
  void LogAbort(Tx& tx, CommitResult result);
  // The same for a request that started no transaction here (a fast-failed
  // one, or a presumed abort remembered only in memory): a Tx without parts.
  void LogAbortOf(RequestToken token, const TxId& txid, const Fingerprint& fingerprint,
                  CommitResult result);
  // Ends an undecided transaction that `participant` refused because it knows
  // the txid as another transaction: ABORT to whoever may have prepared this
  // attempt, BAD_ARGUMENT to the client, nothing remembered (the other
  // transaction's outcome is not this request's).
  void RefuseReused(Tx& tx, const std::string& participant, const std::string& detail);
  void EnterCommitting(uint64_t now_ms, Tx& tx);
  void SendCommit(uint64_t now_ms, Tx& tx, Part& p);
  void CommitAttemptFailed(uint64_t now_ms, Part& p);
  // Logs END and forgets tx once every participant acknowledged; true then.
  bool MaybeEnd(Tx& tx);
  void Fence();
  void Forget(const TxId& txid);
  // Re-arms tx's single timer (0: none).
  void SetTimer(Tx& tx, uint64_t at_ms);
  uint64_t NextTimer(const Tx& tx) const;

  void ReplyTo(RequestToken token, std::variant<CommitResult, Decision, Error> body);
  void ReplyAll(Tx& tx, const CommitResult& result);
  MessageId Send(std::string to, uint64_t timeout_ms,
                 std::variant<PrepareMsg, CommitMsg, AbortMsg> body);
  PersistTag Persist(const Record& r, bool forced, TxId txid);

  void RememberCommitted(const TxId& txid, uint64_t lsn, const Fingerprint& fingerprint);
  void RememberAborted(const TxId& txid, uint64_t lsn, const Fingerprint& fingerprint,
                       const CommitResult& result);
  void RememberOther(const TxId& txid, const CommitResult& result, const Fingerprint& fingerprint);
  void RememberUnknown(const TxId& txid, const Fingerprint& fingerprint);
  const CommitResult* FindOutcome(const TxId& txid) const;
  void UpdateTruncation();

  // The DECISION record of `tx` (decided commit), at the current epoch.
  DecisionRecord DecisionOf(const Tx& tx) const;
  Tx* FindTx(const TxId& txid);
  size_t FindPart(const Tx& tx, std::string_view address) const;  // npos if absent

  CoreOptions opts_;
  bool started_ = false;
  bool epoch_durable_ = false;
  bool fenced_ = false;
  Epoch epoch_ = 0;
  uint64_t epoch_lsn_ = 0;    // LSN of the durable EPOCH record
  PersistTag epoch_tag_ = 0;  // pending EPOCH record, 0 if none
  // The batch of copies of open DECISIONs not yet durable: tag -> transaction.
  std::map<PersistTag, TxId> relog_pending_;
  uint64_t max_lsn_seen_ = 0;      // highest LSN replayed or persisted
  uint64_t truncate_emitted_ = 0;  // highest truncate_before handed out

  MessageId next_msg_id_ = 1;
  // First message stamped with the current epoch: a STALE_EPOCH answer to an
  // older message (sent before BumpEpoch) proves no newer coordinator.
  MessageId first_msg_of_epoch_ = 1;
  PersistTag next_tag_ = 1;
  // The last attempt stamp handed out (its seq; the epoch is epoch_).
  uint64_t attempt_seq_ = 0;

  std::map<TxId, Tx> txs_;  // ordered: deterministic iteration
  size_t committing_count_ = 0;
  std::set<std::pair<uint64_t, TxId>> timers_;    // (at_ms, txid), one per tx at most
  std::map<PersistTag, TxId> pending_decisions_;  // DECISION appended, not yet durable
  std::map<PersistTag, TxId> pending_aborts_;     // abort DECISION appended, not yet durable
  // Per pending DECISION: a lower bound of its LSN (max_lsn_seen_ + 1 when
  // appended); truncate_before never passes the lowest.
  std::map<PersistTag, uint64_t> pending_floor_;
  std::set<std::pair<uint64_t, TxId>> active_decisions_;  // (DECISION LSN, txid) in phase 2

  // Committed outcomes, oldest first, with their DECISION LSN.
  std::deque<std::pair<uint64_t, TxId>> committed_fifo_;
  struct CommittedEntry {
    uint64_t lsn = 0;  // of its DECISION
    Fingerprint fingerprint = {};
  };
  std::unordered_map<TxId, CommittedEntry, TxIdHash> committed_;
  // ABORTED outcomes answered to clients (logged), oldest first, with the
  // LSN of their abort DECISION.
  std::deque<std::pair<uint64_t, TxId>> aborted_fifo_;
  struct AbortedEntry {
    uint64_t lsn = 0;
    Fingerprint fingerprint = {};
    CommitResult result;
  };
  std::unordered_map<TxId, AbortedEntry, TxIdHash> aborted_;
  // One-phase transactions whose participant did not answer (bounded like
  // other_): a retry of one while that participant is suspected must not be
  // fast-failed as ABORTED - it may have committed.
  std::deque<TxId> unknown_fifo_;
  std::unordered_map<TxId, Fingerprint, TxIdHash> unknown_;
  // Aborted and one-phase outcomes, oldest first, each kind in its own order
  // (CoreOptions::other_outcomes_max).
  std::deque<TxId> other_committed_fifo_;
  std::deque<TxId> other_aborted_fifo_;
  struct Other {
    CommitResult result;
    Fingerprint fingerprint = {};  // not known for a presumed abort answered to QueryDecision
  };
  std::unordered_map<TxId, Other, TxIdHash> other_;

  std::set<std::string> suspected_;  // participants the failure detector suspects

  // Replay: DECISION records without END yet, by txid.
  std::map<TxId, std::pair<uint64_t, DecisionRecord>> replayed_open_;

  CoreStats stats_;
  Ready ready_;
};

}  // namespace dtx::coordinator
