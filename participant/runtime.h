// The participant node's runtime: drives a participant Core with real I/O.
//
// It owns the WAL (wal::Log in NODEDIR/wal, group commit), the LevelDB store
// (NODEDIR/data), the listeners - client (Participant), peer (ParticipantPeer)
// and admin (Admin) - whose handlers forward to the ParticipantDriver
// (participant/driver.h: Thrift <-> core conversions, the drain of the core's
// Ready in the order the core requires - append records, then send messages,
// then deliver replies - the in-doubt fall-back's calls, the failpoints),
// CoordinatorPeerStubs for QueryDecision / GetStatus, and a periodic tick timer.
// A record is reported to the core (OnPersisted) only from the WAL's durable
// callback, Post()ed to the loop, i.e. after its fdatasync returned 0.
//
// Failpoints (common/failpoint.h), evaluated by the driver on the loop thread:
//   participant.prepare.before_log   before a PREPARE is appended
//   participant.prepare.after_log    PREPARE durable, before the core hears it
//   participant.prepare.after_vote   right after a YES vote was handed to the
//                                    server (also a one-phase YES = committed)
//   participant.commit.before_log    before a COMMIT is appended (2PC and 1PC)
//   participant.commit.after_log     COMMIT durable, before it is applied
//   participant.commit.after_apply   writes applied (queued for the store
//                                    worker, read from its overlay), locks
//                                    not yet released, nothing acked
// and on the store worker thread:
//   participant.store.apply          before a batch goes to LevelDB
//   participant.commit.before_ack    before a Commit ack is sent
// `crash` exits at once (86); `sleep` blocks the loop. `error` at a *_log
// point or at after_apply is fail-stop (log, exit 1): the participant has no
// safe way to skip a step of the commit path. `error` at before_ack answers
// that Commit with DtxError INTERNAL instead of the ack (the commit itself is
// done); at after_vote it is logged and ignored (the vote is already sent).
//
// A WAL failure (Append error, durable callback with an error) and a store
// failure after a durable COMMIT log and exit the process with status 1
// (node/fail_stop.h).
//
// Checkpoints (participant/README.md "Checkpoints"): every
// checkpoint_interval_records appended records or checkpoint_interval_ms, the
// loop thread takes Core::TakeCheckpoint() and queues it on the store worker
// thread (participant/async_store.h RunAfter: behind the committed writes
// queued before it), which makes LevelDB durable up to it and stores it
// (LevelStore::WriteCheckpoint), then deletes the WAL segments below its
// retain_from (wal::Log::TruncateBefore), and posts back. One at a time; the
// loop never waits for it. A failed checkpoint write stops the process like
// a failed WAL sync. On start the last checkpoint is restored before replay.
// A clean shutdown writes a last checkpoint, so the next start replays
// little.
//
// Tracing (docs/observability.md "Span events on each node"): with
// options.trace_events > 0 the runtime records span events of each txid in
// trace_ (received, locked / conflict, logged, synced, voted, decided,
// applied, acked, refused, in_doubt) and, at --log-level debug, in node.log;
// GetTrace answers from it. `synced` is recorded on the WAL flusher thread
// (TraceRing::Record is thread-safe), everything else on the loop thread.
//
// Threading: every method runs on the loop thread (common/event_loop.h); the
// WAL's durable callbacks run on its flusher thread and only Post() to the
// loop (or exit the process); the store worker (participant/async_store.h)
// writes LevelDB - applies, LevelStore::WriteCheckpoint - and
// wal::Log::TruncateBefore (thread-safe), and Post()s.
// What is common to both node types - serving, handler detach, the lifetime
// token, the WAL appender, fail-stop and failpoints, the metrics endpoint
// and the trace ring - is node/ (node/node.h); this runtime adds the
// participant's plumbing. The header shows only what main.cc and tests use:
// the Thrift handler, the stubs, the store and the metrics live in
// runtime.cc; tests talk to the node over loopback like any client.
//
// Lifetime: `loop` must outlive the Runtime. Call Shutdown() (loop thread)
// before destroying it; the destructor closes the WAL (syncing what is
// queued) and LevelDB.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/failure_detector.h"
#include "common/identity.h"
#include "common/rpc_server.h"
#include "common/status.h"
#include "common/trace.h"
#include "node/access.h"
#include "node/disk_guard.h"
#include "node/security.h"
#include "participant/core.h"
#include "wal/wal.h"

namespace dtx {
class EventLoop;
}  // namespace dtx

namespace dtx::participant {

// Checkpoint triggers (whichever comes first, and only when the checkpoint
// would move forward).
inline constexpr uint64_t kCheckpointIntervalRecordsDefault = 50000;
inline constexpr uint64_t kCheckpointIntervalMsDefault = 10000;

struct RuntimeOptions {
  std::string name = "participant-0";
  std::string listen_host = "127.0.0.1";
  int listen_port = 0;  // 0: the kernel picks one; see Runtime::address()
  // The admin listener (idl/dtx.thrift service Admin): SetFailpoint,
  // GetTrace, ListInDoubt. Its bound address is written to NODEDIR/admin.addr.
  std::string admin_host = "127.0.0.1";
  int admin_port = 0;
  // The peer listener (idl/dtx.thrift service ParticipantPeer: what the
  // coordinators call); the client listener serves only Participant (Read,
  // GetStatus). Empty host: listen_host. Its bound address is written to
  // NODEDIR/peer.addr.
  std::string peer_host;
  int peer_port = 0;
  std::string dir;          // NODEDIR: wal/ and data/ live here
  std::string coordinator;  // peer host:port asked with QueryDecision by default
  // Every coordinator's peer address (primary and backup; may include
  // `coordinator`): when the coordinator named in a PREPARE cannot answer, an in-doubt
  // transaction is asked of whichever of these - or of the coordinators that
  // send heartbeats - is primary at the transaction's epoch or later.
  std::vector<std::string> coordinators;
  // Access (node/access.h, docs/design.md "Trust boundary"): secure: only
  // the coordinators in coordinator_peers (by certificate name, and for the
  // address an AdoptEpoch or Heartbeat speaks for) may drive this node, only
  // an admin may arm failpoints or list in-doubt transactions. !secure:
  // every caller may do everything (until TLS authenticates callers).
  bool secure = false;
  std::vector<node::ConfiguredPeer> coordinator_peers;
  // TLS on every listener and node-to-node channel, or plaintext
  // (node/security.h; the default). With TLS the access policy is secure
  // whatever `secure` says: callers are authenticated.
  node::NodeSecurity security;
  // Who is calling on a new connection (node/node.h NodeOptions::identify);
  // empty: the transport's identity. Tests forge identities with it.
  std::function<PeerIdentity(const PeerIdentity&)> identify;
  // A coordinator not heard from (heartbeat or call) for this long shows as
  // suspected in GetStatus.
  uint64_t coordinator_suspect_after_ms = kSuspectAfterMsDefault;  // common/failure_detector.h
  CoreOptions core;
  wal::Options wal;
  uint64_t checkpoint_interval_records = kCheckpointIntervalRecordsDefault;  // 0: not by count
  uint64_t checkpoint_interval_ms = kCheckpointIntervalMsDefault;            // 0: not by time
  bool checkpoint_on_shutdown = true;
  // Full disk (node/disk_guard.h): below disk_free_min_bytes free in `dir`'s
  // filesystem, PREPAREs with writes are refused (UNAVAILABLE, retryable)
  // and the ballast file of disk_ballast_bytes is released; 0: off.
  uint64_t disk_free_min_bytes = node::kDiskFreeMinMbDefault << 20;
  uint64_t disk_ballast_bytes = node::kDiskBallastMbDefault << 20;
  // Prometheus endpoint (docs/observability.md): GET /metrics on
  // metrics_host:metrics_port (0: the kernel picks), the bound address
  // written to NODEDIR/metrics.addr. Off when !metrics_enabled.
  bool metrics_enabled = true;
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 0;
  // Span events kept in the trace ring (node/node.h NodeOptions::
  // trace_events). 0: tracing off, nothing recorded and GetTrace answers
  // with no events.
  size_t trace_events = obs::kTraceEventsMaxDefault;
  // SetFailpoint and DTX_FAILPOINTS are honoured only when true
  // (node/node.h NodeOptions::enable_failpoints; --enable-failpoints).
  bool enable_failpoints = false;
  // Every listener closes a connection idle this long (node/node.h
  // NodeOptions::idle_timeout_ms; --idle-timeout-ms); 0: never.
  int idle_timeout_ms = kRpcIdleTimeoutMs;
};

class Runtime {
 public:
  // Opens LevelDB and the WAL (replaying it into the core), starts the core,
  // binds the server. Requests are served once the loop runs. Loop thread (or
  // before the loop runs).
  static Result<std::unique_ptr<Runtime>> Start(EventLoop* loop, RuntimeOptions options);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Stops serving: closes the server and the coordinator channels, cancels
  // the tick. Requests in flight get no reply. Safe to call twice.
  void Shutdown();

  // "host:port" the client listener is bound to.
  std::string address() const;
  // "host:port" of the metrics endpoint, "" when off.
  std::string metrics_address() const;
  // "host:port" of the admin listener.
  std::string admin_address() const;
  // "host:port" of the peer listener.
  std::string peer_address() const;

  // The implementation (runtime.cc).
  struct Impl;

 private:
  explicit Runtime(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dtx::participant
