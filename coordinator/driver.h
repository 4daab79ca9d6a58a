// CoordinatorDriver: the glue between a coordinator node's HaCore
// (coordinator/ha_core.h, pure) and the world. It drains the HaCore's
// HaReady in the order HaReady requires (append records, reload the log
// after a step-down, released decisions, messages, probes, Replicate and
// AdoptEpoch calls, replies, truncation), converts the core's messages to
// the wire's rpc:: types (idl/dtx.thrift) and the replies back, and serves
// the Coordinator / CoordinatorPeer calls that reach the core (Commit,
// QueryDecision, Heartbeat, Replicate).
//
// Network, disk and time reach it only through CoordinatorIo, so the same
// glue runs in the node (coordinator/runtime.cc: Thrift stubs, wal::Log,
// the event loop) and in the deterministic simulator (tests/sim: a seeded
// network and in-memory WALs). What only the node has (metrics, per-phase
// timings, span tracing, logging of notes) hangs on CoordinatorHooks.
// Failpoints (common/failpoint.h) are evaluated here; disarmed they cost one
// branch, and an armed failpoint that fails is fail-stop (CoordinatorIo::
// FailStop), as the coordinator has no other safe way to fail a step of the
// commit path.
//
// Ownership / lifetime: the driver holds plain pointers to the HaCore, the
// CoordinatorIo and the CoordinatorHooks; all three must outlive it. The
// completion callbacks it hands to CoordinatorIo capture the driver: the
// owner either keeps it alive until every callback ran or drops callbacks
// after destroying it (the runtime calls Stop() first and its stubs then
// complete synchronously; the simulator drops the completions of a crashed
// node's calls).
// Threading: none; one thread (the runtime's loop thread) calls every method
// and every callback.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "CoordinatorPeer.h"
#include "ParticipantPeer.h"
#include "common/failpoint.h"
#include "common/rpc_error.h"
#include "common/status.h"
#include "coordinator/core.h"
#include "coordinator/ha_core.h"
#include "node/node.h"

namespace dtx::coordinator {

// The core's view of how a call ended: a DtxError reply's code decides
// between kStaleEpoch and kError; a timeout is kTimeout; any other failure
// (no connection, connection lost, Busy, an undecodable reply) kUnavailable:
// the call may or may not have been carried out.
CallStatus ToCallStatus(const RpcStatus& st);

// What the driver needs from the world. Every `done` runs at most once,
// later (never inside the call that issued it), on the driver's thread; a
// call to the peer when there is none (alone) is dropped without a callback.
class CoordinatorIo {
 public:
  virtual ~CoordinatorIo() = default;

  // ---- clock ----
  virtual uint64_t NowMs() = 0;

  // ---- transport: calls to participants (Participant / ParticipantPeer) ----
  using Done = std::function<void(const RpcStatus&)>;
  virtual void Prepare(const std::string& to, const rpc::PrepareRequest& req, int timeout_ms,
                       std::function<void(const RpcStatus&, const rpc::PrepareResponse&)> done) = 0;
  virtual void Commit(const std::string& to, const rpc::TxId& txid, rpc::Epoch epoch,
                      int timeout_ms, Done done) = 0;
  virtual void Abort(const std::string& to, const rpc::TxId& txid, rpc::Epoch epoch,
                     const rpc::Attempt& attempt, int timeout_ms, Done done) = 0;
  // A heartbeat probe of a participant (ParticipantPeer.Heartbeat, or
  // whatever the transport uses for participants that do not serve it).
  virtual void ProbeParticipant(const std::string& to, const rpc::HeartbeatRequest& req,
                                int timeout_ms, Done done) = 0;
  // With a STALE_EPOCH refusal, the participant's current epoch and its
  // owner when it sent them (DtxError fields 4, 5), else nullopt / "".
  using AdoptDone = std::function<void(const RpcStatus&, std::optional<int64_t> current_epoch,
                                       const std::string& owner)>;
  virtual void AdoptEpoch(const std::string& to, rpc::Epoch epoch, const std::string& coordinator,
                          int timeout_ms, AdoptDone done) = 0;

  // ---- transport: calls to the peer coordinator (CoordinatorPeer) ----
  virtual void PeerHeartbeat(
      const rpc::HeartbeatRequest& req, int timeout_ms,
      std::function<void(const RpcStatus&, const rpc::HeartbeatResponse&)> done) = 0;
  virtual void PeerReplicate(
      const rpc::ReplicateRequest& req, int timeout_ms,
      std::function<void(const RpcStatus&, const rpc::ReplicateResponse&)> done) = 0;

  // ---- log ----
  // Appends one record and returns its LSN. A forced record's `on_durable`
  // runs (on the driver's thread, after the call returned) once the record
  // is durable - never before its sync returned success - unless the log was
  // reloaded meanwhile; a non-forced record's never runs. A failed append or
  // sync is the Io's to handle (fail-stop): the driver never sees it.
  virtual uint64_t Append(RecordType type, const std::string& payload, bool forced,
                          std::function<void(uint64_t lsn)> on_durable) = 0;
  // The highest LSN known durable.
  virtual uint64_t durable_lsn() = 0;
  // Reopens the log, feeding every record to `replay` in LSN order (a
  // step-down: the HaCore's fresh mirror). Durability notices of records
  // appended before it must not run afterwards.
  using ReplayFn = std::function<Status(uint64_t lsn, uint8_t type, std::string_view payload)>;
  virtual Status ReloadLog(const ReplayFn& replay) = 0;
  // Drops the records below `lsn` (every one of them durable).
  virtual Status TruncateBefore(uint64_t lsn) = 0;

  // ---- transport: write out ----
  // Hands what was sent so far to the kernel now rather than at the end of
  // the loop turn (the transport coalesces writes: common/rpc_server.h). Called
  // only before an armed failpoint that stands for "after the message was
  // sent", so that a crash there finds it sent. An Io whose sends are
  // immediate (the simulator's) does nothing.
  virtual void FlushSends() = 0;

  // ---- fail-stop ----
  // The node cannot go on (a failed log reopen or truncation, an armed
  // failpoint that fails). The node process exits; an Io that returns (a
  // simulated node) must stop the node: the driver processes nothing more.
  virtual void FailStop(const std::string& why) = 0;
};

// Observation points for what only the node binary has. Every method has a
// do-nothing default.
class CoordinatorHooks {
 public:
  virtual ~CoordinatorHooks() = default;
  // Span events (common/trace.h): Trace is called only while tracing().
  // `event` has static storage duration.
  virtual bool tracing() const { return false; }
  virtual void Trace(const TxId& /*txid*/, const char* /*event*/, std::string_view /*detail*/) {}
  // The HaCore's log lines.
  virtual void Note(const HaNote& /*note*/) {}
  // Per-phase timings of one transaction.
  virtual void PrepareSent(const TxId& /*txid*/) {}
  virtual void VoteIn(const TxId& /*txid*/) {}
  virtual void DecisionAppended(const TxId& /*txid*/) {}
  virtual void DecisionReleased(const TxId& /*txid*/) {}
  virtual void EndAppended(const TxId& /*txid*/) {}
  // The log was reopened after a step-down (the old core's timings are void).
  virtual void LogReloaded() {}
  // The core answered a request token it does not owe an answer to (twice,
  // or never issued): a core bug. The reply is dropped.
  virtual void UnmatchedReply(RequestToken /*token*/) {}
};

struct DriverOptions {
  std::string name;          // the node's name, answered in Heartbeat
  std::string self_address;  // peer host:port: the sender of our heartbeats
  // Peer host:port of the other coordinator ("" alone): the NOT_PRIMARY hint
  // (coordinator/runtime.cc turns it into the peer's client address for
  // clients).
  std::string peer;
  std::vector<std::string> participants;  // host:port by shard (trace names)
  int probe_timeout_ms = 1000;            // one heartbeat probe
};

class CoordinatorDriver {
 public:
  CoordinatorDriver(DriverOptions options, HaCore* ha, CoordinatorIo* io, CoordinatorHooks* hooks);
  CoordinatorDriver(const CoordinatorDriver&) = delete;
  CoordinatorDriver& operator=(const CoordinatorDriver&) = delete;

  // Drains the HaCore's HaReady (append, reload, release, send, reply) until
  // it is empty. Guarded against re-entry: a call from inside a drain (a
  // callback that completes at once) returns; the outer call drains it.
  void Process();
  // Tick: HaCore::Tick(now) (timeouts, re-sends, heartbeats, suspicion), then Process.
  void Tick();
  // Carries out the truncation the core asked for, if any (the runtime does
  // it on a timer).
  void MaybeTruncate();
  // After Stop() no input reaches the core and no callback does anything;
  // the calls still owed an answer are dropped unanswered.
  void Stop();
  bool stopped() const { return stopped_; }

  // ---- served calls (the Thrift handler's, or the simulated network's) ----
  void Commit(const rpc::CommitRequest& req, std::function<void(const rpc::CommitResult&)> cob,
              std::function<void(const rpc::DtxError&)> fail);
  // `fingerprint`: as on the wire (empty: not known; malformed: BAD_ARGUMENT).
  // `attempt`: the asker's (unset: all zero; negative: BAD_ARGUMENT).
  void QueryDecision(const rpc::TxId& txid, const std::string& fingerprint,
                     const rpc::Attempt& attempt, std::function<void(rpc::Decision::type)> cob,
                     std::function<void(const rpc::DtxError&)> fail);
  rpc::HeartbeatResponse Heartbeat(const rpc::HeartbeatRequest& req);
  // A client's GetOutcome: read-only (core.h RememberedOutcome); UNKNOWN
  // unless this node is the established, unfenced primary.
  rpc::Outcome::type GetOutcome(const rpc::TxId& txid) const;
  void Replicate(const rpc::ReplicateRequest& req,
                 std::function<void(const rpc::ReplicateResponse&)> cob,
                 std::function<void(const rpc::DtxError&)> fail);

  // Requests the core owes an answer to.
  size_t pending() const { return pending_.size() + replicate_pending_.size(); }
  // "participant-<shard index>" for an address in the shard map, else the address.
  std::string ParticipantName(const std::string& address) const;

 private:
  struct Pending {
    TxId txid;
    std::function<void(const rpc::CommitResult&)> commit_cob;  // Commit
    std::function<void(rpc::Decision::type)> query_cob;        // QueryDecision
    std::function<void(const rpc::DtxError&)> fail;
  };
  // A Replicate call from the primary, until the HaCore answers it.
  struct ReplicatePending {
    std::function<void(const rpc::ReplicateResponse&)> cob;
    std::function<void(const rpc::DtxError&)> fail;
  };

  void Append(const PersistRecord& p);
  void OnDurable(PersistTag tag, RecordType type, const TxId& txid, uint64_t lsn);
  // After a step-down: reopens the log, replaying it into the fresh mirror.
  void ReloadLog();
  void SendMessage(const OutMessage& m);
  void SendProbe(const ProbeMsg& m);
  void SendReplicate(ReplicateMsg& m);
  void SendAdoptEpoch(const AdoptEpochMsg& m);
  void Deliver(Reply& reply);
  void AnswerReplicate(const ReplicateAnswer& a);
  void EvalOrFailStop(fp::Point p, const TxId& txid);
  void FailStop(const std::string& why);
  void Trace(const TxId& txid, const char* event, std::string_view detail = {}) {
    if (hooks_->tracing()) hooks_->Trace(txid, event, detail);
  }

  DriverOptions options_;
  HaCore* ha_;
  CoordinatorIo* io_;
  CoordinatorHooks* hooks_;
  std::map<RequestToken, Pending> pending_;
  std::map<RequestToken, ReplicatePending> replicate_pending_;
  RequestToken next_token_ = 1;
  uint64_t truncate_wanted_ = 0;
  uint64_t truncate_done_ = 0;
  node::DrainGuard drain_;  // Process() is not re-entered (node/node.h)
  bool stopped_ = false;
  // Bumped at every log reload: durability notices of an older log are void.
  uint64_t log_generation_ = 0;
};

}  // namespace dtx::coordinator
