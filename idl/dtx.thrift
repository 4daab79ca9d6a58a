// dtx wire contract: the Participant and Coordinator services (clients), the
// ParticipantPeer and CoordinatorPeer services (node to node, extending the
// client ones), and the Admin service. A node serves its peer service on
// --listen and Admin on --admin-listen (loopback by default).
//
// Transport: framed transport + binary protocol (TFramedTransport +
// TBinaryProtocol), so any stock Thrift client can call every service.
// Generated at build time (C++: cob_style async processors; Python: the
// bindings package). Never commit generated code.
//
// Every enum below has a C++ mirror with the same numbers in common/types.h
// (used by the protocol cores); common/wire.cc static_asserts each value and
// converts, and common/wire_test.cc fails when an enumerator is added here
// alone.

namespace cpp dtx.rpc
namespace py dtx_thrift

// A transaction id, chosen by the client (hi from a cryptographic random
// source, per-client counter lo) so a commit can be retried idempotently
// after an unknown outcome. A txid means one transaction: a Commit reusing a
// known txid with other reads or writes is refused with BAD_ARGUMENT ("txid
// reused with different content"), never given the other one's outcome.
struct TxId {
  1: required i64 hi,
  2: required i64 lo,
}

// Coordinator epoch. Every coordinator->participant call carries it;
// participants refuse calls stamped with an older epoch than they adopted.
typedef i64 Epoch

// One attempt of a transaction (docs/design.md "Attempts"): the epoch of the
// coordinator that started it and a sequence number growing within that
// epoch. A retry that runs PREPARE again is a new attempt with a new stamp.
// A participant applies an ABORT (or an ABORT answer to its QueryDecision)
// only to the attempt it holds under that stamp or an older one, so a late
// ABORT of an earlier attempt cannot drop a newer one. Unset: not stamped.
struct Attempt {
  1: required Epoch epoch,
  2: required i64 seq,
}

// Per-key version at a participant. 0: the key was never written. A deleted
// key keeps the version of its delete (a tombstone): Read returns found=false
// with that version, and a read set must send it back as read.
typedef i64 Version

enum AbortReason {
  CONFLICT = 1,                 // lock conflict or stale read at prepare
  PARTICIPANT_UNAVAILABLE = 2,  // a participant could not be reached / is suspected
  TIMEOUT = 3,                  // votes did not arrive in time
  CLIENT_ABORT = 4,             // the client asked for it
  COORDINATOR_FAILOVER = 5,     // undecided at a coordinator failover
}

enum ErrorCode {
  BAD_ARGUMENT = 1,   // empty/oversized key or value, malformed request
  UNKNOWN_TX = 2,     // no such transaction
  NOT_PRIMARY = 3,    // this coordinator is not the primary; see `primary`
  STALE_EPOCH = 4,    // the caller's epoch is older than the participant's
  UNAVAILABLE = 5,    // the node cannot serve now (recovering, overloaded, failed)
  TIMEOUT = 6,        // the operation did not finish in time
  INTERNAL = 7,
  WRONG_SHARD = 8,    // the key does not belong to this participant / shard map moved
  PERMISSION_DENIED = 9,  // the caller may not make this request (docs/design.md "Trust boundary")
}

exception DtxError {
  1: required ErrorCode code,
  2: required string message,
  3: optional string primary,   // with NOT_PRIMARY: host:port of the primary if known:
                                // its client address from a client listener, its peer address from a peer one
  // With STALE_EPOCH from a participant: its current epoch, and the coordinator
  // whose AdoptEpoch made it current (unset or empty: unknown).
  4: optional Epoch current_epoch,
  5: optional string epoch_owner,
  // With UNAVAILABLE from a node that sheds load (overloaded: docs/design.md
  // "Overload"): nothing was done for this request, the node is up, and
  // asking again sooner than this is unlikely to be served. Clients do not
  // retry such a refusal at once, nor elsewhere: they report it (a retryable
  // error) to the application, and hold back new transactions for a while.
  // (A refusal below the disk watermark does not carry it: it is not load,
  // and reads go on.)
  6: optional i32 retry_after_ms,
}

// What a node is: sent in heartbeats and status (common/types.h NodeRole
// mirrors it, with static_asserts in common/wire.cc).
enum NodeRole {
  PARTICIPANT = 1,
  PRIMARY = 2,     // the coordinator that decides (established at its epoch)
  STARTING = 3,    // a primary not yet established at its epoch: decides nothing yet
  BACKUP = 4,
}

struct ReadItem {
  1: required binary key,
  2: required Version version,  // the version Read returned (0: never written; a deleted key keeps its version)
}

struct WriteItem {
  1: required binary key,
  2: optional binary value,     // unset: delete the key
}

struct ReadResult {
  1: required bool found,
  2: required binary value,
  3: required Version version,
}

enum Vote {
  YES = 1,
  NO = 2,
  READ_ONLY = 3,   // nothing to write here; only for wholly read-only transactions
}

struct PrepareRequest {
  1: required TxId txid,
  2: required Epoch epoch,
  3: required list<ReadItem> reads,
  4: required list<WriteItem> writes,
  // The only participant of the transaction: validate, log and apply in one
  // step; the vote is the outcome (YES = committed).
  5: required bool one_phase,
  // The whole transaction writes nothing anywhere: a participant may vote
  // READ_ONLY and release its locks at once (see docs: read-only optimisation).
  6: required bool read_only_tx,
  7: optional string coordinator,  // peer host:port to ask with QueryDecision
  // The whole transaction's fingerprint (16 bytes: hi then lo, big-endian),
  // computed by the coordinator from the client's read and write sets
  // (docs/design.md "Transaction identity"). A participant that knows txid
  // with another fingerprint votes NO with txid_reused. Unset (an older
  // coordinator): not checked.
  8: optional binary fingerprint,
  // The attempt this PREPARE belongs to. A participant already prepared
  // under an older stamp moves the transaction to this one (durably) before
  // it votes YES again.
  9: optional Attempt attempt,
  // The client does not know how an earlier attempt ended
  // (CommitRequest.is_retry): a participant that may have committed this txid
  // and forgotten it answers UNKNOWN_TX, never a vote. Unset: a first attempt.
  10: optional bool is_retry,
}

struct PrepareResponse {
  1: required Vote vote,
  2: optional AbortReason reason,  // with NO
  3: optional string detail,       // with NO: which key, why
  // With NO: this participant knows txid as a transaction with another
  // fingerprint and prepared nothing; the coordinator answers the client
  // BAD_ARGUMENT ("txid reused with different content"), not ABORTED.
  4: optional bool txid_reused,
}

enum Decision {
  COMMIT = 1,
  ABORT = 2,
  UNKNOWN = 3,   // the asked node cannot tell (yet)
}

// How keys map to participants. scheme "hash": participant index =
// fnv1a64(key) % len(participants).
struct ShardMap {
  1: required i64 version,
  2: required string scheme,
  3: required list<string> participants,   // client host:port, index = shard number
}

struct CommitRequest {
  1: required TxId txid,
  2: required list<ReadItem> reads,
  3: required list<WriteItem> writes,
  4: required i64 shard_map_version,
  // Set by a client re-sending a txid whose earlier attempt's outcome it does
  // not know (transport failure, UNKNOWN answer, failover). The coordinator
  // then never answers ABORTED unless it can prove the transaction did not
  // commit (e.g. a restarted coordinator that fast-fails a suspected
  // participant answers UNKNOWN instead). Unset: a first attempt.
  5: optional bool is_retry,
}

enum Outcome {
  COMMITTED = 1,
  ABORTED = 2,
  UNKNOWN = 3,   // the outcome is not known here; ask again with the same txid
}

struct CommitResult {
  1: required Outcome outcome,
  2: optional AbortReason reason,   // with ABORTED
  3: optional string detail,
  // Per-phase latency measured by the coordinator that ran the commit (only
  // set by the attempt that ran it; unset for remembered outcomes):
  // prepare_us = first PREPARE sent -> last vote in (one-phase: the whole
  // one-phase Prepare); decision_us = DECISION record appended -> durable
  // locally and acknowledged by the backup (two-phase commits only). Phase 2
  // runs after the reply and is in neither.
  4: optional i64 prepare_us,
  5: optional i64 decision_us,
}

struct PeerStatus {
  1: required string name,
  2: required string address,
  3: required i64 heartbeat_age_ms,   // -1: never heard
  4: required bool suspected,
}

// One listener of a node (node/README.md "Listeners and access") and how it
// is secured. New with field 10 of NodeStatus, which is optional: a node that
// predates it leaves the field out and an older reader skips it, so the
// fields of this struct may be required.
struct ListenerStatus {
  1: required string name,                  // "client", "peer" or "admin"
  2: required string address,               // host:port it is bound to
  3: required bool tls,                     // TLS 1.3 (--certs-dir); false: plaintext (--insecure)
  4: required bool client_cert_required,    // TLS and a client certificate of the cluster CA required
}

struct NodeStatus {
  1: required string name,
  2: required NodeRole role,
  3: required Epoch epoch,
  4: required i64 uptime_ms,
  5: required i64 durable_lsn,
  6: required i64 in_flight,        // transactions in progress here
  7: required i64 in_doubt,         // prepared without a known outcome
  8: required list<PeerStatus> peers,
  9: optional map<string, i64> counters,
  10: optional list<ListenerStatus> listeners,  // client, peer, admin (in that order)
}

struct InDoubtTx {
  1: required TxId txid,
  2: required i64 age_ms,
  3: required string coordinator,
}

service Participant {
  // The client service of a participant (its client listener). The 2PC
  // calls are on its peer listener: ParticipantPeer below.
  // Reads the committed value and version. Waits (bounded) while a prepared
  // transaction holds the key for writing.
  ReadResult Read(1: binary key) throws (1: DtxError err),

  NodeStatus GetStatus(),
}

service Coordinator {
  // The client service of a coordinator (its client listener).
  ShardMap GetShardMap() throws (1: DtxError err),

  // Runs two-phase commit for the client's read and write sets. Idempotent
  // by txid: repeating a commit (same reads and writes) returns the recorded
  // outcome; the same txid with other content is BAD_ARGUMENT.
  CommitResult Commit(1: CommitRequest req) throws (1: DtxError err),

  // What became of txid as far as this coordinator remembers: COMMITTED,
  // ABORTED, or UNKNOWN (still running, never seen here, or forgotten; and
  // always from a coordinator that is not the established primary: ask the
  // primary). Side-effect free: it never decides or aborts anything.
  Outcome GetOutcome(1: TxId txid) throws (1: DtxError err),

  NodeStatus GetStatus(),
}

// ---- high availability: heartbeats, primary-backup replication, fencing ----
// (coordinator/README.md "Replication and failover"). The peer services
// (ParticipantPeer, CoordinatorPeer) are served on a node's peer listener
// only (--peer-listen); they extend nothing, so a client of Participant /
// Coordinator on the client listener cannot reach them (UNKNOWN_METHOD).

// One decision-log record (coordinator/log_format.md): WAL type byte + payload.
struct LogRecord {
  1: required i8 type,
  2: required binary payload,
}

struct ReplicateRequest {
  1: required Epoch epoch,          // the sender's (primary's) epoch
  2: required string primary,       // peer host:port of the sender
  3: required i64 generation,       // sync generation; a snapshot starts a new one
  4: required bool snapshot,        // `records` is a full snapshot of the open decisions
  5: required list<LogRecord> records,
}

struct ReplicateResponse {
  1: required i64 durable_lsn,      // every record of the request is durable up to here
}

struct HeartbeatRequest {
  1: required string sender,        // peer host:port of the sender
  2: required NodeRole role,        // the sender's
  3: required Epoch epoch,
}

struct HeartbeatResponse {
  1: required string name,
  // Unset: the node is shutting down and serves in no role.
  2: optional NodeRole role,
  3: required Epoch epoch,
  4: optional bool in_sync,         // a backup: it holds every decision of the primary
}

// ---- tracing (docs/observability.md): the txid is the trace id ----
// One span event a node recorded for a transaction (common/trace.h).
struct SpanEventMsg {
  1: required string event,         // received, locked, logged, synced, voted, decided, applied, acked, ...
  2: required i64 unix_ns,          // wall clock of the recording node
  3: required i64 mono_ns,          // CLOCK_MONOTONIC of the recording node
  4: required i64 seq,              // record order on that node
  5: optional string detail,
}

struct TraceResponse {
  1: required string name,          // the answering node
  2: required list<SpanEventMsg> events,  // in record order; empty: nothing (left) in the ring
}

// The peer service of a coordinator: called by the participants and the
// other coordinator. Every call but GetStatus throws PERMISSION_DENIED
// unless the caller is a configured peer (docs/design.md "Trust boundary").
service CoordinatorPeer {
  // The decision for txid: COMMIT if it was decided commit; ABORT if it
  // provably was never decided commit (presumed abort); UNKNOWN otherwise.
  // It aborts an undecided transaction: participants and the other
  // coordinator only. Clients use Coordinator.GetOutcome.
  // `fingerprint`: the asking participant's fingerprint of the transaction it
  // holds under txid (PrepareRequest.fingerprint; empty: not known, or an
  // older participant). A txid known here with another fingerprint is another
  // transaction: that content was never decided commit here, so the answer is
  // ABORT (UNKNOWN from a fenced coordinator), whatever txid's own outcome.
  // `attempt`: the attempt the participant holds (PrepareRequest.attempt).
  // The answer is about that attempt: ABORT when it is not running here or
  // an attempt after it is (a new attempt runs on). A participant applies an
  // ABORT answer only while it still holds that attempt.
  Decision QueryDecision(1: TxId txid, 2: binary fingerprint, 3: Attempt attempt)
      throws (1: DtxError err),
  // Primary -> backup: append `records` to the backup's log, reply once durable.
  // STALE_EPOCH if the backup knows a newer epoch than req.epoch (it promoted).
  ReplicateResponse Replicate(1: ReplicateRequest req) throws (1: DtxError err),
  // PERMISSION_DENIED unless the caller is a configured peer speaking for
  // itself (`sender`, docs/design.md "Trust boundary").
  HeartbeatResponse Heartbeat(1: HeartbeatRequest req) throws (1: DtxError err),
  NodeStatus GetStatus(),
}

// The peer service of a participant: called by the coordinators only.
service ParticipantPeer {
  // Phase 1 (or the whole commit with one_phase).
  PrepareResponse Prepare(1: PrepareRequest req) throws (1: DtxError err),

  // Phase 2. Returns once the decision is durable here and applied.
  // Idempotent: repeating a delivered decision is OK; an unknown txid is OK
  // for Abort (presumed abort) and for Commit of an already-finished tx.
  void Commit(1: TxId txid, 2: Epoch epoch) throws (1: DtxError err),
  // `attempt`: the attempt the coordinator ended (PrepareRequest.attempt).
  // A transaction prepared here under a newer attempt stays prepared.
  void Abort(1: TxId txid, 2: Epoch epoch, 3: Attempt attempt) throws (1: DtxError err),

  // PERMISSION_DENIED unless the caller is a configured peer speaking for
  // itself (`sender`, docs/design.md "Trust boundary").
  HeartbeatResponse Heartbeat(1: HeartbeatRequest req) throws (1: DtxError err),
  // A promoting coordinator (or a primary fencing out its backup) asks the
  // participant to adopt `epoch`: accepted (and persisted before the reply)
  // when epoch > the current epoch, or equal and asked by the same
  // coordinator that made it current; else STALE_EPOCH.
  void AdoptEpoch(1: Epoch epoch, 2: string coordinator) throws (1: DtxError err),

  NodeStatus GetStatus(),
}

// ---- the admin listener (both node kinds; bound to loopback by default) ----
// Every call but GetStatus throws PERMISSION_DENIED unless the caller is an
// admin (docs/design.md "Trust boundary").
service Admin {
  NodeStatus GetStatus(),
  // Arms a failpoint (docs/failpoints.md) on this node.
  void SetFailpoint(1: string name, 2: string action) throws (1: DtxError err),
  // The span events this node still holds for txid (bounded ring).
  TraceResponse GetTrace(1: TxId txid) throws (1: DtxError err),
  // A participant: its prepared transactions without a known outcome. A
  // coordinator: always empty (its open decisions are in GetStatus).
  list<InDoubtTx> ListInDoubt() throws (1: DtxError err),
}
