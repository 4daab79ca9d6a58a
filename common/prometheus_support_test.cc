#include "common/prometheus_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include "common/process_stats.h"

namespace dtx::obs {
namespace {

// Plain-socket HTTP client: sends `request`, reads until the server closes.
// "" when it cannot connect (then *connected is false). Bounded by a 5 s
// socket timeout.
std::string Exchange(uint16_t port, const std::string& request, bool* connected = nullptr) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    if (connected) *connected = false;
    return "";
  }
  if (connected) *connected = true;
  size_t off = 0;
  while (off < request.size()) {
    ssize_t n = ::send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) {
    response.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return response;
}

std::string Get(uint16_t port, const std::string& path) {
  return Exchange(port,
                  "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}

std::string Body(const std::string& response) {
  size_t p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

bool Has(const std::string& text, const std::string& line) {
  return text.find(line) != std::string::npos;
}

// A collectable whose Collect() notes the thread it ran on.
class ThreadProbe : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    thread_ = std::this_thread::get_id();
    prometheus::ClientMetric m;
    m.gauge.value = 1;
    return {prometheus::MetricFamily{.name = "dtx_probe",
                                     .help = "Probe.",
                                     .type = prometheus::MetricType::Gauge,
                                     .metric = {m}}};
  }
  std::thread::id thread() const { return thread_; }

 private:
  mutable std::atomic<std::thread::id> thread_{};
};

TEST(PrometheusSupportTest, LatencyAndExponentialBucketsAreTheDocumentedOnes) {
  const std::vector<double> latency = LatencyBucketsSeconds();
  ASSERT_EQ(latency.size(), 17u);
  EXPECT_EQ(latency.front(), 50e-6);
  EXPECT_EQ(latency[4], 1e-3);
  EXPECT_EQ(latency.back(), 10.0);
  for (size_t i = 1; i < latency.size(); ++i) EXPECT_LT(latency[i - 1], latency[i]);
  const std::vector<double> records = ExponentialBuckets(1, 2, 12);
  ASSERT_EQ(records.size(), 12u);
  EXPECT_EQ(records.front(), 1);
  EXPECT_EQ(records.back(), 2048);
}

TEST(PrometheusSupportTest, EndpointServesEveryCollectableOnAServerThreadUntilStopped) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& aborts =
      prometheus::BuildCounter().Name("dtx_aborts_total").Help("Aborts.").Register(*registry);
  prometheus::Counter& conflict = aborts.Add({{"reason", "conflict"}});
  conflict.Increment(3);
  aborts.Add({{"reason", "we\"ird\\va\nlue"}}).Increment();
  prometheus::Histogram& phase = prometheus::BuildHistogram()
                                     .Name("dtx_phase_seconds")
                                     .Help("Phases.")
                                     .Register(*registry)
                                     .Add({{"phase", "prepare"}}, LatencyBucketsSeconds());
  phase.Observe(0.0003);
  phase.Observe(0.001);  // bucket bounds are inclusive
  phase.Observe(100);
  auto probe = std::make_shared<ThreadProbe>();
  auto process = std::make_shared<ProcessCollector>();

  auto endpoint = MetricsEndpoint::Start({registry, probe, process}, "127.0.0.1", 0);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  const uint16_t port = (*endpoint)->port();
  ASSERT_NE(port, 0);
  EXPECT_EQ((*endpoint)->address(), "127.0.0.1:" + std::to_string(port));

  const std::string resp = Get(port, "/metrics");
  ASSERT_EQ(resp.rfind("HTTP/1.1 200", 0), 0u) << resp;
  const std::string body = Body(resp);
  EXPECT_TRUE(Has(body, "# TYPE dtx_aborts_total counter\n")) << body;
  EXPECT_TRUE(Has(body, "dtx_aborts_total{reason=\"conflict\"} 3\n")) << body;
  EXPECT_TRUE(Has(body, "dtx_aborts_total{reason=\"we\\\"ird\\\\va\\nlue\"} 1\n")) << body;
  EXPECT_TRUE(Has(body, "# TYPE dtx_phase_seconds histogram\n")) << body;
  EXPECT_TRUE(Has(body, "dtx_phase_seconds_bucket{phase=\"prepare\",le=\"5e-05\"} 0\n")) << body;
  EXPECT_TRUE(Has(body, "dtx_phase_seconds_bucket{phase=\"prepare\",le=\"0.0005\"} 1\n")) << body;
  EXPECT_TRUE(Has(body, "dtx_phase_seconds_bucket{phase=\"prepare\",le=\"0.001\"} 2\n")) << body;
  EXPECT_TRUE(Has(body, "dtx_phase_seconds_bucket{phase=\"prepare\",le=\"10\"} 2\n")) << body;
  EXPECT_TRUE(Has(body, "dtx_phase_seconds_bucket{phase=\"prepare\",le=\"+Inf\"} 3\n")) << body;
  EXPECT_TRUE(Has(body, "dtx_phase_seconds_count{phase=\"prepare\"} 3\n")) << body;
  EXPECT_TRUE(Has(body, "dtx_probe 1\n")) << body;
  EXPECT_TRUE(Has(body, "# TYPE process_resident_memory_bytes gauge\n")) << body;
  // Collect() ran on one of the exposer's threads, not this one.
  EXPECT_NE(probe->thread(), std::thread::id{});
  EXPECT_NE(probe->thread(), std::this_thread::get_id());

  // The next scrape sees new values; a collectable destroyed meanwhile drops out.
  conflict.Increment(4);
  probe.reset();
  const std::string again = Body(Get(port, "/metrics"));
  EXPECT_TRUE(Has(again, "dtx_aborts_total{reason=\"conflict\"} 7\n")) << again;
  EXPECT_FALSE(Has(again, "dtx_probe")) << again;
  EXPECT_EQ(Get(port, "/elsewhere").rfind("HTTP/1.1 404", 0), 0u);

  (*endpoint)->Stop();
  (*endpoint)->Stop();  // idempotent
  bool connected = true;
  Exchange(port, "GET /metrics HTTP/1.0\r\n\r\n", &connected);
  EXPECT_FALSE(connected) << "the socket is closed after Stop()";
}

TEST(PrometheusSupportTest, BusyPortAndBadHostAreErrors) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto first = MetricsEndpoint::Start({registry}, "127.0.0.1", 0);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = MetricsEndpoint::Start({registry}, "127.0.0.1", (*first)->port());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kUnavailable) << second.status().ToString();
  auto bad = MetricsEndpoint::Start({registry}, "127.0.0.1:80,8080", 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kInvalidArgument);
  // The first endpoint still answers.
  EXPECT_EQ(Get((*first)->port(), "/metrics").rfind("HTTP/1.1 200", 0), 0u);
}

class NodeEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("dtx_prometheus_support_test." + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string ReadAddressFile() const {
    std::ifstream f(dir_ / "metrics.addr");
    std::string line;
    std::getline(f, line);
    return line;
  }
  std::filesystem::path dir_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
};

TEST_F(NodeEndpointTest, WritesTheBoundAddressAndOffRemovesAStaleOne) {
  auto endpoint = StartNodeMetricsEndpoint({registry_}, true, "127.0.0.1", 0, dir_.string());
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  ASSERT_NE(*endpoint, nullptr);
  EXPECT_EQ(ReadAddressFile(), (*endpoint)->address());
  EXPECT_FALSE(std::filesystem::exists(dir_ / "metrics.addr.tmp"));
  EXPECT_EQ(Get((*endpoint)->port(), "/metrics").rfind("HTTP/1.1 200", 0), 0u);
  endpoint->reset();

  // Off: no endpoint, and the previous run's file is gone.
  auto off = StartNodeMetricsEndpoint({registry_}, false, "127.0.0.1", 0, dir_.string());
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(*off, nullptr);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "metrics.addr"));
}

TEST_F(NodeEndpointTest, AFailedStartLeavesNoAddressFile) {
  std::ofstream(dir_ / "metrics.addr") << "127.0.0.1:1\n";
  auto bad = StartNodeMetricsEndpoint({registry_}, true, "127.0.0.1", 70000, dir_.string());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "metrics.addr"));
}

}  // namespace
}  // namespace dtx::obs
