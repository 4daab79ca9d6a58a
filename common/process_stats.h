// Process CPU and memory from /proc/self, for the standard Prometheus process
// metrics process_cpu_seconds_total, process_resident_memory_bytes and
// process_virtual_memory_bytes. Linux only. Thread-safety: all functions and
// ProcessCollector::Collect are thread-safe (they only read /proc).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "common/status.h"

namespace dtx::obs {

struct ProcessStats {
  double cpu_seconds = 0;              // user + system time of all threads
  uint64_t resident_memory_bytes = 0;  // RSS
  uint64_t virtual_memory_bytes = 0;
};

// Reads /proc/self/stat. IOError if it cannot be read, Corruption if it does
// not parse.
Result<ProcessStats> ReadProcessStats();

// Parses the text of a /proc/<pid>/stat file (exposed for tests).
Result<ProcessStats> ParseProcStat(std::string_view stat, long clock_ticks_per_s, long page_bytes);

// The process metrics as a prometheus-cpp collectable, read from /proc once
// per scrape: process_cpu_seconds_total (counter),
// process_resident_memory_bytes and process_virtual_memory_bytes (gauges).
// A scrape when /proc/self/stat cannot be read or parsed has none of them.
class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
  // The families for `s` (exposed for tests).
  static std::vector<prometheus::MetricFamily> Families(const ProcessStats& s);
};

}  // namespace dtx::obs
