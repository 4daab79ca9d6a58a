#include "common/metrics_http.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "common/log.h"
#include "common/metrics.h"

namespace dtx::obs {

namespace {

// civetweb's library-wide state (refcounted by civetweb itself).
struct CivetLibrary {
  CivetLibrary() { mg_init_library(0); }
  ~CivetLibrary() { mg_exit_library(); }
};

int LogMessage(const mg_connection*, const char* message) {
  DTX_LOG_WARN("metrics http: {}", message);
  return 1;  // handled: civetweb writes nothing to stderr
}

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

Result<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const Registry* registry,
                                                                    const std::string& host,
                                                                    uint16_t port) {
  static CivetLibrary library;
  if (registry == nullptr) return Status::InvalidArgument("metrics http: null registry");
  // civetweb parses "listening_ports" as a list with its own syntax (',' and
  // 's'/'r' suffixes); accept only plain IPv4 hosts/names so nothing in it
  // can change the meaning.
  if (!IsValidHost(host)) return Status::InvalidArgument("metrics http: bad host '" + host + "'");

  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer(registry, host));
  const std::string listen = host + ":" + std::to_string(port);
  const std::string threads = std::to_string(kMetricsHttpThreads);
  const std::string timeout = std::to_string(kMetricsHttpRequestTimeoutMs);
  const char* options[] = {
      "listening_ports", listen.c_str(),      "num_threads", threads.c_str(), "request_timeout_ms",
      timeout.c_str(),   "enable_keep_alive", "no",          nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = LogMessage;
  mg_init_data init;
  std::memset(&init, 0, sizeof(init));
  init.callbacks = &callbacks;
  init.user_data = server.get();
  init.configuration_options = options;
  char error_text[256] = {0};
  unsigned error_code = 0;
  mg_error_data error;
  error.code = &error_code;
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  server->ctx_ = mg_start2(&init, &error);
  if (server->ctx_ == nullptr) {
    return Status::Unavailable("metrics http: cannot listen on " + listen + ": " + error_text);
  }
  mg_set_request_handler(server->ctx_, "/", &MetricsHttpServer::HandleRequest, server.get());
  mg_server_port ports[4];
  std::memset(ports, 0, sizeof(ports));
  int n = mg_get_server_ports(server->ctx_, 4, ports);
  if (n < 1 || ports[0].port <= 0 || ports[0].port > 65535) {
    server->Stop();
    return Status::Internal("metrics http: no bound port reported");
  }
  server->port_ = static_cast<uint16_t>(ports[0].port);
  return server;
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (ctx_ == nullptr) return;
  std::atomic<bool> stopped{false};
  std::thread poker;
  in_addr addr{};
  const std::string poke_host = host_ == "0.0.0.0" || host_ == "localhost" ? "127.0.0.1" : host_;
  if (port_ != 0 && ::inet_pton(AF_INET, poke_host.c_str(), &addr) == 1) {
    poker = std::thread(PokeUntil, addr, port_, &stopped);
  }
  mg_stop(ctx_);  // joins civetweb's threads
  ctx_ = nullptr;
  stopped = true;
  if (poker.joinable()) poker.join();
}

int MetricsHttpServer::HandleRequest(mg_connection* conn, void* self_ptr) {
  auto* self = static_cast<MetricsHttpServer*>(self_ptr);
  const mg_request_info* info = mg_get_request_info(conn);
  const char* uri = info->local_uri != nullptr ? info->local_uri : "";
  if (std::strcmp(uri, "/metrics") != 0) {
    mg_send_http_error(conn, 404, "%s", "not found: try /metrics\n");
    return 404;
  }
  const bool head = std::strcmp(info->request_method, "HEAD") == 0;
  if (!head && std::strcmp(info->request_method, "GET") != 0) {
    mg_response_header_start(conn, 405);
    mg_response_header_add(conn, "Allow", "GET, HEAD", -1);
    mg_response_header_add(conn, "Content-Type", "text/plain", -1);
    mg_response_header_add(conn, "Content-Length", "0", -1);
    mg_response_header_send(conn);
    return 405;
  }
  std::string body = self->registry_->Serialize();
  mg_send_http_ok(conn, kTextContentType, static_cast<long long>(body.size()));
  if (!head) mg_write(conn, body.data(), body.size());
  return 200;
}

Result<std::unique_ptr<MetricsHttpServer>> StartNodeMetricsEndpoint(const Registry* registry,
                                                                    bool enabled,
                                                                    const std::string& host,
                                                                    int port,
                                                                    const std::string& node_dir) {
  const std::filesystem::path file = std::filesystem::path(node_dir) / "metrics.addr";
  std::error_code ec;
  std::filesystem::remove(file, ec);
  if (!enabled) return std::unique_ptr<MetricsHttpServer>();
  if (port < 0 || port > 65535) return Status::InvalidArgument("metrics port out of range");
  auto http = MetricsHttpServer::Start(registry, host, static_cast<uint16_t>(port));
  if (!http.ok()) return http.status();
  const std::string addr = (*http)->address();
  const std::filesystem::path tmp = std::filesystem::path(node_dir) / "metrics.addr.tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return Status::IOError("cannot write " + tmp.string());
  const bool written = std::fprintf(f, "%s\n", addr.c_str()) > 0;
  if (std::fclose(f) != 0 || !written) return Status::IOError("cannot write " + tmp.string());
  std::filesystem::rename(tmp, file, ec);
  if (ec) return Status::IOError("cannot rename " + tmp.string() + ": " + ec.message());
  return std::move(*http);
}

}  // namespace dtx::obs
