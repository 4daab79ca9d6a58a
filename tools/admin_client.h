// Admin calls to dtx nodes with the stock generated synchronous Thrift
// clients (ParticipantClient / CoordinatorClient / AdminClient over TSocket +
// TFramedTransport + TBinaryProtocol), as any operator tool in any language
// would make them.
//
// TLS: when the cluster runs with TLS (DIR/security.conf, tools/cluster_config.h
// ClusterSecurity), the connection runs TLS 1.3 between the socket and the
// framing, with the same engine as the nodes (common/tls.h TlsSession over a
// blocking TSocket, not Thrift's TSSLSocket): the same trust rules (the
// cluster CA only, the server's certificate must name the node called), and
// the same one-line reasons when a handshake fails ("certificate not signed
// by the cluster CA", "plaintext port?", ...). Calls to a node's listener
// (GetStatus) present DIR/certs/client.crt, calls to its admin listener
// DIR/certs/admin.crt (ToolCredentials). GetStatus goes to the node's listener
// (NodeEntry::address); SetFailpoint, ListInDoubt and GetTrace to its admin listener
// (NodeEntry::admin_address). Every call has a connect and a receive timeout; Thrift
// exceptions stop here and come back as Status values:
//   DtxError BAD_ARGUMENT / WRONG_SHARD -> InvalidArgument, UNKNOWN_TX -> NotFound,
//   UNAVAILABLE / NOT_PRIMARY -> Unavailable, TIMEOUT -> Timeout, others -> Internal;
//   connection refused / reset / timed out -> Unavailable (message says which).
//
// Thread-safety: the free functions are thread-safe (each opens its own
// connection). A StockConnection is used by one thread at a time.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "Admin.h"
#include "Coordinator.h"
#include "CoordinatorPeer.h"
#include "Participant.h"
#include "ParticipantPeer.h"
#include "common/status.h"
#include "common/tls.h"
#include "tools/cluster_config.h"

namespace apache::thrift::transport {
class TSocket;
class TTransport;
}  // namespace apache::thrift::transport

namespace dtx::tools {

struct AdminTimeouts {
  int connect_timeout_ms = 1000;
  int recv_timeout_ms = 5000;
};

// TLS of one connection: a client context (null: plaintext) and whom the
// server's certificate must name.
struct ConnectionTls {
  std::shared_ptr<const TlsContext> context = nullptr;
  TlsExpectedPeer expected = {};
};

// What the tools present to a cluster's nodes, from its directory.
// Immutable; cheap to copy; thread-safe.
struct ToolCredentials {
  // Client side, DIR/certs/client.{crt,key}: a node's client listener.
  std::shared_ptr<const TlsContext> client = nullptr;
  // Client side, DIR/certs/admin.{crt,key}: a node's admin listener.
  std::shared_ptr<const TlsContext> admin = nullptr;

  bool tls() const { return client != nullptr; }
  // Plaintext (a cluster started with --insecure).
  static ToolCredentials Plaintext() { return {}; }
  // From DIR/security.conf: with `tls on` both contexts from its certificate
  // directory (InvalidArgument naming a missing or bad file); `tls off` or
  // no security.conf (a directory made before TLS): plaintext.
  static Result<ToolCredentials> Load(const std::string& cluster_dir);
  // From a cluster file (tools/cluster_config.h ClusterFile): with TLS both
  // contexts from its certificate directory (client.{crt,key} and
  // admin.{crt,key}: the operator's host needs both); plaintext with `tls off`.
  static Result<ToolCredentials> FromClusterFile(const ClusterFile& file);
  // A node's own credentials for its calls to other nodes' client listeners
  // (`client` from CERTS/NAME.{crt,key}; no admin context).
  static Result<ToolCredentials> ForNode(const ClusterFile& file, const std::string& name);

  // The TLS of a call to `node`'s client listener / admin listener.
  ConnectionTls ForClientListener(const NodeEntry& node) const;
  ConnectionTls ForAdminListener(const NodeEntry& node) const;
};

// One open framed/binary connection to `address` with a generated client
// `ClientT` (rpc::ParticipantClient or rpc::CoordinatorClient). Closes on
// destruction. Calls on client() throw Thrift exceptions; use RunThrift() to
// turn them into a Status.
template <class ClientT>
class StockConnection {
 public:
  // `tls.context` null: plaintext. A failed TLS handshake is Unavailable
  // with its reason.
  static Result<std::unique_ptr<StockConnection>> Open(const std::string& address,
                                                       const AdminTimeouts& timeouts,
                                                       const ConnectionTls& tls = {});
  ~StockConnection();
  ClientT& client() { return *client_; }
  // The raw socket, for tests that write bytes of their own (below TLS when
  // the connection has it).
  apache::thrift::transport::TSocket& socket() { return *socket_; }

 private:
  StockConnection() = default;
  std::shared_ptr<apache::thrift::transport::TSocket> socket_;
  std::shared_ptr<apache::thrift::transport::TTransport> transport_;
  std::unique_ptr<ClientT> client_;
};

using ParticipantConnection = StockConnection<rpc::ParticipantClient>;
using CoordinatorConnection = StockConnection<rpc::CoordinatorClient>;
// The node-to-node services (they extend the above; GetTrace lives there).
using ParticipantPeerConnection = StockConnection<rpc::ParticipantPeerClient>;
using CoordinatorPeerConnection = StockConnection<rpc::CoordinatorPeerClient>;
// A node's admin listener.
using AdminConnection = StockConnection<rpc::AdminClient>;

// Runs `fn` and converts any exception it throws (DtxError, Thrift transport
// and protocol exceptions, std::exception) into a Status naming `what`.
Status RunThrift(const std::string& what, const std::function<void()>& fn);

// GetStatus on a participant or coordinator (by the node's role).
Result<rpc::NodeStatus> GetNodeStatus(const NodeEntry& node, const ToolCredentials& creds,
                                      const AdminTimeouts& timeouts = {});
// The role a coordinator of a pair starts in: "backup" when its peer answers
// GetStatus as PRIMARY within `timeout_ms` (two nodes started as primary would
// only fence each other, and the restarted one would miss what the other
// decided), else `configured_role` (the role of a first start). Used by the
// local supervisor before each restart and by `dtx-coordinator --cluster FILE`
// (coordinator/main.cc). Blocks for at most about twice `timeout_ms`.
std::string CoordinatorRoleToStart(const NodeEntry& self, const NodeEntry& peer,
                                   const ToolCredentials& creds, const std::string& configured_role,
                                   int timeout_ms);
// SetFailpoint on a node (its admin listener).
Status SetNodeFailpoint(const NodeEntry& node, const ToolCredentials& creds,
                        const std::string& name, const std::string& action,
                        const AdminTimeouts& timeouts = {});
// ListInDoubt on a participant's admin listener (InvalidArgument for a
// coordinator).
Result<std::vector<rpc::InDoubtTx>> ListNodeInDoubt(const NodeEntry& node,
                                                    const ToolCredentials& creds,
                                                    const AdminTimeouts& timeouts = {});
// GetTrace on a node's admin listener: its span events for `txid`
// (docs/observability.md).
Result<rpc::TraceResponse> GetNodeTrace(const NodeEntry& node, const ToolCredentials& creds,
                                        const rpc::TxId& txid, const AdminTimeouts& timeouts = {});
// The node's listeners as GetStatus reports them (NodeStatus.listeners):
// "client HOST:PORT (mutual TLS), peer HOST:PORT (mutual TLS), admin
// HOST:PORT (mutual TLS)"; each "(mutual TLS)" (a client certificate
// required), "(TLS)" or "(plaintext)". "" when the node reports none (it
// predates the field).
std::string DescribeListeners(const rpc::NodeStatus& status);
// Polls GetStatus until it answers or `timeout_ms` passes (Timeout then, with
// the last error).
Status WaitUntilReady(const NodeEntry& node, const ToolCredentials& creds, int timeout_ms);

// Stops libthrift printing its own error lines (e.g. "TSocket::open() error
// ... Connection refused") on stderr; the Status values carry the errors.
// Call once at start-up. Thread-safe only before other threads use Thrift.
void QuietThriftLogging();

// "0123...ef" (32 hex digits) for a wire TxId.
std::string TxIdHex(const rpc::TxId& txid);

}  // namespace dtx::tools
