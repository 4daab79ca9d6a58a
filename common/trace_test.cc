#include "common/trace.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace dtx::obs {
namespace {

TEST(TraceRingTest, LookupFindsATxidsEventsInRecordOrder) {
  TraceRing ring(TraceRing::Options{.events_max = 64});
  TxId a{1, 1}, b{1, 2};
  ring.Record(a, span::kReceived);
  ring.Record(b, span::kReceived);
  ring.Record(a, span::kLocked, "shard=0");
  ring.Record(b, span::kLocked);
  ring.Record(a, span::kLogged);
  ring.Record(a, span::kSynced, "group=3");
  std::vector<SpanEvent> ev = ring.Lookup(a);
  ASSERT_EQ(ev.size(), 4u);
  EXPECT_STREQ(ev[0].event, "received");
  EXPECT_STREQ(ev[1].event, "locked");
  EXPECT_EQ(ev[1].detail, "shard=0");
  EXPECT_STREQ(ev[2].event, "logged");
  EXPECT_EQ(ev[2].detail, "");
  EXPECT_STREQ(ev[3].event, "synced");
  EXPECT_EQ(ev[3].detail, "group=3");
  for (size_t i = 1; i < ev.size(); ++i) {
    EXPECT_LT(ev[i - 1].seq, ev[i].seq);
    EXPECT_LE(ev[i - 1].mono_ns, ev[i].mono_ns);
  }
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  for (const SpanEvent& e : ev) {
    EXPECT_EQ(e.txid, a);
    // Wall time derived from the monotonic clock matches the real wall clock.
    EXPECT_LT(std::llabs(now_ns - e.unix_ns), int64_t{1000000000});
  }
  EXPECT_EQ(ring.Lookup(b).size(), 2u);
  EXPECT_TRUE(ring.Lookup(TxId{9, 9}).empty());
}

TEST(TraceRingTest, RingWrapsAndKeepsTheNewestEvents) {
  TraceRing ring(TraceRing::Options{.events_max = 8});
  ASSERT_EQ(ring.capacity(), 8u);
  for (uint64_t i = 0; i < 20; ++i) ring.RecordAt(TxId{7, i}, span::kVoted, i, int64_t(i));
  EXPECT_EQ(ring.recorded(), 20u);
  for (uint64_t i = 0; i < 12; ++i) EXPECT_TRUE(ring.Lookup(TxId{7, i}).empty()) << i;
  for (uint64_t i = 12; i < 20; ++i) {
    auto ev = ring.Lookup(TxId{7, i});
    ASSERT_EQ(ev.size(), 1u) << i;
    EXPECT_EQ(ev[0].mono_ns, i);
    EXPECT_EQ(ev[0].seq, i);
  }
  // One txid spanning the wrap: only its newest events survive, in order.
  TraceRing ring2(TraceRing::Options{.events_max = 4});
  TxId t{1, 1};
  const char* names[] = {"e0", "e1", "e2", "e3", "e4", "e5"};
  for (int i = 0; i < 6; ++i) ring2.Record(t, names[i]);
  auto ev = ring2.Lookup(t);
  ASSERT_EQ(ev.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_STREQ(ev[i].event, names[i + 2]);
}

TEST(TraceRingTest, CapacityRoundsUpToAPowerOfTwo) {
  EXPECT_EQ(TraceRing(TraceRing::Options{.events_max = 1000}).capacity(), 1024u);
  EXPECT_EQ(TraceRing().capacity(), kTraceEventsMaxDefault);
}

TEST(TraceRingTest, LongDetailIsCut) {
  TraceRing ring(TraceRing::Options{.events_max = 4});
  std::string long_detail(100, 'x');
  long_detail[0] = 'a';
  ring.Record(TxId{1, 1}, span::kApplied, long_detail);
  auto ev = ring.Lookup(TxId{1, 1});
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].detail, long_detail.substr(0, kTraceDetailBytesMax));
  // Exactly at the limit is kept whole.
  std::string exact(kTraceDetailBytesMax, 'y');
  ring.Record(TxId{1, 2}, span::kApplied, exact);
  EXPECT_EQ(ring.Lookup(TxId{1, 2})[0].detail, exact);
}

// A tiny ring wraps constantly. Each event's detail and timestamps encode
// its txid, so any torn read (fields of two records mixed) is caught.
void RunTornReadCheck(int writer_count, size_t ring_events, uint64_t per_writer) {
  TraceRing ring(TraceRing::Options{.events_max = ring_events});
  const uint64_t kWriters = uint64_t(writer_count);
  const uint64_t kPerWriter = per_writer;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> seen{0};
  std::string error;
  std::thread reader([&] {
    uint64_t probe = 0;
    while (!done.load()) {
      for (uint64_t w = 0; w < kWriters; ++w) {
        // Look for a recent txid of writer w (ids cycle mod 3, coprime to the ring size, so each
        // slot sees every id).
        TxId t{w + 1, probe % 3};
        for (const SpanEvent& e : ring.Lookup(t)) {
          seen.fetch_add(1);
          std::string want = std::to_string(t.hi) + ":" + std::to_string(t.lo);
          if (e.txid != t || e.detail != want || e.mono_ns != t.hi * 1000 + t.lo ||
              e.unix_ns != int64_t(t.lo) || std::strcmp(e.event, "applied") != 0) {
            error = "torn event for " + want + ": detail=" + e.detail;
            return;
          }
        }
      }
      ++probe;
    }
  });
  std::vector<std::thread> writers;
  for (uint64_t w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      for (uint64_t i = 0; i < kPerWriter; ++i) {
        TxId t{w + 1, i % 3};
        std::string d = std::to_string(t.hi) + ":" + std::to_string(t.lo);
        ring.RecordAt(t, span::kApplied, t.hi * 1000 + t.lo, int64_t(t.lo), d);
      }
    });
  }
  for (auto& t : writers) t.join();
  done = true;
  reader.join();
  EXPECT_EQ(error, "");
  EXPECT_GT(seen.load(), 0u);
  EXPECT_EQ(ring.recorded(), uint64_t(kWriters) * kPerWriter);
  // After the writers stopped, every slot holds one complete event (a
  // dropped lapped write leaves the slot's other event in place).
  size_t total = 0;
  for (uint64_t w = 1; w <= uint64_t(kWriters); ++w) {
    for (uint64_t lo = 0; lo < 3; ++lo) total += ring.Lookup(TxId{w, lo}).size();
  }
  EXPECT_EQ(total, ring.capacity());
}

TEST(TraceRingTest, WriterAndReaderNeverSeeATornEvent) { RunTornReadCheck(1, 8, 2000000); }

TEST(TraceRingTest, ConcurrentWritersAndReaderNeverSeeATornEvent) {
  RunTornReadCheck(2, 16, 1000000);
}

TEST(TraceRingTest, LogEventsWritesOneDebugLinePerEvent) {
  std::ostringstream captured;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  auto logger = std::make_shared<spdlog::logger>("trace_test", sink);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  TraceRing logged(TraceRing::Options{.events_max = 8, .log_events = true});
  TraceRing quiet(TraceRing::Options{.events_max = 8});
  logger->set_level(spdlog::level::info);
  logged.Record(TxId{1, 2}, span::kLocked, "info-level");
  logger->set_level(spdlog::level::debug);
  logged.Record(TxId{1, 2}, span::kVoted, "yes");
  quiet.Record(TxId{1, 2}, span::kVoted, "quiet");
  logger->flush();
  spdlog::set_default_logger(previous);
  const std::string out = captured.str();
  EXPECT_NE(out.find("trace txid=00000000000000010000000000000002 event=voted detail=yes"),
            std::string::npos)
      << out;
  EXPECT_EQ(out.find("info-level"), std::string::npos) << out;
  EXPECT_EQ(out.find("quiet"), std::string::npos) << out;
  // The ring has them either way.
  EXPECT_EQ(logged.Lookup(TxId{1, 2}).size(), 2u);
}

TEST(TimelineTest, MergesNodesByWallClockAndFormats) {
  TxId t{0xab, 0xcd};
  NodeTrace coord{"coordinator-0", {}};
  NodeTrace p0{"participant-0", {}};
  NodeTrace p1{"participant-1", {}};
  auto ev = [&](const char* name, int64_t unix_ns, uint64_t seq, std::string detail = "") {
    SpanEvent e;
    e.txid = t;
    e.event = name;
    e.unix_ns = unix_ns;
    e.seq = seq;
    e.detail = std::move(detail);
    return e;
  };
  coord.events = {ev("received", 1000000, 0), ev("decided", 4000000, 1, "commit"),
                  ev("acked", 6000000, 2)};
  p0.events = {ev("locked", 2000000, 10), ev("voted", 3000000, 11, "yes")};
  p1.events = {};
  auto merged = MergeTimelines({coord, p0, p1});
  ASSERT_EQ(merged.size(), 5u);
  EXPECT_EQ(merged[0].node, "coordinator-0");
  EXPECT_STREQ(merged[1].event.event, "locked");
  EXPECT_STREQ(merged[2].event.event, "voted");
  EXPECT_STREQ(merged[3].event.event, "decided");
  EXPECT_STREQ(merged[4].event.event, "acked");
  std::string text = FormatTimeline(t, {coord, p0, p1});
  EXPECT_NE(text.find("trace 00000000000000ab00000000000000cd: 5 events from 3 nodes"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("+     3.000 ms  coordinator-0   decided    commit"), std::string::npos)
      << text;
  EXPECT_NE(text.find("+     0.000 ms  coordinator-0   received"), std::string::npos) << text;
  EXPECT_NE(text.find("(no events on participant-1)"), std::string::npos) << text;
  EXPECT_LT(text.find("locked"), text.find("voted"));
}

}  // namespace
}  // namespace dtx::obs
