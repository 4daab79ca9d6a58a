#include "common/process_stats.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <string>
#include <utility>

#include <prometheus/client_metric.h>
#include <prometheus/metric_type.h>

namespace dtx::obs {

namespace {
constexpr size_t kProcStatBytesMax = 4096;

bool ParseU64(std::string_view s, uint64_t* out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && p == s.data() + s.size();
}
}  // namespace

Result<ProcessStats> ParseProcStat(std::string_view stat, long clock_ticks_per_s, long page_bytes) {
  if (clock_ticks_per_s <= 0 || page_bytes <= 0)
    return Status::InvalidArgument("bad sysconf values");
  // "pid (comm) state ppid ...": comm may hold spaces and ')', so fields are
  // counted from the last ')'. After it, field 3 (state) is index 0.
  size_t close = stat.rfind(')');
  if (close == std::string_view::npos) return Status::Corruption("/proc stat: no ')'");
  std::string_view rest = stat.substr(close + 1);
  // Wanted (1-based field numbers of proc(5)): 14 utime, 15 stime,
  // 23 vsize (bytes), 24 rss (pages). Index after ')' = field - 3.
  uint64_t utime = 0, stime = 0, vsize = 0, rss = 0;
  int found = 0;
  size_t index = 0;
  size_t pos = 0;
  while (pos < rest.size() && found < 4) {
    while (pos < rest.size() && (rest[pos] == ' ' || rest[pos] == '\n')) ++pos;
    if (pos >= rest.size()) break;
    size_t end = rest.find_first_of(" \n", pos);
    if (end == std::string_view::npos) end = rest.size();
    std::string_view field = rest.substr(pos, end - pos);
    uint64_t* target = nullptr;
    switch (index) {
      case 14 - 3: target = &utime; break;
      case 15 - 3: target = &stime; break;
      case 23 - 3: target = &vsize; break;
      case 24 - 3: target = &rss; break;
      default: break;
    }
    if (target != nullptr) {
      if (!ParseU64(field, target)) return Status::Corruption("/proc stat: bad number");
      ++found;
    }
    ++index;
    pos = end;
  }
  if (found != 4) return Status::Corruption("/proc stat: too few fields");
  ProcessStats s;
  s.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(clock_ticks_per_s);
  s.resident_memory_bytes = rss * static_cast<uint64_t>(page_bytes);
  s.virtual_memory_bytes = vsize;
  return s;
}

Result<ProcessStats> ReadProcessStats() {
  int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open /proc/self/stat", errno);
  char buf[kProcStatBytesMax];
  ssize_t n;
  do {
    n = ::read(fd, buf, sizeof(buf));
  } while (n < 0 && errno == EINTR);
  int err = errno;
  ::close(fd);
  if (n < 0) return Status::FromErrno("read /proc/self/stat", err);
  return ParseProcStat(std::string_view(buf, static_cast<size_t>(n)), ::sysconf(_SC_CLK_TCK),
                       ::sysconf(_SC_PAGESIZE));
}

namespace {
prometheus::MetricFamily OneValue(const char* name, const char* help, prometheus::MetricType type,
                                  double value) {
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  return prometheus::MetricFamily{.name = name, .help = help, .type = type, .metric = {m}};
}
}  // namespace

std::vector<prometheus::MetricFamily> ProcessCollector::Families(const ProcessStats& s) {
  std::vector<prometheus::MetricFamily> out;
  out.push_back(OneValue("process_cpu_seconds_total",
                         "Total user and system CPU time spent in seconds.",
                         prometheus::MetricType::Counter, s.cpu_seconds));
  out.push_back(OneValue("process_resident_memory_bytes", "Resident memory size in bytes.",
                         prometheus::MetricType::Gauge,
                         static_cast<double>(s.resident_memory_bytes)));
  out.push_back(OneValue("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                         prometheus::MetricType::Gauge,
                         static_cast<double>(s.virtual_memory_bytes)));
  return out;
}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  auto s = ReadProcessStats();
  if (!s.ok()) return {};
  return Families(*s);
}

}  // namespace dtx::obs
