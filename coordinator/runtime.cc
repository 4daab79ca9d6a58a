#include "coordinator/runtime.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "CoordinatorPeer.h"
#include "common/event_loop.h"
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
#include "coordinator/admission.h"
#include "coordinator/driver.h"
#include "node/fail_stop.h"
#include "node/access.h"
#include "node/disk_guard.h"
#include "node/handler.h"
#include "node/listeners.h"
#include "node/node.h"
#include "node/wal_appender.h"
#include "common/wire.h"

namespace dtx::coordinator {
namespace {

// A Commit taken on under the admission limit: Done() (or, if its callbacks
// are dropped unanswered, the destructor) tells the Admission once.
class AdmissionTicket {
 public:
  AdmissionTicket(Admission* admission, int64_t received_us)
      : admission_(admission), received_us_(received_us) {}
  ~AdmissionTicket() { Done(); }
  AdmissionTicket(const AdmissionTicket&) = delete;
  AdmissionTicket& operator=(const AdmissionTicket&) = delete;
  void Done() {
    if (admission_ == nullptr) return;
    const auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                               std::chrono::steady_clock::now().time_since_epoch())
                                               .count());
    admission_->Done(now, now - static_cast<uint64_t>(received_us_));
    admission_ = nullptr;
  }

 private:
  Admission* admission_;
  int64_t received_us_;
};
// How often the core's Tick runs (timeouts, COMMIT re-sends).
constexpr uint64_t kTickIntervalMs = 10;
// The free-space watermark is checked every 100 ticks: once a second.
constexpr uint64_t kDiskCheckEveryTicks = 100;
// How often a pending WAL truncation is carried out.
constexpr uint64_t kTruncateIntervalMs = 1000;
}  // namespace

// The coordinator's metrics (names in docs/observability.md), in node_'s
// prometheus-cpp registry. Counters and histograms are updated where things
// happen (loop thread); gauges and the counters that follow the core's and the
// WAL's totals are set from the tick (loop thread). Every child the tick
// touches is created once and kept: Family::Add allocates.
struct CoordinatorMetrics {
  explicit CoordinatorMetrics(prometheus::Registry& r);
  // The heartbeat-age and suspected gauges of `peer`, created on first use.
  struct PeerGauges {
    prometheus::Gauge* heartbeat_age;  // seconds; -1 never heard
    prometheus::Gauge* suspected;      // 0 or 1
  };
  PeerGauges& Peer(const std::string& peer);

  prometheus::Counter& commits;
  prometheus::Family<prometheus::Counter>& aborts;  // reason: AbortReasonName()
  // index: AbortReason value; client_abort is never set here
  prometheus::Counter* abort_by_reason[6] = {};
  prometheus::Counter& outcomes_unknown;
  prometheus::Counter& carried_forward;              // open DECISIONs written again
  prometheus::Family<prometheus::Histogram>& phase;  // phase: prepare, decision, phase2, total
  prometheus::Histogram& prepare;
  prometheus::Histogram& decision;
  prometheus::Histogram& phase2;
  prometheus::Histogram& total;
  prometheus::Family<prometheus::Gauge>& role;
  std::map<std::string, prometheus::Gauge*> role_by_name;  // primary, backup, starting
  prometheus::Gauge& epoch;
  prometheus::Gauge& in_flight;
  prometheus::Family<prometheus::Gauge>& heartbeat_age;  // peer: address
  prometheus::Family<prometheus::Gauge>& suspected;
  // Configured participants and the peer coordinator: bounded by the config.
  std::map<std::string, PeerGauges> peers;
  obs::WalMetrics wal;  // common/wal_metrics.h
  // The core's counts at the last tick (loop thread), fed into the counters.
  struct CoreSeen {
    uint64_t commits = 0, conflict = 0, unavailable = 0, timeout = 0, failover = 0, unknown = 0;
    uint64_t carried_forward = 0;
  } seen;
};

struct Runtime::Impl {
  Impl(EventLoop* loop, RuntimeOptions options);
  ~Impl();
  Status Init();
  void Shutdown();

  // ---- the Coordinator service (called by Handler, loop thread) ----
  rpc::ShardMap GetShardMap() const;
  void Commit(const rpc::CommitRequest& req, std::function<void(const rpc::CommitResult&)> cob,
              std::function<void(const rpc::DtxError&)> fail);
  void QueryDecision(const rpc::TxId& txid, const std::string& fingerprint,
                     const rpc::Attempt& attempt, std::function<void(rpc::Decision::type)> cob,
                     std::function<void(const rpc::DtxError&)> fail);
  rpc::NodeStatus GetStatus() const;
  // A client's GetOutcome: read-only (coordinator/core.h RememberedOutcome).
  rpc::Outcome::type GetOutcome(const rpc::TxId& txid) const { return driver_->GetOutcome(txid); }
  // Admin ListInDoubt: a coordinator holds no in-doubt transactions of its
  // own (its open decisions show in GetStatus): always empty.
  std::vector<rpc::InDoubtTx> ListInDoubt() const { return {}; }
  // CoordinatorPeer (from the other coordinator).
  void Replicate(const rpc::ReplicateRequest& req,
                 std::function<void(const rpc::ReplicateResponse&)> cob,
                 std::function<void(const rpc::DtxError&)> fail);
  rpc::HeartbeatResponse Heartbeat(const rpc::HeartbeatRequest& req);

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
  // the decision log, the loop's clock, fail-stop, metrics and tracing.
  class Glue;

  void UpdateMetrics();
  // options_.wal plus the on_sync hook feeding the WAL histograms.
  wal::Options WalOptions();
  static int64_t PhaseNow();
  void NotePrepareSent(const TxId& txid);
  void NoteVote(const TxId& txid);
  void NoteDecisionReleased(const TxId& txid);
  // Sets prepare_us / decision_us from txid's timing and forgets it.
  void FillTimings(const TxId& txid, rpc::CommitResult& out);
  // "primary" (established), "starting" (a primary not yet established) or "backup".
  const char* RoleLabel() const { return NodeRoleName(ha_->node_role()); }
  ParticipantPeerStub& AdoptStubFor(const std::string& address);
  ParticipantPeerStub& StubFor(const std::string& address);
  uint64_t NowMs() const { return node_.NowMs(); }
  // Records a span event for txid when tracing is on (trace_events > 0).
  // `event` has static storage duration.
  void Trace(const TxId& txid, const char* event, std::string_view detail = {}) {
    node_.Trace(txid, event, detail);
  }

  EventLoop* loop_;
  RuntimeOptions options_;
  // Server, handler, timers, metrics endpoint, trace ring (node/node.h).
  node::Node node_;
  // Who may call what (node/access.h): the configured participants and peer.
  const node::AccessPolicy policy_;
  const bool tracing_;  // node_.tracing()
  // The adaptive limit on client Commits in flight (coordinator/admission.h).
  // Before driver_: the tickets in the driver's dropped callbacks report to
  // it when the driver goes.
  Admission admission_;
  std::unique_ptr<HaCore> ha_;
  // The decision log; its notices of a log replaced by ReloadLog are dropped.
  node::WalAppender wal_;
  std::unique_ptr<Glue> glue_;
  // The glue between ha_ and the world (coordinator/driver.h).
  std::unique_ptr<CoordinatorDriver> driver_;
  // The bound listeners; `peer` is this node's protocol address.
  node::ListenerAddresses listeners_;
  std::map<std::string, ParticipantPeerStub> stubs_;
  uint64_t start_ms_ = 0;
  bool shut_down_ = false;
  // The free-space watermark and ballast of options_.dir (node/disk_guard.h).
  std::unique_ptr<node::DiskGuard> disk_;
  uint64_t disk_ticks_ = 0;
  // Commits refused as overloaded: the WAL behind (Backlog) or past the
  // admission limit.
  uint64_t overload_refusals_ = 0;
  // While Init runs: forced records appended (the EPOCH of a fresh log),
  // waited for before the node serves, so "GetStatus answers" means "ready".
  bool initializing_ = true;
  // (lsn, the driver's durability notice) of each.
  std::vector<std::pair<wal::Lsn, std::function<void(uint64_t lsn)>>> init_forced_;
  // ---- high availability (the logic is in ha_) ----
  std::map<std::string, ParticipantPeerStub> adopt_stubs_;
  // Participants that do not serve ParticipantPeer.Heartbeat (older or
  // stand-in participants): probed with GetStatus instead.
  std::set<std::string> heartbeat_unsupported_;
  std::unique_ptr<CoordinatorPeerStub> peer_stub_;
  // Commits being measured, by txid; erased when the result is delivered.
  std::unordered_map<TxId, PhaseTiming, TxIdHash> timings_;
  // Decided transactions whose END is not yet logged: decision_released
  // (PhaseNow) by txid, for dtx_phase_seconds{phase="phase2"}. Bounded by
  // kPhaseTimingsMax.
  std::unordered_map<TxId, int64_t, TxIdHash> phase2_start_;
  // In node_'s registry, which outlives it; read by scrapes only until
  // Shutdown() stops the endpoint.
  CoordinatorMetrics metrics_{node_.registry()};
  node::DiskMetrics disk_metrics_{node_.registry()};
};

namespace {

// The Thrift edge, one object per connection: converts and forwards to the
// Runtime. A call after Shutdown (detached) answers UNAVAILABLE.
// ClientHandler serves the client listener (Coordinator: GetShardMap,
// Commit, GetOutcome, GetStatus), PeerHandler the peer listener
// (CoordinatorPeer): Replicate and Heartbeat are taken only from the
// configured peer coordinator speaking for itself, QueryDecision from a
// configured participant or that coordinator (node/access.h). The admin
// calls are on the admin listener (node/handler.h AdminHandler). Loop thread
// only.
class ClientHandler final : public node::Handler<rpc::CoordinatorCobSvIf, Runtime::Impl> {
 public:
  using node::Handler<rpc::CoordinatorCobSvIf, Runtime::Impl>::Handler;

  void GetShardMap(std::function<void(const rpc::ShardMap&)> cob, ExnCob exn_cob) override;
  void Commit(std::function<void(const rpc::CommitResult&)> cob, ExnCob exn_cob,
              const rpc::CommitRequest& req) override;
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override;
  void GetOutcome(std::function<void(const rpc::Outcome::type&)> cob, ExnCob exn_cob,
                  const rpc::TxId& txid) override;
};

class PeerHandler final : public node::Handler<rpc::CoordinatorPeerCobSvIf, Runtime::Impl> {
 public:
  using node::Handler<rpc::CoordinatorPeerCobSvIf, Runtime::Impl>::Handler;

  void QueryDecision(std::function<void(const rpc::Decision::type&)> cob, ExnCob exn_cob,
                     const rpc::TxId& txid, const std::string& fingerprint,
                     const rpc::Attempt& attempt) override;
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override;
  void Replicate(std::function<void(const rpc::ReplicateResponse&)> cob, ExnCob exn_cob,
                 const rpc::ReplicateRequest& req) override;
  void Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob, ExnCob exn_cob,
                 const rpc::HeartbeatRequest& req) override;
};

}  // namespace

// ---- the driver's world: stubs, decision log, loop, metrics, tracing --------------------

class Runtime::Impl::Glue final : public CoordinatorIo, public CoordinatorHooks {
 public:
  explicit Glue(Impl* rt) : rt_(rt) {}

  uint64_t NowMs() override { return rt_->NowMs(); }

  void Prepare(const std::string& to, const rpc::PrepareRequest& req, int timeout_ms,
               std::function<void(const RpcStatus&, const rpc::PrepareResponse&)> done) override {
    rt_->StubFor(to).Prepare(req, timeout_ms, std::move(done));
  }
  void Commit(const std::string& to, const rpc::TxId& txid, rpc::Epoch epoch, int timeout_ms,
              Done done) override {
    rt_->StubFor(to).Commit(txid, epoch, timeout_ms, std::move(done));
  }
  void Abort(const std::string& to, const rpc::TxId& txid, rpc::Epoch epoch,
             const rpc::Attempt& attempt, int timeout_ms, Done done) override {
    rt_->StubFor(to).Abort(txid, epoch, attempt, timeout_ms, std::move(done));
  }
  void ProbeParticipant(const std::string& to, const rpc::HeartbeatRequest& req, int timeout_ms,
                        Done done) override {
    Impl* rt = rt_;
    auto wrapped = [rt, to, done = std::move(done)](const RpcStatus& st) {
      if (rt->shut_down_) return;
      if (!st.ok() && st.code() == Status::Code::kNotSupported &&
          rt->heartbeat_unsupported_.insert(to).second) {
        DTX_LOG_INFO("participant {} does not serve Heartbeat; probing it with GetStatus", to);
      }
      done(st);
    };
    if (rt_->heartbeat_unsupported_.count(to) != 0) {
      rt_->StubFor(to).GetStatus(
          timeout_ms, [wrapped](const RpcStatus& st, const rpc::NodeStatus&) { wrapped(st); });
    } else {
      // On the AdoptEpoch channel: a participant without the service closes
      // that connection, not the one carrying 2PC.
      rt_->AdoptStubFor(to).Heartbeat(
          req, timeout_ms,
          [wrapped](const RpcStatus& st, const rpc::HeartbeatResponse&) { wrapped(st); });
    }
  }
  void AdoptEpoch(const std::string& to, rpc::Epoch epoch, const std::string& coordinator,
                  int timeout_ms, AdoptDone done) override {
    rt_->AdoptStubFor(to).AdoptEpoch(
        epoch, coordinator, timeout_ms,
        [done = std::move(done)](const RpcStatus& st,
                                 const ParticipantPeerStub::AdoptEpochRefusal& r) {
          done(st, r.current_epoch, r.owner);
        });
  }
  void PeerHeartbeat(
      const rpc::HeartbeatRequest& req, int timeout_ms,
      std::function<void(const RpcStatus&, const rpc::HeartbeatResponse&)> done) override {
    if (rt_->peer_stub_) rt_->peer_stub_->Heartbeat(req, timeout_ms, std::move(done));
  }
  void PeerReplicate(
      const rpc::ReplicateRequest& req, int timeout_ms,
      std::function<void(const RpcStatus&, const rpc::ReplicateResponse&)> done) override {
    if (rt_->peer_stub_) rt_->peer_stub_->Replicate(req, timeout_ms, std::move(done));
  }

  // The decision log is node's WalAppender: a failed append or sync is
  // fail-stop there, and the notices of a log replaced by ReloadLog are
  // dropped (node/wal_appender.h).
  uint64_t Append(RecordType type, const std::string& payload, bool forced,
                  std::function<void(uint64_t lsn)> on_durable) override {
    // Only a forced record's durability is news for the driver.
    node::RecordLog::DurableFn notice;
    if (forced) notice = [on_durable](wal::Lsn lsn, bool /*more*/) { on_durable(lsn); };
    const wal::Lsn lsn = rt_->wal_.Append(static_cast<uint8_t>(type), payload, std::move(notice));
    if (rt_->initializing_ && forced) rt_->init_forced_.emplace_back(lsn, std::move(on_durable));
    return lsn;
  }
  uint64_t durable_lsn() override { return rt_->wal_.log().durable_lsn(); }
  Status ReloadLog(const ReplayFn& replay) override {
    return rt_->wal_.Open(rt_->WalOptions(), rt_->options_.dir + "/wal",
                          [&replay](wal::Lsn lsn, uint8_t type, std::string_view payload) {
                            return replay(lsn, type, payload);
                          });
  }
  Status TruncateBefore(uint64_t lsn) override { return rt_->wal_.log().TruncateBefore(lsn); }
  void FlushSends() override { rt_->loop_->RunTurnEndNow(); }
  void FailStop(const std::string& why) override { node::FailStop(why); }

  bool tracing() const override { return rt_->tracing_; }
  void Trace(const TxId& txid, const char* event, std::string_view detail) override {
    rt_->Trace(txid, event, detail);
  }
  void Note(const HaNote& n) override {
    if (n.warn) {
      DTX_LOG_WARN("{}", n.text);
    } else {
      DTX_LOG_INFO("{}", n.text);
    }
  }
  void PrepareSent(const TxId& txid) override { rt_->NotePrepareSent(txid); }
  void VoteIn(const TxId& txid) override { rt_->NoteVote(txid); }
  void DecisionAppended(const TxId& txid) override {
    if (auto t = rt_->timings_.find(txid); t != rt_->timings_.end())
      t->second.decision_appended = PhaseNow();
  }
  void DecisionReleased(const TxId& txid) override { rt_->NoteDecisionReleased(txid); }
  void EndAppended(const TxId& txid) override {
    if (auto it = rt_->phase2_start_.find(txid); it != rt_->phase2_start_.end()) {
      rt_->metrics_.phase2.Observe(static_cast<double>(PhaseNow() - it->second) * 1e-6);
      rt_->phase2_start_.erase(it);
    }
  }
  void LogReloaded() override { rt_->timings_.clear(); }
  void UnmatchedReply(RequestToken token) override {
    DTX_LOG_ERROR("the core answered request token {} it did not owe an answer", token);
  }

 private:
  Impl* rt_;
};

// ---- metrics --------------------------------------------------------------------------

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& r)
    : commits(prometheus::BuildCounter()
                  .Name("dtx_commits_total")
                  .Help("Transactions committed (2PC, one-phase and read-only).")
                  .Register(r)
                  .Add({})),
      aborts(prometheus::BuildCounter()
                 .Name("dtx_aborts_total")
                 .Help("Transactions aborted, by reason.")
                 .Register(r)),
      outcomes_unknown(prometheus::BuildCounter()
                           .Name("dtx_outcomes_unknown_total")
                           .Help("Commit requests answered UNKNOWN (e.g. on a step-down).")
                           .Register(r)
                           .Add({})),
      carried_forward(prometheus::BuildCounter()
                          .Name("dtx_carried_forward_total")
                          .Help(node::kCarriedForwardHelp)
                          .Register(r)
                          .Add({})),
      phase(prometheus::BuildHistogram()
                .Name("dtx_phase_seconds")
                .Help("Commit phases: prepare (first PREPARE sent to last vote), decision "
                      "(DECISION appended to commit point), phase2 (commit point to END "
                      "appended), total (request received to result sent).")
                .Register(r)),
      prepare(phase.Add({{"phase", "prepare"}}, obs::LatencyBucketsSeconds())),
      decision(phase.Add({{"phase", "decision"}}, obs::LatencyBucketsSeconds())),
      phase2(phase.Add({{"phase", "phase2"}}, obs::LatencyBucketsSeconds())),
      total(phase.Add({{"phase", "total"}}, obs::LatencyBucketsSeconds())),
      role(prometheus::BuildGauge()
               .Name("dtx_role")
               .Help("1 for the node's current role (starting: a primary not yet established).")
               .Register(r)),
      epoch(prometheus::BuildGauge()
                .Name("dtx_epoch")
                .Help("The coordinator's epoch.")
                .Register(r)
                .Add({})),
      in_flight(prometheus::BuildGauge()
                    .Name("dtx_in_flight")
                    .Help("Transactions in the core (undecided or committing).")
                    .Register(r)
                    .Add({})),
      heartbeat_age(prometheus::BuildGauge()
                        .Name("dtx_heartbeat_age_seconds")
                        .Help("Seconds since this peer last answered a heartbeat (-1: never).")
                        .Register(r)),
      suspected(prometheus::BuildGauge()
                    .Name("dtx_peer_suspected")
                    .Help("1 if this peer is suspected.")
                    .Register(r)),
      wal(r) {
  for (AbortReason a : {AbortReason::kConflict, AbortReason::kParticipantUnavailable,
                        AbortReason::kTimeout, AbortReason::kCoordinatorFailover}) {
    abort_by_reason[static_cast<int>(a)] = &aborts.Add({{"reason", AbortReasonName(a)}});
  }
  for (const char* x : {"primary", "backup", "starting"}) {
    role_by_name[x] = &role.Add({{"role", x}});
  }
}

CoordinatorMetrics::PeerGauges& CoordinatorMetrics::Peer(const std::string& peer) {
  auto it = peers.find(peer);
  if (it == peers.end()) {
    it = peers
             .emplace(peer, PeerGauges{.heartbeat_age = &heartbeat_age.Add({{"peer", peer}}),
                                       .suspected = &suspected.Add({{"peer", peer}})})
             .first;
  }
  return it->second;
}

void Runtime::Impl::UpdateMetrics() {
  const std::string label = RoleLabel();
  for (const auto& [name, gauge] : metrics_.role_by_name) gauge->Set(label == name ? 1 : 0);
  metrics_.epoch.Set(static_cast<double>(ha_->epoch()));
  metrics_.in_flight.Set(static_cast<double>(ha_->core().in_flight()));
  disk_metrics_.Update(*disk_);
  const uint64_t now = NowMs();
  auto age = [](int64_t ms) { return ms < 0 ? -1.0 : static_cast<double>(ms) * 1e-3; };
  for (const std::string& address : options_.participants) {
    const FailureDetector* fd = ha_->participant_detector(address);
    if (fd == nullptr) continue;
    CoordinatorMetrics::PeerGauges& g = metrics_.Peer(address);
    g.heartbeat_age->Set(age(fd->AgeMs(now)));
    g.suspected->Set(ha_->participant_suspected(address) ? 1 : 0);
  }
  if (peer_stub_) {
    CoordinatorMetrics::PeerGauges& g = metrics_.Peer(options_.ha.peer);
    g.heartbeat_age->Set(age(ha_->peer_detector().AgeMs(now)));
    g.suspected->Set(ha_->peer_suspected() ? 1 : 0);
  }
  // Outcome counters follow the core's own counts (a retried Commit is
  // answered again but counted once). A rebuilt core (step-down) starts
  // again from 0: its counts are then new.
  const CoreStats& cs = ha_->core().stats();
  CoordinatorMetrics::CoreSeen& seen = metrics_.seen;
  auto* by_reason = metrics_.abort_by_reason;
  obs::AdvanceCounter(metrics_.commits, seen.commits,
                      cs.commits + cs.commits_one_phase + cs.commits_read_only);
  obs::AdvanceCounter(*by_reason[static_cast<int>(AbortReason::kConflict)], seen.conflict,
                      cs.aborts_conflict);
  obs::AdvanceCounter(*by_reason[static_cast<int>(AbortReason::kParticipantUnavailable)],
                      seen.unavailable, cs.aborts_unavailable);
  obs::AdvanceCounter(*by_reason[static_cast<int>(AbortReason::kTimeout)], seen.timeout,
                      cs.aborts_timeout);
  obs::AdvanceCounter(*by_reason[static_cast<int>(AbortReason::kCoordinatorFailover)],
                      seen.failover, cs.aborts_failover);
  obs::AdvanceCounter(metrics_.outcomes_unknown, seen.unknown, cs.outcomes_unknown);
  obs::AdvanceCounter(metrics_.carried_forward, seen.carried_forward, cs.decisions_relogged);
  if (wal_.is_open()) metrics_.wal.Update(wal_.log().stats());
  node_.UpdateMetrics();  // the listeners' (node/listener_metrics.h)
}

// ---- Runtime ------------------------------------------------------------------------

Runtime::Impl::Impl(EventLoop* loop, RuntimeOptions options)
    : loop_(loop),
      options_(std::move(options)),
      node_(loop, node::NodeOptionsOf(options_)),
      policy_(options_.secure || options_.security.tls(), options_.named_peers),
      tracing_(node_.tracing()),
      admission_(AdmissionOptions{.queue_target_us = options_.overload_queue_target_us,
                                  .limit_max = options_.core.in_flight_tx_max}),
      wal_(loop, "decision log") {}

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

Status Runtime::Impl::Init() {
  start_ms_ = NowMs();
  std::error_code ec;
  std::filesystem::create_directories(options_.dir, ec);
  if (ec) return Status::IOError("creating " + options_.dir + ": " + ec.message());
  auto disk = node::DiskGuard::Open(options_.dir, options_.disk_free_min_bytes,
                                    options_.disk_ballast_bytes);
  if (!disk.ok()) return disk.status();
  disk_ = std::move(*disk);
  auto handlers = std::make_shared<node::HandlerTarget<Impl>>(this, &node_, &policy_);
  auto bound = node::ServeListeners(
      &node_,
      node::ListenerOptionsOf(options_, policy_.secure(),
                              "Replicate, Heartbeat, QueryDecision and SetFailpoint"),
      node::ListenerFactories{
          .client = node::HandlerFactory<rpc::CoordinatorAsyncProcessor, ClientHandler>(handlers),
          .peer = node::HandlerFactory<rpc::CoordinatorPeerAsyncProcessor, PeerHandler>(handlers),
          .admin = node::AdminHandler<Impl>::Factory(handlers, rpc::NodeRole::PRIMARY)},
      handlers);
  if (!bound.ok()) return bound.status();
  listeners_ = std::move(*bound);

  CoreOptions co = options_.core;
  co.participants = options_.participants;
  co.self_address = listeners_.peer;
  HaCoreOptions ho;
  ho.role = options_.ha.peer.empty() ? Role::kPrimary : options_.ha.role;
  ho.self_address = listeners_.peer;
  ho.peer = options_.ha.peer;
  ho.heartbeat_ms = options_.ha.heartbeat_ms;
  ho.detector = options_.ha.detector;
  ho.replicate_timeout_ms = options_.ha.replicate_timeout_ms;
  ho.resync_after_records = options_.ha.resync_after_records;
  ha_ = std::make_unique<HaCore>(ho, co);
  glue_ = std::make_unique<Glue>(this);
  DriverOptions dopts;
  dopts.name = options_.name;
  dopts.self_address = listeners_.peer;
  dopts.peer = options_.ha.peer;
  dopts.participants = options_.participants;
  dopts.probe_timeout_ms =
      static_cast<int>(std::clamp<uint64_t>(options_.ha.detector.suspect_after_ms, 1, 60000));
  driver_ =
      std::make_unique<CoordinatorDriver>(std::move(dopts), ha_.get(), glue_.get(), glue_.get());

  uint64_t replayed = 0;
  DTX_RETURN_IF_ERROR(
      wal_.Open(WalOptions(), options_.dir + "/wal",
                [this, &replayed](wal::Lsn lsn, uint8_t type, std::string_view payload) {
                  ++replayed;
                  return ha_->Replay(lsn, type, payload);
                }));
  if (!options_.ha.peer.empty()) {
    peer_stub_ = std::make_unique<CoordinatorPeerStub>(
        loop_, options_.ha.peer,
        options_.security.ChannelTo(options_.ha.peer, PrincipalKind::kCoordinator,
                                    options_.named_peers));
  }
  DTX_LOG_INFO("recovered the decision log: records={} epoch={} durable_lsn={} role={}", replayed,
               ha_->epoch(), wal_.log().durable_lsn(), RoleName(ho.role));
  ha_->Start(NowMs());
  if (options_.ha.peer.empty()) {
    DTX_LOG_INFO("alone (no --peer): serving as primary; decisions to re-drive={}",
                 ha_->core().committing());
  }
  driver_->Process();
  // The EPOCH record of a fresh log must be durable before commits are
  // accepted: wait for it here so the node is ready once it serves.
  std::vector<std::pair<wal::Lsn, std::function<void(uint64_t lsn)>>> forced =
      std::move(init_forced_);
  init_forced_.clear();
  initializing_ = false;
  for (const auto& [lsn, on_durable] : forced) {
    DTX_RETURN_IF_ERROR(wal_.log().WaitDurable(lsn));
    on_durable(lsn);  // the posted notice later finds nothing to do
  }
  driver_->Process();

  node_.RunEvery(kTickIntervalMs, [this] {
    driver_->Tick();  // also heartbeats (every ha.heartbeat_ms) and suspicion
    // Gone low: truncate the decision log now rather than at the next round.
    if (disk_ticks_++ % kDiskCheckEveryTicks == 0 && disk_->Check() && disk_->low()) {
      driver_->MaybeTruncate();
    }
    UpdateMetrics();
  });
  node_.RunEvery(kTruncateIntervalMs, [this] { driver_->MaybeTruncate(); });
  UpdateMetrics();
  DTX_RETURN_IF_ERROR(node_.StartMetrics());
  DTX_LOG_INFO("serving {}, as {} with {} participants; peer coordinator {}", listeners_.Describe(),
               RoleName(ha_->role()), options_.participants.size(),
               options_.ha.peer.empty() ? "none (alone)" : options_.ha.peer);
  return Status::OK();
}

Runtime::Impl::~Impl() {
  Shutdown();
  // ~Log syncs what is queued; the notices of its durable callbacks are
  // dropped (node/wal_appender.h).
  wal_.Close();
}

void Runtime::Impl::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  // The callbacks of the channels closed below do nothing; the calls still
  // owed an answer are dropped.
  if (driver_) driver_->Stop();
  node_.Shutdown();  // metrics endpoint, handler, timers, server
  if (peer_stub_ && peer_stub_->channel()) peer_stub_->channel()->Close();
  for (auto& [address, stub] : stubs_) {
    if (stub.channel()) stub.channel()->Close();  // callbacks see the driver stopped
  }
  stubs_.clear();
}

rpc::ShardMap Runtime::Impl::GetShardMap() const {
  ShardMap m = ha_->core().shard_map();
  rpc::ShardMap out;
  out.version = m.version;
  out.scheme = m.scheme;
  // The core knows the participants by their peer addresses; clients reach
  // them on their client listeners.
  out.participants =
      options_.participant_clients.empty() ? m.participants : options_.participant_clients;
  return out;
}

void Runtime::Impl::Commit(const rpc::CommitRequest& req,
                           std::function<void(const rpc::CommitResult&)> cob,
                           std::function<void(const rpc::DtxError&)> fail) {
  // Below the free-space watermark no new transaction that writes is taken
  // on; nothing was done for it, so the client may retry. A retry
  // (is_retry) goes through: its earlier attempt may have committed, and
  // the client must learn that rather than "not committed".
  if (disk_->low() && !req.writes.empty() && !(req.__isset.is_retry && req.is_retry)) {
    disk_->CountRefusal();
    fail(MakeDtxError(rpc::ErrorCode::UNAVAILABLE, options_.name + ": " + disk_->Describe()));
    return;
  }
  // The same while the decision log is far behind the disk: what is under
  // way gets its DECISION and END records, nothing new queues behind them,
  // and Append never blocks the loop on a full queue (docs/design.md "The
  // loop never blocks").
  const int64_t received_us = PhaseNow();
  // A ticket for a Commit taken on under the admission limit: Done when it
  // is answered, or when the driver drops its callbacks unanswered.
  std::shared_ptr<AdmissionTicket> ticket;
  if (!req.writes.empty() && !(req.__isset.is_retry && req.is_retry)) {
    if (std::string why = wal_.Backlog(); !why.empty()) {
      ++overload_refusals_;
      fail(SheddingError(options_.name + ": " + why, node::kOverloadRetryAfterMs));
      return;
    }
    // Above capacity, shed here rather than queue (docs/design.md
    // "Overload"): nothing was done for it; the client may retry.
    if (!admission_.Admit(static_cast<uint64_t>(received_us))) {
      ++overload_refusals_;
      fail(SheddingError(options_.name + ": " + admission_.RefusalMessage(),
                         node::kOverloadRetryAfterMs));
      return;
    }
    ticket = std::make_shared<AdmissionTicket>(&admission_, received_us);
  }
  const TxId txid = dtx::FromRpc(req.txid);
  driver_->Commit(
      req,
      [this, received_us, txid, ticket, cob = std::move(cob)](const rpc::CommitResult& res) {
        if (ticket) ticket->Done();
        metrics_.total.Observe(static_cast<double>(PhaseNow() - received_us) * 1e-6);
        rpc::CommitResult out = res;
        FillTimings(txid, out);
        cob(out);
      },
      [this, ticket, fail = std::move(fail)](const rpc::DtxError& e) {
        if (ticket) ticket->Done();
        // The driver's NOT_PRIMARY hint is the other coordinator's peer
        // address; a client reaches it at its client address.
        if (!e.__isset.primary) return fail(e);
        rpc::DtxError out = e;
        out.primary = options_.ha.peer_client;
        out.__isset.primary = !options_.ha.peer_client.empty() && e.primary == options_.ha.peer;
        fail(out);
      });
}

void Runtime::Impl::QueryDecision(const rpc::TxId& txid, const std::string& fingerprint,
                                  const rpc::Attempt& attempt,
                                  std::function<void(rpc::Decision::type)> cob,
                                  std::function<void(const rpc::DtxError&)> fail) {
  driver_->QueryDecision(txid, fingerprint, attempt, std::move(cob), std::move(fail));
}

rpc::NodeStatus Runtime::Impl::GetStatus() const {
  rpc::NodeStatus st;
  st.name = options_.name;
  st.role = dtx::ToRpc(ha_->node_role());
  st.epoch = ha_->epoch();
  st.uptime_ms = static_cast<int64_t>(NowMs() - start_ms_);
  st.durable_lsn = static_cast<int64_t>(wal_.is_open() ? wal_.log().durable_lsn() : 0);
  st.in_flight = static_cast<int64_t>(ha_->core().in_flight());
  st.in_doubt = 0;
  const uint64_t now = NowMs();
  for (size_t i = 0; i < options_.participants.size(); ++i) {
    rpc::PeerStatus p;
    p.name = "participant-" + std::to_string(i);
    p.address = options_.participants[i];
    const FailureDetector* fd = ha_->participant_detector(p.address);
    p.heartbeat_age_ms = fd == nullptr ? -1 : fd->AgeMs(now);
    p.suspected = ha_->participant_suspected(p.address);
    st.peers.push_back(std::move(p));
  }
  if (!options_.ha.peer.empty()) {
    rpc::PeerStatus p;
    const PeerView& v = ha_->peer_view();
    p.name = v.name.empty() ? "coordinator-peer" : v.name;
    if (v.role) p.name += std::string(" (") + NodeRoleName(*v.role) + ")";
    p.address = options_.ha.peer;
    p.heartbeat_age_ms = ha_->peer_detector().AgeMs(now);
    p.suspected = ha_->peer_suspected();
    st.peers.push_back(std::move(p));
  }
  const CoreStats& cs = ha_->core().stats();
  const HaStats& hs = ha_->stats();
  std::map<std::string, int64_t> c;
  c["commits"] = static_cast<int64_t>(cs.commits);
  c["commits_one_phase"] = static_cast<int64_t>(cs.commits_one_phase);
  c["commits_read_only"] = static_cast<int64_t>(cs.commits_read_only);
  c["aborts_conflict"] = static_cast<int64_t>(cs.aborts_conflict);
  c["aborts_participant_unavailable"] = static_cast<int64_t>(cs.aborts_unavailable);
  c["aborts_timeout"] = static_cast<int64_t>(cs.aborts_timeout);
  c["aborts_coordinator_failover"] = static_cast<int64_t>(cs.aborts_failover);
  c["outcomes_unknown"] = static_cast<int64_t>(cs.outcomes_unknown);
  c["commit_resends"] = static_cast<int64_t>(cs.commit_resends);
  c["rejected_busy"] = static_cast<int64_t>(cs.rejected_busy);
  c["rejected_bad_argument"] = static_cast<int64_t>(cs.rejected_bad_argument);
  c["rejected_txid_reused"] = static_cast<int64_t>(cs.rejected_txid_reused);
  c["queries"] = static_cast<int64_t>(cs.queries);
  c["committing"] = static_cast<int64_t>(ha_->core().committing());
  c["fenced"] = ha_->core().fenced() ? 1 : 0;
  c["rejected_suspected"] = static_cast<int64_t>(cs.rejected_suspected);
  c["decisions_relogged"] = static_cast<int64_t>(cs.decisions_relogged);
  c["aborts_logged"] = static_cast<int64_t>(cs.aborts_logged);
  c["established"] = ha_->established() ? 1 : 0;
  c["promotions"] = static_cast<int64_t>(hs.promotions);
  c["participant_suspicions"] = static_cast<int64_t>(hs.participant_suspicions);
  c["peer_suspicions"] = static_cast<int64_t>(hs.peer_suspicions);
  c["own_pauses"] = static_cast<int64_t>(hs.own_pauses);
  c["step_downs"] = static_cast<int64_t>(hs.step_downs);
  c["epoch_bump_in_progress"] = static_cast<int64_t>(ha_->bump_in_progress());
  if (ha_->role() == Role::kPrimary) {
    // backup_state: 0 none (alone by configuration), 1 down (committing
    // alone), 2 syncing, 3 in sync.
    c["backup_state"] = static_cast<int64_t>(ha_->backup_state());
    c["backup_in_sync"] = ha_->backup_state() == BackupState::kInSync ? 1 : 0;
    c["committing_alone"] = ha_->committing_alone() ? 1 : 0;
    c["backup_losses"] = static_cast<int64_t>(hs.backup_losses);
    c["replication_generation"] = ha_->generation();
  } else {
    c["in_sync"] = ha_->in_sync() ? 1 : 0;
    c["replication_generation"] = ha_->generation();
    c["replicated_records"] = static_cast<int64_t>(hs.replicated_records);
  }
  if (wal_.is_open()) {
    wal::Stats ws = wal_.log().stats();
    c["wal_syncs"] = static_cast<int64_t>(ws.syncs);
    c["wal_records_synced"] = static_cast<int64_t>(ws.records_synced);
    c["wal_bytes_written"] = static_cast<int64_t>(ws.bytes_written);
    c["wal_queued_bytes"] = static_cast<int64_t>(wal_.log().queued_bytes());
  }
  c["overload_refusals"] = static_cast<int64_t>(overload_refusals_);
  c["admission_limit"] = static_cast<int64_t>(admission_.limit());
  c["admission_in_flight"] = static_cast<int64_t>(admission_.in_flight());
  c["admission_last_mean_us"] = static_cast<int64_t>(admission_.last_mean_us());
  disk_->AddStatusCounters(&c);
  if (node_.metrics_port() != 0) c["metrics_port"] = node_.metrics_port();
  st.__set_counters(std::move(c));
  st.__set_listeners(node::ListenerStatuses(node_));
  return st;
}

wal::Options Runtime::Impl::WalOptions() {
  wal::Options o = options_.wal;
  // Flusher thread: Histogram::Observe is thread-safe; metrics_ outlives the
  // Log (~Impl closes wal_ before the members go).
  metrics_.wal.Hook(o);
  return o;
}

// ---- per-phase latency ------------------------------------------------------------------

int64_t Runtime::Impl::PhaseNow() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Runtime::Impl::NotePrepareSent(const TxId& txid) {
  auto it = timings_.find(txid);
  if (it == timings_.end()) {
    if (timings_.size() >= kPhaseTimingsMax) return;  // unmeasured, not unbounded
    it = timings_.emplace(txid, PhaseTiming{}).first;
  }
  if (it->second.prepare_sent == 0) it->second.prepare_sent = PhaseNow();
}

void Runtime::Impl::NoteVote(const TxId& txid) {
  auto it = timings_.find(txid);
  if (it != timings_.end() && it->second.decision_appended == 0) it->second.last_vote = PhaseNow();
}

void Runtime::Impl::NoteDecisionReleased(const TxId& txid) {
  auto it = timings_.find(txid);
  if (it != timings_.end() && it->second.decision_appended != 0) {
    it->second.decision_released = PhaseNow();
  }
}

void Runtime::Impl::FillTimings(const TxId& txid, rpc::CommitResult& out) {
  auto it = timings_.find(txid);
  if (it == timings_.end()) return;
  const PhaseTiming& t = it->second;
  if (t.prepare_sent != 0 && t.last_vote >= t.prepare_sent) {
    out.__set_prepare_us(t.last_vote - t.prepare_sent);
    metrics_.prepare.Observe(static_cast<double>(t.last_vote - t.prepare_sent) * 1e-6);
  }
  if (t.decision_appended != 0 && t.decision_released >= t.decision_appended) {
    out.__set_decision_us(t.decision_released - t.decision_appended);
    metrics_.decision.Observe(static_cast<double>(t.decision_released - t.decision_appended) *
                              1e-6);
    if (phase2_start_.size() < kPhaseTimingsMax) phase2_start_[txid] = t.decision_released;
  }
  timings_.erase(it);
}

ParticipantPeerStub& Runtime::Impl::StubFor(const std::string& address) {
  auto it = stubs_.find(address);
  if (it == stubs_.end()) {
    it = stubs_
             .emplace(address, ParticipantPeerStub(
                                   loop_, address,
                                   options_.security.ChannelTo(address, PrincipalKind::kParticipant,
                                                               options_.named_peers)))
             .first;
  }
  return it->second;
}

// ---- heartbeats, replication, fencing: plumbing for HaCore ---------------------------------

ParticipantPeerStub& Runtime::Impl::AdoptStubFor(const std::string& address) {
  // Its own channel: a participant without the ParticipantPeer service
  // closes the connection on the unknown method, which must not cost the
  // 2PC traffic on the shared channel.
  auto it = adopt_stubs_.find(address);
  if (it == adopt_stubs_.end()) {
    it = adopt_stubs_
             .emplace(address, ParticipantPeerStub(
                                   loop_, address,
                                   options_.security.ChannelTo(address, PrincipalKind::kParticipant,
                                                               options_.named_peers)))
             .first;
  }
  return it->second;
}

rpc::HeartbeatResponse Runtime::Impl::Heartbeat(const rpc::HeartbeatRequest& req) {
  return driver_->Heartbeat(req);
}

void Runtime::Impl::Replicate(const rpc::ReplicateRequest& req,
                              std::function<void(const rpc::ReplicateResponse&)> cob,
                              std::function<void(const rpc::DtxError&)> fail) {
  driver_->Replicate(req, std::move(cob), std::move(fail));
}

// ---- Handler: the Thrift edge ----------------------------------------------------------

namespace {
rpc::DtxError ShuttingDown() {
  return MakeDtxError(rpc::ErrorCode::UNAVAILABLE, "coordinator is shutting down");
}
}  // namespace

void ClientHandler::GetShardMap(std::function<void(const rpc::ShardMap&)> cob, ExnCob exn_cob) {
  if (target() == nullptr) return exn_cob(Delay(ShuttingDown()));
  cob(target()->GetShardMap());
}

void ClientHandler::Commit(std::function<void(const rpc::CommitResult&)> cob, ExnCob exn_cob,
                           const rpc::CommitRequest& req) {
  if (target() == nullptr) return exn_cob(Delay(ShuttingDown()));
  target()->Commit(req, std::move(cob), FailVia(std::move(exn_cob)));
}

void PeerHandler::QueryDecision(std::function<void(const rpc::Decision::type&)> cob, ExnCob exn_cob,
                                const rpc::TxId& txid, const std::string& fingerprint,
                                const rpc::Attempt& attempt) {
  // A participant asks about its in-doubt transactions, the other
  // coordinator about the ones it inherits; nobody else.
  const bool allowed =
      policy().RequirePeer(caller(), PrincipalKind::kParticipant, "QueryDecision").ok() ||
      policy().RequirePeer(caller(), PrincipalKind::kCoordinator, "QueryDecision").ok();
  if (!allowed) {
    Permit(Status::PermissionDenied("QueryDecision refused: " + caller().Describe() +
                                    " is neither a configured participant nor the peer "
                                    "coordinator of this node"),
           exn_cob);
    return;
  }
  if (target() == nullptr) return exn_cob(Delay(ShuttingDown()));
  target()->QueryDecision(
      txid, fingerprint, attempt, [cob](rpc::Decision::type d) { cob(d); },
      FailVia(std::move(exn_cob)));
}

namespace {
rpc::NodeStatus StatusOf(const Runtime::Impl* target) {
  if (target == nullptr) {
    rpc::NodeStatus st;
    st.role = rpc::NodeRole::PRIMARY;
    return st;
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

void ClientHandler::GetOutcome(std::function<void(const rpc::Outcome::type&)> cob, ExnCob exn_cob,
                               const rpc::TxId& txid) {
  if (target() == nullptr) return exn_cob(Delay(ShuttingDown()));
  cob(target()->GetOutcome(txid));
}

void PeerHandler::Replicate(std::function<void(const rpc::ReplicateResponse&)> cob, ExnCob exn_cob,
                            const rpc::ReplicateRequest& req) {
  if (!Permit(policy().RequirePeerClaiming(caller(), PrincipalKind::kCoordinator, req.primary,
                                           "Replicate"),
              exn_cob)) {
    return;
  }
  if (target() == nullptr) return exn_cob(Delay(ShuttingDown()));
  target()->Replicate(req, std::move(cob), FailVia(std::move(exn_cob)));
}

void PeerHandler::Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob, ExnCob exn_cob,
                            const rpc::HeartbeatRequest& req) {
  if (!Permit(policy().RequirePeerClaiming(caller(), PrincipalKind::kCoordinator, req.sender,
                                           "Heartbeat"),
              exn_cob)) {
    return;
  }
  if (target() == nullptr) {
    rpc::HeartbeatResponse resp;
    // role unset: shutting down (idl/dtx.thrift HeartbeatResponse).
    return cob(resp);
  }
  cob(target()->Heartbeat(req));
}

}  // namespace dtx::coordinator
