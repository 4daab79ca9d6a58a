#include "coordinator/driver.h"

#include <algorithm>
#include <climits>
#include <utility>

#include "common/log.h"
#include "common/probe.h"
#include "common/rpc_client.h"
#include "common/trace.h"
#include "common/wire.h"

namespace dtx::coordinator {
namespace {

rpc::PrepareRequest ToRpc(const PrepareMsg& m) {
  rpc::PrepareRequest req;
  req.txid = dtx::ToRpc(m.txid);
  req.epoch = m.epoch;
  req.reads = ReadsToRpc(m.reads);
  req.writes = WritesToRpc(m.writes);
  req.one_phase = m.one_phase;
  req.read_only_tx = m.read_only_tx;
  req.__set_coordinator(m.coordinator);
  if (m.fingerprint.known()) req.__set_fingerprint(FingerprintToRpc(m.fingerprint));
  req.__set_attempt(dtx::ToRpc(m.attempt));
  if (m.is_retry) req.__set_is_retry(true);
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

int TimeoutMs(uint64_t ms, uint64_t max) {
  return static_cast<int>(std::clamp<uint64_t>(ms, 1, max));
}

}  // namespace

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

CoordinatorDriver::CoordinatorDriver(DriverOptions options, HaCore* ha, CoordinatorIo* io,
                                     CoordinatorHooks* hooks)
    : options_(std::move(options)), ha_(ha), io_(io), hooks_(hooks) {}

std::string CoordinatorDriver::ParticipantName(const std::string& address) const {
  for (size_t i = 0; i < options_.participants.size(); ++i) {
    if (options_.participants[i] == address) return "participant-" + std::to_string(i);
  }
  return address;
}

void CoordinatorDriver::FailStop(const std::string& why) {
  stopped_ = true;
  io_->FailStop(why);
}

void CoordinatorDriver::EvalOrFailStop(fp::Point p, const TxId& txid) {
  Status s = fp::Eval(p);
  if (!s.ok()) FailStop("txid=" + txid.ToString() + " " + s.ToString());
}

// ---- draining the core ----------------------------------------------------------------

void CoordinatorDriver::Stop() {
  stopped_ = true;
  pending_.clear();
  replicate_pending_.clear();
}

void CoordinatorDriver::Process() {
  node::DrainGuard::Scope scope = drain_.Enter();
  if (!scope.entered() || stopped_) return;  // the outer call drains what this one would
  while (!stopped_) {
    HaReady r = ha_->TakeReady();
    if (r.empty()) break;
    for (const HaNote& n : r.notes) hooks_->Note(n);
    // HaReady's ordering rule: records first (then the reload they precede),
    // then released decisions, then messages, then replies.
    for (const PersistRecord& p : r.persist) Append(p);
    if (r.reload_log) ReloadLog();
    for (const TxId& txid : r.backup_acked) Trace(txid, "replicated");
    for (const TxId& txid : r.released) {
      EvalOrFailStop(fp::Point::kCoordinatorDecisionAfterLog, txid);
      hooks_->DecisionReleased(txid);
    }
    if (stopped_) break;  // a failpoint failed: nobody hears of the decision
    for (const OutMessage& m : r.send) SendMessage(m);
    for (ReplicateMsg& m : r.replicate) SendReplicate(m);
    for (const AdoptEpochMsg& m : r.adopt) SendAdoptEpoch(m);
    for (const ProbeMsg& m : r.probes) SendProbe(m);
    for (Reply& rep : r.replies) Deliver(rep);
    for (const ReplicateAnswer& a : r.replicate_answers) AnswerReplicate(a);
    if (r.truncate_before != 0) truncate_wanted_ = std::max(truncate_wanted_, r.truncate_before);
  }
}

void CoordinatorDriver::Tick() {
  if (stopped_) return;
  ha_->Tick(io_->NowMs());  // also heartbeats (every heartbeat_ms) and suspicion
  Process();
}

void CoordinatorDriver::Append(const PersistRecord& p) {
  if (stopped_) return;
  // The 2PC core's own records (not HaCore's: an EPOCH it establishes, or
  // records replicated from the primary) pass the commit-path failpoints.
  const bool from_core = (p.tag >> 63) == 0;
  if (from_core && p.type == RecordType::kDecision) {
    EvalOrFailStop(fp::Point::kCoordinatorVotesAfterAll, p.txid);
    EvalOrFailStop(fp::Point::kCoordinatorDecisionBeforeLog, p.txid);
  } else if (from_core && p.type == RecordType::kEnd) {
    EvalOrFailStop(fp::Point::kCoordinatorEndBeforeLog, p.txid);
    hooks_->EndAppended(p.txid);
  }
  if (stopped_) return;
  const uint64_t generation = log_generation_;
  const PersistTag tag = p.tag;
  const RecordType type = p.type;
  const TxId txid = p.txid;
  std::function<void(uint64_t)> on_durable;
  if (p.forced) {
    on_durable = [this, generation, tag, type, txid](uint64_t lsn) {
      if (generation != log_generation_) return;  // a notice for the core a step-down replaced
      OnDurable(tag, type, txid, lsn);
    };
  }
  const uint64_t lsn = io_->Append(p.type, p.payload, p.forced, std::move(on_durable));
  if (from_core && p.type == RecordType::kDecision) {
    Trace(p.txid, obs::span::kLogged);
    if (p.forced) hooks_->DecisionAppended(p.txid);
    DTX_LOG_DEBUG("txid={} phase=decision lsn={} all votes yes, DECISION appended", txid.ToString(),
                  lsn);
  } else if (from_core && p.type == RecordType::kEnd) {
    Trace(p.txid, "ended");
  }
}

void CoordinatorDriver::OnDurable(PersistTag tag, RecordType type, const TxId& txid, uint64_t lsn) {
  if (stopped_) return;
  if (type == RecordType::kDecision && (tag >> 63) == 0) Trace(txid, obs::span::kSynced);
  ha_->OnPersisted(io_->NowMs(), tag, lsn);
  Process();
}

void CoordinatorDriver::ReloadLog() {
  DTX_PROBE(coordinator_log_reload);
  // Notices of the old log (durability of a replaced core's records) are void.
  ++log_generation_;
  Status s = io_->ReloadLog([this](uint64_t lsn, uint8_t type, std::string_view payload) {
    return ha_->Replay(lsn, type, payload);
  });
  if (!s.ok()) {
    FailStop("cannot reopen the decision log after stepping down: " + s.ToString());
    return;
  }
  truncate_wanted_ = truncate_done_ = 0;
  hooks_->LogReloaded();
}

void CoordinatorDriver::MaybeTruncate() {
  if (stopped_ || truncate_wanted_ <= truncate_done_) return;
  Status s = io_->TruncateBefore(truncate_wanted_);
  if (!s.ok()) return FailStop("decision log truncation failed: " + s.ToString());
  DTX_LOG_DEBUG("decision log: records below lsn={} no longer needed", truncate_wanted_);
  truncate_done_ = truncate_wanted_;
}

// ---- 2PC messages to participants -------------------------------------------------------

void CoordinatorDriver::SendMessage(const OutMessage& m) {
  const int timeout_ms = TimeoutMs(m.timeout_ms, INT32_MAX);
  const MessageId id = m.id;
  const std::string to = m.to;
  if (const auto* prep = std::get_if<PrepareMsg>(&m.body)) {
    const TxId txid = prep->txid;
    const Attempt attempt = prep->attempt;
    hooks_->PrepareSent(txid);
    if (hooks_->tracing()) Trace(txid, "prepare", ParticipantName(to));
    io_->Prepare(
        to, ToRpc(*prep), timeout_ms,
        [this, id, to, txid, attempt](const RpcStatus& st, const rpc::PrepareResponse& resp) {
          if (stopped_) return;
          PrepareReply r;
          r.msg_id = id;
          r.txid = txid;
          r.attempt = attempt;
          r.participant = to;
          r.status = ToCallStatus(st);
          r.error = st.ToString();
          r.error_code = ErrorCodeOf(st);
          r.current_epoch = st.current_epoch();
          hooks_->VoteIn(txid);
          if (hooks_->tracing()) {
            std::string d = ParticipantName(to) + " ";
            if (!st.ok()) {
              d += "error:" + st.ToString();
            } else {
              const std::optional<Vote> vote = dtx::FromRpc(resp.vote);
              d += !vote                      ? "error:bad vote"
                   : *vote == Vote::kYes      ? "yes"
                   : *vote == Vote::kReadOnly ? "read_only"
                                              : "no";
            }
            Trace(txid, obs::span::kVoted, d);
          }
          if (st.ok()) {
            if (const std::optional<Vote> vote = dtx::FromRpc(resp.vote)) {
              r.vote = *vote;
            } else {
              r.status = CallStatus::kError;
              r.error = "unknown vote " + std::to_string(RawEnumValue(resp.vote));
            }
            if (resp.__isset.reason) r.reason = dtx::FromRpc(resp.reason);
            if (resp.__isset.detail) r.detail = resp.detail;
            r.txid_reused = resp.__isset.txid_reused && resp.txid_reused;
          } else {
            if (r.status == CallStatus::kStaleEpoch) DTX_PROBE(coordinator_prepare_stale_epoch);
            DTX_LOG_INFO("txid={} phase=prepare participant={} failed: {}", txid.ToString(), to,
                         st.ToString());
          }
          ha_->OnPrepareReply(io_->NowMs(), r);
          Process();
        });
    return;
  }
  if (const auto* commit = std::get_if<CommitMsg>(&m.body)) {
    const TxId txid = commit->txid;
    io_->Commit(to, dtx::ToRpc(txid), commit->epoch, timeout_ms,
                [this, id, to, txid](const RpcStatus& st) {
                  if (stopped_) return;
                  if (!st.ok()) {
                    DTX_PROBE(coordinator_commit_call_failed);
                    DTX_LOG_INFO("txid={} phase=commit participant={} failed (will re-send): {}",
                                 txid.ToString(), to, st.ToString());
                  }
                  if (st.ok() && hooks_->tracing())
                    Trace(txid, obs::span::kAcked, ParticipantName(to));
                  AckReply a{id, txid, to, ToCallStatus(st), st.ToString(), st.current_epoch()};
                  ha_->OnCommitReply(io_->NowMs(), a);
                  Process();
                });
    if (commit->first_of_tx) {
      if (fp::IsArmed(fp::Point::kCoordinatorPhase2AfterFirstCommit)) io_->FlushSends();
      EvalOrFailStop(fp::Point::kCoordinatorPhase2AfterFirstCommit, txid);
    }
    return;
  }
  const auto& abort = std::get<AbortMsg>(m.body);
  const TxId txid = abort.txid;
  io_->Abort(to, dtx::ToRpc(txid), abort.epoch, dtx::ToRpc(abort.attempt), timeout_ms,
             [this, id, to, txid](const RpcStatus& st) {
               if (stopped_) return;
               AckReply a{id, txid, to, ToCallStatus(st), st.ToString(), st.current_epoch()};
               ha_->OnAbortReply(io_->NowMs(), a);
               Process();
             });
}

// ---- served calls ---------------------------------------------------------------------------

void CoordinatorDriver::Commit(const rpc::CommitRequest& req,
                               std::function<void(const rpc::CommitResult&)> cob,
                               std::function<void(const rpc::DtxError&)> fail) {
  const RequestToken token = next_token_++;
  CommitRequest creq = FromRpc(req);
  Trace(creq.txid, obs::span::kReceived, creq.is_retry ? "retry" : "");
  pending_[token] = Pending{creq.txid, std::move(cob), nullptr, std::move(fail)};
  ha_->Commit(io_->NowMs(), token, std::move(creq));
  Process();
}

void CoordinatorDriver::QueryDecision(const rpc::TxId& txid, const std::string& fingerprint,
                                      const rpc::Attempt& attempt,
                                      std::function<void(rpc::Decision::type)> cob,
                                      std::function<void(const rpc::DtxError&)> fail) {
  const TxId t = dtx::FromRpc(txid);
  const std::optional<Attempt> a = AttemptFromRpc(attempt);
  if (!a) {
    fail(MakeDtxError(ErrorCode::kBadArgument,
                      "QueryDecision attempt with a negative epoch or seq"));
    return;
  }
  Fingerprint f;
  if (!fingerprint.empty()) {
    std::optional<Fingerprint> parsed = FingerprintFromRpc(fingerprint);
    if (!parsed) {
      fail(MakeDtxError(ErrorCode::kBadArgument,
                        "QueryDecision fingerprint of " + std::to_string(fingerprint.size()) +
                            " bytes (or all zero): want " + std::to_string(kFingerprintBytes)));
      return;
    }
    f = *parsed;
  }
  const RequestToken token = next_token_++;
  pending_[token] = Pending{t, nullptr, std::move(cob), std::move(fail)};
  ha_->QueryDecision(io_->NowMs(), token, t, f, *a);  // a backup answers UNKNOWN
  Process();
}

void CoordinatorDriver::Deliver(Reply& reply) {
  auto it = pending_.find(reply.token);
  if (it == pending_.end()) {
    hooks_->UnmatchedReply(reply.token);  // every token is answered once
    return;
  }
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (const auto* err = std::get_if<Error>(&reply.body)) {
    DTX_LOG_DEBUG("txid={} request refused: {} {}", p.txid.ToString(), ErrorCodeName(err->code),
                  err->message);
    if (p.commit_cob) Trace(p.txid, "replied", std::string("error:") + ErrorCodeName(err->code));
    p.fail(MakeDtxError(err->code, err->message,
                        err->code == ErrorCode::kNotPrimary ? options_.peer : std::string()));
    return;
  }
  if (const auto* res = std::get_if<CommitResult>(&reply.body)) {
    if (res->outcome == Outcome::kUnknown ||
        (res->reason && *res->reason != AbortReason::kConflict)) {
      if (res->outcome == Outcome::kUnknown) DTX_PROBE(coordinator_outcome_unknown);
      DTX_LOG_INFO("txid={} outcome={} reason={} detail={}", p.txid.ToString(),
                   OutcomeName(res->outcome), res->reason ? AbortReasonName(*res->reason) : "-",
                   res->detail);
    } else {
      DTX_LOG_DEBUG("txid={} outcome={} detail={}", p.txid.ToString(), OutcomeName(res->outcome),
                    res->detail);
    }
    if (hooks_->tracing()) {
      std::string d = res->outcome == Outcome::kCommitted ? "commit"
                      : res->outcome == Outcome::kAborted ? "abort"
                                                          : "unknown";
      if (res->reason) d += std::string(" ") + AbortReasonName(*res->reason);
      Trace(p.txid, obs::span::kDecided, d);
      Trace(p.txid, "replied", OutcomeName(res->outcome));
    }
    if (p.commit_cob) {
      p.commit_cob(ToRpc(*res));
    } else {
      p.fail(MakeDtxError(rpc::ErrorCode::INTERNAL, "commit result for a non-commit request"));
    }
    return;
  }
  const Decision d = std::get<Decision>(reply.body);
  DTX_LOG_DEBUG("txid={} QueryDecision answered {}", p.txid.ToString(), static_cast<int>(d));
  if (p.query_cob) {
    p.query_cob(dtx::ToRpc(d));
  } else {
    p.fail(MakeDtxError(rpc::ErrorCode::INTERNAL, "decision for a non-query request"));
  }
}

// ---- heartbeats, replication, fencing ----------------------------------------------------

void CoordinatorDriver::SendProbe(const ProbeMsg& m) {
  rpc::HeartbeatRequest hb;
  hb.sender = options_.self_address;
  hb.role = dtx::ToRpc(m.role);
  hb.epoch = static_cast<int64_t>(m.epoch);
  const std::string to = m.to;
  if (m.peer) {
    io_->PeerHeartbeat(
        hb, options_.probe_timeout_ms,
        [this, to](const RpcStatus& st, const rpc::HeartbeatResponse& resp) {
          if (stopped_) return;
          std::optional<PeerView> view;
          if (st.ok()) {
            // A peer shutting down sends no role: not heard.
            view =
                PeerView{resp.name, resp.__isset.role ? dtx::FromRpc(resp.role) : std::nullopt,
                         static_cast<Epoch>(std::max<int64_t>(resp.epoch, 0)),
                         resp.__isset.in_sync ? std::optional<bool>(resp.in_sync) : std::nullopt};
          }
          ha_->OnProbeReply(io_->NowMs(), to, st.ok(), view);
          Process();
        });
    return;
  }
  io_->ProbeParticipant(to, hb, options_.probe_timeout_ms, [this, to](const RpcStatus& st) {
    if (stopped_) return;
    ha_->OnProbeReply(io_->NowMs(), to, st.ok());
    Process();
  });
}

rpc::Outcome::type CoordinatorDriver::GetOutcome(const rpc::TxId& txid) const {
  // Only the deciding primary vouches for an outcome: a node that stepped
  // down replays DECISIONs of its own that may never have reached the commit
  // point (a newer primary may have aborted them), and a fenced one may have
  // been overtaken (as QueryDecision, core.h). Found by the simulator's
  // adversary (tests/sim/README.md, `--adversary --failover --seed 101`).
  if (!ha_->established() || ha_->core().fenced()) return rpc::Outcome::UNKNOWN;
  return ToRpc(ha_->core().RememberedOutcome(dtx::FromRpc(txid)));
}

rpc::HeartbeatResponse CoordinatorDriver::Heartbeat(const rpc::HeartbeatRequest& req) {
  PeerView in;
  in.role = dtx::FromRpc(req.role);
  in.epoch = static_cast<Epoch>(std::max<int64_t>(req.epoch, 0));
  PeerView mine = ha_->OnPeerHeartbeat(io_->NowMs(), req.sender, in);
  Process();
  rpc::HeartbeatResponse resp;
  resp.name = options_.name;
  if (mine.role) resp.__set_role(dtx::ToRpc(*mine.role));
  resp.epoch = static_cast<int64_t>(mine.epoch);
  if (mine.in_sync) resp.__set_in_sync(*mine.in_sync);
  return resp;
}

void CoordinatorDriver::SendReplicate(ReplicateMsg& m) {
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
    DTX_PROBE(coordinator_snapshot_sent);
    DTX_LOG_INFO("replication: snapshot to backup {} (generation {}, {} records)", options_.peer,
                 m.generation, req.records.size());
  }
  const MessageId id = m.id;
  io_->PeerReplicate(req, TimeoutMs(m.timeout_ms, INT32_MAX),
                     [this, id](const RpcStatus& st, const rpc::ReplicateResponse&) {
                       if (stopped_) return;
                       ha_->OnReplicateReply(io_->NowMs(), id, ToCallStatus(st), st.ToString());
                       Process();
                     });
}

void CoordinatorDriver::Replicate(const rpc::ReplicateRequest& req,
                                  std::function<void(const rpc::ReplicateResponse&)> cob,
                                  std::function<void(const rpc::DtxError&)> fail) {
  HaCore::ReplicateIn in;
  in.epoch = static_cast<Epoch>(std::max<int64_t>(req.epoch, 0));
  in.primary = req.primary;
  in.generation = req.generation;
  in.snapshot = req.snapshot;
  in.records.reserve(req.records.size());
  for (const rpc::LogRecord& r : req.records) {
    in.records.push_back(
        ReplRecord{static_cast<RecordType>(static_cast<uint8_t>(r.type)), r.payload});
  }
  const RequestToken token = next_token_++;
  replicate_pending_[token] = ReplicatePending{std::move(cob), std::move(fail)};
  ha_->OnReplicate(io_->NowMs(), token, std::move(in));
  Process();
}

void CoordinatorDriver::AnswerReplicate(const ReplicateAnswer& a) {
  auto it = replicate_pending_.find(a.token);
  if (it == replicate_pending_.end()) {
    hooks_->UnmatchedReply(a.token);
    return;
  }
  ReplicatePending p = std::move(it->second);
  replicate_pending_.erase(it);
  if (a.error) {
    if (a.error->code == ErrorCode::kStaleEpoch) DTX_PROBE(coordinator_replicate_refused_stale);
    p.fail(MakeDtxError(a.error->code, a.error->message));
    return;
  }
  rpc::ReplicateResponse resp;
  resp.durable_lsn = static_cast<int64_t>(a.durable_lsn != 0 ? a.durable_lsn : io_->durable_lsn());
  p.cob(resp);
}

void CoordinatorDriver::SendAdoptEpoch(const AdoptEpochMsg& m) {
  const MessageId id = m.id;
  io_->AdoptEpoch(
      m.to, static_cast<int64_t>(m.epoch), options_.self_address, TimeoutMs(m.timeout_ms, 60000),
      [this, id](const RpcStatus& st, std::optional<int64_t> current_epoch,
                 const std::string& owner) {
        if (stopped_) return;
        std::optional<Epoch> current;
        if (current_epoch && *current_epoch >= 0) current = static_cast<Epoch>(*current_epoch);
        if (st.error_code() && *st.error_code() == rpc::ErrorCode::STALE_EPOCH) {
          DTX_PROBE(coordinator_adopt_epoch_refused);
        }
        ha_->OnAdoptEpochReply(io_->NowMs(), id, ToCallStatus(st), st.ToString(), current, owner);
        Process();
      });
}

}  // namespace dtx::coordinator
