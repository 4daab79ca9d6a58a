#include "common/process_stats.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <prometheus/text_serializer.h>

namespace dtx::obs {
namespace {

TEST(ProcessStatsTest, ParsesProcStatWithAwkwardCommand) {
  // Fields after ')': state ppid pgrp session tty tpgid flags minflt cminflt
  // majflt cmajflt utime(14) stime(15) cutime cstime prio nice threads
  // itreal starttime vsize(23) rss(24) ...
  std::string stat =
      "1234 (a ) (b c) S 1 1 1 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 555 "
      "123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
  auto s = ParseProcStat(stat, 100, 4096);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_DOUBLE_EQ(s->cpu_seconds, 4.0);
  EXPECT_EQ(s->resident_memory_bytes, 2048u * 4096u);
  EXPECT_EQ(s->virtual_memory_bytes, 123456789u);
  EXPECT_FALSE(ParseProcStat("1234 (x) S 1 2 3", 100, 4096).ok());
  EXPECT_FALSE(ParseProcStat("garbage", 100, 4096).ok());
  EXPECT_FALSE(
      ParseProcStat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 1 0 0 20 0 1 0 1 10 10\n", 100, 4096).ok());
}

TEST(ProcessStatsTest, ReadsThisProcess) {
  auto before = ReadProcessStats();
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  EXPECT_GT(before->resident_memory_bytes, 1u << 20);
  EXPECT_GE(before->virtual_memory_bytes, before->resident_memory_bytes);
  // Burn ~100 ms of CPU; the counter must move.
  auto start = std::chrono::steady_clock::now();
  volatile uint64_t x = 0;
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(150)) x = x + 1;
  auto after = ReadProcessStats();
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->cpu_seconds, before->cpu_seconds);
}

TEST(ProcessStatsTest, CollectorExposesTheThreeProcessMetrics) {
  const std::string text =
      prometheus::TextSerializer().Serialize(ProcessCollector::Families(ProcessStats{
          .cpu_seconds = 4.25, .resident_memory_bytes = 8192, .virtual_memory_bytes = 1 << 20}));
  EXPECT_NE(text.find("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 4.25\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE process_resident_memory_bytes gauge\n"
                      "process_resident_memory_bytes 8192\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE process_virtual_memory_bytes gauge\n"
                      "process_virtual_memory_bytes 1048576\n"),
            std::string::npos)
      << text;

  // This process, read at Collect(): a resident size above 1 MiB.
  const std::vector<prometheus::MetricFamily> live = ProcessCollector().Collect();
  ASSERT_EQ(live.size(), 3u);
  EXPECT_EQ(live[1].name, "process_resident_memory_bytes");
  ASSERT_EQ(live[1].metric.size(), 1u);
  EXPECT_GT(live[1].metric[0].gauge.value, 1 << 20);
}

}  // namespace
}  // namespace dtx::obs
