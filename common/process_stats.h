// Process CPU and memory from /proc/self, for the standard Prometheus process
// metrics process_cpu_seconds_total and process_resident_memory_bytes.
// Linux only. Thread-safety: all functions are thread-safe (they only read
// /proc).
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"

namespace dtx::obs {

class Registry;

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

// Registers process_cpu_seconds_total (counter), process_resident_memory_bytes
// and process_virtual_memory_bytes (gauges), read from /proc at scrape time
// (NaN if /proc cannot be read).
void RegisterProcessMetrics(Registry* registry);

}  // namespace dtx::obs
