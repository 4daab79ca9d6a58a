#include "coordinator/runtime.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>

#include "CoordinatorPeer.h"
#include "common/event_loop.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/process_stats.h"
#include "common/rpc_client.h"
#include "common/rpc_error.h"
#include "common/wal_metrics.h"
#include "coordinator/peer_stub.h"
#include "node/fail_stop.h"
#include "node/handler.h"
#include "node/node.h"
#include "node/wal_appender.h"
#include "common/wire.h"

namespace dtx::coordinator {
namespace {

using node::FailStop;

// The coordinator's failpoints: `error` is fail-stop (coordinator/runtime.h).
void EvalOrFailStop(fp::Point p, const TxId& txid) {
  (void)node::EvalFailpoint(p, node::OnFailpointError::kFailStop, "txid=" + txid.ToString());
}

CallStatus ToCallStatus(const RpcStatus& st) {
  if (st.ok()) return CallStatus::kOk;
  if (st.error_code()) {
    return *st.error_code() == rpc::ErrorCode::STALE_EPOCH ? CallStatus::kStaleEpoch
                                                           : CallStatus::kError;
  }
  if (st.IsTimeout()) return CallStatus::kTimeout;
  // No connection, connection lost, Busy, an undecodable reply: the call may
  // or may not have been carried out.
  return CallStatus::kUnavailable;
}

rpc::PrepareRequest ToRpc(const PrepareMsg& m) {
  rpc::PrepareRequest req;
  req.txid = dtx::ToRpc(m.txid);
  req.epoch = m.epoch;
  req.reads = ReadsToRpc(m.reads);
  req.writes = WritesToRpc(m.writes);
  req.one_phase = m.one_phase;
  req.read_only_tx = m.read_only_tx;
  req.__set_coordinator(m.coordinator);
  return req;
}

CommitRequest FromRpc(const rpc::CommitRequest& in) {
  CommitRequest req;
  req.txid = dtx::FromRpc(in.txid);
  req.shard_map_version = in.shard_map_version;
  req.is_retry = in.__isset.is_retry && in.is_retry;
  req.reads = ReadsFromRpc<ReadItem>(in.reads);
  req.writes = WritesFromRpc<WriteItem>(in.writes);
  return req;
}

rpc::CommitResult ToRpc(const CommitResult& c) {
  rpc::CommitResult out;
  out.outcome = dtx::ToRpc(c.outcome);
  if (c.reason) out.__set_reason(dtx::ToRpc(*c.reason));
  if (!c.detail.empty()) out.__set_detail(c.detail);
  return out;
}

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kCommitted: return "committed";
    case Outcome::kAborted: return "aborted";
    case Outcome::kUnknown: return "unknown";
  }
  return "?";
}

}  // namespace

namespace {
// How often the core's Tick runs (timeouts, COMMIT re-sends).
constexpr uint64_t kTickIntervalMs = 10;
// How often a pending WAL truncation is carried out.
constexpr uint64_t kTruncateIntervalMs = 1000;
}  // namespace

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

struct Runtime::Impl {
  Impl(EventLoop* loop, RuntimeOptions options);
  ~Impl();
  Status Init();
  void Shutdown();

  // ---- the Coordinator service (called by Handler, loop thread) ----
  rpc::ShardMap GetShardMap() const;
  void Commit(const rpc::CommitRequest& req, std::function<void(const rpc::CommitResult&)> cob,
              std::function<void(const rpc::DtxError&)> fail);
  void QueryDecision(const rpc::TxId& txid, std::function<void(rpc::Decision::type)> cob,
                     std::function<void(const rpc::DtxError&)> fail);
  rpc::NodeStatus GetStatus() const;
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

  struct Pending {
    TxId txid;
    std::function<void(const rpc::CommitResult&)> commit_cob;  // Commit
    std::function<void(rpc::Decision::type)> query_cob;        // QueryDecision
    std::function<void(const rpc::DtxError&)> fail;
    int64_t received_us = 0;  // PhaseNow() when the request arrived
  };
  // A Replicate call from the primary, until the HaCore answers it.
  struct ReplicatePending {
    std::function<void(const rpc::ReplicateResponse&)> cob;
    std::function<void(const rpc::DtxError&)> fail;
  };

  void UpdateMetrics();
  // Drains the HaCore's HaReady (append, reload, release, send, reply).
  void Process();
  void Append(const PersistRecord& p);
  // After a step-down: reopens the WAL, replaying it into the fresh mirror.
  void ReloadLog();
  void SendMessage(const OutMessage& m);
  void SendProbe(const ProbeMsg& m);
  void SendReplicate(ReplicateMsg& m);
  void SendAdoptEpoch(const AdoptEpochMsg& m);
  // options_.wal plus the on_sync hook feeding the WAL histograms.
  wal::Options WalOptions();
  void AnswerReplicate(const ReplicateAnswer& a);
  void Deliver(Reply& reply);
  void OnDurable(PersistTag tag, RecordType type, TxId txid, uint64_t lsn);
  static int64_t PhaseNow();
  void NotePrepareSent(const TxId& txid);
  void NoteVote(const TxId& txid);
  void NoteDecisionReleased(const TxId& txid);
  // Sets prepare_us / decision_us from txid's timing and forgets it.
  void FillTimings(const TxId& txid, rpc::CommitResult& out);
  void MaybeTruncate();
  // "primary" (established), "starting" (a primary not yet established) or "backup".
  const char* RoleLabel() const { return NodeRoleName(ha_->node_role()); }
  ParticipantPeerStub& AdoptStubFor(const std::string& address);
  ParticipantStub& StubFor(const std::string& address);
  uint64_t NowMs() const { return node_.NowMs(); }
  // Records a span event for txid when tracing is on (trace_events > 0).
  // `event` has static storage duration.
  void Trace(const TxId& txid, const char* event, std::string_view detail = {}) {
    node_.Trace(txid, event, detail);
  }
  // "participant-<shard index>" for an address in the shard map, else the address.
  std::string ParticipantName(const std::string& address) const;

  EventLoop* loop_;
  RuntimeOptions options_;
  // Server, handler, timers, metrics endpoint, trace ring (node/node.h).
  node::Node node_;
  const bool tracing_;  // node_.tracing()
  std::unique_ptr<HaCore> ha_;
  // The decision log; its notices of a log replaced by ReloadLog are dropped.
  node::WalAppender wal_;
  node::DrainGuard drain_;
  std::string address_;
  std::map<std::string, ParticipantStub> stubs_;
  std::unordered_map<RequestToken, Pending> pending_;
  std::map<RequestToken, ReplicatePending> replicate_pending_;
  RequestToken next_token_ = 1;
  uint64_t truncate_wanted_ = 0;
  uint64_t truncate_done_ = 0;
  uint64_t start_ms_ = 0;
  bool shut_down_ = false;
  // While Init runs: forced records appended (the EPOCH of a fresh log),
  // waited for before the node serves, so "GetStatus answers" means "ready".
  bool initializing_ = true;
  std::vector<std::pair<PersistTag, wal::Lsn>> init_forced_;
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
};

namespace {

// The Thrift edge: converts and forwards to the Runtime. A call after
// Shutdown (detached) answers UNAVAILABLE. Loop thread only.
class Handler final : public node::Handler<rpc::CoordinatorPeerCobSvIf, Runtime::Impl> {
 public:
  using node::Handler<rpc::CoordinatorPeerCobSvIf, Runtime::Impl>::Handler;

  void GetShardMap(std::function<void(const rpc::ShardMap&)> cob, ExnCob exn_cob) override;
  void Commit(std::function<void(const rpc::CommitResult&)> cob, ExnCob exn_cob,
              const rpc::CommitRequest& req) override;
  void QueryDecision(std::function<void(const rpc::Decision::type&)> cob, ExnCob exn_cob,
                     const rpc::TxId& txid) override;
  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override;
  void Replicate(std::function<void(const rpc::ReplicateResponse&)> cob, ExnCob exn_cob,
                 const rpc::ReplicateRequest& req) override;
  void Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob,
                 const rpc::HeartbeatRequest& req) override;
};

}  // namespace

// ---- metrics --------------------------------------------------------------------------

CoordinatorMetrics::CoordinatorMetrics(obs::Registry& r)
    : commits(r.AddCounter("dtx_commits_total", "Transactions committed (2PC, one-phase and read-only).")),
      aborts(r.AddCounterFamily("dtx_aborts_total", "Transactions aborted, by reason.", {"reason"})),
      outcomes_unknown(r.AddCounter("dtx_outcomes_unknown_total",
                                    "Commit requests answered UNKNOWN (e.g. on a step-down).")),
      phase(r.AddHistogramFamily("dtx_phase_seconds",
                                 "Commit phases: prepare (first PREPARE sent to last vote), decision (DECISION "
                                 "appended to commit point), phase2 (commit point to END appended), total "
                                 "(request received to result sent).",
                                 obs::LatencyBucketsSeconds(), {"phase"})),
      prepare(phase.Get({"prepare"})),
      decision(phase.Get({"decision"})),
      phase2(phase.Get({"phase2"})),
      total(phase.Get({"total"})),
      role(r.AddGaugeFamily("dtx_role", "1 for the node's current role (starting: a primary not yet established).",
                            {"role"})),
      epoch(r.AddGauge("dtx_epoch", "The coordinator's epoch.")),
      in_flight(r.AddGauge("dtx_in_flight", "Transactions in the core (undecided or committing).")),
      heartbeat_age(r.AddGaugeFamily("dtx_heartbeat_age_seconds",
                                     "Seconds since this peer last answered a heartbeat (-1: never).", {"peer"})),
      suspected(r.AddGaugeFamily("dtx_peer_suspected", "1 if this peer is suspected.", {"peer"})),
      wal(r) {
  for (AbortReason a : {AbortReason::kConflict, AbortReason::kParticipantUnavailable, AbortReason::kTimeout,
                        AbortReason::kCoordinatorFailover}) {
    abort_by_reason[static_cast<int>(a)] = &aborts.Get({AbortReasonName(a)});
  }
  for (const char* x : {"primary", "backup", "starting"}) role.Get({x});
  obs::RegisterProcessMetrics(&r);
}

void Runtime::Impl::UpdateMetrics() {
  const std::string label = RoleLabel();
  for (const char* x : {"primary", "backup", "starting"}) metrics_.role.Get({x}).Set(label == x ? 1 : 0);
  metrics_.epoch.Set(static_cast<double>(ha_->epoch()));
  metrics_.in_flight.Set(static_cast<double>(ha_->core().in_flight()));
  const uint64_t now = NowMs();
  auto age = [](int64_t ms) { return ms < 0 ? -1.0 : static_cast<double>(ms) * 1e-3; };
  for (const std::string& address : options_.participants) {
    const FailureDetector* fd = ha_->participant_detector(address);
    if (fd == nullptr) continue;
    metrics_.heartbeat_age.Get({address}).Set(age(fd->AgeMs(now)));
    metrics_.suspected.Get({address}).Set(ha_->participant_suspected(address) ? 1 : 0);
  }
  if (peer_stub_) {
    metrics_.heartbeat_age.Get({options_.ha.peer}).Set(age(ha_->peer_detector().AgeMs(now)));
    metrics_.suspected.Get({options_.ha.peer}).Set(ha_->peer_suspected() ? 1 : 0);
  }
  // Outcome counters follow the core's own counts (a retried Commit is
  // answered again but counted once). A rebuilt core (step-down) starts
  // again from 0: its counts are then new.
  const CoreStats& cs = ha_->core().stats();
  auto feed = [](obs::Counter& c, uint64_t& last, uint64_t now_value) {
    c.Inc(now_value >= last ? now_value - last : now_value);
    last = now_value;
  };
  CoordinatorMetrics::CoreSeen& seen = metrics_.seen;
  feed(metrics_.commits, seen.commits, cs.commits + cs.commits_one_phase + cs.commits_read_only);
  feed(*metrics_.abort_by_reason[static_cast<int>(AbortReason::kConflict)], seen.conflict, cs.aborts_conflict);
  feed(*metrics_.abort_by_reason[static_cast<int>(AbortReason::kParticipantUnavailable)], seen.unavailable,
       cs.aborts_unavailable);
  feed(*metrics_.abort_by_reason[static_cast<int>(AbortReason::kTimeout)], seen.timeout, cs.aborts_timeout);
  feed(*metrics_.abort_by_reason[static_cast<int>(AbortReason::kCoordinatorFailover)], seen.failover,
       cs.aborts_failover);
  feed(metrics_.outcomes_unknown, seen.unknown, cs.outcomes_unknown);
  if (wal_.is_open()) metrics_.wal.Update(wal_.log().stats());
}

// ---- Runtime ------------------------------------------------------------------------

Runtime::Impl::Impl(EventLoop* loop, RuntimeOptions options)
    : loop_(loop),
      options_(std::move(options)),
      node_(loop, node::NodeOptions{.name = options_.name,
                                    .dir = options_.dir,
                                    .metrics_enabled = options_.metrics_enabled,
                                    .metrics_host = options_.metrics_host,
                                    .metrics_port = options_.metrics_port,
                                    .trace_events = options_.trace_events}),
      tracing_(node_.tracing()),
      wal_(loop, "decision log") {}

std::string Runtime::Impl::ParticipantName(const std::string& address) const {
  for (size_t i = 0; i < options_.participants.size(); ++i) {
    if (options_.participants[i] == address) return "participant-" + std::to_string(i);
  }
  return address;
}

Result<std::unique_ptr<Runtime>> Runtime::Start(EventLoop* loop, RuntimeOptions options) {
  auto impl = node::StartImpl<Impl>(loop, std::move(options));
  if (!impl.ok()) return impl.status();
  return std::unique_ptr<Runtime>(new Runtime(std::move(*impl)));
}

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Runtime::~Runtime() = default;
void Runtime::Shutdown() { impl_->Shutdown(); }
std::string Runtime::address() const { return impl_->address_; }
std::string Runtime::metrics_address() const { return impl_->node_.metrics_address(); }

Status Runtime::Impl::Init() {
  start_ms_ = NowMs();
  auto handler = std::make_shared<Handler>(this, &node_);
  DTX_RETURN_IF_ERROR(node_.Serve(std::make_shared<rpc::CoordinatorPeerAsyncProcessor>(handler),
                                  handler, options_.listen_host, options_.listen_port));
  address_ = node_.address();

  CoreOptions co = options_.core;
  co.participants = options_.participants;
  co.self_address = address_;
  HaCoreOptions ho;
  ho.role = options_.ha.peer.empty() ? Role::kPrimary : options_.ha.role;
  ho.self_address = address_;
  ho.peer = options_.ha.peer;
  ho.heartbeat_ms = options_.ha.heartbeat_ms;
  ho.detector = options_.ha.detector;
  ho.replicate_timeout_ms = options_.ha.replicate_timeout_ms;
  ho.resync_after_records = options_.ha.resync_after_records;
  ha_ = std::make_unique<HaCore>(ho, co);

  uint64_t replayed = 0;
  DTX_RETURN_IF_ERROR(wal_.Open(WalOptions(), options_.dir + "/wal",
                                [this, &replayed](wal::Lsn lsn, uint8_t type, std::string_view payload) {
                                  ++replayed;
                                  return ha_->Replay(lsn, type, payload);
                                }));
  if (!options_.ha.peer.empty()) {
    peer_stub_ = std::make_unique<CoordinatorPeerStub>(loop_, options_.ha.peer);
  }
  DTX_LOG_INFO("recovered the decision log: records={} epoch={} durable_lsn={} role={}", replayed,
               ha_->epoch(), wal_.log().durable_lsn(), RoleName(ho.role));
  ha_->Start(NowMs());
  if (options_.ha.peer.empty()) {
    DTX_LOG_INFO("alone (no --peer): serving as primary; decisions to re-drive={}",
                 ha_->core().committing());
  }
  Process();
  // The EPOCH record of a fresh log must be durable before commits are
  // accepted: wait for it here so the node is ready once it serves.
  for (const auto& [tag, lsn] : init_forced_) {
    DTX_RETURN_IF_ERROR(wal_.log().WaitDurable(lsn));
    ha_->OnPersisted(NowMs(), tag, lsn);  // the posted notice later finds nothing to do
  }
  init_forced_.clear();
  initializing_ = false;
  Process();

  node_.RunEvery(kTickIntervalMs, [this] {
    ha_->Tick(NowMs());  // also heartbeats (every ha.heartbeat_ms) and suspicion
    Process();
    UpdateMetrics();
  });
  node_.RunEvery(kTruncateIntervalMs, [this] { MaybeTruncate(); });
  UpdateMetrics();
  DTX_RETURN_IF_ERROR(node_.StartMetrics());
  DTX_LOG_INFO("serving on {} as {} with {} participants; peer coordinator {}", address_,
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
  node_.Shutdown();  // metrics endpoint, handler, timers, server
  if (peer_stub_ && peer_stub_->channel()) peer_stub_->channel()->Close();
  for (auto& [address, stub] : stubs_) {
    if (stub.channel()) stub.channel()->Close();  // callbacks see shut_down_
  }
  stubs_.clear();
  pending_.clear();
  replicate_pending_.clear();
}

rpc::ShardMap Runtime::Impl::GetShardMap() const {
  ShardMap m = ha_->core().shard_map();
  rpc::ShardMap out;
  out.version = m.version;
  out.scheme = m.scheme;
  out.participants = m.participants;
  return out;
}

void Runtime::Impl::Commit(const rpc::CommitRequest& req,
                     std::function<void(const rpc::CommitResult&)> cob,
                     std::function<void(const rpc::DtxError&)> fail) {
  RequestToken token = next_token_++;
  CommitRequest creq = FromRpc(req);
  Trace(creq.txid, obs::span::kReceived, creq.is_retry ? "retry" : "");
  pending_[token] = Pending{creq.txid, std::move(cob), nullptr, std::move(fail), PhaseNow()};
  ha_->Commit(NowMs(), token, std::move(creq));
  Process();
}

void Runtime::Impl::QueryDecision(const rpc::TxId& txid, std::function<void(rpc::Decision::type)> cob,
                            std::function<void(const rpc::DtxError&)> fail) {
  TxId t = dtx::FromRpc(txid);
  RequestToken token = next_token_++;
  pending_[token] = Pending{t, nullptr, std::move(cob), std::move(fail)};
  ha_->QueryDecision(NowMs(), token, t);  // a backup answers UNKNOWN
  Process();
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
  c["queries"] = static_cast<int64_t>(cs.queries);
  c["committing"] = static_cast<int64_t>(ha_->core().committing());
  c["fenced"] = ha_->core().fenced() ? 1 : 0;
  c["rejected_suspected"] = static_cast<int64_t>(cs.rejected_suspected);
  c["established"] = ha_->established() ? 1 : 0;
  c["promotions"] = static_cast<int64_t>(hs.promotions);
  c["participant_suspicions"] = static_cast<int64_t>(hs.participant_suspicions);
  c["peer_suspicions"] = static_cast<int64_t>(hs.peer_suspicions);
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
  }
  st.__set_counters(std::move(c));
  return st;
}

// ---- draining the core ----------------------------------------------------------------

void Runtime::Impl::Process() {
  node::DrainGuard::Scope scope = drain_.Enter();
  if (!scope.entered() || shut_down_) return;  // the outer call drains what this one would
  for (;;) {
    HaReady r = ha_->TakeReady();
    if (r.empty()) break;
    for (const HaNote& n : r.notes) {
      if (n.warn) {
        DTX_LOG_WARN("{}", n.text);
      } else {
        DTX_LOG_INFO("{}", n.text);
      }
    }
    // HaReady's ordering rule: records first (then the reload they precede),
    // then released decisions, then messages, then replies.
    for (const PersistRecord& p : r.persist) Append(p);
    if (r.reload_log) ReloadLog();
    for (const TxId& txid : r.backup_acked) Trace(txid, "replicated");
    for (const TxId& txid : r.released) {
      EvalOrFailStop(fp::Point::kCoordinatorDecisionAfterLog, txid);
      NoteDecisionReleased(txid);
    }
    for (const OutMessage& m : r.send) SendMessage(m);
    for (ReplicateMsg& m : r.replicate) SendReplicate(m);
    for (const AdoptEpochMsg& m : r.adopt) SendAdoptEpoch(m);
    for (const ProbeMsg& m : r.probes) SendProbe(m);
    for (Reply& rep : r.replies) Deliver(rep);
    for (const ReplicateAnswer& a : r.replicate_answers) AnswerReplicate(a);
    if (r.truncate_before != 0) truncate_wanted_ = std::max(truncate_wanted_, r.truncate_before);
  }
}

void Runtime::Impl::Append(const PersistRecord& p) {
  // The 2PC core's own records (not HaCore's: an EPOCH it establishes, or
  // records replicated from the primary) pass the commit-path failpoints.
  const bool from_core = (p.tag >> 63) == 0;
  if (from_core && p.type == RecordType::kDecision) {
    EvalOrFailStop(fp::Point::kCoordinatorVotesAfterAll, p.txid);
    EvalOrFailStop(fp::Point::kCoordinatorDecisionBeforeLog, p.txid);
  } else if (from_core && p.type == RecordType::kEnd) {
    EvalOrFailStop(fp::Point::kCoordinatorEndBeforeLog, p.txid);
    if (auto it = phase2_start_.find(p.txid); it != phase2_start_.end()) {
      metrics_.phase2.Observe(static_cast<double>(PhaseNow() - it->second) * 1e-6);
      phase2_start_.erase(it);
    }
  }
  // Only a forced record's durability is news for the core.
  node::RecordLog::DurableFn on_durable;
  if (p.forced) {
    on_durable = [this, tag = p.tag, type = p.type, txid = p.txid](wal::Lsn lsn) {
      OnDurable(tag, type, txid, lsn);
    };
  }
  const wal::Lsn lsn = wal_.Append(static_cast<uint8_t>(p.type), p.payload, std::move(on_durable));
  if (from_core && p.type == RecordType::kDecision) {
    Trace(p.txid, obs::span::kLogged);
  } else if (from_core && p.type == RecordType::kEnd) {
    Trace(p.txid, "ended");
  }
  if (initializing_ && p.forced) init_forced_.emplace_back(p.tag, lsn);
  if (from_core && p.type == RecordType::kDecision && p.forced) {
    if (auto t = timings_.find(p.txid); t != timings_.end()) t->second.decision_appended = PhaseNow();
  }
  if (p.type == RecordType::kDecision) {
    DTX_LOG_DEBUG("txid={} phase=decision lsn={} all votes yes, DECISION appended",
                  p.txid.ToString(), lsn);
  }
}

void Runtime::Impl::OnDurable(PersistTag tag, RecordType type, TxId txid, uint64_t lsn) {
  if (shut_down_) return;
  if (type == RecordType::kDecision && (tag >> 63) == 0) Trace(txid, obs::span::kSynced);
  ha_->OnPersisted(NowMs(), tag, lsn);
  Process();
}

wal::Options Runtime::Impl::WalOptions() {
  wal::Options o = options_.wal;
  // Flusher thread: Histogram::Observe is thread-safe; metrics_ outlives the
  // Log (~Impl closes wal_ before the members go).
  metrics_.wal.Hook(o);
  return o;
}

void Runtime::Impl::ReloadLog() {
  // Notices of the old log (durability of a replaced core's records) are
  // dropped by the appender.
  Status s = wal_.Open(WalOptions(), options_.dir + "/wal",
                       [this](wal::Lsn lsn, uint8_t type, std::string_view payload) {
                         return ha_->Replay(lsn, type, payload);
                       });
  if (!s.ok()) FailStop("cannot reopen the decision log after stepping down: " + s.ToString());
  truncate_wanted_ = truncate_done_ = 0;
  timings_.clear();
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
    metrics_.decision.Observe(static_cast<double>(t.decision_released - t.decision_appended) * 1e-6);
    if (phase2_start_.size() < kPhaseTimingsMax) phase2_start_[txid] = t.decision_released;
  }
  timings_.erase(it);
}

ParticipantStub& Runtime::Impl::StubFor(const std::string& address) {
  auto it = stubs_.find(address);
  if (it == stubs_.end()) {
    it = stubs_.emplace(address, ParticipantStub(loop_, address)).first;
  }
  return it->second;
}

void Runtime::Impl::SendMessage(const OutMessage& m) {
  ParticipantStub& stub = StubFor(m.to);
  const int timeout_ms = static_cast<int>(std::clamp<uint64_t>(m.timeout_ms, 1, INT32_MAX));
  MessageId id = m.id;
  std::string to = m.to;
  if (const auto* prep = std::get_if<PrepareMsg>(&m.body)) {
    TxId txid = prep->txid;
    NotePrepareSent(txid);
    if (tracing_) Trace(txid, "prepare", ParticipantName(to));
    stub.Prepare(ToRpc(*prep), timeout_ms,
                 [this, id, to, txid](const RpcStatus& st, const rpc::PrepareResponse& resp) {
                   if (shut_down_) return;
                   PrepareReply r;
                   r.msg_id = id;
                   r.txid = txid;
                   r.participant = to;
                   r.status = ToCallStatus(st);
                   r.error = st.ToString();
                   if (st.error_code()) {
                     r.error_code = ErrorCodeOf(st);
                   }
                   NoteVote(txid);
                   if (tracing_) {
                     std::string d = ParticipantName(to) + " ";
                     if (!st.ok()) {
                       d += "error:" + st.ToString();
                     } else {
                       d += resp.vote == rpc::Vote::YES         ? "yes"
                            : resp.vote == rpc::Vote::READ_ONLY ? "read_only"
                            : resp.vote == rpc::Vote::NO        ? "no"
                                                                : "error:bad vote";
                     }
                     Trace(txid, obs::span::kVoted, d);
                   }
                   if (st.ok()) {
                     switch (resp.vote) {
                       case rpc::Vote::YES: r.vote = Vote::kYes; break;
                       case rpc::Vote::READ_ONLY: r.vote = Vote::kReadOnly; break;
                       case rpc::Vote::NO: r.vote = Vote::kNo; break;
                       default:
                         r.status = CallStatus::kError;
                         r.error = "unknown vote " + std::to_string(static_cast<int>(resp.vote));
                     }
                     if (resp.__isset.reason) r.reason = dtx::FromRpc(resp.reason);
                     if (resp.__isset.detail) r.detail = resp.detail;
                   } else {
                     DTX_LOG_INFO("txid={} phase=prepare participant={} failed: {}",
                                  txid.ToString(), to, st.ToString());
                   }
                   ha_->OnPrepareReply(NowMs(), r);
                   Process();
                 });
    return;
  }
  if (const auto* commit = std::get_if<CommitMsg>(&m.body)) {
    TxId txid = commit->txid;
    stub.Commit(dtx::ToRpc(txid), commit->epoch, timeout_ms,
                [this, id, to, txid](const RpcStatus& st) {
                  if (shut_down_) return;
                  if (!st.ok()) {
                    DTX_LOG_INFO("txid={} phase=commit participant={} failed (will re-send): {}",
                                 txid.ToString(), to, st.ToString());
                  }
                  if (st.ok() && tracing_) Trace(txid, obs::span::kAcked, ParticipantName(to));
                  AckReply a{id, txid, to, ToCallStatus(st), st.ToString()};
                  ha_->OnCommitReply(NowMs(), a);
                  Process();
                });
    if (commit->first_of_tx) {
      EvalOrFailStop(fp::Point::kCoordinatorPhase2AfterFirstCommit, txid);
    }
    return;
  }
  const auto& abort = std::get<AbortMsg>(m.body);
  TxId txid = abort.txid;
  stub.Abort(dtx::ToRpc(txid), abort.epoch, timeout_ms, [this, id, to, txid](const RpcStatus& st) {
    if (shut_down_) return;
    AckReply a{id, txid, to, ToCallStatus(st), st.ToString()};
    ha_->OnAbortReply(NowMs(), a);
    Process();
  });
}

void Runtime::Impl::Deliver(Reply& reply) {
  auto it = pending_.find(reply.token);
  if (it == pending_.end()) return;  // cannot happen: every token is answered once
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (const auto* err = std::get_if<Error>(&reply.body)) {
    DTX_LOG_DEBUG("txid={} request refused: {} {}", p.txid.ToString(),
                  ErrorCodeName(err->code), err->message);
    if (tracing_ && p.commit_cob) {
      Trace(p.txid, "replied",
            std::string("error:") + ErrorCodeName(err->code));
    }
    p.fail(MakeDtxError(err->code, err->message,
                        err->code == ErrorCode::kNotPrimary ? options_.ha.peer : std::string()));
    return;
  }
  if (const auto* res = std::get_if<CommitResult>(&reply.body)) {
    if (res->outcome == Outcome::kUnknown ||
        (res->reason && *res->reason != AbortReason::kConflict)) {
      DTX_LOG_INFO("txid={} outcome={} reason={} detail={}", p.txid.ToString(),
                   OutcomeName(res->outcome), res->reason ? AbortReasonName(*res->reason) : "-",
                   res->detail);
    } else {
      DTX_LOG_DEBUG("txid={} outcome={} detail={}", p.txid.ToString(), OutcomeName(res->outcome),
                    res->detail);
    }
    if (tracing_) {
      std::string d = res->outcome == Outcome::kCommitted ? "commit"
                      : res->outcome == Outcome::kAborted ? "abort"
                                                          : "unknown";
      if (res->reason) d += std::string(" ") + AbortReasonName(*res->reason);
      Trace(p.txid, obs::span::kDecided, d);
      Trace(p.txid, "replied", OutcomeName(res->outcome));
    }
    if (p.received_us != 0) metrics_.total.Observe(static_cast<double>(PhaseNow() - p.received_us) * 1e-6);
    if (p.commit_cob) {
      rpc::CommitResult out = ToRpc(*res);
      FillTimings(p.txid, out);
      p.commit_cob(out);
    } else {
      p.fail(MakeDtxError(rpc::ErrorCode::INTERNAL, "commit result for a non-commit request"));
    }
    return;
  }
  Decision d = std::get<Decision>(reply.body);
  DTX_LOG_DEBUG("txid={} QueryDecision answered {}", p.txid.ToString(), static_cast<int>(d));
  if (p.query_cob) {
    p.query_cob(dtx::ToRpc(d));
  } else {
    p.fail(MakeDtxError(rpc::ErrorCode::INTERNAL, "decision for a non-query request"));
  }
}


// ---- heartbeats, replication, fencing: plumbing for HaCore ---------------------------------

ParticipantPeerStub& Runtime::Impl::AdoptStubFor(const std::string& address) {
  // Its own channel: a participant without the ParticipantPeer service
  // closes the connection on the unknown method, which must not cost the
  // 2PC traffic on the shared channel.
  auto it = adopt_stubs_.find(address);
  if (it == adopt_stubs_.end()) {
    it = adopt_stubs_.emplace(address, ParticipantPeerStub(loop_, address)).first;
  }
  return it->second;
}

void Runtime::Impl::SendProbe(const ProbeMsg& m) {
  const int timeout_ms = static_cast<int>(std::clamp<uint64_t>(
      options_.ha.detector.suspect_after_ms, 1, 60000));
  rpc::HeartbeatRequest hb;
  hb.sender = address_;
  hb.role = dtx::ToRpc(m.role);
  hb.epoch = static_cast<int64_t>(m.epoch);
  const std::string to = m.to;
  if (m.peer) {
    if (!peer_stub_) return;
    peer_stub_->Heartbeat(hb, timeout_ms, [this, to](const RpcStatus& st, const rpc::HeartbeatResponse& resp) {
      if (shut_down_) return;
      std::optional<PeerView> view;
      if (st.ok()) {
        // A peer shutting down sends no role: PeerView holds none (not heard).
        view = PeerView{resp.name, resp.__isset.role ? dtx::FromRpc(resp.role) : std::nullopt,
                        static_cast<Epoch>(std::max<int64_t>(resp.epoch, 0)),
                        resp.__isset.in_sync ? std::optional<bool>(resp.in_sync) : std::nullopt};
      }
      ha_->OnProbeReply(NowMs(), to, st.ok(), view);
      Process();
    });
    return;
  }
  auto done = [this, to](const RpcStatus& st) {
    if (shut_down_) return;
    if (!st.ok() && st.code() == Status::Code::kNotSupported && heartbeat_unsupported_.insert(to).second) {
      DTX_LOG_INFO("participant {} does not serve Heartbeat; probing it with GetStatus", to);
    }
    ha_->OnProbeReply(NowMs(), to, st.ok());
    Process();
  };
  if (heartbeat_unsupported_.count(to) != 0) {
    StubFor(to).GetStatus(timeout_ms, [done](const RpcStatus& st, const rpc::NodeStatus&) { done(st); });
  } else {
    // On the AdoptEpoch channel: a participant without the service closes
    // that connection, not the one carrying 2PC.
    AdoptStubFor(to).Heartbeat(hb, timeout_ms,
                               [done](const RpcStatus& st, const rpc::HeartbeatResponse&) { done(st); });
  }
}

rpc::HeartbeatResponse Runtime::Impl::Heartbeat(const rpc::HeartbeatRequest& req) {
  PeerView in;
  in.role = dtx::FromRpc(req.role);
  in.epoch = static_cast<Epoch>(std::max<int64_t>(req.epoch, 0));
  PeerView mine = ha_->OnPeerHeartbeat(NowMs(), req.sender, in);
  Process();
  rpc::HeartbeatResponse resp;
  resp.name = options_.name;
  if (mine.role) resp.__set_role(dtx::ToRpc(*mine.role));
  resp.epoch = static_cast<int64_t>(mine.epoch);
  if (mine.in_sync) resp.__set_in_sync(*mine.in_sync);
  return resp;
}

void Runtime::Impl::SendReplicate(ReplicateMsg& m) {
  if (!peer_stub_) return;
  rpc::ReplicateRequest req;
  req.epoch = static_cast<int64_t>(m.epoch);
  req.primary = m.primary;
  req.generation = m.generation;
  req.snapshot = m.snapshot;
  req.records.reserve(m.records.size());
  for (ReplRecord& r : m.records) {
    rpc::LogRecord lr;
    lr.type = static_cast<int8_t>(r.type);
    lr.payload = std::move(r.payload);
    req.records.push_back(std::move(lr));
  }
  if (m.snapshot) {
    DTX_LOG_INFO("replication: snapshot to backup {} (generation {}, {} records)", options_.ha.peer,
                 m.generation, req.records.size());
  }
  const MessageId id = m.id;
  const int timeout_ms = static_cast<int>(std::clamp<uint64_t>(m.timeout_ms, 1, INT32_MAX));
  peer_stub_->Replicate(req, timeout_ms, [this, id](const RpcStatus& st, const rpc::ReplicateResponse&) {
    if (shut_down_) return;
    ha_->OnReplicateReply(NowMs(), id, ToCallStatus(st), st.ToString());
    Process();
  });
}

void Runtime::Impl::Replicate(const rpc::ReplicateRequest& req,
                        std::function<void(const rpc::ReplicateResponse&)> cob,
                        std::function<void(const rpc::DtxError&)> fail) {
  HaCore::ReplicateIn in;
  in.epoch = static_cast<Epoch>(std::max<int64_t>(req.epoch, 0));
  in.primary = req.primary;
  in.generation = req.generation;
  in.snapshot = req.snapshot;
  in.records.reserve(req.records.size());
  for (const rpc::LogRecord& r : req.records) {
    in.records.push_back(ReplRecord{static_cast<RecordType>(static_cast<uint8_t>(r.type)), r.payload});
  }
  const RequestToken token = next_token_++;
  replicate_pending_[token] = ReplicatePending{std::move(cob), std::move(fail)};
  ha_->OnReplicate(NowMs(), token, std::move(in));
  Process();
}

void Runtime::Impl::AnswerReplicate(const ReplicateAnswer& a) {
  auto it = replicate_pending_.find(a.token);
  if (it == replicate_pending_.end()) return;
  ReplicatePending p = std::move(it->second);
  replicate_pending_.erase(it);
  if (a.error) {
    p.fail(MakeDtxError(a.error->code, a.error->message));
    return;
  }
  rpc::ReplicateResponse resp;
  resp.durable_lsn = static_cast<int64_t>(a.durable_lsn != 0 ? a.durable_lsn : wal_.log().durable_lsn());
  p.cob(resp);
}

void Runtime::Impl::SendAdoptEpoch(const AdoptEpochMsg& m) {
  const MessageId id = m.id;
  const int timeout_ms = static_cast<int>(std::clamp<uint64_t>(m.timeout_ms, 1, 60000));
  AdoptStubFor(m.to).AdoptEpoch(static_cast<int64_t>(m.epoch), address_, timeout_ms,
                                [this, id](const RpcStatus& st, const ParticipantPeerStub::AdoptEpochRefusal& r) {
                                  if (shut_down_) return;
                                  std::optional<Epoch> current;
                                  if (r.current_epoch && *r.current_epoch >= 0) {
                                    current = static_cast<Epoch>(*r.current_epoch);
                                  }
                                  ha_->OnAdoptEpochReply(NowMs(), id, ToCallStatus(st), st.ToString(), current,
                                                         r.owner);
                                  Process();
                                });
}

void Runtime::Impl::MaybeTruncate() {
  if (shut_down_ || truncate_wanted_ <= truncate_done_) return;
  Status s = wal_.log().TruncateBefore(truncate_wanted_);
  if (!s.ok()) FailStop("decision log truncation failed: " + s.ToString());
  DTX_LOG_DEBUG("decision log: records below lsn={} no longer needed", truncate_wanted_);
  truncate_done_ = truncate_wanted_;
}

// ---- Handler: the Thrift edge ----------------------------------------------------------

namespace {
rpc::DtxError ShuttingDown() {
  return MakeDtxError(rpc::ErrorCode::UNAVAILABLE, "coordinator is shutting down");
}
}  // namespace

void Handler::GetShardMap(std::function<void(const rpc::ShardMap&)> cob, ExnCob exn_cob) {
  if (target_ == nullptr) return exn_cob(Delay(ShuttingDown()));
  cob(target_->GetShardMap());
}

void Handler::Commit(std::function<void(const rpc::CommitResult&)> cob, ExnCob exn_cob,
                     const rpc::CommitRequest& req) {
  if (target_ == nullptr) return exn_cob(Delay(ShuttingDown()));
  target_->Commit(req, std::move(cob), FailVia(std::move(exn_cob)));
}

void Handler::QueryDecision(std::function<void(const rpc::Decision::type&)> cob, ExnCob exn_cob,
                            const rpc::TxId& txid) {
  if (target_ == nullptr) return exn_cob(Delay(ShuttingDown()));
  target_->QueryDecision(
      txid, [cob](rpc::Decision::type d) { cob(d); }, FailVia(std::move(exn_cob)));
}

void Handler::GetStatus(std::function<void(const rpc::NodeStatus&)> cob) {
  if (target_ == nullptr) {
    rpc::NodeStatus st;
    st.role = rpc::NodeRole::PRIMARY;
    return cob(st);
  }
  cob(target_->GetStatus());
}

void Handler::Replicate(std::function<void(const rpc::ReplicateResponse&)> cob, ExnCob exn_cob,
                        const rpc::ReplicateRequest& req) {
  if (target_ == nullptr) return exn_cob(Delay(ShuttingDown()));
  target_->Replicate(req, std::move(cob), FailVia(std::move(exn_cob)));
}

void Handler::Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob,
                        const rpc::HeartbeatRequest& req) {
  if (target_ == nullptr) {
    rpc::HeartbeatResponse resp;
    // role unset: shutting down (idl/dtx.thrift HeartbeatResponse).
    return cob(resp);
  }
  cob(target_->Heartbeat(req));
}

}  // namespace dtx::coordinator
