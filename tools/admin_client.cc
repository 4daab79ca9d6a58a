#include "tools/admin_client.h"

#include <thrift/TOutput.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>
#include <thrift/transport/TSocket.h>
#include <thrift/transport/TTransportException.h>

#include <chrono>
#include <thread>

#include "common/types.h"

namespace dtx::tools {

using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::transport::TFramedTransport;
using apache::thrift::transport::TSocket;
using apache::thrift::transport::TTransportException;

template <class ClientT>
Result<std::unique_ptr<StockConnection<ClientT>>> StockConnection<ClientT>::Open(
    const std::string& address, const AdminTimeouts& timeouts) {
  auto hp = ParseHostPort(address);
  if (!hp.ok()) return hp.status();
  std::unique_ptr<StockConnection> c(new StockConnection());
  c->socket_ = std::make_shared<TSocket>(hp->host, hp->port);
  c->socket_->setConnTimeout(timeouts.connect_timeout_ms);
  c->socket_->setRecvTimeout(timeouts.recv_timeout_ms);
  c->socket_->setSendTimeout(timeouts.recv_timeout_ms);
  c->transport_ = std::make_shared<TFramedTransport>(c->socket_);
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

Result<rpc::NodeStatus> GetNodeStatus(const NodeEntry& node, const AdminTimeouts& timeouts) {
  rpc::NodeStatus out;
  std::string what = "GetStatus on " + node.name + " (" + node.address + ")";
  if (node.role == NodeKind::kCoordinator) {
    auto c = CoordinatorConnection::Open(node.address, timeouts);
    if (!c.ok()) return c.status();
    DTX_RETURN_IF_ERROR(RunThrift(what, [&] { (*c)->client().GetStatus(out); }));
  } else {
    auto c = ParticipantConnection::Open(node.address, timeouts);
    if (!c.ok()) return c.status();
    DTX_RETURN_IF_ERROR(RunThrift(what, [&] { (*c)->client().GetStatus(out); }));
  }
  return out;
}

namespace {

// The node's admin listener, or InvalidArgument when cluster.conf has none.
Result<std::unique_ptr<AdminConnection>> OpenAdmin(const NodeEntry& node,
                                                   const AdminTimeouts& timeouts) {
  if (node.admin_address.empty()) {
    return Status::InvalidArgument(node.name +
                                   " has no admin address in cluster.conf (run `dtxctl cluster "
                                   "up` once to add it)");
  }
  return AdminConnection::Open(node.admin_address, timeouts);
}

}  // namespace

Status SetNodeFailpoint(const NodeEntry& node, const std::string& name, const std::string& action,
                        const AdminTimeouts& timeouts) {
  auto c = OpenAdmin(node, timeouts);
  if (!c.ok()) return c.status();
  return RunThrift("SetFailpoint on " + node.name + " (admin " + node.admin_address + ")",
                   [&] { (*c)->client().SetFailpoint(name, action); });
}

Result<std::vector<rpc::InDoubtTx>> ListNodeInDoubt(const NodeEntry& node,
                                                    const AdminTimeouts& timeouts) {
  if (node.role != NodeKind::kParticipant) {
    return Status::InvalidArgument(node.name + " is not a participant");
  }
  auto c = OpenAdmin(node, timeouts);
  if (!c.ok()) return c.status();
  std::vector<rpc::InDoubtTx> out;
  DTX_RETURN_IF_ERROR(
      RunThrift("ListInDoubt on " + node.name + " (admin " + node.admin_address + ")",
                [&] { (*c)->client().ListInDoubt(out); }));
  return out;
}

Result<rpc::TraceResponse> GetNodeTrace(const NodeEntry& node, const rpc::TxId& txid,
                                        const AdminTimeouts& timeouts) {
  auto c = OpenAdmin(node, timeouts);
  if (!c.ok()) return c.status();
  rpc::TraceResponse out;
  DTX_RETURN_IF_ERROR(RunThrift("GetTrace on " + node.name + " (admin " + node.admin_address + ")",
                                [&] { (*c)->client().GetTrace(out, txid); }));
  return out;
}

Status WaitUntilReady(const NodeEntry& node, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  AdminTimeouts t{.connect_timeout_ms = 500, .recv_timeout_ms = 2000};
  Status last;
  for (;;) {
    auto st = GetNodeStatus(node, t);
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
