// Tracing: the txid is the trace id. Each node records span events (received,
// locked, logged, synced, voted, decided, applied, acked, ...) of its recent
// transactions in a bounded in-memory ring, TraceRing; `dtxctl trace TXID`
// asks every node for a txid's events (GetTrace RPC) and merges them into one
// timeline with MergeTimelines() / FormatTimeline(). How a runtime wires it
// in: docs/observability.md.
//
// Record() is for the hot path: one fetch_add to claim a slot, one CAS to
// mark it, a few relaxed stores, one vDSO clock read; no lock, no allocation.
// Lookup() scans the whole ring without blocking writers (each slot is a
// seqlock: a slot being rewritten while read is skipped).
//
// Thread-safety: Record() and Lookup() are thread-safe and may run
// concurrently from any threads. When a writer is so slow that the ring
// laps it (capacity newer records started meanwhile) its event is dropped and
// counted in dropped(), never torn.
//
// Log: with Options::log_events, Record() also writes each event as one
// `trace txid=... event=... detail=...` line at spdlog level debug (so
// `--log-level debug` puts every span event in node.log; at the default level
// it costs one level check).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/types.h"

namespace dtx::obs {

// Limits: ring size (a power of two) and the inline detail text per event.
inline constexpr size_t kTraceEventsMaxDefault = 65536;
inline constexpr size_t kTraceEventsMax = size_t{1} << 22;
// The smallest ring: a smaller Options::events_max gets this many slots
// (node/node.h clamps --trace-events to it, for both node types).
inline constexpr size_t kTraceEventsMin = 2;
inline constexpr size_t kTraceDetailBytesMax = 39;  // longer details are cut
// Record() reads only the monotonic clock; the wall-clock offset it adds is
// re-measured when older than this.
inline constexpr uint64_t kWallOffsetRefreshNs = 100'000'000;

// Canonical event names (use these so timelines line up across nodes).
namespace span {
inline constexpr const char* kReceived = "received";
inline constexpr const char* kLocked = "locked";
inline constexpr const char* kLogged = "logged";
inline constexpr const char* kSynced = "synced";
inline constexpr const char* kVoted = "voted";
inline constexpr const char* kDecided = "decided";
inline constexpr const char* kApplied = "applied";
inline constexpr const char* kAcked = "acked";
}  // namespace span

// One span event as returned by Lookup().
struct SpanEvent {
  TxId txid;
  const char* event = "";  // a string with static storage duration
  uint64_t mono_ns = 0;    // CLOCK_MONOTONIC of this node
  int64_t unix_ns = 0;     // wall clock (comparable across nodes of a host); by
                           // Record(): mono_ns + an offset at most 100 ms old
  std::string detail;      // optional, at most kTraceDetailBytesMax bytes
  uint64_t seq = 0;        // record order on this node
};

class TraceRing {
 public:
  struct Options {
    size_t events_max = kTraceEventsMaxDefault;  // rounded up to a power of two
    bool log_events = false;
  };
  TraceRing() : TraceRing(Options{}) {}
  explicit TraceRing(Options options);
  ~TraceRing();
  TraceRing(const TraceRing&) = delete;
  TraceRing& operator=(const TraceRing&) = delete;

  // Records `event` for `txid` now. `event` must have static storage
  // duration (a literal, or a span:: constant): only the pointer is kept.
  // `detail` is copied (cut at kTraceDetailBytesMax bytes).
  void Record(const TxId& txid, const char* event, std::string_view detail = {});
  // Same, with timestamps taken by the caller (tests, or a caller that
  // already read the clocks).
  void RecordAt(const TxId& txid, const char* event, uint64_t mono_ns, int64_t unix_ns,
                std::string_view detail = {});

  // Every event of `txid` still in the ring, in record order (seq).
  std::vector<SpanEvent> Lookup(const TxId& txid) const;

  size_t capacity() const { return capacity_; }
  // Events recorded so far (including those overwritten or dropped).
  uint64_t recorded() const { return next_.load(std::memory_order_relaxed); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  struct Slot;
  const size_t capacity_;
  const bool log_events_;
  std::unique_ptr<Slot[]> slots_;
  alignas(64) std::atomic<uint64_t> next_{0};
  alignas(64) std::atomic<uint64_t> dropped_{0};
  // CLOCK_REALTIME - CLOCK_MONOTONIC, and when (monotonic) it was measured.
  alignas(64) std::atomic<int64_t> wall_offset_ns_{0};
  std::atomic<uint64_t> wall_offset_measured_ns_{0};
};

// One node's answer to "what do you have for txid X".
struct NodeTrace {
  std::string node;  // e.g. "coordinator-0"
  std::vector<SpanEvent> events;
};

// One line of a merged timeline.
struct TimelineEntry {
  std::string node;
  SpanEvent event;
};

// Merges the nodes' events by wall-clock time (ties: node name, then seq).
std::vector<TimelineEntry> MergeTimelines(const std::vector<NodeTrace>& traces);

// Human-readable timeline, one line per event:
//   "+   0.412 ms  participant-1   locked    shard=1"
// Offsets are from the first event; the header names the txid; nodes that
// answered with no events are listed as such (a node that failed to answer
// is for the caller to print).
std::string FormatTimeline(const TxId& txid, const std::vector<NodeTrace>& traces);

}  // namespace dtx::obs
