// dtx-wal-bench: how fast does the WAL make records durable?
//
// For each cell (concurrent appenders x record size) one libuv loop thread
// keeps N appends outstanding, the way a node's event loop will: the durable
// callback (flusher thread) stamps the time and posts the slot back to the
// loop with uv_async_send; the loop re-issues the next append for that slot.
// Latency-to-durable is Append() call to durable callback. In the same run
// the raw floor is measured in the same directory: write() of one record and
// fdatasync() in a loop (growing file), and pwrite()+fdatasync() into a
// preallocated file (what the WAL itself does).
//
//   dtx-wal-bench [--dir DIR] [--seconds S] [--json FILE]
//                 [--appenders 1,4,16,64] [--sizes 100,4096]
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "wal/wal.h"

namespace {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

std::atomic<bool> g_interrupted{false};

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

struct Summary {
  double per_sec = 0;
  double p50_us = 0, p99_us = 0, max_us = 0;
  uint64_t count = 0;
  double records_per_sync = 0;
  double sync_us_avg = 0;
};

Summary Summarize(std::vector<int64_t>& lat_ns, double seconds) {
  Summary s;
  s.count = lat_ns.size();
  s.per_sec = seconds > 0 ? static_cast<double>(lat_ns.size()) / seconds : 0;
  if (lat_ns.empty()) return s;
  std::sort(lat_ns.begin(), lat_ns.end());
  auto pct = [&](double p) {
    size_t i = static_cast<size_t>(p * static_cast<double>(lat_ns.size() - 1));
    return static_cast<double>(lat_ns[i]) / 1000.0;
  };
  s.p50_us = pct(0.50);
  s.p99_us = pct(0.99);
  s.max_us = static_cast<double>(lat_ns.back()) / 1000.0;
  return s;
}

// The raw floor: one record written and fdatasync'd per iteration.
Summary MeasureFloor(const std::string& dir, size_t record_bytes, bool preallocated, double seconds) {
  const std::string path = dir + (preallocated ? "/floor-prealloc.dat" : "/floor-append.dat");
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(("open " + path).c_str());
    std::exit(1);
  }
  const off_t kFileBytes = 64 << 20;
  if (preallocated) {
    if (::posix_fallocate(fd, 0, kFileBytes) != 0 || ::fsync(fd) != 0) {
      std::perror("fallocate");
      std::exit(1);
    }
  }
  std::string rec(record_bytes, 'r');
  std::vector<int64_t> lat;
  lat.reserve(200000);
  off_t off = 0;
  const int64_t end = NowNs() + static_cast<int64_t>(seconds * 1e9);
  const int64_t start = NowNs();
  while (NowNs() < end && !g_interrupted.load()) {
    int64_t t0 = NowNs();
    ssize_t w = preallocated ? ::pwrite(fd, rec.data(), rec.size(), off) : ::write(fd, rec.data(), rec.size());
    if (w != static_cast<ssize_t>(rec.size()) || ::fdatasync(fd) != 0) {
      std::perror("floor write/fdatasync");
      std::exit(1);
    }
    lat.push_back(NowNs() - t0);
    off += static_cast<off_t>(rec.size());
    if (off + static_cast<off_t>(rec.size()) > kFileBytes) off = 0;
  }
  const double elapsed = static_cast<double>(NowNs() - start) / 1e9;
  ::close(fd);
  ::unlink(path.c_str());
  return Summarize(lat, elapsed);
}

// One cell: `appenders` outstanding appends driven from a libuv loop.
class Cell {
 public:
  Cell(dtx::wal::Log* log, int appenders, size_t record_bytes, double seconds)
      : log_(log), slots_(static_cast<size_t>(appenders)), payload_(record_bytes, 'p'), seconds_(seconds) {
    for (auto& s : slots_) s.done_ns.store(0);
    lat_.reserve(1 << 20);
    done_.reserve(slots_.size());
    draining_.reserve(slots_.size());
  }

  Summary Run() {
    uv_loop_init(&loop_);
    uv_async_init(&loop_, &async_, &Cell::OnAsync);
    async_.data = this;
    const dtx::wal::Stats before = log_->stats();
    start_ns_ = NowNs();
    end_ns_ = start_ns_ + static_cast<int64_t>(seconds_ * 1e9);
    for (uint32_t i = 0; i < slots_.size(); ++i) Issue(i);
    uv_run(&loop_, UV_RUN_DEFAULT);
    const double elapsed = static_cast<double>(last_done_ns_ - start_ns_) / 1e9;
    uv_loop_close(&loop_);
    const dtx::wal::Stats after = log_->stats();
    Summary s = Summarize(lat_, elapsed);
    uint64_t syncs = after.syncs - before.syncs;
    s.records_per_sync = syncs ? static_cast<double>(after.records_synced - before.records_synced) / syncs : 0;
    s.sync_us_avg = syncs ? static_cast<double>(after.sync_micros_total - before.sync_micros_total) / syncs : 0;
    return s;
  }

 private:
  struct Slot {
    int64_t start_ns = 0;
    std::atomic<int64_t> done_ns{0};
  };

  void Issue(uint32_t i) {
    Slot& s = slots_[i];
    s.start_ns = NowNs();
    ++outstanding_;
    auto r = log_->Append(1, payload_, [this, i](const dtx::Status& st) { OnDurable(i, st); });
    if (!r.ok()) {
      std::fprintf(stderr, "append failed: %s\n", r.status().ToString().c_str());
      std::exit(1);
    }
  }

  // Flusher thread.
  void OnDurable(uint32_t i, const dtx::Status& st) {
    if (!st.ok()) {
      std::fprintf(stderr, "record failed: %s\n", st.ToString().c_str());
      std::exit(1);
    }
    slots_[i].done_ns.store(NowNs(), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mu_);
      done_.push_back(i);
    }
    uv_async_send(&async_);  // coalesced by libuv: one wakeup per batch
  }

  // Loop thread.
  static void OnAsync(uv_async_t* a) {
    auto* self = static_cast<Cell*>(a->data);
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      self->draining_.swap(self->done_);
    }
    const bool go_on = NowNs() < self->end_ns_ && !g_interrupted.load();
    for (uint32_t i : self->draining_) {
      Slot& s = self->slots_[i];
      const int64_t done = s.done_ns.load(std::memory_order_relaxed);
      self->lat_.push_back(done - s.start_ns);
      self->last_done_ns_ = std::max(self->last_done_ns_, done);
      --self->outstanding_;
      if (go_on) self->Issue(i);
    }
    self->draining_.clear();
    if (!go_on && self->outstanding_ == 0) uv_close(reinterpret_cast<uv_handle_t*>(&self->async_), nullptr);
  }

  dtx::wal::Log* const log_;
  std::vector<Slot> slots_;
  const std::string payload_;
  const double seconds_;
  uv_loop_t loop_;
  uv_async_t async_;
  std::mutex mu_;
  std::vector<uint32_t> done_;      // GUARDED_BY(mu_)
  std::vector<uint32_t> draining_;  // loop thread
  std::vector<int64_t> lat_;        // loop thread
  int64_t start_ns_ = 0, end_ns_ = 0, last_done_ns_ = 0;
  int outstanding_ = 0;
};

std::string JsonEscape(const std::string& in) {
  std::string out;
  for (char c : in) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out;
}

std::vector<int> ParseList(const std::string& s, const char* flag) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      int v = std::stoi(item, &used);
      if (used != item.size() || v <= 0) throw std::invalid_argument(item);
      out.push_back(v);
    } catch (const std::exception&) {
      std::cerr << "dtx-wal-bench: --" << flag << ": bad number '" << item << "'\n";
      std::exit(2);
    }
  }
  if (out.empty()) {
    std::cerr << "dtx-wal-bench: --" << flag << " is empty\n";
    std::exit(2);
  }
  return out;
}

std::string ReadCpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

// "ext4 on /dev/vda (mounted at /)" for the mount holding `dir`.
std::string DescribeFilesystem(const std::string& dir) {
  std::error_code ec;
  std::string canon = std::filesystem::canonical(dir, ec).string();
  std::ifstream in("/proc/self/mounts");
  std::string dev, mnt, type, rest, best;
  size_t best_len = 0;
  while (in >> dev >> mnt >> type && std::getline(in, rest)) {
    bool prefix = canon == mnt || (canon.rfind(mnt, 0) == 0 && (mnt == "/" || canon[mnt.size()] == '/'));
    if (prefix && mnt.size() >= best_len) {
      best_len = mnt.size();
      best = type + " on " + dev + " (mounted at " + mnt + ")";
    }
  }
  return best.empty() ? "unknown" : best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, json_path, appenders_s, sizes_s;
  double seconds = 3;
  po::options_description desc("dtx-wal-bench options");
  desc.add_options()("help,h", "show this help")
      ("dir", po::value(&dir), "directory to benchmark in (default: a temp dir under /var/tmp, removed after)")
      ("seconds", po::value(&seconds)->default_value(3), "seconds per cell and per floor measurement")
      ("json", po::value(&json_path), "also write the results as JSON to FILE")
      ("appenders", po::value(&appenders_s)->default_value("1,4,16,64"), "outstanding appends per cell")
      ("sizes", po::value(&sizes_s)->default_value("100,4096"), "record payload sizes in bytes");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "dtx-wal-bench: " << e.what() << "\n" << desc;
    return 2;
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }
  if (!(seconds > 0 && seconds <= 3600)) {
    std::cerr << "dtx-wal-bench: --seconds must be in (0, 3600]\n";
    return 2;
  }
  const std::vector<int> appenders = ParseList(appenders_s, "appenders");
  const std::vector<int> sizes = ParseList(sizes_s, "sizes");
  for (int s : sizes) {
    if (static_cast<uint32_t>(s) > dtx::wal::kRecordPayloadBytesMax) {
      std::cerr << "dtx-wal-bench: --sizes: " << s << " exceeds the record maximum\n";
      return 2;
    }
  }
  std::signal(SIGINT, [](int) { g_interrupted = true; });
  std::signal(SIGTERM, [](int) { g_interrupted = true; });

  bool remove_dir = false;
  if (dir.empty()) {
    std::string tmpl = "/var/tmp/dtx-wal-bench-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp /var/tmp");
      return 1;
    }
    dir = tmpl;
    remove_dir = true;
  } else if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    std::perror(("mkdir " + dir).c_str());
    return 1;
  }

  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  const std::string cpu = ReadCpuModel();
  const std::string fsdesc = DescribeFilesystem(dir);
  std::printf("dtx-wal-bench: %s\nmachine: nproc %u, CPU %s\ndir: %s, %s\n\n", command.c_str(),
              std::thread::hardware_concurrency(), cpu.c_str(), dir.c_str(), fsdesc.c_str());

  std::ostringstream json;
  json << "{\n  \"command\": \"" << JsonEscape(command) << "\",\n  \"nproc\": " << std::thread::hardware_concurrency()
       << ",\n  \"cpu\": \"" << JsonEscape(cpu) << "\",\n  \"filesystem\": \"" << JsonEscape(fsdesc)
       << "\",\n  \"seconds\": " << seconds
       << ",\n  \"cells\": [\n";
  bool first_json = true;
  auto json_row = [&](const std::string& kind, int n, int size, const Summary& s) {
    json << (first_json ? "" : ",\n") << "    {\"kind\": \"" << kind << "\", \"appenders\": " << n
         << ", \"record_bytes\": " << size << ", \"durable_per_sec\": " << s.per_sec << ", \"p50_us\": " << s.p50_us
         << ", \"p99_us\": " << s.p99_us << ", \"max_us\": " << s.max_us << ", \"records\": " << s.count
         << ", \"records_per_sync\": " << s.records_per_sync << ", \"sync_us_avg\": " << s.sync_us_avg << "}";
    first_json = false;
  };

  std::printf("%-22s %9s %7s %13s %9s %9s %9s %10s %10s\n", "cell", "appenders", "bytes", "durable/s", "p50 us",
              "p99 us", "max us", "recs/sync", "sync us");
  bool targets_ok = true;
  std::vector<std::string> verdicts;
  for (int size : sizes) {
    Summary floor_append = MeasureFloor(dir, static_cast<size_t>(size), false, seconds);
    Summary floor_prealloc = MeasureFloor(dir, static_cast<size_t>(size), true, seconds);
    std::printf("%-22s %9d %7d %13.0f %9.1f %9.1f %9.1f %10s %10s\n", "floor write+fdatasync", 1, size,
                floor_append.per_sec, floor_append.p50_us, floor_append.p99_us, floor_append.max_us, "-", "-");
    std::printf("%-22s %9d %7d %13.0f %9.1f %9.1f %9.1f %10s %10s\n", "floor pwrite prealloc", 1, size,
                floor_prealloc.per_sec, floor_prealloc.p50_us, floor_prealloc.p99_us, floor_prealloc.max_us, "-", "-");
    json_row("floor_append", 1, size, floor_append);
    json_row("floor_pwrite_preallocated", 1, size, floor_prealloc);
    Summary one, many;
    int many_n = 0;
    for (int n : appenders) {
      if (g_interrupted.load()) break;
      const std::string sub = dir + "/wal-" + std::to_string(n) + "-" + std::to_string(size);
      Summary s;
      {
        auto log = dtx::wal::Log::Open(dtx::wal::Options(), sub, nullptr);
        if (!log.ok()) {
          std::fprintf(stderr, "open %s: %s\n", sub.c_str(), log.status().ToString().c_str());
          return 1;
        }
        Cell cell(log->get(), n, static_cast<size_t>(size), seconds);
        s = cell.Run();
      }
      std::filesystem::remove_all(sub);
      std::printf("%-22s %9d %7d %13.0f %9.1f %9.1f %9.1f %10.1f %10.1f\n", "wal", n, size, s.per_sec, s.p50_us,
                  s.p99_us, s.max_us, s.records_per_sync, s.sync_us_avg);
      std::fflush(stdout);
      json_row("wal", n, size, s);
      if (n == 1) one = s;
      if (n >= many_n) many_n = n, many = s;
    }
    if (one.count > 0 && many_n == 64) {
      const double floor = floor_append.p50_us;
      char line[512];
      bool a = one.p50_us <= 1.3 * floor, b = many.per_sec >= 20 * one.per_sec, c = many.p99_us <= 4 * floor;
      targets_ok = targets_ok && a && b && c;
      std::snprintf(line, sizeof(line),
                    "%d B: 1-appender p50 = %.2fx floor p50 (target <= 1.3) %s; 64-appender throughput = %.1fx "
                    "1-appender (target >= 20) %s; 64-appender p99 = %.2fx floor p50 (target <= 4) %s",
                    size, one.p50_us / floor, a ? "MET" : "MISSED", many.per_sec / one.per_sec, b ? "MET" : "MISSED",
                    many.p99_us / floor, c ? "MET" : "MISSED");
      verdicts.push_back(line);
    }
  }
  json << "\n  ]\n}\n";
  std::printf("\n");
  for (const auto& v : verdicts) std::printf("%s\n", v.c_str());
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << json.str();
    if (!out) std::fprintf(stderr, "could not write %s\n", json_path.c_str());
  }
  if (remove_dir) std::filesystem::remove_all(dir);
  return 0;
}
