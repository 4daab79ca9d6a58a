// Test-only helpers for the tests of the node binaries and of node/
// (coordinator_binary_test, participant_smoke_test, node_test): scrape a
// node's Prometheus endpoint over a plain socket and read its samples; name a
// listener's series (node/listener_metrics.h) and give a listener something
// to count. Include only from GoogleTest sources.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace dtx::test_metrics {

// A plain TCP connection to 127.0.0.1:PORT with a 5 s receive timeout; -1
// on failure. The caller closes it.
inline int ConnectLoopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// GET http://127.0.0.1:PORT/metrics over a plain socket; "" on failure.
inline std::string HttpGetMetrics(int port) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return "";
  std::string out;
  const std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;)
      out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

// Sends an HTTP request to the RPC listener on 127.0.0.1:PORT on a new
// connection, and waits until the listener closes it: a plaintext listener
// reads "GET " as an absurd frame length (connections_closed_bad_input), a
// TLS one fails the handshake (tls_handshakes_failed). True once closed,
// false if it stayed open for the 5 s receive timeout.
inline bool SendGarbage(int port) {
  int fd = ConnectLoopback(port);
  if (fd < 0) return false;
  const std::string bytes = "GET / HTTP/1.0\r\n\r\n";
  bool closed = false;
  if (::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size())) {
    char buf[256];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof(buf))) > 0) {
    }  // a TLS alert may come first
    closed = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
  }
  ::close(fd);
  return closed;
}

// The series of `family` for one listener (node/listener_metrics.h):
// family{listener="NAME"}, as ParseMetrics keys it.
inline std::string ListenerSeries(const std::string& family, const std::string& listener) {
  return family + "{listener=\"" + listener + "\"}";
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
