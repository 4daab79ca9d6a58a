// Handler: the Thrift edge of a node, the part every node type shares.
//
// RpcServer builds one handler object per connection (common/rpc_server.h
// RpcProcessorFactory), handed the caller's PeerIdentity (common/identity.h).
// Every handler of a node reaches the runtime through one shared
// HandlerTarget, which Node::Shutdown() detaches: a request that arrives
// after it never reaches a runtime that is going away.
//
// A runtime's handler derives from Handler<Service, Target> (Service: the
// generated cob-style interface, e.g. rpc::CoordinatorPeerCobSvIf; Target:
// the runtime's implementation it forwards to) and implements the service's
// own calls, starting each with `if (target() == nullptr)` (detached: the
// node is shutting down) and, for a peer or admin call, a Permit() check
// against the node's AccessPolicy (node/access.h). The Admin service
// (idl/dtx.thrift) is AdminHandler below, the same for both node kinds.
//
// Threading: loop thread only (RpcServer calls handlers there).
// Ownership: the HandlerTarget is shared by the node and every connection's
// handler; `target`, `node` and `policy` must stay valid until Detach().
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <thrift/Thrift.h>

#include "common/failpoint.h"
#include "common/identity.h"
#include "common/log.h"
#include "common/rpc_client.h"
#include "common/rpc_error.h"
#include "common/trace_rpc.h"
#include "Admin.h"
#include "node/access.h"
#include "node/node.h"

namespace dtx::node {

// SetFailpoint's refusal on a node started without --enable-failpoints.
inline constexpr const char* kFailpointsOffMessage =
    "failpoints are off: this node was started without --enable-failpoints";

// One refusal WARN line per this interval and node (a flood of forged calls
// must not flood the log); the count of the ones left out goes with the next.
inline constexpr uint64_t kRefusalLogIntervalMs = 1000;

// What every handler of a node forwards to; Detach() (Node::Shutdown) cuts
// them all at once.
template <typename Target>
class HandlerTarget final : public Detachable {
 public:
  HandlerTarget(Target* target, const Node* node, const AccessPolicy* policy)
      : target_(target),
        node_(node),
        policy_(policy),
        failpoints_enabled_(node->failpoints_enabled()) {}

  void Detach() override {
    target_ = nullptr;
    node_ = nullptr;
  }
  Target* target() const { return target_; }
  const Node* node() const { return node_; }
  const AccessPolicy& policy() const { return *policy_; }
  // Copied from the node at construction: SetFailpoint is answered after
  // Detach() too.
  bool failpoints_enabled() const { return failpoints_enabled_; }

  // Logs a refusal, at most one line per kRefusalLogIntervalMs.
  void LogRefusal(const Status& refused) {
    const uint64_t now_ms =
        static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::steady_clock::now().time_since_epoch())
                                  .count());
    if (logged_ms_ != 0 && now_ms - logged_ms_ < kRefusalLogIntervalMs) {
      ++refusals_not_logged_;
      return;
    }
    if (refusals_not_logged_ > 0) {
      DTX_LOG_WARN("{} (and {} more refusals not logged)", refused.message(), refusals_not_logged_);
    } else {
      DTX_LOG_WARN("{}", refused.message());
    }
    logged_ms_ = now_ms;
    refusals_not_logged_ = 0;
  }

 private:
  Target* target_;              // nullptr once detached
  const Node* node_;            // nullptr once detached
  const AccessPolicy* policy_;  // never detached: it must outlive every handler's call
  const bool failpoints_enabled_;
  uint64_t logged_ms_ = 0;
  uint64_t refusals_not_logged_ = 0;
};

template <typename Service, typename Target>
class Handler : public Service {
 public:
  using ExnCob = std::function<void(apache::thrift::TDelayedException*)>;

  Handler(std::shared_ptr<HandlerTarget<Target>> shared, PeerIdentity caller)
      : shared_(std::move(shared)), caller_(std::move(caller)) {}

  const PeerIdentity& caller() const { return caller_; }

 protected:
  static apache::thrift::TDelayedException* Delay(const rpc::DtxError& e) {
    return apache::thrift::TDelayedException::delayException(e);
  }
  // An error callback of the runtime that answers through `exn_cob`.
  static std::function<void(const rpc::DtxError&)> FailVia(ExnCob exn_cob) {
    return [exn_cob = std::move(exn_cob)](const rpc::DtxError& e) { exn_cob(Delay(e)); };
  }

  Target* target() const { return shared_->target(); }
  // For a call answered later: its target is looked up again then.
  const std::shared_ptr<HandlerTarget<Target>>& shared() const { return shared_; }
  const Node* node() const { return shared_->node(); }
  const AccessPolicy& policy() const { return shared_->policy(); }

  // True when `allowed` is OK. Otherwise answers the call through `exn_cob`
  // with PERMISSION_DENIED and the policy's message, logs it (rate-limited)
  // and returns false: the caller returns at once.
  bool Permit(const Status& allowed, const ExnCob& exn_cob) {
    if (allowed.ok()) return true;
    shared_->LogRefusal(allowed);
    exn_cob(Delay(DtxErrorFromStatus(allowed)));
    return false;
  }

  // Admin: arms a failpoint (common/failpoint.h); a bad name or action is
  // BAD_ARGUMENT. PERMISSION_DENIED, and nothing armed, unless the node
  // started with --enable-failpoints (NodeOptions::enable_failpoints).
  // Answered even while shutting down: failpoints are process-wide.
  void SetFailpointImpl(std::function<void()> cob, ExnCob exn_cob, const std::string& name,
                        const std::string& action) {
    if (!Permit(policy().RequireAdmin(caller_, "SetFailpoint"), exn_cob)) return;
    if (!shared_->failpoints_enabled()) {
      DTX_LOG_WARN("SetFailpoint {}={} from {} refused: failpoints are off", name, action,
                   caller_.Describe());
      return exn_cob(Delay(DtxErrorFromStatus(Status::PermissionDenied(kFailpointsOffMessage))));
    }
    Status s = fp::Check(name, action);
    if (!s.ok()) return exn_cob(Delay(MakeDtxError(rpc::ErrorCode::BAD_ARGUMENT, s.message())));
    // The reply leaves before the point is armed: a `crash` it causes at once
    // (the next message of this loop turn) must not swallow it, since the
    // transport writes replies at the end of the turn (common/rpc_server.h).
    cob();
    if (node() != nullptr) node()->loop()->RunTurnEndNow();
    s = fp::Arm(name, action);
    DTX_CHECK_MSG(s.ok(), "a failpoint that passed fp::Check failed to arm");
    DTX_LOG_INFO("failpoint {}={} armed by SetFailpoint from {}", name, action, caller_.Describe());
  }

  // Admin: the span events this node holds for txid (none once detached).
  void GetTraceImpl(std::function<void(const rpc::TraceResponse&)> cob, ExnCob exn_cob,
                    const rpc::TxId& txid) {
    if (!Permit(policy().RequireAdmin(caller_, "GetTrace"), exn_cob)) return;
    if (node() == nullptr) return cob(rpc::TraceResponse());
    cob(obs::TraceToRpc(node()->name(), node()->trace().Lookup(dtx::FromRpc(txid))));
  }

 private:
  std::shared_ptr<HandlerTarget<Target>> shared_;
  const PeerIdentity caller_;
};

// A processor factory for Node::Serve (node/listeners.h ListenerFactories):
// one `HandlerT` (a Handler<..., Target>) per connection, constructed with
// the shared target and the caller, served by a `Processor` (the generated
// cob-style processor of its service, e.g. rpc::ParticipantPeerAsyncProcessor).
template <typename Processor, typename HandlerT, typename Target>
RpcProcessorFactory HandlerFactory(std::shared_ptr<HandlerTarget<Target>> shared) {
  return [shared = std::move(shared)](const PeerIdentity& caller) {
    return std::make_shared<Processor>(std::make_shared<HandlerT>(shared, caller));
  };
}

// The Admin service of a node (its admin listener): GetStatus for anyone who
// reaches the listener, SetFailpoint, GetTrace and ListInDoubt for an admin.
// Target provides `rpc::NodeStatus GetStatus() const` and
// `std::vector<rpc::InDoubtTx> ListInDoubt() const`.
template <typename Target>
class AdminHandler final : public Handler<rpc::AdminCobSvIf, Target> {
  using Base = Handler<rpc::AdminCobSvIf, Target>;

 public:
  using typename Base::ExnCob;
  // `detached_role`: the role GetStatus reports once the node shuts down.
  AdminHandler(std::shared_ptr<HandlerTarget<Target>> shared, PeerIdentity caller,
               rpc::NodeRole::type detached_role)
      : Base(std::move(shared), std::move(caller)), detached_role_(detached_role) {}

  void GetStatus(std::function<void(const rpc::NodeStatus&)> cob) override {
    if (this->target() == nullptr) {
      rpc::NodeStatus st;
      st.role = detached_role_;
      return cob(st);
    }
    cob(this->target()->GetStatus());
  }
  void SetFailpoint(std::function<void()> cob, ExnCob exn_cob, const std::string& name,
                    const std::string& action) override {
    this->SetFailpointImpl(std::move(cob), std::move(exn_cob), name, action);
  }
  void GetTrace(std::function<void(const rpc::TraceResponse&)> cob, ExnCob exn_cob,
                const rpc::TxId& txid) override {
    this->GetTraceImpl(std::move(cob), std::move(exn_cob), txid);
  }
  void ListInDoubt(std::function<void(const std::vector<rpc::InDoubtTx>&)> cob,
                   ExnCob exn_cob) override {
    if (!this->Permit(this->policy().RequireAdmin(this->caller(), "ListInDoubt"), exn_cob)) return;
    if (this->target() == nullptr) return cob({});
    cob(this->target()->ListInDoubt());
  }

  // A processor factory for Node::Serve: one AdminHandler per connection.
  static RpcProcessorFactory Factory(std::shared_ptr<HandlerTarget<Target>> shared,
                                     rpc::NodeRole::type detached_role) {
    return [shared = std::move(shared), detached_role](const PeerIdentity& caller) {
      return std::make_shared<rpc::AdminAsyncProcessor>(
          std::make_shared<AdminHandler>(shared, caller, detached_role));
    };
  }

 private:
  const rpc::NodeRole::type detached_role_;
};

}  // namespace dtx::node
