#include "common/address.h"
#include "common/rpc_server.h"

#include <thrift/TApplicationException.h>
#include <thrift/protocol/TBinaryProtocol.h>
#include <thrift/transport/TBufferTransports.h>

#include <boost/intrusive/list.hpp>
#include <cstring>
#include <deque>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/log.h"
#include "common/log_limiter.h"
#include "common/rpc_framing.h"

namespace dtx {

using apache::thrift::TApplicationException;
using apache::thrift::protocol::TBinaryProtocol;
using apache::thrift::protocol::TProtocol;
using apache::thrift::transport::TMemoryBuffer;

namespace {

constexpr size_t kReadChunkBytes = 64u << 10;
// Fair service: a connection dispatches at most this many frames in a row;
// then it yields the loop (rpc_server.h, "Fair service").
constexpr size_t kFramesPerTurnMax = 128;
// How often connections are checked for a frame that is not whole in time,
// and for idle_timeout_ms.
constexpr uint64_t kSweepMs = 1000;
// Lines about single connections (refused, failed handshakes, slow senders,
// bad input) per listener: at most this many per window, then one summary
// line per window (common/log_limiter.h). Every such event is still counted
// in RpcServerStats.
constexpr uint32_t kConnectionLogLinesMax = 20;
constexpr uint64_t kConnectionLogWindowMs = 10000;
// Lines about connections closed for being idle (routine: info), limited on
// their own so that they never use up the budget of the warnings above.
constexpr uint32_t kIdleLogLinesMax = 20;
constexpr int kListenBacklog = 511;
// A TLS ClientHello opens with a handshake record of version 3.x: 0x16 0x03.
constexpr uint8_t kTlsHandshakeRecordByte = 0x16;
constexpr uint8_t kTlsMajorVersionByte = 0x03;

// One request from dispatch until its reply is queued (or dropped).
struct Request {
  std::shared_ptr<apache::thrift::async::TAsyncProcessor> processor;  // outlives the cob
  std::shared_ptr<TMemoryBuffer> out_buf;
  std::shared_ptr<TProtocol> out;
  bool done = false;
};

// One uv_write: the replies coalesced in one loop turn (or TLS handshake
// bytes, replies == 0).
struct WriteReq {
  uv_write_t req;
  size_t replies = 0;       // how many replies the bytes carry
  size_t budget_bytes = 0;  // the replies' bytes counted against the budgets
  std::string bytes;        // what is written (TLS records with TLS)
};

}  // namespace

struct RpcServer::State : std::enable_shared_from_this<RpcServer::State> {
  struct Connection;
  using ActivityHook = boost::intrusive::list_member_hook<>;
  struct Listener {
    uv_tcp_t handle;
    std::weak_ptr<State> state;
  };

  EventLoop* loop = nullptr;
  RpcProcessorFactory processor_factory;
  RpcServerOptions options;
  Listener* listener = nullptr;
  std::unordered_map<Connection*, std::shared_ptr<Connection>> connections;
  // The open connections (not closing), least recently active first (see
  // Touch): the front holds the idle-longest candidates for eviction and the
  // idle sweep. Its size is what connections_max caps: a closed connection
  // stays in `connections` until its close callback, but its socket is
  // closed already.
  struct ActivityList;  // a boost::intrusive::list of Connection, below
  std::unique_ptr<ActivityList> by_activity = std::make_unique<ActivityList>();
  RpcServerStats stats;
  uint64_t next_connection_id = 1;
  bool closed = false;
  std::vector<char> read_chunk = std::vector<char>(kReadChunkBytes);
  // Every second: closes slow senders (partial_frame_timeout_ms) and idle
  // connections (idle_timeout_ms), writes the summary of suppressed
  // connection lines.
  TimerId sweep_timer = 0;
  LogLimiter connection_log{kConnectionLogLinesMax, kConnectionLogWindowMs};
  LogLimiter idle_log{kIdleLogLinesMax, kConnectionLogWindowMs};
  // Byte budgets (rpc_server.h): replies queued or being written on every
  // connection; lengths reserved by large frames under way; connections
  // waiting for a reservation, first come first served.
  size_t reply_bytes = 0;
  size_t frame_bytes_reserved = 0;
  std::deque<std::weak_ptr<Connection>> frame_waiters;
  bool frame_wake_queued = false;

  // True if a line about one connection may be written now.
  bool LogConnection() { return connection_log.Allow(loop->NowMs()); }
  // `c` did something (bytes arrived, a reply was written): to the back.
  void Touch(Connection* c);
  // Closes the open connection idle longest, if any is idle; true if it did.
  bool EvictIdle();
  void SweepIdle();
  // The summary of the lines LogConnection() suppressed, once their window
  // has passed (from the sweep timer).
  void LogSuppressed();
  void OnNewConnection(int status);
  void CloseAll();
  void SweepSlowSenders();
  void SweepSlowReaders();
  // Closes every open connection stalled for partial_frame_timeout_ms or
  // more: since(c) is when its wait began (0: not waiting); counts each in
  // *closed and logs it (rate-limited) with log(c, waited_ms, timeout_ms).
  template <typename Since, typename Log>
  void CloseStalled(Since since, uint64_t* closed, Log log);
  void Sweep();
  // A reservation was released: at the end of this turn, the connections
  // waiting for one take theirs, in order, while they fit.
  void WakeFrameWaiters();
  // True if a frame of `len` bytes may reserve now (one always may).
  bool FrameFits(uint32_t len) const {
    return frame_bytes_reserved == 0 ||
           frame_bytes_reserved + len <= options.frame_bytes_reserved_max;
  }
};

struct RpcServer::State::Connection : std::enable_shared_from_this<Connection> {
  uv_tcp_t handle;
  std::weak_ptr<State> server;
  EventLoop* loop = nullptr;
  std::shared_ptr<Connection> self;  // released in the close callback
  uint64_t id = 0;
  std::string peer;
  PeerIdentity identity;  // who is calling; fixed once the connection is accepted
  std::shared_ptr<apache::thrift::async::TAsyncProcessor> processor;  // this connection's
  std::vector<uint8_t> in;  // bytes received, not yet consumed
  size_t in_flight = 0;     // dispatched, reply not yet written
  // Byte budgets (rpc_server.h): this connection's replies queued or being
  // written; the length reserved for the large frame under way; whether it
  // waits in State::frame_waiters for that reservation.
  size_t reply_bytes = 0;
  size_t frame_reserved = 0;
  bool waiting_frame_budget = false;
  // Dispatched kFramesPerTurnMax frames in a row and yielded the loop; a
  // posted task resumes it.
  bool yielded = false;
  // Reply writes started and not completed, and when the oldest of them
  // started or a write last completed: a slow reader makes no progress.
  size_t writes_pending = 0;
  uint64_t write_progress_ms = 0;
  // Replies completed this loop turn, framed, waiting for the turn's end
  // (FlushReplies): one write per connection per turn, one TLS record per
  // 16 KiB instead of one per reply.
  std::string out_plain;
  size_t out_replies = 0;
  bool flush_queued = false;
  uint64_t frames = 0;  // received on this connection
  // When the bytes of an incomplete frame (or TLS record) started to wait
  // for the rest; 0: nothing partial.
  uint64_t partial_since_ms = 0;
  bool reading = false;
  bool parsing = false;
  bool closing = false;
  bool close_after_writes = false;
  std::unique_ptr<TlsSession> tls;  // null: plaintext
  TimerId handshake_timer = 0;      // while the TLS handshake runs
  // In State::by_activity while open; `active_ms`: when bytes last arrived or
  // a reply was last written (or when it was accepted).
  ActivityHook activity_hook;
  uint64_t active_ms = 0;

  bool handshaking() const { return tls != nullptr && !tls->handshake_done(); }
  // Nothing in flight, nothing queued, nothing half-received: closing it
  // loses nothing (rpc_server.h, "Idle connections"). A TLS handshake counts
  // as under way once the client sent its first bytes.
  bool idle() const {
    return !closing && !close_after_writes && in_flight == 0 && out_replies == 0 &&
           partial_since_ms == 0 && !(handshaking() && tls->received_any());
  }
  void StartReading();
  void OnRead(ssize_t nread, const uv_buf_t* buf);
  void OnEof();
  // Processes bytes read from a TLS connection: handshake, then decryption
  // into `in`. True if `in` is ready to parse; false if the connection was
  // closed or the handshake is not done yet.
  bool ReceiveTls(const uint8_t* data, size_t len);
  void StartServing(const std::shared_ptr<State>& st);
  void HandshakeFailed(const Status& why);
  // Writes what the TLS session has to send that is no reply (handshake).
  void FlushTlsOutput();
  void OnHandshakeWriteDone(int status);
  void ParseFrames();
  void Dispatch(const uint8_t* payload, uint32_t len, const std::shared_ptr<State>& st);
  void Complete(const std::shared_ptr<Request>& req, bool ok);
  // Writes the replies queued this turn (loop's turn end).
  void FlushReplies();
  void OnWriteDone(int status, size_t replies, size_t budget_bytes);
  void MaybeResume();
  // True if this connection takes no further frame now: too many requests
  // in flight, or its replies (or the server's, while it has some of its
  // own) reached their byte budget. Its own writes completing lift it.
  bool HeldBack(const State& st) const;
  // Counts `n` reply bytes in (delta > 0) or out of the budgets.
  void AddReplyBytes(State* st, size_t n);
  void SubReplyBytes(State* st, size_t n);
  // Reserves the frame's claimed length; false (and queued as a waiter) if
  // the server's reservations are full.
  bool ReserveFrame(State* st, uint32_t len);
  void ReleaseFrame(State* st);
  void StopReading();
  void CloseForBadInput(const std::string& why);
  void Close();
};

struct RpcServer::State::ActivityList
    : boost::intrusive::list<
          Connection,
          boost::intrusive::member_hook<Connection, ActivityHook, &Connection::activity_hook>> {};

namespace {

std::string PeerName(uv_tcp_t* h) {
  sockaddr_storage ss{};
  int len = sizeof(ss);
  if (uv_tcp_getpeername(h, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  char ip[64] = {0};
  int port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    uv_ip4_name(a, ip, sizeof(ip));
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    uv_ip6_name(a, ip, sizeof(ip));
    port = ntohs(a->sin6_port);
  }
  return FormatHostPort(ip, port);
}

// True if `reply` is a T_EXCEPTION message carrying UNKNOWN_METHOD.
bool IsUnknownMethodReply(uint8_t* reply, uint32_t len) {
  // Strict binary protocol: 0x80 0x01 0x00 <type>.
  if (len < 4 || reply[3] != apache::thrift::protocol::T_EXCEPTION) return false;
  try {
    auto buf = std::make_shared<TMemoryBuffer>(reply, len, TMemoryBuffer::OBSERVE);
    TBinaryProtocol proto(buf);
    std::string name;
    apache::thrift::protocol::TMessageType type;
    int32_t seqid = 0;
    proto.readMessageBegin(name, type, seqid);
    if (type != apache::thrift::protocol::T_EXCEPTION) return false;
    TApplicationException x;
    x.read(&proto);
    return x.getType() == TApplicationException::UNKNOWN_METHOD;
  } catch (const std::exception&) {
    return false;
  }
}

// For a plaintext Thrift call (a framed TBinaryProtocol message) sent to a
// TLS port: the framed T_EXCEPTION reply to it, in plaintext, saying that the
// port requires TLS, so that the client shows the cause instead of "connection
// closed" (as an HTTPS server answers plain HTTP with a 400). "" if `data`
// does not start with a readable call header.
std::string TlsRequiredReply(const uint8_t* data, size_t len) {
  if (len < kFrameHeaderBytes + 4) return "";
  const uint32_t frame_len = DecodeFrameLength(data);
  const size_t have = std::min<size_t>(len - kFrameHeaderBytes, frame_len);
  try {
    auto in = std::make_shared<TMemoryBuffer>(const_cast<uint8_t*>(data + kFrameHeaderBytes),
                                              static_cast<uint32_t>(have), TMemoryBuffer::OBSERVE);
    TBinaryProtocol in_proto(in);
    in_proto.setStringSizeLimit(static_cast<int32_t>(have));
    std::string name;
    apache::thrift::protocol::TMessageType type;
    int32_t seqid = 0;
    in_proto.readMessageBegin(name, type, seqid);
    if (type != apache::thrift::protocol::T_CALL) return "";
    auto out = std::make_shared<TMemoryBuffer>();
    TBinaryProtocol out_proto(out);
    out_proto.writeMessageBegin(name, apache::thrift::protocol::T_EXCEPTION, seqid);
    TApplicationException(TApplicationException::UNKNOWN,
                          std::string(kTlsRequiredReplyPrefix) +
                              ": the dtx cluster runs with certificates (connect with TLS, "
                              "trusting the cluster CA, and present a client certificate; "
                              "docs/design.md, Trust boundary)")
        .write(&out_proto);
    out_proto.writeMessageEnd();
    uint8_t* body = nullptr;
    uint32_t body_len = 0;
    out->getBuffer(&body, &body_len);
    std::string frame(kFrameHeaderBytes, '\0');
    EncodeFrameLength(body_len, reinterpret_cast<uint8_t*>(frame.data()));
    frame.append(reinterpret_cast<const char*>(body), body_len);
    return frame;
  } catch (const std::exception&) {
    return "";
  }
}

}  // namespace

void RpcServer::State::OnNewConnection(int status) {
  if (status < 0) {
    if (LogConnection()) DTX_LOG_WARN("{}: accept failed: {}", options.name, uv_strerror(status));
    return;
  }
  auto conn = std::make_shared<Connection>();
  int rc = uv_tcp_init(loop->uv_loop(), &conn->handle);
  DTX_CHECK_MSG(rc == 0, uv_strerror(rc));
  conn->handle.data = conn.get();
  conn->self = conn;
  conn->server = weak_from_this();
  conn->loop = loop;
  conn->id = next_connection_id++;
  rc = uv_accept(reinterpret_cast<uv_stream_t*>(&listener->handle),
                 reinterpret_cast<uv_stream_t*>(&conn->handle));
  if (rc != 0) {
    if (LogConnection()) DTX_LOG_WARN("{}: accept failed: {}", options.name, uv_strerror(rc));
    conn->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->handle),
             [](uv_handle_t* h) { static_cast<Connection*>(h->data)->self.reset(); });
    return;
  }
  conn->peer = PeerName(&conn->handle);
  if (by_activity->size() >= options.connections_max && !EvictIdle()) {
    ++stats.connections_rejected;
    if (LogConnection()) {
      DTX_LOG_WARN("{}: rejecting connection from {}: {} connections open (max {}), none idle",
                   options.name, conn->peer, by_activity->size(), options.connections_max);
    }
    conn->Close();
    return;
  }
  ++stats.connections_accepted;
  uv_tcp_nodelay(&conn->handle, 1);
  conn->identity.address = conn->peer;
  connections.emplace(conn.get(), conn);
  conn->active_ms = loop->NowMs();
  by_activity->push_back(*conn);
  DTX_LOG_DEBUG("{}: connection {} from {}", options.name, conn->id, conn->peer);
  if (options.tls != nullptr) {
    // The processor waits for the handshake, which tells who is calling.
    conn->tls = TlsSession::Create(options.tls);
    std::weak_ptr<Connection> weak = conn;
    conn->handshake_timer =
        loop->RunAfter(static_cast<uint64_t>(options.tls_handshake_timeout_ms), [weak] {
          auto c = weak.lock();
          if (!c) return;
          c->handshake_timer = 0;
          if (!c->closing && c->handshaking()) {
            auto st = c->server.lock();
            c->HandshakeFailed(Status::Timeout(
                "no TLS handshake within " +
                std::to_string(st ? st->options.tls_handshake_timeout_ms : 0) + " ms"));
          }
        });
  } else {
    conn->StartServing(shared_from_this());
  }
  conn->StartReading();
}

void RpcServer::State::Connection::StartServing(const std::shared_ptr<State>& st) {
  if (tls != nullptr) {
    PeerIdentity verified = tls->peer();
    verified.address = peer;
    identity = std::move(verified);
    ++st->stats.tls_handshakes;
    DTX_LOG_DEBUG("{}: connection {}: TLS 1.3 with {}", st->options.name, id, identity.Describe());
  }
  processor = st->processor_factory(identity);
  DTX_CHECK_MSG(processor != nullptr, "RpcServer: the processor factory returned null");
}

void RpcServer::State::LogSuppressed() {
  const uint64_t n = connection_log.TakeSuppressed(loop->NowMs());
  if (n > 0) {
    DTX_LOG_WARN(
        "{}: {} more lines about single connections (refused, evicted, failed TLS "
        "handshakes, slow senders, bad input) suppressed in the last {} s; the counters "
        "have them all",
        options.name, n, kConnectionLogWindowMs / 1000);
  }
  const uint64_t idle = idle_log.TakeSuppressed(loop->NowMs());
  if (idle > 0) {
    DTX_LOG_INFO("{}: {} more idle connections closed in the last {} s", options.name, idle,
                 kConnectionLogWindowMs / 1000);
  }
}

void RpcServer::State::Touch(Connection* c) {
  c->active_ms = loop->NowMs();
  if (!c->activity_hook.is_linked()) return;  // closing
  by_activity->erase(by_activity->iterator_to(*c));
  by_activity->push_back(*c);
}

bool RpcServer::State::EvictIdle() {
  // Least recently active first: the first idle one is the one idle longest.
  for (Connection& c : *by_activity) {
    if (!c.idle()) continue;
    ++stats.connections_evicted;
    if (LogConnection()) {
      DTX_LOG_WARN(
          "{}: {} connections open (max {}): closing connection {} from {}, idle for "
          "{} ms, to serve a new one",
          options.name, by_activity->size(), options.connections_max, c.id, c.peer,
          loop->NowMs() - c.active_ms);
    }
    c.Close();
    return true;
  }
  return false;
}

void RpcServer::State::SweepIdle() {
  const int timeout = options.idle_timeout_ms;
  if (timeout <= 0) return;
  const uint64_t now = loop->NowMs();
  std::vector<std::shared_ptr<Connection>> idle;
  for (Connection& c : *by_activity) {
    if (now - c.active_ms < static_cast<uint64_t>(timeout)) break;  // and all after it
    if (c.idle()) idle.push_back(c.shared_from_this());
  }
  for (auto& c : idle) {
    ++stats.connections_closed_idle;
    if (idle_log.Allow(now)) {
      DTX_LOG_INFO("{}: closing connection {} from {}: idle for {} ms (limit {} ms)", options.name,
                   c->id, c->peer, now - c->active_ms, timeout);
    }
    c->Close();
  }
}

void RpcServer::State::Sweep() {
  LogSuppressed();
  SweepSlowSenders();
  SweepSlowReaders();
  SweepIdle();
}

void RpcServer::State::SweepSlowReaders() {
  CloseStalled(
      [](const Connection& c) -> uint64_t {
        return c.writes_pending == 0 ? 0 : c.write_progress_ms;
      },
      &stats.connections_closed_slow_reader,
      [this](const Connection& c, uint64_t waited, int timeout) {
        DTX_LOG_WARN(
            "{}: closing connection {} from {}: no reply bytes taken for {} ms ({} bytes "
            "of replies waiting; limit {} ms): a slow or stalled reader",
            options.name, c.id, c.peer, waited, c.reply_bytes, timeout);
      });
}

template <typename Since, typename Log>
void RpcServer::State::CloseStalled(Since since, uint64_t* closed, Log log) {
  const int timeout = options.partial_frame_timeout_ms;
  if (timeout <= 0) return;
  const uint64_t now = loop->NowMs();
  std::vector<std::shared_ptr<Connection>> stalled;
  for (auto& [raw, c] : connections) {
    if (c->closing) continue;
    const uint64_t from = since(*c);
    if (from != 0 && now - from >= static_cast<uint64_t>(timeout)) stalled.push_back(c);
  }
  for (auto& c : stalled) {
    ++*closed;
    if (LogConnection()) log(*c, now - since(*c), timeout);
    c->Close();
  }
}

void RpcServer::State::WakeFrameWaiters() {
  if (frame_wake_queued) return;
  frame_wake_queued = true;
  loop->AtTurnEnd([weak = weak_from_this()] {
    auto st = weak.lock();
    if (!st) return;
    st->frame_wake_queued = false;
    // Closed waiters leave the queue wherever they are.
    std::erase_if(st->frame_waiters, [](const std::weak_ptr<Connection>& w) {
      auto c = w.lock();
      return !c || c->closing || !c->waiting_frame_budget;
    });
    while (!st->frame_waiters.empty()) {
      auto c = st->frame_waiters.front().lock();
      if (!c || c->closing || !c->waiting_frame_budget) {  // closed by an earlier one's resume
        st->frame_waiters.pop_front();
        continue;
      }
      // The frame waiting is the first in the connection's buffer: its
      // header was read before it queued, and nothing is read while it waits.
      DTX_CHECK(c->in.size() >= kFrameHeaderBytes);
      const uint32_t len = DecodeFrameLength(c->in.data());
      if (!st->FrameFits(len)) break;
      st->frame_waiters.pop_front();
      c->waiting_frame_budget = false;
      c->frame_reserved = len;
      st->frame_bytes_reserved += len;
      c->partial_since_ms = st->loop->NowMs();  // its time to arrive starts now
      c->MaybeResume();
    }
  });
}

void RpcServer::State::SweepSlowSenders() {
  CloseStalled(
      // Not while the server stops reading (back-pressure) or handshakes (its
      // own timeout).
      [](const Connection& c) -> uint64_t {
        return !c.reading || c.handshaking() ? 0 : c.partial_since_ms;
      },
      &stats.connections_closed_slow,
      [this](const Connection& c, uint64_t waited, int timeout) {
        DTX_LOG_WARN(
            "{}: closing connection {} from {}: a frame started {} ms ago is not whole "
            "yet ({} bytes of it here; limit {} ms): a slow or stalled sender",
            options.name, c.id, c.peer, waited, c.in.size(), timeout);
      });
}

void RpcServer::State::CloseAll() {
  std::vector<std::shared_ptr<Connection>> all;
  all.reserve(connections.size());
  for (auto& [raw, c] : connections) all.push_back(c);
  for (auto& c : all) c->Close();
  connections.clear();
}

void RpcServer::State::Connection::StartReading() {
  if (reading || closing) return;
  reading = true;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(&handle),
      [](uv_handle_t* h, size_t, uv_buf_t* buf) {
        auto* c = static_cast<Connection*>(h->data);
        auto st = c->server.lock();
        if (!st) {
          *buf = uv_buf_init(nullptr, 0);
          return;
        }
        *buf = uv_buf_init(st->read_chunk.data(), static_cast<unsigned>(st->read_chunk.size()));
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* c = static_cast<Connection*>(s->data);
        c->OnRead(nread, buf);
      });
}

void RpcServer::State::Connection::OnRead(ssize_t nread, const uv_buf_t* buf) {
  if (closing) return;
  if (nread == UV_EOF) {
    if (handshaking()) {
      HandshakeFailed(tls->ReceiveEof());
      return;
    }
    OnEof();
    return;
  }
  if (nread < 0) {
    DTX_LOG_INFO("connection {} from {}: read error: {}; closing", id, peer,
                 uv_strerror(static_cast<int>(nread)));
    Close();
    return;
  }
  if (nread == 0) return;  // EAGAIN
  auto st = server.lock();
  if (st) st->Touch(this);
  if (partial_since_ms == 0) partial_since_ms = loop->NowMs();
  if (tls != nullptr) {
    if (!ReceiveTls(reinterpret_cast<const uint8_t*>(buf->base), static_cast<size_t>(nread))) {
      return;
    }
  } else {
    in.insert(in.end(), buf->base, buf->base + nread);
  }
  ParseFrames();
}

bool RpcServer::State::Connection::ReceiveTls(const uint8_t* data, size_t len) {
  std::shared_ptr<Connection> keep = self;
  const bool was_handshaking = handshaking();
  const bool first_bytes = !tls->received_any();
  Status received = tls->Receive(data, len, &in);
  FlushTlsOutput();
  if (closing) return false;
  if (!received.ok()) {
    if (was_handshaking) {
      if (first_bytes) {
        // Best effort, as for an alert: the socket takes it or it is lost.
        std::string reply = TlsRequiredReply(data, len);
        if (!reply.empty()) {
          uv_buf_t b = uv_buf_init(reply.data(), static_cast<unsigned>(reply.size()));
          (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&handle), &b, 1);
        }
      }
      HandshakeFailed(received);
    } else {
      CloseForBadInput("TLS: " + received.message());
    }
    return false;
  }
  if (handshaking()) return false;  // more handshake bytes to come
  if (was_handshaking) {
    if (handshake_timer != 0) loop->Cancel(handshake_timer);
    handshake_timer = 0;
    auto st = server.lock();
    if (!st) {
      Close();
      return false;
    }
    StartServing(st);
  }
  if (tls->peer_closed()) {
    // close_notify: the peer sends nothing more, as at EOF. Frames decrypted
    // before it are served first.
    ParseFrames();
    if (!closing) OnEof();
    return false;
  }
  return true;
}

void RpcServer::State::Connection::OnEof() {
  if (!in.empty()) {
    CloseForBadInput("truncated frame: EOF after " + std::to_string(in.size()) +
                     " byte(s) of an incomplete frame");
  } else if (in_flight > 0) {
    // The peer finished sending; answer what it asked, then close.
    close_after_writes = true;
    StopReading();
  } else {
    DTX_LOG_DEBUG("connection {} from {} closed by peer", id, peer);
    Close();
  }
}

void RpcServer::State::Connection::HandshakeFailed(const Status& why) {
  if (closing) return;
  auto st = server.lock();
  if (st) ++st->stats.tls_handshakes_failed;
  const std::string& name = st ? st->options.name : std::string("rpc");
  // A connection that closes without sending a byte (a port probe, a health
  // check) is routine; everything else is worth a warning.
  if (!st || st->LogConnection()) {
    if (!tls->received_any() && why.IsUnavailable()) {
      DTX_LOG_INFO("{}: TLS handshake with {} failed: {}; closing", name, peer, why.message());
    } else {
      DTX_LOG_WARN("{}: TLS handshake with {} failed: {}; closing", name, peer, why.message());
    }
  }
  // Best effort: the alert that tells the client why, if the socket takes it.
  std::string alert;
  if (tls->TakeOutput(&alert) > 0) {
    uv_buf_t b = uv_buf_init(alert.data(), static_cast<unsigned>(alert.size()));
    (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&handle), &b, 1);
  }
  Close();
}

void RpcServer::State::Connection::FlushTlsOutput() {
  if (closing || !tls->has_output()) return;
  auto* wr = new WriteReq{{}, 0, 0, {}};
  wr->req.data = wr;
  tls->TakeOutput(&wr->bytes);
  uv_buf_t b = uv_buf_init(wr->bytes.data(), static_cast<unsigned>(wr->bytes.size()));
  int rc = uv_write(&wr->req, reinterpret_cast<uv_stream_t*>(&handle), &b, 1,
                    [](uv_write_t* w, int status) {
                      auto* c = static_cast<Connection*>(w->handle->data);
                      delete static_cast<WriteReq*>(w->data);
                      c->OnHandshakeWriteDone(status);
                    });
  if (rc != 0) {
    delete wr;
    DTX_LOG_INFO("connection {} from {}: write failed: {}; closing", id, peer, uv_strerror(rc));
    Close();
  }
}

void RpcServer::State::Connection::OnHandshakeWriteDone(int status) {
  if (closing || status >= 0) return;
  DTX_LOG_INFO("connection {} from {}: write failed: {}; closing", id, peer, uv_strerror(status));
  Close();
}

void RpcServer::State::Connection::ParseFrames() {
  auto st = server.lock();
  if (!st) {
    Close();
    return;
  }
  std::shared_ptr<Connection> keep = self;  // Close() inside dispatch must not free us
  parsing = true;
  size_t pos = 0;
  size_t dispatched = 0;
  while (!closing && !close_after_writes) {
    if (dispatched == kFramesPerTurnMax && in.size() - pos >= kFrameHeaderBytes) {
      // Fair service: the other connections' callbacks of this turn run
      // before the rest of these frames.
      ++st->stats.parse_yields;
      yielded = true;
      StopReading();
      loop->Post([weak = weak_from_this()] {
        if (auto c = weak.lock()) {
          c->yielded = false;
          c->MaybeResume();
        }
      });
      break;
    }
    if (HeldBack(*st)) {
      if (in_flight < st->options.in_flight_per_connection_max) {
        ++st->stats.reads_paused_reply_budget;
      }
      StopReading();
      break;
    }
    if (in.size() - pos < kFrameHeaderBytes) break;
    uint32_t len = DecodeFrameLength(in.data() + pos);
    if (len == 0) {
      CloseForBadInput("malformed frame: zero length");
      break;
    }
    if (len > st->options.frame_bytes_max && tls == nullptr && frames == 0 &&
        in[pos] == kTlsHandshakeRecordByte && in[pos + 1] == kTlsMajorVersionByte) {
      CloseForBadInput(
          "a TLS client on a plaintext port (its first bytes are a TLS handshake record)");
      break;
    }
    if (len > st->options.frame_bytes_max) {
      CloseForBadInput("oversized frame: length " + std::to_string(len) + " > max " +
                       std::to_string(st->options.frame_bytes_max) +
                       " (garbage bytes or not a framed Thrift client)");
      break;
    }
    // Not whole yet. Nothing is allocated for the length the header claims:
    // a header alone must not pin frame_bytes_max of memory. A large frame
    // reserves its length from the server's budget, or waits for it.
    if (in.size() - pos < kFrameHeaderBytes + len) {
      if (len > kReadChunkBytes && frame_reserved == 0 && !ReserveFrame(st.get(), len)) {
        ++st->stats.reads_paused_frame_budget;
        StopReading();
      }
      break;
    }
    ++st->stats.frames_received;
    ++frames;
    Dispatch(in.data() + pos + kFrameHeaderBytes, len, st);
    ++dispatched;
    pos += kFrameHeaderBytes + len;
    if (frame_reserved > 0) ReleaseFrame(st.get());  // it was this frame's
  }
  parsing = false;
  if (closing) return;
  if (pos > 0) in.erase(in.begin(), in.begin() + static_cast<ptrdiff_t>(pos));
  if (in.empty() && (tls == nullptr || !tls->has_pending_input())) {
    partial_since_ms = 0;
  } else if (pos > 0) {
    partial_since_ms = loop->NowMs();  // a frame arrived whole: the rest starts now
  }
  if (!reading && !close_after_writes && !waiting_frame_budget && !yielded && !HeldBack(*st)) {
    StartReading();
  }
}

bool RpcServer::State::Connection::HeldBack(const State& st) const {
  if (in_flight >= st.options.in_flight_per_connection_max) return true;
  if (reply_bytes >= st.options.reply_bytes_per_connection_max) return true;
  return reply_bytes > 0 && st.reply_bytes >= st.options.reply_bytes_max;
}

void RpcServer::State::Connection::AddReplyBytes(State* st, size_t n) {
  reply_bytes += n;
  if (st != nullptr) st->reply_bytes += n;
}

void RpcServer::State::Connection::SubReplyBytes(State* st, size_t n) {
  DTX_CHECK(reply_bytes >= n);
  reply_bytes -= n;
  if (st != nullptr) {
    DTX_CHECK(st->reply_bytes >= n);
    st->reply_bytes -= n;
  }
}

bool RpcServer::State::Connection::ReserveFrame(State* st, uint32_t len) {
  if (waiting_frame_budget) return false;
  // Behind the connections already waiting, first come first served.
  if (st->FrameFits(len) && st->frame_waiters.empty()) {
    frame_reserved = len;
    st->frame_bytes_reserved += len;
    return true;
  }
  waiting_frame_budget = true;
  st->frame_waiters.push_back(weak_from_this());
  return false;
}

void RpcServer::State::Connection::ReleaseFrame(State* st) {
  if (st != nullptr) {
    DTX_CHECK(st->frame_bytes_reserved >= frame_reserved);
    st->frame_bytes_reserved -= frame_reserved;
    if (!st->frame_waiters.empty()) st->WakeFrameWaiters();
  }
  frame_reserved = 0;
}

void RpcServer::State::Connection::StopReading() {
  if (!reading) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&handle));
  reading = false;
}

void RpcServer::State::Connection::Dispatch(const uint8_t* payload, uint32_t len,
                                            const std::shared_ptr<State>& st) {
  auto req = std::make_shared<Request>();
  req->processor = processor;
  req->out_buf = std::make_shared<TMemoryBuffer>();
  req->out = std::make_shared<TBinaryProtocol>(req->out_buf);
  // A fresh transport per frame: nothing is counted across frames.
  auto in_buf =
      std::make_shared<TMemoryBuffer>(const_cast<uint8_t*>(payload), len, TMemoryBuffer::OBSERVE);
  auto in_proto = std::make_shared<TBinaryProtocol>(in_buf);
  in_proto->setStringSizeLimit(static_cast<int32_t>(len));
  in_proto->setContainerSizeLimit(
      static_cast<int32_t>(std::min<size_t>(st->options.container_items_max, len)));
  ++in_flight;
  std::weak_ptr<Connection> weak = weak_from_this();
  std::weak_ptr<State> weak_server = server;
  EventLoop* ev = loop;
  auto cob = [weak, weak_server, ev, req](bool ok) {
    DTX_CHECK_MSG(ev->InLoopThread(),
                  "RpcServer: a handler completion was called off the loop thread; "
                  "Post() it back to the loop");
    if (req->done) {
      DTX_LOG_ERROR("RpcServer: a handler completed one request twice; ignored");
      return;
    }
    req->done = true;
    auto c = weak.lock();
    if (!c || c->closing) {
      if (auto st = weak_server.lock()) ++st->stats.replies_dropped;
      return;
    }
    c->Complete(req, ok);
  };
  try {
    processor->process(cob, in_proto, req->out);
  } catch (const std::exception& e) {
    if (!req->done) {
      req->done = true;
      --in_flight;
    }
    CloseForBadInput(std::string("request failed to dispatch: ") + e.what());
  }
}

void RpcServer::State::Connection::Complete(const std::shared_ptr<Request>& req, bool ok) {
  if (!ok) {
    --in_flight;
    CloseForBadInput("malformed request: the processor could not decode the message");
    return;
  }
  uint8_t* data = nullptr;
  uint32_t len = 0;
  req->out_buf->getBuffer(&data, &len);
  if (len == 0) {
    // Nothing to send (a oneway call); nothing waits on it.
    --in_flight;
    MaybeResume();
    return;
  }
  if (IsUnknownMethodReply(data, len)) {
    DTX_LOG_WARN("connection {} from {}: call to an unknown method; replying and closing", id,
                 peer);
    if (auto st = server.lock()) ++st->stats.connections_closed_bad_input;
    close_after_writes = true;
    StopReading();
  }
  uint8_t header[kFrameHeaderBytes];
  EncodeFrameLength(len, header);
  out_plain.append(reinterpret_cast<const char*>(header), kFrameHeaderBytes);
  out_plain.append(reinterpret_cast<const char*>(data), len);
  ++out_replies;
  AddReplyBytes(server.lock().get(), kFrameHeaderBytes + len);
  if (!flush_queued) {
    flush_queued = true;
    loop->AtTurnEnd([weak = weak_from_this()] {
      if (auto c = weak.lock()) c->FlushReplies();
    });
  }
}

void RpcServer::State::Connection::FlushReplies() {
  flush_queued = false;
  if (closing || out_replies == 0) return;
  auto* wr = new WriteReq{{}, out_replies, out_plain.size(), {}};
  wr->req.data = wr;
  out_replies = 0;
  auto st = server.lock();
  if (tls != nullptr) {
    Status sent = tls->Send(reinterpret_cast<const uint8_t*>(out_plain.data()), out_plain.size());
    out_plain.clear();
    if (!sent.ok()) {
      in_flight -= wr->replies;
      SubReplyBytes(st.get(), wr->budget_bytes);
      delete wr;
      CloseForBadInput("TLS: " + sent.message());
      return;
    }
    tls->TakeOutput(&wr->bytes);
  } else {
    wr->bytes.swap(out_plain);
  }
  if (st) ++st->stats.reply_writes;
  if (writes_pending++ == 0) write_progress_ms = loop->NowMs();
  uv_buf_t buf = uv_buf_init(wr->bytes.data(), static_cast<unsigned>(wr->bytes.size()));
  // The write callback owns `wr` and finds the connection through the
  // stream, which stays valid until the close callback (after all write
  // callbacks).
  int rc = uv_write(&wr->req, reinterpret_cast<uv_stream_t*>(&handle), &buf, 1,
                    [](uv_write_t* w, int status) {
                      auto* owned = static_cast<WriteReq*>(w->data);
                      auto* c = static_cast<Connection*>(w->handle->data);
                      const size_t replies = owned->replies;
                      const size_t budget_bytes = owned->budget_bytes;
                      delete owned;
                      c->OnWriteDone(status, replies, budget_bytes);
                    });
  if (rc != 0) {
    in_flight -= wr->replies;
    --writes_pending;
    SubReplyBytes(st.get(), wr->budget_bytes);
    delete wr;
    DTX_LOG_INFO("connection {} from {}: write failed: {}; closing", id, peer, uv_strerror(rc));
    Close();
  }
}

void RpcServer::State::Connection::OnWriteDone(int status, size_t replies, size_t budget_bytes) {
  in_flight -= replies;
  --writes_pending;
  write_progress_ms = loop->NowMs();
  auto st = server.lock();
  SubReplyBytes(st.get(), budget_bytes);  // also after a close: the budget is the server's
  if (closing) return;
  if (st) {
    st->stats.replies_sent += replies;
    st->Touch(this);
  }
  if (status < 0) {
    DTX_LOG_INFO("connection {} from {}: write failed: {}; closing", id, peer, uv_strerror(status));
    Close();
    return;
  }
  MaybeResume();
}

void RpcServer::State::Connection::MaybeResume() {
  if (closing) return;
  if (close_after_writes) {
    // Close once every request dispatched before has been answered.
    if (in_flight == 0) Close();
    return;
  }
  if (parsing || reading || waiting_frame_budget || yielded) return;
  auto st = server.lock();
  if (!st || HeldBack(*st)) return;
  ParseFrames();  // handles buffered frames, then restarts reading
}

void RpcServer::State::Connection::CloseForBadInput(const std::string& why) {
  if (closing) return;
  auto st = server.lock();
  if (st) ++st->stats.connections_closed_bad_input;
  if (!st || st->LogConnection()) {
    DTX_LOG_WARN("{}: closing connection {} from {}: {}", st ? st->options.name : "rpc", id, peer,
                 why);
  }
  Close();
}

void RpcServer::State::Connection::Close() {
  if (closing) return;
  {
    // Budgets: what was queued leaves with the connection (writes started
    // return theirs in their callbacks).
    auto st = server.lock();
    SubReplyBytes(st.get(), out_plain.size());
    if (frame_reserved > 0) ReleaseFrame(st.get());
  }
  // Replies completed this turn, before the cause of the close (pipelined
  // calls ahead of a bad frame): best effort, as the socket takes them; a
  // uv_write queued now would be cancelled by the close.
  if (out_replies > 0 && !handshaking()) {
    std::string bytes;
    if (tls == nullptr) {
      bytes.swap(out_plain);
    } else if (tls->Send(reinterpret_cast<const uint8_t*>(out_plain.data()), out_plain.size())
                   .ok()) {
      tls->TakeOutput(&bytes);
    }
    uv_buf_t b = uv_buf_init(bytes.data(), static_cast<unsigned>(bytes.size()));
    if (!bytes.empty()) (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&handle), &b, 1);
    out_plain.clear();
    out_replies = 0;
  }
  closing = true;
  reading = false;
  if (activity_hook.is_linked()) {
    if (auto st = server.lock()) st->by_activity->erase(st->by_activity->iterator_to(*this));
  }
  if (handshake_timer != 0) loop->Cancel(handshake_timer);
  handshake_timer = 0;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&handle));
  uv_close(reinterpret_cast<uv_handle_t*>(&handle), [](uv_handle_t* h) {
    auto* c = static_cast<Connection*>(h->data);
    if (auto st = c->server.lock()) st->connections.erase(c);
    c->self.reset();  // may free `c`
  });
}

RpcServer::RpcServer(EventLoop* loop,
                     std::shared_ptr<apache::thrift::async::TAsyncProcessor> processor,
                     RpcServerOptions options)
    : RpcServer(loop, RpcProcessorFactory([processor](const PeerIdentity&) { return processor; }),
                std::move(options)) {
  DTX_CHECK(processor != nullptr);
}

RpcServer::RpcServer(EventLoop* loop, RpcProcessorFactory factory, RpcServerOptions options)
    : loop_(loop), state_(std::make_shared<State>()) {
  DTX_CHECK(loop != nullptr);
  DTX_CHECK(factory != nullptr);
  state_->loop = loop;
  state_->processor_factory = std::move(factory);
  state_->options = std::move(options);
}

RpcServer::~RpcServer() { Close(); }

Status RpcServer::Start() {
  DTX_CHECK(loop_->InLoopThreadOrIdle());
  DTX_CHECK(state_->listener == nullptr && !state_->closed);
  const RpcServerOptions& o = state_->options;
  if (o.port < 0 || o.port > 65535) {
    return Status::InvalidArgument("bad port " + std::to_string(o.port));
  }
  if (o.frame_bytes_max < 16 || o.frame_bytes_max > (1u << 30)) {
    return Status::InvalidArgument("frame_bytes_max out of range");
  }
  sockaddr_storage addr{};
  if (uv_ip4_addr(o.host.c_str(), o.port, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(o.host.c_str(), o.port, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    return Status::InvalidArgument("bad listen host '" + o.host + "' (numeric address required)");
  }
  auto* l = new State::Listener{{}, state_};
  int rc = uv_tcp_init(loop_->uv_loop(), &l->handle);
  DTX_CHECK_MSG(rc == 0, uv_strerror(rc));
  l->handle.data = l;
  auto close_listener = [](State::Listener* lst) {
    uv_close(reinterpret_cast<uv_handle_t*>(&lst->handle),
             [](uv_handle_t* h) { delete static_cast<State::Listener*>(h->data); });
  };
  rc = uv_tcp_bind(&l->handle, reinterpret_cast<sockaddr*>(&addr), 0);
  if (rc == 0) {
    rc = uv_listen(
        reinterpret_cast<uv_stream_t*>(&l->handle), kListenBacklog, [](uv_stream_t* s, int status) {
          auto* lst = static_cast<State::Listener*>(s->data);
          if (auto st = lst->state.lock()) {
            internal::InvokeCallback("RpcServer accept", [&] { st->OnNewConnection(status); });
          }
        });
  }
  if (rc != 0) {
    close_listener(l);
    return Status::IOError("listen on " + o.host + ":" + std::to_string(o.port) + ": " +
                           uv_strerror(rc));
  }
  sockaddr_storage bound{};
  int len = sizeof(bound);
  uv_tcp_getsockname(&l->handle, reinterpret_cast<sockaddr*>(&bound), &len);
  port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                            : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  state_->listener = l;
  // The sweep also writes the summary of suppressed connection lines, so it
  // runs whatever the partial-frame limit.
  {
    std::weak_ptr<State> weak = state_;
    state_->sweep_timer = loop_->RunEvery(kSweepMs, [weak] {
      if (auto st = weak.lock()) st->Sweep();
    });
  }
  DTX_LOG_INFO("{}: listening on {}", o.name, address());
  return Status::OK();
}

std::string RpcServer::address() const { return FormatHostPort(state_->options.host, port_); }

void RpcServer::Close() {
  DTX_CHECK(loop_->InLoopThreadOrIdle());
  if (state_->closed) return;
  state_->closed = true;
  if (state_->sweep_timer != 0) {
    loop_->Cancel(state_->sweep_timer);
    state_->sweep_timer = 0;
  }
  if (state_->listener != nullptr) {
    State::Listener* l = state_->listener;
    state_->listener = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&l->handle),
             [](uv_handle_t* h) { delete static_cast<State::Listener*>(h->data); });
  }
  state_->CloseAll();
}

size_t RpcServer::reply_bytes_queued() const {
  DTX_CHECK(loop_->InLoopThreadOrIdle());
  return state_->reply_bytes;
}

size_t RpcServer::reply_bytes_max() const { return state_->options.reply_bytes_max; }

size_t RpcServer::frame_bytes_reserved() const {
  DTX_CHECK(loop_->InLoopThreadOrIdle());
  return state_->frame_bytes_reserved;
}

size_t RpcServer::connection_count() const {
  DTX_CHECK(loop_->InLoopThreadOrIdle());
  return state_->connections.size();
}

const RpcServerStats& RpcServer::stats() const {
  DTX_CHECK(loop_->InLoopThreadOrIdle());
  return state_->stats;
}

}  // namespace dtx
