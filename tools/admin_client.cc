#include "tools/admin_client.h"

#include <thrift/TOutput.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>
#include <thrift/transport/TTransportException.h>
#include <thrift/transport/TVirtualTransport.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/certs.h"
#include "common/log.h"
#include "common/types.h"

namespace dtx::tools {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TSocket;
using apache::thrift::transport::TTransportException;

namespace {

// TLS 1.3 over a blocking TSocket with a TlsSession (common/tls.h): open()
// runs the handshake, read()/write() decrypt and encrypt. A session failure
// is a TTransportException carrying the session's one-line reason.
class TlsTransport : public apache::thrift::transport::TVirtualTransport<TlsTransport> {
 public:
  TlsTransport(std::shared_ptr<TSocket> socket, std::shared_ptr<const TlsContext> context,
               TlsExpectedPeer expected)
      : socket_(std::move(socket)),
        session_(TlsSession::Create(std::move(context), std::move(expected))) {}

  bool isOpen() const override { return socket_->isOpen(); }
  void open() override {
    socket_->open();
    Check(session_->Start());
    WriteOutput();
    while (!session_->handshake_done()) ReceiveSome();
  }
  void close() override { socket_->close(); }

  uint32_t read(uint8_t* buf, uint32_t len) {
    while (plaintext_.size() == consumed_) {
      plaintext_.clear();
      consumed_ = 0;
      if (eof_ || !ReceiveSome()) return 0;
    }
    const uint32_t n = static_cast<uint32_t>(std::min<size_t>(len, plaintext_.size() - consumed_));
    std::memcpy(buf, plaintext_.data() + consumed_, n);
    consumed_ += n;
    return n;
  }
  void write(const uint8_t* buf, uint32_t len) {
    Check(session_->Send(buf, len));
    WriteOutput();
  }

 private:
  // Reads one chunk from the socket into the session; false at EOF.
  bool ReceiveSome() {
    uint8_t chunk[16 << 10];
    const uint32_t n = socket_->read(chunk, sizeof(chunk));
    if (n == 0) {
      eof_ = true;
      Check(session_->ReceiveEof());
      return false;
    }
    Status st = session_->Receive(chunk, n, &plaintext_);
    WriteOutput();  // an alert explaining a failure goes out too
    Check(st);
    if (session_->peer_closed()) eof_ = true;
    return true;
  }
  void WriteOutput() {
    std::string out;
    if (session_->TakeOutput(&out) > 0) {
      try {
        socket_->write(reinterpret_cast<const uint8_t*>(out.data()),
                       static_cast<uint32_t>(out.size()));
      } catch (const TTransportException&) {
        if (!session_->failed()) throw;  // the peer may be gone after refusing us
      }
    }
  }
  static void Check(const Status& st) {
    if (st.ok()) return;
    throw TTransportException(TTransportException::NOT_OPEN, "TLS: " + st.message());
  }

  std::shared_ptr<TSocket> socket_;
  std::unique_ptr<TlsSession> session_;
  std::vector<uint8_t> plaintext_;
  size_t consumed_ = 0;
  bool eof_ = false;
};

Result<std::shared_ptr<const TlsContext>> ToolContext(const std::string& certs_dir,
                                                      const std::string& name) {
  auto ctx = TlsContext::Create(TlsFiles{.ca_file = CaCertPath(certs_dir),
                                         .cert_file = CertPath(certs_dir, name),
                                         .key_file = KeyPath(certs_dir, name)},
                                TlsSide::kClient);
  if (!ctx.ok()) {
    return Status::InvalidArgument("the " + name + " certificate of " + certs_dir + ": " +
                                   ctx.status().message());
  }
  return ctx;
}

PrincipalKind KindOf(const NodeEntry& node) {
  return node.role == NodeKind::kCoordinator ? PrincipalKind::kCoordinator
                                             : PrincipalKind::kParticipant;
}

}  // namespace

Result<ToolCredentials> ToolCredentials::Load(const std::string& cluster_dir) {
  auto sec = ClusterSecurity::Load(cluster_dir);
  if (!sec.ok()) {
    if (sec.status().IsNotFound()) return Plaintext();
    return sec.status();
  }
  if (!sec->tls) return Plaintext();
  const std::string certs = sec->CertsDir(cluster_dir);
  ToolCredentials c;
  auto client = ToolContext(certs, "client");
  if (!client.ok()) return client.status();
  auto admin = ToolContext(certs, "admin");
  if (!admin.ok()) return admin.status();
  c.client = std::move(*client);
  c.admin = std::move(*admin);
  return c;
}

Result<ToolCredentials> ToolCredentials::FromClusterFile(const ClusterFile& file) {
  if (!file.security.tls) return Plaintext();
  ToolCredentials c;
  auto client = ToolContext(file.CertsDir(), "client");
  if (!client.ok()) return client.status();
  auto admin = ToolContext(file.CertsDir(), "admin");
  if (!admin.ok()) return admin.status();
  c.client = std::move(*client);
  c.admin = std::move(*admin);
  return c;
}

Result<ToolCredentials> ToolCredentials::ForNode(const ClusterFile& file,
                                                 const std::string& name) {
  if (!file.security.tls) return Plaintext();
  ToolCredentials c;
  auto client = ToolContext(file.CertsDir(), name);
  if (!client.ok()) return client.status();
  c.client = std::move(*client);
  return c;
}

ConnectionTls ToolCredentials::ForClientListener(const NodeEntry& node) const {
  return ConnectionTls{.context = client, .expected = {.kind = KindOf(node), .name = node.name}};
}

ConnectionTls ToolCredentials::ForAdminListener(const NodeEntry& node) const {
  return ConnectionTls{.context = admin, .expected = {.kind = KindOf(node), .name = node.name}};
}

std::string CoordinatorRoleToStart(const NodeEntry& self, const NodeEntry& peer,
                                   const ToolCredentials& creds, const std::string& configured_role,
                                   int timeout_ms) {
  auto st = GetNodeStatus(peer, creds,
                          {.connect_timeout_ms = timeout_ms, .recv_timeout_ms = timeout_ms});
  if (st.ok() && st->role == rpc::NodeRole::PRIMARY) {
    if (configured_role != "backup") {
      DTX_LOG_INFO("{}: {} is primary now; starting {} as backup", self.name, peer.name,
                   self.name);
    }
    return "backup";
  }
  return configured_role;
}

template <class ClientT>
Result<std::unique_ptr<StockConnection<ClientT>>> StockConnection<ClientT>::Open(
    const std::string& address, const AdminTimeouts& timeouts, const ConnectionTls& tls) {
  auto hp = ParseHostPort(address);
  if (!hp.ok()) return hp.status();
  std::unique_ptr<StockConnection> c(new StockConnection());
  c->socket_ = std::make_shared<TSocket>(hp->host, hp->port);
  c->socket_->setConnTimeout(timeouts.connect_timeout_ms);
  c->socket_->setRecvTimeout(timeouts.recv_timeout_ms);
  c->socket_->setSendTimeout(timeouts.recv_timeout_ms);
  if (tls.context != nullptr) {
    c->transport_ = std::make_shared<TFramedTransport>(
        std::make_shared<TlsTransport>(c->socket_, tls.context, tls.expected));
  } else {
    c->transport_ = std::make_shared<TFramedTransport>(c->socket_);
  }
  auto protocol = std::make_shared<TBinaryProtocol>(c->transport_);
  c->client_ = std::make_unique<ClientT>(protocol);
  Status s = RunThrift("connect to " + address, [&] { c->transport_->open(); });
  if (!s.ok()) return s;
  return c;
}

template <class ClientT>
StockConnection<ClientT>::~StockConnection() {
  try {
    if (transport_) transport_->close();
  } catch (...) {
    // Closing a broken socket may throw; there is nothing left to do.
  }
}

template class StockConnection<rpc::ParticipantClient>;
template class StockConnection<rpc::CoordinatorClient>;
template class StockConnection<rpc::ParticipantPeerClient>;
template class StockConnection<rpc::CoordinatorPeerClient>;
template class StockConnection<rpc::AdminClient>;

Status RunThrift(const std::string& what, const std::function<void()>& fn) {
  try {
    fn();
    return Status::OK();
  } catch (const rpc::DtxError& e) {
    std::string m = what + ": " + e.message;
    switch (e.code) {
      case rpc::ErrorCode::BAD_ARGUMENT:
      case rpc::ErrorCode::WRONG_SHARD: return Status::InvalidArgument(m);
      case rpc::ErrorCode::PERMISSION_DENIED: return Status::PermissionDenied(m);
      case rpc::ErrorCode::UNKNOWN_TX: return Status::NotFound(m);
      case rpc::ErrorCode::NOT_PRIMARY:
        return Status::Unavailable(m + (e.__isset.primary ? " (primary: " + e.primary + ")" : ""));
      case rpc::ErrorCode::UNAVAILABLE: return Status::Unavailable(m);
      case rpc::ErrorCode::TIMEOUT: return Status::Timeout(m);
      case rpc::ErrorCode::STALE_EPOCH: return Status::Aborted(m);
      default: return Status::Internal(m);
    }
  } catch (const TTransportException& e) {
    if (e.getType() == TTransportException::TIMED_OUT) {
      return Status::Timeout(what + ": timed out (" + e.what() + ")");
    }
    return Status::Unavailable(what + ": " + e.what());
  } catch (const apache::thrift::TException& e) {
    return Status::Unavailable(what + ": " + e.what());
  } catch (const std::exception& e) {
    return Status::Internal(what + ": " + e.what());
  }
}

Result<rpc::NodeStatus> GetNodeStatus(const NodeEntry& node, const ToolCredentials& creds,
                                      const AdminTimeouts& timeouts) {
  rpc::NodeStatus out;
  std::string what = "GetStatus on " + node.name + " (" + node.address + ")";
  if (node.role == NodeKind::kCoordinator) {
    auto c = CoordinatorConnection::Open(node.address, timeouts, creds.ForClientListener(node));
    if (!c.ok()) return c.status();
    DTX_RETURN_IF_ERROR(RunThrift(what, [&] { (*c)->client().GetStatus(out); }));
  } else {
    auto c = ParticipantConnection::Open(node.address, timeouts, creds.ForClientListener(node));
    if (!c.ok()) return c.status();
    DTX_RETURN_IF_ERROR(RunThrift(what, [&] { (*c)->client().GetStatus(out); }));
  }
  return out;
}

std::string DescribeListeners(const rpc::NodeStatus& status) {
  std::string out;
  if (!status.__isset.listeners) return out;
  for (const rpc::ListenerStatus& l : status.listeners) {
    if (!out.empty()) out += ", ";
    out += l.name + " " + l.address + " (" +
           (l.client_cert_required ? "mutual TLS"
            : l.tls                ? "TLS"
                                   : "plaintext") +
           ")";
  }
  return out;
}

namespace {

// The node's admin listener, or InvalidArgument when cluster.conf has none.
// A failed connect names the node: with TLS a node that accepts but does not
// answer (stopped, hung) fails here, in the handshake, not in the call.
Result<std::unique_ptr<AdminConnection>> OpenAdmin(const NodeEntry& node,
                                                   const ToolCredentials& creds,
                                                   const AdminTimeouts& timeouts) {
  if (node.admin_address.empty()) {
    return Status::InvalidArgument(node.name +
                                   " has no admin address in cluster.conf (run `dtxctl cluster "
                                   "up` once to add it)");
  }
  auto c = AdminConnection::Open(node.admin_address, timeouts, creds.ForAdminListener(node));
  if (c.ok()) return c;
  const std::string m = node.name + " (admin " + node.admin_address + "): " + c.status().message();
  switch (c.status().code()) {
    case Status::Code::kTimeout: return Status::Timeout(m);
    case Status::Code::kPermissionDenied: return Status::PermissionDenied(m);
    case Status::Code::kInvalidArgument: return Status::InvalidArgument(m);
    default: return Status::Unavailable(m);
  }
}

}  // namespace

Status SetNodeFailpoint(const NodeEntry& node, const ToolCredentials& creds,
                        const std::string& name, const std::string& action,
                        const AdminTimeouts& timeouts) {
  auto c = OpenAdmin(node, creds, timeouts);
  if (!c.ok()) return c.status();
  return RunThrift("SetFailpoint on " + node.name + " (admin " + node.admin_address + ")",
                   [&] { (*c)->client().SetFailpoint(name, action); });
}

Result<std::vector<rpc::InDoubtTx>> ListNodeInDoubt(const NodeEntry& node,
                                                    const ToolCredentials& creds,
                                                    const AdminTimeouts& timeouts) {
  if (node.role != NodeKind::kParticipant) {
    return Status::InvalidArgument(node.name + " is not a participant");
  }
  auto c = OpenAdmin(node, creds, timeouts);
  if (!c.ok()) return c.status();
  std::vector<rpc::InDoubtTx> out;
  DTX_RETURN_IF_ERROR(
      RunThrift("ListInDoubt on " + node.name + " (admin " + node.admin_address + ")",
                [&] { (*c)->client().ListInDoubt(out); }));
  return out;
}

Result<rpc::TraceResponse> GetNodeTrace(const NodeEntry& node, const ToolCredentials& creds,
                                        const rpc::TxId& txid, const AdminTimeouts& timeouts) {
  auto c = OpenAdmin(node, creds, timeouts);
  if (!c.ok()) return c.status();
  rpc::TraceResponse out;
  DTX_RETURN_IF_ERROR(RunThrift("GetTrace on " + node.name + " (admin " + node.admin_address + ")",
                                [&] { (*c)->client().GetTrace(out, txid); }));
  return out;
}

Status WaitUntilReady(const NodeEntry& node, const ToolCredentials& creds, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  AdminTimeouts t{.connect_timeout_ms = 500, .recv_timeout_ms = 2000};
  Status last;
  for (;;) {
    auto st = GetNodeStatus(node, creds, t);
    if (st.ok()) return Status::OK();
    last = st.status();
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::Timeout(node.name + " did not answer GetStatus within " +
                             std::to_string(timeout_ms) + " ms; last error: " + last.ToString());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void QuietThriftLogging() {
  apache::thrift::GlobalOutput.setOutputFunction([](const char*) {});
}

std::string TxIdHex(const rpc::TxId& txid) {
  return TxId{static_cast<uint64_t>(txid.hi), static_cast<uint64_t>(txid.lo)}.ToString();
}

}  // namespace dtx::tools
