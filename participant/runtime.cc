#include "participant/runtime.h"

#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "common/failpoint.h"
#include "common/log.h"
#include "common/rpc_error.h"

namespace dtx::participant {

using apache::thrift::TDelayedException;

namespace {

[[noreturn]] void Die(const std::string& why) {
  DTX_LOG_ERROR("fatal: {}; exiting", why);
  log::Flush();
  ::_exit(1);
}

// Evaluates a commit-path failpoint whose `error` must stop the node.
void EvalFailStop(fp::Point p) {
  Status s = fp::Eval(p);
  if (!s.ok()) Die(std::string("failpoint ") + fp::Name(p) + ": " + s.ToString());
}

rpc::DtxError ToDtxError(ErrorCode code, const std::string& message) {
  return MakeDtxError(static_cast<rpc::ErrorCode::type>(static_cast<int>(code)), message);
}

}  // namespace

// The core's Store, evaluating participant.commit.after_apply once applied
// (not during replay).
class Runtime::FailpointStore final : public Store {
 public:
  explicit FailpointStore(Store* inner) : inner_(inner) {}
  void set_live() { live_ = true; }
  Result<Item> Get(std::string_view key) override { return inner_->Get(key); }
  Status Apply(const std::vector<WriteOp>& writes, Version version) override {
    DTX_RETURN_IF_ERROR(inner_->Apply(writes, version));
    if (live_) return fp::Eval(fp::Point::kParticipantCommitAfterApply);
    return Status::OK();
  }

 private:
  Store* inner_;
  bool live_ = false;
};

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
  start_ms_ = loop_->NowMs();
  const std::filesystem::path dir(options_.dir);
  std::error_code ec;
  std::filesystem::create_directories(dir / "data", ec);
  if (ec) return Status::IOError("creating " + (dir / "data").string() + ": " + ec.message());

  auto level = LevelStore::Open((dir / "data").string());
  if (!level.ok()) return level.status();
  level_ = std::move(level.value());
  store_ = std::make_unique<FailpointStore>(level_.get());
  core_ = std::make_unique<Core>(options_.core, store_.get());

  auto log = wal::Log::Open(options_.wal, (dir / "wal").string(),
                            [this](wal::Lsn lsn, uint8_t type, std::string_view payload) {
                              ++replayed_;
                              return core_->Replay(lsn, type, payload);
                            });
  if (!log.ok()) return Status(log.status().IsCorruption() ? Status::Corruption("WAL: " + log.status().message())
                                                           : log.status());
  log_ = std::move(log.value());
  core_->FinishRecovery(NowMs());
  store_->set_live();
  CoreStats st = core_->stats();
  DTX_LOG_INFO("recovered: {} records replayed, epoch={}, commit_counter={}, in_doubt={}, inferred_aborts={}",
               replayed_, st.epoch, st.commit_counter, st.in_flight, st.replay_inferred_aborts);
  for (const InDoubtInfo& t : core_->ListInDoubt(NowMs())) {
    DTX_LOG_INFO("txid={} in doubt after recovery; asking coordinator {}", t.txid.ToString(),
                 t.coordinator.empty() ? options_.coordinator : t.coordinator);
  }
  Process();

  handler_ = std::make_shared<Handler>(this);
  RpcServerOptions so;
  so.host = options_.listen_host;
  so.port = options_.listen_port;
  so.name = options_.name;
  server_ = std::make_unique<RpcServer>(loop_, std::make_shared<rpc::ParticipantAsyncProcessor>(handler_), so);
  DTX_RETURN_IF_ERROR(server_->Start());
  tick_timer_ = loop_->RunEvery(kTickIntervalMs, [this] {
    core_->Tick(NowMs());
    Process();
  });
  DTX_LOG_INFO("serving on {} (dir {}, coordinator {})", address(), options_.dir, options_.coordinator);
  return Status::OK();
}

Runtime::~Runtime() {
  Shutdown();
  alive_.reset();
  log_.reset();  // syncs what is queued; its callbacks find alive_ expired
  core_.reset();
  store_.reset();
  level_.reset();
}

void Runtime::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  if (handler_) handler_->Detach();
  if (server_) server_->Close();
  if (tick_timer_ != 0) loop_->Cancel(tick_timer_);
  tick_timer_ = 0;
  for (auto& [addr, stub] : stubs_) stub.channel()->Close();
  pending_.clear();
}

std::string Runtime::address() const { return server_ ? server_->address() : ""; }

uint64_t Runtime::NowMs() const { return loop_->NowMs(); }

void Runtime::HeardFromCoordinator() { coordinator_heard_ms_ = std::max<uint64_t>(NowMs(), 1); }

Token Runtime::NewToken(Pending p) {
  Token t = next_token_++;
  pending_.emplace(t, std::move(p));
  return t;
}

// ---------------------------------------------------------------------------
// Draining the core

void Runtime::Process() {
  Ready r = core_->TakeReady();
  if (!r.fatal.ok()) Die(r.fatal.ToString());
  for (PersistOp& op : r.persist) Append(op);
  for (const QueryDecisionMsg& m : r.send) {
    AskDecision(m.txid, m.coordinator.empty() ? options_.coordinator : m.coordinator,
                /*may_fall_back=*/true);
  }
  for (Reply& rep : r.replies) Deliver(rep);
}

void Runtime::Append(PersistOp& op) {
  if (op.type == RecordType::kPrepare) EvalFailStop(fp::Point::kParticipantPrepareBeforeLog);
  if (op.type == RecordType::kCommit) EvalFailStop(fp::Point::kParticipantCommitBeforeLog);
  wal::DurableFn on_durable;
  if (op.forced) {
    std::weak_ptr<int> alive = alive_;
    on_durable = [this, alive, loop = loop_, tag = op.tag, type = op.type, txid = op.txid](const Status& s) {
      if (!s.ok()) Die("WAL sync failed: " + s.ToString());
      loop->Post([this, alive, tag, type, txid] {
        if (alive.expired()) return;
        OnDurable(tag, type, txid);
      });
    };
  }
  auto lsn = log_->Append(static_cast<uint8_t>(op.type), op.payload, std::move(on_durable));
  if (!lsn.ok()) Die("WAL append failed: " + lsn.status().ToString());
  if (op.type == RecordType::kEpoch) DTX_LOG_INFO("epoch rose; EPOCH record at lsn={}", *lsn);
}

void Runtime::OnDurable(uint64_t tag, RecordType type, TxId txid) {
  if (shut_down_) return;
  (void)txid;
  if (type == RecordType::kPrepare) EvalFailStop(fp::Point::kParticipantPrepareAfterLog);
  if (type == RecordType::kCommit) EvalFailStop(fp::Point::kParticipantCommitAfterLog);
  core_->OnPersisted(tag, NowMs());
  Process();
}

CoordinatorStub& Runtime::StubFor(const std::string& address) {
  auto it = stubs_.find(address);
  if (it != stubs_.end()) return it->second;
  if (stubs_.size() >= kCoordinatorChannelsMax && address != options_.coordinator) {
    return StubFor(options_.coordinator);
  }
  return stubs_.emplace(address, CoordinatorStub(loop_, address)).first->second;
}

void Runtime::AskDecision(const TxId& txid, const std::string& address, bool may_fall_back) {
  if (address.empty()) return;
  std::weak_ptr<int> alive = alive_;
  StubFor(address).QueryDecision(
      ToRpc(txid), kQueryDecisionTimeoutMs,
      [this, alive, txid, address, may_fall_back](const RpcStatus& s, const rpc::Decision::type& d) {
        if (alive.expired() || shut_down_) return;
        if (!s.ok()) {
          // Not the primary: ask the one it named. Unreachable: ask the
          // configured coordinator. Otherwise the core asks again later.
          if (may_fall_back && s.primary().has_value() && *s.primary() != address) {
            AskDecision(txid, *s.primary(), false);
          } else if (may_fall_back && !s.error_code().has_value() && address != options_.coordinator) {
            AskDecision(txid, options_.coordinator, false);
          } else {
            DTX_LOG_WARN("txid={} QueryDecision to {} failed: {}", txid.ToString(), address, s.ToString());
          }
          return;
        }
        HeardFromCoordinator();
        Decision decision = d == rpc::Decision::COMMIT  ? Decision::kCommit
                            : d == rpc::Decision::ABORT ? Decision::kAbort
                                                        : Decision::kUnknown;
        if (decision != Decision::kUnknown) {
          DTX_LOG_INFO("txid={} in-doubt resolved by {}: {}", txid.ToString(), address,
                       decision == Decision::kCommit ? "COMMIT" : "ABORT");
        }
        core_->OnDecision(txid, decision, NowMs());
        Process();
      });
}

void Runtime::Deliver(Reply& r) {
  auto it = pending_.find(r.token);
  if (it == pending_.end()) return;  // shut down meanwhile
  Pending p = std::move(it->second);
  pending_.erase(it);
  if (r.error != ErrorCode::kOk) {
    if (r.kind != Reply::Kind::kRead) {
      DTX_LOG_WARN("txid={} {} refused: {} {}", r.txid.ToString(),
                   r.kind == Reply::Kind::kPrepare ? "Prepare" : r.kind == Reply::Kind::kCommit ? "Commit" : "Abort",
                   ErrorCodeName(r.error), r.message);
    }
    p.fail(ToDtxError(r.error, r.message));
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
      rpc::PrepareResponse out;
      out.vote = r.vote == Vote::kYes    ? rpc::Vote::YES
                 : r.vote == Vote::kNo   ? rpc::Vote::NO
                                         : rpc::Vote::READ_ONLY;
      if (r.vote == Vote::kNo) {
        out.__set_reason(static_cast<rpc::AbortReason::type>(static_cast<int>(r.reason)));
        out.__set_detail(r.detail);
        DTX_LOG_DEBUG("txid={} vote NO: {}", r.txid.ToString(), r.detail);
      }
      p.prepare(out);
      if (r.vote == Vote::kYes) {
        Status s = fp::Eval(fp::Point::kParticipantPrepareAfterVote);
        if (!s.ok()) DTX_LOG_WARN("txid={} failpoint participant.prepare.after_vote: {} (ignored: vote sent)",
                                  r.txid.ToString(), s.ToString());
      }
      break;
    }
    case Reply::Kind::kCommit: {
      Status s = fp::Eval(fp::Point::kParticipantCommitBeforeAck);
      if (!s.ok()) {
        p.fail(MakeDtxError(rpc::ErrorCode::INTERNAL,
                            "failpoint participant.commit.before_ack: " + s.ToString() + " (the commit is done)"));
        break;
      }
      p.done();
      break;
    }
    case Reply::Kind::kAbort:
      p.done();
      break;
  }
}

// ---------------------------------------------------------------------------
// The service

void Runtime::Read(const std::string& key, std::function<void(const rpc::ReadResult&)> cob, Fail fail) {
  Pending p;
  p.kind = Reply::Kind::kRead;
  p.read = std::move(cob);
  p.fail = std::move(fail);
  core_->Read(NewToken(std::move(p)), key, NowMs());
  Process();
}

void Runtime::Prepare(const rpc::PrepareRequest& req, std::function<void(const rpc::PrepareResponse&)> cob,
                      Fail fail) {
  HeardFromCoordinator();
  if (req.reads.size() + req.writes.size() > kTxKeysMax) {
    fail(MakeDtxError(rpc::ErrorCode::BAD_ARGUMENT, std::to_string(req.reads.size() + req.writes.size()) +
                                                        " keys exceed kTxKeysMax (" + std::to_string(kTxKeysMax) + ")"));
    return;
  }
  PrepareRequest in;
  in.txid = FromRpc(req.txid);
  in.epoch = req.epoch;
  in.one_phase = req.one_phase;
  in.read_only_tx = req.read_only_tx;
  if (req.__isset.coordinator) in.coordinator = req.coordinator;
  in.reads.reserve(req.reads.size());
  for (const rpc::ReadItem& r : req.reads) in.reads.push_back({r.key, r.version});
  in.writes.reserve(req.writes.size());
  for (const rpc::WriteItem& w : req.writes) {
    WriteOp op;
    op.key = w.key;
    if (w.__isset.value) op.value = w.value;
    in.writes.push_back(std::move(op));
  }
  Pending p;
  p.kind = Reply::Kind::kPrepare;
  p.prepare = std::move(cob);
  p.fail = std::move(fail);
  core_->Prepare(NewToken(std::move(p)), std::move(in), NowMs());
  Process();
}

void Runtime::Commit(const rpc::TxId& txid, rpc::Epoch epoch, std::function<void()> cob, Fail fail) {
  HeardFromCoordinator();
  Pending p;
  p.kind = Reply::Kind::kCommit;
  p.done = std::move(cob);
  p.fail = std::move(fail);
  core_->Commit(NewToken(std::move(p)), FromRpc(txid), epoch, NowMs());
  Process();
}

void Runtime::Abort(const rpc::TxId& txid, rpc::Epoch epoch, std::function<void()> cob, Fail fail) {
  HeardFromCoordinator();
  Pending p;
  p.kind = Reply::Kind::kAbort;
  p.done = std::move(cob);
  p.fail = std::move(fail);
  core_->Abort(NewToken(std::move(p)), FromRpc(txid), epoch, NowMs());
  Process();
}

rpc::NodeStatus Runtime::GetStatus() const {
  CoreStats st = core_->stats();
  rpc::NodeStatus out;
  out.name = options_.name;
  out.role = "participant";
  out.epoch = st.epoch;
  out.uptime_ms = static_cast<int64_t>(NowMs() - start_ms_);
  out.durable_lsn = static_cast<int64_t>(log_->durable_lsn());
  out.in_flight = static_cast<int64_t>(st.in_flight);
  out.in_doubt = static_cast<int64_t>(st.in_doubt);
  rpc::PeerStatus coord;
  coord.name = "coordinator";
  coord.address = options_.coordinator;
  coord.heartbeat_age_ms = coordinator_heard_ms_ == 0 ? -1 : static_cast<int64_t>(NowMs() - coordinator_heard_ms_);
  coord.suspected = false;
  out.peers.push_back(coord);
  wal::Stats ws = log_->stats();
  std::map<std::string, int64_t> c = {
      {"prepares", static_cast<int64_t>(st.prepares)},
      {"votes_yes", static_cast<int64_t>(st.votes_yes)},
      {"votes_no", static_cast<int64_t>(st.votes_no)},
      {"votes_read_only", static_cast<int64_t>(st.votes_read_only)},
      {"commits", static_cast<int64_t>(st.commits)},
      {"aborts", static_cast<int64_t>(st.aborts)},
      {"read_timeouts", static_cast<int64_t>(st.read_timeouts)},
      {"parked_reads", static_cast<int64_t>(st.parked_reads)},
      {"locked_keys", static_cast<int64_t>(st.locked_keys)},
      {"decision_queries", static_cast<int64_t>(st.decision_queries)},
      {"stale_epoch_refusals", static_cast<int64_t>(st.stale_epoch_refusals)},
      {"commit_counter", static_cast<int64_t>(st.commit_counter)},
      {"replayed_records", static_cast<int64_t>(st.replayed_records)},
      {"wal_syncs", static_cast<int64_t>(ws.syncs)},
      {"wal_records_synced", static_cast<int64_t>(ws.records_synced)},
      {"wal_bytes_written", static_cast<int64_t>(ws.bytes_written)},
  };
  out.__set_counters(c);
  return out;
}

std::vector<rpc::InDoubtTx> Runtime::ListInDoubt() const {
  std::vector<rpc::InDoubtTx> out;
  for (const InDoubtInfo& t : core_->ListInDoubt(NowMs())) {
    rpc::InDoubtTx x;
    x.txid = ToRpc(t.txid);
    x.age_ms = static_cast<int64_t>(t.age_ms);
    x.coordinator = t.coordinator.empty() ? options_.coordinator : t.coordinator;
    out.push_back(std::move(x));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Handler: the Thrift edge

namespace {
Runtime::Fail FailVia(Handler::ExnCob exn_cob) {
  return [exn_cob = std::move(exn_cob)](const rpc::DtxError& e) {
    exn_cob(TDelayedException::delayException(e));
  };
}
rpc::DtxError Unavailable() { return MakeDtxError(rpc::ErrorCode::UNAVAILABLE, "participant is shutting down"); }
}  // namespace

void Handler::Read(std::function<void(const rpc::ReadResult&)> cob, ExnCob exn_cob, const std::string& key) {
  if (runtime_ == nullptr) return exn_cob(TDelayedException::delayException(Unavailable()));
  runtime_->Read(key, std::move(cob), FailVia(std::move(exn_cob)));
}

void Handler::Prepare(std::function<void(const rpc::PrepareResponse&)> cob, ExnCob exn_cob,
                      const rpc::PrepareRequest& req) {
  if (runtime_ == nullptr) return exn_cob(TDelayedException::delayException(Unavailable()));
  runtime_->Prepare(req, std::move(cob), FailVia(std::move(exn_cob)));
}

void Handler::Commit(std::function<void()> cob, ExnCob exn_cob, const rpc::TxId& txid, const rpc::Epoch epoch) {
  if (runtime_ == nullptr) return exn_cob(TDelayedException::delayException(Unavailable()));
  runtime_->Commit(txid, epoch, std::move(cob), FailVia(std::move(exn_cob)));
}

void Handler::Abort(std::function<void()> cob, ExnCob exn_cob, const rpc::TxId& txid, const rpc::Epoch epoch) {
  if (runtime_ == nullptr) return exn_cob(TDelayedException::delayException(Unavailable()));
  runtime_->Abort(txid, epoch, std::move(cob), FailVia(std::move(exn_cob)));
}

void Handler::GetStatus(std::function<void(const rpc::NodeStatus&)> cob) {
  if (runtime_ == nullptr) {
    rpc::NodeStatus s;
    s.role = "participant";
    return cob(s);
  }
  cob(runtime_->GetStatus());
}

void Handler::ListInDoubt(std::function<void(const std::vector<rpc::InDoubtTx>&)> cob) {
  if (runtime_ == nullptr) return cob({});
  cob(runtime_->ListInDoubt());
}

void Handler::SetFailpoint(std::function<void()> cob, ExnCob exn_cob, const std::string& name,
                           const std::string& action) {
  Status s = fp::Arm(name, action);
  if (!s.ok()) {
    return exn_cob(TDelayedException::delayException(MakeDtxError(rpc::ErrorCode::BAD_ARGUMENT, s.message())));
  }
  DTX_LOG_INFO("failpoint {} armed: {}", name, action);
  cob();
}

}  // namespace dtx::participant
