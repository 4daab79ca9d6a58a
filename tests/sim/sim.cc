#include "tests/sim/sim.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/probe.h"
#include "common/rpc_client.h"
#include "common/rpc_error.h"
#include "coordinator/core.h"
#include "coordinator/driver.h"
#include "coordinator/ha_core.h"
#include "participant/core.h"
#include "participant/driver.h"
#include "participant/mem_store.h"

namespace dtx::sim {
namespace {

namespace pc = ::dtx::participant;
namespace cc = ::dtx::coordinator;

// ---- fixed timings (virtual ms) --------------------------------------------
// The cores' timeouts are scaled down from their production defaults (same
// ratios) so that a few virtual seconds hold many protocol rounds.
constexpr uint64_t kTickMs = 10;
constexpr uint64_t kPrepareTimeoutMs = 400;
constexpr uint64_t kCommitTimeoutMs = 400;
constexpr uint64_t kAbortTimeoutMs = 200;
constexpr uint64_t kCommitRetryInitialMs = 20;
constexpr uint64_t kCommitRetryMaxMs = 400;
constexpr uint64_t kReadWaitMs = 300;
constexpr uint64_t kDecisionQueryAfterMs = 400;
constexpr uint64_t kDecisionQueryIntervalMs = 100;
constexpr uint64_t kQueryDecisionTimeoutMs = 200;  // the participant runtime's RPC timeout
constexpr uint64_t kClientReadTimeoutMs = 500;
constexpr uint64_t kClientCommitTimeoutMs = 1500;
constexpr int kClientCommitAttemptsMax = 3;  // same txid: the coordinator deduplicates
constexpr uint64_t kClientThinkMsMax = 20;
constexpr uint64_t kNetDelayMsMin = 1, kNetDelayMsMax = 5;
constexpr uint64_t kNetLongDelayMsMax = 800;
// SimOptions::long_delays: the share of fault-phase messages held back
// 2..30 s, delivered at most kVeryLongDeliverByMs into the heal phase.
constexpr double kPVeryLongDelay = 0.005;
constexpr uint64_t kNetVeryLongDelayMsMin = 2000, kNetVeryLongDelayMsMax = 30000;
constexpr uint64_t kVeryLongDeliverByMs = 5000;
// ... and holds this share of the coordinators' ABORTs and COMMITs back up
// to kLateAbortMsMax: an ABORT then meets the client's next attempt of its
// txid still prepared at the participant (docs/design.md "Attempts").
constexpr double kPLateAbort = 0.5;
constexpr uint64_t kLateAbortMsMax = 3000;
constexpr uint64_t kSyncMsMin = 1, kSyncMsMax = 4, kSyncSlowMsMax = 60;
constexpr uint64_t kDownMsMin = 5, kDownMsMax = 800;
constexpr uint64_t kCheckpointGapMsMin = 50, kCheckpointGapMsMax = 600;  // participant checkpoints
constexpr uint64_t kCheckpointWriteMsMax = 20;  // the store's synced write + checkpoint record
// Heartbeats (coordinator -> participants and peer) and the failure detector
// of HaCore, scaled down like the rest; a probe gives up after kProbeTimeoutMs.
constexpr uint64_t kHeartbeatMs = 20;
constexpr uint64_t kSuspectAfterMs = 100;
constexpr uint64_t kProbeTimeoutMs = 50;
constexpr uint64_t kReplicateTimeoutMs = 200;
constexpr int kClientCommitAttemptsFailover = 12;  // the binding retries for failover_timeout_ms
constexpr uint64_t kClientRetryMsMaxFailover = 100;
constexpr uint64_t kHangMsMin = 50, kHangMsMax = 600;
constexpr uint64_t kPartitionMsMin = 50, kPartitionMsMax = 800;
constexpr int64_t kInitialBalance = 100;
constexpr int kSabotageLostSyncedMax = 3;
constexpr size_t kSmallTableMax = 16;  // SimOptions::small_tables
// With small tables, a participant copies a PREPARE this many records behind
// the head: in the simulation a transaction is rarely in doubt for long while
// others run at its participant.
constexpr uint64_t kSmallRelogGap = 4;
constexpr size_t kTraceLinesMax = 2'000'000;
// SimOptions::adversary
constexpr uint64_t kAdversaryPauseMsMax = 15;         // between its calls
constexpr size_t kAdversarySeenMax = 64;              // other clients' Commits it remembers
constexpr uint64_t kAdversaryCopyDelayMsMax = 10000;  // a copy of a Commit sent this much later
constexpr const char* kJunkPrefix = "junk-";  // the keys its own transactions write  // bounded
                                              // memory even for a very long --trace run

const char* const kCoordinatorNames[] = {"coordinator-0", "coordinator-1"};

// splitmix64: tiny, fast, and its output is fixed by the algorithm (not by a
// standard library's distribution code), so a seed replays on any build.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi] (hi >= lo); the modulo bias is irrelevant here.
  uint64_t Range(uint64_t lo, uint64_t hi) { return lo + Next() % (hi - lo + 1); }
  bool Chance(double p) { return static_cast<double>(Next() >> 11) * 0x1.0p-53 < p; }

 private:
  uint64_t s_;
};

uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
  return h * 0xFF51AFD7ED558CCDull;
}

// ---- bank values -----------------------------------------------------------
// A written value is "<balance>@<txid>", so every stored value names the
// transaction that wrote it.

std::string EncodeBalance(int64_t balance, const TxId& txid) {
  return std::to_string(balance) + "@" + txid.ToString();
}

struct Decoded {
  int64_t balance = 0;
  TxId txid;
};

std::optional<Decoded> DecodeBalance(const std::string& v) {
  size_t at = v.find('@');
  if (at == std::string::npos || at == 0 || v.size() - at - 1 != 32) return std::nullopt;
  Decoded d;
  char* end = nullptr;
  d.balance = std::strtoll(v.c_str(), &end, 10);
  if (end != v.c_str() + at) return std::nullopt;
  auto hex = [&](size_t off, uint64_t* out) {
    *out = 0;
    for (size_t i = 0; i < 16; ++i) {
      char c = v[off + i];
      int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (x < 0) return false;
      *out = (*out << 4) | static_cast<uint64_t>(x);
    }
    return true;
  };
  if (!hex(at + 1, &d.txid.hi) || !hex(at + 17, &d.txid.lo)) return std::nullopt;
  return d;
}

std::string AccountKey(int i) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "acct-%02d", i);
  return buf;
}

// ---- the simulated RPCs ----------------------------------------------------
// Every call carries the wire's rpc:: types (idl/dtx.thrift): the nodes are
// driven by the runtimes' glue (coordinator/driver.h CoordinatorDriver,
// participant/driver.h ParticipantDriver), so their own conversions are the
// ones exercised.

struct ReadReq {
  std::string key;
};
// Participant.Commit / Abort.
struct PCommitReq {
  rpc::TxId txid;
  rpc::Epoch epoch = 0;
};
struct PAbortReq {
  rpc::TxId txid;
  rpc::Epoch epoch = 0;
  rpc::Attempt attempt;
};
// Coordinator.QueryDecision.
struct QueryReq {
  rpc::TxId txid;
  std::string fingerprint;
  rpc::Attempt attempt;
};
// Coordinator.GetOutcome (a client's, read-only).
struct GetOutcomeReq {
  rpc::TxId txid;
};
// ParticipantPeer.AdoptEpoch / Heartbeat.
struct AdoptReq {
  rpc::Epoch epoch = 0;
  std::string coordinator;
};
struct PHeartbeatReq {
  rpc::HeartbeatRequest hb;
};
// CoordinatorPeer.Heartbeat (Replicate is rpc::ReplicateRequest).
struct CHeartbeatReq {
  rpc::HeartbeatRequest hb;
};
using Request =
    std::variant<ReadReq, rpc::PrepareRequest, PCommitReq, PAbortReq, rpc::CommitRequest, QueryReq,
                 AdoptReq, PHeartbeatReq, CHeartbeatReq, rpc::ReplicateRequest, GetOutcomeReq>;
struct DecisionAnswer {
  rpc::Decision::type decision = rpc::Decision::UNKNOWN;
};
struct OutcomeAnswer {
  rpc::Outcome::type outcome = rpc::Outcome::UNKNOWN;
};
// A coordinator's answer: the result, or the DtxError the handler throws.
using CoordinatorBody = std::variant<rpc::CommitResult, DecisionAnswer, rpc::ReplicateResponse,
                                     rpc::HeartbeatResponse, rpc::DtxError, OutcomeAnswer>;
// A participant's answer: the result (Ack: Commit, Abort, AdoptEpoch), or
// the DtxError the handler throws.
struct Ack {};
using ParticipantBody =
    std::variant<rpc::ReadResult, rpc::PrepareResponse, Ack, rpc::HeartbeatResponse, rpc::DtxError>;
using Response = std::variant<ParticipantBody, CoordinatorBody>;

// The DtxError a reply carries, if any.
const rpc::DtxError* ErrorOf(const Response& r) {
  if (const auto* p = std::get_if<ParticipantBody>(&r)) return std::get_if<rpc::DtxError>(p);
  return std::get_if<rpc::DtxError>(&std::get<CoordinatorBody>(r));
}

// How a call ended, as the transport reports it.
enum class CallEnd { kOk, kTimeout, kUnavailable };
const char* CallEndName(CallEnd e) {
  switch (e) {
    case CallEnd::kOk: return "ok";
    case CallEnd::kTimeout: return "timeout";
    case CallEnd::kUnavailable: return "unavailable";
  }
  return "?";
}
using Completion = std::function<void(CallEnd, const Response*)>;
using Responder = std::function<void(Response)>;

// A call that ended without a reply, as the real stubs report it
// (common/rpc_client.h): a per-call timeout is Timeout, anything else Unavailable.
RpcStatus TransportStatus(CallEnd end) {
  return end == CallEnd::kTimeout ? RpcStatus(Status::Timeout("call timed out"))
                                  : RpcStatus(Status::Unavailable("connection refused or lost"));
}

// The caller's side of a call: the status its stub reports
// (common/rpc_error.h StatusFromDtxError, as the stubs decode a DtxError).
RpcStatus CallStatus(CallEnd end, const Response* resp) {
  if (end != CallEnd::kOk) return TransportStatus(end);
  if (const rpc::DtxError* e = ErrorOf(*resp)) return StatusFromDtxError(*e);
  return RpcStatus();
}

std::string Describe(const Request& r) {
  struct V {
    std::string operator()(const ReadReq& x) { return "Read(" + x.key + ")"; }
    std::string operator()(const rpc::PrepareRequest& x) {
      return "Prepare(" + std::to_string(x.reads.size()) + "r " + std::to_string(x.writes.size()) +
             "w" + (x.one_phase ? " 1pc" : "") + (x.read_only_tx ? " ro" : "") + ")";
    }
    std::string operator()(const PCommitReq&) { return "Commit"; }
    std::string operator()(const PAbortReq&) { return "Abort"; }
    std::string operator()(const rpc::CommitRequest& x) {
      return "ClientCommit(" + std::to_string(x.reads.size()) + "r " +
             std::to_string(x.writes.size()) + "w)";
    }
    std::string operator()(const QueryReq&) { return "QueryDecision"; }
    std::string operator()(const GetOutcomeReq&) { return "GetOutcome"; }
    std::string operator()(const AdoptReq& x) {
      return "AdoptEpoch(" + std::to_string(x.epoch) + ")";
    }
    std::string operator()(const PHeartbeatReq&) { return "Heartbeat"; }
    std::string operator()(const CHeartbeatReq& x) {
      return std::string("PeerHeartbeat(") + NodeRoleName(x.hb.role) + " epoch " +
             std::to_string(x.hb.epoch) + ")";
    }
    std::string operator()(const rpc::ReplicateRequest& x) {
      return std::string(x.snapshot ? "Replicate snapshot(" : "Replicate(") +
             std::to_string(x.records.size()) + " records, epoch " + std::to_string(x.epoch) +
             " gen " + std::to_string(x.generation) + ")";
    }
  };
  return std::visit(V{}, r);
}

const char* OutcomeWord(rpc::Outcome::type o) {
  switch (o) {
    case rpc::Outcome::COMMITTED: return "COMMITTED";
    case rpc::Outcome::ABORTED: return "ABORTED";
    case rpc::Outcome::UNKNOWN: return "UNKNOWN";
  }
  return "?";
}

std::string OutcomeName(const rpc::CommitResult& r) {
  switch (r.outcome) {
    case rpc::Outcome::COMMITTED: return "COMMITTED";
    case rpc::Outcome::ABORTED:
      return std::string("ABORTED(") +
             (r.__isset.reason ? AbortReasonName(static_cast<AbortReason>(r.reason)) : "?") + ")";
    case rpc::Outcome::UNKNOWN: return "UNKNOWN";
  }
  return "?";
}

std::string Describe(const Response& r) {
  if (const rpc::DtxError* e = ErrorOf(r))
    return "error " + ErrorCodeName(e->code) + ": " + e->message;
  if (const auto* p = std::get_if<ParticipantBody>(&r)) {
    if (const auto* x = std::get_if<rpc::ReadResult>(p)) {
      return x->found ? "value v" + std::to_string(x->version) + " " + x->value
                      : "absent v" + std::to_string(x->version);
    }
    if (const auto* x = std::get_if<rpc::PrepareResponse>(p)) {
      return x->vote == rpc::Vote::YES         ? "YES"
             : x->vote == rpc::Vote::READ_ONLY ? "READ_ONLY"
                                               : "NO: " + x->detail;
    }
    if (std::holds_alternative<rpc::HeartbeatResponse>(*p)) return "heartbeat ack";
    return "ack";
  }
  const auto& b = std::get<CoordinatorBody>(r);
  if (const auto* res = std::get_if<rpc::CommitResult>(&b))
    return OutcomeName(*res) + " " + res->detail;
  if (const auto* d = std::get_if<DecisionAnswer>(&b)) {
    return d->decision == rpc::Decision::COMMIT  ? "decision COMMIT"
           : d->decision == rpc::Decision::ABORT ? "decision ABORT"
                                                 : "decision UNKNOWN";
  }
  if (std::holds_alternative<rpc::ReplicateResponse>(b)) return "replicated";
  if (const auto* o = std::get_if<OutcomeAnswer>(&b))
    return std::string("outcome ") + OutcomeWord(o->outcome);
  const auto& h = std::get<rpc::HeartbeatResponse>(b);
  return std::string("peer ") + (h.__isset.role ? NodeRoleName(h.role) : "stopping") + " epoch " +
         std::to_string(h.epoch);
}

// ---- the world -------------------------------------------------------------

class World;
class CoordinatorGlue;
class ParticipantGlue;

// A participant's committed state: a MemStore that reports every Apply to
// the world (which transaction, which keys, which version) so the checks see
// what each participant applied, across crashes and replays.
class RecordingStore final : public pc::Store {
 public:
  RecordingStore(World* world, int participant, pc::MemStore image = pc::MemStore())
      : world_(world), participant_(participant), mem_(std::move(image)) {}
  Result<Item> Get(std::string_view key) override { return mem_.Get(key); }
  Status Apply(const std::vector<pc::WriteOp>& writes, Version version) override;
  const pc::MemStore& mem() const { return mem_; }

 private:
  World* world_;
  int participant_;
  pc::MemStore mem_;
};

struct WalEntry {
  uint64_t lsn = 0;
  uint8_t type = 0;
  std::string payload;
  bool forced = false;
  uint64_t incarnation = 0;  // which core appended it
  TxId txid;
  // A forced record: the driver's durability notice (a coordinator's are
  // cleared when its log is reloaded after a step-down). `more`: as
  // participant/driver.h ParticipantIo::DurableFn - the records one sync
  // covers are one batch.
  std::function<void(uint64_t lsn, bool more)> on_durable;
};

// An in-memory WAL: records, a "synced up to" LSN, one sync in flight at a
// time covering everything appended before it started (group commit).
struct SimWal {
  std::deque<WalEntry> entries;
  uint64_t synced_lsn = 0;
  uint64_t truncated_below = 1;  // every LSN below it was dropped by truncation
  bool syncing = false;
  bool sync_kick_pending = false;  // a sync start is scheduled for this instant
  uint64_t next_lsn() const { return entries.empty() ? truncated_below : entries.back().lsn + 1; }
  bool all_synced() const { return entries.empty() || entries.back().lsn <= synced_lsn; }
};

enum class Kind { kParticipant, kCoordinator, kClient };

// A node: a protocol core, its log, and up/down state. Clients are endpoints
// of the network too, but never crash and have no core. (A coordinator backup
// is one more kCoordinator node when failover exists.)
struct Node {
  int id = 0;
  Kind kind = Kind::kClient;
  std::string name;
  bool up = true;
  // Bumped at every crash and every restart: a message or reply addressed to
  // an older incarnation is dropped (as a real connection reset would).
  uint64_t incarnation = 1;
  uint64_t restart_gen = 0;  // cancels a scheduled restart the heal phase overtook
  SimWal wal;
  // participant
  int shard = -1;
  std::unique_ptr<RecordingStore> store;
  // The last completed checkpoint and the store as it was made durable then
  // (what a power loss leaves of the store).
  std::optional<pc::Checkpoint> checkpoint;
  pc::MemStore checkpoint_image;
  bool checkpointing = false;
  uint64_t down_since_ms = 0;
  uint64_t up_since_ms = 0;
  // Hung (a paused process): sends and receives nothing, its timers and
  // completions wait until then.
  uint64_t hung_until_ms = 0;
  // participant: its core, driven by the real glue (ParticipantDriver) over
  // the simulated network and WAL (ParticipantGlue); the core applies through
  // the driver's FailpointStore around `store`.
  std::unique_ptr<pc::FailpointStore> pstore;
  std::unique_ptr<pc::Core> pcore;
  std::shared_ptr<ParticipantGlue> pglue;
  std::unique_ptr<pc::ParticipantDriver> pdriver;
  // coordinator: HaCore (owns the 2PC CoordinatorCore), driven by the real
  // glue (CoordinatorDriver) over the simulated network and WAL (CoordinatorGlue).
  std::unique_ptr<cc::HaCore> ha;
  std::shared_ptr<CoordinatorGlue> glue;
  std::unique_ptr<cc::CoordinatorDriver> driver;
  cc::HaStats ha_seen;  // the HaCore's counters already added to RunStats
};

struct Call {
  int from = 0;
  uint64_t from_incarnation = 0;
  int to = 0;
  TxId txid;
  Completion done;
  bool background = false;  // a heartbeat: never keeps the run from quiescing
};

enum class ClientReply { kNone, kCommitted, kAborted, kUnknown, kError, kNoReply };
const char* ClientReplyName(ClientReply r) {
  switch (r) {
    case ClientReply::kNone: return "none";
    case ClientReply::kCommitted: return "COMMITTED";
    case ClientReply::kAborted: return "ABORTED";
    case ClientReply::kUnknown: return "UNKNOWN";
    case ClientReply::kError: return "ERROR";
    case ClientReply::kNoReply: return "NO_REPLY";
  }
  return "?";
}

// What the world knows about one transaction a client sent to the coordinator.
struct TxInfo {
  TxId txid;
  bool audit = false;
  std::map<std::string, std::string> writes;  // key -> value
  std::set<int> shards;                       // participants its writes touch
  ClientReply reply = ClientReply::kNone;
  // participant -> versions it applied this transaction with
  std::map<int, std::set<Version>> applied;
};

struct Client {
  int node = 0;
  int index = 0;
  uint64_t counter = 0;
  bool busy = false;
  int coordinator =
      0;  // index into World::coordinators_: where it sends Commit (follows the primary)
  // reuse_txids: the last txid this client committed under its own content,
  // that content, and how many transactions reused a txid.
  bool has_last = false;
  TxId last_txid = {};
  rpc::CommitRequest last_request = {};
  uint64_t reuses = 0;
};

// The adversary (SimOptions::adversary): what it has seen other clients send
// (a bounded window of their Commits, as a leak or a txid collision would
// give it), and its own txid counter.
struct Adversary {
  int node = -1;
  uint64_t counter = 0;
  struct Seen {
    TxId check_id;  // the transaction the checks know
    rpc::CommitRequest request;
  };
  std::deque<Seen> seen;
  // Txids sent with more than one content: other clients' txids it sent
  // content of its own under, and txids their own clients reused
  // (SimOptions::reuse_txids). GetOutcome takes only a txid, so its answer
  // about one of them may be about the other transaction: no claim is
  // judged for them (README.md).
  std::set<TxId> squatted;
};
// An outcome the adversary was told about another client's transaction
// (GetOutcome, or the answer to a copy of its Commit): checked at the end.
struct OutcomeClaim {
  TxId check_id;
  rpc::Outcome::type outcome = rpc::Outcome::UNKNOWN;
  std::string how;
};

// State of one client transaction in flight (shared by its callbacks).
struct ClientTx {
  TxId txid;  // on the wire
  // What the checks know it by (TxInfo, written values): the txid, or for a
  // transaction that reuses another's txid an id of its own, so that it is
  // judged as the transaction it is.
  TxId check_id;
  bool reuse = false;
  bool audit = false;
  std::vector<std::string> keys;
  std::vector<int64_t> balances;
  std::vector<Version> versions;
  size_t reads_left = 0;
  bool failed = false;
  int64_t amount = 0;
  int attempts = 0;
  bool single_shard = false;  // every key on one participant: one-phase commit
  bool repeated = false;      // the coordinator may see this Commit more than once
  rpc::CommitRequest request;
};

class World {
 public:
  World(uint64_t seed, const SimOptions& o)
      : seed_(seed), opts_(o), rng_(seed), trace_on_(o.trace) {}

  RunResult Run();
  void OnApplied(int participant, const std::vector<pc::WriteOp>& writes, Version version);

 private:
  friend class CoordinatorGlue;
  friend class ParticipantGlue;
  struct Event {
    uint64_t at;
    uint64_t seq;
    uint32_t kind;
    std::function<void()> fn;
  };
  struct Later {
    bool operator()(const Event& a, const Event& b) const {
      return a.at != b.at ? a.at > b.at : a.seq > b.seq;
    }
  };
  enum EventKind : uint32_t {
    kEvTick = 1,
    kEvMsg,
    kEvSync,
    kEvTimeout,
    kEvCrash,
    kEvRestart,
    kEvClient,
    kEvHeal,
    kEvCheckpoint,
    kEvNetFault
  };

  void At(uint64_t at, uint32_t kind, std::function<void()> fn) {
    queue_.push(Event{at, next_seq_++, kind, std::move(fn)});
  }
  void After(uint64_t delay, uint32_t kind, std::function<void()> fn) {
    At(now_ + delay, kind, std::move(fn));
  }

  void Trace(const TxId& txid, std::string text) {
    if (trace_.size() < kTraceLinesMax) trace_.push_back(TraceLine{now_, txid, std::move(text)});
  }
  void Fail(std::string check, const TxId& txid, std::string detail) {
    // One report per (check, transaction): a refused COMMIT is re-sent many times.
    if (txid != TxId{} && !reported_.emplace(check, txid).second) return;
    if (trace_on_) Trace(txid, "VIOLATION " + check + ": " + detail);
    violations_.push_back(Violation{std::move(check), txid, std::move(detail)});
  }

  void DrawConfig();
  void Build();

  // network and RPC
  // Returns how many copies went out (0: lost, 2: duplicated).
  int SendMsg(int from, int to, const TxId& txid, const std::string& what,
              std::function<void()> deliver, bool abort = false);
  // `abort`: the message is a participant ABORT or COMMIT
  // (SimOptions::long_delays holds many of those back).
  uint64_t NetDelay(bool abort = false);
  // Returns how many copies of the request went out.
  int StartCall(int from, int to, Request req, uint64_t timeout_ms, const TxId& txid,
                Completion done, bool background = false);
  void FinishCall(uint64_t id, CallEnd end, const Response* resp);
  void Dispatch(int to, uint64_t call_id, const Request& req);
  bool Hung(const Node& n) const { return n.hung_until_ms > now_; }
  bool Blocked(int from, int to) const {
    auto it = blocked_until_.find({from, to});
    return it != blocked_until_.end() && it->second > now_;
  }

  // nodes
  void HandleParticipant(Node& n, int from, const Request& req, Responder resp);
  // Checks a participant's acceptance of a call stamped with an epoch (fencing).
  void CheckStamped(Node& n, int from, const TxId& txid, Epoch stamped, Epoch before);
  void HandleCoordinator(Node& n, const Request& req, Responder resp);
  // A node that fail-stopped: down for good (after the current event).
  void StopForGood(int id);
  // The HaCore's counters into RunStats (before its node crashes, and every tick).
  void NoteHaStats(Node& n);
  void Append(Node& n, WalEntry e);
  void MaybeStartSync(Node& n);
  // Starts a sync at this instant, after whatever else is appended now (group commit).
  void KickSync(Node& n);
  // A coordinator's log (CoordinatorGlue).
  void TruncateBefore(Node& n, uint64_t lsn);
  void CompleteSync(Node& n, uint64_t target_lsn);
  void Crash(Node& n);
  void Restart(Node& n);
  void StartCore(Node& n);
  void TickAll();
  void ForgeSync(Node& coordinator);  // Sabotage::kFakeSync
  void ScheduleNextCrash();
  void ScheduleNextNetFault();
  void ScheduleCheckpoint(int id);
  void CompleteCheckpoint(Node& n, const pc::Checkpoint& cp);

  // clients
  void ClientNext(Client& c);
  void ClientRead(Client& c, std::shared_ptr<ClientTx> tx);
  void ClientCommit(Client& c, std::shared_ptr<ClientTx> tx);
  void ClientDone(Client& c, std::shared_ptr<ClientTx> tx, ClientReply reply,
                  const std::string& why);
  // the adversary: one client-API call, then the next after a pause
  void AdversaryNext();
  // kRetry: a copy marked is_retry, judged; kAsNew: a copy sent as if new.
  enum class Copy { kNo, kRetry, kAsNew };
  void AdversaryCommit(rpc::CommitRequest req, const TxId& check_id, Copy copy);
  void AdversaryGetOutcome(const TxId& txid, const TxId& check_id);

  // the end
  void Heal();
  bool Quiesced() const;
  void FinalChecks();
  void CheckReplayMatches(Node& n);

  int ShardOf(const std::string& key) const {
    return static_cast<int>(ShardHash(key) % static_cast<uint64_t>(participants_.size()));
  }
  int NodeByName(const std::string& name) const {
    for (const Node& n : nodes_) {
      if (n.name == name) return n.id;
    }
    return -1;
  }

  uint64_t seed_;
  SimOptions opts_;
  Rng rng_;
  bool trace_on_;
  std::vector<TraceLine> trace_;
  std::vector<Violation> violations_;
  std::set<std::pair<std::string, TxId>> reported_;
  RunStats stats_;

  std::priority_queue<Event, std::vector<Event>, Later> queue_;
  uint64_t now_ = 0;
  uint64_t next_seq_ = 0;
  bool faults_on_ = true;
  bool healed_ = false;
  bool done_ = false;

  // drawn configuration
  int n_participants_ = 0, n_clients_ = 0, n_accounts_ = 0;
  uint64_t fault_end_ms_ = 0;
  double p_drop_ = 0, p_dup_ = 0, p_long_ = 0, p_slow_sync_ = 0, p_store_lost_ = 0;
  uint64_t crash_gap_ms_ = 0;  // mean gap between crashes (0: none)
  double p_coordinator_crash_ = 0;
  uint64_t net_fault_gap_ms_ = 0;  // failover: mean gap between hangs/partitions (0: none)
  double p_audit_ = 0;

  std::vector<Node> nodes_;  // participants, coordinators, clients
  std::vector<int> participants_;
  std::vector<int> coordinators_;  // coordinator-0 (configured primary), coordinator-1 (backup)
  std::vector<Client> clients_;
  Adversary adversary_;
  std::vector<OutcomeClaim> claims_;
  // Directed links cut by a partition, until the given time.
  std::map<std::pair<int, int>, uint64_t> blocked_until_;
  // Fencing: which coordinators participants accepted stamped calls (or
  // granted AdoptEpoch) from, per epoch.
  std::map<Epoch, std::set<std::string>> epoch_owners_;
  std::map<Epoch, std::map<std::string, std::set<int>>>
      epoch_grants_;  // epoch -> coordinator -> participants
  uint64_t forged_generation_ = 1'000'000'000;

  std::map<uint64_t, Call> calls_;
  uint64_t next_call_ = 1;
  std::map<TxId, TxInfo> txs_;
};

Status RecordingStore::Apply(const std::vector<pc::WriteOp>& writes, Version version) {
  Status s = mem_.Apply(writes, version);
  if (s.ok()) world_->OnApplied(participant_, writes, version);
  return s;
}

// ---- configuration -----------------------------------------------------------

void World::DrawConfig() {
  n_participants_ =
      opts_.participants > 0 ? opts_.participants : static_cast<int>(rng_.Range(1, 4));
  n_clients_ = opts_.clients > 0 ? opts_.clients : static_cast<int>(rng_.Range(1, 5));
  n_accounts_ = opts_.accounts > 0 ? opts_.accounts : static_cast<int>(rng_.Range(2, 10));
  fault_end_ms_ = opts_.fault_phase_ms > 0 ? opts_.fault_phase_ms : rng_.Range(1000, 4000);
  if (opts_.faults) {
    p_drop_ = static_cast<double>(rng_.Range(0, 50)) / 1000.0;
    p_dup_ = static_cast<double>(rng_.Range(0, 50)) / 1000.0;
    p_long_ = static_cast<double>(rng_.Range(0, 50)) / 1000.0;
    p_slow_sync_ = static_cast<double>(rng_.Range(0, 100)) / 1000.0;
    p_store_lost_ = static_cast<double>(rng_.Range(0, 100)) / 100.0;
    crash_gap_ms_ = rng_.Chance(0.1) ? 0 : rng_.Range(200, 2000);
    p_coordinator_crash_ = static_cast<double>(rng_.Range(0, 50)) / 100.0;
    if (opts_.failover) net_fault_gap_ms_ = rng_.Chance(0.1) ? 0 : rng_.Range(200, 1500);
  } else {
    faults_on_ = false;
  }
  p_audit_ = static_cast<double>(rng_.Range(0, 40)) / 100.0;
  char buf[400];
  std::snprintf(buf, sizeof(buf),
                "participants=%d clients=%d accounts=%d fault_ms=%" PRIu64
                " drop=%.3f dup=%.3f long=%.3f slow_sync=%.2f store_lost=%.2f crash_gap_ms=%" PRIu64
                " coord_crash=%.2f net_fault_gap_ms=%" PRIu64 " audit=%.2f%s",
                n_participants_, n_clients_, n_accounts_, fault_end_ms_, p_drop_, p_dup_, p_long_,
                p_slow_sync_, p_store_lost_, crash_gap_ms_, p_coordinator_crash_, net_fault_gap_ms_,
                p_audit_, opts_.failover ? " failover" : "");
  stats_.config = buf;
}

void World::Build() {
  for (int i = 0; i < n_participants_; ++i) {
    Node n;
    n.id = static_cast<int>(nodes_.size());
    n.kind = Kind::kParticipant;
    n.name = "participant-" + std::to_string(i);
    n.shard = i;
    participants_.push_back(n.id);
    nodes_.push_back(std::move(n));
  }
  for (int i = 0; i < (opts_.failover ? 2 : 1); ++i) {
    Node n;
    n.id = static_cast<int>(nodes_.size());
    n.kind = Kind::kCoordinator;
    n.name = kCoordinatorNames[i];
    coordinators_.push_back(n.id);
    nodes_.push_back(std::move(n));
  }
  for (int i = 0; i < n_clients_; ++i) {
    Node n;
    n.id = static_cast<int>(nodes_.size());
    n.kind = Kind::kClient;
    n.name = "client-" + std::to_string(i);
    clients_.push_back(Client{n.id, i, 0, false, 0});
    nodes_.push_back(std::move(n));
  }
  if (opts_.adversary) {
    Node n;
    n.id = static_cast<int>(nodes_.size());
    n.kind = Kind::kClient;
    n.name = "adversary";
    adversary_.node = n.id;
    nodes_.push_back(std::move(n));
  }
  for (Node& n : nodes_) {
    if (n.kind == Kind::kParticipant) n.store = std::make_unique<RecordingStore>(this, n.shard);
    if (n.kind != Kind::kClient) StartCore(n);
  }
}

// ---- network -------------------------------------------------------------------

uint64_t World::NetDelay(bool abort) {
  if (faults_on_ && opts_.long_delays && abort && rng_.Chance(kPLateAbort)) {
    return rng_.Range(kNetDelayMsMax, kLateAbortMsMax);
  }
  if (faults_on_ && opts_.long_delays && rng_.Chance(kPVeryLongDelay)) {
    const uint64_t by = fault_end_ms_ + kVeryLongDeliverByMs;
    if (by > now_ + kNetVeryLongDelayMsMin) {
      return rng_.Range(kNetVeryLongDelayMsMin, std::min(kNetVeryLongDelayMsMax, by - now_));
    }
  }
  if (faults_on_ && rng_.Chance(p_long_)) return rng_.Range(kNetDelayMsMax, kNetLongDelayMsMax);
  return rng_.Range(kNetDelayMsMin, kNetDelayMsMax);
}

// One message: dropped, duplicated or delayed (reordering follows from the
// delays). A message to a node that is down, or that crashed or restarted
// before it arrived, is lost (its connection is gone).
int World::SendMsg(int from, int to, const TxId& txid, const std::string& what,
                   std::function<void()> deliver, bool abort) {
  ++stats_.messages;
  Node& dst = nodes_[to];
  if (!dst.up) {
    if (trace_on_) Trace(txid, nodes_[from].name + " -> " + dst.name + " " + what + " [dest down]");
    return 0;
  }
  if (Blocked(from, to) || Hung(dst) || Hung(nodes_[from])) {
    if (trace_on_)
      Trace(txid, nodes_[from].name + " -> " + dst.name + " " + what + " [partitioned or hung]");
    return 0;
  }
  if (faults_on_ && rng_.Chance(p_drop_)) {
    ++stats_.dropped;
    if (trace_on_) Trace(txid, nodes_[from].name + " -> " + dst.name + " " + what + " [dropped]");
    return 0;
  }
  int copies = 1;
  if (faults_on_ && rng_.Chance(p_dup_)) {
    ++stats_.duplicated;
    copies = 2;
  }
  const uint64_t dst_inc = dst.incarnation;
  for (int i = 0; i < copies; ++i) {
    uint64_t delay = NetDelay(abort);
    if (trace_on_) {
      Trace(txid, nodes_[from].name + " -> " + dst.name + " " + what + " [sent, +" +
                      std::to_string(delay) + "ms" + (i > 0 ? ", duplicate" : "") + "]");
    }
    // the last copy may take the closure; earlier ones copy it
    std::function<void()> fn = i + 1 == copies ? std::move(deliver) : deliver;
    After(delay, kEvMsg, [this, from, to, dst_inc, fn = std::move(fn)] {
      const Node& d = nodes_[to];
      if (!d.up || d.incarnation != dst_inc) return;
      if (Hung(d) || Blocked(from, to)) return;  // cut while on its way
      fn();
    });
  }
  return copies;
}

int World::StartCall(int from, int to, Request req, uint64_t timeout_ms, const TxId& txid,
                     Completion done, bool background) {
  uint64_t id = next_call_++;
  calls_.emplace(id, Call{from, nodes_[from].incarnation, to, txid, std::move(done), background});
  if (!nodes_[to].up) {
    // connection refused, promptly
    if (trace_on_)
      Trace(txid, nodes_[from].name + " -> " + nodes_[to].name + " " + Describe(req) +
                      " [refused: down]");
    After(1, kEvTimeout, [this, id] { FinishCall(id, CallEnd::kUnavailable, nullptr); });
    return 0;
  }
  After(timeout_ms, kEvTimeout, [this, id] { FinishCall(id, CallEnd::kTimeout, nullptr); });
  std::string what = trace_on_ ? Describe(req) : std::string();
  const bool abort =
      std::holds_alternative<PAbortReq>(req) || std::holds_alternative<PCommitReq>(req);
  return SendMsg(
      from, to, txid, what, [this, to, id, req = std::move(req)] { Dispatch(to, id, req); }, abort);
}

void World::FinishCall(uint64_t id, CallEnd end, const Response* resp) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;  // already finished (a duplicate reply, a late timeout)
  if (Hung(nodes_[it->second.from])) {
    // A paused caller sees the completion when it resumes.
    std::shared_ptr<Response> copy = resp ? std::make_shared<Response>(*resp) : nullptr;
    At(nodes_[it->second.from].hung_until_ms, kEvTimeout,
       [this, id, end, copy] { FinishCall(id, end, copy.get()); });
    return;
  }
  Call call = std::move(it->second);
  calls_.erase(it);
  Node& caller = nodes_[call.from];
  if (!caller.up || caller.incarnation != call.from_incarnation) return;
  if (trace_on_ && end != CallEnd::kOk) {
    Trace(call.txid,
          caller.name + " call to " + nodes_[call.to].name + " ended: " + CallEndName(end));
  }
  call.done(end, resp);
}

void World::Dispatch(int to, uint64_t call_id, const Request& req) {
  Node& n = nodes_[to];
  auto it = calls_.find(call_id);
  TxId txid = it != calls_.end() ? it->second.txid : TxId{};
  int from = it != calls_.end() ? it->second.from : -1;
  if (trace_on_)
    Trace(txid, n.name + " handles " + Describe(req) + (from < 0 ? " (its caller gave up)" : ""));
  const uint64_t inc = n.incarnation;
  Responder resp = [this, to, inc, call_id, from, txid](Response r) {
    if (from < 0) return;  // the caller gave up and is gone: nobody to answer
    if (nodes_[to].incarnation != inc) return;
    std::string what = trace_on_ ? "reply " + Describe(r) : std::string();
    SendMsg(to, from, txid, what,
            [this, call_id, r = std::move(r)] { FinishCall(call_id, CallEnd::kOk, &r); });
  };
  if (n.kind == Kind::kParticipant) {
    HandleParticipant(n, from, req, std::move(resp));
  } else {
    HandleCoordinator(n, req, std::move(resp));
  }
}

// ---- participants ------------------------------------------------------------------

void World::HandleParticipant(Node& n, int from, const Request& req, Responder resp) {
  if (!n.up || !n.pdriver) return;
  if (const auto* hb = std::get_if<PHeartbeatReq>(&req)) {
    resp(Response(ParticipantBody(n.pdriver->Heartbeat(hb->hb))));
    return;
  }
  // Calls stamped with an epoch: watch what the participant accepts.
  std::optional<Epoch> stamped;
  TxId stamped_txid;
  if (const auto* p = std::get_if<rpc::PrepareRequest>(&req)) {
    stamped = p->epoch;
    stamped_txid = FromRpc(p->txid);
  } else if (const auto* c = std::get_if<PCommitReq>(&req)) {
    stamped = c->epoch;
    stamped_txid = FromRpc(c->txid);
    // A participant refusing a COMMIT the coordinator decided is a protocol
    // error (a STALE_EPOCH refusal is fencing: the newer primary re-drives it).
    const std::string who = n.name;
    resp = [this, who, txid = stamped_txid, inner = std::move(resp)](Response r) {
      const rpc::DtxError* e = ErrorOf(r);
      if (e != nullptr && e->code != rpc::ErrorCode::STALE_EPOCH)
        Fail("commit-refused", txid, who + " refused COMMIT: " + e->message);
      inner(std::move(r));
    };
  } else if (const auto* a = std::get_if<PAbortReq>(&req)) {
    stamped = a->epoch;
    stamped_txid = FromRpc(a->txid);
  }
  if (stamped && from >= 0) {
    const Epoch before = n.pcore->epoch();
    const int self = n.id;
    const Epoch e = *stamped;
    resp = [this, self, from, stamped_txid, e, before, inner = std::move(resp)](Response r) {
      if (ErrorOf(r) == nullptr) CheckStamped(nodes_[self], from, stamped_txid, e, before);
      inner(std::move(r));
    };
  } else if (const auto* ad = std::get_if<AdoptReq>(&req)) {
    const std::string who = ad->coordinator;
    const Epoch e = ad->epoch;
    const int self = n.id;
    resp = [this, who, e, self, inner = std::move(resp)](Response r) {
      if (ErrorOf(r) == nullptr) {
        // Grants of one epoch may be split between contenders; a majority
        // for each of two is two owners of one epoch.
        std::map<std::string, std::set<int>>& grants = epoch_grants_[e];
        grants[who].insert(self);
        const size_t majority = participants_.size() / 2 + 1;
        size_t winners = 0;
        for (const auto& [c, ps] : grants) winners += ps.size() >= majority ? 1 : 0;
        if (winners > 1) {
          Fail("two-primaries", TxId{},
               "a majority of participants granted epoch " + std::to_string(e) +
                   " (AdoptEpoch) to each of two coordinators");
        }
      }
      inner(std::move(r));
    };
  }
  // Sabotage::kAcceptOldEpochs: the participant takes a stale stamp as current.
  auto epoch_for = [&](rpc::Epoch e) {
    return opts_.sabotage == Sabotage::kAcceptOldEpochs ? std::max(e, n.pcore->epoch()) : e;
  };
  auto fail = [resp](const rpc::DtxError& e) { resp(Response(ParticipantBody(e))); };
  auto ack = [resp] { resp(Response(ParticipantBody(Ack{}))); };
  if (const auto* r = std::get_if<ReadReq>(&req)) {
    n.pdriver->Read(
        r->key, [resp](const rpc::ReadResult& x) { resp(Response(ParticipantBody(x))); }, fail);
  } else if (const auto* p = std::get_if<rpc::PrepareRequest>(&req)) {
    rpc::PrepareRequest in = *p;
    in.epoch = epoch_for(in.epoch);
    n.pdriver->Prepare(
        in, [resp](const rpc::PrepareResponse& x) { resp(Response(ParticipantBody(x))); }, fail);
  } else if (const auto* c = std::get_if<PCommitReq>(&req)) {
    n.pdriver->Commit(c->txid, epoch_for(c->epoch), ack, fail);
  } else if (const auto* a = std::get_if<PAbortReq>(&req)) {
    rpc::Attempt attempt = a->attempt;
    if (opts_.sabotage == Sabotage::kIgnoreAttemptStamps) {
      attempt.epoch = std::numeric_limits<int64_t>::max();  // newer than any: always applies
      attempt.seq = std::numeric_limits<int64_t>::max();
    }
    n.pdriver->Abort(a->txid, epoch_for(a->epoch), attempt, ack, fail);
  } else if (const auto* ad = std::get_if<AdoptReq>(&req)) {
    n.pdriver->AdoptEpoch(ad->epoch, ad->coordinator, ack, fail);
  } else {
    Fail("sim-internal", TxId{}, n.name + " got a coordinator request");
  }
}

void World::StopForGood(int id) {
  const uint64_t inc = nodes_[id].incarnation;
  After(0, kEvCrash, [this, id, inc] {
    Node& m = nodes_[id];
    if (m.incarnation != inc) return;
    Crash(m);
    m.restart_gen = UINT64_MAX;  // never restarted
  });
}

void World::CheckStamped(Node& n, int from, const TxId& txid, Epoch stamped, Epoch before) {
  const std::string& who = nodes_[from].name;
  if (stamped < before) {
    Fail("stale-epoch-accepted", txid,
         n.name + " accepted a call from " + who + " stamped with epoch " +
             std::to_string(stamped) + " after adopting epoch " + std::to_string(before));
  }
  std::set<std::string>& owners = epoch_owners_[stamped];
  owners.insert(who);
  if (owners.size() > 1) {
    std::string all;
    for (const std::string& o : owners) all += (all.empty() ? "" : ", ") + o;
    Fail("two-primaries", txid,
         "participants accepted calls stamped with epoch " + std::to_string(stamped) + " from " +
             all);
  }
}

void World::OnApplied(int participant, const std::vector<pc::WriteOp>& writes, Version version) {
  if (writes.empty()) return;  // a read-only part of a transaction: nothing to attribute
  std::optional<TxId> txid;
  for (const pc::WriteOp& w : writes) {
    std::optional<Decoded> d = w.value ? DecodeBalance(*w.value) : std::nullopt;
    if (!d) {
      Fail("unknown-write", TxId{},
           nodes_[participants_[participant]].name + " applied an undecodable write to " + w.key);
      return;
    }
    if (txid && *txid != d->txid) {
      Fail("mixed-apply", d->txid, "one Apply carries writes of two transactions");
      return;
    }
    txid = d->txid;
  }
  auto it = txs_.find(*txid);
  if (it == txs_.end()) {
    Fail("unknown-write", *txid, "applied a transaction no client sent");
    return;
  }
  it->second.applied[participant].insert(version);
  if (trace_on_) {
    Trace(*txid, nodes_[participants_[participant]].name + " applied " +
                     std::to_string(writes.size()) + " writes at version " +
                     std::to_string(version));
  }
}

// ---- coordinator --------------------------------------------------------------------

void World::HandleCoordinator(Node& n, const Request& req, Responder resp) {
  if (!n.up || !n.driver) return;
  auto fail = [resp](const rpc::DtxError& e) { resp(Response(CoordinatorBody(e))); };
  if (const auto* hb = std::get_if<CHeartbeatReq>(&req)) {
    resp(Response(CoordinatorBody(n.driver->Heartbeat(hb->hb))));
  } else if (const auto* c = std::get_if<rpc::CommitRequest>(&req)) {
    n.driver->Commit(
        *c, [resp](const rpc::CommitResult& r) { resp(Response(CoordinatorBody(r))); }, fail);
  } else if (const auto* q = std::get_if<QueryReq>(&req)) {
    n.driver->QueryDecision(
        q->txid, q->fingerprint, q->attempt,
        [resp](rpc::Decision::type d) { resp(Response(CoordinatorBody(DecisionAnswer{d}))); },
        fail);
  } else if (const auto* r = std::get_if<rpc::ReplicateRequest>(&req)) {
    n.driver->Replicate(
        *r, [resp](const rpc::ReplicateResponse& a) { resp(Response(CoordinatorBody(a))); }, fail);
  } else if (const auto* g = std::get_if<GetOutcomeReq>(&req)) {
    resp(Response(CoordinatorBody(OutcomeAnswer{n.driver->GetOutcome(g->txid)})));
  } else {
    Fail("sim-internal", TxId{}, n.name + " got a participant request");
  }
}

void World::NoteHaStats(Node& n) {
  if (!n.ha) return;
  const cc::HaStats& hs = n.ha->stats();
  stats_.promotions += hs.promotions - n.ha_seen.promotions;
  stats_.step_downs += hs.step_downs - n.ha_seen.step_downs;
  n.ha_seen = hs;
  stats_.max_epoch = std::max<uint64_t>(stats_.max_epoch, n.ha->epoch());
}

// A coordinator node's world as its CoordinatorDriver sees it: the simulated
// network (rpc:: requests and responses), its SimWal, virtual time, and the
// simulator's trace and checks as hooks. One per incarnation of the node.
class CoordinatorGlue final : public cc::CoordinatorIo, public cc::CoordinatorHooks {
 public:
  CoordinatorGlue(World* w, int node) : w_(w), node_(node) {}

  uint64_t NowMs() override { return w_->now_; }

  void Prepare(const std::string& to, const rpc::PrepareRequest& req, int timeout_ms,
               std::function<void(const RpcStatus&, const rpc::PrepareResponse&)> done) override {
    const TxId txid = FromRpc(req.txid);
    Call(to, Request(req), timeout_ms, txid,
         [done = std::move(done)](CallEnd end, const Response* resp) {
           RpcStatus st = CallStatus(end, resp);
           done(st, st.ok() ? std::get<rpc::PrepareResponse>(std::get<ParticipantBody>(*resp))
                            : rpc::PrepareResponse());
         });
  }
  void Commit(const std::string& to, const rpc::TxId& txid, rpc::Epoch epoch, int timeout_ms,
              Done done) override {
    Call(to, Request(PCommitReq{txid, epoch}), timeout_ms, FromRpc(txid),
         [done = std::move(done)](CallEnd end, const Response* resp) {
           done(CallStatus(end, resp));
         });
  }
  void Abort(const std::string& to, const rpc::TxId& txid, rpc::Epoch epoch,
             const rpc::Attempt& attempt, int timeout_ms, Done done) override {
    Call(to, Request(PAbortReq{txid, epoch, attempt}), timeout_ms, FromRpc(txid),
         [done = std::move(done)](CallEnd end, const Response* resp) {
           done(CallStatus(end, resp));
         });
  }
  void ProbeParticipant(const std::string& to, const rpc::HeartbeatRequest& req, int timeout_ms,
                        Done done) override {
    Call(
        to, Request(PHeartbeatReq{req}), timeout_ms, TxId{},
        [done = std::move(done)](CallEnd end, const Response*) {
          done(end == CallEnd::kOk ? RpcStatus() : TransportStatus(end));
        },
        /*background=*/true);
  }
  void AdoptEpoch(const std::string& to, rpc::Epoch epoch, const std::string& coordinator,
                  int timeout_ms, AdoptDone done) override {
    Call(to, Request(AdoptReq{epoch, coordinator}), timeout_ms, TxId{},
         [done = std::move(done)](CallEnd end, const Response* resp) {
           // A STALE_EPOCH refusal's DtxError fields 4, 5, as the stubs decode them.
           RpcStatus st = CallStatus(end, resp);
           done(st, st.current_epoch(), st.epoch_owner().value_or(""));
         });
  }
  void PeerHeartbeat(
      const rpc::HeartbeatRequest& req, int timeout_ms,
      std::function<void(const RpcStatus&, const rpc::HeartbeatResponse&)> done) override {
    const int peer = Peer();
    if (peer < 0) return;
    w_->StartCall(
        node_, peer, Request(CHeartbeatReq{req}), static_cast<uint64_t>(timeout_ms), TxId{},
        [done = std::move(done)](CallEnd end, const Response* resp) {
          RpcStatus st = CallStatus(end, resp);
          done(st, st.ok() ? std::get<rpc::HeartbeatResponse>(std::get<CoordinatorBody>(*resp))
                           : rpc::HeartbeatResponse());
        },
        /*background=*/true);
  }
  void PeerReplicate(
      const rpc::ReplicateRequest& req, int timeout_ms,
      std::function<void(const RpcStatus&, const rpc::ReplicateResponse&)> done) override {
    const int peer = Peer();
    if (peer < 0) return;
    w_->StartCall(
        node_, peer, Request(req), static_cast<uint64_t>(timeout_ms), TxId{},
        [done = std::move(done)](CallEnd end, const Response* resp) {
          RpcStatus st = CallStatus(end, resp);
          done(st, st.ok() ? std::get<rpc::ReplicateResponse>(std::get<CoordinatorBody>(*resp))
                           : rpc::ReplicateResponse());
        });
  }

  uint64_t Append(cc::RecordType type, const std::string& payload, bool forced,
                  std::function<void(uint64_t lsn)> on_durable) override {
    Node& n = w_->nodes_[node_];
    std::function<void(uint64_t, bool)> notice;
    if (on_durable) notice = [f = std::move(on_durable)](uint64_t lsn, bool) { f(lsn); };
    WalEntry e{0,      static_cast<uint8_t>(type), payload, forced, n.incarnation,
               TxId{}, std::move(notice)};
    w_->Append(n, std::move(e));
    w_->KickSync(n);
    return n.wal.entries.back().lsn;
  }
  uint64_t durable_lsn() override { return w_->nodes_[node_].wal.synced_lsn; }
  Status ReloadLog(const ReplayFn& replay) override {
    // Stepped down: the HaCore's core is a fresh mirror; replay the whole log
    // into it (as the runtime reopens its WAL). Notices still due for older
    // records are dead.
    Node& n = w_->nodes_[node_];
    if (w_->trace_on_) w_->Trace(TxId{}, n.name + " steps down: replays its log into a fresh core");
    for (WalEntry& e : n.wal.entries) e.on_durable = nullptr;
    for (const WalEntry& e : n.wal.entries) {
      Status s = replay(e.lsn, e.type, e.payload);
      if (!s.ok()) {
        w_->Fail("replay", e.txid,
                 n.name + " reload failed at lsn " + std::to_string(e.lsn) + ": " + s.ToString());
        return s;
      }
    }
    return Status::OK();
  }
  Status TruncateBefore(uint64_t lsn) override {
    w_->TruncateBefore(w_->nodes_[node_], lsn);
    return Status::OK();
  }
  void FlushSends() override {}  // the simulated network takes a send at once
  void FailStop(const std::string& why) override {
    // The node process would exit: it goes down for good.
    w_->Fail("coordinator-fail-stop", TxId{}, w_->nodes_[node_].name + ": " + why);
    w_->StopForGood(node_);
  }

  bool tracing() const override { return w_->trace_on_; }
  void Trace(const TxId& txid, const char* event, std::string_view detail) override {
    w_->Trace(txid, w_->nodes_[node_].name + " " + event + (detail.empty() ? "" : " ") +
                        std::string(detail));
  }
  void Note(const cc::HaNote& note) override {
    if (w_->trace_on_)
      w_->Trace(TxId{}, w_->nodes_[node_].name + (note.warn ? " WARN " : " ") + note.text);
  }
  void UnmatchedReply(cc::RequestToken token) override {
    w_->Fail("reply-token", TxId{},
             w_->nodes_[node_].name + " answered unknown or already answered token " +
                 std::to_string(token));
  }

 private:
  int Peer() const {
    if (w_->coordinators_.size() < 2) return -1;
    return w_->coordinators_[0] == node_ ? w_->coordinators_[1] : w_->coordinators_[0];
  }
  void Call(const std::string& to, Request req, int timeout_ms, const TxId& txid, Completion done,
            bool background = false) {
    const int dst = w_->NodeByName(to);
    if (dst < 0 || w_->nodes_[dst].kind != Kind::kParticipant) {
      w_->Fail("sim-internal", txid, "coordinator calls unknown participant '" + to + "'");
      return;
    }
    w_->StartCall(node_, dst, std::move(req), static_cast<uint64_t>(timeout_ms), txid,
                  std::move(done), background);
  }

  World* w_;
  int node_;
};

// A participant node's world as its ParticipantDriver sees it: the simulated
// network (QueryDecision to coordinators), its SimWal, virtual time, and the
// simulator's trace and checks as hooks. GetStatus is modelled as the
// coordinator's state at the call (one that is down or hung does not answer),
// answered a moment later. One per incarnation of the node.
class ParticipantGlue final : public pc::ParticipantIo, public pc::ParticipantHooks {
 public:
  ParticipantGlue(World* w, int node) : w_(w), node_(node) {}

  uint64_t NowMs() override { return w_->now_; }

  uint64_t Append(pc::RecordType type, const std::string& payload, bool forced, const TxId& txid,
                  DurableFn on_durable) override {
    Node& n = w_->nodes_[node_];
    w_->Append(n, WalEntry{0, static_cast<uint8_t>(type), payload, forced, n.incarnation, txid,
                           std::move(on_durable)});
    w_->KickSync(n);
    return n.wal.entries.back().lsn;
  }

  void QueryDecision(
      const std::string& to, const rpc::TxId& txid, const std::string& fingerprint,
      const rpc::Attempt& attempt, int timeout_ms,
      std::function<void(const RpcStatus&, const rpc::Decision::type&)> done) override {
    const int dst = Coordinator(to, FromRpc(txid));
    if (dst < 0) return;
    w_->StartCall(
        node_, dst, QueryReq{txid, fingerprint, attempt}, static_cast<uint64_t>(timeout_ms),
        FromRpc(txid), [done = std::move(done)](CallEnd end, const Response* resp) {
          RpcStatus st = CallStatus(end, resp);
          done(st, st.ok() ? std::get<DecisionAnswer>(std::get<CoordinatorBody>(*resp)).decision
                           : rpc::Decision::UNKNOWN);
        });
  }

  void GetStatus(const std::string& to, int,
                 std::function<void(const RpcStatus&, const rpc::NodeStatus&)> done) override {
    const int dst = Coordinator(to, TxId{});
    if (dst < 0) return;
    const Node& c = w_->nodes_[dst];
    RpcStatus st(Status::Unavailable("coordinator down or hung"));
    rpc::NodeStatus out;
    if (c.up && c.ha && !w_->Hung(c)) {
      st = RpcStatus();
      out.name = c.name;
      out.role = ToRpc(c.ha->node_role());
      out.epoch = c.ha->epoch();
    }
    const int self = node_;
    const uint64_t inc = w_->nodes_[node_].incarnation;
    w_->After(0, World::kEvMsg, [w = w_, self, inc, st, out, done = std::move(done)] {
      const Node& me = w->nodes_[self];
      if (me.up && me.incarnation == inc) done(st, out);
    });
  }

  void FlushSends() override {}  // the simulated network takes a send at once
  void FailStop(const std::string& why) override {
    // The runtime would log this and exit: the node goes down for good.
    w_->Fail("participant-fatal", TxId{}, w_->nodes_[node_].name + ": " + why);
    w_->StopForGood(node_);
  }

  bool tracing() const override { return w_->trace_on_; }
  void Trace(const TxId& txid, const char* event, std::string_view detail) override {
    w_->Trace(txid, w_->nodes_[node_].name + " " + event + (detail.empty() ? "" : " ") +
                        std::string(detail));
  }
  void Note(pc::NoteLevel level, const std::string& text) override {
    if (w_->trace_on_ && level != pc::NoteLevel::kDebug)
      w_->Trace(TxId{}, w_->nodes_[node_].name + " " + text);
  }
  void AskingDecision(const TxId&, bool fall_back) override {
    if (!fall_back) ++w_->stats_.decision_queries;
  }
  void UnmatchedReply(pc::Token token) override {
    w_->Fail("reply-token", TxId{},
             w_->nodes_[node_].name + " answered unknown or already answered token " +
                 std::to_string(token));
  }

 private:
  int Coordinator(const std::string& name, const TxId& txid) {
    const int id = w_->NodeByName(name);
    if (id < 0 || w_->nodes_[id].kind != Kind::kCoordinator) {
      w_->Fail("sim-internal", txid,
               w_->nodes_[node_].name + " asks unknown coordinator '" + name + "'");
      return -1;
    }
    return id;
  }

  World* w_;
  int node_;
};

// ---- WAL, crash, restart ------------------------------------------------------------

void World::Append(Node& n, WalEntry e) {
  // participant/core.h "Tags are LSNs": the ParticipantDriver checks that
  // the LSN returned here is the core's tag.
  e.lsn = n.wal.next_lsn();
  if (trace_on_) {
    Trace(e.txid, n.name + " WAL append lsn=" + std::to_string(e.lsn) +
                      " type=" + std::to_string(e.type) + (e.forced ? " forced" : ""));
  }
  n.wal.entries.push_back(std::move(e));
}

void World::MaybeStartSync(Node& n) {
  if (n.wal.syncing || n.wal.all_synced()) return;
  n.wal.syncing = true;
  const uint64_t target = n.wal.entries.back().lsn;
  const uint64_t inc = n.incarnation;
  const int id = n.id;
  uint64_t delay = faults_on_ && rng_.Chance(p_slow_sync_) ? rng_.Range(kSyncMsMax, kSyncSlowMsMax)
                                                           : rng_.Range(kSyncMsMin, kSyncMsMax);
  std::function<void()> complete;
  complete = [this, id, inc, target] {
    Node& m = nodes_[id];
    if (!m.up || m.incarnation != inc) return;  // the crash took this sync with it
    if (Hung(m)) {
      // The sync finished; a paused process hears of it when it resumes.
      const uint64_t at = m.hung_until_ms;
      At(at, kEvSync, [this, id, inc, target] {
        Node& k = nodes_[id];
        if (k.up && k.incarnation == inc) CompleteSync(k, target);
      });
      return;
    }
    CompleteSync(m, target);
  };
  After(delay, kEvSync, std::move(complete));
}

void World::KickSync(Node& n) {
  if (n.wal.sync_kick_pending || n.wal.syncing) return;
  n.wal.sync_kick_pending = true;
  const int id = n.id;
  const uint64_t inc = n.incarnation;
  After(0, kEvSync, [this, id, inc] {
    Node& m = nodes_[id];
    if (!m.up || m.incarnation != inc) return;
    m.wal.sync_kick_pending = false;
    MaybeStartSync(m);
  });
}

void World::TruncateBefore(Node& n, uint64_t lsn) {
  while (!n.wal.entries.empty() && n.wal.entries.front().lsn < lsn) {
    if (n.wal.entries.front().lsn > n.wal.synced_lsn) {
      Fail("truncate-unsynced", n.wal.entries.front().txid,
           n.name + " truncates before " + std::to_string(lsn) + ", past the synced LSN " +
               std::to_string(n.wal.synced_lsn));
      break;
    }
    n.wal.entries.pop_front();
  }
  n.wal.truncated_below = std::max(n.wal.truncated_below, std::min(lsn, n.wal.synced_lsn + 1));
  if (trace_on_) Trace(TxId{}, n.name + " WAL truncated below " + std::to_string(lsn));
}

void World::CompleteSync(Node& n, uint64_t target_lsn) {
  const uint64_t old = n.wal.synced_lsn;
  n.wal.synced_lsn = std::max(old, target_lsn);
  n.wal.syncing = false;
  if (trace_on_) Trace(TxId{}, n.name + " WAL synced to lsn=" + std::to_string(n.wal.synced_lsn));
  // The drivers' notices, in LSN order; each may append, reload or stop.
  std::vector<std::pair<uint64_t, std::function<void(uint64_t, bool)>>> notices;
  for (const WalEntry& e : n.wal.entries) {
    if (e.lsn <= old || e.lsn > target_lsn || e.incarnation != n.incarnation || !e.on_durable)
      continue;
    notices.emplace_back(e.lsn, e.on_durable);
  }
  const uint64_t inc = n.incarnation;
  for (size_t i = 0; i < notices.size(); ++i) {
    if (!n.up || n.incarnation != inc) break;
    notices[i].second(notices[i].first, i + 1 < notices.size());
  }
  if (n.up) MaybeStartSync(n);
}

void World::Crash(Node& n) {
  if (!n.up) return;
  ++stats_.crashes;
  if (n.kind == Kind::kCoordinator) ++stats_.coordinator_crashes;
  n.up = false;
  n.down_since_ms = now_;
  n.hung_until_ms = 0;
  ++n.incarnation;
  n.wal.syncing = false;
  // The WAL keeps every synced record and an arbitrary prefix of the rest.
  uint64_t unsynced = 0;
  for (const WalEntry& e : n.wal.entries) unsynced += e.lsn > n.wal.synced_lsn ? 1 : 0;
  uint64_t keep = rng_.Range(0, unsynced);
  uint64_t lost = unsynced - keep;
  for (uint64_t i = 0; i < lost; ++i) n.wal.entries.pop_back();
  if (opts_.sabotage == Sabotage::kLoseSyncedRecords) {
    int extra = static_cast<int>(rng_.Range(1, kSabotageLostSyncedMax));
    for (int i = 0; i < extra && !n.wal.entries.empty(); ++i) n.wal.entries.pop_back();
  }
  n.wal.synced_lsn = n.wal.entries.empty() ? n.wal.truncated_below - 1 : n.wal.entries.back().lsn;
  bool store_lost = false;
  if (n.kind == Kind::kParticipant) {
    n.pdriver.reset();
    n.pglue.reset();
    n.pcore.reset();
    n.pstore.reset();
    // Power loss: the store (not synced) is gone and replay rebuilds it; a
    // process crash: the store survives and replay re-applies idempotently.
    store_lost = rng_.Chance(p_store_lost_);
    if (store_lost) n.store = std::make_unique<RecordingStore>(this, n.shard, n.checkpoint_image);
    n.checkpointing = false;  // an unfinished checkpoint is not one
  } else {
    NoteHaStats(n);
    n.driver.reset();
    n.glue.reset();
    n.ha.reset();
  }
  n.wal.sync_kick_pending = false;
  if (trace_on_) {
    Trace(TxId{}, "CRASH " + n.name + ": kept " + std::to_string(keep) + " of " +
                      std::to_string(unsynced) + " unsynced WAL records" +
                      (store_lost ? ", store lost" : ""));
  }
  // Calls from it vanish with it; calls to it fail as a reset connection.
  for (auto it = calls_.begin(); it != calls_.end();) {
    if (it->second.from == n.id) {
      it = calls_.erase(it);
      continue;
    }
    if (it->second.to == n.id) {
      uint64_t id = it->first;
      After(1, kEvTimeout, [this, id] { FinishCall(id, CallEnd::kUnavailable, nullptr); });
    }
    ++it;
  }
}

void World::StartCore(Node& n) {
  if (n.kind == Kind::kParticipant) {
    pc::CoreOptions o;
    o.read_wait_ms = kReadWaitMs;
    o.decision_query_after_ms = kDecisionQueryAfterMs;
    o.decision_query_interval_ms = kDecisionQueryIntervalMs;
    if (opts_.small_tables) {
      o.outcomes_remembered_max = kSmallTableMax;
      o.prepare_relog_lsn_gap = kSmallRelogGap;
    }
    n.pstore = std::make_unique<pc::FailpointStore>(n.store.get());
    n.pcore = std::make_unique<pc::Core>(o, n.pstore.get());
    if (n.checkpoint) n.pcore->RestoreCheckpoint(*n.checkpoint);
    for (const WalEntry& e : n.wal.entries) {
      Status s = n.pcore->Replay(e.lsn, e.type, e.payload);
      if (!s.ok()) {
        Fail("replay", e.txid,
             n.name + " replay failed at lsn " + std::to_string(e.lsn) + ": " + s.ToString());
        break;
      }
    }
    n.pcore->FinishRecovery(now_, n.wal.next_lsn() - 1);
    pc::CoreStats st = n.pcore->stats();
    stats_.replay_inferred_aborts += st.replay_inferred_aborts;
    stats_.in_doubt_replayed += st.in_flight;
    n.pstore->set_live();
    n.pglue = std::make_shared<ParticipantGlue>(this, n.id);
    pc::ParticipantDriverOptions popts;
    popts.name = n.name;
    popts.coordinator = nodes_[coordinators_[0]].name;
    for (int c : coordinators_) popts.coordinators.push_back(nodes_[c].name);
    popts.query_timeout_ms = static_cast<int>(kQueryDecisionTimeoutMs);
    n.pdriver = std::make_unique<pc::ParticipantDriver>(std::move(popts), n.pcore.get(),
                                                        n.pglue.get(), n.pglue.get());
    n.pdriver->Start();  // traces what recovery left in doubt
  } else {
    cc::CoreOptions o;
    for (int p : participants_) o.participants.push_back(nodes_[p].name);
    o.self_address = n.name;
    o.prepare_timeout_ms = kPrepareTimeoutMs;
    o.commit_timeout_ms = kCommitTimeoutMs;
    o.abort_timeout_ms = kAbortTimeoutMs;
    o.commit_retry_initial_ms = kCommitRetryInitialMs;
    o.commit_retry_max_ms = kCommitRetryMaxMs;
    if (opts_.small_tables) {
      o.committed_outcomes_max = kSmallTableMax;
      o.aborted_outcomes_max = kSmallTableMax;
      o.other_outcomes_max = kSmallTableMax;
      o.epoch_rewrite_lsn_gap = kSmallTableMax;
      o.decision_relog_lsn_gap = kSmallTableMax;
    }
    cc::HaCoreOptions ho;
    const bool first = n.id == coordinators_[0];
    ho.role = first ? cc::Role::kPrimary : cc::Role::kBackup;
    ho.self_address = n.name;
    if (coordinators_.size() > 1)
      ho.peer = nodes_[first ? coordinators_[1] : coordinators_[0]].name;
    ho.heartbeat_ms = kHeartbeatMs;
    ho.detector.suspect_after_ms = kSuspectAfterMs;
    ho.replicate_timeout_ms = kReplicateTimeoutMs;
    // Small tables: the primary re-snapshots its backup often (the backup then
    // truncates its log before the new SYNC).
    if (opts_.small_tables) ho.resync_after_records = kSmallTableMax;
    n.ha = std::make_unique<cc::HaCore>(ho, o);
    n.ha_seen = cc::HaStats{};
    for (const WalEntry& e : n.wal.entries) {
      Status s = n.ha->Replay(e.lsn, e.type, e.payload);
      if (!s.ok()) {
        Fail("replay", e.txid,
             n.name + " replay failed at lsn " + std::to_string(e.lsn) + ": " + s.ToString());
        break;
      }
    }
    n.glue = std::make_shared<CoordinatorGlue>(this, n.id);
    cc::DriverOptions dopts;
    dopts.name = n.name;
    dopts.self_address = n.name;
    dopts.peer = ho.peer;
    dopts.participants = o.participants;
    dopts.probe_timeout_ms = static_cast<int>(kProbeTimeoutMs);
    n.driver = std::make_unique<cc::CoordinatorDriver>(std::move(dopts), n.ha.get(), n.glue.get(),
                                                       n.glue.get());
    n.ha->Start(now_);
    n.driver->Process();
  }
}

void World::Restart(Node& n) {
  if (n.up) return;
  n.up = true;
  n.up_since_ms = now_;
  ++n.incarnation;
  if (trace_on_)
    Trace(TxId{},
          "RESTART " + n.name + " (" + std::to_string(n.wal.entries.size()) + " WAL records)");
  StartCore(n);
}

void World::TickAll() {
  for (Node& n : nodes_) {
    if (!n.up || Hung(n)) continue;
    if (n.kind == Kind::kParticipant) {
      if (n.pdriver) n.pdriver->Tick();
    } else if (n.kind == Kind::kCoordinator) {
      // Timeouts, re-sends, heartbeats and suspicion: all HaCore's.
      if (opts_.sabotage == Sabotage::kFakeSync) ForgeSync(n);
      if (!n.driver) continue;  // fail-stopped
      n.driver->Tick();
      // The runtime truncates on a timer (kTruncateIntervalMs); here at every tick.
      if (n.driver) n.driver->MaybeTruncate();
      NoteHaStats(n);
    }
  }
  if (healed_ && Quiesced()) {
    done_ = true;
    return;
  }
  After(kTickMs, kEvTick, [this] { TickAll(); });
}

// Sabotage::kFakeSync: a backup that is not in sync receives a forged, empty
// snapshot "from the primary" at its own epoch, so it counts itself in sync
// without the primary's decisions.
void World::ForgeSync(Node& c) {
  if (coordinators_.size() < 2 || !c.driver || c.ha->role() != cc::Role::kBackup || c.ha->in_sync())
    return;
  const int peer = coordinators_[0] == c.id ? coordinators_[1] : coordinators_[0];
  const int64_t gen = static_cast<int64_t>(++forged_generation_);
  const Epoch e = std::max<Epoch>(c.ha->epoch(), 1);
  rpc::ReplicateRequest req;
  req.epoch = static_cast<int64_t>(e);
  req.primary = nodes_[peer].name;
  req.generation = gen;
  req.snapshot = true;
  for (const auto& [type, payload] :
       {std::pair{cc::RecordType::kSync, cc::EncodePayload(cc::SyncRecord{gen})},
        std::pair{cc::RecordType::kEpoch, cc::EncodePayload(cc::EpochRecord{e})}}) {
    rpc::LogRecord r;
    r.type = static_cast<int8_t>(type);
    r.payload = payload;
    req.records.push_back(std::move(r));
  }
  c.driver->Replicate(
      req, [](const rpc::ReplicateResponse&) {}, [](const rpc::DtxError&) {});
}

void World::ScheduleCheckpoint(int id) {
  After(rng_.Range(kCheckpointGapMsMin, kCheckpointGapMsMax), kEvCheckpoint, [this, id] {
    Node& n = nodes_[id];
    if (n.up && !n.checkpointing) {
      std::optional<pc::Checkpoint> cp = n.pcore->TakeCheckpoint();
      if (cp && (!n.checkpoint || cp->lsn > n.checkpoint->lsn ||
                 cp->retain_from > n.checkpoint->retain_from)) {
        n.checkpointing = true;
        const uint64_t inc = n.incarnation;
        const pc::Checkpoint taken = *cp;
        After(rng_.Range(1, kCheckpointWriteMsMax), kEvCheckpoint, [this, id, inc, taken] {
          Node& m = nodes_[id];
          if (!m.up || m.incarnation != inc) return;  // crashed before the checkpoint was durable
          CompleteCheckpoint(m, taken);
        });
      }
    }
    ScheduleCheckpoint(id);
  });
}

void World::CompleteCheckpoint(Node& n, const pc::Checkpoint& cp) {
  n.checkpointing = false;
  if (n.checkpoint && cp.retain_from < n.checkpoint->retain_from) {
    Fail("checkpoint", TxId{},
         n.name + " checkpoint retain_from went back from " +
             std::to_string(n.checkpoint->retain_from) + " to " + std::to_string(cp.retain_from));
    return;
  }
  if (cp.lsn > n.wal.synced_lsn + 1) {
    Fail("checkpoint", TxId{},
         n.name + " checkpoint at lsn " + std::to_string(cp.lsn) + " beyond the synced LSN " +
             std::to_string(n.wal.synced_lsn));
    return;
  }
  // The store's synced write makes everything applied so far durable.
  n.checkpoint = cp;
  n.checkpoint_image = n.store->mem();
  size_t dropped = 0;
  while (!n.wal.entries.empty() && n.wal.entries.front().lsn < cp.retain_from) {
    n.wal.entries.pop_front();
    ++dropped;
  }
  n.wal.truncated_below = std::max(n.wal.truncated_below, cp.retain_from);
  ++stats_.checkpoints;
  if (trace_on_) {
    Trace(TxId{}, n.name + " checkpoint lsn=" + std::to_string(cp.lsn) +
                      " retain_from=" + std::to_string(cp.retain_from) + ", " +
                      std::to_string(dropped) + " WAL records truncated");
  }
}

void World::ScheduleNextCrash() {
  if (crash_gap_ms_ == 0) return;
  uint64_t gap = rng_.Range(1, 2 * crash_gap_ms_);
  if (now_ + gap >= fault_end_ms_) return;
  After(gap, kEvCrash, [this] {
    if (!faults_on_) return;
    int victim = rng_.Chance(p_coordinator_crash_)
                     ? coordinators_[rng_.Range(0, coordinators_.size() - 1)]
                     : participants_[rng_.Range(0, participants_.size() - 1)];
    Node& n = nodes_[victim];
    if (n.up) {
      Crash(n);
      uint64_t gen = ++n.restart_gen;
      After(rng_.Range(kDownMsMin, kDownMsMax), kEvRestart, [this, victim, gen] {
        if (nodes_[victim].restart_gen == gen) Restart(nodes_[victim]);
      });
    }
    ScheduleNextCrash();
  });
}

// Failover runs: now and then a coordinator hangs (a paused process: it
// neither sends nor receives, then resumes where it was), or a partition cuts
// the two coordinators apart, or one coordinator from every participant.
void World::ScheduleNextNetFault() {
  if (net_fault_gap_ms_ == 0) return;
  uint64_t gap = rng_.Range(1, 2 * net_fault_gap_ms_);
  if (now_ + gap >= fault_end_ms_) return;
  After(gap, kEvNetFault, [this] {
    if (!faults_on_) return;
    // Mostly the coordinator that is primary now (if any).
    int primary = coordinators_[rng_.Range(0, coordinators_.size() - 1)];
    for (int c : coordinators_) {
      const Node& n = nodes_[c];
      if (n.up && n.ha && n.ha->node_role() == NodeRole::kPrimary && rng_.Chance(0.8)) primary = c;
    }
    const int other = coordinators_[0] == primary ? coordinators_[1] : coordinators_[0];
    const uint64_t kind = rng_.Range(0, 2);
    if (kind == 0) {
      Node& n = nodes_[primary];
      if (n.up) {
        n.hung_until_ms = now_ + rng_.Range(kHangMsMin, kHangMsMax);
        ++stats_.hangs;
        if (trace_on_)
          Trace(TxId{}, "HANG " + n.name + " until " + std::to_string(n.hung_until_ms) + "ms");
      }
    } else {
      const uint64_t until = now_ + rng_.Range(kPartitionMsMin, kPartitionMsMax);
      std::vector<int> far;
      if (kind == 1) {
        far = {other};
      } else {
        far = participants_;
      }
      for (int f : far) {
        blocked_until_[{primary, f}] = until;
        blocked_until_[{f, primary}] = until;
      }
      ++stats_.partitions;
      if (trace_on_) {
        Trace(TxId{}, "PARTITION " + nodes_[primary].name + " from " +
                          (kind == 1 ? nodes_[other].name : std::string("every participant")) +
                          " until " + std::to_string(until) + "ms");
      }
    }
    ScheduleNextNetFault();
  });
}

// ---- clients -------------------------------------------------------------------------

void World::ClientNext(Client& c) {
  c.busy = false;
  if (now_ >= fault_end_ms_) return;  // the heal phase starts no new transactions
  c.busy = true;
  auto tx = std::make_shared<ClientTx>();
  tx->txid = TxId{0xC0000000ull + static_cast<uint64_t>(c.index), ++c.counter};
  tx->check_id = tx->txid;
  if (opts_.reuse_txids && c.has_last && rng_.Chance(1.0 / 3)) {
    tx->reuse = true;
    tx->txid = c.last_txid;
    tx->check_id = TxId{c.last_txid.hi + ((++c.reuses) << 32), c.last_txid.lo};
    ++stats_.txid_reuses;
  }
  tx->audit = n_accounts_ >= 2 && rng_.Chance(p_audit_);
  if (tx->audit) {
    for (int i = 0; i < n_accounts_; ++i) tx->keys.push_back(AccountKey(i));
  } else {
    int a = static_cast<int>(rng_.Range(0, n_accounts_ - 1));
    int b = static_cast<int>(rng_.Range(0, n_accounts_ - 2));
    if (b >= a) ++b;
    tx->keys = {AccountKey(a), AccountKey(b)};
    tx->amount = static_cast<int64_t>(rng_.Range(1, 20));
  }
  std::set<int> shards;
  for (const std::string& k : tx->keys) shards.insert(ShardOf(k));
  tx->single_shard = shards.size() == 1;
  tx->balances.assign(tx->keys.size(), 0);
  tx->versions.assign(tx->keys.size(), 0);
  if (trace_on_) {
    std::string what = tx->audit ? "audit of all accounts"
                                 : "transfer " + std::to_string(tx->amount) + " " + tx->keys[0] +
                                       " -> " + tx->keys[1];
    Trace(tx->check_id, nodes_[c.node].name + " begins " + what +
                            (tx->reuse ? " under the reused txid " + tx->txid.ToString() : ""));
  }
  ClientRead(c, tx);
}

void World::ClientRead(Client& c, std::shared_ptr<ClientTx> tx) {
  tx->reads_left = tx->keys.size();
  const int ci = c.index;
  for (size_t i = 0; i < tx->keys.size(); ++i) {
    int to = participants_[ShardOf(tx->keys[i])];
    StartCall(c.node, to, ReadReq{tx->keys[i]}, kClientReadTimeoutMs, tx->txid,
              [this, ci, tx, i](CallEnd end, const Response* resp) {
                Client& cl = clients_[ci];
                if (tx->failed) return;
                const rpc::ReadResult* rep =
                    end == CallEnd::kOk
                        ? std::get_if<rpc::ReadResult>(&std::get<ParticipantBody>(*resp))
                        : nullptr;
                if (rep == nullptr) {
                  tx->failed = true;
                  ++stats_.read_failures;
                  if (trace_on_)
                    Trace(tx->txid,
                          nodes_[cl.node].name + " read of " + tx->keys[i] + " failed; gives up");
                  After(rng_.Range(0, kClientThinkMsMax), kEvClient,
                        [this, ci] { ClientNext(clients_[ci]); });
                  return;
                }
                int64_t balance = kInitialBalance;
                if (rep->found) {
                  std::optional<Decoded> d = DecodeBalance(rep->value);
                  if (!d) {
                    Fail("bad-read", tx->txid, tx->keys[i] + " holds '" + rep->value + "'");
                  } else {
                    balance = d->balance;
                  }
                }
                tx->balances[i] = balance;
                tx->versions[i] = rep->version;
                if (--tx->reads_left == 0) ClientCommit(cl, tx);
              });
  }
}

void World::ClientCommit(Client& c, std::shared_ptr<ClientTx> tx) {
  if (tx->attempts == 0) {
    rpc::CommitRequest& req = tx->request;
    req.txid = ToRpc(tx->txid);
    req.shard_map_version = 1;
    TxInfo info;
    info.txid = tx->check_id;
    info.audit = tx->audit;
    if (!(opts_.sabotage == Sabotage::kBlindWrites && !tx->audit)) {
      for (size_t i = 0; i < tx->keys.size(); ++i) {
        rpc::ReadItem r;
        r.key = tx->keys[i];
        r.version = tx->versions[i];
        req.reads.push_back(std::move(r));
      }
    }
    if (!tx->audit) {
      const int64_t balances[2] = {tx->balances[0] - tx->amount, tx->balances[1] + tx->amount};
      for (int i = 0; i < 2; ++i) {
        rpc::WriteItem w;
        w.key = tx->keys[i];
        w.__set_value(EncodeBalance(balances[i], tx->check_id));
        info.writes[w.key] = w.value;
        info.shards.insert(ShardOf(w.key));
        req.writes.push_back(std::move(w));
      }
    }
    txs_.emplace(tx->check_id, std::move(info));
    if (tx->reuse && opts_.sabotage == Sabotage::kStoredOutcomeForReuse) {
      req = c.last_request;  // the coordinator sees the earlier content
    } else if (!tx->reuse) {
      c.has_last = true;
      c.last_txid = tx->txid;
      c.last_request = req;
    }
    if (opts_.adversary && !tx->reuse) {
      adversary_.seen.push_back(Adversary::Seen{tx->check_id, req});
      if (adversary_.seen.size() > kAdversarySeenMax) adversary_.seen.pop_front();
    }
    if (opts_.adversary && tx->reuse) adversary_.squatted.insert(tx->txid);
  } else {
    ++stats_.commit_retries;
    tx->request.__set_is_retry(true);  // as bindings/cpp marks a re-sent txid
  }
  ++tx->attempts;
  const int ci = c.index;
  // A duplicated Commit is a repeat the client did not make: KB2 counts it.
  tx->repeated |= tx->attempts > 1;
  // With failover the client knows both coordinators and follows the primary
  // (bindings/cpp): NOT_PRIMARY or a transport failure sends the next attempt
  // to the other one; UNKNOWN is resolved by asking again with the same txid.
  const int to = coordinators_[static_cast<size_t>(c.coordinator) % coordinators_.size()];
  if (trace_on_ && tx->attempts > 1)
    Trace(tx->txid, nodes_[c.node].name + " commits again at " + nodes_[to].name);
  const int copies = StartCall(
      c.node, to, tx->request, kClientCommitTimeoutMs, tx->txid,
      [this, ci, tx](CallEnd end, const Response* resp) {
        Client& cl = clients_[ci];
        const int attempts_max =
            opts_.failover ? kClientCommitAttemptsFailover : kClientCommitAttemptsMax;
        const bool may_retry = opts_.client_retries && tx->attempts < attempts_max;
        auto retry = [&](bool other_coordinator) {
          if (other_coordinator) ++cl.coordinator;
          const uint64_t wait =
              opts_.failover ? rng_.Range(20, kClientRetryMsMaxFailover) : rng_.Range(1, 50);
          After(wait, kEvClient, [this, ci, tx] { ClientCommit(clients_[ci], tx); });
        };
        if (end != CallEnd::kOk) {
          if (may_retry) return retry(opts_.failover);
          return ClientDone(cl, tx, ClientReply::kNoReply, CallEndName(end));
        }
        const auto& body = std::get<CoordinatorBody>(*resp);
        if (const auto* err = std::get_if<rpc::DtxError>(&body)) {
          // BAD_ARGUMENT (a reused txid) is the same answer again.
          if (may_retry && err->code != rpc::ErrorCode::BAD_ARGUMENT)
            return retry(err->code == rpc::ErrorCode::NOT_PRIMARY);
          return ClientDone(cl, tx, ClientReply::kError, err->message);
        }
        const auto* res = std::get_if<rpc::CommitResult>(&body);
        if (res == nullptr) {
          Fail("sim-internal", tx->txid, "a Decision answered a client Commit");
          return ClientDone(cl, tx, ClientReply::kError, "decision reply");
        }
        switch (res->outcome) {
          case rpc::Outcome::COMMITTED:
            return ClientDone(cl, tx, ClientReply::kCommitted, res->detail);
          case rpc::Outcome::ABORTED:
            return ClientDone(cl, tx, ClientReply::kAborted, OutcomeName(*res) + " " + res->detail);
          case rpc::Outcome::UNKNOWN:
            if (may_retry) return retry(false);
            return ClientDone(cl, tx, ClientReply::kUnknown, res->detail);
        }
        Fail("sim-internal", tx->txid, "an undecodable outcome answered a client Commit");
        return ClientDone(cl, tx, ClientReply::kError, "bad outcome");
      });
  tx->repeated |= copies > 1;
}

void World::ClientDone(Client& c, std::shared_ptr<ClientTx> tx, ClientReply reply,
                       const std::string& why) {
  TxInfo& info = txs_[tx->check_id];
  info.reply = reply;
  if (trace_on_)
    Trace(tx->check_id, nodes_[c.node].name + " told " + ClientReplyName(reply) + " " + why);
  if (tx->reuse) {
    if (reply == ClientReply::kCommitted) ++stats_.reuses_committed;
    if (reply == ClientReply::kError &&
        why.find("txid reused with different content") != std::string::npos)
      ++stats_.reuses_refused;
  }
  if (tx->audit) {
    if (reply == ClientReply::kCommitted) {
      ++stats_.audits_committed;
      int64_t sum = 0;
      for (int64_t b : tx->balances) sum += b;
      if (sum != kInitialBalance * n_accounts_) {
        std::string seen;
        for (size_t i = 0; i < tx->keys.size(); ++i) {
          seen += " " + tx->keys[i] + "=" + std::to_string(tx->balances[i]) + "(v" +
                  std::to_string(tx->versions[i]) + ")";
        }
        Fail("audit-total", tx->txid,
             "a committed read-only audit saw total " + std::to_string(sum) + ", expected " +
                 std::to_string(kInitialBalance * n_accounts_) + ":" + seen);
      }
    } else if (reply == ClientReply::kAborted) {
      ++stats_.audits_aborted;
    }
  } else {
    if (reply == ClientReply::kCommitted) ++stats_.transfers_committed;
    else if (reply == ClientReply::kAborted) ++stats_.transfers_aborted;
    else ++stats_.transfers_unknown;
  }
  const int ci = c.index;
  After(rng_.Range(0, kClientThinkMsMax), kEvClient, [this, ci] { ClientNext(clients_[ci]); });
}

// ---- the adversary -----------------------------------------------------------------

void World::AdversaryNext() {
  if (now_ >= fault_end_ms_) return;  // like the clients: nothing new in the heal phase
  After(rng_.Range(1, kAdversaryPauseMsMax), kEvClient, [this] { AdversaryNext(); });
  Adversary& a = adversary_;
  const TxId fresh{0xAD00000000000000ull, ++a.counter};
  const uint64_t pick = rng_.Range(0, 99);
  const Adversary::Seen* seen =
      a.seen.empty() ? nullptr : &a.seen[rng_.Range(0, a.seen.size() - 1)];
  if (pick < 25 || (seen == nullptr && pick < 50)) {
    // GetOutcome of a txid nobody used: nothing may be claimed about it.
    AdversaryGetOutcome(fresh, fresh);
  } else if (pick < 50) {
    AdversaryGetOutcome(seen->check_id, seen->check_id);
  } else if (pick < 70 || seen == nullptr) {
    // A transaction of its own: blind writes to one or two keys of its own.
    rpc::CommitRequest req;
    req.txid = ToRpc(fresh);
    req.shard_map_version = 1;
    const uint64_t keys = rng_.Range(1, 2);
    for (uint64_t i = 0; i < keys; ++i) {
      rpc::WriteItem w;
      w.key = std::string(kJunkPrefix) + std::to_string(rng_.Range(0, 7)) + std::to_string(i);
      w.__set_value(EncodeBalance(0, fresh));
      req.writes.push_back(std::move(w));
    }
    AdversaryCommit(std::move(req), fresh, Copy::kNo);
  } else if (pick < 85) {
    // Another client's txid with content of its own: refused, or it really
    // commits (and the other client's Commit is refused) - never told the
    // other transaction's outcome.
    rpc::CommitRequest req;
    req.txid = seen->request.txid;
    req.shard_map_version = 1;
    rpc::WriteItem w;
    const TxId check_id{0xAD10000000000000ull, a.counter};
    w.key = std::string(kJunkPrefix) + std::to_string(rng_.Range(0, 7)) + "r";
    w.__set_value(EncodeBalance(0, check_id));
    req.writes.push_back(std::move(w));
    ++stats_.txid_reuses;
    a.squatted.insert(seen->check_id);
    AdversaryCommit(std::move(req), check_id, Copy::kNo);
  } else {
    // A copy of another client's Commit, now or much later: a client that
    // hung and retries (is_retry), or one that sends it again as if it were
    // new (no is_retry: a misbehaving client; its answers are not judged,
    // what they do to everyone else is). Only while that client holds no
    // outcome: a retry after COMMITTED or ABORTED needs the client sessions
    // that do not exist yet (README.md "Copies sent as new poison
    // outcomes").
    rpc::CommitRequest req = seen->request;
    const bool retry = rng_.Chance(0.5);
    if (retry) req.__set_is_retry(true);
    const TxId check_id = seen->check_id;
    const uint64_t delay = rng_.Chance(0.5) ? 0 : rng_.Range(1, kAdversaryCopyDelayMsMax);
    After(delay, kEvClient, [this, req, check_id, retry]() mutable {
      const ClientReply told = txs_[check_id].reply;
      if (told == ClientReply::kCommitted || told == ClientReply::kAborted) return;
      AdversaryCommit(std::move(req), check_id, retry ? Copy::kRetry : Copy::kAsNew);
    });
  }
}

void World::AdversaryGetOutcome(const TxId& txid, const TxId& check_id) {
  ++stats_.adversary_calls;
  const int to = coordinators_[rng_.Range(0, coordinators_.size() - 1)];
  StartCall(adversary_.node, to, GetOutcomeReq{ToRpc(txid)}, kClientCommitTimeoutMs, txid,
            [this, check_id](CallEnd end, const Response* resp) {
              if (end != CallEnd::kOk) return;
              const auto* o = std::get_if<OutcomeAnswer>(&std::get<CoordinatorBody>(*resp));
              if (o == nullptr || o->outcome == rpc::Outcome::UNKNOWN) return;
              if (adversary_.squatted.count(check_id) != 0) return;
              ++stats_.adversary_outcomes;
              claims_.push_back(OutcomeClaim{check_id, o->outcome, "GetOutcome"});
              if (trace_on_)
                Trace(check_id,
                      std::string("adversary told ") + OutcomeWord(o->outcome) + " by GetOutcome");
            });
}

void World::AdversaryCommit(rpc::CommitRequest req, const TxId& check_id, Copy copy) {
  ++stats_.adversary_calls;
  if (copy == Copy::kNo) {
    TxInfo info;
    info.txid = check_id;
    for (const rpc::WriteItem& w : req.writes) {
      info.writes[w.key] = w.value;
      info.shards.insert(ShardOf(w.key));
    }
    txs_.emplace(check_id, std::move(info));
  }
  if (trace_on_) {
    Trace(check_id, std::string("adversary sends ") +
                        (copy == Copy::kRetry   ? "a retry of its Commit"
                         : copy == Copy::kAsNew ? "a copy of its Commit as new"
                                                : "a Commit of its own content") +
                        " under txid " + FromRpc(req.txid).ToString());
  }
  const int to = coordinators_[rng_.Range(0, coordinators_.size() - 1)];
  StartCall(adversary_.node, to, std::move(req), kClientCommitTimeoutMs, check_id,
            [this, check_id, copy](CallEnd end, const Response* resp) {
              if (end != CallEnd::kOk) return;
              const auto* res = std::get_if<rpc::CommitResult>(&std::get<CoordinatorBody>(*resp));
              if (res == nullptr || res->outcome == rpc::Outcome::UNKNOWN) return;
              if (trace_on_) {
                Trace(check_id, std::string("adversary told ") + OutcomeWord(res->outcome) + " " +
                                    res->detail);
              }
              if (copy == Copy::kAsNew) return;
              if (copy == Copy::kRetry) {
                ++stats_.adversary_replays_answered;
                claims_.push_back(OutcomeClaim{check_id, res->outcome, "a retry of its Commit"});
                return;
              }
              TxInfo& info = txs_[check_id];
              info.reply = res->outcome == rpc::Outcome::COMMITTED ? ClientReply::kCommitted
                                                                   : ClientReply::kAborted;
              if (res->outcome == rpc::Outcome::COMMITTED) ++stats_.adversary_committed;
            });
}

// ---- heal and checks --------------------------------------------------------------

void World::Heal() {
  faults_on_ = false;
  healed_ = true;
  if (trace_on_) Trace(TxId{}, "HEAL: faults stop, every node restarts, no new transactions");
  blocked_until_.clear();
  for (Node& n : nodes_) {
    if (n.hung_until_ms > now_) n.hung_until_ms = now_;  // resumes; deferred completions run now
  }
  for (Node& n : nodes_) {
    if (!n.up && n.restart_gen != UINT64_MAX) {
      ++n.restart_gen;  // cancels the pending restart
      Restart(n);
    }
  }
}

bool World::Quiesced() const {
  for (const Client& c : clients_) {
    if (c.busy) return false;
  }
  for (const auto& [id, call] : calls_) {
    if (!call.background) return false;  // heartbeats never stop
  }
  for (const Node& n : nodes_) {
    if (n.kind == Kind::kClient) continue;
    if (!n.up || !n.wal.all_synced()) return false;
    if (n.kind == Kind::kParticipant) {
      pc::CoreStats s = n.pcore->stats();
      if (s.in_flight != 0 || s.parked_reads != 0 || s.locked_keys != 0) return false;
    } else if (n.ha->core().in_flight() != 0) {
      return false;
    }
  }
  return true;
}

void World::CheckReplayMatches(Node& n) {
  // A fresh core replaying the whole log must rebuild exactly the live store:
  // otherwise a restart now would lose or invent committed data.
  pc::MemStore fresh = n.checkpoint_image;
  pc::Core core(pc::CoreOptions{}, &fresh);
  if (n.checkpoint) core.RestoreCheckpoint(*n.checkpoint);
  for (const WalEntry& e : n.wal.entries) {
    Status s = core.Replay(e.lsn, e.type, e.payload);
    if (!s.ok()) {
      Fail("final-replay", e.txid, n.name + ": " + s.ToString());
      return;
    }
  }
  core.FinishRecovery(now_, n.wal.next_lsn() - 1);
  const auto& live = n.store->mem().data();
  if (fresh.data() == live) return;
  for (const auto& [key, vv] : live) {
    auto it = fresh.data().find(key);
    std::optional<Decoded> d = DecodeBalance(vv.second);
    TxId txid = d ? d->txid : TxId{};
    if (it == fresh.data().end()) {
      Fail("replay-mismatch", txid,
           n.name + ": " + key + " v" + std::to_string(vv.first) + " is live but not in the log");
      return;
    }
    if (it->second != vv) {
      Fail("replay-mismatch", txid,
           n.name + ": " + key + " live v" + std::to_string(vv.first) + " '" + vv.second +
               "', replay v" + std::to_string(it->second.first) + " '" + it->second.second + "'");
      return;
    }
  }
  Fail("replay-mismatch", TxId{}, n.name + ": replay holds keys the live store does not");
}

void World::FinalChecks() {
  // Failover: a known liveness bug (README "Known bug: epoch livelock") can
  // leave both coordinators unable to establish any epoch - an epoch E+1 that
  // some participants adopted for an attempt that never reached a majority
  // (and whose owner a participant restart forgot, or split between the two)
  // is refused to everyone forever. Then nothing is delivered: that is
  // reported as `epoch-livelock`, not as the safety checks it would trip.
  bool livelock = false;
  if (opts_.failover && !Quiesced()) {
    livelock = true;
    for (int c : coordinators_) {
      const Node& n = nodes_[c];
      if (n.up && n.ha && n.ha->established()) livelock = false;
    }
  }
  auto decision_logged = [&](const TxId& txid) -> std::string {
    for (int c : coordinators_) {
      for (const WalEntry& e : nodes_[c].wal.entries) {
        if (e.txid == txid && e.type == static_cast<uint8_t>(cc::RecordType::kDecision))
          return nodes_[c].name;
      }
    }
    return "";
  };
  // Transactions still in doubt at some participant: with a livelock their
  // partial application is undelivered, not decided two ways.
  std::set<TxId> undelivered;
  if (livelock) {
    for (int p : participants_) {
      if (!nodes_[p].pcore) continue;
      for (const pc::InDoubtInfo& d : nodes_[p].pcore->ListInDoubt(now_))
        undelivered.insert(d.txid);
    }
  }
  if (livelock) {
    std::string epochs;
    for (int c : coordinators_) {
      const Node& n = nodes_[c];
      epochs += " " + n.name + " " + (n.ha ? NodeRoleName(n.ha->node_role()) : "down") + " epoch " +
                std::to_string(n.ha ? n.ha->epoch() : 0) + ";";
    }
    std::string parts;
    for (int p : participants_) {
      if (nodes_[p].pcore)
        parts += " " + nodes_[p].name + " epoch " + std::to_string(nodes_[p].pcore->epoch()) + ";";
    }
    Fail("epoch-livelock", TxId{},
         "no coordinator could establish an epoch by the end of the heal:" + epochs + parts);
  } else if (!Quiesced()) {
    std::string why;
    TxId first;
    for (const Node& n : nodes_) {
      if (n.kind == Kind::kClient) continue;
      if (!n.up) {
        why += " " + n.name + " down;";
        continue;
      }
      if (n.kind == Kind::kParticipant) {
        pc::CoreStats s = n.pcore->stats();
        if (s.in_flight || s.locked_keys || s.parked_reads) {
          why += " " + n.name + " in_flight=" + std::to_string(s.in_flight) +
                 " in_doubt=" + std::to_string(s.in_doubt) +
                 " locked_keys=" + std::to_string(s.locked_keys) + ";";
          for (const pc::InDoubtInfo& d : n.pcore->ListInDoubt(now_)) {
            if (first == TxId{}) first = d.txid;
            why += " in doubt " + d.txid.ToString();
          }
        }
      } else if (n.ha->core().in_flight() != 0) {
        why += " " + n.name + " (" + NodeRoleName(n.ha->node_role()) +
               ") in_flight=" + std::to_string(n.ha->core().in_flight()) + ";";
      }
    }
    for (const Client& c : clients_) {
      if (c.busy) why += " " + nodes_[c.node].name + " still busy;";
    }
    size_t open = 0;
    for (const auto& [id, call] : calls_) open += call.background ? 0 : 1;
    if (open != 0) why += " " + std::to_string(open) + " calls pending;";
    Fail("quiesce", first,
         "not quiet " + std::to_string(opts_.heal_max_ms) + " ms after the heal:" + why);
  }

  // Final balances and which transaction wrote each key.
  int64_t total = 0;
  std::map<std::string, std::pair<Version, TxId>> last_writer;  // key -> (version, txid)
  for (int i = 0; i < n_accounts_; ++i) {
    std::string key = AccountKey(i);
    const Node& p = nodes_[participants_[ShardOf(key)]];
    const auto& data = p.store->mem().data();
    auto it = data.find(key);
    if (it == data.end()) {
      total += kInitialBalance;
      continue;
    }
    std::optional<Decoded> d = DecodeBalance(it->second.second);
    if (!d) {
      Fail("bad-value", TxId{}, key + " holds '" + it->second.second + "'");
      continue;
    }
    total += d->balance;
    last_writer[key] = {it->second.first, d->txid};
  }
  for (int p : participants_) {
    for (const auto& [key, vv] : nodes_[p].store->mem().data()) {
      const bool junk = opts_.adversary && key.rfind(kJunkPrefix, 0) == 0;
      if (ShardOf(key) != nodes_[p].shard || (key.rfind("acct-", 0) != 0 && !junk)) {
        Fail("stray-key", TxId{}, nodes_[p].name + " holds key " + key + " it does not own");
        continue;
      }
      // The adversary's keys: which transaction wrote each (the checks
      // below judge its transactions like any other).
      std::optional<Decoded> d = junk ? DecodeBalance(vv.second) : std::nullopt;
      if (junk && !d) Fail("bad-value", TxId{}, key + " holds '" + vv.second + "'");
      if (d) last_writer[key] = {vv.first, d->txid};
    }
  }
  if (total != kInitialBalance * n_accounts_ && undelivered.empty()) {
    Fail("bank-total", TxId{},
         "final total " + std::to_string(total) + ", expected " +
             std::to_string(kInitialBalance * n_accounts_));
  }

  for (const auto& [txid, info] : txs_) {
    if (info.audit) continue;
    std::set<int> applied_at;
    for (const auto& [p, versions] : info.applied) {
      applied_at.insert(p);
      if (versions.size() > 1) {
        Fail("double-apply", txid,
             nodes_[participants_[p]].name + " applied it " + std::to_string(versions.size()) +
                 " times with different versions");
      }
    }
    auto names = [&](const std::set<int>& s) {
      std::string out;
      for (int p : s) out += (out.empty() ? "" : ",") + nodes_[participants_[p]].name;
      return out.empty() ? std::string("none") : out;
    };
    if (undelivered.count(txid) != 0) {
      Fail("epoch-livelock", txid,
           "still in doubt at the end (applied at {" + names(applied_at) + "} of {" +
               names(info.shards) + "}): no coordinator could establish an epoch");
      continue;
    }
    if (!applied_at.empty() && applied_at != info.shards) {
      Fail("atomicity", txid,
           "applied at {" + names(applied_at) + "} but writes {" + names(info.shards) +
               "} (client was told " + ClientReplyName(info.reply) + ")");
    }
    if (info.reply == ClientReply::kCommitted) {
      if (applied_at != info.shards) {
        const std::string holder =
            livelock && applied_at.empty() ? decision_logged(txid) : std::string();
        if (!holder.empty()) {
          Fail("epoch-livelock", txid,
               "client told COMMITTED; the DECISION is in " + holder +
                   "'s log but no coordinator could establish an epoch to deliver it");
          continue;
        }
        Fail("committed-lost", txid,
             "client told COMMITTED, applied at {" + names(applied_at) + "} of {" +
                 names(info.shards) + "}");
      }
      for (const auto& [key, value] : info.writes) {
        int p = ShardOf(key);
        auto ap = info.applied.find(p);
        if (ap == info.applied.end()) continue;
        Version v = *ap->second.rbegin();
        auto lw = last_writer.find(key);
        if (lw == last_writer.end() || lw->second.first < v) {
          Fail("committed-lost", txid,
               key + " was written at v" + std::to_string(v) + " but the final store has " +
                   (lw == last_writer.end() ? std::string("nothing")
                                            : "v" + std::to_string(lw->second.first)));
        } else if (lw->second.first == v && lw->second.second != txid) {
          Fail("committed-lost", txid,
               key + " v" + std::to_string(v) + " holds another transaction's value");
        }
      }
    }
    if (info.reply == ClientReply::kAborted && !applied_at.empty()) {
      Fail("aborted-visible", txid, "client told ABORTED, applied at {" + names(applied_at) + "}");
    }
  }
  // What the adversary was told about other clients' transactions.
  for (const OutcomeClaim& c : claims_) {
    auto it = txs_.find(c.check_id);
    if (it == txs_.end()) {
      if (c.outcome != rpc::Outcome::UNKNOWN) {
        Fail("false-outcome", c.check_id,
             c.how + " answered " + OutcomeWord(c.outcome) + " for a txid no client ever sent");
      }
      continue;
    }
    if (undelivered.count(c.check_id) != 0) continue;
    std::set<int> applied_at;
    for (const auto& [p, versions] : it->second.applied) applied_at.insert(p);
    if (c.outcome == rpc::Outcome::COMMITTED && applied_at != it->second.shards) {
      Fail("false-outcome", c.check_id,
           c.how + " answered COMMITTED, but it was applied at " +
               std::to_string(applied_at.size()) + " of its " +
               std::to_string(it->second.shards.size()) + " participants (its client was told " +
               ClientReplyName(it->second.reply) + ")");
    } else if (c.outcome == rpc::Outcome::ABORTED && !applied_at.empty()) {
      // Its own check: a known gap (README.md "Copies sent as new poison
      // outcomes"; the aborts a restart or failover forgot are closed), kept
      // apart so that every other false outcome still fails the adversary's
      // test.
      Fail("aborted-then-committed", c.check_id,
           c.how + " answered ABORTED, but it was applied at " + std::to_string(applied_at.size()) +
               " participants (its client was told " + ClientReplyName(it->second.reply) + ")");
    }
  }
  for (const auto& [key, lw] : last_writer) {
    auto it = txs_.find(lw.second);
    if (it != txs_.end() && it->second.reply == ClientReply::kAborted) {
      Fail("aborted-visible", lw.second,
           key + " holds the value of a transaction the client was told ABORTED");
    }
  }

  for (int p : participants_) {
    if (nodes_[p].up) CheckReplayMatches(nodes_[p]);
  }
}

RunResult World::Run() {
  DrawConfig();
  Build();
  After(kTickMs, kEvTick, [this] { TickAll(); });
  for (Client& c : clients_) {
    const int ci = c.index;
    After(rng_.Range(0, kClientThinkMsMax), kEvClient, [this, ci] { ClientNext(clients_[ci]); });
  }
  if (opts_.adversary) {
    After(rng_.Range(0, kAdversaryPauseMsMax), kEvClient, [this] { AdversaryNext(); });
  }
  if (faults_on_) ScheduleNextCrash();
  if (faults_on_) ScheduleNextNetFault();
  for (int p : participants_) ScheduleCheckpoint(p);
  At(fault_end_ms_, kEvHeal, [this] { Heal(); });
  const uint64_t deadline = fault_end_ms_ + opts_.heal_max_ms;
  uint64_t fp = Mix(0, seed_);
  while (!queue_.empty() && !done_) {
    Event e = std::move(const_cast<Event&>(queue_.top()));
    queue_.pop();
    if (e.at > deadline) break;
    now_ = e.at;
    fp = Mix(Mix(fp, e.at), e.kind);
    ++stats_.events;
    e.fn();
  }
  stats_.end_ms = now_;
  FinalChecks();
  for (uint64_t v :
       {stats_.messages, stats_.dropped, stats_.duplicated, stats_.crashes,
        stats_.transfers_committed, stats_.transfers_aborted, stats_.transfers_unknown,
        stats_.audits_committed, stats_.promotions, stats_.step_downs, stats_.hangs,
        stats_.partitions, stats_.max_epoch, static_cast<uint64_t>(violations_.size())}) {
    fp = Mix(fp, v);
  }
  stats_.fingerprint = fp;
  // The most telling first: a lost commit explains the bank total, not the reverse.
  auto rank = [](const std::string& check) {
    static const char* const kOrder[] = {
        "atomicity",      "committed-lost",       "aborted-visible",       "double-apply",
        "two-primaries",  "stale-epoch-accepted", "audit-total",           "bank-total",
        "replay",         "final-replay",         "replay-mismatch",       "participant-fatal",
        "commit-refused", "false-outcome",        "aborted-then-committed"};
    for (size_t i = 0; i < sizeof(kOrder) / sizeof(kOrder[0]); ++i) {
      if (check == kOrder[i]) return i;
    }
    return sizeof(kOrder) / sizeof(kOrder[0]);
  };
  std::stable_sort(
      violations_.begin(), violations_.end(),
      [&](const Violation& a, const Violation& b) { return rank(a.check) < rank(b.check); });
  RunResult r;
  r.seed = seed_;
  r.violations = std::move(violations_);
  r.stats = stats_;
  r.trace = std::move(trace_);
  return r;
}

volatile sig_atomic_t g_seed_set = 0;
volatile uint64_t g_current_seed = 0;

void OnAbort(int) {
  if (g_seed_set) {
    char buf[96];
    const char* pre = "\ndtx-sim: a check aborted the process while running seed ";
    uint64_t s = g_current_seed;
    char digits[24];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + s % 10);
      s /= 10;
    } while (s != 0);
    size_t len = 0;
    while (n > 0) buf[len++] = digits[--n];
    buf[len++] = '\n';
    ssize_t ignored = write(2, pre, std::strlen(pre));
    ignored = write(2, buf, len);
    (void)ignored;
  }
  signal(SIGABRT, SIG_DFL);
  raise(SIGABRT);
}

}  // namespace

std::string ReplayCommand(uint64_t seed, const SimOptions& o) {
  std::string cmd = "dtx-sim --seed " + std::to_string(seed);
  if (o.participants > 0) cmd += " --participants " + std::to_string(o.participants);
  if (o.clients > 0) cmd += " --clients " + std::to_string(o.clients);
  if (o.accounts > 0) cmd += " --accounts " + std::to_string(o.accounts);
  if (o.fault_phase_ms > 0) cmd += " --fault-ms " + std::to_string(o.fault_phase_ms);
  if (o.heal_max_ms != SimOptions{}.heal_max_ms)
    cmd += " --heal-max-ms " + std::to_string(o.heal_max_ms);
  if (!o.faults) cmd += " --no-faults";
  if (o.small_tables) cmd += " --small-tables";
  if (!o.client_retries) cmd += " --no-client-retries";
  if (o.sabotage == Sabotage::kLoseSyncedRecords) cmd += " --sabotage lose-synced";
  if (o.sabotage == Sabotage::kBlindWrites) cmd += " --sabotage blind-writes";
  if (o.sabotage == Sabotage::kAcceptOldEpochs) cmd += " --sabotage accept-old-epochs";
  if (o.sabotage == Sabotage::kFakeSync) cmd += " --sabotage fake-sync";
  if (o.sabotage == Sabotage::kStoredOutcomeForReuse) cmd += " --sabotage stored-outcome-for-reuse";
  if (o.sabotage == Sabotage::kIgnoreAttemptStamps) cmd += " --sabotage ignore-attempt-stamps";
  if (o.long_delays) cmd += " --long-delays";
  if (o.failover) cmd += " --failover";
  if (o.reuse_txids) cmd += " --reuse-txids";
  if (o.adversary) cmd += " --adversary";
  return cmd;
}

RunResult RunSeed(uint64_t seed, const SimOptions& options) {
  // The driver logs like the node does; a run's story is its trace.
  spdlog::set_level(spdlog::level::off);
  probe::Reset();
  World w(seed, options);
  RunResult r = w.Run();
  r.stats.probes = probe::Get();
  return r;
}

void ProbeTotals::Add(const RunStats& s) {
  ++runs;
  for (size_t i = 0; i < probe::kCount; ++i) {
    hits[i] += s.probes[i];
    seeds[i] += s.probes[i] != 0 ? 1 : 0;
  }
}

std::string ProbeTable(const ProbeTotals& t) {
  std::string out = "coverage probes (common/probe.h) over " + std::to_string(t.runs) + " seeds:\n";
  char buf[256];
  std::snprintf(buf, sizeof(buf), "  %-38s %8s %10s  %s\n", "probe", "seeds", "hits", "branch");
  out += buf;
  for (size_t i = 0; i < probe::kCount; ++i) {
    std::snprintf(buf, sizeof(buf), "  %-38s %8" PRIu64 " %10" PRIu64 "  %s%s\n", probe::kNames[i],
                  t.seeds[i], t.hits[i], probe::kDescriptions[i],
                  t.seeds[i] == 0 ? "  [NOT REACHED]" : "");
    out += buf;
  }
  return out;
}

std::string Summary(const RunResult& r) {
  const RunStats& s = r.stats;
  char buf[1200];
  std::snprintf(buf, sizeof(buf),
                "seed %" PRIu64 " %s: committed=%" PRIu64 " aborted=%" PRIu64 " unknown=%" PRIu64
                " audits=%" PRIu64 " read_failures=%" PRIu64 " retries=%" PRIu64
                " checkpoints=%" PRIu64 " crashes=%" PRIu64 " (coordinator %" PRIu64
                ") in_doubt_replayed=%" PRIu64 " queries=%" PRIu64 " msgs=%" PRIu64
                " dropped=%" PRIu64 " dup=%" PRIu64 " promotions=%" PRIu64 " step_downs=%" PRIu64
                " hangs=%" PRIu64 " partitions=%" PRIu64 " max_epoch=%" PRIu64 " events=%" PRIu64
                " end_ms=%" PRIu64 " fingerprint=%016" PRIx64 " | %s",
                r.seed, r.ok() ? "ok" : "FAILED", s.transfers_committed, s.transfers_aborted,
                s.transfers_unknown, s.audits_committed, s.read_failures, s.commit_retries,
                s.checkpoints, s.crashes, s.coordinator_crashes, s.in_doubt_replayed,
                s.decision_queries, s.messages, s.dropped, s.duplicated, s.promotions, s.step_downs,
                s.hangs, s.partitions, s.max_epoch, s.events, s.end_ms, s.fingerprint,
                s.config.c_str());
  return buf;
}

std::string ExplainFailure(const RunResult& failed, const SimOptions& options,
                           size_t violations_max, size_t tail) {
  SimOptions traced = options;
  traced.trace = true;
  RunResult again = RunSeed(failed.seed, traced);
  std::string out = "FAILED seed " + std::to_string(failed.seed) +
                    " (replay: " + ReplayCommand(failed.seed, options) + " --trace)\n  " +
                    Summary(failed) + "\n";
  if (again.stats.fingerprint != failed.stats.fingerprint) {
    out += "  WARNING: the traced re-run took a different schedule (fingerprint " +
           std::to_string(again.stats.fingerprint) + "): the simulator is not deterministic\n";
  }
  for (size_t i = 0; i < failed.violations.size() && i < violations_max; ++i) {
    const Violation& v = failed.violations[i];
    out += "  violation " + v.check +
           (v.txid == TxId{} ? std::string() : " txid " + v.txid.ToString()) + ": " + v.detail +
           "\n";
    std::vector<const TraceLine*> lines;
    for (const TraceLine& t : again.trace) {
      bool global =
          t.txid == TxId{} && (t.text.rfind("CRASH", 0) == 0 || t.text.rfind("RESTART", 0) == 0 ||
                               t.text.rfind("HEAL", 0) == 0);
      if (v.txid == TxId{} ? true : (t.txid == v.txid || global)) lines.push_back(&t);
    }
    // Long histories (a COMMIT re-sent for seconds) show their start too.
    const size_t head = lines.size() > tail && v.txid != TxId{} ? tail / 3 : 0;
    const size_t from = lines.size() > tail ? lines.size() - (tail - head) : 0;
    out += "    " + std::to_string(lines.size()) + " events" +
           (v.txid == TxId{} ? std::string() : " touching it (and crashes/restarts)") +
           (from > 0 ? ", showing the " +
                           (head > 0 ? "first " + std::to_string(head) + " and " : std::string()) +
                           "last " + std::to_string(lines.size() - from)
                     : std::string()) +
           ":\n";
    auto print = [&](size_t j) {
      char ts[32];
      std::snprintf(ts, sizeof(ts), "%8" PRIu64 "ms ", lines[j]->at_ms);
      out += "      " + std::string(ts) + lines[j]->text + "\n";
    };
    for (size_t j = 0; j < head; ++j) print(j);
    if (head > 0) out += "      ...\n";
    for (size_t j = from; j < lines.size(); ++j) print(j);
  }
  if (failed.violations.size() > violations_max) {
    out += "  ... and " + std::to_string(failed.violations.size() - violations_max) +
           " more violations\n";
  }
  return out;
}

void InstallAbortReporter() { signal(SIGABRT, OnAbort); }

void SetCurrentSeed(uint64_t seed) {
  g_current_seed = seed;
  g_seed_set = 1;
}

}  // namespace dtx::sim
