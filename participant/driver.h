// ParticipantDriver: the glue between a participant's protocol core
// (participant/core.h, pure) and the world. It drains the core's Ready in
// the order Ready requires (append records, then ask coordinators, then
// answer requests), converts the requests from the wire (idl/dtx.thrift,
// generated as dtx::rpc) to the core's inputs and the core's replies, votes
// and errors back to the wire, runs the in-doubt fall-back's calls
// (QueryDecision to the coordinator the core names; GetStatus to every
// coordinator known when the core asks for a primary - the core decides
// which answers count, participant/core.h QueryDecisionMsg), and evaluates
// the participant's commit-path failpoints (common/failpoint.h).
//
// Network, disk and time reach it only through ParticipantIo, so the same
// glue runs in the node (participant/runtime.cc: Thrift stubs, wal::Log,
// LevelDB, the event loop) and in the deterministic simulator (tests/sim: a
// seeded network and in-memory WALs and stores). What only the node has
// (metrics, span tracing, log lines) hangs on ParticipantHooks. The store is
// the core's (Core applies committed writes itself); FailpointStore wraps it
// to evaluate participant.commit.after_apply.
//
// Ownership / lifetime: the driver holds plain pointers to the Core, the
// ParticipantIo and the ParticipantHooks; all three must outlive it. The
// completion callbacks it hands to ParticipantIo capture the driver: the
// owner either keeps it alive until every callback ran or drops callbacks
// after destroying it (the runtime guards them with its lifetime token and
// calls Stop() first; the simulator drops the completions of a crashed
// node's calls).
// Threading: none; one thread (the runtime's loop thread) calls every method
// and every callback.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/failpoint.h"
#include "common/rpc_error.h"
#include "common/status.h"
#include "dtx_types.h"
#include "node/node.h"
#include "participant/core.h"

namespace dtx::participant {

// What the driver needs from the world. Every `done` runs at most once,
// later (never inside the call that issued it), on the driver's thread.
class ParticipantIo {
 public:
  virtual ~ParticipantIo() = default;

  // ---- clock ----
  virtual uint64_t NowMs() = 0;

  // ---- log ----
  // Runs once the record is durable. `more`: the notice of another record
  // made durable by the same sync runs right after this one, so the driver
  // leaves the core's work to the last of them (the core then applies their
  // commits to the store together); false on the last. An Io may always
  // pass false (one record at a time), but never true without a next notice
  // (unless the node stops meanwhile).
  using DurableFn = std::function<void(uint64_t lsn, bool more)>;
  // Appends one record and returns its LSN (the core's tags are LSNs:
  // nothing else appends). A forced record's `on_durable` runs (after the
  // call returned) once the record is durable - never before its sync
  // returned success; a non-forced record's is empty. A failed append or
  // sync is the Io's to handle (fail-stop): the driver never sees it.
  // `txid` is for logs and traces (zero for EPOCH).
  virtual uint64_t Append(RecordType type, const std::string& payload, bool forced,
                          const TxId& txid, DurableFn on_durable) = 0;

  // ---- transport: calls to coordinators (the in-doubt fall-back) ----
  // Coordinator.QueryDecision. The decision is read off the wire: the driver
  // checks its range (RawEnumValue).
  // `fingerprint`, `attempt`: idl/dtx.thrift QueryDecision (empty / all
  // zero: not known).
  virtual void QueryDecision(
      const std::string& to, const rpc::TxId& txid, const std::string& fingerprint,
      const rpc::Attempt& attempt, int timeout_ms,
      std::function<void(const RpcStatus&, const rpc::Decision::type&)> done) = 0;
  // Coordinator.GetStatus (its role and epoch are what the core looks at).
  virtual void GetStatus(const std::string& to, int timeout_ms,
                         std::function<void(const RpcStatus&, const rpc::NodeStatus&)> done) = 0;

  // ---- transport: write out ----
  // Hands what was sent so far to the kernel now rather than at the end of
  // the loop turn (the transport coalesces writes: common/rpc_server.h). Called
  // only before an armed failpoint that stands for "after the message was
  // sent", so that a crash there finds it sent. An Io whose sends are
  // immediate (the simulator's) does nothing.
  virtual void FlushSends() = 0;

  // ---- fail-stop ----
  // The node cannot go on (the core's fatal error, an armed failpoint that
  // fails on the commit path). The node process exits; an Io that returns (a
  // simulated node) must stop the node: the driver processes nothing more.
  virtual void FailStop(const std::string& why) = 0;
};

enum class NoteLevel : uint8_t { kDebug, kInfo, kWarn };

// Observation points for what only the node binary has. Every method has a
// do-nothing default.
class ParticipantHooks {
 public:
  virtual ~ParticipantHooks() = default;
  // Span events (common/trace.h): Trace is called only while tracing().
  // `event` has static storage duration.
  virtual bool tracing() const { return false; }
  virtual void Trace(const TxId& /*txid*/, const char* /*event*/, std::string_view /*detail*/) {}
  // Log lines.
  virtual void Note(NoteLevel /*level*/, const std::string& /*text*/) {}
  // Latency of served calls: the driver reads SteadyNs() when a call arrives
  // and reports the elapsed time when it is answered (also with an error).
  virtual uint64_t SteadyNs() { return 0; }
  virtual void Answered(Reply::Kind /*kind*/, uint64_t /*elapsed_ns*/) {}
  // A vote sent (`reason`: a NO's, as on the wire).
  virtual void Voted(Vote /*vote*/, std::optional<AbortReason> /*reason*/) {}
  // A QueryDecision about `txid` goes out (`fall_back`: to a primary found
  // by the fall-back, QueryDecisionMsg step 3).
  virtual void AskingDecision(const TxId& /*txid*/, bool /*fall_back*/) {}
  // A Commit / Abort call acked.
  virtual void CommitAcked() {}
  virtual void AbortAcked() {}
  // The core answered a request token it does not owe an answer to (twice,
  // or never issued): a core bug. The reply is dropped.
  virtual void UnmatchedReply(Token /*token*/) {}
};

// The core's Store, evaluating participant.commit.after_apply once applied
// while live (not during replay: set_live() after recovery).
class FailpointStore final : public Store {
 public:
  explicit FailpointStore(Store* inner) : inner_(inner) {}
  void set_live() { live_ = true; }
  Result<Item> Get(std::string_view key) override { return inner_->Get(key); }
  Status Apply(const std::vector<WriteOp>& writes, Version version) override;
  // The inner store's ApplyBatch, then the failpoint once per commit.
  Status ApplyBatch(const std::vector<Commit>& commits) override;

 private:
  Store* inner_;
  bool live_ = false;
};

// Coordinators whose heartbeats are remembered (by sender address); past it,
// a new sender is not (GetStatus lists them; the fall-back asks them).
inline constexpr size_t kCoordinatorsSeenMax = 16;
// Per-request timeout of a QueryDecision or GetStatus call.
inline constexpr int kQueryDecisionTimeoutMsDefault = 1000;

struct ParticipantDriverOptions {
  std::string name;                       // the node's name, answered in Heartbeat
  std::string coordinator;                // host:port: asked when a PREPARE named none
  std::vector<std::string> coordinators;  // every coordinator known by configuration
  int query_timeout_ms = kQueryDecisionTimeoutMsDefault;
};

class ParticipantDriver {
 public:
  using Fail = std::function<void(const rpc::DtxError&)>;

  // A coordinator that sent heartbeats.
  struct CoordinatorSeen {
    uint64_t heard_ms = 0;
    std::string role;  // NodeRoleName of what it sent
    int64_t epoch = 0;
  };

  ParticipantDriver(ParticipantDriverOptions options, Core* core, ParticipantIo* io,
                    ParticipantHooks* hooks);
  ParticipantDriver(const ParticipantDriver&) = delete;
  ParticipantDriver& operator=(const ParticipantDriver&) = delete;

  // After the core's recovery (FinishRecovery): notes the transactions in
  // doubt, then drains what recovery left (the first decision queries).
  void Start();
  // Drains the core's Ready (append, ask, reply) until it is empty. Guarded
  // against re-entry: a call from inside a drain returns; the outer call
  // drains it.
  void Process();
  // Core::Tick(now) (read timeouts, decision queries), then Process.
  void Tick();
  // After Stop() no input reaches the core and no callback does anything;
  // the calls still owed an answer are dropped unanswered.
  void Stop();
  bool stopped() const { return stopped_; }

  // ---- served calls (the Thrift handler's, or the simulated network's) ----
  void Read(const std::string& key, std::function<void(const rpc::ReadResult&)> cob, Fail fail);
  void Prepare(const rpc::PrepareRequest& req, std::function<void(const rpc::PrepareResponse&)> cob,
               Fail fail);
  void Commit(const rpc::TxId& txid, rpc::Epoch epoch, std::function<void()> cob, Fail fail);
  // `attempt`: all zero when unset; negative: BAD_ARGUMENT.
  void Abort(const rpc::TxId& txid, rpc::Epoch epoch, const rpc::Attempt& attempt,
             std::function<void()> cob, Fail fail);
  void AdoptEpoch(rpc::Epoch epoch, const std::string& coordinator, std::function<void()> cob,
                  Fail fail);
  rpc::HeartbeatResponse Heartbeat(const rpc::HeartbeatRequest& req);
  std::vector<rpc::InDoubtTx> ListInDoubt() const;

  // Requests the core owes an answer to.
  size_t pending() const { return pending_.size(); }
  const std::map<std::string, CoordinatorSeen>& coordinators_seen() const {
    return coordinators_seen_;
  }
  // When a coordinator last called (Prepare, Commit, Abort) or answered a
  // QueryDecision; 0: never.
  uint64_t coordinator_heard_ms() const { return coordinator_heard_ms_; }

 private:
  struct Pending {
    Reply::Kind kind = Reply::Kind::kRead;
    std::function<void(const rpc::ReadResult&)> read;
    std::function<void(const rpc::PrepareResponse&)> prepare;
    std::function<void()> done;
    Fail fail;
    uint64_t start_ns = 0;
  };
  // The Prepare call being processed right now (for the `locked` event of
  // the record its Process() appends).
  struct PrepareInProgress {
    bool active = false;
    TxId txid;
    bool read_only = false;  // nothing will be logged: locks validated and released at once
    size_t keys = 0;
    bool locked_recorded = false;
  };

  Token NewToken(Pending p);
  void Append(const PersistOp& op);
  // A record's durability notice (ParticipantIo::DurableFn): the commit-path
  // failpoints at once; the core hears of the batch with its last notice.
  void OnDurable(uint64_t lsn, RecordType type, const TxId& txid, bool more);
  // Sends the core's question `m` (kAsk) and feeds the answer back to it.
  void AskDecision(const QueryDecisionMsg& m);
  // m.kind == kFindPrimary: every known coordinator's status, to the core.
  void AskOtherCoordinators(const QueryDecisionMsg& m);
  void Deliver(Reply& r);
  void TraceVote(const Reply& r);
  void TraceAppend(const PersistOp& op);
  void HeardFromCoordinator();
  void NoteResolved(const TxId& txid, const char* how, const char* decision);
  void EvalOrFailStop(fp::Point p, const TxId& txid);
  void FailStop(const std::string& why);
  void Trace(const TxId& txid, const char* event, std::string_view detail = {}) {
    if (hooks_->tracing()) hooks_->Trace(txid, event, detail);
  }
  std::string CoordinatorFor(const std::string& named) const {
    return named.empty() ? options_.coordinator : named;
  }

  ParticipantDriverOptions options_;
  Core* core_;
  ParticipantIo* io_;
  ParticipantHooks* hooks_;
  std::unordered_map<Token, Pending> pending_;
  Token next_token_ = 1;
  node::DrainGuard drain_;  // Process() is not re-entered (node/node.h)
  bool stopped_ = false;
  PrepareInProgress preparing_;
  // The batch of durability notices being received (OnDurable): the highest
  // LSN, and the COMMITs to trace `applied` once the core has applied them.
  uint64_t durable_upto_ = 0;
  std::vector<TxId> durable_commits_;
  uint64_t coordinator_heard_ms_ = 0;
  std::map<std::string, CoordinatorSeen> coordinators_seen_;  // by address
  // Transactions in doubt after recovery and not resolved yet: each gets one
  // "in-doubt resolved by ..." note, whether a QueryDecision answer or the
  // coordinator's own Commit/Abort call resolves it.
  std::set<TxId> recovered_in_doubt_;
};

}  // namespace dtx::participant
