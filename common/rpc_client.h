// Node-to-node client on the EventLoop: PeerChannel (one pipelined connection
// to one peer) and the typed async stubs ParticipantStub / CoordinatorStub.
//
// Wire format: the same framed binary Thrift as RpcServer (rpc_server.h).
// Calls are written with the generated <Svc>_<method>_pargs and the channel's
// own sequence ids; replies are read with <Svc>_<method>_presult and matched
// to their call by seqid, so replies may arrive in any order.
//
// Connection life cycle of a PeerChannel:
//   idle --Call()--> connecting --ok--> connected --drop/error--> backoff
//   backoff --(backoff_ms elapsed)--> idle; connecting --fail--> backoff.
// - Calls made while connecting are queued (they count as in flight) and
//   written once connected.
// - When the connection drops (EOF, error, undecodable framing), every call
//   in flight fails at once with Unavailable, and the channel enters backoff:
//   calls made during backoff fail at once with Unavailable (fail fast; no
//   queueing for a peer known to be down). Backoff starts at
//   reconnect_backoff_initial_ms, doubles (with +-20% jitter) on every
//   consecutive failure up to reconnect_backoff_max_ms, and resets after a
//   successful connect. After backoff the next Call() reconnects.
// - Each call has its own timeout (timeout_ms > 0): when it expires the
//   callback gets Timeout and a late reply is dropped; the connection stays.
// - At most in_flight_max calls may be in flight; a call past it fails at once
//   with Busy.
// - A failure that struck before any byte of the call reached a socket (busy,
//   backoff, connect failure or timeout while still queued, closed channel)
//   carries RpcStatus::not_sent(): the peer never saw the call.
//
// Callbacks: every callback runs exactly once, on the loop thread, never
// inside the Call() that issued it (failures detected at call time are
// delivered on the next loop iteration), and must not throw. A callback may
// issue new calls and may Close() the channel.
//
// Ownership / lifetime: PeerChannel is held by shared_ptr (stubs share one
// channel per peer address). Close() fails every pending call with
// Unavailable("channel closed"), synchronously, before it returns; the
// destructor calls Close(), so an owner that must not receive callbacks while
// it is being destroyed calls Close() first. Thread-safety: loop thread only.
#pragma once

#include <thrift/protocol/TProtocol.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "Coordinator.h"
#include "Participant.h"
#include "common/event_loop.h"
#include "common/rpc_error.h"
#include "common/rpc_server.h"
#include "common/status.h"
#include "common/types.h"
#include "dtx_types.h"

namespace dtx {

inline constexpr size_t kPeerInFlightMax = 8192;
inline constexpr int kPeerConnectTimeoutMs = 1000;
inline constexpr int kPeerReconnectBackoffInitialMs = 20;
inline constexpr int kPeerReconnectBackoffMaxMs = 1000;

struct PeerChannelOptions {
  size_t in_flight_max = kPeerInFlightMax;
  int connect_timeout_ms = kPeerConnectTimeoutMs;
  int reconnect_backoff_initial_ms = kPeerReconnectBackoffInitialMs;
  int reconnect_backoff_max_ms = kPeerReconnectBackoffMaxMs;
  size_t frame_bytes_max = kRpcFrameBytesMax;        // for replies
  size_t container_items_max = kRpcContainerItemsMax;  // for replies
};

struct PeerChannelStats {
  uint64_t connects = 0;         // successful connects
  uint64_t connect_failures = 0;
  uint64_t disconnects = 0;      // established connections lost
  uint64_t calls = 0;
  uint64_t timeouts = 0;
  uint64_t late_replies = 0;     // reply for an unknown (timed-out) seqid
};

// "host:port" -> (host, port). InvalidArgument when malformed. IPv6 hosts in
// brackets: "[::1]:9000".
Status ParseHostPort(const std::string& address, std::string* host, int* port);

class PeerChannel : public std::enable_shared_from_this<PeerChannel> {
 public:
  // Writes the call's arguments (the generated _pargs struct) to `out`.
  using WriteArgs = std::function<void(apache::thrift::protocol::TProtocol* out)>;
  // Called once. With OK, `in` is positioned just after the reply's message
  // header (T_REPLY with the call's seqid) and valid only during the call:
  // read the _presult struct from it, then readMessageEnd(). Thrift
  // exceptions thrown while reading are the callee's to catch. With a non-OK
  // status `in` is null. A T_EXCEPTION reply (TApplicationException) arrives
  // as a non-OK status: UNKNOWN_METHOD -> NotSupported, others -> Internal.
  using OnReply =
      std::function<void(const RpcStatus& status, apache::thrift::protocol::TProtocol* in)>;

  // `address` is "host:port" with a numeric host or "localhost". A malformed
  // address makes every call fail with InvalidArgument.
  static std::shared_ptr<PeerChannel> Create(EventLoop* loop, std::string address,
                                             PeerChannelOptions options = {});
  ~PeerChannel();
  PeerChannel(const PeerChannel&) = delete;
  PeerChannel& operator=(const PeerChannel&) = delete;

  // Sends one call of `method` with a fresh seqid (see the class comment for
  // queueing, timeouts and failures). timeout_ms must be > 0.
  void Call(const std::string& method, const WriteArgs& write_args, int timeout_ms,
            OnReply on_reply);

  // Closes the connection, fails every pending call with Unavailable, and
  // fails later calls likewise. Safe to call twice.
  void Close();

  const std::string& address() const { return address_; }
  bool connected() const;
  size_t in_flight() const;
  const PeerChannelStats& stats() const;

 private:
  struct Impl;  // owns the uv handles; see event_loop.h for the rule
  PeerChannel(EventLoop* loop, std::string address, PeerChannelOptions options);
  std::string address_;
  std::shared_ptr<Impl> impl_;
};

// One callback type per reply type. `const RpcStatus&` also accepts lambdas
// taking `const Status&`. On a non-OK status the value is default-constructed.
template <typename T>
using RpcCallback = std::function<void(const RpcStatus&, const T&)>;
using RpcDoneCallback = std::function<void(const RpcStatus&)>;

// Typed async stub for the Participant service. Every method sends one call
// on the shared channel; `done` runs once on the loop thread (PeerChannel
// rules). DtxError replies map to Status by rpc_error.h. Cheap to copy.
class ParticipantStub {
 public:
  ParticipantStub() = default;
  explicit ParticipantStub(std::shared_ptr<PeerChannel> channel) : channel_(std::move(channel)) {}
  ParticipantStub(EventLoop* loop, std::string address, PeerChannelOptions options = {})
      : channel_(PeerChannel::Create(loop, std::move(address), options)) {}

  void Read(const std::string& key, int timeout_ms, RpcCallback<rpc::ReadResult> done);
  void Prepare(const rpc::PrepareRequest& req, int timeout_ms,
               RpcCallback<rpc::PrepareResponse> done);
  void Commit(const rpc::TxId& txid, rpc::Epoch epoch, int timeout_ms, RpcDoneCallback done);
  void Abort(const rpc::TxId& txid, rpc::Epoch epoch, int timeout_ms, RpcDoneCallback done);
  void GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done);
  void ListInDoubt(int timeout_ms, RpcCallback<std::vector<rpc::InDoubtTx>> done);
  void SetFailpoint(const std::string& name, const std::string& action, int timeout_ms,
                    RpcDoneCallback done);

  const std::shared_ptr<PeerChannel>& channel() const { return channel_; }

 private:
  std::shared_ptr<PeerChannel> channel_;
};

// Typed async stub for the Coordinator service; same rules as ParticipantStub.
class CoordinatorStub {
 public:
  CoordinatorStub() = default;
  explicit CoordinatorStub(std::shared_ptr<PeerChannel> channel) : channel_(std::move(channel)) {}
  CoordinatorStub(EventLoop* loop, std::string address, PeerChannelOptions options = {})
      : channel_(PeerChannel::Create(loop, std::move(address), options)) {}

  void GetShardMap(int timeout_ms, RpcCallback<rpc::ShardMap> done);
  void Commit(const rpc::CommitRequest& req, int timeout_ms, RpcCallback<rpc::CommitResult> done);
  void QueryDecision(const rpc::TxId& txid, int timeout_ms,
                     RpcCallback<rpc::Decision::type> done);
  void GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done);
  void SetFailpoint(const std::string& name, const std::string& action, int timeout_ms,
                    RpcDoneCallback done);

  const std::shared_ptr<PeerChannel>& channel() const { return channel_; }

 private:
  std::shared_ptr<PeerChannel> channel_;
};

// Conversions between the wire TxId and dtx::TxId (bit-preserving).
rpc::TxId ToRpc(const TxId& t);
TxId FromRpc(const rpc::TxId& t);

}  // namespace dtx
