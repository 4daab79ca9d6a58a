// The three listeners of a node (node/README.md "Listeners and access"),
// set up the same way by both runtimes (coordinator/runtime.cc,
// participant/runtime.cc): the client listener, the peer listener (by default
// on the client listener's host), the admin listener; the bound peer and
// admin addresses recorded in NODEDIR (kPeerAddressFile, kAdminAddressFile);
// the --insecure WARN. Every listener is secured as NodeOptions::tls says;
// GetStatus reports each one (ListenerStatuses).
//
// Threading: loop thread (or before the loop runs), like Node.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/rpc_server.h"
#include "common/status.h"
#include "dtx_types.h"
#include "node/node.h"

namespace dtx::node {

// The listeners' names (Node::Serve, ListenerInfo, the metrics' label).
inline constexpr const char* kClientListener = "client";
inline constexpr const char* kPeerListener = "peer";
inline constexpr const char* kAdminListener = "admin";

// --idle-timeout-ms of both node binaries (NodeOptions::idle_timeout_ms).
inline constexpr const char* kIdleTimeoutFlagHelp =
    "close a connection (client, peer or admin listener) with nothing in flight and nothing "
    "received for this long; 0: never. At a listener's connection cap the connection idle "
    "longest is closed for a new one whatever this says (common/rpc_server.h)";
inline constexpr uint64_t kIdleTimeoutMsMax = 24ull * 3600 * 1000;

// The flag's value as NodeOptions::idle_timeout_ms; InvalidArgument past
// kIdleTimeoutMsMax.
Result<int> IdleTimeoutFromFlag(uint64_t ms);

// Where a runtime's listeners bind (its --listen, --peer-listen and
// --admin-listen flags), and what its start-up says without TLS.
struct ListenerOptions {
  std::string listen_host;
  int listen_port = 0;    // 0: the kernel picks
  std::string peer_host;  // "": listen_host
  int peer_port = 0;
  std::string admin_host;
  int admin_port = 0;
  // False (--insecure, or tests that leave the policy open): one WARN at
  // start, naming `insecure_exposes`, the calls anyone who reaches a port can
  // then make ("Prepare, Commit, Abort, AdoptEpoch and SetFailpoint").
  bool secure = true;
  std::string insecure_exposes;
};

// The ListenerOptions of a runtime's options (coordinator/runtime.h,
// participant/runtime.h RuntimeOptions: the same listen_, peer_ and admin_
// host and port fields).
template <typename RuntimeOptions>
ListenerOptions ListenerOptionsOf(const RuntimeOptions& o, bool secure,
                                  std::string insecure_exposes) {
  return ListenerOptions{.listen_host = o.listen_host,
                         .listen_port = o.listen_port,
                         .peer_host = o.peer_host,
                         .peer_port = o.peer_port,
                         .admin_host = o.admin_host,
                         .admin_port = o.admin_port,
                         .secure = secure,
                         .insecure_exposes = std::move(insecure_exposes)};
}

// The processor factories of the three listeners (node/handler.h
// HandlerFactory, AdminHandler::Factory).
struct ListenerFactories {
  RpcProcessorFactory client;
  RpcProcessorFactory peer;
  RpcProcessorFactory admin;
};

// The bound "host:port" of each listener.
struct ListenerAddresses {
  std::string client;
  std::string peer;
  std::string admin;
  // "clients on C, peers on P, admin on A", for the runtimes' start-up line.
  std::string Describe() const;
};

// Serves the three listeners on `node` (Node::Serve, `handlers` detached at
// its shutdown) and records the peer and admin addresses in NODEDIR. The
// first error (a port in use, an unwritable NODEDIR) is returned; the
// runtime's Shutdown() then closes what was bound (node::StartImpl).
Result<ListenerAddresses> ServeListeners(Node* node, const ListenerOptions& options,
                                         ListenerFactories factories,
                                         const std::shared_ptr<Detachable>& handlers);

// What GetStatus reports of the node's listeners (idl/dtx.thrift
// NodeStatus.listeners): each one's name, address and security.
std::vector<rpc::ListenerStatus> ListenerStatuses(const Node& node);

}  // namespace dtx::node
