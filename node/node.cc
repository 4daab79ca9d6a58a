#include "node/node.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>
#include <utility>

#include "common/check.h"
#include "common/fd_limit.h"
#include "common/log.h"

namespace dtx::node {

Node::Node(EventLoop* loop, NodeOptions options)
    : loop_(loop),
      options_(std::move(options)),
      tracing_(options_.trace_events > 0),
      trace_(obs::TraceRing::Options{
          .events_max =
              std::clamp<size_t>(options_.trace_events, obs::kTraceEventsMin, obs::kTraceEventsMax),
          .log_events = true}) {
  fd_limit_ = RaiseOpenFileLimit();
  const size_t per_listener = ConnectionsPerListener(fd_limit_, kListenersPerNode);
  if (fd_limit_ < kFdReserve + kListenersPerNode * kConnectionsPerListenerMin) {
    DTX_LOG_WARN("open-file limit {} (hard limit reached): {} connections per listener leave "
                 "little for the node's own files; raise `ulimit -n`",
                 fd_limit_, per_listener);
  } else {
    DTX_LOG_INFO("open-file limit {}: up to {} connections per listener", fd_limit_,
                 per_listener);
  }
}

Node::~Node() { Shutdown(); }

Result<std::string> Node::Serve(std::string_view listener, RpcProcessorFactory factory,
                                std::shared_ptr<Detachable> handlers, const std::string& host,
                                int port) {
  DTX_CHECK(!shut_down_ && factory);
  if (handlers != nullptr &&
      std::find(handlers_.begin(), handlers_.end(), handlers) == handlers_.end()) {
    handlers_.push_back(std::move(handlers));
  }
  if (options_.identify) {
    factory = [identify = options_.identify, inner = std::move(factory)](const PeerIdentity& who) {
      return inner(identify(who));
    };
  }
  RpcServerOptions so;
  so.host = host;
  so.port = port;
  so.name = options_.name;
  so.tls = options_.tls;
  // The client, peer and admin listeners share what the open-file limit
  // leaves after the node's own files (common/fd_limit.h).
  so.connections_max = ConnectionsPerListener(fd_limit_, kListenersPerNode);
  so.idle_timeout_ms = options_.idle_timeout_ms;
  servers_.push_back(std::make_unique<RpcServer>(loop_, std::move(factory), so));
  DTX_RETURN_IF_ERROR(servers_.back()->Start());
  listener_metrics_.Add(listener, *servers_.back());
  std::string bound = servers_.back()->address();
  listeners_.push_back(
      ListenerInfo{.name = std::string(listener),
                   .address = bound,
                   .tls = options_.tls != nullptr,
                   .client_cert_required =
                       options_.tls != nullptr && options_.tls->options().require_client_cert});
  return bound;
}

bool Node::ReplyRoom(std::string_view listener) const {
  for (size_t i = 0; i < listeners_.size() && i < servers_.size(); ++i) {
    if (listeners_[i].name == listener) {
      return servers_[i]->reply_bytes_queued() < servers_[i]->reply_bytes_max();
    }
  }
  return true;
}

Status Node::RecordAddress(const std::string& file_name, const std::string& address) const {
  const std::filesystem::path file = std::filesystem::path(options_.dir) / file_name;
  const std::filesystem::path tmp = file.string() + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return Status::IOError("cannot write " + tmp.string());
  const bool written = std::fprintf(f, "%s\n", address.c_str()) > 0;
  if (std::fclose(f) != 0 || !written) return Status::IOError("cannot write " + tmp.string());
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) return Status::IOError("cannot rename " + tmp.string() + ": " + ec.message());
  return Status::OK();
}

void Node::RunEvery(uint64_t interval_ms, std::function<void()> fn) {
  DTX_CHECK(!shut_down_);
  timers_.push_back(loop_->RunEvery(interval_ms, std::move(fn)));
}

void Node::UpdateMetrics() {
  if (!shut_down_) listener_metrics_.Update();
}

Status Node::StartMetrics() {
  auto endpoint =
      obs::StartNodeMetricsEndpoint({registry_, process_}, options_.metrics_enabled,
                                    options_.metrics_host, options_.metrics_port, options_.dir);
  if (!endpoint.ok()) return endpoint.status();
  metrics_endpoint_ = std::move(*endpoint);
  if (metrics_endpoint_ != nullptr) {
    DTX_LOG_INFO("metrics on http://{}/metrics", metrics_address());
  }
  return Status::OK();
}

std::string Node::metrics_address() const {
  return metrics_endpoint_ == nullptr ? "" : metrics_endpoint_->address();
}

uint16_t Node::metrics_port() const {
  return metrics_endpoint_ == nullptr ? 0 : metrics_endpoint_->port();
}

bool Node::Shutdown() {
  if (shut_down_) return false;
  shut_down_ = true;
  if (metrics_endpoint_) metrics_endpoint_->Stop();
  for (const std::shared_ptr<Detachable>& h : handlers_) h->Detach();
  for (TimerId t : timers_) loop_->Cancel(t);
  timers_.clear();
  for (const std::unique_ptr<RpcServer>& server : servers_) server->Close();
  return true;
}

}  // namespace dtx::node
