// The coordinator node's runtime: drives an HaCore (coordinator/ha_core.h:
// the 2PC CoordinatorCore plus failover, replication and fencing, all pure)
// with real I/O - it is plumbing: timers, RPC, WAL.
//
// It owns the decision log (wal::Log in NODEDIR/wal, group commit), the
// listeners - client (Coordinator), peer (CoordinatorPeer) and admin (Admin),
// whose handlers convert Thrift <-> core types at the edge - one
// ParticipantPeerStub per participant peer address, the HA stubs
// (CoordinatorPeer to the other coordinator, ParticipantPeer for heartbeats
// and AdoptEpoch) and a periodic tick timer.
// The glue between HaCore and all of that is a CoordinatorDriver
// (coordinator/driver.h, also run by tests/sim): after every input it drains
// the HaCore's HaReady in the order it requires: append records (reopening
// the log into a fresh mirror on reload_log), then released decisions
// (failpoint), then messages, probes, Replicate and AdoptEpoch calls, then
// replies. The runtime (Runtime::Impl::Glue in runtime.cc) is the driver's
// CoordinatorIo (stubs, node::WalAppender, the loop's clock, node::FailStop)
// and CoordinatorHooks (metrics, phase timings, tracing). A
// forced record is reported to the core (OnPersisted) only from the WAL's
// durable callback, Post()ed to the loop, i.e. after its fdatasync returned 0.
//
// Failpoints (common/failpoint.h), evaluated on the loop thread:
//   coordinator.votes.after_all, coordinator.decision.before_log
//       before a DECISION record is appended (all votes are in);
//   coordinator.decision.after_log
//       when the DECISION is durable, before anyone hears of it;
//   coordinator.phase2.after_first_commit
//       right after the first COMMIT of a transaction was handed to its
//       channel, before the other COMMITs;
//   coordinator.end.before_log  before an END record is appended.
// `crash` exits at once; `sleep` blocks the loop; `error` is fail-stop here
// (the node logs it and exits with status 1), as the coordinator has no
// other safe way to fail a step of the commit path.
//
// A WAL failure (Append error, durable callback with an error, failed
// truncation) logs and exits the process with status 1: it never carries on
// (node/fail_stop.h).
//
// What is common to both node types - serving, handler detach, the lifetime
// token, the WAL appender, fail-stop and failpoints, the metrics endpoint
// and the trace ring - is node/ (node/node.h); this runtime adds the
// coordinator's plumbing. The header shows only what main.cc and tests use:
// the Thrift handler, the stubs and the metrics live in runtime.cc.
//
// Threading: every method runs on the loop thread (see common/event_loop.h);
// only the WAL's durable callbacks run on the WAL flusher thread, and they
// only Post() to the loop (or exit the process).
// Lifetime: `loop` must outlive the Runtime. Call Shutdown() (on the loop
// thread) before destroying it; the destructor then closes the WAL (which
// syncs whatever is queued).
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
#include "coordinator/core.h"
#include "coordinator/ha_core.h"
#include "node/access.h"
#include "node/disk_guard.h"
#include "node/security.h"
#include "wal/wal.h"

namespace dtx {
class EventLoop;
}  // namespace dtx

namespace dtx::coordinator {

// Heartbeats, failure detection and primary-backup replication
// (coordinator/README.md "Replication and failover").
struct HaOptions {
  Role role = Role::kPrimary;
  // Peer host:port of the other coordinator (its peer listener); empty: this
  // one runs alone.
  std::string peer;
  // Client host:port of the other coordinator: the NOT_PRIMARY hint a client
  // of this node's client listener gets (the peer listener's callers get
  // `peer`). Empty: unknown, client refusals carry no hint.
  std::string peer_client;
  uint64_t heartbeat_ms = kHeartbeatIntervalMsDefault;
  // suspect_after_ms, mode, phi_threshold; heartbeat_interval_ms is set
  // from heartbeat_ms.
  FailureDetectorOptions detector;
  // One Replicate call; past it the backup counts as lost.
  uint64_t replicate_timeout_ms = 1000;
  uint64_t resync_after_records = kResyncAfterRecords;
};

struct RuntimeOptions {
  std::string name = "coordinator-0";
  std::string listen_host = "127.0.0.1";
  int listen_port = 0;  // 0: the kernel picks one; see Runtime::address()
  // The admin listener (idl/dtx.thrift service Admin): SetFailpoint,
  // GetTrace, ListInDoubt. Its bound address is written to NODEDIR/admin.addr.
  std::string admin_host = "127.0.0.1";
  int admin_port = 0;
  // The peer listener (idl/dtx.thrift service CoordinatorPeer: what the
  // participants and the other coordinator call); the client listener
  // serves only Coordinator. Empty host: listen_host. Its bound address is
  // written to NODEDIR/peer.addr; it is this node's address in the protocol
  // (PrepareRequest.coordinator, Heartbeat sender, Replicate primary).
  std::string peer_host;
  int peer_port = 0;
  std::string dir;  // NODEDIR: the WAL lives in dir/wal
  // Peer host:port (ParticipantPeer) per shard; copied into core.participants.
  std::vector<std::string> participants;
  // Client host:port (Participant) per shard, the same order: the shard map
  // clients get (GetShardMap). Empty: the shard map lists `participants`
  // (nodes serving both services on one address, e.g. tests/fake_node.cc).
  std::vector<std::string> participant_clients;
  // Access (node/access.h, docs/design.md "Trust boundary"): secure: only
  // the participants (kind participant) and the other coordinator (kind
  // coordinator) in named_peers may speak the peer protocol here (Replicate
  // and Heartbeat only that coordinator, for its own configured address),
  // only an admin may arm failpoints or read traces. !secure: every caller
  // may do everything (until TLS authenticates callers).
  bool secure = false;
  std::vector<node::ConfiguredPeer> named_peers;
  // TLS on every listener and node-to-node channel, or plaintext
  // (node/security.h; the default). With TLS the access policy is secure
  // whatever `secure` says: callers are authenticated.
  node::NodeSecurity security;
  // Who is calling on a new connection (node/node.h NodeOptions::identify);
  // empty: the transport's identity. Tests forge identities with it.
  std::function<PeerIdentity(const PeerIdentity&)> identify;
  // Timeouts, limits; `participants` and `self_address` are filled in here.
  CoreOptions core;
  wal::Options wal;
  HaOptions ha;
  // Prometheus endpoint (docs/observability.md): GET /metrics on
  // metrics_host:metrics_port (0: the kernel picks), the bound address
  // written to NODEDIR/metrics.addr. Off when !metrics_enabled.
  bool metrics_enabled = true;
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 0;
  // Per-transaction span events (common/trace.h, GetTrace): the ring's size
  // (node/node.h NodeOptions::trace_events); 0 turns tracing off. Events
  // also go to the log at level debug.
  size_t trace_events = obs::kTraceEventsMaxDefault;
  // SetFailpoint and DTX_FAILPOINTS are honoured only when true
  // (node/node.h NodeOptions::enable_failpoints; --enable-failpoints).
  bool enable_failpoints = false;
  // Every listener closes a connection idle this long (node/node.h
  // NodeOptions::idle_timeout_ms; --idle-timeout-ms); 0: never.
  int idle_timeout_ms = kRpcIdleTimeoutMs;
  // Full disk (node/disk_guard.h): below disk_free_min_bytes free in `dir`'s
  // filesystem, a client's first Commit that writes is refused (UNAVAILABLE,
  // retryable) and the ballast file of disk_ballast_bytes is released; 0: off.
  uint64_t disk_free_min_bytes = node::kDiskFreeMinMbDefault << 20;
  uint64_t disk_ballast_bytes = node::kDiskBallastMbDefault << 20;
  // Overload (coordinator/admission.h; --overload-queue-ms): the limit on
  // client Commits in flight shrinks while they take longer than this on
  // average; 0: no adaptive limit (only core.in_flight_tx_max).
  uint64_t overload_queue_target_us = 50'000;
};

class Runtime {
 public:
  // Binds the server, opens the WAL (replaying it into the core) and starts
  // the core (re-sending COMMIT for decisions without END). Requests are
  // served once the loop runs. Loop thread (or before the loop runs).
  static Result<std::unique_ptr<Runtime>> Start(EventLoop* loop, RuntimeOptions options);

  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Stops serving: closes the server and every participant channel, cancels
  // timers. Pending client requests get no reply (their connections close).
  // Safe to call twice.
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

}  // namespace dtx::coordinator
