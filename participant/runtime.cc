#include "participant/runtime.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string_view>
#include <system_error>

#include "ParticipantPeer.h"
#include "common/event_loop.h"
#include "common/failpoint.h"
#include "common/log.h"
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/prometheus_support.h"
#include "common/rpc_client.h"
#include "common/rpc_error.h"
#include "common/wal_metrics.h"
#include "node/fail_stop.h"
#include "node/access.h"
#include "node/disk_guard.h"
#include "node/handler.h"
#include "node/listeners.h"
#include "node/lifetime.h"
#include "node/node.h"
#include "node/wal_appender.h"
#include "participant/driver.h"
#include "participant/async_store.h"
#include "participant/in_order.h"
#include "participant/level_store.h"
#include "common/wire.h"

namespace dtx::participant {

namespace {

using node::FailStop;

uint64_t SteadyNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

// Metrics gauges that need a scan (in-doubt list) are refreshed every this
// many ticks.
constexpr uint64_t kMetricsScanEveryTicks = 10;

}  // namespace

namespace {
// How often the core's Tick runs (read timeouts, decision queries).
constexpr uint64_t kTickIntervalMs = 10;
// The free-space watermark is checked every 100 ticks: once a second.
constexpr uint64_t kDiskCheckEveryTicks = 100;
// Coordinator addresses (from PREPARE records) with their own channel; past
// it, the configured coordinator is asked instead.
constexpr size_t kCoordinatorChannelsMax = kCoordinatorsSeenMax;
}  // namespace

// The participant's metrics (names in docs/observability.md), in node_'s
// prometheus-cpp registry. Histograms and counters are updated where things
// happen (loop thread); the gauges and the WAL counters are set from the tick
// (loop thread). Every child is created once and kept: Family::Add allocates.
struct ParticipantMetrics {
  explicit ParticipantMetrics(prometheus::Registry& r);
  // The heartbeat-age and suspected gauges of coordinator `peer`, created on
  // first use (at most kCoordinatorsSeenMax coordinators are tracked).
  struct PeerGauges {
    prometheus::Gauge* heartbeat_age;
    prometheus::Gauge* suspected;
  };
  PeerGauges& Peer(const std::string& peer);

  prometheus::Histogram& read;
  prometheus::Histogram& prepare;
  prometheus::Histogram& commit;
  prometheus::Counter& commits;
  // reason: "coordinator" (Abort call) or a NO-vote reason
  prometheus::Family<prometheus::Counter>& aborts;
  prometheus::Family<prometheus::Counter>& votes;  // vote: yes, no, read_only
  prometheus::Counter& vote_yes;
  prometheus::Counter& vote_no;
  prometheus::Counter& vote_read_only;
  prometheus::Counter& abort_by_coordinator;
  prometheus::Counter* abort_by_reason[6] = {};  // index: AbortReason value (1..5)
  prometheus::Gauge& in_doubt;
  prometheus::Gauge& in_doubt_oldest_age;
  prometheus::Counter& carried_forward;  // PREPAREs written again
  uint64_t carried_forward_seen = 0;     // the core's count at the last update
  // Reads off the loop (participant/async_store.h Warm): calls that waited
  // for the store reader, and the keys it has still to read.
  prometheus::Counter& store_waits;
  uint64_t store_waits_seen = 0;
  prometheus::Gauge& store_read_backlog;
  prometheus::Gauge& lock_table;
  prometheus::Gauge& epoch;
  prometheus::Family<prometheus::Gauge>& heartbeat_age;  // peer: coordinator address
  prometheus::Family<prometheus::Gauge>& suspected;
  std::map<std::string, PeerGauges> peers;
  obs::WalMetrics wal;  // common/wal_metrics.h
};

struct CheckpointStats {
  uint64_t taken = 0;             // checkpoints written
  uint64_t lsn = 0;               // the last one's lsn (restored or written)
  uint64_t retain_from = 0;       // ... and retain_from
  uint64_t last_write_us = 0;     // how long the last WriteCheckpoint took
  uint64_t last_truncate_us = 0;  // how long the last TruncateBefore took
  uint64_t truncate_errors = 0;
};

// How often reads held for reply room (HoldRead) are tried again.
constexpr uint64_t kHeldReadRetryMs = 10;

struct Runtime::Impl {
  using Fail = std::function<void(const rpc::DtxError&)>;

  Impl(EventLoop* loop, RuntimeOptions options);
  ~Impl();
  Status Init();
  void Shutdown();

  // ---- the Participant service (called by Handler, loop thread) ----
  void Read(const std::string& key, std::function<void(const rpc::ReadResult&)> cob, Fail fail);
  void Prepare(const rpc::PrepareRequest& req, std::function<void(const rpc::PrepareResponse&)> cob,
               Fail fail);
  // The keys a Prepare reads from the store (its reads' validation, and its
  // writes' current versions when they are applied), and whether one of them
  // is not in memory: the PeerHandler then queues the call behind a read
  // off the loop (participant/in_order.h).
  static std::vector<std::string> StoreKeysOf(const rpc::PrepareRequest& req);
  bool ReadsDisk(const rpc::PrepareRequest& req) const;
  // Late reads. A Read answered after its call returned - it waited for the
  // store reader, or for a prepared transaction's lock in the core - was
  // taken off its connection long before, so the transport's reply budget,
  // checked before each frame, never saw it. Such a read is answered only
  // while the client listener's queued replies are under its byte budget
  // (node::Node::ReplyRoom); otherwise it is held (held_reads_: its key and
  // callbacks, not its value) and served again once there is room, tried
  // every kHeldReadRetryMs. Served again, it reads the key anew: a value
  // current while the call was open, as any read's.
  // ServeRead: the driver's Read, a late answer checked as above.
  void ServeRead(const std::string& key, std::function<void(const rpc::ReadResult&)> cob,
                 Fail fail);
  // ServeRead now if nothing is held and there is room, else HoldRead.
  void ServeLateRead(const std::string& key, std::function<void(const rpc::ReadResult&)> cob,
                     Fail fail);
  void HoldRead(const std::string& key, std::function<void(const rpc::ReadResult&)> cob, Fail fail);
  // One retry of the held reads pending while any are held.
  void ScheduleHeldReads();
  void ServeHeldReads();
  // Reads waiting for the store reader or for reply room.
  size_t ReadsWaiting() const { return async_->read_backlog_keys() + held_reads_.size(); }
  // AsyncStore::Warm, counting the Prepares that waited.
  bool WarmForPrepare(const std::vector<std::string_view>& keys, std::function<void()> done);
  void Commit(const rpc::TxId& txid, rpc::Epoch epoch, std::function<void()> cob, Fail fail);
  void Abort(const rpc::TxId& txid, rpc::Epoch epoch, const rpc::Attempt& attempt,
             std::function<void()> cob, Fail fail);
  rpc::NodeStatus GetStatus() const;
  std::vector<rpc::InDoubtTx> ListInDoubt() const;
  // ---- ParticipantPeer (coordinators) ----
  void AdoptEpoch(rpc::Epoch epoch, const std::string& coordinator, std::function<void()> cob,
                  Fail fail);
  rpc::HeartbeatResponse Heartbeat(const rpc::HeartbeatRequest& req);

  // The driver's world (participant/driver.h): the event loop's clock, the
  // WAL, the stubs, fail-stop; metrics, span tracing and logs as hooks.
  class Glue;

  CoordinatorPeerStub& StubFor(const std::string& address);
  uint64_t NowMs() const { return node_.NowMs(); }
  Status RestoreAndReplay();
  // `force`: now, whatever the intervals (the disk guard went low: the
  // checkpoint lets the WAL be truncated).
  void MaybeCheckpoint(bool force = false);
  // Every second: the free-space watermark (node/disk_guard.h).
  void CheckDisk();
  // Store worker thread (AsyncStore::RunAfter): writes `cp`, truncates the
  // WAL below its retain_from, posts OnCheckpointDone.
  void WriteCheckpoint(const std::shared_ptr<const Checkpoint>& cp);
  void OnCheckpointDone(const Checkpoint& cp, uint64_t write_us, uint64_t truncate_us,
                        const Status& truncated);
  // Why a new PREPARE that writes is refused now (UNAVAILABLE, overloaded):
  // the store worker or the WAL is that far behind; empty: it is not.
  std::string Overloaded() const;
  void UpdateMetrics();
  EventLoop* loop_;
  RuntimeOptions options_;
  // Server, handler, tick, metrics endpoint, trace ring (node/node.h).
  node::Node node_;
  // Who may call what (node/access.h): the configured coordinators.
  const node::AccessPolicy policy_;
  node::ListenerAddresses listeners_;  // bound
  const bool tracing_;                 // node_.tracing()
  obs::TraceRing& trace_;              // node_.trace()
  std::unique_ptr<LevelStore> level_;
  // The core's store: FailpointStore over AsyncStore (its writes on the store
  // worker thread, participant/async_store.h) over LevelStore.
  std::unique_ptr<AsyncStore> async_;
  std::unique_ptr<FailpointStore> store_;
  std::unique_ptr<Core> core_;
  node::WalAppender wal_;
  std::unique_ptr<Glue> glue_;
  std::unique_ptr<ParticipantDriver> driver_;
  std::map<std::string, CoordinatorPeerStub> stubs_;
  uint64_t start_ms_ = 0;
  uint64_t replayed_ = 0;
  bool shut_down_ = false;

  // Checkpoints (written on the store worker thread, behind the applies
  // queued before them). Loop thread.
  bool checkpoint_in_flight_ = false;
  uint64_t overload_refusals_ = 0;  // PREPAREs refused by Overloaded(), Reads by the reader's backlog
  uint64_t reads_waited_ = 0;       // Reads that waited for the store reader
  uint64_t prepares_waited_ = 0;    // Prepares that did
  struct HeldRead {
    std::string key;
    std::function<void(const rpc::ReadResult&)> cob;
    Fail fail;
  };
  std::deque<HeldRead> held_reads_;  // HoldRead
  bool held_retry_scheduled_ = false;
  uint64_t reads_held_ = 0;     // HoldRead calls
  uint64_t read_serial_ = 0;    // ServeRead calls
  uint64_t serving_read_ = 0;   // the ServeRead under way (its serial), 0: none
  Checkpoint last_checkpoint_;
  uint64_t last_checkpoint_ms_ = 0;
  CheckpointStats checkpoint_stats_;
  // Expires with the Runtime: callbacks posted back to the loop (checkpoint
  // results, QueryDecision answers) after it is gone do nothing.
  node::LifetimeToken alive_;

  // In node_'s registry, which outlives it; read by scrapes only until
  // Shutdown() stops the endpoint.
  ParticipantMetrics metrics_{node_.registry()};
  uint64_t metrics_ticks_ = 0;
  // The free-space watermark and ballast of options_.dir (node/disk_guard.h).
  std::unique_ptr<node::DiskGuard> disk_;
  node::DiskMetrics disk_metrics_{node_.registry()};
  uint64_t disk_ticks_ = 0;
};

namespace {

// The Thrift edge, one object per connection: converts and forwards to the
// Runtime. A call after Shutdown (detached) answers UNAVAILABLE.
// ClientHandler serves the client listener (Participant: Read, GetStatus),
// PeerHandler the peer listener (ParticipantPeer), whose calls but GetStatus
// are taken only from a configured coordinator (node/access.h). The admin
// calls are on the admin listener (node/handler.h AdminHandler). Loop thread
// only.
class ClientHandler final : public node::Handler<rpc::ParticipantCobSvIf, Runtime::Impl> {
 public:
  using node::Handler<rpc::ParticipantCobSvIf, Runtime::Impl>::Handler;

  void Read(std::function<void(const rpc::ReadResult&)> cob, ExnCob exn_cob,
            const std::string& key) override;
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override;
};

class PeerHandler final : public node::Handler<rpc::ParticipantPeerCobSvIf, Runtime::Impl> {
 public:
  using node::Handler<rpc::ParticipantPeerCobSvIf, Runtime::Impl>::Handler;

  void Prepare(std::function<void(const rpc::PrepareResponse&)> cob, ExnCob exn_cob,
               const rpc::PrepareRequest& req) override;
  void Commit(std::function<void()> cob, ExnCob exn_cob, const rpc::TxId& txid,
              const rpc::Epoch epoch) override;
  void Abort(std::function<void()> cob, ExnCob exn_cob, const rpc::TxId& txid,
             const rpc::Epoch epoch, const rpc::Attempt& attempt) override;
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override;
  void Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob, ExnCob exn_cob,
                 const rpc::HeartbeatRequest& req) override;
  void AdoptEpoch(std::function<void()> cob, ExnCob exn_cob, const rpc::Epoch epoch,
                  const std::string& coordinator) override;

 private:
  using Fail = Runtime::Impl::Fail;
  // A configured coordinator (any, when the policy is insecure).
  bool PermitCoordinator(std::string_view what, const ExnCob& exn_cob) {
    return Permit(policy().RequirePeer(caller(), PrincipalKind::kCoordinator, what), exn_cob);
  }
  // Nothing of this connection waits for the store reader: a call may run
  // at once (participant/in_order.h).
  bool InTurn() const { return in_order_ == nullptr || in_order_->idle(); }
  // `call` after the calls of this connection queued before it, once `keys`
  // read from memory; UNAVAILABLE through `fail` if the node began shutting
  // down meanwhile.
  void Queue(std::vector<std::string> keys, std::function<void(Runtime::Impl*)> call, Fail fail);
  // `call(target, fail)` at once when InTurn(), else through Queue (no keys:
  // it waits only for the calls before it).
  template <typename Call>
  void InOrderOf(ExnCob exn_cob, Call call) {
    Fail fail = FailVia(std::move(exn_cob));
    if (InTurn()) return call(target(), std::move(fail));
    Queue(
        {}, [call = std::move(call), fail](Runtime::Impl* t) mutable { call(t, fail); }, fail);
  }

  std::shared_ptr<InOrder> in_order_;  // made when a call first waits
};

}  // namespace

namespace {
prometheus::Histogram& LatencyHistogram(prometheus::Registry& r, const char* name,
                                        const char* help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add(
      {}, obs::LatencyBucketsSeconds());
}
prometheus::Gauge& PlainGauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}
}  // namespace

ParticipantMetrics::ParticipantMetrics(prometheus::Registry& r)
    : read(LatencyHistogram(r, "dtx_read_seconds",
                            "Read latency at this participant (request to reply).")),
      prepare(LatencyHistogram(r, "dtx_prepare_seconds", "Prepare received to vote sent.")),
      commit(LatencyHistogram(r, "dtx_commit_seconds", "Commit received to ack sent.")),
      commits(prometheus::BuildCounter()
                  .Name("dtx_commits_total")
                  .Help("Commit calls acked here (one-phase commits count as "
                        "dtx_votes_total{vote=\"yes\"}).")
                  .Register(r)
                  .Add({})),
      aborts(prometheus::BuildCounter()
                 .Name("dtx_aborts_total")
                 .Help("Transactions aborted here: reason=coordinator for an Abort call, else "
                       "the NO vote's reason.")
                 .Register(r)),
      votes(prometheus::BuildCounter()
                .Name("dtx_votes_total")
                .Help("Prepare votes sent.")
                .Register(r)),
      vote_yes(votes.Add({{"vote", "yes"}})),
      vote_no(votes.Add({{"vote", "no"}})),
      vote_read_only(votes.Add({{"vote", "read_only"}})),
      abort_by_coordinator(aborts.Add({{"reason", "coordinator"}})),
      in_doubt(PlainGauge(r, "dtx_in_doubt", "Prepared transactions without a known outcome.")),
      in_doubt_oldest_age(PlainGauge(r, "dtx_in_doubt_oldest_age_seconds",
                                     "Age of the oldest in-doubt transaction (0: none).")),
      carried_forward(prometheus::BuildCounter()
                          .Name("dtx_carried_forward_total")
                          .Help(node::kCarriedForwardHelp)
                          .Register(r)
                          .Add({})),
      store_waits(prometheus::BuildCounter()
                      .Name("dtx_store_read_waits_total")
                      .Help("Reads and Prepares that waited for keys to be read from the disk "
                            "by the store reader thread.")
                      .Register(r)
                      .Add({})),
      store_read_backlog(PlainGauge(r, "dtx_store_read_backlog_keys",
                                    "Keys waiting to be read from the disk by the store reader.")),
      lock_table(PlainGauge(r, "dtx_lock_table_entries", "Keys in the lock table.")),
      epoch(PlainGauge(r, "dtx_epoch", "The participant's epoch.")),
      heartbeat_age(prometheus::BuildGauge()
                        .Name("dtx_heartbeat_age_seconds")
                        .Help("Seconds since this coordinator was last heard from.")
                        .Register(r)),
      suspected(prometheus::BuildGauge()
                    .Name("dtx_peer_suspected")
                    .Help("1 if this coordinator is suspected.")
                    .Register(r)),
      wal(r) {
  prometheus::BuildGauge()
      .Name("dtx_role")
      .Help("1 for the node's current role.")
      .Register(r)
      .Add({{"role", "participant"}})
      .Set(1);
  for (AbortReason a :
       {AbortReason::kConflict, AbortReason::kParticipantUnavailable, AbortReason::kTimeout,
        AbortReason::kClientAbort, AbortReason::kCoordinatorFailover}) {
    abort_by_reason[static_cast<int>(a)] = &aborts.Add({{"reason", AbortReasonName(a)}});
  }
}

ParticipantMetrics::PeerGauges& ParticipantMetrics::Peer(const std::string& peer) {
  auto it = peers.find(peer);
  if (it == peers.end()) {
    it = peers
             .emplace(peer, PeerGauges{.heartbeat_age = &heartbeat_age.Add({{"peer", peer}}),
                                       .suspected = &suspected.Add({{"peer", peer}})})
             .first;
  }
  return it->second;
}

Runtime::Impl::Impl(EventLoop* loop, RuntimeOptions options)
    : loop_(loop),
      options_(std::move(options)),
      node_(loop, node::NodeOptionsOf(options_)),
      policy_(options_.secure || options_.security.tls(), options_.coordinator_peers),
      tracing_(node_.tracing()),
      trace_(node_.trace()),
      wal_(loop, "WAL") {}

Result<std::unique_ptr<Runtime>> Runtime::Start(EventLoop* loop, RuntimeOptions options) {
  auto impl = node::StartImpl<Impl>(loop, std::move(options));
  if (!impl.ok()) return impl.status();
  return std::unique_ptr<Runtime>(new Runtime(std::move(*impl)));
}

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Runtime::~Runtime() = default;
void Runtime::Shutdown() { impl_->Shutdown(); }
std::string Runtime::address() const { return impl_->listeners_.client; }
std::string Runtime::metrics_address() const { return impl_->node_.metrics_address(); }
std::string Runtime::admin_address() const { return impl_->listeners_.admin; }
std::string Runtime::peer_address() const { return impl_->listeners_.peer; }

// ---------------------------------------------------------------------------
// The driver's world

class Runtime::Impl::Glue final : public ParticipantIo, public ParticipantHooks {
 public:
  explicit Glue(Impl* rt) : rt_(rt) {}

  uint64_t NowMs() override { return rt_->NowMs(); }

  uint64_t Append(RecordType type, const std::string& payload, bool forced, const TxId& txid,
                  DurableFn on_durable) override {
    node::RecordLog::DurableFn durable;
    if (forced)
      durable = [this, f = std::move(on_durable)](wal::Lsn lsn, bool more) {
        if (!rt_->shut_down_) f(lsn, more);
      };
    // An ABORT is traced `synced` too; WAL flusher thread: the ring is thread-safe.
    node::RecordLog::SyncedFn on_synced;
    if (rt_->tracing_ && type != RecordType::kEpoch)
      on_synced = [this, txid] { rt_->trace_.Record(txid, obs::span::kSynced); };
    return rt_->wal_.Append(static_cast<uint8_t>(type), payload, std::move(durable),
                            std::move(on_synced));
  }

  void QueryDecision(
      const std::string& to, const rpc::TxId& txid, const std::string& fingerprint,
      const rpc::Attempt& attempt, int timeout_ms,
      std::function<void(const RpcStatus&, const rpc::Decision::type&)> done) override {
    std::weak_ptr<int> alive = rt_->alive_;
    rt_->StubFor(to).QueryDecision(
        txid, fingerprint, attempt, timeout_ms,
        [this, alive, done = std::move(done)](const RpcStatus& s, const rpc::Decision::type& d) {
          if (alive.expired() || rt_->shut_down_) return;
          done(s, d);
        });
  }
  void GetStatus(const std::string& to, int timeout_ms,
                 std::function<void(const RpcStatus&, const rpc::NodeStatus&)> done) override {
    std::weak_ptr<int> alive = rt_->alive_;
    rt_->StubFor(to).GetStatus(timeout_ms, [this, alive, done = std::move(done)](
                                               const RpcStatus& s, const rpc::NodeStatus& st) {
      if (alive.expired() || rt_->shut_down_) return;
      done(s, st);
    });
  }
  void FlushSends() override { rt_->loop_->RunTurnEndNow(); }
  void FailStop(const std::string& why) override { node::FailStop(why); }

  bool tracing() const override { return rt_->tracing_; }
  void Trace(const TxId& txid, const char* event, std::string_view detail) override {
    rt_->trace_.Record(txid, event, detail);
  }
  void Note(NoteLevel level, const std::string& text) override {
    switch (level) {
      case NoteLevel::kDebug: DTX_LOG_DEBUG("{}", text); break;
      case NoteLevel::kInfo: DTX_LOG_INFO("{}", text); break;
      case NoteLevel::kWarn: DTX_LOG_WARN("{}", text); break;
    }
  }
  uint64_t SteadyNs() override { return participant::SteadyNs(); }
  void Answered(Reply::Kind kind, uint64_t elapsed_ns) override {
    ParticipantMetrics& m = rt_->metrics_;
    const double seconds = static_cast<double>(elapsed_ns) * 1e-9;
    if (kind == Reply::Kind::kRead) m.read.Observe(seconds);
    if (kind == Reply::Kind::kPrepare) m.prepare.Observe(seconds);
    if (kind == Reply::Kind::kCommit) m.commit.Observe(seconds);
  }
  void Voted(Vote vote, std::optional<AbortReason> reason) override {
    ParticipantMetrics& m = rt_->metrics_;
    (vote == Vote::kYes  ? m.vote_yes
     : vote == Vote::kNo ? m.vote_no
                         : m.vote_read_only)
        .Increment();
    const int r = reason ? static_cast<int>(*reason) : 0;
    if (r >= 1 && r <= 5 && m.abort_by_reason[r] != nullptr) m.abort_by_reason[r]->Increment();
  }
  void CommitAcked() override { rt_->metrics_.commits.Increment(); }
  void AbortAcked() override { rt_->metrics_.abort_by_coordinator.Increment(); }
  void UnmatchedReply(Token token) override {
    DTX_LOG_ERROR("the core answered unknown or already answered token {}", token);
  }

 private:
  Impl* rt_;
};

Status Runtime::Impl::Init() {
  start_ms_ = loop_->NowMs();
  const std::filesystem::path dir(options_.dir);
  std::error_code ec;
  std::filesystem::create_directories(dir / "data", ec);
  if (ec) return Status::IOError("creating " + (dir / "data").string() + ": " + ec.message());
  auto disk = node::DiskGuard::Open(options_.dir, options_.disk_free_min_bytes,
                                    options_.disk_ballast_bytes);
  if (!disk.ok()) return disk.status();
  disk_ = std::move(*disk);

  auto level = LevelStore::Open((dir / "data").string());
  if (!level.ok()) return level.status();
  level_ = std::move(level.value());
  async_ = std::make_unique<AsyncStore>(
      level_.get(), [this](std::function<void()> fn) { loop_->Post(alive_.Guard(std::move(fn))); },
      [](const Status& s) {
        // Like a failed WAL sync: the core answered these commits and let
        // their locks go; what the store holds no longer follows the WAL.
        FailStop("applying committed writes to the store failed: " + s.ToString());
      },
      level_.get());
  store_ = std::make_unique<FailpointStore>(async_.get());
  core_ = std::make_unique<Core>(options_.core, store_.get());
  glue_ = std::make_unique<Glue>(this);
  driver_ = std::make_unique<ParticipantDriver>(
      ParticipantDriverOptions{.name = options_.name,
                               .coordinator = options_.coordinator,
                               .coordinators = options_.coordinators},
      core_.get(), glue_.get(), glue_.get());
  DTX_RETURN_IF_ERROR(RestoreAndReplay());
  store_->set_live();
  async_->Start();
  CoreStats st = core_->stats();
  DTX_LOG_INFO(
      "recovered: {} records replayed (from checkpoint lsn={}, retain_from={}), epoch={}, "
      "commit_counter={}, in_doubt={}, inferred_aborts={}",
      replayed_, last_checkpoint_.lsn, last_checkpoint_.retain_from, st.epoch, st.commit_counter,
      st.in_flight, st.replay_inferred_aborts);
  last_checkpoint_ms_ = NowMs();
  driver_->Start();  // notes the transactions in doubt; the first decision queries

  auto handlers = std::make_shared<node::HandlerTarget<Impl>>(this, &node_, &policy_);
  auto bound = node::ServeListeners(
      &node_,
      node::ListenerOptionsOf(options_, policy_.secure(),
                              "Prepare, Commit, Abort, AdoptEpoch and SetFailpoint"),
      node::ListenerFactories{
          .client = node::HandlerFactory<rpc::ParticipantAsyncProcessor, ClientHandler>(handlers),
          .peer = node::HandlerFactory<rpc::ParticipantPeerAsyncProcessor, PeerHandler>(handlers),
          .admin = node::AdminHandler<Impl>::Factory(handlers, rpc::NodeRole::PARTICIPANT)},
      handlers);
  if (!bound.ok()) return bound.status();
  listeners_ = std::move(*bound);
  node_.RunEvery(kTickIntervalMs, [this] {
    driver_->Tick();
    CheckDisk();
    MaybeCheckpoint();
    UpdateMetrics();
  });
  UpdateMetrics();
  DTX_RETURN_IF_ERROR(node_.StartMetrics());
  DTX_LOG_INFO("serving {} (dir {}, coordinator {})", listeners_.Describe(), options_.dir,
               options_.coordinator);
  return Status::OK();
}

void Runtime::Impl::UpdateMetrics() {
  CoreStats st = core_->stats();
  metrics_.lock_table.Set(static_cast<double>(st.locked_keys));
  metrics_.epoch.Set(static_cast<double>(st.epoch));
  metrics_.in_doubt.Set(static_cast<double>(st.in_doubt));
  obs::AdvanceCounter(metrics_.carried_forward, metrics_.carried_forward_seen,
                      st.prepares_relogged);
  obs::AdvanceCounter(metrics_.store_waits, metrics_.store_waits_seen,
                      reads_waited_ + prepares_waited_);
  metrics_.store_read_backlog.Set(static_cast<double>(async_->read_backlog_keys()));
  disk_metrics_.Update(*disk_);
  metrics_.wal.Update(wal_.log().stats());
  node_.UpdateMetrics();  // the listeners' (node/listener_metrics.h)
  if (metrics_ticks_++ % kMetricsScanEveryTicks != 0) return;
  uint64_t oldest_ms = 0;
  if (st.in_doubt != 0) {
    for (const InDoubtInfo& t : core_->ListInDoubt(NowMs()))
      oldest_ms = std::max<uint64_t>(oldest_ms, t.age_ms);
  }
  metrics_.in_doubt_oldest_age.Set(static_cast<double>(oldest_ms) * 1e-3);
  for (const auto& [address, seen] : driver_->coordinators_seen()) {
    const uint64_t age = NowMs() - seen.heard_ms;
    ParticipantMetrics::PeerGauges& g = metrics_.Peer(address);
    g.heartbeat_age->Set(static_cast<double>(age) * 1e-3);
    g.suspected->Set(age >= options_.coordinator_suspect_after_ms ? 1 : 0);
  }
}

Status Runtime::Impl::RestoreAndReplay() {
  auto cp = level_->ReadCheckpoint();
  if (!cp.ok()) return cp.status();
  if (cp->has_value()) {
    last_checkpoint_ = **cp;
    core_->RestoreCheckpoint(last_checkpoint_);
    last_checkpoint_.outcomes.clear();  // only its LSNs are used from here on
  }
  checkpoint_stats_.lsn = last_checkpoint_.lsn;
  checkpoint_stats_.retain_from = last_checkpoint_.retain_from;
  wal::Lsn first = 0;
  level_->BeginReplay();
  wal::Options wal_options = options_.wal;
  // Flusher thread: Histogram::Observe is thread-safe; metrics_ outlives the
  // Log (wal_ is closed in the destructor before the members go).
  metrics_.wal.Hook(wal_options);
  Status opened = wal_.Open(wal_options, (std::filesystem::path(options_.dir) / "wal").string(),
                            [this, &first](wal::Lsn lsn, uint8_t type, std::string_view payload) {
                              if (first == 0) first = lsn;
                              ++replayed_;
                              return core_->Replay(lsn, type, payload);
                            });
  if (!opened.ok()) {
    return opened.IsCorruption() ? Status::Corruption("WAL: " + opened.message()) : opened;
  }
  DTX_RETURN_IF_ERROR(level_->EndReplay());
  const wal::Lsn last = wal_.log().last_lsn();
  // The checkpoint vouches for records below its lsn and needs those from
  // retain_from on: a WAL that ends before the one or starts after the
  // other is not the WAL this store was checkpointed with.
  if (last_checkpoint_.lsn > last + 1) {
    return Status::Corruption("checkpoint covers the WAL up to LSN " +
                              std::to_string(last_checkpoint_.lsn - 1) +
                              " but the WAL ends at LSN " + std::to_string(last));
  }
  if (last_checkpoint_.retain_from != 0 && last_checkpoint_.retain_from <= last &&
      (first == 0 || first > last_checkpoint_.retain_from)) {
    return Status::Corruption("checkpoint needs WAL records from LSN " +
                              std::to_string(last_checkpoint_.retain_from) +
                              " but the WAL starts at LSN " + std::to_string(first));
  }
  core_->FinishRecovery(NowMs(), last);
  return Status::OK();
}

Runtime::Impl::~Impl() {
  Shutdown();
  // The applies still queued are written (the shutdown checkpoint below
  // covers them), and a checkpoint queued is written too.
  if (async_ != nullptr) async_->Stop();
  alive_.Expire();
  if (options_.checkpoint_on_shutdown && core_ != nullptr && level_ != nullptr && wal_.is_open()) {
    // Everything the core applied is in LevelDB: make it the restart point.
    // Records still queued in the WAL are above it (not yet reported durable).
    std::optional<Checkpoint> cp = core_->TakeCheckpoint();
    if (cp.has_value() && cp->lsn > last_checkpoint_.lsn) {
      Status s = level_->WriteCheckpoint(*cp);
      if (s.ok()) {
        Status t = wal_.log().TruncateBefore(cp->retain_from);
        DTX_LOG_INFO("shutdown checkpoint at lsn={} retain_from={}{}", cp->lsn, cp->retain_from,
                     t.ok() ? "" : " (truncation failed: " + t.ToString() + ")");
      } else {
        DTX_LOG_ERROR("shutdown checkpoint failed: {} (the next start replays from lsn={})",
                      s.ToString(), last_checkpoint_.lsn);
      }
    }
  }
  wal_.Close();  // syncs what is queued; the notices of those records are dropped
  driver_.reset();
  core_.reset();
  store_.reset();
  async_.reset();
  level_.reset();
}

void Runtime::Impl::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  node_.Shutdown();                         // metrics endpoint, handler, tick, server
  if (driver_ != nullptr) driver_->Stop();  // the calls owed an answer are dropped
  for (auto& [addr, stub] : stubs_) stub.channel()->Close();
}

// ---------------------------------------------------------------------------
// Checkpoints

void Runtime::Impl::CheckDisk() {
  if (disk_ticks_++ % kDiskCheckEveryTicks != 0) return;
  if (disk_->Check() && disk_->low()) MaybeCheckpoint(/*force=*/true);
}

void Runtime::Impl::MaybeCheckpoint(bool force) {
  if (checkpoint_in_flight_ || shut_down_) return;
  const uint64_t now = NowMs();
  const wal::Lsn last = wal_.log().last_lsn();
  const bool by_count = options_.checkpoint_interval_records != 0 &&
                        last + 1 >= last_checkpoint_.lsn + options_.checkpoint_interval_records;
  const bool by_time = options_.checkpoint_interval_ms != 0 &&
                       now - last_checkpoint_ms_ >= options_.checkpoint_interval_ms;
  if (!force && !by_count && !by_time) return;
  std::optional<Checkpoint> cp = core_->TakeCheckpoint();
  if (!cp.has_value()) return;
  if (cp->lsn <= last_checkpoint_.lsn && cp->retain_from <= last_checkpoint_.retain_from) {
    last_checkpoint_ms_ = now;  // nothing new: look again after the interval
    return;
  }
  DTX_CHECK(cp->retain_from >= last_checkpoint_.retain_from);
  checkpoint_in_flight_ = true;
  // Carries the outcome table: moved, not copied (RunAfter takes a
  // copyable function).
  auto job = std::make_shared<Checkpoint>(std::move(*cp));
  async_->RunAfter([this, job] { WriteCheckpoint(job); });
}

void Runtime::Impl::WriteCheckpoint(const std::shared_ptr<const Checkpoint>& cp) {
  auto t0 = std::chrono::steady_clock::now();
  Status s = level_->WriteCheckpoint(*cp);
  // Like a failed WAL sync: what LevelDB holds can no longer be trusted to
  // be on disk, and the WAL below the old checkpoint is still there.
  if (!s.ok())
    FailStop("checkpoint at lsn=" + std::to_string(cp->lsn) + " failed: " + s.ToString());
  auto t1 = std::chrono::steady_clock::now();
  Status truncated = wal_.log().TruncateBefore(cp->retain_from);
  auto t2 = std::chrono::steady_clock::now();
  auto us = [](auto d) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  };
  loop_->Post(alive_.Guard([this, cp, write_us = us(t1 - t0), truncate_us = us(t2 - t1),
                            truncated] { OnCheckpointDone(*cp, write_us, truncate_us, truncated); }));
}

void Runtime::Impl::OnCheckpointDone(const Checkpoint& cp, uint64_t write_us, uint64_t truncate_us,
                                     const Status& truncated) {
  checkpoint_in_flight_ = false;
  last_checkpoint_ = cp;
  last_checkpoint_.outcomes.clear();  // only its LSNs are used here; the core holds the outcomes
  last_checkpoint_ms_ = NowMs();
  ++checkpoint_stats_.taken;
  checkpoint_stats_.lsn = cp.lsn;
  checkpoint_stats_.retain_from = cp.retain_from;
  checkpoint_stats_.last_write_us = write_us;
  checkpoint_stats_.last_truncate_us = truncate_us;
  if (!truncated.ok()) {
    // Safe (the segments stay), but the log is no longer bounded: say so.
    ++checkpoint_stats_.truncate_errors;
    DTX_LOG_ERROR("WAL truncation below lsn={} failed: {}", cp.retain_from, truncated.ToString());
  }
  DTX_LOG_DEBUG("checkpoint lsn={} retain_from={} write={}us truncate={}us", cp.lsn, cp.retain_from,
                write_us, truncate_us);
}


CoordinatorPeerStub& Runtime::Impl::StubFor(const std::string& address) {
  auto it = stubs_.find(address);
  if (it != stubs_.end()) return it->second;
  if (stubs_.size() >= kCoordinatorChannelsMax && address != options_.coordinator) {
    return StubFor(options_.coordinator);
  }
  return stubs_
      .emplace(address,
               CoordinatorPeerStub(loop_, address,
                                   options_.security.ChannelTo(address, PrincipalKind::kCoordinator,
                                                               options_.coordinator_peers)))
      .first->second;
}

// ---------------------------------------------------------------------------
// The service: the driver's

void Runtime::Impl::Read(const std::string& key, std::function<void(const rpc::ReadResult&)> cob,
                         Fail fail) {
  // A key not in memory is read off the loop first (docs/design.md "The loop
  // never blocks"); past kReadBacklogKeysMax keys waiting for the disk, such
  // a read is refused rather than queued.
  if (!async_->InMemory(key)) {
    if (ReadsWaiting() >= kReadBacklogKeysMax) {
      ++overload_refusals_;
      fail(SheddingError(options_.name + ": overloaded: " + std::to_string(ReadsWaiting()) +
                             " reads wait for the disk (reads of keys not in memory are "
                             "refused past " +
                             std::to_string(kReadBacklogKeysMax) + "); retry later",
                         node::kOverloadRetryAfterMs));
      return;
    }
    std::vector<std::string_view> keys{key};
    if (async_->Warm(keys, [this, key, cob, fail] { ServeLateRead(key, cob, fail); })) {
      ++reads_waited_;
      return;
    }
  }
  ServeRead(key, std::move(cob), std::move(fail));
}

void Runtime::Impl::ServeRead(const std::string& key,
                              std::function<void(const rpc::ReadResult&)> cob, Fail fail) {
  const uint64_t serial = ++read_serial_;
  serving_read_ = serial;
  driver_->Read(
      key,
      [this, serial, key, cob = std::move(cob), fail](const rpc::ReadResult& r) {
        if (serving_read_ == serial || node_.ReplyRoom(node::kClientListener)) return cob(r);
        HoldRead(key, cob, fail);  // late, and no room: its value is dropped
      },
      fail);
  serving_read_ = 0;
}

void Runtime::Impl::ServeLateRead(const std::string& key,
                                  std::function<void(const rpc::ReadResult&)> cob, Fail fail) {
  if (held_reads_.empty() && node_.ReplyRoom(node::kClientListener)) {
    ServeRead(key, std::move(cob), std::move(fail));
  } else {
    HoldRead(key, std::move(cob), std::move(fail));
  }
}

void Runtime::Impl::HoldRead(const std::string& key,
                             std::function<void(const rpc::ReadResult&)> cob, Fail fail) {
  ++reads_held_;
  held_reads_.push_back(HeldRead{key, std::move(cob), std::move(fail)});
  ScheduleHeldReads();
}

void Runtime::Impl::ScheduleHeldReads() {
  if (held_retry_scheduled_ || held_reads_.empty()) return;
  held_retry_scheduled_ = true;
  loop_->RunAfter(kHeldReadRetryMs, alive_.Guard([this] {
    held_retry_scheduled_ = false;
    ServeHeldReads();
  }));
}

void Runtime::Impl::ServeHeldReads() {
  while (!held_reads_.empty() && node_.ReplyRoom(node::kClientListener)) {
    HeldRead r = std::move(held_reads_.front());
    held_reads_.pop_front();
    ServeRead(r.key, std::move(r.cob), std::move(r.fail));
  }
  ScheduleHeldReads();
}

std::vector<std::string> Runtime::Impl::StoreKeysOf(const rpc::PrepareRequest& req) {
  std::vector<std::string> keys;
  keys.reserve(req.reads.size() + req.writes.size());
  for (const auto& r : req.reads) keys.push_back(r.key);
  for (const auto& w : req.writes) keys.push_back(w.key);
  return keys;
}

bool Runtime::Impl::ReadsDisk(const rpc::PrepareRequest& req) const {
  for (const auto& r : req.reads) {
    if (!async_->InMemory(r.key)) return true;
  }
  for (const auto& w : req.writes) {
    if (!async_->InMemory(w.key)) return true;
  }
  return false;
}

bool Runtime::Impl::WarmForPrepare(const std::vector<std::string_view>& keys,
                                   std::function<void()> done) {
  if (!async_->Warm(keys, std::move(done))) return false;
  ++prepares_waited_;
  return true;
}

void Runtime::Impl::Prepare(const rpc::PrepareRequest& req,
                            std::function<void(const rpc::PrepareResponse&)> cob, Fail fail) {
  // Below the free-space watermark nothing new that writes is taken on
  // (a refused PREPARE aborts its attempt, which is always safe); reads,
  // read-only validation and the prepared transactions' COMMIT/ABORT go on.
  if (disk_->low() && !req.writes.empty()) {
    disk_->CountRefusal();
    fail(MakeDtxError(rpc::ErrorCode::UNAVAILABLE, options_.name + ": " + disk_->Describe()));
    return;
  }
  // The same for a store worker or a WAL far behind the loop: what is
  // prepared goes on, nothing new queues behind it (docs/design.md "The loop
  // never blocks"). A retry (is_retry) is let through: it may be owed an
  // outcome.
  if (!req.writes.empty() && !req.is_retry) {
    if (std::string why = Overloaded(); !why.empty()) {
      ++overload_refusals_;
      fail(SheddingError(options_.name + ": " + why, node::kOverloadRetryAfterMs));
      return;
    }
  }
  driver_->Prepare(req, std::move(cob), std::move(fail));
}

std::string Runtime::Impl::Overloaded() const {
  if (async_->backlog_bytes() > kStoreBacklogBytesMax) {
    return "overloaded: " + std::to_string(async_->backlog_bytes() >> 10) +
           " KiB of committed writes wait for the store (new transactions are refused past " +
           std::to_string(kStoreBacklogBytesMax >> 10) + " KiB); retry later";
  }
  return wal_.Backlog();
}

void Runtime::Impl::Commit(const rpc::TxId& txid, rpc::Epoch epoch, std::function<void()> cob,
                           Fail fail) {
  driver_->Commit(txid, epoch, std::move(cob), std::move(fail));
}

void Runtime::Impl::Abort(const rpc::TxId& txid, rpc::Epoch epoch, const rpc::Attempt& attempt,
                          std::function<void()> cob, Fail fail) {
  driver_->Abort(txid, epoch, attempt, std::move(cob), std::move(fail));
}

void Runtime::Impl::AdoptEpoch(rpc::Epoch epoch, const std::string& coordinator,
                               std::function<void()> cob, Fail fail) {
  driver_->AdoptEpoch(epoch, coordinator, std::move(cob), std::move(fail));
}

rpc::HeartbeatResponse Runtime::Impl::Heartbeat(const rpc::HeartbeatRequest& req) {
  return driver_->Heartbeat(req);
}

rpc::NodeStatus Runtime::Impl::GetStatus() const {
  CoreStats st = core_->stats();
  rpc::NodeStatus out;
  out.name = options_.name;
  out.role = rpc::NodeRole::PARTICIPANT;
  out.epoch = st.epoch;
  out.uptime_ms = static_cast<int64_t>(NowMs() - start_ms_);
  out.durable_lsn = static_cast<int64_t>(wal_.log().durable_lsn());
  out.in_flight = static_cast<int64_t>(st.in_flight);
  out.in_doubt = static_cast<int64_t>(st.in_doubt);
  rpc::PeerStatus coord;
  coord.name = "coordinator";
  coord.address = options_.coordinator;
  const uint64_t heard_ms = driver_->coordinator_heard_ms();
  coord.heartbeat_age_ms = heard_ms == 0 ? -1 : static_cast<int64_t>(NowMs() - heard_ms);
  coord.suspected = false;
  if (driver_->coordinators_seen().empty()) out.peers.push_back(coord);
  // Coordinators that send heartbeats: one entry each, with their role.
  for (const auto& [address, seen] : driver_->coordinators_seen()) {
    rpc::PeerStatus ps;
    ps.name = "coordinator (" + seen.role + ", epoch " + std::to_string(seen.epoch) + ")";
    ps.address = address;
    ps.heartbeat_age_ms = static_cast<int64_t>(NowMs() - seen.heard_ms);
    ps.suspected = NowMs() - seen.heard_ms >= options_.coordinator_suspect_after_ms;
    out.peers.push_back(std::move(ps));
  }
  wal::Stats ws = wal_.log().stats();
  std::map<std::string, int64_t> c = {
      {"prepares", static_cast<int64_t>(st.prepares)},
      {"votes_yes", static_cast<int64_t>(st.votes_yes)},
      {"votes_no", static_cast<int64_t>(st.votes_no)},
      {"votes_read_only", static_cast<int64_t>(st.votes_read_only)},
      {"commits", static_cast<int64_t>(st.commits)},
      {"store_batches", static_cast<int64_t>(st.store_batches)},
      {"aborts", static_cast<int64_t>(st.aborts)},
      {"read_timeouts", static_cast<int64_t>(st.read_timeouts)},
      {"parked_reads", static_cast<int64_t>(st.parked_reads)},
      {"locked_keys", static_cast<int64_t>(st.locked_keys)},
      {"decision_queries", static_cast<int64_t>(st.decision_queries)},
      {"stale_epoch_refusals", static_cast<int64_t>(st.stale_epoch_refusals)},
      {"commit_counter", static_cast<int64_t>(st.commit_counter)},
      {"replayed_records", static_cast<int64_t>(st.replayed_records)},
      {"forgotten_outcome_refusals", static_cast<int64_t>(st.forgotten_outcome_refusals)},
      {"txid_reused_refusals", static_cast<int64_t>(st.txid_reused_refusals)},
      {"attempts_restamped", static_cast<int64_t>(st.attempts_restamped)},
      {"stale_attempt_aborts", static_cast<int64_t>(st.stale_attempt_aborts)},
      {"prepares_behind_commit", static_cast<int64_t>(st.prepares_behind_commit)},
      {"prepares_relogged", static_cast<int64_t>(st.prepares_relogged)},
      {"prepares_waiting", static_cast<int64_t>(st.prepares_waiting)},
      {"stale_prepare_refusals", static_cast<int64_t>(st.stale_prepare_refusals)},
      {"forgotten_version", static_cast<int64_t>(st.forgotten_version)},
      {"wal_syncs", static_cast<int64_t>(ws.syncs)},
      {"wal_records_synced", static_cast<int64_t>(ws.records_synced)},
      {"wal_bytes_written", static_cast<int64_t>(ws.bytes_written)},
      {"wal_segments_deleted", static_cast<int64_t>(ws.segments_deleted)},
      {"checkpoints", static_cast<int64_t>(checkpoint_stats_.taken)},
      {"checkpoint_lsn", static_cast<int64_t>(checkpoint_stats_.lsn)},
      {"checkpoint_retain_from", static_cast<int64_t>(checkpoint_stats_.retain_from)},
      {"checkpoint_write_us", static_cast<int64_t>(checkpoint_stats_.last_write_us)},
      {"store_backlog_bytes", static_cast<int64_t>(async_->backlog_bytes())},
      {"store_backlog_batches", static_cast<int64_t>(async_->backlog_batches())},
      {"store_batches_written", static_cast<int64_t>(async_->batches_written())},
      {"store_read_backlog_keys", static_cast<int64_t>(async_->read_backlog_keys())},
      {"store_keys_warmed", static_cast<int64_t>(async_->keys_warmed())},
      {"reads_waited", static_cast<int64_t>(reads_waited_)},
      {"reads_held_for_reply_room", static_cast<int64_t>(held_reads_.size())},
      {"reads_held", static_cast<int64_t>(reads_held_)},
      {"prepares_waited", static_cast<int64_t>(prepares_waited_)},
      {"wal_queued_bytes", static_cast<int64_t>(wal_.log().queued_bytes())},
      {"overload_refusals", static_cast<int64_t>(overload_refusals_)},
  };
  disk_->AddStatusCounters(&c);
  if (node_.metrics_port() != 0) c["metrics_port"] = node_.metrics_port();
  out.__set_counters(c);
  out.__set_listeners(node::ListenerStatuses(node_));
  return out;
}

std::vector<rpc::InDoubtTx> Runtime::Impl::ListInDoubt() const { return driver_->ListInDoubt(); }

// ---------------------------------------------------------------------------
// Handler: the Thrift edge

namespace {
rpc::DtxError Unavailable() {
  return MakeDtxError(rpc::ErrorCode::UNAVAILABLE, "participant is shutting down");
}
}  // namespace

void ClientHandler::Read(std::function<void(const rpc::ReadResult&)> cob, ExnCob exn_cob,
                         const std::string& key) {
  if (target() == nullptr) return exn_cob(Delay(Unavailable()));
  target()->Read(key, std::move(cob), FailVia(std::move(exn_cob)));
}

void PeerHandler::Queue(std::vector<std::string> keys, std::function<void(Runtime::Impl*)> call,
                        Fail fail) {
  if (in_order_ == nullptr) {
    in_order_ = std::make_shared<InOrder>(
        [shared = shared()](const std::vector<std::string_view>& keys, std::function<void()> done) {
          Runtime::Impl* t = shared->target();
          return t != nullptr && t->WarmForPrepare(keys, std::move(done));
        });
  }
  in_order_->Queue(std::move(keys), [shared = shared(), call = std::move(call),
                                     fail = std::move(fail)] {
    Runtime::Impl* t = shared->target();
    if (t == nullptr) return fail(Unavailable());
    call(t);
  });
}

void PeerHandler::Prepare(std::function<void(const rpc::PrepareResponse&)> cob, ExnCob exn_cob,
                          const rpc::PrepareRequest& req) {
  if (!PermitCoordinator("Prepare", exn_cob)) return;
  if (target() == nullptr) return exn_cob(Delay(Unavailable()));
  if (InTurn() && !target()->ReadsDisk(req)) {
    return target()->Prepare(req, std::move(cob), FailVia(std::move(exn_cob)));
  }
  Fail fail = FailVia(std::move(exn_cob));
  Queue(
      Runtime::Impl::StoreKeysOf(req),
      [req, cob = std::move(cob), fail](Runtime::Impl* t) { t->Prepare(req, cob, fail); }, fail);
}

void PeerHandler::Commit(std::function<void()> cob, ExnCob exn_cob, const rpc::TxId& txid,
                         const rpc::Epoch epoch) {
  if (!PermitCoordinator("Commit", exn_cob)) return;
  if (target() == nullptr) return exn_cob(Delay(Unavailable()));
  InOrderOf(std::move(exn_cob), [txid, epoch, cob = std::move(cob)](Runtime::Impl* t, Fail fail) {
    t->Commit(txid, epoch, cob, std::move(fail));
  });
}

void PeerHandler::Abort(std::function<void()> cob, ExnCob exn_cob, const rpc::TxId& txid,
                        const rpc::Epoch epoch, const rpc::Attempt& attempt) {
  if (!PermitCoordinator("Abort", exn_cob)) return;
  if (target() == nullptr) return exn_cob(Delay(Unavailable()));
  InOrderOf(std::move(exn_cob),
            [txid, epoch, attempt, cob = std::move(cob)](Runtime::Impl* t, Fail fail) {
              t->Abort(txid, epoch, attempt, cob, std::move(fail));
            });
}

void PeerHandler::Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob, ExnCob exn_cob,
                            const rpc::HeartbeatRequest& req) {
  if (!Permit(policy().RequirePeerClaiming(caller(), PrincipalKind::kCoordinator, req.sender,
                                           "Heartbeat"),
              exn_cob)) {
    return;
  }
  if (target() == nullptr) {
    rpc::HeartbeatResponse r;
    r.__set_role(rpc::NodeRole::PARTICIPANT);
    return cob(r);
  }
  cob(target()->Heartbeat(req));
}

void PeerHandler::AdoptEpoch(std::function<void()> cob, ExnCob exn_cob, const rpc::Epoch epoch,
                             const std::string& coordinator) {
  if (!Permit(policy().RequirePeerClaiming(caller(), PrincipalKind::kCoordinator, coordinator,
                                           "AdoptEpoch"),
              exn_cob)) {
    return;
  }
  if (target() == nullptr) return exn_cob(Delay(Unavailable()));
  InOrderOf(std::move(exn_cob),
            [epoch, coordinator, cob = std::move(cob)](Runtime::Impl* t, Fail fail) {
              t->AdoptEpoch(epoch, coordinator, cob, std::move(fail));
            });
}

namespace {
rpc::NodeStatus StatusOf(const Runtime::Impl* target) {
  if (target == nullptr) {
    rpc::NodeStatus s;
    s.role = rpc::NodeRole::PARTICIPANT;
    return s;
  }
  return target->GetStatus();
}
}  // namespace

void ClientHandler::GetStatus(std::function<void(const rpc::NodeStatus&)> cob) {
  cob(StatusOf(target()));
}

void PeerHandler::GetStatus(std::function<void(const rpc::NodeStatus&)> cob) {
  cob(StatusOf(target()));
}

}  // namespace dtx::participant
