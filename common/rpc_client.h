// Node-to-node client on the EventLoop: PeerChannel (one pipelined connection
// to one peer), CallRpc (one typed call of a method bound in rpc_method::) and
// the typed async stubs built on it: ParticipantStub / CoordinatorStub for the
// client services (a node's client listener), ParticipantPeerStub /
// CoordinatorPeerStub for the peer services (its peer listener), AdminStub.
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
// - Writes are coalesced: the calls made during one loop turn leave in one
//   write at the turn's end (EventLoop::AtTurnEnd), with TLS in one encryption.
// - When the connection drops (EOF, error, undecodable framing), every call
//   in flight fails at once with Unavailable, and the channel enters backoff:
//   calls made during backoff fail at once with Unavailable (fail fast; no
//   queueing for a peer known to be down). Except when the connection had
//   served a reply: then the drop most likely is the server closing a
//   connection it found idle (common/rpc_server.h "Idle connections"), or
//   evicting it at its connection cap, and the channel goes straight to idle:
//   the next Call() connects anew, at once. If the peer is in fact gone, that
//   connect fails and backoff starts then. Calls that are safe to repeat
//   (Call's `safe_to_repeat`, kSafeToRepeat<M> for CallRpc: reads and status
//   calls) and were written to such a connection are sent once more on the
//   new connection, within their own timeout, instead of failing: the server
//   may have closed the connection before our request reached it. Any other
//   call fails with Unavailable (written: it may have run), and its caller
//   follows its own rules (the client's commit retries with is_retry).
//   Backoff starts at
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
// TLS (options.tls set): after the TCP connect the channel runs a TLS 1.3
// handshake (common/tls.h) and checks that the server's certificate names
// options.expected_server (a name, a kind, or both); the connection counts as
// connected, and queued calls are written, only then. A failed handshake (the
// server's certificate refused or naming someone else, our certificate
// refused by the server, a plaintext server, no handshake within
// tls_handshake_timeout_ms) is a connect failure: the calls fail with the
// reason (PermissionDenied when an identity was refused, Unavailable
// otherwise), the channel backs off and the next connection makes a new
// session. The reason is logged once (a warning) until it changes or a
// handshake succeeds. With TLS 1.3 a server refuses a client certificate
// only after the client considers the handshake done: calls written by then
// fail with the server's reason ("the peer refused our certificate: ...").
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
#include <optional>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "Admin.h"
#include "Coordinator.h"
#include "CoordinatorPeer.h"
#include "Participant.h"
#include "ParticipantPeer.h"
#include "common/event_loop.h"
#include "common/rpc_error.h"
#include "common/rpc_server.h"
#include "common/status.h"
#include "common/tls.h"
#include "common/types.h"
#include "common/wire.h"
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
  size_t frame_bytes_max = kRpcFrameBytesMax;          // for replies
  size_t container_items_max = kRpcContainerItemsMax;  // for replies
  // Client-side TLS context (TlsSide::kClient); null: plaintext.
  std::shared_ptr<const TlsContext> tls;
  // Whom the server's certificate must name (TLS only), e.g. {kParticipant,
  // "participant-2"} or {kCoordinator, ""} for any coordinator.
  TlsExpectedPeer expected_server;
  int tls_handshake_timeout_ms = kTlsHandshakeTimeoutMs;
};

struct PeerChannelStats {
  uint64_t connects = 0;          // successful connects
  uint64_t connect_failures = 0;  // including failed TLS handshakes
  uint64_t tls_handshake_failures = 0;
  uint64_t disconnects = 0;  // established connections lost
  uint64_t calls = 0;
  uint64_t timeouts = 0;
  uint64_t late_replies = 0;  // reply for an unknown (timed-out) seqid
  uint64_t calls_repeated = 0;  // safe-to-repeat calls sent again after a lost connection
  uint64_t writes = 0;        // socket writes of calls (all calls of one loop turn)
};

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
  // `safe_to_repeat`: the call changes nothing at the peer, so it may be sent
  // a second time if the connection it was written to is lost (see the class
  // comment); the channel then keeps a copy of its frame until it completes.
  void Call(const std::string& method, const WriteArgs& write_args, int timeout_ms,
            OnReply on_reply, bool safe_to_repeat = false);

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

// ---- one method, bound once ----
//
// DTX_RPC_METHOD(Svc, Method) declares rpc_method::Svc_Method with the
// generated argument and result types of Svc.Method and its name on the wire,
// all from the same two tokens: a call site names the method by type
// (CallRpc<rpc_method::Participant_Read>), never by string.
#define DTX_RPC_METHOD(Svc, Method)                       \
  struct Svc##_##Method {                                 \
    using PArgs = ::dtx::rpc::Svc##_##Method##_pargs;     \
    using PResult = ::dtx::rpc::Svc##_##Method##_presult; \
    static constexpr const char* kName = #Method;         \
  }

namespace rpc_method {
// The client listener.
DTX_RPC_METHOD(Participant, Read);
DTX_RPC_METHOD(Participant, GetStatus);
DTX_RPC_METHOD(Coordinator, GetShardMap);
DTX_RPC_METHOD(Coordinator, Commit);
DTX_RPC_METHOD(Coordinator, GetOutcome);
DTX_RPC_METHOD(Coordinator, GetStatus);
// The admin listener of either node kind.
DTX_RPC_METHOD(Admin, GetStatus);
DTX_RPC_METHOD(Admin, ListInDoubt);
DTX_RPC_METHOD(Admin, SetFailpoint);
// The peer listener.
DTX_RPC_METHOD(ParticipantPeer, Prepare);
DTX_RPC_METHOD(ParticipantPeer, Commit);
DTX_RPC_METHOD(ParticipantPeer, Abort);
DTX_RPC_METHOD(ParticipantPeer, Heartbeat);
DTX_RPC_METHOD(ParticipantPeer, AdoptEpoch);
DTX_RPC_METHOD(ParticipantPeer, GetStatus);
DTX_RPC_METHOD(CoordinatorPeer, QueryDecision);
DTX_RPC_METHOD(CoordinatorPeer, Replicate);
DTX_RPC_METHOD(CoordinatorPeer, Heartbeat);
DTX_RPC_METHOD(CoordinatorPeer, GetStatus);

// The methods that change nothing at the callee (reads, status, the shard
// map, a transaction's outcome): PeerChannel sends such a call once more when
// the connection it went out on is lost before the reply (a server closing an
// idle connection races with the request). Commit, Prepare, Abort, Replicate,
// AdoptEpoch, SetFailpoint are not: their callers have their own rules.
template <typename M>
inline constexpr bool kSafeToRepeat = false;
template <>
inline constexpr bool kSafeToRepeat<Participant_Read> = true;
template <>
inline constexpr bool kSafeToRepeat<Participant_GetStatus> = true;
template <>
inline constexpr bool kSafeToRepeat<Coordinator_GetShardMap> = true;
template <>
inline constexpr bool kSafeToRepeat<Coordinator_GetOutcome> = true;
template <>
inline constexpr bool kSafeToRepeat<Coordinator_GetStatus> = true;
template <>
inline constexpr bool kSafeToRepeat<Admin_GetStatus> = true;
template <>
inline constexpr bool kSafeToRepeat<Admin_ListInDoubt> = true;
template <>
inline constexpr bool kSafeToRepeat<ParticipantPeer_GetStatus> = true;
template <>
inline constexpr bool kSafeToRepeat<CoordinatorPeer_GetStatus> = true;
}  // namespace rpc_method

namespace internal {

PeerChannel* CheckedChannel(const std::shared_ptr<PeerChannel>& channel);

// Reads a reply's _presult (the channel positioned `in` after the message
// header). The value method's result lands in *value (T = void: a void
// method). OK with a result (void: without a declared exception); the
// declared DtxError as its RpcStatus (every DtxError field kept); Internal
// when the reply has neither or does not decode.
template <typename PResult, typename T>
RpcStatus ReadReply(apache::thrift::protocol::TProtocol* in, T* value) {
  try {
    PResult r;
    if constexpr (!std::is_void_v<T>) r.success = value;
    r.read(in);
    in->readMessageEnd();
    if constexpr (!std::is_void_v<T>) {
      if (r.__isset.success) return RpcStatus();
    }
    if constexpr (requires { r.err; }) {
      if (r.__isset.err) return StatusFromDtxError(r.err);
    }
    if constexpr (std::is_void_v<T>) {
      return RpcStatus();
    } else {
      return Status::Internal("reply has neither a result nor an error");
    }
  } catch (const std::exception& e) {
    return Status::Internal(std::string("undecodable reply: ") + e.what());
  }
}

template <typename PArgs>
PeerChannel::WriteArgs WriteArgsOf(const PArgs& args) {
  // PeerChannel::Call writes the arguments before it returns.
  return [&args](apache::thrift::protocol::TProtocol* out) { args.write(out); };
}

}  // namespace internal

// Sends one call of method M (an rpc_method:: type) with `args` on `channel`
// and hands the decoded reply to `done` (the PeerChannel rules: once, on the
// loop thread, never inside this call). A value method's `done` gets the
// result, default-constructed unless OK; a void method's gets the status.
template <typename M, typename T>
void CallRpc(const std::shared_ptr<PeerChannel>& channel, const typename M::PArgs& args,
             int timeout_ms, RpcCallback<T> done) {
  static_assert(std::is_same_v<decltype(std::declval<typename M::PResult&>().success), T*>,
                "the callback's value type is not the method's result type");
  internal::CheckedChannel(channel)->Call(
      M::kName, internal::WriteArgsOf(args), timeout_ms,
      [done = std::move(done)](const RpcStatus& st, apache::thrift::protocol::TProtocol* in) {
        T value{};
        RpcStatus result = st.ok() ? internal::ReadReply<typename M::PResult>(in, &value) : st;
        if (!result.ok()) value = T{};
        done(result, value);  // outside ReadReply: a callback bug is not a bad reply
      },
      rpc_method::kSafeToRepeat<M>);
}

template <typename M>
void CallRpc(const std::shared_ptr<PeerChannel>& channel, const typename M::PArgs& args,
             int timeout_ms, RpcDoneCallback done) {
  static_assert(
      !requires(typename M::PResult r) { r.success; }, "a value method needs RpcCallback<T>");
  internal::CheckedChannel(channel)->Call(
      M::kName, internal::WriteArgsOf(args), timeout_ms,
      [done = std::move(done)](const RpcStatus& st, apache::thrift::protocol::TProtocol* in) {
        done(st.ok() ? internal::ReadReply<typename M::PResult, void>(in, nullptr) : st);
      },
      rpc_method::kSafeToRepeat<M>);
}

// Typed async stub for the Participant service (a participant's client
// listener). Every method sends one call on the shared channel; `done` runs
// once on the loop thread (PeerChannel rules). DtxError replies map to Status
// by rpc_error.h. Cheap to copy.
class ParticipantStub {
 public:
  ParticipantStub() = default;
  explicit ParticipantStub(std::shared_ptr<PeerChannel> channel) : channel_(std::move(channel)) {}
  ParticipantStub(EventLoop* loop, std::string address, PeerChannelOptions options = {})
      : channel_(PeerChannel::Create(loop, std::move(address), options)) {}

  void Read(const std::string& key, int timeout_ms, RpcCallback<rpc::ReadResult> done);
  void GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done);

  const std::shared_ptr<PeerChannel>& channel() const { return channel_; }

 private:
  std::shared_ptr<PeerChannel> channel_;
};

// Typed async stub for the Coordinator service (a coordinator's client
// listener); same rules as ParticipantStub.
class CoordinatorStub {
 public:
  CoordinatorStub() = default;
  explicit CoordinatorStub(std::shared_ptr<PeerChannel> channel) : channel_(std::move(channel)) {}
  CoordinatorStub(EventLoop* loop, std::string address, PeerChannelOptions options = {})
      : channel_(PeerChannel::Create(loop, std::move(address), options)) {}

  void GetShardMap(int timeout_ms, RpcCallback<rpc::ShardMap> done);
  void Commit(const rpc::CommitRequest& req, int timeout_ms, RpcCallback<rpc::CommitResult> done);
  void GetOutcome(const rpc::TxId& txid, int timeout_ms, RpcCallback<rpc::Outcome::type> done);
  void GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done);

  const std::shared_ptr<PeerChannel>& channel() const { return channel_; }

 private:
  std::shared_ptr<PeerChannel> channel_;
};

// Typed async stub for the ParticipantPeer service (a participant's peer
// listener: what coordinators call); same rules as ParticipantStub.
class ParticipantPeerStub {
 public:
  ParticipantPeerStub() = default;
  explicit ParticipantPeerStub(std::shared_ptr<PeerChannel> channel)
      : channel_(std::move(channel)) {}
  ParticipantPeerStub(EventLoop* loop, std::string address, PeerChannelOptions options = {})
      : channel_(PeerChannel::Create(loop, std::move(address), options)) {}

  void Prepare(const rpc::PrepareRequest& req, int timeout_ms,
               RpcCallback<rpc::PrepareResponse> done);
  void Commit(const rpc::TxId& txid, rpc::Epoch epoch, int timeout_ms, RpcDoneCallback done);
  void Abort(const rpc::TxId& txid, rpc::Epoch epoch, const rpc::Attempt& attempt, int timeout_ms,
             RpcDoneCallback done);
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
  void GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done);

  const std::shared_ptr<PeerChannel>& channel() const { return channel_; }

 private:
  std::shared_ptr<PeerChannel> channel_;
};

// Typed async stub for the CoordinatorPeer service (a coordinator's peer
// listener: what participants and the other coordinator call); same rules as
// ParticipantStub.
class CoordinatorPeerStub {
 public:
  CoordinatorPeerStub() = default;
  explicit CoordinatorPeerStub(std::shared_ptr<PeerChannel> channel)
      : channel_(std::move(channel)) {}
  CoordinatorPeerStub(EventLoop* loop, std::string address, PeerChannelOptions options = {})
      : channel_(PeerChannel::Create(loop, std::move(address), options)) {}

  // `fingerprint`, `attempt`: idl/dtx.thrift QueryDecision (empty / all
  // zero: not known).
  void QueryDecision(const rpc::TxId& txid, const std::string& fingerprint,
                     const rpc::Attempt& attempt, int timeout_ms,
                     RpcCallback<rpc::Decision::type> done);
  void Replicate(const rpc::ReplicateRequest& req, int timeout_ms,
                 RpcCallback<rpc::ReplicateResponse> done);
  void Heartbeat(const rpc::HeartbeatRequest& req, int timeout_ms,
                 RpcCallback<rpc::HeartbeatResponse> done);
  void GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done);

  const std::shared_ptr<PeerChannel>& channel() const { return channel_; }

 private:
  std::shared_ptr<PeerChannel> channel_;
};

// Typed async stub for the Admin service (a node's admin listener); same
// rules as ParticipantStub.
class AdminStub {
 public:
  AdminStub() = default;
  explicit AdminStub(std::shared_ptr<PeerChannel> channel) : channel_(std::move(channel)) {}
  AdminStub(EventLoop* loop, std::string address, PeerChannelOptions options = {})
      : channel_(PeerChannel::Create(loop, std::move(address), options)) {}

  void GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done);
  void ListInDoubt(int timeout_ms, RpcCallback<std::vector<rpc::InDoubtTx>> done);
  void SetFailpoint(const std::string& name, const std::string& action, int timeout_ms,
                    RpcDoneCallback done);

  const std::shared_ptr<PeerChannel>& channel() const { return channel_; }

 private:
  std::shared_ptr<PeerChannel> channel_;
};

}  // namespace dtx
