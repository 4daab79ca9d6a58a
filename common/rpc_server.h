// RpcServer: a framed binary Thrift server on the EventLoop, dispatching every
// frame to a cob_style AsyncProcessor (rpc::ParticipantAsyncProcessor,
// rpc::CoordinatorAsyncProcessor from the dtx_idl target).
//
// Wire format (docs/design.md "Network layer"): standard Thrift framed
// transport + binary protocol. A frame is a 4-byte big-endian payload length
// followed by that many bytes; the payload is one TBinaryProtocol message.
// Any stock Thrift client (TSocket + TFramedTransport + TBinaryProtocol) can
// call the server. We do the framing ourselves over libuv (not Thrift's
// TFramedTransport, which in 0.17 counts consumed bytes against
// MaxMessageSize across frames) and parse each frame from a fresh
// TMemoryBuffer.
//
// Dispatch: each complete frame is handed to processor->process(cob, in, out)
// at once, on the loop thread; the handler runs there. The handler answers
// by calling its completion callback (cob or exn_cob) later, possibly much
// later and in any order relative to other requests on the same connection
// (replies carry the request's seqid, so clients match them). COMPLETIONS
// MUST BE CALLED ON THE LOOP THREAD: a runtime whose work finishes on another
// thread (WAL sync, LevelDB) Post()s back to the loop first. This is checked
// (DTX_CHECK) and a violation stops the process. A completion that arrives
// after its connection closed (or after the server closed) is dropped.
//
// Writes are coalesced: a completed reply is framed into its connection's
// output, and at the end of the loop turn (EventLoop::AtTurnEnd) everything a
// connection got during the turn leaves in one write, with TLS as one
// encryption (records of up to 16 KiB) instead of one record per reply. The
// 64 replies released by one WAL sync cost one syscall, not 64.
//
// Bad input never crashes the process and only costs the offending
// connection: a zero-length frame, a frame longer than frame_bytes_max,
// garbage bytes (which read as an absurd length), a payload the processor
// cannot parse, a message that is not a call, EOF in the middle of a frame,
// and a call to an unknown method (answered first with Thrift's
// TApplicationException UNKNOWN_METHOD, then closed) each close that
// connection with one log line; other connections are unaffected.
//
// Limits: frame_bytes_max per frame; connections_max open connections (an
// accept past it evicts an idle connection, else it is closed at once with a
// log line: see "Idle connections" below); in_flight_per_connection
// _max requests dispatched and not yet answered per connection (past it the
// server stops reading that connection until replies drain: back-pressure,
// not an error); partial_frame_timeout_ms for a frame to arrive whole once
// its first byte did (a slow or stalled sender, e.g. slowloris, is closed with
// a log line and counted in connections_closed_slow; checked once a second,
// not while the server itself stops reading). Memory for a frame grows with
// the bytes that arrived, never with the length its header claims. Byte
// budgets bound the rest (see "Byte budgets" below). The log
// lines about single connections (refused, failed handshakes, slow senders,
// bad input) are limited to 20 per 10 s per server, with a summary of what was
// suppressed (common/log_limiter.h); the counters below count every event.
//
// Idle connections: a connection is idle while it has no request in flight,
// no reply queued or being written, no partial frame (or TLS handshake) under
// way; its idle time runs from the last byte received or reply written. One
// idle for idle_timeout_ms is closed (connections_closed_idle; an info line,
// limited like the others). Why minutes, not seconds (kRpcIdleTimeoutMs): the
// clients keep connections open between calls (the C++ client's channels, the
// Python client's pool), and an application that commits once a minute should
// not pay a new connection (and TLS handshake) per transaction; peers
// heartbeat every 100 ms, so a live peer is never near the limit. The timeout
// reaps what nobody will use again (a client that went away without a FIN, a
// connection a NAT forgot); it is not what protects the listener from a flood
// of silent connections. Eviction does that:
//
// At the cap (connections_max open), a new connection is not refused while
// some open connection is idle: the one idle longest is closed instead
// (connections_evicted, a warning line, limited), and the new one is served.
// Only when none is idle is the new connection refused (connections_rejected).
// This is safe: an idle connection has nothing in flight and nothing queued,
// so closing it loses no request and no reply, exactly as if the client had
// closed it; the clients of this project open a new connection on their next
// call (PeerChannel reconnects at once after losing a connection that served
// it, and repeats once the calls that are safe to repeat if the close raced
// with their request; the Python client checks a pooled connection before
// using it). A busy connection (a request in flight, a reply being written, a
// frame arriving) is never evicted. Connections that never sent a byte count
// as idle: a flood of them can make the listener churn them, but it cannot
// keep a new client out, nor close a busy one. Open connections are kept in
// order of their last activity (a Boost.Intrusive list, no allocation), so the
// one idle longest is found from the front, and the idle sweep (once a second)
// stops at the first connection active within idle_timeout_ms.
//
// Byte budgets: what a client makes the server hold is bounded in bytes, not
// only in requests. A ~30-byte Read of a 1 MiB value pipelined thousands of
// times by a client that never reads its replies must not pin gigabytes.
// - Replies: the bytes of a connection's replies queued or being written
//   count against reply_bytes_per_connection_max; once they reach it, the
//   server takes no further frame from that connection (the frames already
//   received wait in its buffer, and reading stops) until its writes drain.
//   Replies are produced synchronously for most calls, so the check runs
//   before every frame, not once per read. Over the whole server, once the
//   replies of all connections reach reply_bytes_max, a connection that has
//   replies of its own queued takes no further frame until they are
//   written; one whose replies all left (a client that reads) is still
//   served. A connection thus holds at most its budget plus one reply (and
//   the replies of requests already in flight), and the server at most
//   reply_bytes_max plus one reply per connection. Replies of requests in
//   flight are the handler's to bound: one that answers late and large
//   answers only while reply_bytes_queued() < reply_bytes_max() (the
//   participant's late reads: docs/design.md "The loop never blocks").
// - Slow readers: a connection whose reply write makes no progress for
//   partial_frame_timeout_ms (the peer does not read, its window is full) is
//   closed (connections_closed_slow_reader), so budget it holds is freed.
// - Large frames: a frame longer than one read (64 KiB) reserves its
//   claimed length from the server's frame_bytes_reserved_max when its header
//   arrives; the memory itself still grows with the bytes that arrive. While
//   the reservation cannot be made the server stops reading that connection
//   and serves waiting connections first come, first served as reservations
//   are released (the frame was dispatched or its connection closed). One
//   frame is always admitted, so a frame of frame_bytes_max gets through.
//   The partial-frame timeout of a waiting connection restarts when it is
//   admitted. Frames up to 64 KiB need no reservation: a connection holds at
//   most one read of them beyond the frame under way.
// None of this is an error: the client sees its replies later, and TCP
// flow control slows the sender. The budgets are per server (per listener),
// so a client flooding the client listener never stalls the peer listener
// that carries heartbeats and votes.
//
// Fair service: a connection dispatches at most 128 frames in a row; with
// more buffered, it stops reading and yields the loop (a posted task resumes
// it after this turn's other callbacks), so a client pipelining thousands of
// small calls in one read delays another connection's call by at most 128
// dispatches, not by its whole backlog (parse_yields counts it).
//
// TLS (options.tls set): every connection first completes a TLS 1.3
// handshake (common/tls.h); only then is the processor factory called, with
// the identity of the client's verified certificate, and from then on every
// frame travels inside TLS records. A failed handshake (certificate refused,
// no certificate where one is required, plaintext sent to the TLS port, the
// peer gone, no handshake within tls_handshake_timeout_ms) closes the
// connection with one log line naming the peer's address and the reason.
// A plaintext Thrift call to a TLS port is answered once, in plaintext, with a
// TApplicationException saying that the port requires TLS, then closed. Without
// options.tls the server speaks plaintext, and every identity is
// unauthenticated (PrincipalKind::kNone).
//
// Ownership: the server shares ownership of the processor (and through it of
// the handler) with every request in flight, so a late completion never
// touches freed memory. Thread-safety: loop thread only (see event_loop.h).
#pragma once

#include <thrift/async/TAsyncProcessor.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/event_loop.h"
#include "common/identity.h"
#include "common/status.h"
#include "common/tls.h"

namespace dtx {

// 16 MiB of payload (4 MiB transaction + slack for large status replies)
// plus 64 KiB of headroom for the message envelope and struct overhead.
inline constexpr size_t kRpcFrameBytesMax = (16u << 20) + (64u << 10);
inline constexpr size_t kRpcServerConnectionsMax = 1024;
inline constexpr size_t kRpcServerInFlightPerConnectionMax = 4096;
// A whole 16 MiB frame at 0.6 MB/s; honest frames take milliseconds.
inline constexpr int kRpcPartialFrameTimeoutMs = 30000;
// 5 minutes: see "Idle connections" above.
inline constexpr int kRpcIdleTimeoutMs = 5 * 60 * 1000;
// Byte budgets (see "Byte budgets" above). 4 MiB per connection: hundreds of
// pipelined replies of an ordinary size, a few of the largest values.
inline constexpr size_t kRpcReplyBytesPerConnectionMax = 4u << 20;
inline constexpr size_t kRpcReplyBytesMax = 256u << 20;
// Four frames of the largest size arriving at once.
inline constexpr size_t kRpcFrameBytesReservedMax = 4 * kRpcFrameBytesMax;
// Largest list/map/set length a decoded message may claim (Thrift's
// container_limit). Bounds the allocation a hostile length can cause.
inline constexpr size_t kRpcContainerItemsMax = 1u << 18;

struct RpcServerOptions {
  std::string host = "127.0.0.1";  // numeric IPv4/IPv6 address to bind
  int port = 0;                    // 0: the kernel picks one; see port()
  std::string name = "rpc";        // for log lines
  size_t frame_bytes_max = kRpcFrameBytesMax;
  size_t connections_max = kRpcServerConnectionsMax;
  size_t in_flight_per_connection_max = kRpcServerInFlightPerConnectionMax;
  size_t container_items_max = kRpcContainerItemsMax;
  // Server-side TLS context (TlsSide::kServer); null: plaintext.
  std::shared_ptr<const TlsContext> tls;
  int tls_handshake_timeout_ms = kTlsHandshakeTimeoutMs;
  int partial_frame_timeout_ms = kRpcPartialFrameTimeoutMs;  // 0: no limit
  // An idle connection (see above) is closed after this long; 0: never (at
  // the cap, idle connections are still evicted).
  int idle_timeout_ms = kRpcIdleTimeoutMs;
  // Byte budgets (see above).
  size_t reply_bytes_per_connection_max = kRpcReplyBytesPerConnectionMax;
  size_t reply_bytes_max = kRpcReplyBytesMax;
  size_t frame_bytes_reserved_max = kRpcFrameBytesReservedMax;
};

// Counters since Start(), for tests and metrics. Loop thread only.
struct RpcServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_rejected = 0;     // over connections_max, none idle to evict
  uint64_t connections_evicted = 0;      // idle, closed at the cap for a new connection
  uint64_t connections_closed_idle = 0;  // idle for idle_timeout_ms
  uint64_t connections_closed_bad_input = 0;
  uint64_t connections_closed_slow = 0;  // a frame not whole within partial_frame_timeout_ms
  // A reply write without progress for partial_frame_timeout_ms.
  uint64_t connections_closed_slow_reader = 0;
  // Times a connection stopped taking frames because its replies, or the
  // server's, reached their byte budget; and because a large frame had to
  // wait for frame_bytes_reserved_max.
  uint64_t reads_paused_reply_budget = 0;
  uint64_t reads_paused_frame_budget = 0;
  // Times a connection yielded the loop with frames still buffered (see
  // "Fair service").
  uint64_t parse_yields = 0;
  uint64_t frames_received = 0;
  uint64_t replies_sent = 0;
  uint64_t reply_writes = 0;           // socket writes of replies (one per connection per turn)
  uint64_t replies_dropped = 0;        // completion after its connection closed
  uint64_t tls_handshakes = 0;         // completed (the factory was called)
  uint64_t tls_handshakes_failed = 0;  // refused, timed out or abandoned
};

// Makes the processor (and through it the handler) that serves one
// connection, once the connection's peer is known (with TLS: after the
// handshake, with the verified identity): the handler of that connection sees
// who is calling (common/identity.h). Called on the loop thread, once per
// connection; must not return null.
using RpcProcessorFactory =
    std::function<std::shared_ptr<apache::thrift::async::TAsyncProcessor>(const PeerIdentity&)>;

class RpcServer {
 public:
  // `loop` must outlive the server. `processor` must not be null; it serves
  // every connection.
  RpcServer(EventLoop* loop, std::shared_ptr<apache::thrift::async::TAsyncProcessor> processor,
            RpcServerOptions options);
  // One processor per connection, from `factory` (must not be empty).
  RpcServer(EventLoop* loop, RpcProcessorFactory factory, RpcServerOptions options);
  // Close()s.
  ~RpcServer();
  RpcServer(const RpcServer&) = delete;
  RpcServer& operator=(const RpcServer&) = delete;

  // Binds and listens. InvalidArgument for a bad host/port, IOError (with
  // errno text) when bind/listen fails (e.g. address in use). Once only.
  Status Start();
  // The bound port (after a successful Start(); useful with port 0).
  int port() const { return port_; }
  // "host:port" as bound.
  std::string address() const;

  // Stops accepting and closes every connection. Requests in flight are
  // abandoned: their completions become no-ops. Safe to call twice.
  void Close();

  size_t connection_count() const;
  const RpcServerStats& stats() const;
  // Now: the bytes of replies queued or being written on all connections,
  // and the bytes reserved for large frames under way (see "Byte budgets").
  size_t reply_bytes_queued() const;
  size_t frame_bytes_reserved() const;
  // RpcServerOptions::reply_bytes_max: the bound reply_bytes_queued() is
  // held to (plus one reply per connection).
  size_t reply_bytes_max() const;

 private:
  struct State;  // shared with connections and in-flight requests
  EventLoop* loop_;
  std::shared_ptr<State> state_;
  int port_ = 0;
};

}  // namespace dtx
