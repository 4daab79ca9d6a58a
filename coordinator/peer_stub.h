// Async calls of the high-availability services (idl/dtx.thrift
// CoordinatorPeer, ParticipantPeer) on a PeerChannel: instantiations of
// common/rpc_client.h CallRpc, with its rules (callback once, on the loop
// thread, never inside the call; DtxError replies map to RpcStatus by
// rpc_error.h).
//
// A peer that does not serve the extended service answers UNKNOWN_METHOD and
// closes the connection (common/rpc_server.h): callers must not send these
// calls on a channel shared with other traffic unless the peer serves them.
//
// Thread-safety: loop thread only. Cheap to copy.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "common/rpc_client.h"

namespace dtx::coordinator {

class CoordinatorPeerStub {
 public:
  CoordinatorPeerStub() = default;
  CoordinatorPeerStub(EventLoop* loop, std::string address, PeerChannelOptions options = {})
      : channel_(PeerChannel::Create(loop, std::move(address), options)) {}

  void Replicate(const rpc::ReplicateRequest& req, int timeout_ms,
                 RpcCallback<rpc::ReplicateResponse> done);
  void Heartbeat(const rpc::HeartbeatRequest& req, int timeout_ms,
                 RpcCallback<rpc::HeartbeatResponse> done);
  const std::shared_ptr<PeerChannel>& channel() const { return channel_; }

 private:
  std::shared_ptr<PeerChannel> channel_;
};

class ParticipantPeerStub {
 public:
  ParticipantPeerStub() = default;
  ParticipantPeerStub(EventLoop* loop, std::string address, PeerChannelOptions options = {})
      : channel_(PeerChannel::Create(loop, std::move(address), options)) {}

  void Heartbeat(const rpc::HeartbeatRequest& req, int timeout_ms,
                 RpcCallback<rpc::HeartbeatResponse> done);
  // `done` gets, with a STALE_EPOCH refusal, the participant's current epoch
  // and its owner when the participant sent them (DtxError fields 4, 5).
  struct AdoptEpochRefusal {
    std::optional<int64_t> current_epoch;
    std::string owner;
  };
  void AdoptEpoch(rpc::Epoch epoch, const std::string& coordinator, int timeout_ms,
                  std::function<void(const RpcStatus&, const AdoptEpochRefusal&)> done);
  const std::shared_ptr<PeerChannel>& channel() const { return channel_; }

 private:
  std::shared_ptr<PeerChannel> channel_;
};

}  // namespace dtx::coordinator
