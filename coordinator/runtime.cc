#include "coordinator/runtime.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "common/failpoint.h"
#include "common/log.h"
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

// ---- Runtime ------------------------------------------------------------------------

Runtime::Runtime(EventLoop* loop, RuntimeOptions options)
    : loop_(loop), options_(std::move(options)), alive_(std::make_shared<int>(0)) {}

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
      loop_, std::make_shared<rpc::CoordinatorAsyncProcessor>(handler_), so);
  DTX_RETURN_IF_ERROR(server_->Start());
  address_ = server_->address();

  CoreOptions co = options_.core;
  co.participants = options_.participants;
  co.self_address = address_;
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
  core_->Start(NowMs());
  DTX_LOG_INFO("recovered the decision log: records={} epoch={} durable_lsn={} "
               "decisions_to_redrive={}",
               replayed, core_->epoch(), log_->durable_lsn(), core_->committing());
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
    core_->Tick(NowMs());
    Process();
  });
  truncate_timer_ = loop_->RunEvery(kTruncateIntervalMs, [this] { MaybeTruncate(); });
  DTX_LOG_INFO("serving on {} with {} participants", address_, options_.participants.size());
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
  if (handler_) handler_->Detach();
  if (tick_timer_ != 0) loop_->Cancel(tick_timer_);
  if (truncate_timer_ != 0) loop_->Cancel(truncate_timer_);
  tick_timer_ = truncate_timer_ = 0;
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
  RequestToken token = next_token_++;
  CommitRequest creq = FromRpc(req);
  pending_[token] = Pending{creq.txid, std::move(cob), nullptr, std::move(fail)};
  core_->Commit(NowMs(), token, std::move(creq));
  Process();
}

void Runtime::QueryDecision(const rpc::TxId& txid, std::function<void(rpc::Decision::type)> cob,
                            std::function<void(const rpc::DtxError&)> fail) {
  RequestToken token = next_token_++;
  TxId t = dtx::FromRpc(txid);
  pending_[token] = Pending{t, nullptr, std::move(cob), std::move(fail)};
  core_->QueryDecision(NowMs(), token, t);
  Process();
}

rpc::NodeStatus Runtime::GetStatus() const {
  rpc::NodeStatus st;
  st.name = options_.name;
  st.role = "primary";
  st.epoch = core_->epoch();
  st.uptime_ms = static_cast<int64_t>(NowMs() - start_ms_);
  st.durable_lsn = static_cast<int64_t>(log_ ? log_->durable_lsn() : 0);
  st.in_flight = static_cast<int64_t>(core_->in_flight());
  st.in_doubt = 0;
  for (size_t i = 0; i < options_.participants.size(); ++i) {
    rpc::PeerStatus p;
    p.name = "participant-" + std::to_string(i);
    p.address = options_.participants[i];
    p.heartbeat_age_ms = -1;  // no heartbeats yet
    p.suspected = false;
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
  in_process_ = false;
  if (core_->fenced() && !fenced_logged_) {
    fenced_logged_ = true;
    DTX_LOG_WARN("a participant reported a newer coordinator epoch than {}: this coordinator "
                 "is fenced and refuses new commits (NOT_PRIMARY)",
                 core_->epoch());
  }
}

void Runtime::Append(const PersistRecord& p) {
  if (p.type == RecordType::kDecision) {
    EvalOrFailStop(fp::Point::kCoordinatorVotesAfterAll, p.txid);
    EvalOrFailStop(fp::Point::kCoordinatorDecisionBeforeLog, p.txid);
  } else if (p.type == RecordType::kEnd) {
    EvalOrFailStop(fp::Point::kCoordinatorEndBeforeLog, p.txid);
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
  if (initializing_ && p.forced) init_forced_.emplace_back(p.tag, *lsn);
  if (p.type == RecordType::kDecision) {
    DTX_LOG_DEBUG("txid={} phase=decision lsn={} all votes yes, DECISION appended",
                  txid.ToString(), *lsn);
  }
}

void Runtime::OnDurable(PersistTag tag, RecordType type, TxId txid, uint64_t lsn) {
  if (shut_down_) return;
  if (type == RecordType::kDecision) {
    EvalOrFailStop(fp::Point::kCoordinatorDecisionAfterLog, txid);
  }
  core_->OnPersisted(NowMs(), tag, lsn);
  Process();
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
    stub.Prepare(ToRpc(*prep), timeout_ms,
                 [this, id, to, txid](const RpcStatus& st, const rpc::PrepareResponse& resp) {
                   if (shut_down_) return;
                   PrepareReply r;
                   r.msg_id = id;
                   r.txid = txid;
                   r.participant = to;
                   r.status = ToCallStatus(st);
                   r.error = st.ToString();
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
    if (p.commit_cob) {
      p.commit_cob(ToRpc(*res));
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

}  // namespace dtx::coordinator
