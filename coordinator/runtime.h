// The coordinator node's runtime: drives an HaCore (coordinator/ha_core.h:
// the 2PC CoordinatorCore plus failover, replication and fencing, all pure)
// with real I/O - it is plumbing: timers, RPC, WAL.
//
// It owns the decision log (wal::Log in NODEDIR/wal, group commit), the
// RpcServer serving the Coordinator service (a CoordinatorCobSvIf handler that
// converts Thrift <-> core types at the edge), one ParticipantStub per
// participant address, the HA stubs (CoordinatorPeer to the other coordinator,
// ParticipantPeer for heartbeats and AdoptEpoch) and a periodic tick timer.
// The glue between HaCore and all of that is a CoordinatorDriver
// (coordinator/driver.h, also run by tests/sim): after every input it drains
// the HaCore's HaReady in the order it requires: append records (reopening
// the log into a fresh mirror on reload_log), then released decisions
// (failpoint), then messages, probes, Replicate and AdoptEpoch calls, then
// replies. The runtime is the driver's CoordinatorIo (stubs, wal::Log, the
// loop's clock) and CoordinatorHooks (metrics, phase timings, tracing). A
// forced record is reported to the core (OnPersisted) only from the WAL's
// durable callback, Post()ed to the loop, i.e. after its fdatasync returned 0.
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
#include <set>
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
#include "common/wal_metrics.h"
#include "common/metrics_http.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/status.h"
#include "coordinator/core.h"
#include "coordinator/driver.h"
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
  obs::WalMetrics wal;  // common/wal_metrics.h
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
  const CoordinatorCore& core() const { return ha_->core(); }

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

  Role role() const { return ha_->role(); }
  // "127.0.0.1:PORT" of the metrics endpoint, "" when off.
  std::string metrics_address() const;

 private:
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

  // The CoordinatorDriver's CoordinatorIo and CoordinatorHooks: the stubs,
  // the WAL, the loop's clock, metrics and tracing (runtime.cc).
  class Glue;
  friend class Glue;

  Runtime(EventLoop* loop, RuntimeOptions options);
  Status StartMetrics();
  void UpdateMetrics();
  Status Init();

  // options_.wal plus the on_sync hook feeding the WAL histograms.
  wal::Options WalOptions();
  static int64_t PhaseNow();
  void NotePrepareSent(const TxId& txid);
  void NoteVote(const TxId& txid);
  void NoteDecisionReleased(const TxId& txid);
  // Sets prepare_us / decision_us from txid's timing and forgets it.
  void FillTimings(const TxId& txid, rpc::CommitResult& out);
  // "primary" (established), "starting" (a primary not yet established) or "backup".
  const char* RoleLabel() const { return ha_->RoleLabel(); }
  ParticipantPeerStub& AdoptStubFor(const std::string& address);
  ParticipantStub& StubFor(const std::string& address);
  uint64_t NowMs() const;
  // Records a span event for txid when tracing is on (trace_events > 0).
  // `event` has static storage duration.
  void Trace(const TxId& txid, const char* event, std::string_view detail = {});

  EventLoop* loop_;
  RuntimeOptions options_;
  std::unique_ptr<HaCore> ha_;
  std::unique_ptr<Glue> glue_;
  // The glue between ha_ and the world (coordinator/driver.h).
  std::unique_ptr<CoordinatorDriver> driver_;
  std::unique_ptr<wal::Log> log_;
  std::shared_ptr<Handler> handler_;
  std::unique_ptr<RpcServer> server_;
  std::string address_;
  std::map<std::string, ParticipantStub> stubs_;
  TimerId tick_timer_ = 0;
  TimerId truncate_timer_ = 0;
  uint64_t start_ms_ = 0;
  bool shut_down_ = false;
  // While Init runs: forced records appended (the EPOCH of a fresh log),
  // waited for before the node serves, so "GetStatus answers" means "ready".
  bool initializing_ = true;
  // (lsn, the driver's durability notice) of each.
  std::vector<std::pair<wal::Lsn, std::function<void(uint64_t)>>> init_forced_;
  // ---- high availability (the logic is in ha_) ----
  std::map<std::string, ParticipantPeerStub> adopt_stubs_;
  // Participants that do not serve ParticipantPeer.Heartbeat (older or
  // stand-in participants): probed with GetStatus instead.
  std::set<std::string> heartbeat_unsupported_;
  std::unique_ptr<CoordinatorPeerStub> peer_stub_;
  // Commits being measured, by txid; erased when the result is delivered.
  std::unordered_map<TxId, PhaseTiming, TxIdHash> timings_;

  // Expires with the Runtime (and at a log reload): WAL callbacks posted after
  // it is gone find it expired (they run on the loop thread, as does the
  // destructor).
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
