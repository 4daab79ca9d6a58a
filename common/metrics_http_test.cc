#include "common/metrics_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "common/metrics.h"

namespace dtx::obs {
namespace {

// Plain-socket HTTP/1.0-style client: sends `request`, reads until the
// server closes. Returns "" when it cannot connect. Bounded by a 5 s timeout.
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
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return response;
}

std::string Get(uint16_t port, const std::string& path, const std::string& method = "GET") {
  return Exchange(
      port, method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}

std::string Body(const std::string& response) {
  size_t p = response.find("\r\n\r\n");
  return p == std::string::npos ? "" : response.substr(p + 4);
}

TEST(MetricsHttpTest, ServesMetricsOverLoopbackAnd404sOtherPaths) {
  Registry r;
  auto& aborts = r.AddCounterFamily("dtx_aborts_total", "Aborts.", {"reason"});
  aborts.Get({"conflict"}).Inc(3);
  auto server = MetricsHttpServer::Start(&r, "127.0.0.1", 0);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const uint16_t port = (*server)->port();
  ASSERT_NE(port, 0);

  std::string resp = Get(port, "/metrics");
  ASSERT_EQ(resp.rfind("HTTP/1.1 200", 0), 0u) << resp;
  EXPECT_NE(resp.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << resp;
  EXPECT_EQ(Body(resp), r.Serialize());
  EXPECT_NE(Body(resp).find("dtx_aborts_total{reason=\"conflict\"} 3\n"), std::string::npos);

  // The next scrape sees new values.
  aborts.Get({"conflict"}).Inc(4);
  EXPECT_NE(Body(Get(port, "/metrics")).find("dtx_aborts_total{reason=\"conflict\"} 7\n"),
            std::string::npos);

  EXPECT_EQ(Get(port, "/").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(Get(port, "/metricsx").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(Get(port, "/metrics/x").rfind("HTTP/1.1 404", 0), 0u);
  EXPECT_EQ(Get(port, "/nope").rfind("HTTP/1.1 404", 0), 0u);
  std::string post = Get(port, "/metrics", "POST");
  EXPECT_EQ(post.rfind("HTTP/1.1 405", 0), 0u) << post;
  std::string head = Get(port, "/metrics", "HEAD");
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_EQ(Body(head), "");
  // Garbage instead of HTTP gets an error or a close, and the server lives on.
  Exchange(port, std::string(3000, 'x') + "\r\n\r\n");
  EXPECT_EQ(Get(port, "/metrics").rfind("HTTP/1.1 200", 0), 0u);

  auto stop_start = std::chrono::steady_clock::now();
  (*server)->Stop();
  // Shutdown does not wait out civetweb's 2 s listener poll.
  EXPECT_LT(std::chrono::steady_clock::now() - stop_start, std::chrono::milliseconds(1000));
  (*server)->Stop();  // idempotent
  bool connected = true;
  Exchange(port, "GET /metrics HTTP/1.0\r\n\r\n", &connected);
  EXPECT_FALSE(connected);
}

TEST(MetricsHttpTest, GaugeCallbacksRunOnAServerThread) {
  Registry r;
  std::atomic<std::thread::id> callback_thread{};
  r.AddGaugeCallback("dtx_probe", "Probe.", [&] {
    callback_thread = std::this_thread::get_id();
    return 1.0;
  });
  auto server = MetricsHttpServer::Start(&r, "127.0.0.1", 0);
  ASSERT_TRUE(server.ok());
  std::string resp = Get((*server)->port(), "/metrics");
  EXPECT_NE(resp.find("dtx_probe 1\n"), std::string::npos) << resp;
  EXPECT_NE(callback_thread.load(), std::thread::id{});
  EXPECT_NE(callback_thread.load(), std::this_thread::get_id());
}

TEST(MetricsHttpTest, BusyPortAndBadHostAreErrors) {
  Registry r;
  auto first = MetricsHttpServer::Start(&r, "127.0.0.1", 0);
  ASSERT_TRUE(first.ok());
  auto second = MetricsHttpServer::Start(&r, "127.0.0.1", (*first)->port());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kUnavailable) << second.status().ToString();
  auto bad = MetricsHttpServer::Start(&r, "127.0.0.1:80,8080", 0);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kInvalidArgument);
  EXPECT_FALSE(MetricsHttpServer::Start(nullptr, "127.0.0.1", 0).ok());
  // The first server still answers.
  EXPECT_EQ(Get((*first)->port(), "/metrics").rfind("HTTP/1.1 200", 0), 0u);
}

}  // namespace
}  // namespace dtx::obs
