// The participant's protocol core: a pure state machine for reads, prepare,
// commit, abort, epochs and recovery (docs/design.md "Transactions", "Durability and
// the commit path", "Recovery"; the pattern is etcd raft's RawNode).
//
// It includes no libuv, Thrift, LevelDB or logging header, has no threads,
// clocks or randomness: time comes in as `now_ms` on every input, and the same
// inputs always give the same outputs. The runtime (participant/runtime.h) and
// the simulator drive it:
//
//   inputs   Read / Prepare / Commit / Abort   a request arrived (`token` is
//                                             the runtime's, non-zero, opaque)
//            OnDecisionAnswer,                a coordinator answered (or not) a
//            OnCoordinatorStatus              QueryDecision / GetStatus the core
//                                             asked for (QueryDecisionMsg)
//            OnPersisted(tag)                 records up to `tag` are durable
//            Tick(now_ms)                     time passed (read timeouts,
//                                             decision queries)
//            RestoreCheckpoint, Replay,       the last checkpoint and the WAL
//            FinishRecovery                   read back at start
//   outputs  TakeReady(): see Ready; TakeCheckpoint(): what a checkpoint may
//            record now (the runtime makes the store durable, stores it, and
//            truncates the WAL below its retain_from).
//
// Tags are LSNs: the runtime appends every PersistOp in tag order and nothing
// else, so the record with tag t has LSN t (the first tag after recovery is
// the log's last LSN + 1).
//
// Committed writes are applied through the Store interface (below) by the
// core itself, synchronously, once their COMMIT record is durable; reads are
// served from it.
//
// Ownership: the Core does not own `store`, which must outlive it.
// Thread-safety: none; call every method from one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/types.h"
#include "participant/lock_table.h"
#include "participant/records.h"

namespace dtx::participant {

// The committed key-value state. The runtime implements it on LevelDB; tests
// and the simulator on an in-memory map (participant/mem_store.h).
class Store {
 public:
  // A deleted key keeps its version (a tombstone): found=false with the
  // version of the delete, so "absent, created, deleted" does not read as
  // unchanged (ABA). A key never written: found=false, version 0.
  struct Item {
    bool found = false;
    std::string value;
    Version version = 0;  // 0: never written
  };
  virtual ~Store() = default;
  // Corruption means the store is damaged: the core stops (Ready::fatal)
  // rather than serve, validate against or apply over what it returned.
  // Other errors fail only the request (a read error, a NO vote).
  virtual Result<Item> Get(std::string_view key) = 0;
  // Applies `writes` with `version`, idempotently: a key whose stored version
  // (live or tombstone) is >= `version` is left alone. An unset value deletes
  // the key, leaving a tombstone carrying `version`. Tombstones are kept
  // (participant/README.md says why). Need not be synced: the WAL holds
  // durability and replay re-applies.
  virtual Status Apply(const std::vector<WriteOp>& writes, Version version) = 0;

  // One committed transaction for ApplyBatch.
  struct Commit {
    const std::vector<WriteOp>* writes = nullptr;
    Version version = 0;
  };
  // Applies `commits` in order, as Apply would one after the other. A store
  // may make them one write: the commits one WAL sync made durable are
  // applied together (LevelStore: one WriteBatch, one LevelDB log write). On
  // an error, any prefix of them may have been applied; the core stops, and
  // replay re-applies (Apply is idempotent).
  virtual Status ApplyBatch(const std::vector<Commit>& commits) {
    for (const Commit& c : commits) {
      Status s = Apply(*c.writes, c.version);
      if (!s.ok()) return s;
    }
    return Status::OK();
  }
};

// The wire vocabulary (common/types.h; checked against idl/dtx.thrift in
// common/wire.cc). ErrorCode::kOk (0): no error.
using ErrorCode = ::dtx::ErrorCode;
using ::dtx::ErrorCodeName;
using Vote = ::dtx::Vote;
using Decision = ::dtx::Decision;

// Why a Prepare voted NO. The runtime sends WireAbortReason(cause) and counts
// and traces by cause; nobody parses Reply::detail.
enum class NoVoteCause : uint8_t {
  kLockConflict,       // a key is locked by another transaction
  kStaleRead,          // a read version is no longer the key's current version
  kStoreReadFailed,    // the store could not read a key to validate it
  kAlreadyAborted,     // the outcome remembered here is aborted / voted NO
  kAbortedBeforeVote,  // the coordinator's Abort came before the PREPARE was durable
  // This txid is prepared or remembered here as a transaction with another
  // fingerprint (docs/design.md "Transaction identity"): nothing was
  // prepared or remembered for this request. On the wire: a NO with
  // PrepareResponse.txid_reused, which the coordinator answers the client
  // as BAD_ARGUMENT.
  kTxidReused,
};
const char* NoVoteCauseName(NoVoteCause c);
// The idl/dtx.thrift AbortReason a NO with this cause carries: a lost
// validation (lock, stale read, store error, earlier NO) is kConflict - the
// client may retry with fresh reads; an Abort that overtook the vote is
// kTimeout (the coordinator gave up waiting).
AbortReason WireAbortReason(NoVoteCause c);

struct ReadOp {
  std::string key;
  Version version =
      0;  // as the client read it (0: never written; a deleted key's tombstone version)
};

struct PrepareRequest {
  TxId txid;
  Epoch epoch = 0;
  std::vector<ReadOp> reads;
  std::vector<WriteOp> writes;
  bool one_phase = false;     // the only participant: the vote is the outcome
  bool read_only_tx = false;  // the whole transaction writes nothing anywhere
  std::string coordinator;    // host:port to ask with QueryDecision
  // The whole transaction's content, from the coordinator (not known: an
  // older coordinator sent none; then nothing is checked).
  Fingerprint fingerprint = {};
  // The attempt this PREPARE belongs to (common/types.h; not known: unstamped).
  Attempt attempt;
  // The client does not know how an earlier attempt of this txid ended
  // (coordinator/core.h CommitRequest::is_retry): a txid not remembered here
  // that may be a commit made here and forgotten is answered kUnknownTx,
  // never YES or NO. A first attempt is evaluated as it is.
  bool is_retry = false;
};

using Token = uint64_t;  // runtime's request handle; never 0

struct Reply {
  enum class Kind : uint8_t { kRead, kPrepare, kCommit, kAbort, kAdoptEpoch };
  Token token = 0;
  Kind kind = Kind::kRead;
  TxId txid;                         // kPrepare, kCommit, kAbort
  ErrorCode error = ErrorCode::kOk;  // not kOk: an error reply; `message` says why
  std::string message;
  // kRead
  bool found = false;
  std::string value;
  Version version = 0;
  // kPrepare
  Vote vote = Vote::kNo;
  NoVoteCause no_cause = NoVoteCause::kLockConflict;  // with kNo; on the wire: WireAbortReason
  std::string detail;                                 // with kNo: names the key / holder
  // With kStaleEpoch: this participant's current epoch and the coordinator
  // whose AdoptEpoch made it current (empty: unknown - raised by a stamped
  // call, or adopted before owners were persisted). The caller uses them to
  // tell "someone moved past me" from "this epoch was granted to another".
  Epoch current_epoch = 0;
  std::string epoch_owner;
};

// A record to append to the WAL. Tags increase by one per record, from 1.
struct PersistOp {
  uint64_t tag = 0;
  RecordType type = RecordType::kPrepare;
  std::string payload;
  // Forced: something waits for OnPersisted(tag) (group commit shares the sync).
  // Not forced: nothing waits; it becomes durable with the next sync.
  bool forced = true;
  TxId txid;  // for logs and failpoints; zero for EPOCH
};

// After AdoptEpoch raised the epoch, transactions prepared under an older one
// are asked about this soon (the new coordinator needs a moment to serve).
inline constexpr uint64_t kQueryAfterEpochChangeMs = 50;

// A question about an in-doubt transaction (participant/README.md "In
// doubt"). The core decides whom to ask and which answers count:
//
//   1. kAsk the coordinator named in the PREPARE (`fall_back` false).
//   2. If it cannot answer (down, an error, UNKNOWN: a backup or a deposed
//      primary cannot tell), kFindPrimary: the runtime asks every other
//      coordinator it knows for its status and feeds each answer to
//      OnCoordinatorStatus.
//   3. Only a primary at the transaction's epoch or later may answer for it:
//      the owner of an epoch holds every commit decision of the epochs before
//      it, while a deposed primary at an older epoch does not know what its
//      successor decided (and would presume abort). To each such one the core
//      emits kAsk with `fall_back` true; a fall-back that cannot answer
//      falls back no further (the core asks again at the next query time).
//
// Every kAsk is answered with OnDecisionAnswer(the message, the answer).
struct QueryDecisionMsg {
  enum class Kind : uint8_t {
    kAsk,          // QueryDecision to `coordinator` (empty: the runtime's configured one)
    kFindPrimary,  // GetStatus to every coordinator known except `coordinator`, plus `primary_hint`
  };
  Kind kind = Kind::kAsk;
  TxId txid;
  std::string coordinator;
  // The epoch the transaction was prepared under (the rule in step 3).
  Epoch epoch = 0;
  bool fall_back = false;    // kAsk: step 3's question to a primary found by kFindPrimary
  std::string primary_hint;  // kFindPrimary: the primary the failed kAsk's refusal named
  // The transaction's fingerprint (not known: none). Sent with the question,
  // and an answer counts only for the transaction asked about: one that
  // meanwhile holds the txid with another fingerprint ignores it.
  Fingerprint fingerprint = {};
  // The attempt held here when asked. The answer is about it: it counts only
  // while the transaction is still held under this attempt.
  Attempt attempt;
};

// The answer to a kAsk.
struct DecisionAnswer {
  bool reached = false;                    // false: no answer (unreachable, timeout, an error)
  Decision decision = Decision::kUnknown;  // with `reached`
  std::string primary_hint;  // without `reached`: the primary a NOT_PRIMARY refusal named
};

// The output of the inputs since the last TakeReady.
//
// Ordering rule: append `persist` to the WAL in order, all of it, before
// sending `send` and `replies` (so the log's LSN order is the tag order). No
// reply or message in a Ready depends on a record of the same Ready: whatever
// depends on a record is emitted only after OnPersisted covered its tag -
// records are durable BEFORE the messages that depend on them are sent.
struct Ready {
  std::vector<PersistOp> persist;
  std::vector<QueryDecisionMsg> send;
  std::vector<Reply> replies;
  // Not OK: the core can no longer be trusted (the store failed to apply a
  // durable commit). The runtime must log it and stop the process.
  Status fatal;
  bool empty() const { return persist.empty() && send.empty() && replies.empty() && fatal.ok(); }
};

// Defaults of CoreOptions.
inline constexpr uint64_t kReadWaitMsDefault = 1000;
inline constexpr uint64_t kDecisionQueryAfterMsDefault = 2000;
inline constexpr uint64_t kDecisionQueryIntervalMsDefault = 500;
inline constexpr size_t kTxInFlightMaxDefault = 10000;
inline constexpr size_t kParkedReadsMaxDefault = 10000;
inline constexpr size_t kOutcomesRememberedMaxDefault = 100000;
inline constexpr size_t kDecisionQueriesPerTickMaxDefault = 256;

struct CoreOptions {
  // A read of a key held for writing by a prepared transaction waits at most
  // this long for its outcome, then fails with kTimeout.
  uint64_t read_wait_ms = kReadWaitMsDefault;
  // A prepared transaction without a decision after this long is in doubt: the
  // core asks its coordinator with QueryDecision (recovered ones at once).
  uint64_t decision_query_after_ms = kDecisionQueryAfterMsDefault;
  // ... and asks again this often until the answer is COMMIT or ABORT.
  uint64_t decision_query_interval_ms = kDecisionQueryIntervalMsDefault;
  // Transactions prepared or committing here; a new Prepare past it fails
  // with kUnavailable.
  size_t tx_in_flight_max = kTxInFlightMaxDefault;
  // Reads parked on locked keys; a read past it fails with kUnavailable.
  size_t parked_reads_max = kParkedReadsMaxDefault;
  // Recent outcomes kept so duplicate and late messages - and a client's
  // retry of a commit with the same txid - get the recorded answer; oldest
  // forgotten first. The bound holds for commits and for aborts (aborted /
  // voted NO) apart: aborts never push a commit out. Carried across restarts
  // by the checkpoint (Checkpoint::outcomes) and the WAL. A retry of a txid
  // not remembered that may be a commit made here and forgotten since is
  // answered kUnknownTx (see Prepare).
  size_t outcomes_remembered_max = kOutcomesRememberedMaxDefault;
  size_t decision_queries_per_tick_max = kDecisionQueriesPerTickMaxDefault;
  // A transaction prepared here whose PREPARE record is this many records
  // behind the head (in doubt for long: its coordinator gone) gets a copy of
  // that record near the head; once the copy is durable the checkpoint's
  // retain_from no longer holds the WAL back at the first (Tick). 0: never.
  uint64_t prepare_relog_lsn_gap = 100000;
};

struct InDoubtInfo {
  TxId txid;
  uint64_t age_ms = 0;  // since PREPARE was durable, or since recovery for a replayed one
  std::string coordinator;
};

struct CoreStats {
  Epoch epoch = 0;
  Version commit_counter = 0;  // the last version handed out
  size_t in_flight = 0;        // transactions preparing, prepared or committing
  size_t in_doubt = 0;         // prepared, replayed or overdue, decision asked for
  size_t parked_reads = 0;
  size_t locked_keys = 0;
  uint64_t prepares = 0;  // Prepare requests taken (not errors)
  uint64_t votes_yes = 0;
  uint64_t votes_no = 0;
  uint64_t votes_read_only = 0;
  uint64_t commits = 0;  // transactions committed (applied) here, 1PC and 2PC
  // Store writes (ApplyBatch calls) that applied them: commits / store_batches
  // is how many COMMITs one WAL sync made durable together, on average.
  uint64_t store_batches = 0;
  uint64_t aborts = 0;  // prepared transactions aborted here
  uint64_t read_timeouts = 0;
  uint64_t decision_queries = 0;
  uint64_t stale_epoch_refusals = 0;
  // Epochs more than kEpochJumpMax above ours, refused (AdoptEpoch or a
  // stamped call; common/types.h).
  uint64_t epoch_jump_refusals = 0;
  uint64_t replayed_records = 0;
  uint64_t replay_inferred_aborts = 0;  // see records.md "Meaning on replay"
  // Prepares of a txid not remembered that would have voted NO but may be a
  // forgotten commit: answered kUnknownTx (Core::Prepare).
  uint64_t forgotten_outcome_refusals = 0;
  // Prepares of a txid known here with another fingerprint (NO, kTxidReused),
  // or committed here with a fingerprint not known here (kUnknownTx).
  uint64_t txid_reused_refusals = 0;
  // PREPAREs of a newer attempt of a transaction prepared here: moved to the
  // new attempt (a PREPARE record with its stamp) before voting YES again.
  uint64_t attempts_restamped = 0;
  // ABORTs (and ABORT answers) of an older attempt than the one prepared
  // here: acknowledged, the transaction stays prepared.
  uint64_t stale_attempt_aborts = 0;
  // PREPARE records written again near the head for a transaction prepared
  // long ago (CoreOptions::prepare_relog_lsn_gap), counted once durable.
  uint64_t prepares_relogged = 0;
  // Prepares that met a lock of a transaction whose COMMIT was being made
  // durable: held until it was applied, then evaluated (Core::Prepare).
  uint64_t prepares_behind_commit = 0;
  size_t prepares_waiting = 0;  // held so now
  // PREPAREs refused kUnknownTx by the attempt fence (Core::Prepare): their
  // attempt was no newer than one whose outcome was forgotten here.
  uint64_t stale_prepare_refusals = 0;
  Attempt forgotten_attempt;      // the fence
  Version forgotten_version = 0;  // commits up to this version may be forgotten
};

class Core {
 public:
  Core(const CoreOptions& options, Store* store);
  ~Core();
  Core(const Core&) = delete;
  Core& operator=(const Core&) = delete;

  // Recovery: RestoreCheckpoint with the last checkpoint (if any), feed every
  // WAL record still on disk in LSN order, then FinishRecovery once with the
  // log's last LSN, before any other input. Records below the checkpoint's
  // lsn rebuild prepared transactions and outcomes but are not applied to
  // the store again (it has them). Corruption for a malformed record or one
  // that contradicts the log before it; the store's error if re-applying
  // fails.
  void RestoreCheckpoint(const Checkpoint& cp);
  Status Replay(uint64_t lsn, uint8_t type, std::string_view payload);
  // `last_lsn`: the log's last LSN (0: the last replayed one). Every record
  // up to it counts as durable; the next tag is last_lsn + 1.
  void FinishRecovery(uint64_t now_ms, uint64_t last_lsn = 0);

  // A checkpoint the runtime may take now: every record below `lsn` is
  // durable and applied to the store (once the store's writes so far are
  // made durable); `retain_from` is the oldest PREPARE of a transaction still
  // in flight (or `lsn`); `outcomes` the remembered outcomes (newest
  // kCheckpointOutcomesMax) and `forgotten_version`. nullopt while
  // recovering or after a fatal error.
  std::optional<Checkpoint> TakeCheckpoint() const;

  void Read(Token token, std::string key, uint64_t now_ms);
  // A txid prepared or remembered gets its recorded answer again (a committed
  // one: YES, never applied twice) - unless it is known here with another
  // fingerprint: then the vote is NO with kTxidReused and nothing changes
  // (the prepared transaction stays prepared, the remembered outcome stays);
  // a committed one whose fingerprint is not known here (from a checkpoint)
  // asked with a fingerprint is answered kUnknownTx (it may be another one).
  // A remembered abort answers NO to its own attempt and older ones; a newer
  // attempt of the txid is evaluated like a txid not remembered. A txid not
  // remembered is evaluated. If the request is a retry (is_retry) and could be
  // a repeat of a transaction that committed here and whose outcome was
  // forgotten since (beyond outcomes_remembered_max: every read version below
  // the forgotten watermark and every written key changed since those reads),
  // the reply is the error kUnknownTx "outcome unknown" - whatever the
  // evaluation says: a NO would read as "aborted", a YES would apply it
  // twice - and nothing is remembered. participant/README.md "Remembered
  // outcomes" has the argument and the residual case.
  void Prepare(Token token, PrepareRequest req, uint64_t now_ms);
  void Commit(Token token, const TxId& txid, Epoch epoch, uint64_t now_ms);
  // An unknown txid is acked and remembered as aborted (a late Prepare votes
  // NO), unless this core answered its Prepare kUnknownTx (then nothing is
  // remembered: see unknown_answered_). `attempt`: the attempt the
  // coordinator ended; a transaction prepared here under a newer attempt is
  // not touched (acked: that attempt is over). A PREPARE of a newer attempt
  // moves a prepared transaction to it durably before its YES, so this holds
  // across restarts.
  void Abort(Token token, const TxId& txid, Epoch epoch, uint64_t now_ms, Attempt attempt = {});
  // ParticipantPeer.AdoptEpoch (coordinator fencing, coordinator/README.md):
  // acked (kAdoptEpoch) when `epoch` is newer than the current one - it is
  // adopted and its EPOCH record (with `coordinator` as its owner) forced
  // before the ack - or equal and made current by an AdoptEpoch from the same
  // `coordinator` (a retry, also after a restart: the owner is replayed from
  // the EPOCH record or the checkpoint); anything else is kStaleEpoch with
  // Reply::current_epoch / epoch_owner set. An epoch is thus granted to at
  // most one coordinator, ever. When a stamped call raised the epoch its owner
  // is unknown and an equal epoch is refused to everyone.
  // An epoch more than kEpochJumpMax (common/types.h) above the current one
  // is kBadArgument naming the bound, and nothing is adopted or logged: a
  // bug or a forged call cannot fence every coordinator out for good. The
  // same holds for the epoch of a stamped call (Prepare, Commit, Abort).
  void AdoptEpoch(Token token, Epoch epoch, const std::string& coordinator, uint64_t now_ms);
  // The decision on `txid`'s attempt `attempt` (kUnknown: none yet). An
  // ABORT counts only while txid is held here under that attempt or an
  // older one.
  void OnDecision(const TxId& txid, Decision decision, uint64_t now_ms, Attempt attempt);
  // The answer to `asked` (a kAsk this core emitted): a decision is taken; a
  // failed or UNKNOWN answer of the coordinator named in the PREPARE starts
  // the fall-back (a kFindPrimary), see QueryDecisionMsg.
  void OnDecisionAnswer(const QueryDecisionMsg& asked, const DecisionAnswer& answer,
                        uint64_t now_ms);
  // `coordinator`'s GetStatus answer (its role and epoch) to a kFindPrimary
  // about `txid`: a primary at the transaction's epoch or later is asked
  // (kAsk, fall_back); any other is not.
  void OnCoordinatorStatus(const TxId& txid, const std::string& coordinator, NodeRole role,
                           Epoch coordinator_epoch, uint64_t now_ms);
  // Every record with tag <= `tag` is durable (the WAL syncs in order).
  void OnPersisted(uint64_t tag, uint64_t now_ms);
  void Tick(uint64_t now_ms);

  Ready TakeReady();
  bool HasReady() const { return !ready_.empty(); }

  std::vector<InDoubtInfo> ListInDoubt(uint64_t now_ms) const;  // ordered by txid
  CoreStats stats() const;
  Epoch epoch() const { return epoch_; }
  bool recovering() const { return recovering_; }

 private:
  enum class Phase : uint8_t {
    kPreparing,   // PREPARE appended, not yet durable
    kPrepared,    // PREPARE durable, YES sent, waiting for the decision
    kCommitting,  // COMMIT appended, not yet durable (2PC or 1PC)
  };
  struct Waiter {
    Token token = 0;
    uint64_t wait_tag = 0;  // its reply also waits for this record (the epoch)
  };
  struct Tx {
    TxId txid;
    Epoch epoch = 0;
    std::string coordinator;
    std::vector<WriteOp> writes;
    std::vector<std::string> read_keys;
    Fingerprint fingerprint = {};
    Attempt attempt;  // the newest attempt prepared here (its PREPARE record is durable)
    Phase phase = Phase::kPreparing;
    bool one_phase = false;
    bool recovered = false;  // replayed from the log
    bool queried = false;    // a QueryDecision was sent
    uint64_t prepare_tag = 0;
    uint64_t relog_tag = 0;  // a copy of its PREPARE near the head, not yet durable
    uint64_t commit_tag = 0;
    Version commit_version = 0;
    uint64_t prepared_at_ms = 0;
    uint64_t query_at_ms = 0;             // 0: not scheduled
    std::vector<Waiter> prepare_waiters;  // Prepare calls owed a vote
    std::vector<Waiter> commit_waiters;   // Commit calls owed an ack
  };
  struct ParkedRead;
  enum class Outcome : uint8_t { kCommitted, kAborted };

  // Epoch check for a stamped call: true to go on; false when a STALE_EPOCH
  // reply was emitted. Raising the epoch appends an EPOCH record.
  bool CheckEpoch(Token token, Reply::Kind kind, const TxId& txid, Epoch epoch);
  // The BAD_ARGUMENT message for an epoch more than kEpochJumpMax above ours.
  std::string EpochJumpRefusal(Epoch epoch) const;
  uint64_t Append(RecordType type, std::string payload, bool forced, const TxId& txid);
  // Emits `r` once every record up to `wait_tag` is durable.
  void Respond(Reply r, uint64_t wait_tag);
  void RespondError(Token token, Reply::Kind kind, const TxId& txid, ErrorCode code,
                    std::string message);
  void RespondVote(Token token, const TxId& txid, Vote vote, uint64_t wait_tag,
                   NoVoteCause cause = NoVoteCause::kLockConflict, std::string detail = "");
  void RespondAck(Token token, Reply::Kind kind, const TxId& txid, uint64_t wait_tag);
  void ServeRead(Token token, const std::string& key);

  // Why a Prepare votes NO, and the words for Reply::detail.
  struct NoVote {
    NoVoteCause cause;
    std::string detail;
  };
  // Takes the locks of a prepare; on conflict releases what it took and
  // returns why, and sets `*committing_holder` when the holder is committing.
  std::optional<NoVote> LockAll(const TxId& txid, const std::vector<ReadOp>& reads,
                                const std::vector<WriteOp>& writes,
                                std::optional<TxId>* committing_holder);
  std::optional<NoVote> ValidateReads(const std::vector<ReadOp>& reads);
  void ReleaseLocks(const TxId& txid);
  // Appends (forced) the PREPARE record of `tx` as it is now; its tag.
  uint64_t AppendPrepare(const Tx& tx);
  // From Tick, once per quarter of prepare_relog_lsn_gap records: copies the
  // PREPARE of every transaction prepared that far behind the head.
  void CarryForwardPrepares();
  void StartCommit(Tx& tx);
  struct HeldPrepare;
  // The transactions whose COMMITs became durable (in LSN order): their
  // writes go to the store in one ApplyBatch, then each is finished
  // (remembered, answered, its locks released - after the apply, so woken
  // reads see the new values). Prepares held behind them go to `resumed`.
  void FinishCommits(const std::vector<TxId>& txids, std::vector<HeldPrepare>* resumed);
  void DropAborted(Tx& tx, bool log_abort);
  // `version`: the commit version of a committed outcome (0 for aborted).
  // A known `fingerprint` replaces the remembered one; an unknown one keeps it.
  // `attempt`: of an abort, the attempt it ended (a later PREPARE of that
  // attempt or an older one votes NO; a newer one is evaluated afresh).
  void Remember(const TxId& txid, Outcome o, Version version = 0,
                const Fingerprint& fingerprint = Fingerprint{}, Attempt attempt = {});
  std::optional<Outcome> Recall(const TxId& txid) const;
  // The fingerprint txid is known here with: prepared, committing or
  // remembered (not known: none, or the txid is not known).
  Fingerprint KnownFingerprint(const TxId& txid) const;
  // True if `req` (a txid not remembered) could be a repeat of a transaction
  // committed here whose outcome was forgotten (see Prepare).
  bool MayBeForgottenCommit(const PrepareRequest& req);
  void Schedule(Tx& tx, uint64_t at_ms);
  void Unschedule(Tx& tx);
  void EraseTx(std::map<TxId, Tx>::iterator it);
  Status ReplayPrepare(PrepareRecord r, uint64_t lsn);
  Status ReplayCommit(const CommitRecord& r, uint64_t lsn);
  void Fail(Status s);
  // Fail(s) when the store reported Corruption (Store::Get).
  void FailIfCorrupt(const Status& s);

  CoreOptions options_;
  Store* store_;  // not owned
  LockTable locks_;
  std::map<TxId, Tx> txs_;
  bool recovering_ = true;
  uint64_t replay_from_ = 0;         // records below it are already in the store
  uint64_t replay_retain_from_ = 0;  // records below it are not needed at all
  uint64_t last_replayed_lsn_ = 0;
  Status fatal_;

  Epoch epoch_ = 0;
  std::string epoch_owner_;  // coordinator whose AdoptEpoch made epoch_ current; empty: unknown
  uint64_t epoch_tag_ = 0;   // tag of the last EPOCH record (0: none this run)
  Version commit_counter_ = 0;

  uint64_t next_tag_ = 1;
  uint64_t durable_tag_ = 0;
  std::map<uint64_t, TxId> on_durable_;      // PREPARE/COMMIT tag -> its transaction
  std::map<uint64_t, TxId> relog_pending_;   // copied PREPARE's tag -> its transaction
  uint64_t relog_scan_tag_ = 0;              // next_tag_ at the last CarryForwardPrepares
  std::multimap<uint64_t, Reply> deferred_;  // replies waiting for a tag

  // Parked reads, owned here; ordered by deadline for Tick.
  uint64_t next_read_id_ = 1;
  std::map<uint64_t, std::unique_ptr<ParkedRead>> parked_;  // id -> read
  std::set<std::pair<uint64_t, uint64_t>> read_deadlines_;  // (deadline_ms, id)

  std::set<std::pair<uint64_t, TxId>> queries_;  // (query_at_ms, txid)

  // Prepares held behind a committing transaction's lock, by its txid: run
  // again once its COMMIT is durable and applied (Prepare, OnPersisted).
  struct HeldPrepare {
    Token token = 0;
    PrepareRequest req;
  };
  std::unordered_map<TxId, std::vector<HeldPrepare>, TxIdHash> held_prepares_;
  size_t held_prepares_count_ = 0;

  struct Remembered {
    Outcome outcome = Outcome::kAborted;
    Version version = 0;  // kCommitted: its commit version
    Fingerprint fingerprint = {};
    Attempt attempt;  // the newest attempt it ended (not known: unstamped, or from a checkpoint)
    // kAborted: a NO to a PREPARE that may be a late copy of one whose
    // attempt committed here and was forgotten (MayBeForgottenCommit): a
    // COMMIT of the txid is acked, not refused as "aborted here".
    bool maybe_committed = false;
  };
  std::unordered_map<TxId, Remembered, TxIdHash> outcomes_;
  // Each kind in its own order, oldest first, each bounded by
  // outcomes_remembered_max: aborts (cheap for anyone to cause: an ABORT of a
  // random txid) never push a commit out. An entry whose outcome changed
  // stays in the old order too and is skipped there.
  std::deque<TxId> committed_order_;
  std::deque<TxId> aborted_order_;
  // Every transaction committed here with a higher version is remembered
  // (in outcomes_, or not yet applied); commits up to it may be forgotten.
  Version forgotten_version_ = 0;
  // The attempt fence: every outcome forgotten here ended an attempt no
  // newer than forgotten_attempt_ (Prepare refuses a PREPARE of such an
  // attempt, which may be a late copy of one that ended here). attempt_seen_:
  // the newest attempt seen here (PREPAREs, one-phase COMMITs, checkpoints).
  // restored_attempt_: the checkpoint's attempt_seen, standing in for the
  // attempt of an outcome restored from it (which carries none).
  Attempt forgotten_attempt_;
  Attempt attempt_seen_;
  Attempt restored_attempt_;
  // Txids answered kUnknownTx (maybe a forgotten commit), oldest first,
  // bounded like outcomes_, memory only. An ABORT for one of them is acked
  // without remembering an abort: the coordinator sends ABORT after such an
  // answer, and a remembered abort would turn the client's next retry into a
  // NO - "aborted" for what may have committed here (found by the simulator,
  // tests/sim/README.md).
  std::set<TxId> unknown_answered_;
  std::deque<TxId> unknown_answered_order_;

  Ready ready_;
  CoreStats stats_;
};

}  // namespace dtx::participant
