// The participant node's runtime: drives a participant Core with real I/O.
//
// It owns the WAL (wal::Log in NODEDIR/wal, group commit), the LevelDB store
// (NODEDIR/data), the RpcServer serving the Participant service through a
// ParticipantCobSvIf handler that converts Thrift <-> core types at the edge,
// CoordinatorStubs for QueryDecision, and a periodic tick timer. After every
// input it drains the core's Ready in the order the core requires: append
// records, then send messages, then deliver replies. A record is reported to
// the core (OnPersisted) only from the WAL's durable callback, Post()ed to the
// loop, i.e. after its fdatasync returned 0.
//
// Failpoints (common/failpoint.h), evaluated on the loop thread:
//   participant.prepare.before_log   before a PREPARE is appended
//   participant.prepare.after_log    PREPARE durable, before the core hears it
//   participant.prepare.after_vote   right after a YES vote was handed to the
//                                    server (also a one-phase YES = committed)
//   participant.commit.before_log    before a COMMIT is appended (2PC and 1PC)
//   participant.commit.after_log     COMMIT durable, before it is applied
//   participant.commit.after_apply   writes applied to LevelDB, locks not yet
//                                    released, nothing acked
//   participant.commit.before_ack    before a Commit ack is sent
// `crash` exits at once (86); `sleep` blocks the loop. `error` at a *_log
// point or at after_apply is fail-stop (log, exit 1): the participant has no
// safe way to skip a step of the commit path. `error` at before_ack answers
// that Commit with DtxError INTERNAL instead of the ack (the commit itself is
// done); at after_vote it is logged and ignored (the vote is already sent).
//
// A WAL failure (Append error, durable callback with an error) and a store
// failure after a durable COMMIT log and exit the process with status 1.
//
// Checkpoints (participant/README.md "Checkpoints"): every
// checkpoint_interval_records appended records or checkpoint_interval_ms, the
// loop thread takes Core::TakeCheckpoint() and hands it to the checkpoint
// worker thread, which makes LevelDB durable up to it and stores it
// (LevelStore::WriteCheckpoint), then deletes the WAL segments below its
// retain_from (wal::Log::TruncateBefore), and posts back. One at a time; the
// loop never waits for it. A failed checkpoint write stops the process like
// a failed WAL sync. On start the last checkpoint is restored before replay.
// A clean shutdown writes a last checkpoint, so the next start replays
// little.
//
// Tracing (docs/observability.md "Span events on a participant"): with
// options.trace_events > 0 the runtime records span events of each txid in
// trace_ (received, locked / conflict, logged, synced, voted, decided,
// applied, acked, refused, in_doubt) and, at --log-level debug, in node.log;
// GetTrace answers from it. `synced` is recorded on the WAL flusher thread
// (TraceRing::Record is thread-safe), everything else on the loop thread.
//
// Threading: every method runs on the loop thread (common/event_loop.h); the
// WAL's durable callbacks run on its flusher thread and only Post() to the
// loop (or exit the process); the checkpoint worker touches only LevelStore::
// WriteCheckpoint and wal::Log::TruncateBefore (both thread-safe) and Post()s.
// Lifetime: `loop` must outlive the Runtime. Call Shutdown() (loop thread)
// before destroying it; the destructor closes the WAL (syncing what is
// queued) and LevelDB.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ParticipantPeer.h"
#include "common/event_loop.h"
#include "common/failure_detector.h"
#include "common/metrics.h"
#include "common/metrics_http.h"
#include "common/trace.h"
#include "common/wal_metrics.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/status.h"
#include "participant/core.h"
#include "participant/level_store.h"
#include "wal/wal.h"

namespace dtx::participant {

// How often the core's Tick runs (read timeouts, decision queries).
inline constexpr uint64_t kTickIntervalMs = 10;
// Per-request timeout of a QueryDecision call.
inline constexpr int kQueryDecisionTimeoutMs = 1000;
// Coordinator addresses (from PREPARE records) with their own channel; past
// it, the configured coordinator is asked instead.
inline constexpr size_t kCoordinatorChannelsMax = 16;
// Checkpoint triggers (whichever comes first, and only when the checkpoint
// would move forward).
inline constexpr uint64_t kCheckpointIntervalRecordsDefault = 50000;
inline constexpr uint64_t kCheckpointIntervalMsDefault = 10000;
// Largest WAL segment the participant accepts from its flag.
inline constexpr uint64_t kWalSegmentBytesMax = uint64_t{1} << 30;

struct RuntimeOptions {
  std::string name = "participant-0";
  std::string listen_host = "127.0.0.1";
  int listen_port = 0;      // 0: the kernel picks one; see Runtime::address()
  std::string dir;          // NODEDIR: wal/ and data/ live here
  std::string coordinator;  // host:port asked with QueryDecision by default
  // Every coordinator (primary and backup; may include `coordinator`): when
  // the coordinator named in a PREPARE cannot answer, an in-doubt
  // transaction is asked of whichever of these - or of the coordinators that
  // send heartbeats - is primary at the transaction's epoch or later.
  std::vector<std::string> coordinators;
  // A coordinator not heard from (heartbeat or call) for this long shows as
  // suspected in GetStatus.
  uint64_t coordinator_suspect_after_ms = kSuspectAfterMsDefault;  // common/failure_detector.h
  CoreOptions core;
  wal::Options wal;
  uint64_t checkpoint_interval_records = kCheckpointIntervalRecordsDefault;  // 0: not by count
  uint64_t checkpoint_interval_ms = kCheckpointIntervalMsDefault;            // 0: not by time
  bool checkpoint_on_shutdown = true;
  // Prometheus endpoint (docs/observability.md): GET /metrics on
  // metrics_host:metrics_port (0: the kernel picks), the bound address
  // written to NODEDIR/metrics.addr. Off when !metrics_enabled.
  bool metrics_enabled = true;
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 0;
  // Span events kept in the trace ring (common/trace.h; rounded up to a power
  // of two, at most obs::kTraceEventsMax). 0: tracing off, nothing recorded
  // and GetTrace answers with no events.
  size_t trace_events = obs::kTraceEventsMaxDefault;
};

// The participant's metrics (names in docs/observability.md). Histograms and
// counters are updated where things happen (loop thread); the gauges are set
// from the tick (loop thread); WAL totals are snapshotted into atomics on the
// tick and read by scrape-time callbacks.
struct ParticipantMetrics {
  explicit ParticipantMetrics(obs::Registry& r);
  obs::Histogram& read;
  obs::Histogram& prepare;
  obs::Histogram& commit;
  obs::Counter& commits;
  obs::CounterFamily& aborts;    // reason: "coordinator" (Abort call) or a NO-vote reason
  obs::CounterFamily& votes;     // vote: yes, no, read_only
  // Children created at start-up, for the hot path (Get takes a mutex).
  obs::Counter& vote_yes;
  obs::Counter& vote_no;
  obs::Counter& vote_read_only;
  obs::Counter& abort_by_coordinator;
  obs::Counter* abort_by_reason[6] = {};  // index: AbortReason value (1..5)
  obs::Gauge& in_doubt;
  obs::Gauge& in_doubt_oldest_age;
  obs::Gauge& lock_table;
  obs::Gauge& epoch;
  obs::GaugeFamily& heartbeat_age;  // peer: coordinator address
  obs::GaugeFamily& suspected;
  obs::WalMetrics wal;  // common/wal_metrics.h
};

struct CheckpointStats {
  uint64_t taken = 0;            // checkpoints written
  uint64_t lsn = 0;              // the last one's lsn (restored or written)
  uint64_t retain_from = 0;      // ... and retain_from
  uint64_t last_write_us = 0;    // how long the last WriteCheckpoint took
  uint64_t last_truncate_us = 0; // how long the last TruncateBefore took
  uint64_t truncate_errors = 0;
};

class Handler;

class Runtime {
 public:
  // Opens LevelDB and the WAL (replaying it into the core), starts the core,
  // binds the server. Requests are served once the loop runs. Loop thread (or
  // before the loop runs).
  static Result<std::unique_ptr<Runtime>> Start(EventLoop* loop, RuntimeOptions options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Stops serving: closes the server and the coordinator channels, cancels
  // the tick. Requests in flight get no reply. Safe to call twice.
  void Shutdown();

  std::string address() const;
  const Core& core() const { return *core_; }
  const CheckpointStats& checkpoint_stats() const { return checkpoint_stats_; }
  const wal::Log& log() const { return *log_; }
  // "127.0.0.1:PORT" of the metrics endpoint, "" when off.
  std::string metrics_address() const;
  const obs::Registry& registry() const { return registry_; }
  // Span events of recent transactions (common/trace.h); thread-safe.
  obs::TraceRing& trace() { return trace_; }
  const std::string& name() const { return options_.name; }

  // ---- the Participant service (called by Handler, loop thread) ----
  using Fail = std::function<void(const rpc::DtxError&)>;
  void Read(const std::string& key, std::function<void(const rpc::ReadResult&)> cob, Fail fail);
  void Prepare(const rpc::PrepareRequest& req, std::function<void(const rpc::PrepareResponse&)> cob, Fail fail);
  void Commit(const rpc::TxId& txid, rpc::Epoch epoch, std::function<void()> cob, Fail fail);
  void Abort(const rpc::TxId& txid, rpc::Epoch epoch, std::function<void()> cob, Fail fail);
  rpc::NodeStatus GetStatus() const;
  std::vector<rpc::InDoubtTx> ListInDoubt() const;
  // ---- ParticipantPeer (coordinators) ----
  void AdoptEpoch(rpc::Epoch epoch, const std::string& coordinator, std::function<void()> cob,
                  Fail fail);
  rpc::HeartbeatResponse Heartbeat(const rpc::HeartbeatRequest& req);

 private:
  struct Pending {
    Reply::Kind kind = Reply::Kind::kRead;
    std::function<void(const rpc::ReadResult&)> read;
    std::function<void(const rpc::PrepareResponse&)> prepare;
    std::function<void()> done;
    Fail fail;
    uint64_t start_ns = 0;  // steady clock, for the latency histograms
  };
  class FailpointStore;

  Runtime(EventLoop* loop, RuntimeOptions options);
  Status Init();
  Token NewToken(Pending p);
  // Drains the core's Ready: append, send, reply.
  void Process();
  void Append(PersistOp& op);
  void OnDurable(uint64_t tag, RecordType type, TxId txid);
  // Sends the core's question `m` (QueryDecisionMsg: the core decides whom
  // to ask and which answers count) and feeds the answer back to it.
  void AskDecision(const QueryDecisionMsg& m);
  // m.kind == kFindPrimary: every known coordinator's status, to the core.
  void AskOtherCoordinators(const QueryDecisionMsg& m);
  void Deliver(Reply& r);
  void TraceVote(const Reply& r);
  CoordinatorStub& StubFor(const std::string& address);
  uint64_t NowMs() const;
  void HeardFromCoordinator();
  Status RestoreAndReplay();
  void MaybeCheckpoint();
  void CheckpointWorkerLoop();
  void OnCheckpointDone(const Checkpoint& cp, uint64_t write_us, uint64_t truncate_us, const Status& truncated);
  void StopCheckpointWorker();
  Status StartMetrics();
  void UpdateMetrics();
  // Records a span event when tracing is on. `event` must be a literal.
  void Trace(const TxId& txid, const char* event, std::string_view detail = {}) {
    if (tracing_) trace_.Record(txid, event, detail);
  }

  EventLoop* loop_;
  RuntimeOptions options_;
  std::unique_ptr<LevelStore> level_;
  std::unique_ptr<FailpointStore> store_;
  std::unique_ptr<Core> core_;
  std::unique_ptr<wal::Log> log_;
  std::shared_ptr<Handler> handler_;
  std::unique_ptr<RpcServer> server_;
  std::map<std::string, CoordinatorStub> stubs_;
  std::unordered_map<Token, Pending> pending_;
  Token next_token_ = 1;
  TimerId tick_timer_ = 0;
  uint64_t start_ms_ = 0;
  uint64_t coordinator_heard_ms_ = 0;  // 0: never
  struct CoordinatorSeen {
    uint64_t heard_ms = 0;
    std::string role;
    int64_t epoch = 0;
  };
  std::map<std::string, CoordinatorSeen> coordinators_seen_;  // by address, from Heartbeat
  uint64_t replayed_ = 0;
  bool shut_down_ = false;
  // Transactions in doubt after recovery and not resolved yet: each gets one
  // "txid=... in-doubt resolved by ..." log line, whether a QueryDecision
  // answer or the coordinator's own Commit/Abort call resolves it.
  std::set<TxId> recovered_in_doubt_;
  void NoteResolved(const TxId& txid, const char* how, const char* decision);

  // Checkpoints. Loop thread: the fields below the worker's.
  std::thread checkpoint_thread_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  std::optional<Checkpoint> checkpoint_job_;  // GUARDED_BY(checkpoint_mu_)
  bool checkpoint_stop_ = false;              // GUARDED_BY(checkpoint_mu_)
  bool checkpoint_in_flight_ = false;
  Checkpoint last_checkpoint_;
  uint64_t last_checkpoint_ms_ = 0;
  CheckpointStats checkpoint_stats_;
  // Expires with the Runtime: WAL callbacks posted after it is gone find it
  // expired (they run on the loop thread, as does the destructor).
  std::shared_ptr<int> alive_;

  // Metrics: the HTTP server is declared last so it is destroyed (stopped)
  // before everything its scrapes read.
  // The Prepare call being processed right now (for the `locked` event of
  // the record its Process() appends). Loop thread.
  struct PrepareInProgress {
    bool active = false;
    TxId txid;
    bool read_only = false;   // nothing will be logged: locks validated and released at once
    size_t keys = 0;
    bool locked_recorded = false;
  };
  PrepareInProgress preparing_;
  const bool tracing_;
  obs::TraceRing trace_;
  obs::Registry registry_;
  ParticipantMetrics metrics_{registry_};
  uint64_t metrics_ticks_ = 0;
  std::unique_ptr<obs::MetricsHttpServer> metrics_http_;
};

// The Thrift edge: converts and forwards to the Runtime. Holds a plain
// pointer that Runtime::Shutdown clears; a call after that answers
// UNAVAILABLE. Loop thread only.
class Handler : public rpc::ParticipantPeerCobSvIf {
 public:
  explicit Handler(Runtime* runtime) : runtime_(runtime) {}
  void Detach() { runtime_ = nullptr; }

  using ExnCob = std::function<void(apache::thrift::TDelayedException*)>;
  void Read(std::function<void(const rpc::ReadResult&)> cob, ExnCob exn_cob, const std::string& key) override;
  void Prepare(std::function<void(const rpc::PrepareResponse&)> cob, ExnCob exn_cob,
               const rpc::PrepareRequest& req) override;
  void Commit(std::function<void()> cob, ExnCob exn_cob, const rpc::TxId& txid, const rpc::Epoch epoch) override;
  void Abort(std::function<void()> cob, ExnCob exn_cob, const rpc::TxId& txid, const rpc::Epoch epoch) override;
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override;
  void ListInDoubt(std::function<void(const std::vector<rpc::InDoubtTx>&)> cob) override;
  void SetFailpoint(std::function<void()> cob, ExnCob exn_cob, const std::string& name,
                    const std::string& action) override;
  void Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob,
                 const rpc::HeartbeatRequest& req) override;
  void AdoptEpoch(std::function<void()> cob, ExnCob exn_cob, const rpc::Epoch epoch,
                  const std::string& coordinator) override;
  void GetTrace(std::function<void(const rpc::TraceResponse&)> cob, const rpc::TxId& txid) override;

 private:
  Runtime* runtime_;
};

}  // namespace dtx::participant
