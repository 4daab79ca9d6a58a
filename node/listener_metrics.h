// The metrics of a node's listeners (docs/observability.md "Listener
// metrics"): for every RpcServer the node serves (Node::Serve in node/node.h:
// client, peer, admin), each RpcServerStats counter (common/rpc_server.h) as
// a dtx_rpc_*_total counter and what it holds now (open connections, queued
// reply bytes, reserved frame bytes) as dtx_rpc_* gauges, every series
// labelled with the listener (listener="client", "peer" or "admin").
//
// The servers count on the loop thread, and RpcServer::stats() and the
// other accessors may be read only there; a scrape runs on a civetweb
// thread. So the values are copied as the WAL totals are
// (common/wal_metrics.h): Update(), run from the runtime's metrics tick
// (Node::UpdateMetrics), advances each counter by what its RpcServerStats
// field grew since the last Update() and sets the gauges; a scrape reads
// only prometheus-cpp's atomics.
//
// Threading: loop thread only (or before the loop runs).
// Lifetime: the registry must outlive the ListenerMetrics; a server given to
// Add() must stay alive for every later Update() (Node keeps its servers as
// long as itself).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string_view>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include "common/rpc_server.h"

namespace dtx::node {

// One RpcServerStats field and the counter family that exports it.
struct RpcServerCounter {
  const char* name;  // the family: dtx_rpc_..._total
  const char* help;
  uint64_t RpcServerStats::*field;
};

// Every RpcServerStats field, one line each: a field added to RpcServerStats
// gets its line here (the static_assert below stops the build until it has).
inline constexpr RpcServerCounter kRpcServerCounters[] = {
    {"dtx_rpc_connections_accepted_total", "Connections accepted by this listener.",
     &RpcServerStats::connections_accepted},
    {"dtx_rpc_connections_rejected_total",
     "Connections refused at the listener's connection cap, none idle to evict.",
     &RpcServerStats::connections_rejected},
    {"dtx_rpc_connections_evicted_total",
     "Idle connections closed at the listener's connection cap to serve a new one.",
     &RpcServerStats::connections_evicted},
    {"dtx_rpc_connections_closed_idle_total",
     "Connections closed after being idle for the idle timeout (--idle-timeout-ms).",
     &RpcServerStats::connections_closed_idle},
    {"dtx_rpc_connections_closed_bad_input_total",
     "Connections closed for bad input (a bad frame, an unparsable message, an unknown method).",
     &RpcServerStats::connections_closed_bad_input},
    {"dtx_rpc_connections_closed_slow_total",
     "Connections closed because a frame did not arrive whole in time (slow sender).",
     &RpcServerStats::connections_closed_slow},
    {"dtx_rpc_connections_closed_slow_reader_total",
     "Connections closed because a reply write made no progress in time (slow reader).",
     &RpcServerStats::connections_closed_slow_reader},
    {"dtx_rpc_reads_paused_reply_budget_total",
     "Times a connection stopped taking frames because its replies, or the listener's, reached "
     "their byte budget.",
     &RpcServerStats::reads_paused_reply_budget},
    {"dtx_rpc_reads_paused_frame_budget_total",
     "Times a connection stopped taking frames because a large frame waited for the listener's "
     "frame byte reservation.",
     &RpcServerStats::reads_paused_frame_budget},
    {"dtx_rpc_parse_yields_total",
     "Times a connection yielded the loop to others with frames still buffered (fair service).",
     &RpcServerStats::parse_yields},
    {"dtx_rpc_frames_received_total", "Request frames received.", &RpcServerStats::frames_received},
    {"dtx_rpc_replies_sent_total", "Replies written to their connections.",
     &RpcServerStats::replies_sent},
    {"dtx_rpc_reply_writes_total",
     "Socket writes of replies (one per connection per loop turn, however many replies).",
     &RpcServerStats::reply_writes},
    {"dtx_rpc_replies_dropped_total", "Replies dropped because their connection had closed.",
     &RpcServerStats::replies_dropped},
    {"dtx_rpc_tls_handshakes_total", "TLS handshakes completed.", &RpcServerStats::tls_handshakes},
    {"dtx_rpc_tls_handshakes_failed_total",
     "TLS handshakes refused, timed out or abandoned (the connection closed).",
     &RpcServerStats::tls_handshakes_failed},
};
inline constexpr size_t kRpcServerCountersCount = std::size(kRpcServerCounters);
static_assert(sizeof(RpcServerStats) == kRpcServerCountersCount * sizeof(uint64_t),
              "every RpcServerStats field needs its line in kRpcServerCounters");

// What an RpcServer holds now, and the gauge family that exports it.
struct RpcServerGauge {
  const char* name;  // the family: dtx_rpc_...
  const char* help;
  size_t (RpcServer::*value)() const;
};

// One line per RpcServer accessor worth a gauge.
inline constexpr RpcServerGauge kRpcServerGauges[] = {
    {"dtx_rpc_connections_open", "Connections open on this listener.",
     &RpcServer::connection_count},
    {"dtx_rpc_reply_bytes_queued",
     "Bytes of replies queued or being written on this listener's connections.",
     &RpcServer::reply_bytes_queued},
    {"dtx_rpc_frame_bytes_reserved", "Bytes reserved for large frames arriving on this listener.",
     &RpcServer::frame_bytes_reserved},
};
inline constexpr size_t kRpcServerGaugesCount = std::size(kRpcServerGauges);

class ListenerMetrics {
 public:
  // Registers the families (no series until Add()).
  explicit ListenerMetrics(prometheus::Registry& registry);
  ListenerMetrics(const ListenerMetrics&) = delete;
  ListenerMetrics& operator=(const ListenerMetrics&) = delete;

  // Adds the series of `server` with label listener=`listener`; at most one
  // server per listener name.
  void Add(std::string_view listener, const RpcServer& server);
  // Advances every counter to its server's RpcServerStats and sets the gauges.
  void Update();

 private:
  struct Listener {
    const RpcServer* server;
    std::array<prometheus::Counter*, kRpcServerCountersCount> counters;
    // The RpcServerStats values the counters were last advanced to.
    std::array<uint64_t, kRpcServerCountersCount> seen;
    std::array<prometheus::Gauge*, kRpcServerGaugesCount> gauges;
  };

  std::array<prometheus::Family<prometheus::Counter>*, kRpcServerCountersCount> counters_;
  std::array<prometheus::Family<prometheus::Gauge>*, kRpcServerGaugesCount> gauges_;
  std::vector<Listener> listeners_;  // Node::kListenersPerNode
};

}  // namespace dtx::node
