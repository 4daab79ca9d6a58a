#include "coordinator/runtime.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include "common/failpoint.h"
#include "common/log.h"
#include "common/trace_rpc.h"
#include "common/process_stats.h"
#include "common/rpc_error.h"

namespace dtx::coordinator {
namespace {

using apache::thrift::TDelayedException;

// Fail-stop: the node cannot trust its state (WAL failure) or was told to
// fail a step it has no other safe way to fail. Safe from any thread.
[[noreturn]] void FailStop(const std::string& why) {
  DTX_LOG_ERROR("fail-stop: {}; exiting", why);
  log::Flush();
  std::_Exit(1);
}

void EvalOrFailStop(fp::Point p, const TxId& txid) {
  Status s = fp::Eval(p);
  if (!s.ok()) FailStop("txid=" + txid.ToString() + " " + s.ToString());
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

std::optional<AbortReason> ReasonFromRpc(int r) {
  if (r >= static_cast<int>(AbortReason::kConflict) &&
      r <= static_cast<int>(AbortReason::kCoordinatorFailover)) {
    return static_cast<AbortReason>(r);
  }
  return std::nullopt;
}

rpc::PrepareRequest ToRpc(const PrepareMsg& m) {
  rpc::PrepareRequest req;
  req.txid = dtx::ToRpc(m.txid);
  req.epoch = m.epoch;
  req.reads.reserve(m.reads.size());
  for (const ReadItem& r : m.reads) {
    rpc::ReadItem item;
    item.key = r.key;
    item.version = r.version;
    req.reads.push_back(std::move(item));
  }
  req.writes.reserve(m.writes.size());
  for (const WriteItem& w : m.writes) {
    rpc::WriteItem item;
    item.key = w.key;
    if (w.value) item.__set_value(*w.value);
    req.writes.push_back(std::move(item));
  }
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
  req.reads.reserve(in.reads.size());
  for (const rpc::ReadItem& r : in.reads) req.reads.push_back(ReadItem{r.key, r.version});
  req.writes.reserve(in.writes.size());
  for (const rpc::WriteItem& w : in.writes) {
    WriteItem item;
    item.key = w.key;
    if (w.__isset.value) item.value = w.value;
    req.writes.push_back(std::move(item));
  }
  return req;
}

rpc::CommitResult ToRpc(const CommitResult& c) {
  rpc::CommitResult out;
  out.outcome = static_cast<rpc::Outcome::type>(c.outcome);
  if (c.reason) out.__set_reason(static_cast<rpc::AbortReason::type>(*c.reason));
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
      suspected(r.AddGaugeFamily("dtx_peer_suspected", "1 if this peer is suspected.", {"peer"})) {
  for (AbortReason a : {AbortReason::kConflict, AbortReason::kParticipantUnavailable, AbortReason::kTimeout,
                        AbortReason::kCoordinatorFailover}) {
    abort_by_reason[static_cast<int>(a)] = &aborts.Get({AbortReasonName(a)});
  }
  for (const char* x : {"primary", "backup", "starting"}) role.Get({x});
  r.AddCounterCallback("dtx_wal_syncs_total", "WAL fdatasync calls that succeeded.",
                       [this] { return static_cast<double>(wal_syncs.load(std::memory_order_relaxed)); });
  r.AddCounterCallback("dtx_wal_records_synced_total", "WAL records made durable.",
                       [this] { return static_cast<double>(wal_records_synced.load(std::memory_order_relaxed)); });
  r.AddCounterCallback("dtx_wal_sync_seconds_total", "Time spent in successful WAL fdatasync calls.",
                       [this] { return static_cast<double>(wal_sync_micros.load(std::memory_order_relaxed)) * 1e-6; });
  obs::RegisterProcessMetrics(&r);
}

Status Runtime::StartMetrics() {
  auto http = obs::StartNodeMetricsEndpoint(&registry_, options_.metrics_enabled,
                                            options_.metrics_host, options_.metrics_port,
                                            options_.dir);
  if (!http.ok()) return http.status();
  metrics_http_ = std::move(*http);
  if (metrics_http_ != nullptr) DTX_LOG_INFO("metrics on http://{}/metrics", metrics_address());
  return Status::OK();
}

std::string Runtime::metrics_address() const {
  if (metrics_http_ == nullptr) return "";
  return options_.metrics_host + ":" + std::to_string(metrics_http_->port());
}

void Runtime::UpdateMetrics() {
  const std::string label = RoleLabel();
  for (const char* x : {"primary", "backup", "starting"}) metrics_.role.Get({x}).Set(label == x ? 1 : 0);
  metrics_.epoch.Set(static_cast<double>(core_->epoch()));
  metrics_.in_flight.Set(static_cast<double>(core_->in_flight()));
  const uint64_t now = NowMs();
  auto age = [](int64_t ms) { return ms < 0 ? -1.0 : static_cast<double>(ms) * 1e-3; };
  for (const auto& [address, w] : watches_) {
    metrics_.heartbeat_age.Get({address}).Set(age(w.fd.AgeMs(now)));
    metrics_.suspected.Get({address}).Set(w.suspected ? 1 : 0);
  }
  if (peer_stub_) {
    metrics_.heartbeat_age.Get({options_.ha.peer}).Set(age(peer_fd_.AgeMs(now)));
    metrics_.suspected.Get({options_.ha.peer}).Set(peer_suspected_ ? 1 : 0);
  }
  // Outcome counters follow the core's own counts (a retried Commit is
  // answered again but counted once). A rebuilt core (step-down) starts
  // again from 0: its counts are then new.
  const CoreStats& cs = core_->stats();
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
  if (log_) {
    wal::Stats ws = log_->stats();
    metrics_.wal_syncs.store(ws.syncs, std::memory_order_relaxed);
    metrics_.wal_records_synced.store(ws.records_synced, std::memory_order_relaxed);
    metrics_.wal_sync_micros.store(ws.sync_micros_total, std::memory_order_relaxed);
  }
}

// ---- Runtime ------------------------------------------------------------------------

Runtime::Runtime(EventLoop* loop, RuntimeOptions options)
    : loop_(loop),
      options_(std::move(options)),
      alive_(std::make_shared<int>(0)),
      tracing_(options_.trace_events > 0),
      trace_(obs::TraceRing::Options{.events_max = std::clamp<size_t>(options_.trace_events, 1,
                                                                      obs::kTraceEventsMax),
                                     .log_events = true}) {}

void Runtime::Trace(const TxId& txid, const char* event, std::string_view detail) {
  if (tracing_) trace_.Record(txid, event, detail);
}

std::string Runtime::ParticipantName(const std::string& address) const {
  for (size_t i = 0; i < options_.participants.size(); ++i) {
    if (options_.participants[i] == address) return "participant-" + std::to_string(i);
  }
  return address;
}

Result<std::unique_ptr<Runtime>> Runtime::Start(EventLoop* loop, RuntimeOptions options) {
  std::unique_ptr<Runtime> rt(new Runtime(loop, std::move(options)));
  Status s = rt->Init();
  if (!s.ok()) {
    rt->Shutdown();
    return s;
  }
  return rt;
}

Status Runtime::Init() {
  start_ms_ = NowMs();
  handler_ = std::make_shared<Handler>(this);
  RpcServerOptions so;
  so.host = options_.listen_host;
  so.port = options_.listen_port;
  so.name = options_.name;
  server_ = std::make_unique<RpcServer>(
      loop_, std::make_shared<rpc::CoordinatorPeerAsyncProcessor>(handler_), so);
  DTX_RETURN_IF_ERROR(server_->Start());
  address_ = server_->address();

  CoreOptions co = options_.core;
  co.participants = options_.participants;
  co.self_address = address_;
  core_options_ = co;
  core_ = std::make_unique<CoordinatorCore>(co);

  uint64_t replayed = 0;
  Result<std::unique_ptr<wal::Log>> log = wal::Log::Open(
      options_.wal, options_.dir + "/wal",
      [this, &replayed](wal::Lsn lsn, uint8_t type, std::string_view payload) {
        ++replayed;
        return core_->Replay(lsn, type, payload);
      });
  if (!log.ok()) return log.status();
  log_ = std::move(*log);
  role_ = options_.ha.role;
  if (options_.ha.peer.empty()) {
    role_ = Role::kPrimary;  // alone: nobody else could decide
    backup_state_ = BackupState::kNone;
  } else {
    backup_state_ = BackupState::kDown;  // until it answers and has our snapshot
  }
  if (role_ == Role::kPrimary && options_.ha.peer.empty()) {
    core_->Start(NowMs());
    established_ = true;
    solo_ok_ = true;
    DTX_LOG_INFO("recovered the decision log: records={} epoch={} durable_lsn={} "
                 "decisions_to_redrive={}",
                 replayed, core_->epoch(), log_->durable_lsn(), core_->committing());
  } else if (role_ == Role::kPrimary) {
    // With a peer, a starting primary does not know whether the peer took
    // over while it was down, nor whether the peer holds the DECISIONs in
    // our log: it decides (and re-drives) nothing until it has moved to a
    // newer epoch at a majority of participants, or steps down when the
    // peer is primary (DriveRole).
    DTX_LOG_INFO("recovered the decision log: records={} epoch={} durable_lsn={}; starting: "
                 "will establish a newer epoch before serving",
                 replayed, core_->epoch(), log_->durable_lsn());
  } else {
    // A backup mirrors the primary's log; it never decides, so its core is
    // only fed Replay (here, and for every replicated record).
    DTX_LOG_INFO("backup: replayed the local log: records={} epoch={} durable_lsn={}; "
                 "not in sync until the primary's snapshot is durable here",
                 replayed, core_->epoch(), log_->durable_lsn());
  }
  Process();
  // The EPOCH record of a fresh log must be durable before commits are
  // accepted: wait for it here so the node is ready once it serves.
  for (const auto& [tag, lsn] : init_forced_) {
    DTX_RETURN_IF_ERROR(log_->WaitDurable(lsn));
    core_->OnPersisted(NowMs(), tag, lsn);  // the posted notice later finds nothing to do
  }
  init_forced_.clear();
  initializing_ = false;
  Process();

  tick_timer_ = loop_->RunEvery(kTickIntervalMs, [this] {
    if (core_->started()) core_->Tick(NowMs());
    CheckSuspicions();
    Process();
    UpdateMetrics();
  });
  FailureDetectorOptions fdo = options_.ha.detector;
  fdo.heartbeat_interval_ms = options_.ha.heartbeat_ms;
  for (const std::string& p : options_.participants) {
    auto [it, inserted] = watches_.emplace(p, ParticipantWatch{FailureDetector(fdo)});
    it->second.fd.Start(NowMs());
  }
  peer_fd_ = FailureDetector(fdo);
  peer_fd_.Start(NowMs());
  if (!options_.ha.peer.empty()) {
    peer_stub_ = std::make_unique<CoordinatorPeerStub>(loop_, options_.ha.peer);
  }
  heartbeat_timer_ = loop_->RunEvery(options_.ha.heartbeat_ms, [this] { HeartbeatRound(); });
  HeartbeatRound();
  truncate_timer_ = loop_->RunEvery(kTruncateIntervalMs, [this] { MaybeTruncate(); });
  UpdateMetrics();
  DTX_RETURN_IF_ERROR(StartMetrics());
  DTX_LOG_INFO("serving on {} as {} with {} participants; peer coordinator {}", address_,
               RoleName(role_), options_.participants.size(),
               options_.ha.peer.empty() ? "none (alone)" : options_.ha.peer);
  return Status::OK();
}

Runtime::~Runtime() {
  Shutdown();
  // ~Log syncs what is queued; its durable callbacks Post() into the loop,
  // where they find alive_ expired and do nothing.
  log_.reset();
}

void Runtime::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (metrics_http_) metrics_http_->Stop();
  if (handler_) handler_->Detach();
  if (tick_timer_ != 0) loop_->Cancel(tick_timer_);
  if (truncate_timer_ != 0) loop_->Cancel(truncate_timer_);
  if (heartbeat_timer_ != 0) loop_->Cancel(heartbeat_timer_);
  tick_timer_ = truncate_timer_ = heartbeat_timer_ = 0;
  if (peer_stub_ && peer_stub_->channel()) peer_stub_->channel()->Close();
  if (server_) server_->Close();
  for (auto& [address, stub] : stubs_) {
    if (stub.channel()) stub.channel()->Close();  // callbacks see shut_down_
  }
  stubs_.clear();
  pending_.clear();
}

std::string Runtime::address() const { return address_; }

uint64_t Runtime::NowMs() const { return loop_->NowMs(); }

rpc::ShardMap Runtime::GetShardMap() const {
  ShardMap m = core_->shard_map();
  rpc::ShardMap out;
  out.version = m.version;
  out.scheme = m.scheme;
  out.participants = m.participants;
  return out;
}

void Runtime::Commit(const rpc::CommitRequest& req,
                     std::function<void(const rpc::CommitResult&)> cob,
                     std::function<void(const rpc::DtxError&)> fail) {
  if (role_ != Role::kPrimary) {
    fail(MakeDtxError(rpc::ErrorCode::NOT_PRIMARY, "this coordinator is a backup",
                      options_.ha.peer));
    return;
  }
  RequestToken token = next_token_++;
  CommitRequest creq = FromRpc(req);
  Trace(creq.txid, obs::span::kReceived, creq.is_retry ? "retry" : "");
  pending_[token] = Pending{creq.txid, std::move(cob), nullptr, std::move(fail), PhaseNow()};
  core_->Commit(NowMs(), token, std::move(creq));
  Process();
}

void Runtime::QueryDecision(const rpc::TxId& txid, std::function<void(rpc::Decision::type)> cob,
                            std::function<void(const rpc::DtxError&)> fail) {
  TxId t = dtx::FromRpc(txid);
  if (role_ != Role::kPrimary) {
    // A backup decides nothing, and its log may hold DECISIONs that never
    // reached a commit point (from before it stepped down, until the next
    // snapshot): only the primary answers.
    cob(rpc::Decision::UNKNOWN);
    return;
  }
  RequestToken token = next_token_++;
  pending_[token] = Pending{t, nullptr, std::move(cob), std::move(fail)};
  core_->QueryDecision(NowMs(), token, t);
  Process();
}

rpc::NodeStatus Runtime::GetStatus() const {
  rpc::NodeStatus st;
  st.name = options_.name;
  st.role = RoleLabel();
  st.epoch = core_->epoch();
  st.uptime_ms = static_cast<int64_t>(NowMs() - start_ms_);
  st.durable_lsn = static_cast<int64_t>(log_ ? log_->durable_lsn() : 0);
  st.in_flight = static_cast<int64_t>(core_->in_flight());
  st.in_doubt = 0;
  const uint64_t now = NowMs();
  for (size_t i = 0; i < options_.participants.size(); ++i) {
    rpc::PeerStatus p;
    p.name = "participant-" + std::to_string(i);
    p.address = options_.participants[i];
    auto w = watches_.find(p.address);
    p.heartbeat_age_ms = w == watches_.end() ? -1 : w->second.fd.AgeMs(now);
    p.suspected = w != watches_.end() && w->second.suspected;
    st.peers.push_back(std::move(p));
  }
  if (!options_.ha.peer.empty()) {
    rpc::PeerStatus p;
    p.name = peer_name_.empty() ? "coordinator-peer" : peer_name_;
    if (!peer_role_.empty()) p.name += " (" + peer_role_ + ")";
    p.address = options_.ha.peer;
    p.heartbeat_age_ms = peer_fd_.AgeMs(now);
    p.suspected = peer_suspected_;
    st.peers.push_back(std::move(p));
  }
  const CoreStats& cs = core_->stats();
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
  c["committing"] = static_cast<int64_t>(core_->committing());
  c["fenced"] = core_->fenced() ? 1 : 0;
  c["rejected_suspected"] = static_cast<int64_t>(cs.rejected_suspected);
  c["established"] = established_ ? 1 : 0;
  c["promotions"] = static_cast<int64_t>(promotions_);
  c["participant_suspicions"] = static_cast<int64_t>(participant_suspicions_);
  c["peer_suspicions"] = static_cast<int64_t>(peer_suspicions_);
  c["step_downs"] = static_cast<int64_t>(step_downs_);
  c["epoch_bump_in_progress"] = bump_.epoch;
  if (role_ == Role::kPrimary) {
    // backup_state: 0 none (alone by configuration), 1 down (committing
    // alone), 2 syncing, 3 in sync.
    c["backup_state"] = static_cast<int64_t>(backup_state_);
    c["backup_in_sync"] = backup_state_ == BackupState::kInSync ? 1 : 0;
    c["committing_alone"] = backup_state_ == BackupState::kInSync ||
                                    backup_state_ == BackupState::kSyncing
                                ? 0
                                : 1;
    c["backup_losses"] = static_cast<int64_t>(backup_losses_);
    c["replication_generation"] = generation_;
  } else {
    c["in_sync"] = in_sync_ ? 1 : 0;
    c["replication_generation"] = sync_generation_;
    c["replicated_records"] = static_cast<int64_t>(replicated_records_);
  }
  if (log_) {
    wal::Stats ws = log_->stats();
    c["wal_syncs"] = static_cast<int64_t>(ws.syncs);
    c["wal_records_synced"] = static_cast<int64_t>(ws.records_synced);
    c["wal_bytes_written"] = static_cast<int64_t>(ws.bytes_written);
  }
  st.__set_counters(std::move(c));
  return st;
}

// ---- draining the core ----------------------------------------------------------------

void Runtime::Process() {
  if (in_process_ || shut_down_) return;  // the outer call drains what this one would
  in_process_ = true;
  for (;;) {
    Ready r = core_->TakeReady();
    if (r.empty()) break;
    // The core's ordering rule: records first, then messages, then replies.
    for (const PersistRecord& p : r.persist) Append(p);
    for (const OutMessage& m : r.send) SendMessage(m);
    for (Reply& rep : r.replies) Deliver(rep);
    if (r.truncate_before != 0) truncate_wanted_ = std::max(truncate_wanted_, r.truncate_before);
  }
  FlushReplicate();
  in_process_ = false;
  if (core_->fenced() && !fenced_logged_) {
    fenced_logged_ = true;
    DTX_LOG_WARN("a participant reported a newer coordinator epoch than {}: this coordinator "
                 "is fenced and refuses new commits (NOT_PRIMARY)",
                 core_->epoch());
    if (!options_.ha.peer.empty()) StepDownLater("a participant reported a newer epoch");
  }
}

void Runtime::Append(const PersistRecord& p) {
  if (p.type == RecordType::kDecision) {
    EvalOrFailStop(fp::Point::kCoordinatorVotesAfterAll, p.txid);
    EvalOrFailStop(fp::Point::kCoordinatorDecisionBeforeLog, p.txid);
  } else if (p.type == RecordType::kEnd) {
    EvalOrFailStop(fp::Point::kCoordinatorEndBeforeLog, p.txid);
    if (auto it = phase2_start_.find(p.txid); it != phase2_start_.end()) {
      metrics_.phase2.Observe(static_cast<double>(PhaseNow() - it->second) * 1e-6);
      phase2_start_.erase(it);
    }
  }
  // The LSN is known only when Append returns; the posted callback runs on
  // this (the loop) thread after this Process() returns, so it reads the
  // value set below.
  auto lsn_box = std::make_shared<wal::Lsn>(0);
  std::weak_ptr<int> alive = alive_;
  EventLoop* loop = loop_;
  Runtime* self = this;
  PersistTag tag = p.tag;
  RecordType type = p.type;
  TxId txid = p.txid;
  bool forced = p.forced;
  // Runs on the WAL flusher thread: exit on failure, else hand the news to
  // the loop. Non-forced records need no news.
  wal::DurableFn on_durable = [=](const Status& s) {
    if (!s.ok()) FailStop("decision log record did not become durable: " + s.ToString());
    if (!forced) return;
    loop->Post([=] {
      if (alive.expired()) return;
      self->OnDurable(tag, type, txid, *lsn_box);
    });
  };
  Result<wal::Lsn> lsn = log_->Append(static_cast<uint8_t>(p.type), p.payload, on_durable);
  if (!lsn.ok()) FailStop("decision log append failed: " + lsn.status().ToString());
  *lsn_box = *lsn;
  if (p.type == RecordType::kDecision) {
    Trace(p.txid, obs::span::kLogged);
  } else if (p.type == RecordType::kEnd) {
    Trace(p.txid, "ended");
  }
  if (initializing_ && p.forced) init_forced_.emplace_back(p.tag, *lsn);
  if (p.type == RecordType::kDecision && p.forced) {
    if (auto t = timings_.find(p.txid); t != timings_.end()) t->second.decision_appended = PhaseNow();
    DecisionWait w;
    w.txid = p.txid;
    decision_waits_.emplace(p.tag, w);
  }
  QueueReplicate(p);
  if (p.type == RecordType::kDecision) {
    DTX_LOG_DEBUG("txid={} phase=decision lsn={} all votes yes, DECISION appended",
                  txid.ToString(), *lsn);
  }
}

void Runtime::OnDurable(PersistTag tag, RecordType type, TxId txid, uint64_t lsn) {
  if (shut_down_) return;
  if (type == RecordType::kDecision) Trace(txid, obs::span::kSynced);
  auto w = decision_waits_.find(tag);
  if (type == RecordType::kDecision && w != decision_waits_.end()) {
    w->second.local = true;
    w->second.lsn = lsn;
    MaybeRelease(tag);
    return;
  }
  if (type == RecordType::kDecision) {
    EvalOrFailStop(fp::Point::kCoordinatorDecisionAfterLog, txid);
    NoteDecisionReleased(txid);
  }
  core_->OnPersisted(NowMs(), tag, lsn);
  if (type == RecordType::kEpoch && solo_epoch_pending_ != 0 && !core_->epoch_pending() &&
      core_->epoch() == solo_epoch_pending_) {
    DTX_LOG_WARN("epoch {} is durable and held by a majority of participants: the backup is "
                 "fenced out; committing alone until it is re-synced",
                 solo_epoch_pending_);
    solo_epoch_pending_ = 0;
    if (backup_state_ == BackupState::kDown) {
      solo_ok_ = true;
      std::vector<PersistTag> waiting;
      for (const auto& [t, w] : decision_waits_) waiting.push_back(t);
      for (PersistTag t : waiting) MaybeRelease(t);
    }
  }
  Process();
}

void Runtime::MaybeRelease(PersistTag tag) {
  auto it = decision_waits_.find(tag);
  if (it == decision_waits_.end()) return;
  const DecisionWait& w = it->second;
  // The commit point: durable here and at the backup - or, with no backup
  // that could take over (alone by configuration, or after fencing it out
  // with a newer epoch at a majority of participants), here alone.
  if (!w.local || (!w.backup && !solo_ok_)) return;
  TxId txid = w.txid;
  uint64_t lsn = w.lsn;
  decision_waits_.erase(it);
  EvalOrFailStop(fp::Point::kCoordinatorDecisionAfterLog, txid);
  NoteDecisionReleased(txid);
  core_->OnPersisted(NowMs(), tag, lsn);
  Process();
}

// ---- per-phase latency ------------------------------------------------------------------

int64_t Runtime::PhaseNow() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Runtime::NotePrepareSent(const TxId& txid) {
  auto it = timings_.find(txid);
  if (it == timings_.end()) {
    if (timings_.size() >= kPhaseTimingsMax) return;  // unmeasured, not unbounded
    it = timings_.emplace(txid, PhaseTiming{}).first;
  }
  if (it->second.prepare_sent == 0) it->second.prepare_sent = PhaseNow();
}

void Runtime::NoteVote(const TxId& txid) {
  auto it = timings_.find(txid);
  if (it != timings_.end() && it->second.decision_appended == 0) it->second.last_vote = PhaseNow();
}

void Runtime::NoteDecisionReleased(const TxId& txid) {
  auto it = timings_.find(txid);
  if (it != timings_.end() && it->second.decision_appended != 0) {
    it->second.decision_released = PhaseNow();
  }
}

void Runtime::FillTimings(const TxId& txid, rpc::CommitResult& out) {
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

ParticipantStub& Runtime::StubFor(const std::string& address) {
  auto it = stubs_.find(address);
  if (it == stubs_.end()) {
    it = stubs_.emplace(address, ParticipantStub(loop_, address)).first;
  }
  return it->second;
}

void Runtime::SendMessage(const OutMessage& m) {
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
                     // Same numbers (core.h mirrors idl/dtx.thrift ErrorCode).
                     r.error_code = static_cast<ErrorCode>(*st.error_code());
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
                     if (resp.__isset.reason) r.reason = ReasonFromRpc(resp.reason);
                     if (resp.__isset.detail) r.detail = resp.detail;
                   } else {
                     DTX_LOG_INFO("txid={} phase=prepare participant={} failed: {}",
                                  txid.ToString(), to, st.ToString());
                   }
                   core_->OnPrepareReply(NowMs(), r);
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
                  core_->OnCommitReply(NowMs(), a);
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
    core_->OnAbortReply(NowMs(), a);
    Process();
  });
}

void Runtime::Deliver(Reply& reply) {
  auto it = pending_.find(reply.token);
  if (it == pending_.end()) return;  // cannot happen: every token is answered once
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (const auto* err = std::get_if<Error>(&reply.body)) {
    DTX_LOG_DEBUG("txid={} request refused: {} {}", p.txid.ToString(),
                  ErrorCodeName(static_cast<rpc::ErrorCode::type>(err->code)), err->message);
    if (tracing_ && p.commit_cob) {
      Trace(p.txid, "replied",
            std::string("error:") + ErrorCodeName(static_cast<rpc::ErrorCode::type>(err->code)));
    }
    p.fail(MakeDtxError(static_cast<rpc::ErrorCode::type>(err->code), err->message));
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
    p.query_cob(static_cast<rpc::Decision::type>(d));
  } else {
    p.fail(MakeDtxError(rpc::ErrorCode::INTERNAL, "decision for a non-query request"));
  }
}


// ---- heartbeats and failure detection -------------------------------------------------

const char* Runtime::BackupStateName(BackupState s) {
  switch (s) {
    case BackupState::kNone: return "none";
    case BackupState::kDown: return "down";
    case BackupState::kSyncing: return "syncing";
    case BackupState::kInSync: return "in-sync";
  }
  return "?";
}

void Runtime::HeartbeatRound() {
  if (shut_down_) return;
  // A probe still out is not duplicated: its reply (or timeout) decides.
  const int timeout_ms = static_cast<int>(std::clamp<uint64_t>(
      options_.ha.detector.suspect_after_ms, 1, 60000));
  rpc::HeartbeatRequest hb;
  hb.sender = address_;
  hb.role = RoleLabel();
  hb.epoch = core_->epoch();
  for (auto& [address, w] : watches_) {
    if (w.probe_out) continue;
    w.probe_out = true;
    std::string a = address;
    auto done = [this, a](const RpcStatus& st) {
      if (shut_down_) return;
      auto it = watches_.find(a);
      if (it == watches_.end()) return;
      it->second.probe_out = false;
      if (st.ok()) {
        it->second.fd.Heartbeat(NowMs());
      } else if (st.code() == Status::Code::kNotSupported && !it->second.heartbeat_unsupported) {
        it->second.heartbeat_unsupported = true;
        DTX_LOG_INFO("participant {} does not serve Heartbeat; probing it with GetStatus", a);
      }
      CheckSuspicions();
    };
    if (w.heartbeat_unsupported) {
      StubFor(address).GetStatus(timeout_ms, [done](const RpcStatus& st, const rpc::NodeStatus&) {
        done(st);
      });
    } else {
      // On the AdoptEpoch channel: a participant without the service closes
      // that connection, not the one carrying 2PC.
      AdoptStubFor(address).Heartbeat(
          hb, timeout_ms, [done](const RpcStatus& st, const rpc::HeartbeatResponse&) { done(st); });
    }
  }
  if (peer_stub_ && !peer_probe_out_) {
    peer_probe_out_ = true;
    rpc::HeartbeatRequest req;
    req.sender = address_;
    req.role = RoleLabel();
    req.epoch = core_->epoch();
    peer_stub_->Heartbeat(req, timeout_ms,
                          [this](const RpcStatus& st, const rpc::HeartbeatResponse& resp) {
                            if (shut_down_) return;
                            peer_probe_out_ = false;
                            if (st.ok()) {
                              peer_fd_.Heartbeat(NowMs());
                              OnPeerHeartbeat(resp);
                            }
                            CheckSuspicions();
                          });
  }
  if (role_ == Role::kPrimary && backup_state_ == BackupState::kInSync &&
      replicated_since_snapshot_ >= options_.ha.resync_after_records) {
    // A fresh snapshot lets the backup drop its older log.
    StartSync();
  }
}

void Runtime::CheckSuspicions() {
  if (shut_down_) return;
  const uint64_t now = NowMs();
  for (auto& [address, w] : watches_) {
    bool s = w.fd.Suspected(now);
    if (s == w.suspected) continue;
    w.suspected = s;
    if (s) {
      ++participant_suspicions_;
      DTX_LOG_WARN("participant {} suspected: no heartbeat for {} ms", address,
                   w.fd.heard() ? w.fd.AgeMs(now) : static_cast<int64_t>(-1));
    } else {
      DTX_LOG_INFO("participant {} is answering heartbeats again", address);
    }
    if (role_ == Role::kPrimary && core_->started()) {
      core_->SetParticipantSuspected(now, address, s);
    }
  }
  DriveRole();
  if (peer_stub_) {
    bool s = peer_fd_.Suspected(now);
    if (s != peer_suspected_) {
      peer_suspected_ = s;
      if (s) {
        ++peer_suspicions_;
        DTX_LOG_WARN("peer coordinator {} suspected: no heartbeat for {} ms", options_.ha.peer,
                     peer_fd_.AgeMs(now));
        if (role_ == Role::kPrimary) BackupLost("backup suspected (no heartbeat)");
        peer_suspected_at_ms_ = now;
      } else {
        DTX_LOG_INFO("peer coordinator {} is answering heartbeats again", options_.ha.peer);
      }
    }
  }
  Process();
}

void Runtime::OnPeerHeartbeat(const rpc::HeartbeatResponse& resp) {
  peer_name_ = resp.name;
  peer_role_ = resp.role;
  peer_epoch_ = resp.epoch;
  if (role_ == Role::kPrimary && resp.role == "primary" && resp.epoch > core_->epoch()) {
    StepDownLater("peer " + options_.ha.peer + " is primary at epoch " +
                  std::to_string(resp.epoch));
    return;
  }
  if (role_ == Role::kPrimary && established_ && resp.role == "backup" &&
      backup_state_ == BackupState::kDown && bump_.epoch == 0) {
    StartSync();
  }
  DriveRole();
}

rpc::HeartbeatResponse Runtime::Heartbeat(const rpc::HeartbeatRequest& req) {
  if (req.sender == options_.ha.peer) {
    // Proof of life from the peer, whichever side probes.
    peer_fd_.Heartbeat(NowMs());
    peer_role_ = req.role;
    peer_epoch_ = req.epoch;
  }
  if (role_ == Role::kPrimary && req.role == "primary" && req.epoch > core_->epoch()) {
    StepDownLater("peer " + req.sender + " is primary at epoch " + std::to_string(req.epoch));
  }
  rpc::HeartbeatResponse resp;
  resp.name = options_.name;
  resp.role = RoleLabel();
  resp.epoch = core_->epoch();
  if (role_ == Role::kBackup) resp.__set_in_sync(in_sync_);
  return resp;
}

// ---- replication: primary side --------------------------------------------------------

void Runtime::QueueReplicate(const PersistRecord& p) {
  if (backup_state_ != BackupState::kInSync && backup_state_ != BackupState::kSyncing) return;
  rpc::LogRecord r;
  r.type = static_cast<int8_t>(p.type);
  r.payload = p.payload;
  repl_batch_.push_back(std::move(r));
  if (p.type == RecordType::kDecision && p.forced) repl_batch_tags_.push_back(p.tag);
}

void Runtime::FlushReplicate() {
  if (repl_batch_.empty() || !peer_stub_) return;
  rpc::ReplicateRequest req;
  req.epoch = core_->epoch();
  req.primary = address_;
  req.generation = generation_;
  req.snapshot = false;
  req.records = std::move(repl_batch_);
  repl_batch_.clear();
  std::vector<PersistTag> tags = std::move(repl_batch_tags_);
  repl_batch_tags_.clear();
  replicated_since_snapshot_ += req.records.size();
  const int64_t gen = generation_;
  const int timeout_ms =
      static_cast<int>(std::clamp<uint64_t>(options_.ha.replicate_timeout_ms, 1, INT32_MAX));
  peer_stub_->Replicate(req, timeout_ms,
                        [this, gen, tags](const RpcStatus& st, const rpc::ReplicateResponse&) {
                          if (shut_down_) return;
                          OnReplicateReply(gen, tags, st);
                        });
}

void Runtime::StartSync() {
  if (!peer_stub_ || role_ != Role::kPrimary || !established_) return;
  ++generation_;
  backup_state_ = BackupState::kSyncing;
  replicated_since_snapshot_ = 0;
  // From now on the backup may count itself in sync and take over if we
  // die: every decision needs its ack.
  solo_ok_ = false;
  // Records queued for the previous generation are covered by the snapshot.
  repl_batch_.clear();
  repl_batch_tags_.clear();
  rpc::ReplicateRequest req;
  req.epoch = core_->epoch();
  req.primary = address_;
  req.generation = generation_;
  req.snapshot = true;
  auto add = [&req](const Record& r) {
    rpc::LogRecord lr;
    lr.type = static_cast<int8_t>(TypeOf(r));
    lr.payload = EncodePayload(r);
    req.records.push_back(std::move(lr));
  };
  add(SyncRecord{generation_});
  add(EpochRecord{core_->epoch()});
  // Every DECISION appended and not ENDed, including ones not yet durable
  // here: those wait for this snapshot's ack like any in-sync DECISION.
  std::vector<PersistTag> tags;
  for (const DecisionRecord& d : core_->OpenDecisions()) add(d);
  for (auto& [tag, w] : decision_waits_) {
    w.backup = false;
    tags.push_back(tag);
  }
  DTX_LOG_INFO("replication: sending a snapshot to backup {} (generation {}, {} records)",
               options_.ha.peer, generation_, req.records.size());
  const int64_t gen = generation_;
  const int timeout_ms = static_cast<int>(
      std::clamp<uint64_t>(options_.ha.replicate_timeout_ms * 5, 1, INT32_MAX));
  peer_stub_->Replicate(req, timeout_ms,
                        [this, gen, tags](const RpcStatus& st, const rpc::ReplicateResponse&) {
                          if (shut_down_) return;
                          if (gen == generation_ && st.ok() &&
                              backup_state_ == BackupState::kSyncing) {
                            backup_state_ = BackupState::kInSync;
                            DTX_LOG_INFO("replication: backup {} is in sync (generation {})",
                                         options_.ha.peer, gen);
                          }
                          OnReplicateReply(gen, tags, st);
                        });
}

void Runtime::OnReplicateReply(int64_t generation, const std::vector<PersistTag>& tags,
                               const RpcStatus& st) {
  if (generation != generation_) return;  // an older generation: already settled
  if (!st.ok()) {
    BackupLost("Replicate failed: " + st.ToString());
    return;
  }
  for (PersistTag t : tags) {
    auto it = decision_waits_.find(t);
    if (it == decision_waits_.end()) continue;
    it->second.backup = true;
    Trace(it->second.txid, "replicated");
    MaybeRelease(t);
  }
}

void Runtime::BackupLost(const std::string& why) {
  if (backup_state_ != BackupState::kInSync && backup_state_ != BackupState::kSyncing) return;
  ++generation_;  // replies still out belong to the lost generation
  ++backup_losses_;
  backup_state_ = BackupState::kDown;
  repl_batch_.clear();
  repl_batch_tags_.clear();
  // The backup may still think it is in sync (it may only be cut off from
  // us), so committing alone now could let it take over without our
  // decisions. Decisions wait until DriveRole has fenced it out with a newer
  // epoch at a majority of participants (then we commit alone) or we learn
  // that it took over (then we step down and they never commit here).
  DTX_LOG_WARN("replication: backup {} lost ({}); fencing it out before committing alone",
               options_.ha.peer, why);
  DriveRole();
}


// ---- failover and fencing -------------------------------------------------------------

const char* Runtime::RoleLabel() const {
  if (role_ == Role::kBackup) return "backup";
  return established_ ? "primary" : "starting";
}

ParticipantPeerStub& Runtime::AdoptStubFor(const std::string& address) {
  // Its own channel: a participant without the ParticipantPeer service
  // closes the connection on the unknown method, which must not cost the
  // 2PC traffic on the shared channel.
  auto it = adopt_stubs_.find(address);
  if (it == adopt_stubs_.end()) {
    it = adopt_stubs_.emplace(address, ParticipantPeerStub(loop_, address)).first;
  }
  return it->second;
}

void Runtime::DriveRole() {
  if (shut_down_ || options_.ha.peer.empty() || bump_.epoch != 0 || establishing_) return;
  const uint64_t now = NowMs();
  if (now < bump_retry_at_ms_) return;
  if (role_ == Role::kPrimary && !established_) {
    if (peer_role_ == "primary" && peer_epoch_ >= core_->epoch()) {
      StepDownLater("peer " + options_.ha.peer + " is primary at epoch " +
                    std::to_string(peer_epoch_));
      return;
    }
    if (peer_role_.empty() && !peer_suspected_) return;  // wait to hear from it, or suspect it
    if (peer_role_ == "starting" && !peer_suspected_ && address_ > options_.ha.peer) {
      return;  // both starting: the lower address goes first
    }
    StartBump(core_->epoch() + 1, "starting as primary");
  } else if (role_ == Role::kPrimary && established_ && !solo_ok_ &&
             backup_state_ == BackupState::kDown && solo_epoch_pending_ == 0) {
    StartBump(core_->epoch() + 1, "backup lost: fencing it out before committing alone");
  } else if (role_ == Role::kBackup && in_sync_ && peer_suspected_) {
    StartBump(core_->epoch() + 1, "primary suspected: promoting");
  } else if (role_ == Role::kBackup && !in_sync_ && !peer_suspected_ && peer_role_ == "backup" &&
             core_->epoch() > 0 &&
             (core_->epoch() > peer_epoch_ ||
              (core_->epoch() == peer_epoch_ && address_ < options_.ha.peer))) {
    // Both coordinators are backups (e.g. both restarted, the one started
    // as primary with the older log stepped down). The newest log is the
    // owner of its epoch - the other's epoch is lower - or, at equal epochs,
    // acked every decision of it: it holds every commit decision and takes
    // over. Exclusive epoch grants keep a race with the peer safe.
    DTX_LOG_WARN("both coordinators are backups; our log (epoch {}) is at least as new as the "
                 "peer's (epoch {}): taking over",
                 core_->epoch(), peer_epoch_);
    role_ = Role::kPrimary;  // starting; established once the new epoch is durable
    StartBump(core_->epoch() + 1, "both coordinators are backups: the newest log takes over");
  }
}

void Runtime::StartBump(Epoch epoch, const std::string& why) {
  bump_ = Bump{};
  bump_.id = ++next_bump_id_;
  bump_.epoch = epoch;
  bump_.started_ms = NowMs();
  bump_.why = why;
  DTX_LOG_INFO("epoch {}: asking {} participants to adopt it ({})", epoch,
               options_.participants.size(), why);
  if (options_.participants.empty()) {
    bump_.decided = true;
    BumpSucceeded();
    return;
  }
  const int timeout_ms = static_cast<int>(
      std::clamp<uint64_t>(options_.ha.detector.suspect_after_ms, 1, 60000));
  const uint64_t id = bump_.id;
  for (const std::string& p : options_.participants) {
    AdoptStubFor(p).AdoptEpoch(epoch, address_, timeout_ms, [this, id, p](const RpcStatus& st) {
      if (shut_down_) return;
      OnAdoptEpochReply(id, p, st);
    });
  }
}

void Runtime::OnAdoptEpochReply(uint64_t bump_id, const std::string& participant,
                                const RpcStatus& st) {
  if (bump_id != bump_.id || bump_.epoch == 0 || bump_.decided) return;
  if (st.ok()) {
    ++bump_.ok;
  } else {
    ++bump_.failed;
    bump_.last_error = participant + ": " + st.ToString();
    if (st.error_code() && *st.error_code() == rpc::ErrorCode::STALE_EPOCH) bump_.stale = true;
  }
  const size_t n = options_.participants.size();
  const size_t majority = n / 2 + 1;
  // Each participant grants an epoch to one coordinator only, so at most one
  // of two contenders reaches a majority; a STALE_EPOCH from some
  // participants does not stop us from winning at the others.
  if (bump_.ok >= majority) {
    bump_.decided = true;
    BumpSucceeded();
  } else if (bump_.ok + bump_.failed == n) {
    bump_.decided = true;
    BumpFailed(bump_.stale, "only " + std::to_string(bump_.ok) + " of " + std::to_string(n) +
                                " participants adopted it; last error " + bump_.last_error);
  }
}

void Runtime::BumpSucceeded() {
  const Epoch e = bump_.epoch;
  DTX_LOG_INFO("epoch {} adopted by a majority of participants in {} ms ({})", e,
               NowMs() - bump_.started_ms, bump_.why);
  bump_.epoch = 0;
  if (role_ == Role::kPrimary && established_) {
    // The backup (which may think it is in sync) can no longer take over
    // at e: commit alone once EPOCH e is durable here.
    solo_epoch_pending_ = e;
    core_->BumpEpoch(NowMs(), e);
    Process();
    return;
  }
  if (role_ == Role::kBackup && !in_sync_) {
    // A snapshot arrived meanwhile and is not durable yet: try again later.
    bump_retry_at_ms_ = NowMs() + options_.ha.heartbeat_ms;
    return;
  }
  if (role_ == Role::kBackup) ++promotions_;
  role_ = Role::kPrimary;  // refuses Replicate from now on
  EstablishAt(e);
}

void Runtime::BumpFailed(bool stale, const std::string& why) {
  const Epoch e = bump_.epoch;
  bump_.epoch = 0;
  bump_retry_at_ms_ = NowMs() + options_.ha.detector.suspect_after_ms;
  DTX_LOG_WARN("epoch {} not adopted ({}): {}", e, stale ? "a newer coordinator exists" : "no majority",
               why);
  if (!stale) return;  // try again later
  if (role_ == Role::kBackup) {
    // Someone moved past our epoch without us: we do not hold its decisions.
    in_sync_ = false;
    return;
  }
  StepDownLater("epoch " + std::to_string(e) + " is held by another coordinator");
}

void Runtime::EstablishAt(Epoch epoch) {
  DTX_CHECK(!core_->started() && !establishing_);
  establishing_ = true;
  std::string payload = EncodePayload(EpochRecord{epoch});
  std::weak_ptr<int> alive = alive_;
  EventLoop* loop = loop_;
  auto lsn_box = std::make_shared<wal::Lsn>(0);
  wal::DurableFn on_durable = [=, this](const Status& s) {
    if (!s.ok()) FailStop("EPOCH record did not become durable: " + s.ToString());
    loop->Post([=, this] {
      if (alive.expired() || shut_down_) return;
      Status r = core_->Replay(*lsn_box, static_cast<uint8_t>(RecordType::kEpoch), payload);
      if (!r.ok()) FailStop("cannot adopt epoch " + std::to_string(epoch) + ": " + r.ToString());
      core_->Start(NowMs());
      establishing_ = false;
      established_ = true;
      solo_ok_ = backup_state_ == BackupState::kDown;
      DTX_LOG_WARN("serving as primary at epoch {} ({} ms after the peer was last suspected); "
                   "re-driving {} decisions",
                   epoch,
                   peer_suspected_at_ms_ == 0 ? std::string("never")
                                              : std::to_string(NowMs() - peer_suspected_at_ms_),
                   core_->committing());
      for (const auto& [address, w] : watches_) {
        if (w.suspected) core_->SetParticipantSuspected(NowMs(), address, true);
      }
      Process();
    });
  };
  Result<wal::Lsn> lsn = log_->Append(static_cast<uint8_t>(RecordType::kEpoch), payload, on_durable);
  if (!lsn.ok()) FailStop("decision log append failed: " + lsn.status().ToString());
  *lsn_box = *lsn;
}

void Runtime::StepDownLater(const std::string& why) {
  std::weak_ptr<int> alive = alive_;
  loop_->Post([this, alive, why] {
    if (alive.expired() || shut_down_) return;
    BecomeBackup(why);
  });
}

void Runtime::BecomeBackup(const std::string& why) {
  if (shut_down_ || role_ == Role::kBackup) return;
  if (establishing_) {
    // Our EPOCH record is on its way; stepping down now would race it.
    StepDownLater(why);
    return;
  }
  const bool was_established = established_;
  DTX_LOG_WARN("stepping down to backup: {}", why);
  role_ = Role::kBackup;
  established_ = false;
  solo_ok_ = false;
  solo_epoch_pending_ = 0;
  backup_state_ = BackupState::kDown;
  ++generation_;
  bump_ = Bump{};
  repl_batch_.clear();
  repl_batch_tags_.clear();
  decision_waits_.clear();
  timings_.clear();
  in_sync_ = false;
  sync_generation_ = -1;
  if (!was_established) return;
  ++step_downs_;
  // Requests in flight: whether they committed is the new primary's to tell
  // (a DECISION that reached the commit point is held by the backup).
  std::unordered_map<RequestToken, Pending> pending = std::move(pending_);
  pending_.clear();
  for (auto& [token, p] : pending) {
    if (p.commit_cob) {
      rpc::CommitResult r;
      r.outcome = rpc::Outcome::UNKNOWN;
      r.__set_detail("coordinator " + options_.name + " stepped down (" + why +
                     "); ask the primary with the same txid");
      p.commit_cob(r);
    } else if (p.query_cob) {
      p.query_cob(rpc::Decision::UNKNOWN);
    }
  }
  // Rebuild the core as an unstarted mirror of our log. Callbacks of the old
  // log find alive_ expired.
  alive_ = std::make_shared<int>(0);
  log_.reset();
  core_ = std::make_unique<CoordinatorCore>(core_options_);
  Result<std::unique_ptr<wal::Log>> log = wal::Log::Open(
      options_.wal, options_.dir + "/wal",
      [this](wal::Lsn lsn, uint8_t type, std::string_view payload) {
        return core_->Replay(lsn, type, payload);
      });
  if (!log.ok()) FailStop("cannot reopen the decision log after stepping down: " +
                          log.status().ToString());
  log_ = std::move(*log);
  truncate_wanted_ = truncate_done_ = 0;
}

// ---- replication: backup side ---------------------------------------------------------

void Runtime::Replicate(const rpc::ReplicateRequest& req,
                        std::function<void(const rpc::ReplicateResponse&)> cob,
                        std::function<void(const rpc::DtxError&)> fail) {
  if (req.epoch < core_->epoch()) {
    fail(MakeDtxError(rpc::ErrorCode::STALE_EPOCH,
                      "Replicate at epoch " + std::to_string(req.epoch) + " but epoch " +
                          std::to_string(core_->epoch()) + " is current here"));
    return;
  }
  if (role_ != Role::kBackup) {
    const Epoch mine = std::max<Epoch>(core_->epoch(), bump_.epoch);
    if (req.epoch > mine) {
      // A primary at a newer epoch: we were deposed.
      StepDownLater("Replicate from " + req.primary + " at epoch " + std::to_string(req.epoch));
      fail(MakeDtxError(rpc::ErrorCode::UNAVAILABLE, "stepping down; send a snapshot"));
      return;
    }
    fail(MakeDtxError(rpc::ErrorCode::STALE_EPOCH,
                      "this coordinator is the primary at epoch " + std::to_string(mine) +
                          "; Replicate at epoch " + std::to_string(req.epoch) + " is stale"));
    return;
  }
  if (req.primary == options_.ha.peer) peer_fd_.Heartbeat(NowMs());
  if (!req.snapshot && req.generation != sync_generation_) {
    fail(MakeDtxError(rpc::ErrorCode::UNAVAILABLE,
                      "not in sync for generation " + std::to_string(req.generation) +
                          " (have " + std::to_string(sync_generation_) + "): send a snapshot"));
    return;
  }
  // Validate everything before appending anything: a bad batch leaves no trace.
  Epoch epoch = core_->epoch();
  for (const rpc::LogRecord& r : req.records) {
    Result<Record> rec = DecodeRecord(static_cast<uint8_t>(r.type), r.payload);
    if (!rec.ok()) {
      fail(MakeDtxError(rpc::ErrorCode::BAD_ARGUMENT, "Replicate: " + rec.status().ToString()));
      return;
    }
    if (const auto* e = std::get_if<EpochRecord>(&*rec)) {
      if (e->epoch < epoch) {
        fail(MakeDtxError(rpc::ErrorCode::STALE_EPOCH, "Replicate: EPOCH " +
                                                           std::to_string(e->epoch) + " < " +
                                                           std::to_string(epoch)));
        return;
      }
      epoch = e->epoch;
    }
  }
  if (req.snapshot) {
    sync_generation_ = req.generation;
    in_sync_ = false;
  }
  if (req.records.empty()) {
    rpc::ReplicateResponse resp;
    resp.durable_lsn = static_cast<int64_t>(log_->durable_lsn());
    cob(resp);
    return;
  }
  std::weak_ptr<int> alive = alive_;
  EventLoop* loop = loop_;
  const int64_t gen = req.generation;
  const bool snapshot = req.snapshot;
  auto first_lsn = std::make_shared<wal::Lsn>(0);
  auto last_lsn = std::make_shared<wal::Lsn>(0);
  for (size_t i = 0; i < req.records.size(); ++i) {
    const rpc::LogRecord& r = req.records[i];
    const bool last = i + 1 == req.records.size();
    wal::DurableFn on_durable = [=, this](const Status& s) {
      if (!s.ok()) FailStop("replicated record did not become durable: " + s.ToString());
      if (!last) return;
      loop->Post([=, this] {
        if (alive.expired() || shut_down_) return;
        if (snapshot && gen == sync_generation_) {
          in_sync_ = true;
          DTX_LOG_INFO("backup: snapshot of generation {} is durable: in sync", gen);
          // Everything before the snapshot's SYNC record is superseded.
          truncate_wanted_ = std::max(truncate_wanted_, static_cast<uint64_t>(*first_lsn));
        }
        rpc::ReplicateResponse resp;
        resp.durable_lsn = static_cast<int64_t>(*last_lsn);
        cob(resp);
      });
    };
    Result<wal::Lsn> lsn = log_->Append(static_cast<uint8_t>(r.type), r.payload, on_durable);
    if (!lsn.ok()) FailStop("decision log append failed: " + lsn.status().ToString());
    if (i == 0) *first_lsn = *lsn;
    *last_lsn = *lsn;
    Status s = core_->Replay(*lsn, static_cast<uint8_t>(r.type), r.payload);
    DTX_CHECK_MSG(s.ok(), "a validated replicated record failed to replay");
    ++replicated_records_;
  }
}

void Runtime::MaybeTruncate() {
  if (shut_down_ || truncate_wanted_ <= truncate_done_) return;
  Status s = log_->TruncateBefore(truncate_wanted_);
  if (!s.ok()) FailStop("decision log truncation failed: " + s.ToString());
  DTX_LOG_DEBUG("decision log: records below lsn={} no longer needed", truncate_wanted_);
  truncate_done_ = truncate_wanted_;
}

// ---- Handler: the Thrift edge ----------------------------------------------------------

namespace {
TDelayedException* Delay(const rpc::DtxError& e) { return TDelayedException::delayException(e); }
rpc::DtxError ShuttingDown() {
  return MakeDtxError(rpc::ErrorCode::UNAVAILABLE, "coordinator is shutting down");
}
}  // namespace

void Handler::GetShardMap(std::function<void(const rpc::ShardMap&)> cob,
                          std::function<void(TDelayedException*)> exn_cob) {
  if (runtime_ == nullptr) return exn_cob(Delay(ShuttingDown()));
  cob(runtime_->GetShardMap());
}

void Handler::Commit(std::function<void(const rpc::CommitResult&)> cob,
                     std::function<void(TDelayedException*)> exn_cob,
                     const rpc::CommitRequest& req) {
  if (runtime_ == nullptr) return exn_cob(Delay(ShuttingDown()));
  runtime_->Commit(req, std::move(cob),
                   [exn_cob](const rpc::DtxError& e) { exn_cob(Delay(e)); });
}

void Handler::QueryDecision(std::function<void(const rpc::Decision::type&)> cob,
                            std::function<void(TDelayedException*)> exn_cob,
                            const rpc::TxId& txid) {
  if (runtime_ == nullptr) return exn_cob(Delay(ShuttingDown()));
  runtime_->QueryDecision(
      txid, [cob](rpc::Decision::type d) { cob(d); },
      [exn_cob](const rpc::DtxError& e) { exn_cob(Delay(e)); });
}

void Handler::GetStatus(std::function<void(const rpc::NodeStatus&)> cob) {
  if (runtime_ == nullptr) {
    rpc::NodeStatus st;
    st.role = "primary";
    return cob(st);
  }
  cob(runtime_->GetStatus());
}

void Handler::Replicate(std::function<void(const rpc::ReplicateResponse&)> cob,
                        std::function<void(TDelayedException*)> exn_cob,
                        const rpc::ReplicateRequest& req) {
  if (runtime_ == nullptr) return exn_cob(Delay(ShuttingDown()));
  runtime_->Replicate(req, std::move(cob),
                      [exn_cob](const rpc::DtxError& e) { exn_cob(Delay(e)); });
}

void Handler::Heartbeat(std::function<void(const rpc::HeartbeatResponse&)> cob,
                        const rpc::HeartbeatRequest& req) {
  if (runtime_ == nullptr) {
    rpc::HeartbeatResponse resp;
    resp.role = "stopping";
    return cob(resp);
  }
  cob(runtime_->Heartbeat(req));
}

void Handler::SetFailpoint(std::function<void()> cob,
                           std::function<void(TDelayedException*)> exn_cob,
                           const std::string& name, const std::string& action) {
  Status s = fp::Arm(name, action);
  if (!s.ok()) {
    return exn_cob(Delay(MakeDtxError(rpc::ErrorCode::BAD_ARGUMENT, s.message())));
  }
  DTX_LOG_INFO("failpoint {}={} armed by SetFailpoint", name, action);
  cob();
}

void Handler::GetTrace(std::function<void(const rpc::TraceResponse&)> cob, const rpc::TxId& txid) {
  if (runtime_ == nullptr) {
    return cob(rpc::TraceResponse());
  }
  cob(obs::TraceToRpc(runtime_->name(), runtime_->trace().Lookup(dtx::FromRpc(txid))));
}

}  // namespace dtx::coordinator
