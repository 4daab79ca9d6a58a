// Node: what every dtx node runtime (coordinator/runtime.cc,
// participant/runtime.cc) needs around its protocol core, written once:
//   - serving: an RpcServer per listener, each building one handler per
//     connection that sees the caller (common/identity.h), and the
//     handlers' detach at shutdown (a request arriving later never reaches
//     a runtime that is going away);
//   - periodic timers, cancelled at shutdown;
//   - the Prometheus endpoint (docs/observability.md) over the node's
//     prometheus::Registry and the process metrics, and metrics_address();
//   - the listeners' own metrics (node/listener_metrics.h), in that registry;
//   - the span-event ring (common/trace.h) and Trace();
//   - DrainGuard, the re-entry guard of a runtime's Process().
// Fail-stop and failpoints are in node/fail_stop.h, the WAL appender in
// node/wal_appender.h, the lifetime token that callbacks posted back to the
// loop check in node/lifetime.h, the Thrift handler's common admin calls in
// node/handler.h.
//
// A runtime owns one Node and starts it in this order: fill the registry
// (metric families), Serve() its listeners (node/listeners.h
// ServeListeners), RunEvery() its timers, StartMetrics(). The tick that sets
// its own metrics calls UpdateMetrics() too. Its Shutdown() calls
// Node::Shutdown() first.
//
// Threading: every method runs on the loop thread (or before the loop runs),
// except trace() and Trace(), which are thread-safe.
// Lifetime: `loop` must outlive the Node. The registry lives as long as the
// Node; Shutdown() (also run by the destructor) stops the metrics endpoint,
// after which no scrape reads the registry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/event_loop.h"
#include "common/identity.h"
#include <prometheus/registry.h>

#include "common/process_stats.h"
#include "common/prometheus_support.h"
#include "common/rpc_server.h"
#include "common/status.h"
#include "common/tls.h"
#include "common/trace.h"
#include "common/types.h"
#include "node/listener_metrics.h"

namespace dtx::node {

// NODEDIR/admin.addr: "host:port" of the admin listener (Node::RecordAddress).
inline constexpr const char* kAdminAddressFile = "admin.addr";
// NODEDIR/peer.addr: "host:port" of the peer listener (the peer services,
// idl/dtx.thrift ParticipantPeer / CoordinatorPeer).
inline constexpr const char* kPeerAddressFile = "peer.addr";

struct NodeOptions {
  std::string name;  // e.g. "coordinator-0": log lines, GetTrace, RpcServer
  std::string dir;   // NODEDIR: metrics.addr is written here
  // Prometheus endpoint: GET /metrics on metrics_host:metrics_port (0: the
  // kernel picks), the bound address written to dir/metrics.addr. Off when
  // !metrics_enabled.
  bool metrics_enabled = true;
  std::string metrics_host = "127.0.0.1";
  int metrics_port = 0;
  // Span events kept (rounded up to a power of two, clamped to
  // [obs::kTraceEventsMin, obs::kTraceEventsMax]); 0 turns tracing off:
  // Trace() records nothing and GetTrace answers with no events. Events also
  // go to the log at level debug.
  size_t trace_events = obs::kTraceEventsMaxDefault;
  // SetFailpoint (node/handler.h) arms failpoints only when true: the flag
  // --enable-failpoints of both node binaries. Off by default, so a node
  // started by hand cannot be crashed or frozen by one admin call
  // (docs/failpoints.md).
  bool enable_failpoints = false;
  // Who is calling on a new connection, from what the transport established
  // (common/identity.h). Empty: the transport's identity as is. Tests set it
  // to forge identities (the handlers' access checks, node/access.h).
  std::function<PeerIdentity(const PeerIdentity&)> identify;
  // Server-side TLS context of every listener Serve() binds (node/security.h
  // NodeSecurity::server()); null: plaintext.
  std::shared_ptr<const TlsContext> tls = nullptr;
  // Every listener Serve() binds closes a connection idle this long, and
  // evicts the one idle longest when it is at its connection cap
  // (common/rpc_server.h "Idle connections"); 0: no timeout (eviction stays).
  // The flag --idle-timeout-ms (node/listeners.h kIdleTimeoutFlagHelp).
  int idle_timeout_ms = kRpcIdleTimeoutMs;
};

// The NodeOptions of a runtime's options (coordinator/runtime.h,
// participant/runtime.h RuntimeOptions: the same name, dir, metrics_,
// trace_events, enable_failpoints, identify and security fields); every
// listener gets the server TLS context of `security` (node/security.h).
// A runtime without an idle_timeout_ms field gets the default.
template <typename RuntimeOptions>
NodeOptions NodeOptionsOf(const RuntimeOptions& o) {
  NodeOptions n{.name = o.name,
                .dir = o.dir,
                .metrics_enabled = o.metrics_enabled,
                .metrics_host = o.metrics_host,
                .metrics_port = o.metrics_port,
                .trace_events = o.trace_events,
                .enable_failpoints = o.enable_failpoints,
                .identify = o.identify,
                .tls = o.security.server()};
  if constexpr (requires { o.idle_timeout_ms; }) n.idle_timeout_ms = o.idle_timeout_ms;
  return n;
}

// A listener Serve() bound, and how it is secured (GetStatus reports it:
// node/listeners.h ListenerStatuses).
struct ListenerInfo {
  std::string name;                   // "client", "peer" or "admin"
  std::string address;                // the bound "host:port"
  bool tls = false;                   // NodeOptions::tls set
  bool client_cert_required = false;  // TLS, and the context refuses clients without a certificate
};

// Something the node detaches from its runtime at shutdown (the Thrift
// handlers' shared target, node/handler.h).
class Detachable {
 public:
  virtual ~Detachable() = default;
  virtual void Detach() = 0;
};

// Process() of a runtime drains its core until the core has nothing left.
// Handling an output may feed the core again and call Process() from inside
// (a reply whose callback issues a new request, a failpoint, a synchronous
// stub error); that inner call must not start a second drain in the middle
// of the first: it returns at once and the outer loop drains what it would
// have. Usage:
//   void Process() {
//     DrainGuard::Scope scope = drain_.Enter();
//     if (!scope.entered()) return;
//     while (!(r = core.TakeReady()).empty()) { ...handle r... }
//   }
class DrainGuard {
 public:
  class Scope {
   public:
    explicit Scope(DrainGuard* guard) : guard_(guard->draining_ ? nullptr : guard) {
      if (guard_ != nullptr) guard_->draining_ = true;
    }
    ~Scope() {
      if (guard_ != nullptr) guard_->draining_ = false;
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    // False inside a drain already running: return, the outer one drains.
    bool entered() const { return guard_ != nullptr; }

   private:
    DrainGuard* guard_;
  };
  [[nodiscard]] Scope Enter() { return Scope(this); }
  bool draining() const { return draining_; }

 private:
  bool draining_ = false;
};

class Node {
 public:
  Node(EventLoop* loop, NodeOptions options);
  ~Node();  // Shutdown()
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  const std::string& name() const { return options_.name; }
  bool failpoints_enabled() const { return options_.enable_failpoints; }
  EventLoop* loop() const { return loop_; }
  // The loop's clock (milliseconds, monotonic): the cores' time input.
  uint64_t NowMs() const { return loop_->NowMs(); }

  // ---- serving ----
  // Binds host:port (0: the kernel picks) and serves each connection with
  // the processor `factory` builds for its caller (options.identify applied
  // first). `handlers` is what those processors' handlers forward to:
  // Shutdown() detaches it before closing the servers. May be called once
  // per listener (`listener`: "client", "peer", "admin"; the runtimes call
  // it through node/listeners.h ServeListeners); returns the bound
  // "host:port".
  Result<std::string> Serve(std::string_view listener, RpcProcessorFactory factory,
                            std::shared_ptr<Detachable> handlers, const std::string& host,
                            int port);
  // "host:port" of the first listener Serve() bound ("" before Serve).
  std::string address() const { return listeners_.empty() ? "" : listeners_.front().address; }
  // Every listener Serve() bound, in the order of the calls.
  const std::vector<ListenerInfo>& listeners() const { return listeners_; }
  // The replies `listener` has queued and not yet written are below its
  // byte budget (common/rpc_server.h "Byte budgets"). A runtime whose answer
  // comes later and may be large (a read that waited for the disk) answers
  // only while this holds. True for a listener not bound.
  bool ReplyRoom(std::string_view listener) const;
  // Writes "address\n" to NODEDIR/file_name atomically (temp file, rename),
  // so tools find a listener the kernel picked the port of (e.g. admin.addr).
  Status RecordAddress(const std::string& file_name, const std::string& address) const;

  // ---- timers ----
  // Runs `fn` every interval_ms on the loop until Shutdown().
  void RunEvery(uint64_t interval_ms, std::function<void()> fn);

  // ---- metrics ----
  // The runtime's metric families (prometheus-cpp), and the node's own (the
  // listeners': node/listener_metrics.h); each scrape also has the process
  // metrics (common/process_stats.h ProcessCollector).
  prometheus::Registry& registry() { return *registry_; }
  // Copies what every listener Serve() bound counted into its metrics. The
  // runtime calls it from its metrics tick; a no-op after Shutdown().
  void UpdateMetrics();
  // Starts the endpoint (a no-op when !metrics_enabled).
  Status StartMetrics();
  // "host:port" of the metrics endpoint, "" when off.
  std::string metrics_address() const;
  // Its port, 0 when off.
  uint16_t metrics_port() const;

  // ---- tracing ----
  bool tracing() const { return tracing_; }
  obs::TraceRing& trace() { return trace_; }
  const obs::TraceRing& trace() const { return trace_; }
  // Records a span event for txid when tracing is on. `event` must have
  // static storage duration (a literal, or an obs::span constant).
  void Trace(const TxId& txid, const char* event, std::string_view detail = {}) {
    if (tracing_) trace_.Record(txid, event, detail);
  }

  // Stops the metrics endpoint, detaches the handlers, closes the servers and
  // cancels the timers. True the first time, false afterwards (safe to call
  // twice).
  bool Shutdown();
  bool shut_down() const { return shut_down_; }

 private:
  EventLoop* const loop_;
  const NodeOptions options_;
  std::vector<std::shared_ptr<Detachable>> handlers_;
  std::vector<std::unique_ptr<RpcServer>> servers_;
  std::vector<ListenerInfo> listeners_;
  // RLIMIT_NOFILE after raising it; divided among the listeners.
  static constexpr size_t kListenersPerNode = 3;  // client, peer, admin
  uint64_t fd_limit_ = 0;
  std::vector<TimerId> timers_;
  bool shut_down_ = false;
  const bool tracing_;
  obs::TraceRing trace_;
  // Shared with the endpoint's exposer, which holds weak references.
  const std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  const std::shared_ptr<obs::ProcessCollector> process_ = std::make_shared<obs::ProcessCollector>();
  // Declared after servers_ and registry_: destroyed before the servers it
  // reads and the registry that holds its series.
  ListenerMetrics listener_metrics_{*registry_};
  // Declared last: destroyed (stopped) before the registry its scrapes read.
  std::unique_ptr<obs::MetricsEndpoint> metrics_endpoint_;
};

// The Start() of a runtime, the same for every node type: builds its Impl
// from `args` and runs Impl::Init(); when that fails, Impl::Shutdown() (so
// nothing Init opened keeps serving) and the error.
template <typename Impl, typename... Args>
Result<std::unique_ptr<Impl>> StartImpl(Args&&... args) {
  auto impl = std::make_unique<Impl>(std::forward<Args>(args)...);
  Status s = impl->Init();
  if (!s.ok()) {
    impl->Shutdown();
    return s;
  }
  return impl;
}

}  // namespace dtx::node
