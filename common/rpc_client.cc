#include "common/rpc_client.h"

#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include <chrono>
#include <cstring>
#include <random>
#include <string_view>
#include <utility>

#include "common/address.h"
#include "common/check.h"
#include "common/log.h"
#include "common/rpc_framing.h"

namespace dtx {

using apache::thrift::TApplicationException;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TProtocol;
using apache::thrift::transport::TMemoryBuffer;

namespace {

struct OutFrame {
  uv_write_t req;
  std::string bytes;  // header + payload
};

}  // namespace

struct PeerChannel::Impl : std::enable_shared_from_this<PeerChannel::Impl> {
  enum class State { kIdle, kConnecting, kConnected, kBackoff, kClosed };

  struct Conn {
    uv_tcp_t handle;
    uv_connect_t connect_req;
    std::weak_ptr<Impl> owner;
    std::vector<uint8_t> in;          // plaintext received, not yet consumed
    std::unique_ptr<TlsSession> tls;  // null: plaintext
    bool closing = false;
    bool served = false;  // a reply arrived on it
  };

  struct Pending {
    OnReply on_reply;
    std::multimap<uint64_t, int32_t>::iterator deadline;
    bool written = false;  // handed to the socket
    // Safe-to-repeat calls only: the frame, to send again once on a new
    // connection if this one is lost (LostWith).
    std::string repeat_frame;
    bool repeated = false;  // sent again: it may have reached the peer before
    // The peer may have seen it.
    bool maybe_seen() const { return written || repeated; }
  };
  struct QueuedFrame {
    int32_t seqid;
    std::string bytes;
  };

  EventLoop* loop = nullptr;
  std::string address;
  PeerChannelOptions options;
  Status address_status;
  sockaddr_storage addr{};

  State state = State::kIdle;
  Conn* conn = nullptr;  // freed in its close callback
  int32_t next_seqid = 1;
  std::unordered_map<int32_t, Pending> pending;
  std::multimap<uint64_t, int32_t> deadlines;  // deadline_ms -> seqid
  std::vector<QueuedFrame> queued;             // frames waiting for the connection
  TimerId deadline_timer = 0;
  uint64_t deadline_timer_at = 0;
  TimerId connect_timer = 0;
  TimerId backoff_timer = 0;
  int backoff_ms = 0;
  std::minstd_rand rng;
  PeerChannelStats stats;
  std::string last_tls_failure;  // logged already; cleared by a handshake
  std::string out_plain;         // frames queued this turn (WriteFrame)
  bool flush_queued = false;

  void FailLater(OnReply on_reply, RpcStatus status);
  void StartConnect();
  void OnConnected(int status);
  void StartReading();
  // The connection is ready for calls (after TCP connect, or TLS handshake).
  void Established();
  void Lost(const std::string& why, bool was_connected);
  // Drops the connection: `failure` goes to every pending call.
  void LostWith(const Status& failure, bool was_connected, bool log_it);
  void TlsFailed(const Status& why, bool was_connected);
  // Writes the TLS session's output (handshake messages, alerts).
  void FlushTlsOutput();
  void WriteBytes(std::string bytes);
  void FailAllPending(const RpcStatus& status);
  // Queues a frame for the turn's end (FlushFrames): the frames of one loop
  // turn leave in one write (one TLS record per 16 KiB).
  void WriteFrame(const std::string& frame);
  void FlushFrames();
  void OnRead(ssize_t nread, const uv_buf_t* buf);
  // False if the connection was dropped.
  bool HandleReply(const uint8_t* data, uint32_t len);
  void ArmDeadlineTimer();
  void OnDeadlineTimer();
  void CloseConn();
  void CancelTimer(TimerId* id) {
    if (*id != 0) loop->Cancel(*id);
    *id = 0;
  }
};

void PeerChannel::Impl::FailLater(OnReply on_reply, RpcStatus status) {
  loop->RunAfter(0, [cb = std::move(on_reply), st = std::move(status)] { cb(st, nullptr); });
}

void PeerChannel::Impl::StartConnect() {
  DTX_CHECK(state == State::kIdle && conn == nullptr);
  state = State::kConnecting;
  conn = new Conn();
  int rc = uv_tcp_init(loop->uv_loop(), &conn->handle);
  DTX_CHECK_MSG(rc == 0, uv_strerror(rc));
  conn->handle.data = conn;
  conn->connect_req.data = conn;
  conn->owner = weak_from_this();
  rc = uv_tcp_connect(&conn->connect_req, &conn->handle, reinterpret_cast<sockaddr*>(&addr),
                      [](uv_connect_t* req, int status) {
                        auto* c = static_cast<Conn*>(req->data);
                        if (c->closing) return;
                        auto self = c->owner.lock();
                        if (!self || self->conn != c) return;
                        internal::InvokeCallback("PeerChannel connect",
                                                 [&] { self->OnConnected(status); });
                      });
  if (rc != 0) {
    // Fail asynchronously: we may be inside Call().
    std::weak_ptr<Impl> weak = weak_from_this();
    loop->RunAfter(0, [weak, rc] {
      if (auto self = weak.lock(); self && self->state == State::kConnecting) {
        self->Lost(std::string("connect failed: ") + uv_strerror(rc), false);
      }
    });
    return;
  }
  std::weak_ptr<Impl> weak = weak_from_this();
  connect_timer = loop->RunAfter(static_cast<uint64_t>(options.connect_timeout_ms), [weak] {
    auto self = weak.lock();
    if (!self) return;
    self->connect_timer = 0;
    if (self->state == State::kConnecting) self->Lost("connect timed out", false);
  });
}

void PeerChannel::Impl::OnConnected(int status) {
  CancelTimer(&connect_timer);
  if (status != 0) {
    Lost(std::string("connect failed: ") + uv_strerror(status), false);
    return;
  }
  uv_tcp_nodelay(&conn->handle, 1);
  StartReading();
  if (options.tls == nullptr) {
    Established();
    return;
  }
  conn->tls = TlsSession::Create(options.tls, options.expected_server);
  Status started = conn->tls->Start();
  FlushTlsOutput();
  if (!started.ok()) {
    TlsFailed(started, false);
    return;
  }
  std::weak_ptr<Impl> weak = weak_from_this();
  connect_timer = loop->RunAfter(static_cast<uint64_t>(options.tls_handshake_timeout_ms), [weak] {
    auto self = weak.lock();
    if (!self) return;
    self->connect_timer = 0;
    if (self->state == State::kConnecting) {
      self->TlsFailed(
          Status::Unavailable("no TLS handshake within " +
                              std::to_string(self->options.tls_handshake_timeout_ms) + " ms"),
          false);
    }
  });
}

void PeerChannel::Impl::StartReading() {
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&conn->handle),
      [](uv_handle_t*, size_t suggested, uv_buf_t* buf) {
        // One buffer per channel read is fine: libuv reads one stream at a
        // time on this thread.
        static thread_local std::vector<char> chunk(64u << 10);
        (void)suggested;
        *buf = uv_buf_init(chunk.data(), static_cast<unsigned>(chunk.size()));
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* c = static_cast<Conn*>(s->data);
        if (c->closing) return;
        auto self = c->owner.lock();
        if (!self || self->conn != c) return;
        internal::InvokeCallback("PeerChannel read", [&] { self->OnRead(nread, buf); });
      });
}

void PeerChannel::Impl::Established() {
  CancelTimer(&connect_timer);
  state = State::kConnected;
  ++stats.connects;
  backoff_ms = 0;
  last_tls_failure.clear();
  std::vector<QueuedFrame> frames;
  frames.swap(queued);
  for (auto& f : frames) {
    if (state != State::kConnected) break;
    auto it = pending.find(f.seqid);
    if (it == pending.end()) continue;  // timed out while queued: never send it
    it->second.written = true;
    WriteFrame(std::move(f.bytes));
  }
}

void PeerChannel::Impl::CloseConn() {
  out_plain.clear();
  if (conn == nullptr) return;
  Conn* c = conn;
  conn = nullptr;
  c->closing = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->handle),
           [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
}

void PeerChannel::Impl::FailAllPending(const RpcStatus& status) {
  std::unordered_map<int32_t, Pending> failed;
  failed.swap(pending);
  deadlines.clear();
  queued.clear();
  CancelTimer(&deadline_timer);
  for (auto& [seqid, p] : failed) {
    RpcStatus st = p.maybe_seen() ? status : RpcStatus::NotSent(status);
    internal::InvokeCallback("PeerChannel reply", [&] { p.on_reply(st, nullptr); });
  }
}

void PeerChannel::Impl::Lost(const std::string& why, bool was_connected) {
  LostWith(Status::Unavailable("peer " + address + " unavailable: " + why), was_connected, true);
}

void PeerChannel::Impl::TlsFailed(const Status& why, bool was_connected) {
  if (state == State::kClosed) return;
  if (!was_connected) ++stats.tls_handshake_failures;
  std::string msg = "peer " + address + ": TLS: " + why.message();
  if (why.message() != last_tls_failure) {
    last_tls_failure = why.message();
    DTX_LOG_WARN("{}", msg);
  }
  LostWith(why.IsPermissionDenied() ? Status::PermissionDenied(msg) : Status::Unavailable(msg),
           was_connected, false);
}

void PeerChannel::Impl::LostWith(const Status& failure, bool was_connected, bool log_it) {
  if (state == State::kClosed) return;
  auto keep = shared_from_this();
  // A connection that served replies and then dropped: most likely the
  // server closed it as idle or evicted it at its cap (rpc_server.h). No
  // backoff: the next call connects at once (a peer that is really gone
  // fails that connect, and backoff starts then).
  const bool served = was_connected && conn != nullptr && conn->served;
  CloseConn();
  CancelTimer(&connect_timer);
  if (was_connected) {
    ++stats.disconnects;
  } else {
    ++stats.connect_failures;
  }
  int wait_ms = 0;
  if (served) {
    state = State::kIdle;
  } else {
    int base = backoff_ms == 0 ? options.reconnect_backoff_initial_ms
                               : std::min(backoff_ms * 2, options.reconnect_backoff_max_ms);
    backoff_ms = std::max(base, 1);
    std::uniform_int_distribution<int> jitter(-backoff_ms / 5, backoff_ms / 5);
    wait_ms = std::max(1, backoff_ms + jitter(rng));
    state = State::kBackoff;
    std::weak_ptr<Impl> weak = weak_from_this();
    backoff_timer = loop->RunAfter(static_cast<uint64_t>(wait_ms), [weak] {
      auto self = weak.lock();
      if (!self) return;
      self->backoff_timer = 0;
      if (self->state == State::kBackoff) self->state = State::kIdle;
    });
  }
  if (!served) {
    if (log_it && (was_connected || !pending.empty())) {
      DTX_LOG_INFO("{}; {} call(s) failed; retry in {} ms", failure.message(), pending.size(),
                   wait_ms);
    }
    FailAllPending(failure);
    return;
  }
  // Safe-to-repeat calls written to the lost connection go out once more on
  // a new one (their deadlines stay); every other call fails. The new
  // connection starts before any failure callback runs, so a call those
  // callbacks make queues behind it.
  std::unordered_map<int32_t, Pending> failed;
  queued.clear();
  for (auto it = pending.begin(); it != pending.end();) {
    Pending& p = it->second;
    if (p.written && !p.repeated && !p.repeat_frame.empty()) {
      p.written = false;
      p.repeated = true;
      queued.push_back({it->first, std::move(p.repeat_frame)});
      p.repeat_frame.clear();
      ++it;
      continue;
    }
    deadlines.erase(p.deadline);
    failed.emplace(it->first, std::move(p));
    it = pending.erase(it);
  }
  stats.calls_repeated += queued.size();
  if (log_it && (!queued.empty() || !failed.empty())) {
    DTX_LOG_INFO("{}; {} call(s) sent again on a new connection, {} failed", failure.message(),
                 queued.size(), failed.size());
  } else if (log_it) {
    DTX_LOG_DEBUG("{}; the next call connects again", failure.message());
  }
  ArmDeadlineTimer();
  if (!queued.empty()) StartConnect();
  for (auto& [seqid, p] : failed) {
    RpcStatus st = p.maybe_seen() ? RpcStatus(failure) : RpcStatus::NotSent(failure);
    internal::InvokeCallback("PeerChannel reply", [&] { p.on_reply(st, nullptr); });
  }
}

void PeerChannel::Impl::FlushTlsOutput() {
  if (conn == nullptr || conn->tls == nullptr || !conn->tls->has_output()) return;
  std::string bytes;
  conn->tls->TakeOutput(&bytes);
  WriteBytes(std::move(bytes));
}

void PeerChannel::Impl::WriteFrame(const std::string& frame) {
  out_plain.append(frame);
  if (flush_queued) return;
  flush_queued = true;
  loop->AtTurnEnd([weak = weak_from_this()] {
    if (auto self = weak.lock()) self->FlushFrames();
  });
}

void PeerChannel::Impl::FlushFrames() {
  flush_queued = false;
  if (out_plain.empty()) return;
  if (state != State::kConnected || conn == nullptr) {
    out_plain.clear();  // the connection was lost; its calls have failed
    return;
  }
  std::string bytes;
  if (conn->tls != nullptr) {
    Status sent =
        conn->tls->Send(reinterpret_cast<const uint8_t*>(out_plain.data()), out_plain.size());
    out_plain.clear();
    if (!sent.ok()) {
      TlsFailed(sent, true);
      return;
    }
    conn->tls->TakeOutput(&bytes);
  } else {
    bytes.swap(out_plain);
  }
  ++stats.writes;
  WriteBytes(std::move(bytes));
}

void PeerChannel::Impl::WriteBytes(std::string bytes) {
  auto* out = new OutFrame{{}, std::move(bytes)};
  out->req.data = out;
  uv_buf_t buf = uv_buf_init(out->bytes.data(), static_cast<unsigned>(out->bytes.size()));
  int rc = uv_write(&out->req, reinterpret_cast<uv_stream_t*>(&conn->handle), &buf, 1,
                    [](uv_write_t* w, int status) {
                      uv_stream_t* handle = w->handle;
                      delete static_cast<OutFrame*>(w->data);  // frees *w too
                      if (status == 0) return;
                      auto* c = static_cast<Conn*>(handle->data);
                      if (c->closing) return;
                      auto self = c->owner.lock();
                      if (!self || self->conn != c) return;
                      internal::InvokeCallback("PeerChannel write", [&] {
                        self->Lost(std::string("write failed: ") + uv_strerror(status),
                                   self->state == State::kConnected);
                      });
                    });
  if (rc != 0) {
    delete out;
    // Called from Call(): report asynchronously.
    std::weak_ptr<Impl> weak = weak_from_this();
    Conn* c = conn;
    loop->RunAfter(0, [weak, c, rc] {
      auto self = weak.lock();
      // kConnecting: a TLS handshake message failed to go out.
      if (self && self->conn == c &&
          (self->state == State::kConnected || self->state == State::kConnecting)) {
        self->Lost(std::string("write failed: ") + uv_strerror(rc),
                   self->state == State::kConnected);
      }
    });
  }
}

void PeerChannel::Impl::OnRead(ssize_t nread, const uv_buf_t* buf) {
  const bool handshaking = state == State::kConnecting;
  if (nread == UV_EOF) {
    if (handshaking) {
      TlsFailed(conn->tls->ReceiveEof(), false);
    } else {
      Lost("connection closed by peer", true);
    }
    return;
  }
  if (nread < 0) {
    Lost(std::string("read failed: ") + uv_strerror(static_cast<int>(nread)), !handshaking);
    return;
  }
  if (nread == 0) return;
  auto keep = shared_from_this();
  Conn* c = conn;
  if (c->tls != nullptr) {
    Status received = c->tls->Receive(reinterpret_cast<const uint8_t*>(buf->base),
                                      static_cast<size_t>(nread), &c->in);
    FlushTlsOutput();
    if (conn != c) return;  // a write failed
    if (!received.ok()) {
      TlsFailed(received, !handshaking);
      return;
    }
    if (!c->tls->handshake_done()) return;
    if (handshaking) Established();
    if (conn != c) return;
  } else {
    c->in.insert(c->in.end(), buf->base, buf->base + nread);
  }
  size_t pos = 0;
  while (conn == c && c->in.size() - pos >= kFrameHeaderBytes) {
    uint32_t len = DecodeFrameLength(c->in.data() + pos);
    if (len == 0 || len > options.frame_bytes_max) {
      DTX_LOG_WARN("peer {}: bad reply frame length {}; dropping connection", address, len);
      Lost("bad reply frame", true);
      return;
    }
    // Not whole yet. Nothing is reserved for the length the header claims
    // (a server must not make its client allocate on a claim): the buffer
    // grows with the bytes that arrive.
    if (c->in.size() - pos < kFrameHeaderBytes + len) break;
    // `c` (and its buffer) stays allocated until its close callback even if
    // a reply callback drops the connection.
    if (!HandleReply(c->in.data() + pos + kFrameHeaderBytes, len)) return;
    pos += kFrameHeaderBytes + len;
  }
  if (conn == c && pos > 0) c->in.erase(c->in.begin(), c->in.begin() + static_cast<ptrdiff_t>(pos));
  if (conn == c && c->tls != nullptr && c->tls->peer_closed()) {
    Lost("connection closed by peer (TLS close_notify)", true);
  }
}

bool PeerChannel::Impl::HandleReply(const uint8_t* data, uint32_t len) {
  auto buf =
      std::make_shared<TMemoryBuffer>(const_cast<uint8_t*>(data), len, TMemoryBuffer::OBSERVE);
  TBinaryProtocol proto(buf);
  proto.setStringSizeLimit(static_cast<int32_t>(len));
  proto.setContainerSizeLimit(
      static_cast<int32_t>(std::min<size_t>(options.container_items_max, len)));
  std::string name;
  apache::thrift::protocol::TMessageType type;
  int32_t seqid = 0;
  RpcStatus exception_status;
  try {
    proto.readMessageBegin(name, type, seqid);
    if (type == apache::thrift::protocol::T_EXCEPTION) {
      TApplicationException x;
      x.read(&proto);
      proto.readMessageEnd();
      std::string msg =
          "peer " + address + " raised TApplicationException in " + name + ": " + x.what();
      if (std::string_view(x.what()).rfind(kTlsRequiredReplyPrefix, 0) == 0) {
        // A TLS listener answering our plaintext call (then it closes).
        exception_status = Status::Unavailable(
            "peer " + address +
            ": the server requires TLS and this side has no TLS configuration (" + x.what() + ")");
      } else if (x.getType() == TApplicationException::UNKNOWN_METHOD) {
        exception_status = Status::NotSupported(msg);
      } else {
        exception_status = Status::Internal(msg);
      }
    } else if (type != apache::thrift::protocol::T_REPLY) {
      throw apache::thrift::protocol::TProtocolException("message type is not a reply");
    }
  } catch (const std::exception& e) {
    DTX_LOG_WARN("peer {}: undecodable reply ({}); dropping connection", address, e.what());
    Lost(std::string("undecodable reply: ") + e.what(), true);
    return false;
  }
  conn->served = true;
  auto it = pending.find(seqid);
  if (it == pending.end()) {
    ++stats.late_replies;
    return true;
  }
  OnReply on_reply = std::move(it->second.on_reply);
  deadlines.erase(it->second.deadline);
  pending.erase(it);
  if (!exception_status.ok()) {
    internal::InvokeCallback("PeerChannel reply", [&] { on_reply(exception_status, nullptr); });
  } else {
    internal::InvokeCallback("PeerChannel reply", [&] { on_reply(RpcStatus(), &proto); });
  }
  return true;
}

void PeerChannel::Impl::ArmDeadlineTimer() {
  if (deadlines.empty()) {
    CancelTimer(&deadline_timer);
    return;
  }
  uint64_t earliest = deadlines.begin()->first;
  if (deadline_timer != 0 && deadline_timer_at <= earliest) return;
  CancelTimer(&deadline_timer);
  uint64_t now = loop->NowMs();
  deadline_timer_at = earliest;
  std::weak_ptr<Impl> weak = weak_from_this();
  deadline_timer = loop->RunAfter(earliest > now ? earliest - now : 0, [weak] {
    if (auto self = weak.lock()) {
      self->deadline_timer = 0;
      self->OnDeadlineTimer();
    }
  });
}

void PeerChannel::Impl::OnDeadlineTimer() {
  auto keep = shared_from_this();
  uint64_t now = loop->NowMs();
  std::vector<std::pair<OnReply, bool>> expired;  // callback, maybe seen
  while (!deadlines.empty() && deadlines.begin()->first <= now) {
    int32_t seqid = deadlines.begin()->second;
    deadlines.erase(deadlines.begin());
    auto it = pending.find(seqid);
    if (it == pending.end()) continue;
    expired.emplace_back(std::move(it->second.on_reply), it->second.maybe_seen());
    pending.erase(it);
  }
  stats.timeouts += expired.size();
  ArmDeadlineTimer();
  Status timeout = Status::Timeout("call to " + address + " timed out");
  for (auto& [cb, written] : expired) {
    RpcStatus st = written ? RpcStatus(timeout) : RpcStatus::NotSent(timeout);
    internal::InvokeCallback("PeerChannel timeout", [&] { cb(st, nullptr); });
  }
}

std::shared_ptr<PeerChannel> PeerChannel::Create(EventLoop* loop, std::string address,
                                                 PeerChannelOptions options) {
  return std::shared_ptr<PeerChannel>(new PeerChannel(loop, std::move(address), options));
}

PeerChannel::PeerChannel(EventLoop* loop, std::string address, PeerChannelOptions options)
    : address_(address), impl_(std::make_shared<Impl>()) {
  DTX_CHECK(loop != nullptr);
  impl_->loop = loop;
  impl_->address = std::move(address);
  impl_->options = options;
  impl_->rng.seed(static_cast<unsigned>(
      std::hash<std::string>()(impl_->address) ^
      static_cast<size_t>(std::chrono::steady_clock::now().time_since_epoch().count())));
  Result<HostPort> parsed = ParseHostPort(impl_->address);
  impl_->address_status = parsed.status();
  if (parsed.ok()) {
    std::string host = parsed->host == "localhost" ? "127.0.0.1" : parsed->host;
    const int port = parsed->port;
    if (uv_ip4_addr(host.c_str(), port, reinterpret_cast<sockaddr_in*>(&impl_->addr)) != 0 &&
        uv_ip6_addr(host.c_str(), port, reinterpret_cast<sockaddr_in6*>(&impl_->addr)) != 0) {
      impl_->address_status = Status::InvalidArgument("bad peer address '" + impl_->address +
                                                      "' (numeric host or localhost required)");
    }
  }
}

PeerChannel::~PeerChannel() { Close(); }

void PeerChannel::Call(const std::string& method, const WriteArgs& write_args, int timeout_ms,
                       OnReply on_reply, bool safe_to_repeat) {
  Impl* d = impl_.get();
  DTX_CHECK(d->loop->InLoopThreadOrIdle());
  DTX_CHECK(timeout_ms > 0);
  DTX_CHECK(on_reply != nullptr);
  ++d->stats.calls;
  if (d->state == Impl::State::kClosed) {
    d->FailLater(std::move(on_reply),
                 RpcStatus::NotSent(Status::Unavailable("channel to " + address_ + " closed")));
    return;
  }
  if (!d->address_status.ok()) {
    d->FailLater(std::move(on_reply), d->address_status);
    return;
  }
  if (d->pending.size() >= d->options.in_flight_max) {
    d->FailLater(std::move(on_reply),
                 RpcStatus::NotSent(Status::Busy(
                     "peer " + address_ + ": " + std::to_string(d->pending.size()) +
                     " calls in flight (max " + std::to_string(d->options.in_flight_max) + ")")));
    return;
  }
  if (d->state == Impl::State::kBackoff) {
    d->FailLater(std::move(on_reply), RpcStatus::NotSent(Status::Unavailable(
                                          "peer " + address_ + " unavailable (reconnecting)")));
    return;
  }
  int32_t seqid = d->next_seqid;
  d->next_seqid = d->next_seqid == INT32_MAX ? 1 : d->next_seqid + 1;
  std::string frame;
  try {
    auto out_buf = std::make_shared<TMemoryBuffer>();
    TBinaryProtocol out(out_buf);
    out.writeMessageBegin(method, apache::thrift::protocol::T_CALL, seqid);
    write_args(&out);
    out.writeMessageEnd();
    uint8_t* data = nullptr;
    uint32_t len = 0;
    out_buf->getBuffer(&data, &len);
    if (len > d->options.frame_bytes_max) {
      d->FailLater(std::move(on_reply),
                   Status::InvalidArgument("request of " + std::to_string(len) +
                                           " bytes exceeds the frame limit"));
      return;
    }
    frame.resize(kFrameHeaderBytes + len);
    EncodeFrameLength(len, reinterpret_cast<uint8_t*>(frame.data()));
    std::memcpy(frame.data() + kFrameHeaderBytes, data, len);
  } catch (const std::exception& e) {
    d->FailLater(std::move(on_reply),
                 Status::Internal(std::string("cannot encode request: ") + e.what()));
    return;
  }
  uint64_t deadline = d->loop->NowMs() + static_cast<uint64_t>(timeout_ms);
  auto dl = d->deadlines.emplace(deadline, seqid);
  bool write_now = d->state == Impl::State::kConnected;
  d->pending.emplace(seqid, Impl::Pending{.on_reply = std::move(on_reply),
                                          .deadline = dl,
                                          .written = write_now,
                                          .repeat_frame = safe_to_repeat ? frame : std::string()});
  d->ArmDeadlineTimer();
  switch (d->state) {
    case Impl::State::kIdle:
      d->queued.push_back({seqid, std::move(frame)});
      d->StartConnect();
      break;
    case Impl::State::kConnecting: d->queued.push_back({seqid, std::move(frame)}); break;
    case Impl::State::kConnected: d->WriteFrame(frame); break;
    default: DTX_CHECK(false);
  }
}

void PeerChannel::Close() {
  Impl* d = impl_.get();
  DTX_CHECK(d->loop->InLoopThreadOrIdle());
  if (d->state == Impl::State::kClosed) return;
  d->state = Impl::State::kClosed;
  d->CloseConn();
  d->CancelTimer(&d->connect_timer);
  d->CancelTimer(&d->backoff_timer);
  d->FailAllPending(Status::Unavailable("channel to " + address_ + " closed"));
}

bool PeerChannel::connected() const {
  DTX_CHECK(impl_->loop->InLoopThreadOrIdle());
  return impl_->state == Impl::State::kConnected;
}
size_t PeerChannel::in_flight() const {
  DTX_CHECK(impl_->loop->InLoopThreadOrIdle());
  return impl_->pending.size();
}
const PeerChannelStats& PeerChannel::stats() const {
  DTX_CHECK(impl_->loop->InLoopThreadOrIdle());
  return impl_->stats;
}

// ---- typed stubs ----

namespace internal {

PeerChannel* CheckedChannel(const std::shared_ptr<PeerChannel>& channel) {
  DTX_CHECK_MSG(channel != nullptr, "stub used without a channel");
  return channel.get();
}

}  // namespace internal

void ParticipantStub::Read(const std::string& key, int timeout_ms,
                           RpcCallback<rpc::ReadResult> done) {
  rpc::Participant_Read_pargs a;
  a.key = &key;
  CallRpc<rpc_method::Participant_Read>(channel_, a, timeout_ms, std::move(done));
}

void ParticipantStub::GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done) {
  rpc::Participant_GetStatus_pargs a;
  CallRpc<rpc_method::Participant_GetStatus>(channel_, a, timeout_ms, std::move(done));
}

void CoordinatorStub::GetShardMap(int timeout_ms, RpcCallback<rpc::ShardMap> done) {
  rpc::Coordinator_GetShardMap_pargs a;
  CallRpc<rpc_method::Coordinator_GetShardMap>(channel_, a, timeout_ms, std::move(done));
}

void CoordinatorStub::Commit(const rpc::CommitRequest& req, int timeout_ms,
                             RpcCallback<rpc::CommitResult> done) {
  rpc::Coordinator_Commit_pargs a;
  a.req = &req;
  CallRpc<rpc_method::Coordinator_Commit>(channel_, a, timeout_ms, std::move(done));
}

void CoordinatorStub::GetOutcome(const rpc::TxId& txid, int timeout_ms,
                                 RpcCallback<rpc::Outcome::type> done) {
  rpc::Coordinator_GetOutcome_pargs a;
  a.txid = &txid;
  CallRpc<rpc_method::Coordinator_GetOutcome>(channel_, a, timeout_ms, std::move(done));
}

void CoordinatorStub::GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done) {
  rpc::Coordinator_GetStatus_pargs a;
  CallRpc<rpc_method::Coordinator_GetStatus>(channel_, a, timeout_ms, std::move(done));
}

void ParticipantPeerStub::Prepare(const rpc::PrepareRequest& req, int timeout_ms,
                                  RpcCallback<rpc::PrepareResponse> done) {
  rpc::ParticipantPeer_Prepare_pargs a;
  a.req = &req;
  CallRpc<rpc_method::ParticipantPeer_Prepare>(channel_, a, timeout_ms, std::move(done));
}

void ParticipantPeerStub::Commit(const rpc::TxId& txid, rpc::Epoch epoch, int timeout_ms,
                                 RpcDoneCallback done) {
  rpc::ParticipantPeer_Commit_pargs a;
  a.txid = &txid;
  a.epoch = &epoch;
  CallRpc<rpc_method::ParticipantPeer_Commit>(channel_, a, timeout_ms, std::move(done));
}

void ParticipantPeerStub::Abort(const rpc::TxId& txid, rpc::Epoch epoch,
                                const rpc::Attempt& attempt, int timeout_ms, RpcDoneCallback done) {
  rpc::ParticipantPeer_Abort_pargs a;
  a.txid = &txid;
  a.epoch = &epoch;
  a.attempt = &attempt;
  CallRpc<rpc_method::ParticipantPeer_Abort>(channel_, a, timeout_ms, std::move(done));
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

void ParticipantPeerStub::GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done) {
  rpc::ParticipantPeer_GetStatus_pargs a;
  CallRpc<rpc_method::ParticipantPeer_GetStatus>(channel_, a, timeout_ms, std::move(done));
}

void CoordinatorPeerStub::QueryDecision(const rpc::TxId& txid, const std::string& fingerprint,
                                        const rpc::Attempt& attempt, int timeout_ms,
                                        RpcCallback<rpc::Decision::type> done) {
  rpc::CoordinatorPeer_QueryDecision_pargs a;
  a.txid = &txid;
  a.fingerprint = &fingerprint;
  a.attempt = &attempt;
  CallRpc<rpc_method::CoordinatorPeer_QueryDecision>(channel_, a, timeout_ms, std::move(done));
}

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

void CoordinatorPeerStub::GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done) {
  rpc::CoordinatorPeer_GetStatus_pargs a;
  CallRpc<rpc_method::CoordinatorPeer_GetStatus>(channel_, a, timeout_ms, std::move(done));
}

void AdminStub::GetStatus(int timeout_ms, RpcCallback<rpc::NodeStatus> done) {
  rpc::Admin_GetStatus_pargs a;
  CallRpc<rpc_method::Admin_GetStatus>(channel_, a, timeout_ms, std::move(done));
}

void AdminStub::ListInDoubt(int timeout_ms, RpcCallback<std::vector<rpc::InDoubtTx>> done) {
  rpc::Admin_ListInDoubt_pargs a;
  CallRpc<rpc_method::Admin_ListInDoubt>(channel_, a, timeout_ms, std::move(done));
}

void AdminStub::SetFailpoint(const std::string& name, const std::string& action, int timeout_ms,
                             RpcDoneCallback done) {
  rpc::Admin_SetFailpoint_pargs a;
  a.name = &name;
  a.action = &action;
  CallRpc<rpc_method::Admin_SetFailpoint>(channel_, a, timeout_ms, std::move(done));
}

}  // namespace dtx
