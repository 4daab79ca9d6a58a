#include "coordinator/peer_stub.h"

namespace dtx::coordinator {

void CoordinatorPeerStub::Replicate(const rpc::ReplicateRequest& req, int timeout_ms,
                                    RpcCallback<rpc::ReplicateResponse> done) {
  rpc::CoordinatorPeer_Replicate_pargs a;
  a.req = &req;
  CallRpc<rpc_method::CoordinatorPeer_Replicate>(channel_, a, timeout_ms, std::move(done));
}

void CoordinatorPeerStub::Heartbeat(const rpc::HeartbeatRequest& req, int timeout_ms,
                                    RpcCallback<rpc::HeartbeatResponse> done) {
  rpc::CoordinatorPeer_Heartbeat_pargs a;
  a.req = &req;
  CallRpc<rpc_method::CoordinatorPeer_Heartbeat>(channel_, a, timeout_ms, std::move(done));
}

void ParticipantPeerStub::Heartbeat(const rpc::HeartbeatRequest& req, int timeout_ms,
                                    RpcCallback<rpc::HeartbeatResponse> done) {
  rpc::ParticipantPeer_Heartbeat_pargs a;
  a.req = &req;
  CallRpc<rpc_method::ParticipantPeer_Heartbeat>(channel_, a, timeout_ms, std::move(done));
}

void ParticipantPeerStub::AdoptEpoch(
    rpc::Epoch epoch, const std::string& coordinator, int timeout_ms,
    std::function<void(const RpcStatus&, const AdoptEpochRefusal&)> done) {
  rpc::ParticipantPeer_AdoptEpoch_pargs a;
  a.epoch = &epoch;
  a.coordinator = &coordinator;
  CallRpc<rpc_method::ParticipantPeer_AdoptEpoch>(channel_, a, timeout_ms,
                                                  [done = std::move(done)](const RpcStatus& st) {
                                                    AdoptEpochRefusal refusal;
                                                    refusal.current_epoch = st.current_epoch();
                                                    if (st.epoch_owner())
                                                      refusal.owner = *st.epoch_owner();
                                                    done(st, refusal);
                                                  });
}

}  // namespace dtx::coordinator
