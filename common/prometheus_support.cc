#include "common/prometheus_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

#include <prometheus/exposer.h>

#include "common/check.h"

namespace dtx::obs {

std::vector<double> LatencyBucketsSeconds() {
  return {50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
          50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};
}

std::vector<double> ExponentialBuckets(double start, double factor, size_t count) {
  DTX_CHECK(start > 0 && factor > 1 && count >= 1 && count <= kHistogramBucketsMax);
  std::vector<double> b;
  b.reserve(count);
  double v = start;
  for (size_t i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

namespace {

bool IsValidHost(const std::string& host) {
  if (host.empty() || host.size() > 255) return false;
  for (char c : host) {
    bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '.' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// civetweb's listener thread notices mg_stop() only when its poll() times
// out (2 s) or a connection arrives; connecting to ourselves ends the wait.
void PokeUntil(in_addr addr, uint16_t port, const std::atomic<bool>* stopped) {
  while (!stopped->load()) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(port);
      sa.sin_addr = addr;
      (void)::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
      ::close(fd);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

MetricsEndpoint::MetricsEndpoint(std::string host, std::unique_ptr<prometheus::Exposer> exposer)
    : host_(std::move(host)), exposer_(std::move(exposer)) {}

Result<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::vector<std::weak_ptr<prometheus::Collectable>>& collectables,
    const std::string& host, uint16_t port) {
  if (!IsValidHost(host)) return Status::InvalidArgument("metrics http: bad host '" + host + "'");
  const std::string listen = host + ":" + std::to_string(port);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    // Without a log_message callback civetweb writes its errors nowhere (no
    // error_log_file is set); a failed bind comes back as the exception.
    exposer = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", listen, "num_threads", std::to_string(kMetricsHttpThreads),
        "request_timeout_ms", std::to_string(kMetricsHttpRequestTimeoutMs), "enable_keep_alive",
        "no"});
  } catch (const std::exception& e) {
    return Status::Unavailable("metrics http: cannot listen on " + listen + ": " + e.what());
  }
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint(host, std::move(exposer)));
  const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (ports.empty() || ports[0] <= 0 || ports[0] > 65535) {
    return Status::Internal("metrics http: no bound port reported");
  }
  endpoint->port_ = static_cast<uint16_t>(ports[0]);
  for (const std::weak_ptr<prometheus::Collectable>& c : collectables) {
    endpoint->exposer_->RegisterCollectable(c);
  }
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() { Stop(); }

void MetricsEndpoint::Stop() {
  if (exposer_ == nullptr) return;
  std::atomic<bool> stopped{false};
  std::thread poker;
  in_addr addr{};
  const std::string poke_host = host_ == "0.0.0.0" || host_ == "localhost" ? "127.0.0.1" : host_;
  if (port_ != 0 && ::inet_pton(AF_INET, poke_host.c_str(), &addr) == 1) {
    poker = std::thread(PokeUntil, addr, port_, &stopped);
  }
  exposer_.reset();  // mg_stop: joins civetweb's threads
  stopped = true;
  if (poker.joinable()) poker.join();
}

Result<std::unique_ptr<MetricsEndpoint>> StartNodeMetricsEndpoint(
    const std::vector<std::weak_ptr<prometheus::Collectable>>& collectables, bool enabled,
    const std::string& host, int port, const std::string& node_dir) {
  const std::filesystem::path file = std::filesystem::path(node_dir) / "metrics.addr";
  std::error_code ec;
  std::filesystem::remove(file, ec);
  if (!enabled) return std::unique_ptr<MetricsEndpoint>();
  if (port < 0 || port > 65535) return Status::InvalidArgument("metrics port out of range");
  auto endpoint = MetricsEndpoint::Start(collectables, host, static_cast<uint16_t>(port));
  if (!endpoint.ok()) return endpoint.status();
  const std::string addr = (*endpoint)->address();
  const std::filesystem::path tmp = std::filesystem::path(node_dir) / "metrics.addr.tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return Status::IOError("cannot write " + tmp.string());
  const bool written = std::fprintf(f, "%s\n", addr.c_str()) > 0;
  if (std::fclose(f) != 0 || !written) return Status::IOError("cannot write " + tmp.string());
  std::filesystem::rename(tmp, file, ec);
  if (ec) return Status::IOError("cannot rename " + tmp.string() + ": " + ec.message());
  return std::move(*endpoint);
}

}  // namespace dtx::obs
