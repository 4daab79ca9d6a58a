#include "coordinator/peer_stub.h"

#include "common/check.h"

namespace dtx::coordinator {
namespace {

using apache::thrift::protocol::TProtocol;

template <typename PResult, typename T>
PeerChannel::OnReply ValueReply(RpcCallback<T> done) {
  return [done = std::move(done)](const RpcStatus& st, TProtocol* in) {
    T value{};
    if (!st.ok()) {
      done(st, value);
      return;
    }
    RpcStatus result;
    try {
      PResult r;
      r.success = &value;
      r.read(in);
      in->readMessageEnd();
      if (r.__isset.success) {
        result = RpcStatus();
      } else if constexpr (requires { r.err; }) {
        result = r.__isset.err ? StatusFromDtxError(r.err)
                               : RpcStatus(Status::Internal("reply has neither a result nor an error"));
      } else {
        result = Status::Internal("reply has no result");
      }
    } catch (const std::exception& e) {
      result = Status::Internal(std::string("undecodable reply: ") + e.what());
    }
    if (!result.ok()) value = T{};
    done(result, value);
  };
}

template <typename PResult>
PeerChannel::OnReply VoidReply(RpcDoneCallback done) {
  return [done = std::move(done)](const RpcStatus& st, TProtocol* in) {
    if (!st.ok()) {
      done(st);
      return;
    }
    RpcStatus result;
    try {
      PResult r;
      r.read(in);
      in->readMessageEnd();
      if (r.__isset.err) result = StatusFromDtxError(r.err);
    } catch (const std::exception& e) {
      result = Status::Internal(std::string("undecodable reply: ") + e.what());
    }
    done(result);
  };
}

template <typename PArgs>
PeerChannel::WriteArgs Args(const PArgs& args) {
  return [&args](TProtocol* out) { args.write(out); };
}

PeerChannel* Channel(const std::shared_ptr<PeerChannel>& c) {
  DTX_CHECK_MSG(c != nullptr, "stub used without a channel");
  return c.get();
}

}  // namespace

void CoordinatorPeerStub::Replicate(const rpc::ReplicateRequest& req, int timeout_ms,
                                    RpcCallback<rpc::ReplicateResponse> done) {
  rpc::CoordinatorPeer_Replicate_pargs a;
  a.req = &req;
  Channel(channel_)->Call("Replicate", Args(a), timeout_ms,
                          ValueReply<rpc::CoordinatorPeer_Replicate_presult>(std::move(done)));
}

void CoordinatorPeerStub::Heartbeat(const rpc::HeartbeatRequest& req, int timeout_ms,
                                    RpcCallback<rpc::HeartbeatResponse> done) {
  rpc::CoordinatorPeer_Heartbeat_pargs a;
  a.req = &req;
  Channel(channel_)->Call("Heartbeat", Args(a), timeout_ms,
                          ValueReply<rpc::CoordinatorPeer_Heartbeat_presult>(std::move(done)));
}

void ParticipantPeerStub::Heartbeat(const rpc::HeartbeatRequest& req, int timeout_ms,
                                    RpcCallback<rpc::HeartbeatResponse> done) {
  rpc::ParticipantPeer_Heartbeat_pargs a;
  a.req = &req;
  Channel(channel_)->Call("Heartbeat", Args(a), timeout_ms,
                          ValueReply<rpc::ParticipantPeer_Heartbeat_presult>(std::move(done)));
}

void ParticipantPeerStub::AdoptEpoch(rpc::Epoch epoch, const std::string& coordinator, int timeout_ms,
                                     std::function<void(const RpcStatus&, const AdoptEpochRefusal&)> done) {
  rpc::ParticipantPeer_AdoptEpoch_pargs a;
  a.epoch = &epoch;
  a.coordinator = &coordinator;
  // As VoidReply, but a DtxError's current_epoch / epoch_owner (STALE_EPOCH)
  // are handed on too.
  Channel(channel_)->Call("AdoptEpoch", Args(a), timeout_ms,
                          [done = std::move(done)](const RpcStatus& st, TProtocol* in) {
                            AdoptEpochRefusal refusal;
                            if (!st.ok()) {
                              done(st, refusal);
                              return;
                            }
                            RpcStatus result;
                            try {
                              rpc::ParticipantPeer_AdoptEpoch_presult r;
                              r.read(in);
                              in->readMessageEnd();
                              if (r.__isset.err) {
                                result = StatusFromDtxError(r.err);
                                if (r.err.__isset.current_epoch) refusal.current_epoch = r.err.current_epoch;
                                if (r.err.__isset.epoch_owner) refusal.owner = r.err.epoch_owner;
                              }
                            } catch (const std::exception& e) {
                              result = Status::Internal(std::string("undecodable reply: ") + e.what());
                            }
                            done(result, refusal);
                          });
}

}  // namespace dtx::coordinator
