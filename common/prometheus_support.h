// What dtx adds around prometheus-cpp (Debian prometheus-cpp-dev): the
// library owns the registry, the counters, gauges and histograms, the text
// serialisation and the HTTP exposer; this header holds the bucket layouts the
// nodes use and MetricsEndpoint, a prometheus::Exposer that binds HOST:PORT
// (port 0 = the kernel picks), reports what it bound, and stops within
// milliseconds. How a runtime wires these in: docs/observability.md.
//
// Cost on the hot path is prometheus-cpp's own (version 1.0.1):
// Counter::Increment and Gauge::Set/Increment are a compare-exchange loop on
// an std::atomic<double>, no lock, no allocation; Histogram::Observe is a
// binary search over the bounds, then an uncontended std::mutex around two
// such atomic adds (the lock makes a scrape see _count and the buckets of the
// same observations). Family::Add (finding or creating a labelled child)
// locks, allocates and builds the child even when it exists: call it at
// start-up and keep the reference.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>

#include "common/status.h"

namespace prometheus {
class Exposer;
}

namespace dtx::obs {

// Bucket boundaries in seconds for latencies: 50us .. 10s, 1-2.5-5 steps
// (the dtx_*_seconds histograms of docs/observability.md).
std::vector<double> LatencyBucketsSeconds();
// start, start*factor, ... (`count` bounds); start > 0, factor > 1,
// 1 <= count <= kHistogramBucketsMax.
std::vector<double> ExponentialBuckets(double start, double factor, size_t count);
inline constexpr size_t kHistogramBucketsMax = 64;

// Advances counter `c`, which follows a running total kept elsewhere (a
// core's or a log's stats), by what `total` grew since the last call
// (`seen`: the total then; updated), times `unit`. A total that went down
// restarted from 0 (a log opened anew, a core rebuilt): all of it is new, so
// the counter never goes down.
inline void AdvanceCounter(prometheus::Counter& c, uint64_t& seen, uint64_t total,
                           double unit = 1) {
  const uint64_t delta = total >= seen ? total - seen : total;
  if (delta != 0) c.Increment(static_cast<double>(delta) * unit);
  seen = total;
}

// prometheus::Exposer's civetweb worker threads (each serves one scrape at
// a time) and the request timeout of the endpoint.
inline constexpr int kMetricsHttpThreads = 2;
inline constexpr int kMetricsHttpRequestTimeoutMs = 5000;

// GET /metrics on host:port: the text format of every collectable given to
// Start(), serialised by prometheus::TextSerializer (plus the exposer's own
// exposer_* families), on kMetricsHttpThreads civetweb threads.
//
// Threads: a scrape runs each collectable's Collect() on a civetweb worker
// thread, never on the node's event loop.
// Lifetime: the exposer keeps weak references; a collectable destroyed
// before Stop() just drops out of the scrapes. Stop() (also run by the
// destructor) closes the socket and joins civetweb's threads; after it no
// Collect() runs from this endpoint. Start() and Stop() are not thread-safe
// with each other; port() and address() are.
class MetricsEndpoint {
 public:
  // InvalidArgument for a host that is not a plain name or IPv4 address
  // (civetweb would read ',' or a trailing 's'/'r' in it as its own syntax);
  // Unavailable when host:port cannot be bound.
  static Result<std::unique_ptr<MetricsEndpoint>> Start(
      const std::vector<std::weak_ptr<prometheus::Collectable>>& collectables,
      const std::string& host, uint16_t port);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  uint16_t port() const { return port_; }
  // "host:port" as bound.
  std::string address() const { return host_ + ":" + std::to_string(port_); }
  // Idempotent.
  void Stop();

 private:
  MetricsEndpoint(std::string host, std::unique_ptr<prometheus::Exposer> exposer);

  const std::string host_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  uint16_t port_ = 0;
};

// The endpoint of a node whose directory is `node_dir`: removes a stale
// node_dir/metrics.addr (it must never point at another process); unless
// `enabled` is false, starts a MetricsEndpoint on host:port (0: any free
// port) and writes "host:port" with the bound port to node_dir/metrics.addr
// atomically (temp file, then rename) for dtxctl to find. nullptr when
// disabled.
Result<std::unique_ptr<MetricsEndpoint>> StartNodeMetricsEndpoint(
    const std::vector<std::weak_ptr<prometheus::Collectable>>& collectables, bool enabled,
    const std::string& host, int port, const std::string& node_dir);

}  // namespace dtx::obs
