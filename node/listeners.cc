#include "node/listeners.h"

#include <utility>

#include "common/log.h"

namespace dtx::node {

Result<int> IdleTimeoutFromFlag(uint64_t ms) {
  if (ms > kIdleTimeoutMsMax) {
    return Status::InvalidArgument("--idle-timeout-ms must be in 0.." +
                                   std::to_string(kIdleTimeoutMsMax) + " (0: never)");
  }
  return static_cast<int>(ms);
}

std::string ListenerAddresses::Describe() const {
  return "clients on " + client + ", peers on " + peer + ", admin on " + admin;
}

Result<ListenerAddresses> ServeListeners(Node* node, const ListenerOptions& options,
                                         ListenerFactories factories,
                                         const std::shared_ptr<Detachable>& handlers) {
  if (!options.secure) {
    DTX_LOG_WARN(
        "--insecure: INSECURE, TLS is off: every listener is plaintext and callers are not "
        "authenticated; anyone who reaches a port may call {} here",
        options.insecure_exposes);
  }
  ListenerAddresses bound;
  auto client = node->Serve(kClientListener, std::move(factories.client), handlers, options.listen_host,
                            options.listen_port);
  if (!client.ok()) return client.status();
  bound.client = *client;
  auto peer = node->Serve(kPeerListener, std::move(factories.peer), handlers,
                          options.peer_host.empty() ? options.listen_host : options.peer_host,
                          options.peer_port);
  if (!peer.ok()) return peer.status();
  bound.peer = *peer;
  DTX_RETURN_IF_ERROR(node->RecordAddress(kPeerAddressFile, bound.peer));
  auto admin = node->Serve(kAdminListener, std::move(factories.admin), handlers, options.admin_host,
                           options.admin_port);
  if (!admin.ok()) return admin.status();
  bound.admin = *admin;
  DTX_RETURN_IF_ERROR(node->RecordAddress(kAdminAddressFile, bound.admin));
  return bound;
}

std::vector<rpc::ListenerStatus> ListenerStatuses(const Node& node) {
  std::vector<rpc::ListenerStatus> out;
  for (const ListenerInfo& l : node.listeners()) {
    rpc::ListenerStatus s;
    s.name = l.name;
    s.address = l.address;
    s.tls = l.tls;
    s.client_cert_required = l.client_cert_required;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace dtx::node
