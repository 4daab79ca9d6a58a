// Handler: the Thrift edge of a node, the part every node type shares.
//
// A runtime's handler derives from Handler<Service, Target> (Service: the
// generated cob-style interface, e.g. rpc::CoordinatorPeerCobSvIf; Target:
// the runtime's implementation it forwards to) and implements the service's
// own calls, starting each with `if (target_ == nullptr)` (detached: the
// node is shutting down). SetFailpoint and GetTrace are implemented here,
// once. Node::Shutdown() calls Detach(), so a request that arrives after it
// never reaches a runtime that is going away.
//
// Threading: loop thread only (RpcServer calls handlers there).
#pragma once

#include <functional>
#include <string>
#include <utility>

#include <thrift/Thrift.h>

#include "common/failpoint.h"
#include "common/log.h"
#include "common/rpc_client.h"
#include "common/rpc_error.h"
#include "common/trace_rpc.h"
#include "node/node.h"

namespace dtx::node {

// SetFailpoint's refusal on a node started without --enable-failpoints.
inline constexpr const char* kFailpointsOffMessage =
    "failpoints are off: this node was started without --enable-failpoints";

template <typename Service, typename Target>
class Handler : public Service, public Detachable {
 public:
  using ExnCob = std::function<void(apache::thrift::TDelayedException*)>;

  // `target` and `node` must stay valid until Detach().
  Handler(Target* target, const Node* node)
      : target_(target), node_(node), failpoints_enabled_(node->failpoints_enabled()) {}

  void Detach() override {
    target_ = nullptr;
    node_ = nullptr;
  }

  // Arms a failpoint (common/failpoint.h); a bad name or action is
  // BAD_ARGUMENT. PERMISSION_DENIED, and nothing armed, unless the node
  // started with --enable-failpoints (NodeOptions::enable_failpoints).
  // Answered even while shutting down: failpoints are process-wide.
  void SetFailpoint(std::function<void()> cob, ExnCob exn_cob, const std::string& name,
                    const std::string& action) override {
    if (!failpoints_enabled_) {
      DTX_LOG_WARN("SetFailpoint {}={} refused: failpoints are off", name, action);
      return exn_cob(Delay(DtxErrorFromStatus(Status::PermissionDenied(kFailpointsOffMessage))));
    }
    Status s = fp::Arm(name, action);
    if (!s.ok()) return exn_cob(Delay(MakeDtxError(rpc::ErrorCode::BAD_ARGUMENT, s.message())));
    DTX_LOG_INFO("failpoint {}={} armed by SetFailpoint", name, action);
    cob();
  }

  // The span events this node holds for txid (none once detached).
  void GetTrace(std::function<void(const rpc::TraceResponse&)> cob,
                const rpc::TxId& txid) override {
    if (node_ == nullptr) return cob(rpc::TraceResponse());
    cob(obs::TraceToRpc(node_->name(), node_->trace().Lookup(dtx::FromRpc(txid))));
  }

 protected:
  static apache::thrift::TDelayedException* Delay(const rpc::DtxError& e) {
    return apache::thrift::TDelayedException::delayException(e);
  }
  // An error callback of the runtime that answers through `exn_cob`.
  static std::function<void(const rpc::DtxError&)> FailVia(ExnCob exn_cob) {
    return [exn_cob = std::move(exn_cob)](const rpc::DtxError& e) { exn_cob(Delay(e)); };
  }

  Target* target_;    // nullptr once detached
  const Node* node_;  // nullptr once detached
  // Copied from the node at construction: SetFailpoint is answered after
  // Detach() too.
  const bool failpoints_enabled_;
};

}  // namespace dtx::node
