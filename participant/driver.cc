#include "participant/driver.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "common/check.h"
#include "common/probe.h"
#include "common/trace.h"
#include "common/wire.h"

namespace dtx::participant {
namespace {

PrepareRequest FromRpc(const rpc::PrepareRequest& req) {
  PrepareRequest in;
  in.txid = dtx::FromRpc(req.txid);
  in.epoch = req.epoch;
  in.one_phase = req.one_phase;
  in.read_only_tx = req.read_only_tx;
  if (req.__isset.coordinator) in.coordinator = req.coordinator;
  // Checked by Prepare before this conversion: set means well-formed.
  if (req.__isset.fingerprint) in.fingerprint = FingerprintFromRpc(req.fingerprint).value();
  if (req.__isset.attempt) in.attempt = AttemptFromRpc(req.attempt).value();
  in.is_retry = req.__isset.is_retry && req.is_retry;
  in.reads = ReadsFromRpc<ReadOp>(req.reads);
  in.writes = WritesFromRpc<WriteOp>(req.writes);
  return in;
}

rpc::PrepareResponse VoteToRpc(const Reply& r) {
  rpc::PrepareResponse out;
  out.vote = ToRpc(r.vote);
  if (r.vote == Vote::kNo) {
    out.__set_reason(ToRpc(WireAbortReason(r.no_cause)));
    out.__set_detail(r.detail);
    if (r.no_cause == NoVoteCause::kTxidReused) out.__set_txid_reused(true);
  }
  return out;
}

// The core's error reply as the handler throws it; a STALE_EPOCH refusal
// carries the epoch and its owner (DtxError fields 4, 5).
rpc::DtxError ErrorToRpc(const Reply& r) {
  rpc::DtxError e = MakeDtxError(r.error, r.message);
  if (r.error == ErrorCode::kStaleEpoch) {
    e.__set_current_epoch(r.current_epoch);
    if (!r.epoch_owner.empty()) e.__set_epoch_owner(r.epoch_owner);
  }
  return e;
}

const char* KindName(Reply::Kind k) {
  switch (k) {
    case Reply::Kind::kRead: return "Read";
    case Reply::Kind::kPrepare: return "Prepare";
    case Reply::Kind::kCommit: return "Commit";
    case Reply::Kind::kAbort: return "Abort";
    case Reply::Kind::kAdoptEpoch: return "AdoptEpoch";
  }
  return "?";
}

const char* RecordName(RecordType t) {
  switch (t) {
    case RecordType::kPrepare: return "PREPARE";
    case RecordType::kCommit: return "COMMIT";
    case RecordType::kAbort: return "ABORT";
    default: return "record";
  }
}

}  // namespace

Status FailpointStore::Apply(const std::vector<WriteOp>& writes, Version version) {
  DTX_RETURN_IF_ERROR(inner_->Apply(writes, version));
  if (live_) return fp::Eval(fp::Point::kParticipantCommitAfterApply);
  return Status::OK();
}

Status FailpointStore::ApplyBatch(const std::vector<Commit>& commits) {
  DTX_RETURN_IF_ERROR(inner_->ApplyBatch(commits));
  if (!live_) return Status::OK();
  for (size_t i = 0; i < commits.size(); ++i)
    DTX_RETURN_IF_ERROR(fp::Eval(fp::Point::kParticipantCommitAfterApply));
  return Status::OK();
}

ParticipantDriver::ParticipantDriver(ParticipantDriverOptions options, Core* core,
                                     ParticipantIo* io, ParticipantHooks* hooks)
    : options_(std::move(options)), core_(core), io_(io), hooks_(hooks) {}

void ParticipantDriver::FailStop(const std::string& why) {
  stopped_ = true;
  pending_.clear();
  io_->FailStop(why);
}

void ParticipantDriver::EvalOrFailStop(fp::Point p, const TxId& txid) {
  Status s = fp::Eval(p);
  if (!s.ok()) FailStop("txid=" + txid.ToString() + " " + s.ToString());
}

void ParticipantDriver::Stop() {
  stopped_ = true;
  pending_.clear();
}

void ParticipantDriver::Start() {
  for (const InDoubtInfo& t : core_->ListInDoubt(io_->NowMs())) {
    hooks_->Note(NoteLevel::kInfo, "txid=" + t.txid.ToString() +
                                       " in doubt after recovery; asking coordinator " +
                                       CoordinatorFor(t.coordinator));
    Trace(t.txid, "in_doubt", "after recovery");
    recovered_in_doubt_.insert(t.txid);
  }
  Process();
}

// ---- draining the core ----------------------------------------------------------------

void ParticipantDriver::Process() {
  node::DrainGuard::Scope scope = drain_.Enter();
  if (!scope.entered() || stopped_) return;  // the outer call drains what this one would
  while (!stopped_) {
    Ready r = core_->TakeReady();
    if (r.empty()) break;
    if (!r.fatal.ok()) {
      FailStop(r.fatal.ToString());
      break;
    }
    // Ready's ordering rule: records first, then messages, then replies.
    for (const PersistOp& op : r.persist) {
      Append(op);
      if (stopped_) return;  // a failpoint failed before the record was logged
    }
    for (const QueryDecisionMsg& m : r.send) {
      if (m.kind == QueryDecisionMsg::Kind::kAsk) AskDecision(m);
      if (m.kind == QueryDecisionMsg::Kind::kFindPrimary) AskOtherCoordinators(m);
    }
    for (Reply& rep : r.replies) {
      Deliver(rep);
      if (stopped_) return;
    }
  }
}

void ParticipantDriver::Tick() {
  if (stopped_) return;
  core_->Tick(io_->NowMs());
  Process();
}

void ParticipantDriver::Append(const PersistOp& op) {
  if (op.type == RecordType::kPrepare)
    EvalOrFailStop(fp::Point::kParticipantPrepareBeforeLog, op.txid);
  if (op.type == RecordType::kCommit)
    EvalOrFailStop(fp::Point::kParticipantCommitBeforeLog, op.txid);
  if (stopped_) return;
  if (hooks_->tracing() && op.type != RecordType::kEpoch) TraceAppend(op);
  // Only a forced record's durability is news for the core.
  ParticipantIo::DurableFn on_durable;
  if (op.forced) {
    on_durable = [this, type = op.type, txid = op.txid](uint64_t lsn, bool more) {
      OnDurable(lsn, type, txid, more);
    };
  }
  const uint64_t lsn = io_->Append(op.type, op.payload, op.forced, op.txid, std::move(on_durable));
  DTX_CHECK_MSG(lsn == op.tag, "the core's tags are LSNs: nothing else may append to the WAL");
  if (op.type == RecordType::kEpoch)
    hooks_->Note(NoteLevel::kInfo, "epoch rose; EPOCH record at lsn=" + std::to_string(lsn));
}

void ParticipantDriver::TraceAppend(const PersistOp& op) {
  // A PREPARE (or a one-phase COMMIT) appended while its Prepare call is
  // processed: the core has just taken and validated its locks.
  const bool from_prepare =
      preparing_.active && preparing_.txid == op.txid && !preparing_.locked_recorded;
  if (op.type == RecordType::kPrepare || (op.type == RecordType::kCommit && from_prepare)) {
    char keys[24];
    std::snprintf(keys, sizeof(keys), "keys=%zu", from_prepare ? preparing_.keys : size_t{0});
    Trace(op.txid, obs::span::kLocked, from_prepare ? std::string_view(keys) : std::string_view());
    if (from_prepare) preparing_.locked_recorded = true;
    if (op.type == RecordType::kCommit) Trace(op.txid, obs::span::kDecided, "commit (one-phase)");
  }
  Trace(op.txid, obs::span::kLogged, RecordName(op.type));
}

void ParticipantDriver::OnDurable(uint64_t lsn, RecordType type, const TxId& txid, bool more) {
  if (stopped_) return;
  if (type == RecordType::kPrepare) EvalOrFailStop(fp::Point::kParticipantPrepareAfterLog, txid);
  if (type == RecordType::kCommit) EvalOrFailStop(fp::Point::kParticipantCommitAfterLog, txid);
  if (stopped_) return;
  durable_upto_ = std::max(durable_upto_, lsn);
  if (type == RecordType::kCommit && hooks_->tracing()) durable_commits_.push_back(txid);
  if (more) return;
  // The core applies the durable COMMITs to the store inside OnPersisted,
  // all of this batch in one store write (a failed apply makes Process()
  // below stop the node).
  core_->OnPersisted(durable_upto_, io_->NowMs());
  for (const TxId& t : durable_commits_) Trace(t, obs::span::kApplied);
  durable_commits_.clear();
  Process();
}

void ParticipantDriver::AskDecision(const QueryDecisionMsg& m) {
  const std::string address = CoordinatorFor(m.coordinator);
  if (address.empty()) return;
  hooks_->AskingDecision(m.txid, m.fall_back);
  io_->QueryDecision(
      address, ToRpc(m.txid),
      m.fingerprint.known() ? FingerprintToRpc(m.fingerprint) : std::string(), ToRpc(m.attempt),
      options_.query_timeout_ms,
      [this, m, address](const RpcStatus& s, const rpc::Decision::type& d) {
        if (stopped_) return;
        DecisionAnswer answer;
        if (!s.ok()) {
          // Not the primary, unreachable, starting: the core decides whom
          // to ask next (QueryDecisionMsg).
          if (m.fall_back) {
            hooks_->Note(NoteLevel::kWarn, "txid=" + m.txid.ToString() + " QueryDecision to " +
                                               address + " failed: " + s.ToString());
          }
          if (s.primary()) answer.primary_hint = *s.primary();
        } else {
          HeardFromCoordinator();
          answer.reached = true;
          // A decision outside the IDL's (a newer or broken coordinator) is no answer.
          answer.decision = dtx::FromRpc(d).value_or(Decision::kUnknown);
          if (answer.decision != Decision::kUnknown) {
            const bool commit = answer.decision == Decision::kCommit;
            if (m.fall_back) DTX_PROBE(participant_in_doubt_fallback);
            hooks_->Note(NoteLevel::kInfo, "txid=" + m.txid.ToString() + " in-doubt resolved by " +
                                               address + ": " + (commit ? "COMMIT" : "ABORT"));
            recovered_in_doubt_.erase(m.txid);
            if (hooks_->tracing()) {
              hooks_->Trace(m.txid, obs::span::kDecided,
                            (commit ? "commit, resolved by " : "abort, resolved by ") + address);
            }
          }
        }
        core_->OnDecisionAnswer(m, answer, io_->NowMs());
        Process();
      });
}

void ParticipantDriver::AskOtherCoordinators(const QueryDecisionMsg& m) {
  const std::string except = CoordinatorFor(m.coordinator);
  std::vector<std::string> candidates = options_.coordinators;
  candidates.push_back(options_.coordinator);
  // Every coordinator that sends us heartbeats (primary and backup do), so a
  // participant started with only its coordinator still finds a new primary.
  for (const auto& [address, seen] : coordinators_seen_) candidates.push_back(address);
  if (!m.primary_hint.empty()) candidates.push_back(m.primary_hint);
  std::sort(candidates.begin(), candidates.end());
  candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
  const TxId txid = m.txid;
  for (const std::string& c : candidates) {
    if (c.empty() || c == except) continue;
    io_->GetStatus(c, options_.query_timeout_ms,
                   [this, txid, c](const RpcStatus& s, const rpc::NodeStatus& st) {
                     if (stopped_) return;
                     // Whether this one may answer is the core's rule
                     // (QueryDecisionMsg); a role outside the IDL's is none.
                     const std::optional<NodeRole> role = dtx::FromRpc(st.role);
                     if (!s.ok() || !role) return;
                     core_->OnCoordinatorStatus(txid, c, *role, st.epoch, io_->NowMs());
                     Process();
                   });
  }
}

void ParticipantDriver::Deliver(Reply& r) {
  auto it = pending_.find(r.token);
  if (it == pending_.end()) {
    hooks_->UnmatchedReply(r.token);
    return;
  }
  Pending p = std::move(it->second);
  pending_.erase(it);
  hooks_->Answered(r.kind, hooks_->SteadyNs() - p.start_ns);
  if (r.error != ErrorCode::kOk) {
    // Fencing at work: a call stamped with an older epoch refused.
    if (r.error == ErrorCode::kStaleEpoch && r.kind != Reply::Kind::kAdoptEpoch)
      DTX_PROBE(participant_stale_epoch_refusal);
    if (r.kind != Reply::Kind::kRead) {
      hooks_->Note(NoteLevel::kWarn, "txid=" + r.txid.ToString() + " " + KindName(r.kind) +
                                         " refused: " + ErrorCodeName(r.error) + " " + r.message);
      Trace(r.txid, "refused", ErrorCodeName(r.error));
    }
    p.fail(ErrorToRpc(r));
    return;
  }
  switch (r.kind) {
    case Reply::Kind::kRead: {
      rpc::ReadResult out;
      out.found = r.found;
      out.value = std::move(r.value);
      out.version = r.version;
      p.read(out);
      break;
    }
    case Reply::Kind::kPrepare: {
      std::optional<AbortReason> reason;
      if (r.vote == Vote::kNo) {
        reason = WireAbortReason(r.no_cause);
        hooks_->Note(NoteLevel::kDebug, "txid=" + r.txid.ToString() + " vote NO: " + r.detail);
      }
      hooks_->Voted(r.vote, reason);
      if (hooks_->tracing()) TraceVote(r);
      p.prepare(VoteToRpc(r));
      if (r.vote == Vote::kYes) {
        if (fp::IsArmed(fp::Point::kParticipantPrepareAfterVote)) io_->FlushSends();
        Status s = fp::Eval(fp::Point::kParticipantPrepareAfterVote);
        if (!s.ok()) {
          hooks_->Note(NoteLevel::kWarn, "txid=" + r.txid.ToString() +
                                             " failpoint participant.prepare.after_vote: " +
                                             s.ToString() + " (ignored: vote sent)");
        }
      }
      break;
    }
    case Reply::Kind::kCommit: {
      Status s = fp::Eval(fp::Point::kParticipantCommitBeforeAck);
      if (!s.ok()) {
        Trace(r.txid, "refused", "failpoint before_ack");
        p.fail(MakeDtxError(ErrorCode::kInternal, "failpoint participant.commit.before_ack: " +
                                                      s.ToString() + " (the commit is done)"));
        break;
      }
      hooks_->CommitAcked();
      Trace(r.txid, obs::span::kAcked, "commit");
      p.done();
      break;
    }
    case Reply::Kind::kAbort:
      hooks_->AbortAcked();
      Trace(r.txid, obs::span::kAcked, "abort");
      p.done();
      break;
    case Reply::Kind::kAdoptEpoch: p.done(); break;
  }
}

void ParticipantDriver::TraceVote(const Reply& r) {
  const bool this_prepare = preparing_.active && preparing_.txid == r.txid;
  if (r.vote == Vote::kNo) {
    if (r.no_cause == NoVoteCause::kLockConflict) hooks_->Trace(r.txid, "conflict", "lock");
    if (r.no_cause == NoVoteCause::kStaleRead) hooks_->Trace(r.txid, "conflict", "stale read");
    char detail[40];
    std::snprintf(detail, sizeof(detail), "no:%s", AbortReasonName(WireAbortReason(r.no_cause)));
    hooks_->Trace(r.txid, obs::span::kVoted, detail);
    return;
  }
  if (this_prepare && preparing_.read_only && !preparing_.locked_recorded) {
    // Nothing to log: the locks were taken, the reads validated, and the
    // locks released at once.
    hooks_->Trace(r.txid, obs::span::kLocked, "read-only: validated, released");
    preparing_.locked_recorded = true;
  }
  hooks_->Trace(r.txid, obs::span::kVoted, r.vote == Vote::kYes ? "yes" : "read_only");
}

// ---- served calls ---------------------------------------------------------------------

Token ParticipantDriver::NewToken(Pending p) {
  p.start_ns = hooks_->SteadyNs();
  const Token t = next_token_++;
  pending_.emplace(t, std::move(p));
  return t;
}

void ParticipantDriver::HeardFromCoordinator() {
  coordinator_heard_ms_ = std::max<uint64_t>(io_->NowMs(), 1);
}

void ParticipantDriver::NoteResolved(const TxId& txid, const char* how, const char* decision) {
  if (recovered_in_doubt_.erase(txid) == 0) return;
  hooks_->Note(NoteLevel::kInfo, "txid=" + txid.ToString() + " in-doubt resolved by the " +
                                     "coordinator's " + how + " call: " + decision);
}

void ParticipantDriver::Read(const std::string& key,
                             std::function<void(const rpc::ReadResult&)> cob, Fail fail) {
  if (stopped_) return;
  Pending p;
  p.kind = Reply::Kind::kRead;
  p.read = std::move(cob);
  p.fail = std::move(fail);
  core_->Read(NewToken(std::move(p)), key, io_->NowMs());
  Process();
}

void ParticipantDriver::Prepare(const rpc::PrepareRequest& req,
                                std::function<void(const rpc::PrepareResponse&)> cob, Fail fail) {
  if (stopped_) return;
  HeardFromCoordinator();
  if (req.reads.size() + req.writes.size() > kTxKeysMax) {
    fail(MakeDtxError(ErrorCode::kBadArgument,
                      std::to_string(req.reads.size() + req.writes.size()) +
                          " keys exceed kTxKeysMax (" + std::to_string(kTxKeysMax) + ")"));
    return;
  }
  if (req.__isset.fingerprint && !FingerprintFromRpc(req.fingerprint).has_value()) {
    fail(MakeDtxError(ErrorCode::kBadArgument,
                      "fingerprint of " + std::to_string(req.fingerprint.size()) +
                          " bytes (or all zero): want " + std::to_string(kFingerprintBytes)));
    return;
  }
  if (req.__isset.attempt && !AttemptFromRpc(req.attempt).has_value()) {
    fail(MakeDtxError(ErrorCode::kBadArgument, "PREPARE attempt with a negative epoch or seq"));
    return;
  }
  PrepareRequest in = FromRpc(req);
  Pending p;
  p.kind = Reply::Kind::kPrepare;
  p.prepare = std::move(cob);
  p.fail = std::move(fail);
  if (hooks_->tracing()) {
    hooks_->Trace(in.txid, obs::span::kReceived,
                  in.read_only_tx ? "prepare (read-only)"
                  : in.one_phase  ? "prepare (one-phase)"
                                  : "prepare");
    preparing_ =
        PrepareInProgress{.active = true,
                          .txid = in.txid,
                          .read_only = in.read_only_tx || (in.one_phase && in.writes.empty()),
                          .keys = in.reads.size() + in.writes.size(),
                          .locked_recorded = false};
  }
  core_->Prepare(NewToken(std::move(p)), std::move(in), io_->NowMs());
  Process();
  preparing_.active = false;
}

void ParticipantDriver::Commit(const rpc::TxId& txid, rpc::Epoch epoch, std::function<void()> cob,
                               Fail fail) {
  if (stopped_) return;
  HeardFromCoordinator();
  const TxId t = dtx::FromRpc(txid);
  if (hooks_->tracing()) {
    hooks_->Trace(t, obs::span::kReceived, "commit");
    hooks_->Trace(t, obs::span::kDecided, "commit");
  }
  if (!recovered_in_doubt_.empty()) NoteResolved(t, "Commit", "COMMIT");
  Pending p;
  p.kind = Reply::Kind::kCommit;
  p.done = std::move(cob);
  p.fail = std::move(fail);
  core_->Commit(NewToken(std::move(p)), t, epoch, io_->NowMs());
  Process();
}

void ParticipantDriver::Abort(const rpc::TxId& txid, rpc::Epoch epoch, const rpc::Attempt& attempt,
                              std::function<void()> cob, Fail fail) {
  if (stopped_) return;
  HeardFromCoordinator();
  const TxId t = dtx::FromRpc(txid);
  const std::optional<Attempt> a = AttemptFromRpc(attempt);
  if (!a) {
    fail(MakeDtxError(ErrorCode::kBadArgument, "ABORT attempt with a negative epoch or seq"));
    return;
  }
  if (hooks_->tracing()) {
    hooks_->Trace(t, obs::span::kReceived, "abort");
    hooks_->Trace(t, obs::span::kDecided, "abort");
  }
  if (!recovered_in_doubt_.empty()) NoteResolved(t, "Abort", "ABORT");
  Pending p;
  p.kind = Reply::Kind::kAbort;
  p.done = std::move(cob);
  p.fail = std::move(fail);
  core_->Abort(NewToken(std::move(p)), t, epoch, io_->NowMs(), *a);
  Process();
}

void ParticipantDriver::AdoptEpoch(rpc::Epoch epoch, const std::string& coordinator,
                                   std::function<void()> cob, Fail fail) {
  if (stopped_) return;
  Pending p;
  p.kind = Reply::Kind::kAdoptEpoch;
  p.done = [this, epoch, coordinator, cob = std::move(cob)] {
    hooks_->Note(NoteLevel::kInfo, "epoch " + std::to_string(epoch) +
                                       " adopted at the request of coordinator " + coordinator);
    cob();
  };
  p.fail = std::move(fail);
  core_->AdoptEpoch(NewToken(std::move(p)), epoch, coordinator, io_->NowMs());
  Process();
}

rpc::HeartbeatResponse ParticipantDriver::Heartbeat(const rpc::HeartbeatRequest& req) {
  if (!req.sender.empty() && (coordinators_seen_.count(req.sender) != 0 ||
                              coordinators_seen_.size() < kCoordinatorsSeenMax)) {
    CoordinatorSeen& seen = coordinators_seen_[req.sender];
    seen.heard_ms = std::max<uint64_t>(io_->NowMs(), 1);
    seen.role = NodeRoleName(req.role);
    seen.epoch = req.epoch;
  }
  rpc::HeartbeatResponse resp;
  resp.name = options_.name;
  resp.__set_role(rpc::NodeRole::PARTICIPANT);
  resp.epoch = core_->epoch();
  return resp;
}

std::vector<rpc::InDoubtTx> ParticipantDriver::ListInDoubt() const {
  std::vector<rpc::InDoubtTx> out;
  for (const InDoubtInfo& t : core_->ListInDoubt(io_->NowMs())) {
    rpc::InDoubtTx x;
    x.txid = ToRpc(t.txid);
    x.age_ms = static_cast<int64_t>(t.age_ms);
    x.coordinator = CoordinatorFor(t.coordinator);
    out.push_back(std::move(x));
  }
  return out;
}

}  // namespace dtx::participant
