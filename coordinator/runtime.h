// The coordinator node's runtime: drives a CoordinatorCore with real I/O.
//
// It owns the decision log (wal::Log in NODEDIR/wal, group commit), the
// RpcServer serving the Coordinator service (a CoordinatorCobSvIf handler that
// converts Thrift <-> core types at the edge), one ParticipantStub per
// participant address, and a periodic tick timer. After every input it drains
// the core's Ready in the order the core requires: append records, then send
// messages, then deliver replies. A forced record is reported to the core
// (OnPersisted) only from the WAL's durable callback, Post()ed to the loop,
// i.e. after its fdatasync returned 0.
//
// Failpoints (common/failpoint.h), evaluated on the loop thread:
//   coordinator.votes.after_all, coordinator.decision.before_log
//       before a DECISION record is appended (all votes are in);
//   coordinator.decision.after_log
//       when the DECISION is durable, before anyone hears of it;
//   coordinator.phase2.after_first_commit
//       right after the first COMMIT of a transaction was handed to its
//       channel, before the other COMMITs;
//   coordinator.end.before_log  before an END record is appended.
// `crash` exits at once; `sleep` blocks the loop; `error` is fail-stop here
// (the node logs it and exits with status 1), as the coordinator has no
// other safe way to fail a step of the commit path.
//
// A WAL failure (Append error, durable callback with an error, failed
// truncation) logs and exits the process with status 1: it never carries on.
//
// Threading: every method runs on the loop thread (see common/event_loop.h);
// only the WAL's durable callbacks run on the WAL flusher thread, and they
// only Post() to the loop (or exit the process).
// Lifetime: `loop` must outlive the Runtime. Call Shutdown() (on the loop
// thread) before destroying it; the destructor then closes the WAL (which
// syncs whatever is queued).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "CoordinatorPeer.h"
#include "common/event_loop.h"
#include "common/failure_detector.h"
#include "common/metrics.h"
#include "common/trace.h"
#include "common/metrics_http.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/status.h"
#include "coordinator/core.h"
#include "coordinator/ha_core.h"
#include "coordinator/peer_stub.h"
#include "wal/wal.h"

namespace dtx::coordinator {

// How often the core's Tick runs (timeouts, COMMIT re-sends).
inline constexpr uint64_t kTickIntervalMs = 10;
// How often a pending WAL truncation is carried out.
inline constexpr uint64_t kTruncateIntervalMs = 1000;


// Heartbeats, failure detection and primary-backup replication
// (coordinator/README.md "Replication and failover").
struct HaOptions {
  Role role = Role::kPrimary;
  // host:port of the other coordinator; empty: this one runs alone.
  std::string peer;
  uint64_t heartbeat_ms = kHeartbeatIntervalMsDefault;
  // suspect_after_ms, mode, phi_threshold; heartbeat_interval_ms is set
  // from heartbeat_ms.
  FailureDetectorOptions detector;
  // One Replicate call; past it the backup counts as lost.
  uint64_t replicate_timeout_ms = 1000;
  uint64_t resync_after_records = kResyncAfterRecords;
};

struct RuntimeOptions {
  std::string name = "coordinator-0";
  std::string listen_host = "127.0.0.1";
  int listen_port = 0;  // 0: the kernel picks one; see Runtime::address()
  std::string dir;      // NODEDIR: the WAL lives in dir/wal
  // host:port per shard; copied into core.participants.
  std::vector<std::string> participants;
  // Timeouts, limits; `participants` and `self_address` are filled in here.
  CoreOptions core;
  wal::Options wal;
  HaOptions ha;
  // Prometheus endpoint (docs/observability.md): GET /metrics on
  // metrics_host:metrics_port (0: the kernel picks), the bound address
  // written to NODEDIR/metrics.addr. Off when !metrics_enabled.
  bool metrics_enabled = true;
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 0;
  // Per-transaction span events (common/trace.h, GetTrace): the ring's size;
  // 0 turns tracing off (no Record calls). Events also go to the log at
  // level debug.
  size_t trace_events = obs::kTraceEventsMaxDefault;
};

// The coordinator's metrics (names in docs/observability.md). Counters and
// histograms are updated where things happen (loop thread); gauges are set
// from the tick (loop thread); WAL totals are snapshotted into atomics on the
// tick and read by scrape-time callbacks.
struct CoordinatorMetrics {
  explicit CoordinatorMetrics(obs::Registry& r);
  obs::Counter& commits;
  obs::CounterFamily& aborts;  // reason: AbortReasonName() (the core's abort reasons)
  obs::Counter* abort_by_reason[6] = {};  // index: AbortReason value; client_abort never set here
  obs::Counter& outcomes_unknown;
  obs::HistogramFamily& phase;  // phase: prepare, decision, phase2, total
  obs::Histogram& prepare;
  obs::Histogram& decision;
  obs::Histogram& phase2;
  obs::Histogram& total;
  obs::GaugeFamily& role;
  obs::Gauge& epoch;
  obs::Gauge& in_flight;
  obs::GaugeFamily& heartbeat_age;  // peer: address; -1 never heard
  obs::GaugeFamily& suspected;
  std::atomic<uint64_t> wal_syncs{0};
  std::atomic<uint64_t> wal_records_synced{0};
  std::atomic<uint64_t> wal_sync_micros{0};
  // The core's counts at the last tick (loop thread), fed into the counters.
  struct CoreSeen {
    uint64_t commits = 0, conflict = 0, unavailable = 0, timeout = 0, failover = 0, unknown = 0;
  } seen;
};

class Handler;

class Runtime {
 public:
  // Binds the server, opens the WAL (replaying it into the core) and starts
  // the core (re-sending COMMIT for decisions without END). Requests are
  // served once the loop runs. Loop thread (or before the loop runs).
  static Result<std::unique_ptr<Runtime>> Start(EventLoop* loop, RuntimeOptions options);

  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Stops serving: closes the server and every participant channel, cancels
  // timers. Pending client requests get no reply (their connections close).
  // Safe to call twice.
  void Shutdown();

  // "host:port" the server is bound to.
  std::string address() const;
  const CoordinatorCore& core() const { return *core_; }

  // ---- the Coordinator service (called by Handler, loop thread) ----
  rpc::ShardMap GetShardMap() const;
  void Commit(const rpc::CommitRequest& req, std::function<void(const rpc::CommitResult&)> cob,
              std::function<void(const rpc::DtxError&)> fail);
  void QueryDecision(const rpc::TxId& txid, std::function<void(rpc::Decision::type)> cob,
                     std::function<void(const rpc::DtxError&)> fail);
  rpc::NodeStatus GetStatus() const;
  // Span events of recent transactions (common/trace.h); thread-safe.
  obs::TraceRing& trace() { return trace_; }
  const std::string& name() const { return options_.name; }
  // CoordinatorPeer (from the other coordinator).
  void Replicate(const rpc::ReplicateRequest& req,
                 std::function<void(const rpc::ReplicateResponse&)> cob,
                 std::function<void(const rpc::DtxError&)> fail);
  rpc::HeartbeatResponse Heartbeat(const rpc::HeartbeatRequest& req);

  Role role() const { return role_; }
  // "127.0.0.1:PORT" of the metrics endpoint, "" when off.
  std::string metrics_address() const;

 private:
  // What the primary knows about its backup.
  enum class BackupState {
    kNone,     // no --peer: alone by configuration
    kDown,     // suspected or a call failed: commits go ahead alone
    kSyncing,  // snapshot sent, not yet durable at the backup
    kInSync,   // every DECISION is durable at the backup before its commit point
  };
  // A DECISION between "appended" and "commit point".
  struct DecisionWait {
    TxId txid;
    uint64_t lsn = 0;
    bool local = false;        // durable in our log
    bool need_backup = false;  // the backup must ack it too
    bool backup = false;       // the backup acked it
  };
  struct ParticipantWatch {
    FailureDetector fd;
    bool probe_out = false;
    bool suspected = false;
    // The participant does not serve ParticipantPeer.Heartbeat (an older
    // or stand-in participant): probe it with GetStatus instead.
    bool heartbeat_unsupported = false;
  };
  static const char* BackupStateName(BackupState s);

  // Per-phase latency of one transaction (steady clock, microseconds; 0:
  // not yet): reported in CommitResult.prepare_us / decision_us. Measured
  // here rather than in the core, whose time input is milliseconds.
  struct PhaseTiming {
    int64_t prepare_sent = 0;       // first PREPARE handed to the stub
    int64_t last_vote = 0;          // latest vote (or call failure) before DECISION
    int64_t decision_appended = 0;  // DECISION appended to the WAL
    int64_t decision_released = 0;  // durable here and acked by the backup (commit point)
  };
  // Bounds timings_ (the core's undecided + committing limits); past it
  // transactions go unmeasured.
  static constexpr size_t kPhaseTimingsMax = 1 << 17;

  struct Pending {
    TxId txid;
    std::function<void(const rpc::CommitResult&)> commit_cob;  // Commit
    std::function<void(rpc::Decision::type)> query_cob;        // QueryDecision
    std::function<void(const rpc::DtxError&)> fail;
    int64_t received_us = 0;  // PhaseNow() when the request arrived
  };

  Runtime(EventLoop* loop, RuntimeOptions options);
  Status StartMetrics();
  void UpdateMetrics();
  Status Init();

  // Drains the core's Ready (append, send, reply) and logs state changes.
  void Process();
  void Append(const PersistRecord& p);
  void SendMessage(const OutMessage& m);
  void Deliver(Reply& reply);
  void OnDurable(PersistTag tag, RecordType type, TxId txid, uint64_t lsn);
  static int64_t PhaseNow();
  void NotePrepareSent(const TxId& txid);
  void NoteVote(const TxId& txid);
  void NoteDecisionReleased(const TxId& txid);
  // Sets prepare_us / decision_us from txid's timing and forgets it.
  void FillTimings(const TxId& txid, rpc::CommitResult& out);
  void MaybeTruncate();
  // Heartbeats (every ha.heartbeat_ms) and the suspicion check (every tick).
  void HeartbeatRound();
  void CheckSuspicions();
  void OnPeerHeartbeat(const rpc::HeartbeatResponse& resp);
  // Primary: replication to the backup.
  void QueueReplicate(const PersistRecord& p);
  void FlushReplicate();
  void StartSync();
  void OnReplicateReply(int64_t generation, const std::vector<PersistTag>& tags,
                        const RpcStatus& st);
  void BackupLost(const std::string& why);
  // Failover and fencing (coordinator/README.md "Replication and failover").
  // Decides, from what we know of the peer, whether to move to a newer
  // epoch: a starting primary establishes itself, a primary that lost its
  // backup fences it out, an in-sync backup whose primary is suspected
  // promotes itself. Called on every tick and heartbeat.
  void DriveRole();
  void StartBump(Epoch epoch, const std::string& why);
  void OnAdoptEpochReply(uint64_t bump_id, const std::string& participant, const RpcStatus& st);
  void BumpSucceeded();
  void BumpFailed(bool stale, const std::string& why);
  // An unstarted core (starting primary, promoting backup) starts at epoch e
  // once EPOCH e is durable here.
  void EstablishAt(Epoch epoch);
  // Stops deciding: pending requests get UNKNOWN, the core is rebuilt from
  // the log as a backup's mirror (not in sync until the new primary's
  // snapshot). StepDownLater posts it (safe inside Process and callbacks).
  void BecomeBackup(const std::string& why);
  void StepDownLater(const std::string& why);
  // "primary" (established), "starting" (a primary not yet established) or "backup".
  const char* RoleLabel() const;
  ParticipantPeerStub& AdoptStubFor(const std::string& address);
  void MaybeRelease(PersistTag tag);
  ParticipantStub& StubFor(const std::string& address);
  uint64_t NowMs() const;
  // Records a span event for txid when tracing is on (trace_events > 0).
  // `event` has static storage duration.
  void Trace(const TxId& txid, const char* event, std::string_view detail = {});
  // "participant-<shard index>" for an address in the shard map, else the address.
  std::string ParticipantName(const std::string& address) const;

  EventLoop* loop_;
  RuntimeOptions options_;
  std::unique_ptr<CoordinatorCore> core_;
  std::unique_ptr<wal::Log> log_;
  std::shared_ptr<Handler> handler_;
  std::unique_ptr<RpcServer> server_;
  std::string address_;
  std::map<std::string, ParticipantStub> stubs_;
  std::unordered_map<RequestToken, Pending> pending_;
  RequestToken next_token_ = 1;
  TimerId tick_timer_ = 0;
  TimerId truncate_timer_ = 0;
  uint64_t truncate_wanted_ = 0;
  uint64_t truncate_done_ = 0;
  uint64_t start_ms_ = 0;
  bool fenced_logged_ = false;
  bool shut_down_ = false;
  bool in_process_ = false;
  // While Init runs: forced records appended (the EPOCH of a fresh log),
  // waited for before the node serves, so "GetStatus answers" means "ready".
  bool initializing_ = true;
  std::vector<std::pair<PersistTag, wal::Lsn>> init_forced_;
  // ---- high availability ----
  struct Bump {
    uint64_t id = 0;
    Epoch epoch = 0;  // 0: none in progress
    size_t ok = 0;
    size_t failed = 0;
    bool stale = false;
    bool decided = false;
    uint64_t started_ms = 0;
    std::string why;
    std::string last_error;
  };
  CoreOptions core_options_;
  Role role_ = Role::kPrimary;
  bool established_ = false;  // the core is started: this node decides
  bool establishing_ = false;  // EstablishAt waits for its EPOCH record
  // Decisions may reach the commit point without the backup's ack.
  bool solo_ok_ = false;
  Bump bump_;
  uint64_t next_bump_id_ = 0;
  uint64_t bump_retry_at_ms_ = 0;
  Epoch solo_epoch_pending_ = 0;  // BumpEpoch on a running core, until durable
  uint64_t peer_suspected_at_ms_ = 0;
  uint64_t promotions_ = 0;
  uint64_t participant_suspicions_ = 0;  // transitions to suspected
  uint64_t peer_suspicions_ = 0;
  uint64_t step_downs_ = 0;
  std::map<std::string, ParticipantPeerStub> adopt_stubs_;
  TimerId heartbeat_timer_ = 0;
  std::map<std::string, ParticipantWatch> watches_;  // by participant address
  std::unique_ptr<CoordinatorPeerStub> peer_stub_;
  FailureDetector peer_fd_;
  bool peer_probe_out_ = false;
  bool peer_suspected_ = false;
  std::string peer_name_;
  std::string peer_role_;
  Epoch peer_epoch_ = 0;
  // Primary side.
  BackupState backup_state_ = BackupState::kNone;
  int64_t generation_ = 0;
  uint64_t replicated_since_snapshot_ = 0;
  uint64_t backup_losses_ = 0;
  std::vector<rpc::LogRecord> repl_batch_;
  std::vector<PersistTag> repl_batch_tags_;
  std::map<PersistTag, DecisionWait> decision_waits_;
  // Commits being measured, by txid; erased when the result is delivered.
  std::unordered_map<TxId, PhaseTiming, TxIdHash> timings_;
  // Backup side: the generation whose snapshot we received; in sync once
  // that snapshot is durable here.
  int64_t sync_generation_ = -1;
  bool in_sync_ = false;
  uint64_t replicated_records_ = 0;

  // Expires with the Runtime: WAL callbacks posted after it is gone find it
  // expired (they run on the loop thread, as does the destructor).
  std::shared_ptr<int> alive_;

  // Decided transactions whose END is not yet logged: decision_released
  // (PhaseNow) by txid, for dtx_phase_seconds{phase="phase2"}. Bounded by
  // kPhaseTimingsMax.
  std::unordered_map<TxId, int64_t, TxIdHash> phase2_start_;
  // Metrics: the HTTP server is declared last so it is destroyed (stopped)
  // before everything its scrapes read.
  bool tracing_ = true;
  obs::TraceRing trace_;
  obs::Registry registry_;
  CoordinatorMetrics metrics_{registry_};
  std::unique_ptr<obs::MetricsHttpServer> metrics_http_;
};

// The Thrift edge: converts and forwards to the Runtime. Holds a plain
// pointer that Runtime::Shutdown clears; a call after that answers
// UNAVAILABLE. Loop thread only.
class Handler : public rpc::CoordinatorPeerCobSvIf {
 public:
  explicit Handler(Runtime* runtime) : runtime_(runtime) {}
  void Detach() { runtime_ = nullptr; }

  void GetShardMap(std::function<void(const rpc::ShardMap&)> cob,
                   std::function<void(apache::thrift::TDelayedException*)> exn_cob) override;
  void Commit(std::function<void(const rpc::CommitResult&)> cob,
              std::function<void(apache::thrift::TDelayedException*)> exn_cob,
              const rpc::CommitRequest& req) override;
  void QueryDecision(std::function<void(const rpc::Decision::type&)> cob,
                     std::function<void(apache::thrift::TDelayedException*)> exn_cob,
                     const rpc::TxId& txid) override;
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override;
  void SetFailpoint(std::function<void()> cob,
                    std::function<void(apache::thrift::TDelayedException*)> exn_cob,
                    const std::string& name, const std::string& action) override;
  void Replicate(std::function<void(const rpc::ReplicateResponse&)> cob,
                 std::function<void(apache::thrift::TDelayedException*)> exn_cob,
                 const rpc::ReplicateRequest& req) override;
  void Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob,
                 const rpc::HeartbeatRequest& req) override;
  void GetTrace(std::function<void(const rpc::TraceResponse&)> cob, const rpc::TxId& txid) override;

 private:
  Runtime* runtime_;
};

}  // namespace dtx::coordinator
