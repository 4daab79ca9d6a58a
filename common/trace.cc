#include "common/trace.h"

#include <spdlog/spdlog.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/check.h"

namespace dtx::obs {

namespace {
constexpr size_t kDetailWords = (kTraceDetailBytesMax + 1) / 8;  // 1 length byte + text
static_assert((kTraceDetailBytesMax + 1) % 8 == 0);

uint64_t ClockNs(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

size_t RoundUpPow2(size_t n) {
  size_t p = 1;
  while (p < n) p <<= 1;
  return p;
}
}  // namespace

// A seqlock slot. seq: 0 empty; 2*i+1 while record i is written; 2*i+2 when
// record i is complete. Every field is atomic so a concurrent read is a
// (detected) stale read, never a data race.
struct TraceRing::Slot {
  std::atomic<uint64_t> seq{0};
  std::atomic<uint64_t> hi{0};
  std::atomic<uint64_t> lo{0};
  std::atomic<uintptr_t> event{0};
  std::atomic<uint64_t> mono_ns{0};
  std::atomic<int64_t> unix_ns{0};
  std::atomic<uint64_t> detail[kDetailWords] = {};
};

TraceRing::TraceRing(Options options)
    : capacity_(RoundUpPow2(std::max<size_t>(options.events_max, kTraceEventsMin))),
      log_events_(options.log_events) {
  DTX_CHECK_MSG(options.events_max <= kTraceEventsMax, "trace ring larger than kTraceEventsMax");
  slots_ = std::make_unique<Slot[]>(capacity_);
  const uint64_t mono = ClockNs(CLOCK_MONOTONIC);
  wall_offset_ns_.store(static_cast<int64_t>(ClockNs(CLOCK_REALTIME)) - static_cast<int64_t>(mono));
  wall_offset_measured_ns_.store(mono);
}

TraceRing::~TraceRing() = default;

void TraceRing::Record(const TxId& txid, const char* event, std::string_view detail) {
  // One clock read: wall time is monotonic time plus an offset that is
  // re-measured at most kWallOffsetRefreshNs after its last measurement, so a
  // step of the wall clock shows up in traces within that time.
  const uint64_t mono = ClockNs(CLOCK_MONOTONIC);
  int64_t offset = wall_offset_ns_.load(std::memory_order_relaxed);
  if (mono - wall_offset_measured_ns_.load(std::memory_order_relaxed) > kWallOffsetRefreshNs) {
    const int64_t wall = static_cast<int64_t>(ClockNs(CLOCK_REALTIME));
    offset = wall - static_cast<int64_t>(mono);
    wall_offset_ns_.store(offset, std::memory_order_relaxed);
    wall_offset_measured_ns_.store(mono, std::memory_order_relaxed);
  }
  RecordAt(txid, event, mono, static_cast<int64_t>(mono) + offset, detail);
}

void TraceRing::RecordAt(const TxId& txid, const char* event, uint64_t mono_ns, int64_t unix_ns,
                         std::string_view detail) {
  if (log_events_) {
    spdlog::logger* logger = spdlog::default_logger_raw();
    if (logger->should_log(spdlog::level::debug)) {
      logger->debug("trace txid={} event={} detail={}", txid.ToString(), event, detail);
    }
  }
  const uint64_t i = next_.fetch_add(1, std::memory_order_relaxed);
  Slot& s = slots_[i & (capacity_ - 1)];
  const uint64_t writing = 2 * i + 1;
  uint64_t cur = s.seq.load(std::memory_order_relaxed);
  do {
    // Another writer is mid-way on this slot, or a newer record is already
    // there: this (lapped) record is the one to give up.
    if ((cur & 1) != 0 || cur > writing) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  } while (!s.seq.compare_exchange_weak(cur, writing, std::memory_order_relaxed));
  // Data stores are release (plain moves on x86): a reader that sees any of
  // them also sees the odd `seq` above and discards the slot. No fences, so
  // ThreadSanitizer understands it.
  constexpr auto kData = std::memory_order_release;
  s.hi.store(txid.hi, kData);
  s.lo.store(txid.lo, kData);
  s.event.store(reinterpret_cast<uintptr_t>(event), kData);
  s.mono_ns.store(mono_ns, kData);
  s.unix_ns.store(unix_ns, kData);
  uint8_t buf[kDetailWords * 8] = {};
  size_t n = std::min(detail.size(), kTraceDetailBytesMax);
  buf[0] = static_cast<uint8_t>(n);
  if (n > 0) std::memcpy(buf + 1, detail.data(), n);
  for (size_t w = 0; w < kDetailWords; ++w) {
    uint64_t word;
    std::memcpy(&word, buf + 8 * w, 8);
    s.detail[w].store(word, kData);
  }
  s.seq.store(writing + 1, std::memory_order_release);
}

std::vector<SpanEvent> TraceRing::Lookup(const TxId& txid) const {
  std::vector<SpanEvent> out;
  for (size_t k = 0; k < capacity_; ++k) {
    const Slot& s = slots_[k];
    uint64_t s1 = s.seq.load(std::memory_order_acquire);
    if (s1 == 0 || (s1 & 1) != 0) continue;
    // Acquire loads (plain moves on x86) pair with the writer's release data
    // stores and keep the second `seq` load after them.
    constexpr auto kData = std::memory_order_acquire;
    if (s.hi.load(kData) != txid.hi || s.lo.load(kData) != txid.lo) continue;
    SpanEvent e;
    e.txid = txid;
    e.event = reinterpret_cast<const char*>(s.event.load(kData));
    e.mono_ns = s.mono_ns.load(kData);
    e.unix_ns = s.unix_ns.load(kData);
    uint8_t buf[kDetailWords * 8];
    for (size_t w = 0; w < kDetailWords; ++w) {
      uint64_t word = s.detail[w].load(kData);
      std::memcpy(buf + 8 * w, &word, 8);
    }
    uint64_t s2 = s.seq.load(std::memory_order_relaxed);
    if (s1 != s2) continue;  // rewritten while we read: the old event is gone anyway
    size_t n = std::min<size_t>(buf[0], kTraceDetailBytesMax);
    e.detail.assign(reinterpret_cast<const char*>(buf + 1), n);
    e.seq = s1 / 2 - 1;
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(),
            [](const SpanEvent& a, const SpanEvent& b) { return a.seq < b.seq; });
  return out;
}

std::vector<TimelineEntry> MergeTimelines(const std::vector<NodeTrace>& traces) {
  std::vector<TimelineEntry> out;
  for (const NodeTrace& t : traces) {
    for (const SpanEvent& e : t.events) out.push_back(TimelineEntry{t.node, e});
  }
  std::stable_sort(out.begin(), out.end(), [](const TimelineEntry& a, const TimelineEntry& b) {
    if (a.event.unix_ns != b.event.unix_ns) return a.event.unix_ns < b.event.unix_ns;
    if (a.node != b.node) return a.node < b.node;
    return a.event.seq < b.event.seq;
  });
  return out;
}

std::string FormatTimeline(const TxId& txid, const std::vector<NodeTrace>& traces) {
  std::vector<TimelineEntry> merged = MergeTimelines(traces);
  std::string out = "trace " + txid.ToString() + ": " + std::to_string(merged.size()) +
                    " events from " + std::to_string(traces.size()) + " nodes\n";
  if (!merged.empty()) {
    const int64_t t0 = merged.front().event.unix_ns;
    char line[256];
    for (const TimelineEntry& e : merged) {
      double ms = static_cast<double>(e.event.unix_ns - t0) / 1e6;
      std::snprintf(line, sizeof(line), "+%10.3f ms  %-15s %-10s %s\n", ms, e.node.c_str(),
                    e.event.event, e.event.detail.c_str());
      out += line;
    }
  }
  for (const NodeTrace& t : traces) {
    if (t.events.empty()) out += "(no events on " + t.node + ")\n";
  }
  return out;
}

}  // namespace dtx::obs
