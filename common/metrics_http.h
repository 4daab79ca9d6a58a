// MetricsHttpServer: serves a Registry over HTTP with civetweb (Debian's
// libcivetweb), for Prometheus to scrape:
//   GET /metrics  -> 200, Content-Type "text/plain; version=0.0.4", body
//                    Registry::Serialize()
//   HEAD /metrics -> 200, headers only
//   other methods on /metrics -> 405; any other path -> 404.
//
// Threads: requests are served on civetweb's own worker threads
// (kMetricsHttpThreads of them), never on the node's event loop. A scrape
// therefore reads the metric atomics and runs gauge callbacks on a civetweb
// thread: callbacks must be thread-safe (see common/metrics.h).
//
// Ownership: the Registry must outlive the server. Stop() (also run by the
// destructor) closes the listening socket and joins civetweb's threads; after
// it returns no callback of the registry runs from this server, so objects
// that gauge callbacks capture may be destroyed after Stop(). Start() and
// Stop() are not thread-safe with each other; port() is.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "common/status.h"

struct mg_context;
struct mg_connection;

namespace dtx::obs {

class Registry;

inline constexpr int kMetricsHttpThreads = 2;
inline constexpr int kMetricsHttpRequestTimeoutMs = 5000;

class MetricsHttpServer {
 public:
  // Listens on host:port (port 0: the kernel picks one; see port()).
  // Unavailable if the port cannot be bound, InvalidArgument for a bad host.
  static Result<std::unique_ptr<MetricsHttpServer>> Start(const Registry* registry,
                                                          const std::string& host, uint16_t port);
  ~MetricsHttpServer();
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The bound port.
  uint16_t port() const { return port_; }
  // "host:port" as listened on.
  std::string address() const { return host_ + ":" + std::to_string(port_); }
  // Idempotent.
  void Stop();

 private:
  MetricsHttpServer(const Registry* registry, std::string host)
      : registry_(registry), host_(std::move(host)) {}
  static int HandleRequest(mg_connection* conn, void* self);

  const Registry* const registry_;
  const std::string host_;
  mg_context* ctx_ = nullptr;
  uint16_t port_ = 0;
};

// The endpoint of a node whose directory is `node_dir`: removes a stale
// node_dir/metrics.addr (it must never point at another process); unless
// `enabled` is false, listens on host:port (0: any free port) and writes
// "host:port" with the bound port to node_dir/metrics.addr atomically (temp
// file, then rename) for dtxctl to find. nullptr when disabled.
Result<std::unique_ptr<MetricsHttpServer>> StartNodeMetricsEndpoint(const Registry* registry,
                                                                    bool enabled,
                                                                    const std::string& host,
                                                                    int port,
                                                                    const std::string& node_dir);

}  // namespace dtx::obs
