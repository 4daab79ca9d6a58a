// HaCore: one coordinator node's whole protocol state machine - the 2PC core
// (CoordinatorCore, which it owns) plus high availability: role (primary /
// backup), epoch ownership, heartbeats and failure detection, primary-backup
// replication of the decision log, the backup's sync state, promotion, step
// down and fencing (coordinator/README.md "Replication and failover").
//
// Why it owns the 2PC core instead of sitting beside it: the HA logic gates
// the core at its commit point (a DECISION counts as durable only when it is
// durable here AND acked by an in-sync backup, or the backup is fenced out),
// feeds replicated records into the backup's mirror core, starts the mirror
// on promotion and rebuilds it on step-down. Owning the core makes those
// steps one input each, in one deterministic order, for both drivers: the
// runtime (coordinator/runtime.cc: libuv timers, Thrift, WAL) and the
// simulator (tests/sim: seeded network, in-memory WALs). Neither re-implements
// any of it.
//
// Pure (as CoordinatorCore, coordinator/core.h): no libuv/Thrift/LevelDB/spdlog, no
// clock, thread or randomness. Time is `now_ms` on every input. Outputs
// collect in an HaReady drained with TakeReady() after every input.
//
// Inputs:
//   recovery      Replay (every WAL record, in order), then Start once.
//   2PC           Commit, QueryDecision, OnPrepareReply, OnCommitReply,
//                 OnAbortReply - forwarded to the core while this node is the
//                 primary (a backup refuses Commit NOT_PRIMARY and answers
//                 QueryDecision UNKNOWN).
//   durability    OnPersisted(tag, lsn) for every forced record of
//                 HaReady::persist, in LSN order.
//   time          Tick (every ~10 ms): core timeouts, suspicion, heartbeats.
//   heartbeats    OnProbeReply (our probe of a participant or the peer ended),
//                 OnPeerHeartbeat (the peer's probe reached us; returns our
//                 answer).
//   replication   OnReplicateReply (primary: our Replicate call ended),
//                 OnReplicate (backup: the primary's Replicate arrived).
//   fencing       OnAdoptEpochReply (our AdoptEpoch call to a participant ended).
//
// Outputs (HaReady): persist, released, send, replies (the core's, merged
// with HA's own records and refusals), probes, replicate calls, replicate
// answers, adopt-epoch calls, reload_log (after a step-down: replay the whole
// log again into the fresh mirror with Replay before any other input),
// truncate_before, notes (log lines).
//
// Ids: message ids and persist tags handed out carry the core's incarnation
// (bumped at every step-down rebuild) in their top bits, so a late reply or
// durability notice addressed to a replaced core is dropped, never fed to its
// successor. HA's own records use tags with bit 63 set.
//
// Epoch skipping (coordinator/README.md "Skipping an epoch nobody can
// establish"): participants grant each epoch to one coordinator, ever (the
// owner is persisted). A round of AdoptEpoch(X) that gets no majority but
// was granted by a blocking set (n - majority + 1 participants) and refused
// (STALE_EPOCH) elsewhere proves that nobody can ever establish X: X is
// recorded as blocked and the next round, after SkipDelayMs, asks for X+1.
// Safety: a node with log epoch E establishes X only when every epoch in
// (E, X) is blocked by it, so no other coordinator established one of them
// and committed decisions this node lacks (epochs <= E are in its log).
// The blocked run is logged (SKIP record, not forced, never replicated) and
// replayed by Replay; a SKIP lost to a crash only forgets what may be skipped.
//
// Epoch bounds (coordinator/README.md "Epoch bounds"): an epoch more than
// kEpochJumpMax (common/types.h) above KnownEpoch() is not believed. A
// heartbeat (either direction) carrying one still proves the peer alive, but
// its view is dropped (no step-down, no takeover decision on it); a
// Replicate is refused BAD_ARGUMENT, as is one whose EPOCH records jump that
// far; a STALE_EPOCH answer to AdoptEpoch naming one counts as a failed call,
// not as a newer coordinator. Participants refuse such jumps too, so no
// coordinator can legitimately hold one.
//
// States (HaState below): the node's place in the pair is one explicit state,
// changed only by the Become*() transitions in ha_core.cc, each of which
// checks a table of legal edges (HaCore::IsLegalTransition; as etcd raft's
// becomeLeader / "invalid transition") and logs the move as a note. What is
// not the node's role stays in fields of its own: per-peer suspicion, the
// epoch round in progress (`bump_`, run from kStarting, kPrimaryFencing and
// kBackupInSync), the blocked-epoch run, a step-down decided but waiting
// for our EPOCH record (`step_down_pending_`), the peer's view.
//
// Thread-safety: none; one thread calls every method.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/failure_detector.h"
#include "coordinator/core.h"

namespace dtx::coordinator {

// The role a node is configured with (HaCoreOptions::role) and, coarsely,
// the one it holds now (HaCore::role()).
enum class Role { kPrimary, kBackup };
const char* RoleName(Role r);

// One coordinator node's place in the pair. Legal moves (HaCore::IsLegalTransition):
//
//   kInit -> kAlone | kStarting | kBackupSyncing                    (Start)
//   kStarting -> kEstablishing       (a majority adopted our newer epoch)
//   kBackupInSync -> kEstablishing   (promotion: the same, as a backup)
//   kEstablishing -> kPrimarySolo    (our EPOCH record is durable: the epoch
//                                     fences the backup out)
//   kPrimarySolo | kPrimaryFencing | kPrimaryInSync -> kPrimarySyncing
//                                    (snapshot sent to the backup)
//   kPrimarySyncing -> kPrimaryInSync (the snapshot is acked)
//   kPrimarySyncing | kPrimaryInSync -> kPrimaryFencing (backup lost)
//   kPrimaryFencing -> kPrimarySolo  (a newer epoch is durable and held by
//                                     a majority: the backup is fenced out)
//   kAlone | kStarting | kPrimary* -> kBackupSyncing (step-down)
//   kBackupSyncing <-> kBackupInSync (snapshot durable / new snapshot or our
//                                     promotion refused STALE_EPOCH)
//   kBackupSyncing | kBackupInSync -> kStarting (both coordinators are
//                                     backups: the newest log takes over)
enum class HaState {
  kInit,            // constructed: Replay only, until Start
  kAlone,           // no peer configured: the primary, commits alone
  kStarting,        // a primary with a peer, not yet established: decides
                    // nothing; hears the peer, then asks for a newer epoch
  kEstablishing,    // a majority adopted our newer epoch; its EPOCH record
                    // is on its way to disk (the core starts when durable)
  kPrimarySolo,     // established; the backup cannot take over (fenced out
                    // by our epoch): commits alone until it re-syncs
  kPrimarySyncing,  // established; a snapshot is on its way to the backup:
                    // every DECISION waits for the backup's ack
  kPrimaryInSync,   // established; the backup is in sync: the same
  kPrimaryFencing,  // established; the backup was lost but may still count
                    // itself in sync: DECISIONs without its ack wait until
                    // a newer epoch at a majority fences it out
  kBackupSyncing,   // a mirror not in sync (no durable snapshot of the
                    // primary's current generation): never promotes
  kBackupInSync,    // a mirror in sync: promotes when the primary is suspected
};
const char* HaStateName(HaState s);

// Once this many records went to an in-sync backup since its last snapshot,
// the primary sends a fresh snapshot (the backup then drops its older log).
inline constexpr uint64_t kResyncAfterRecords = 200000;
// A snapshot restates at most this many bytes of finished outcomes (the
// newest; CoordinatorCore::ClosedOutcomes), so that with the open decisions
// it stays within one Replicate frame (common/rpc_server.h kRpcFrameBytesMax,
// 16 MiB). 100,000 remembered commits and as many aborts would take about
// 14 MB with their framing: the newest ~60 % of them go.
inline constexpr size_t kSnapshotOutcomeBytesMax = 8u << 20;

struct HaCoreOptions {
  Role role = Role::kPrimary;
  std::string self_address;  // host:port (also CoreOptions::self_address)
  // host:port of the other coordinator; empty: alone, primary, no HA.
  std::string peer;
  uint64_t heartbeat_ms = kHeartbeatIntervalMsDefault;
  // suspect_after_ms, mode, phi_threshold; heartbeat_interval_ms is set from
  // heartbeat_ms.
  FailureDetectorOptions detector;
  // One Replicate call; past it the backup counts as lost. A snapshot gets 5x.
  uint64_t replicate_timeout_ms = 1000;
  uint64_t resync_after_records = kResyncAfterRecords;
};

// What the primary knows about its backup.
enum class BackupState {
  kNone,     // no peer: alone by configuration
  kDown,     // suspected or a call failed
  kSyncing,  // snapshot sent, not yet durable at the backup
  kInSync,   // every DECISION is durable at the backup before its commit point
};
const char* BackupStateName(BackupState s);

// A heartbeat probe to send: to a participant (ParticipantPeer.Heartbeat) or
// to the peer coordinator (CoordinatorPeer.Heartbeat). Answer with
// OnProbeReply. At most one probe per destination is out at a time.
struct ProbeMsg {
  std::string to;
  bool peer = false;
  NodeRole role = NodeRole::kStarting;  // node_role() when sent
  Epoch epoch = 0;
};

// What a coordinator says about itself in a heartbeat (either direction).
struct PeerView {
  std::string name;  // optional
  // kPrimary, kStarting or kBackup. nullopt: not heard yet, or a role this
  // node does not know (the edge could not parse it). Any other value from
  // the wire is treated as "none of those" (never trusted, never a crash).
  std::optional<NodeRole> role;
  Epoch epoch = 0;
  std::optional<bool> in_sync;  // a backup's
};
// NodeRoleName of a role that may be unknown ("unknown").
const char* PeerRoleName(const std::optional<NodeRole>& role);

struct ReplRecord {
  RecordType type = RecordType::kDecision;
  std::string payload;
};

// Primary -> backup: CoordinatorPeer.Replicate. Answer with OnReplicateReply(id).
struct ReplicateMsg {
  MessageId id = 0;
  Epoch epoch = 0;
  std::string primary;  // our address
  int64_t generation = 0;
  bool snapshot = false;
  std::vector<ReplRecord> records;
  uint64_t timeout_ms = 0;
};

// The backup's answer to a Replicate it received (OnReplicate's token).
struct ReplicateAnswer {
  RequestToken token = 0;
  std::optional<Error> error;  // kStaleEpoch, kUnavailable, kBadArgument
  uint64_t durable_lsn = 0;
};

// ParticipantPeer.AdoptEpoch(epoch, coordinator = our address). Answer with
// OnAdoptEpochReply(id).
struct AdoptEpochMsg {
  MessageId id = 0;
  std::string to;
  Epoch epoch = 0;
  uint64_t timeout_ms = 0;
};

struct HaNote {
  bool warn = false;
  std::string text;
};

// ORDERING RULE (as the core's Ready): append `persist` to the WAL in order
// first; then handle `released`, then send `send`, `replicate`, `adopt`,
// `probes`, then deliver `replies` and `replicate_answers`. Nothing in the
// outputs depends on a forced record of the same HaReady: dependants come only
// after OnPersisted(tag), i.e. once it is durable (and, for a DECISION, acked
// by the in-sync backup).
struct HaReady {
  std::vector<PersistRecord> persist;
  // DECISIONs that just reached their commit point (COMMITTED replies and
  // COMMIT messages for them follow in `send` / `replies`). The runtime
  // evaluates failpoint coordinator.decision.after_log here.
  std::vector<TxId> released;
  // DECISIONs the backup just acknowledged as durable (for tracing).
  std::vector<TxId> backup_acked;
  std::vector<OutMessage> send;
  std::vector<Reply> replies;
  std::vector<ProbeMsg> probes;
  std::vector<ReplicateMsg> replicate;
  std::vector<ReplicateAnswer> replicate_answers;
  std::vector<AdoptEpochMsg> adopt;
  // The node stepped down: its core was replaced by a fresh, unstarted one.
  // The driver must Replay its whole log (every record appended so far, in
  // order) into it before the next input, and drop any durability notices
  // still due for records appended before (their tags are dead anyway).
  bool reload_log = false;
  uint64_t truncate_before = 0;
  std::vector<HaNote> notes;

  bool empty() const {
    return persist.empty() && released.empty() && backup_acked.empty() && send.empty() &&
           replies.empty() && probes.empty() && replicate.empty() && replicate_answers.empty() &&
           adopt.empty() && !reload_log && truncate_before == 0 && notes.empty();
  }
};

struct HaStats {
  uint64_t promotions = 0;
  uint64_t step_downs = 0;
  uint64_t participant_suspicions = 0;
  uint64_t peer_suspicions = 0;
  // Ticks that came after a pause of this node's own (HaCore::Tick): every
  // failure detector started over.
  uint64_t own_pauses = 0;
  uint64_t backup_losses = 0;
  uint64_t replicated_records = 0;  // backup: records received
  uint64_t epoch_bumps = 0;         // epochs moved to (majority reached)
  // Heartbeats, Replicates and STALE_EPOCH answers carrying an epoch more
  // than kEpochJumpMax above ours (common/types.h), ignored or refused.
  uint64_t epoch_jumps_ignored = 0;
};

class HaCore {
 public:
  HaCore(HaCoreOptions options, CoreOptions core_options);
  HaCore(const HaCore&) = delete;
  HaCore& operator=(const HaCore&) = delete;

  // ---- recovery ----
  // Every WAL record, in LSN order: before Start, and after a reload_log.
  // SKIP records (kSkipRecordType) are HaCore's own; the rest go to the core.
  Status Replay(uint64_t lsn, uint8_t type, std::string_view payload);
  // Ends recovery. Alone (no peer): starts the core at a new epoch (the
  // replayed one + 1, EPOCH forced; 1 on a fresh log). With a peer: a primary is "starting"
  // (decides nothing until it has moved to a newer epoch, or steps down when the peer is primary);
  // a backup is an unstarted mirror, not in sync until a snapshot is durable.
  void Start(uint64_t now_ms);

  // ---- 2PC ----
  void Commit(uint64_t now_ms, RequestToken token, CommitRequest req);
  void QueryDecision(uint64_t now_ms, RequestToken token, TxId txid,
                     const Fingerprint& fingerprint = Fingerprint{}, Attempt attempt = {});
  void OnPrepareReply(uint64_t now_ms, const PrepareReply& r);
  void OnCommitReply(uint64_t now_ms, const AckReply& r);
  void OnAbortReply(uint64_t now_ms, const AckReply& r);
  void OnPersisted(uint64_t now_ms, PersistTag tag, uint64_t lsn);
  void Tick(uint64_t now_ms);

  // ---- heartbeats ----
  // Our probe of `address` ended: ok (with the peer's view when `address` is
  // the peer) or failed (no answer, timeout).
  void OnProbeReply(uint64_t now_ms, const std::string& address, bool ok,
                    const std::optional<PeerView>& view = std::nullopt);
  // A heartbeat from `sender` (proof of life when it is the peer); returns our view.
  PeerView OnPeerHeartbeat(uint64_t now_ms, const std::string& sender, const PeerView& view);
  PeerView View() const;

  // ---- replication ----
  void OnReplicateReply(uint64_t now_ms, MessageId id, CallStatus status,
                        const std::string& error = {});
  struct ReplicateIn {
    Epoch epoch = 0;
    std::string primary;
    int64_t generation = 0;
    bool snapshot = false;
    std::vector<ReplRecord> records;
  };
  // Answered (ReplicateAnswer with this token) at once on refusal, else once
  // the last record is durable here.
  void OnReplicate(uint64_t now_ms, RequestToken token, ReplicateIn req);

  // ---- fencing ----
  // With kStaleEpoch, `current_epoch` / `owner` are the participant's current
  // epoch and the coordinator that holds it (DtxError fields 4, 5; unset or
  // empty when unknown): used for notes only - any STALE_EPOCH answer to
  // AdoptEpoch(X) means X can no longer be granted to us there.
  void OnAdoptEpochReply(uint64_t now_ms, MessageId id, CallStatus status,
                         const std::string& error = {},
                         std::optional<Epoch> current_epoch = std::nullopt,
                         const std::string& owner = {});

  HaReady TakeReady();

  // ---- observability ----
  const CoordinatorCore& core() const { return *core_; }
  HaState state() const { return state_; }
  // kPrimary for every primary state (established or not), kBackup for the
  // backup states; before Start the configured role.
  Role role() const;
  // What this node says it is (heartbeats, GetStatus): kPrimary
  // (established), kStarting (a primary not yet established) or kBackup.
  NodeRole node_role() const;
  // The core is started and decides (kAlone and the kPrimary* states).
  bool established() const { return IsEstablished(state_); }
  Epoch epoch() const { return core_->epoch(); }
  // Derived from the state: kNone alone (or before Start), kSyncing /
  // kInSync while the backup is being or is in sync, else kDown.
  BackupState backup_state() const;
  // Primary: decisions may reach the commit point without the backup's ack.
  bool committing_alone() const {
    const BackupState b = backup_state();
    return b != BackupState::kInSync && b != BackupState::kSyncing;
  }
  bool in_sync() const { return state_ == HaState::kBackupInSync; }  // backup
  int64_t generation() const { return role() == Role::kPrimary ? generation_ : sync_generation_; }
  Epoch bump_in_progress() const { return bump_.epoch; }
  // The epoch the next bump asks for: core epoch + 1, or one past the run of
  // epochs this node has blocked (see "Epoch skipping" in the class comment);
  // 0 when no epoch is left above them (INT64_MAX reached: never overflows).
  Epoch NextBumpEpoch() const;
  // Epochs (lo, hi] that no other coordinator can ever hold at a majority of
  // participants (each was granted to us by at least n - majority + 1 of
  // them); lo == hi: none known.
  std::pair<Epoch, Epoch> blocked_epochs() const { return {blocked_lo_, blocked_hi_}; }
  bool peer_suspected() const { return peer_suspected_; }
  const FailureDetector& peer_detector() const { return peer_fd_; }
  const PeerView& peer_view() const { return peer_view_; }
  // nullptr for an address that is not a participant.
  const FailureDetector* participant_detector(const std::string& address) const;
  bool participant_suspected(const std::string& address) const;
  const HaStats& stats() const { return stats_; }

  // The edges of the state machine (the table at HaState). Every Become*()
  // checks its edge with DTX_CHECK.
  static bool IsLegalTransition(HaState from, HaState to);
  static bool IsEstablished(HaState s);

 private:
  // Test-only access to the transitions (coordinator/ha_core_test.cc: an
  // illegal one must stop the process).
  friend struct HaCoreTestAccess;

  struct Watch {
    FailureDetector fd;
    bool probe_out = false;
    bool suspected = false;
  };
  struct DecisionWait {
    TxId txid;
    Epoch epoch = 0;  // the DECISION record's
    uint64_t lsn = 0;
    bool local = false;
    bool backup = false;
  };
  struct ReplicateOut {
    int64_t generation = 0;
    bool snapshot = false;
    std::vector<PersistTag> tags;  // DECISIONs the ack covers
  };
  struct Bump {
    uint64_t id = 0;
    Epoch epoch = 0;  // 0: none in progress
    size_t ok = 0, failed = 0;
    size_t stale = 0;  // STALE_EPOCH refusals: the epoch is lost at those participants
    Epoch highest_seen = 0;
    std::string highest_owner;
    uint64_t started_ms = 0;
    std::string why, last_error;
  };
  // A replicated record appended here, not yet durable (backup).
  struct BackupAppend {
    ReplRecord record;
    // Last record of a Replicate: answer `token` once durable.
    bool last = false;
    RequestToken token = 0;
    bool snapshot = false;
    int64_t generation = 0;
    Epoch epoch = 0;             // the Replicate's
    uint64_t first_lsn_tag = 0;  // the batch's first record's tag (snapshot truncation)
  };

  static constexpr int kIncarnationShift = 40;
  static constexpr PersistTag kHaTagBit = PersistTag{1} << 63;

  void Note(bool warn, std::string text);
  // The newest epoch this node holds or asks for: its log's (replayed or
  // replicated) and its epoch round's.
  Epoch KnownEpoch() const;
  // True when `epoch`, carried by `what` from `from`, is more than
  // kEpochJumpMax above KnownEpoch(): the caller ignores or refuses it
  // (coordinator/README.md "Epoch bounds"). Counted, and noted now and then.
  bool IgnoreEpochJump(Epoch epoch, const std::string& from, const char* what);
  static constexpr uint64_t kEpochJumpNoteEvery = 1000;
  // Drains the core's Ready into ready_ (rewriting ids, holding DECISIONs
  // for their commit point, queueing replication) and applies a pending
  // step-down. Called at the end of every input.
  void Drain(uint64_t now_ms);
  uint64_t Wrap(uint64_t id) const { return (incarnation_ << kIncarnationShift) | id; }
  // The core id of a wrapped id of the current incarnation; nullopt if stale.
  std::optional<uint64_t> Unwrap(uint64_t id) const;
  PersistTag HaPersist(const Record& r, bool forced, TxId txid);

  void HeartbeatRound(uint64_t now_ms);
  void CheckSuspicions(uint64_t now_ms);
  // Recomputes peer_suspected_ from the peer's failure detector (notes, and a
  // lost backup when we are the primary).
  void UpdatePeerSuspicion(uint64_t now_ms);
  void OnPeerView(uint64_t now_ms, const PeerView& view);
  void FlushReplicate();
  void StartSync(uint64_t now_ms);
  void BackupLost(uint64_t now_ms, const std::string& why);
  void MaybeRelease(uint64_t now_ms, PersistTag tag);
  // What the state asks for next (an epoch round, a takeover), per state.
  void DriveRole(uint64_t now_ms);
  void DriveStarting(uint64_t now_ms);
  // Both coordinators backups (or the peer a primary still starting): the
  // newest log takes over.
  void MaybeTakeOver(uint64_t now_ms);
  // Tracks since when neither coordinator serves (both_backups_*).
  void TrackNobodyServes(uint64_t now_ms);
  void StartBump(uint64_t now_ms, Epoch epoch, std::string why);
  void BumpSucceeded(uint64_t now_ms);
  void BumpFailed(uint64_t now_ms, bool stale, const std::string& why);
  // The bump at `bump_.epoch` failed, but it was granted to us by a blocking
  // set: record it and move on to the next epoch after a per-node delay.
  void BumpBlocked(uint64_t now_ms, const std::string& why);
  uint64_t SkipDelayMs() const;
  void StepDownLater(std::string why);
  void StepDown(uint64_t now_ms, const std::string& why);
  void OnOwnPersisted(uint64_t now_ms, PersistTag tag, uint64_t lsn);

  // ---- transitions (each DTX_CHECKs IsLegalTransition and notes the move) ----
  void Transition(HaState to, const std::string& why);
  void BecomeAlone();
  void BecomeStarting(const std::string& why);
  // Appends our EPOCH `epoch` (forced); the core starts once it is durable.
  void BecomeEstablishing(Epoch epoch, const std::string& why);
  void BecomePrimarySolo(const std::string& why);
  void BecomePrimarySyncing();
  void BecomePrimaryInSync();
  void BecomePrimaryFencing(const std::string& why);
  void BecomeBackupSyncing(const std::string& why);
  void BecomeBackupInSync();
  // The invariants that hold after every input (end of Drain).
  void CheckInvariants() const;

  HaCoreOptions opts_;
  CoreOptions core_opts_;
  std::unique_ptr<CoordinatorCore> core_;
  uint64_t incarnation_ = 1;

  HaState state_ = HaState::kInit;
  // kEstablishing: our EPOCH record's tag and epoch (tag 0 in any other state).
  PersistTag establishing_tag_ = 0;
  Epoch establishing_epoch_ = 0;
  // kPrimaryFencing: the epoch a majority adopted to fence the backup out,
  // until its EPOCH record is durable here (0: none).
  Epoch solo_epoch_pending_ = 0;
  // HA's own count of the newest EPOCH durable in our log (replayed, or
  // reported by OnPersisted), paired with the core's epoch and checked at
  // the commit point. `epoch_tags_`: the core's EPOCH records not yet durable.
  Epoch durable_epoch_ = 0;
  std::map<PersistTag, Epoch> epoch_tags_;
  Bump bump_;
  uint64_t next_bump_id_ = 0;
  uint64_t bump_retry_at_ms_ = 0;
  // Blocked epochs (lo, hi]: a fact about the participants' persisted,
  // exclusive grants, so it never becomes false; logged as SKIP.
  Epoch blocked_lo_ = 0;
  Epoch blocked_hi_ = 0;
  // Neither coordinator serves (we are a backup; the peer answers as a backup
  // or a primary still starting): since when. An observation of the pair,
  // not our state: it is timed from the first tick it holds.
  bool both_backups_ = false;
  uint64_t both_backups_since_ms_ = 0;
  // After this many suspect_after_ms as two backups at equal epochs, the
  // higher address takes over too.
  static constexpr uint64_t kBothBackupsYieldFactor = 4;
  // A step-down decided (the reason), not yet applied: Drain applies it at
  // the end of the same input - except in kEstablishing, where it waits for
  // our EPOCH record (so it is a deferred input, not a state of its own).
  std::optional<std::string> step_down_pending_;
  uint64_t peer_suspected_at_ms_ = 0;
  uint64_t next_heartbeat_ms_ = 0;
  bool core_fenced_seen_ = false;

  std::map<std::string, Watch> watches_;  // participants, by address
  FailureDetector peer_fd_;
  // The previous Tick's (or Start's) time, to notice this node's own pauses.
  uint64_t last_tick_ms_ = 0;
  bool peer_probe_out_ = false;
  bool peer_suspected_ = false;
  PeerView peer_view_;

  // Primary side.
  int64_t generation_ = 0;
  uint64_t replicated_since_snapshot_ = 0;
  std::vector<ReplRecord> repl_batch_;
  std::vector<PersistTag> repl_batch_tags_;
  std::map<PersistTag, DecisionWait> decision_waits_;  // by wrapped tag
  std::map<MessageId, ReplicateOut> replicate_out_;
  std::map<MessageId, std::string> adopt_out_;  // id -> participant (current bump)
  MessageId next_ha_msg_ = 1;

  // Backup side.
  int64_t sync_generation_ = -1;
  Epoch appended_epoch_ = 0;  // highest EPOCH replicated into our log (durable or not)
  // The newest snapshot in our log (appended or replayed): its epoch and
  // generation. A snapshot of the same epoch and a generation not newer is a
  // late copy: its SYNC would close DECISIONs replicated after it.
  Epoch snapshot_epoch_ = 0;
  int64_t snapshot_generation_ = -1;
  std::optional<int64_t> replayed_sync_generation_;    // Replay: SYNC seen, its EPOCH not yet
  std::map<PersistTag, BackupAppend> backup_appends_;  // by HA tag, in order
  std::map<PersistTag, uint64_t> batch_first_lsn_;     // first tag -> its LSN once durable
  uint64_t ha_tag_next_ = 1;

  // Requests answered by the core or here, to answer UNKNOWN on step-down.
  std::set<RequestToken> open_commits_;
  std::set<RequestToken> open_queries_;

  HaStats stats_;
  HaReady ready_;
};

}  // namespace dtx::coordinator
