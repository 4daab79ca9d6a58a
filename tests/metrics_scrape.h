// Test-only helpers for the node binaries' tests (coordinator_binary_test,
// participant_smoke_test): scrape a node's Prometheus endpoint over a plain
// socket and read its samples. Include only from GoogleTest sources.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace dtx::test_metrics {

// GET http://127.0.0.1:PORT/metrics over a plain socket; "" on failure.
inline std::string HttpGetMetrics(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
    const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
      char buf[4096];
      for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;)
        out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

// Text-format body -> series -> value; a malformed sample line fails the test.
inline std::map<std::string, double> ParseMetrics(const std::string& body) {
  std::map<std::string, double> out;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    EXPECT_NE(sp, std::string::npos) << line;
    if (sp == std::string::npos) continue;
    std::string v = line.substr(sp + 1);
    char* end = nullptr;
    double d = std::strtod(v.c_str(), &end);
    EXPECT_EQ(*end, '\0') << line;
    out[line.substr(0, sp)] = d;
  }
  return out;
}

}  // namespace dtx::test_metrics
