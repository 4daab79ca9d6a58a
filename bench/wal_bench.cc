// dtx-wal-bench: how fast does the WAL make records durable?
//
// For each cell (concurrent appenders x record size) one libuv loop thread
// keeps N appends outstanding, the way a node's event loop will: the durable
// callback (flusher thread) stamps the time and posts the slot back to the
// loop with uv_async_send; the loop re-issues the next append for that slot.
// Latency-to-durable is Append() call to durable callback. In the same run
// the raw floor is measured in the same directory: write() of one record and
// fdatasync() in a loop (growing file), and pwrite()+fdatasync() into a
// preallocated file (what the WAL itself does). For each record size the
// floor and all appender counts run interleaved in short slices, so they see
// the same disk on a shared machine; targets are checked against that floor.
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
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
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
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
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

// The raw floor: one record written and fdatasync'd per iteration, in the
// same directory. Run in slices interleaved with the WAL's, so both see the
// same disk weather on a shared machine.
class Floor {
 public:
  Floor(const std::string& dir, size_t record_bytes, bool preallocated)
      : path_(dir + (preallocated ? "/floor-prealloc.dat" : "/floor-append.dat")),
        preallocated_(preallocated),
        rec_(record_bytes, 'r') {
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      std::perror(("open " + path_).c_str());
      std::exit(1);
    }
    if (preallocated_ && (::posix_fallocate(fd_, 0, kFileBytes) != 0 || ::fsync(fd_) != 0)) {
      std::perror("fallocate");
      std::exit(1);
    }
    lat_.reserve(1 << 16);
  }
  ~Floor() {
    ::close(fd_);
    ::unlink(path_.c_str());
  }

  void RunSlice(double seconds) {
    const int64_t start = NowNs(), end = start + static_cast<int64_t>(seconds * 1e9);
    while (NowNs() < end && !g_interrupted.load()) {
      int64_t t0 = NowNs();
      ssize_t w = preallocated_ ? ::pwrite(fd_, rec_.data(), rec_.size(), off_)
                                : ::write(fd_, rec_.data(), rec_.size());
      if (w != static_cast<ssize_t>(rec_.size()) || ::fdatasync(fd_) != 0) {
        std::perror("floor write/fdatasync");
        std::exit(1);
      }
      lat_.push_back(NowNs() - t0);
      off_ += static_cast<off_t>(rec_.size());
      if (off_ + static_cast<off_t>(rec_.size()) > kFileBytes) {
        off_ = 0;
        if (!preallocated_ && (::ftruncate(fd_, 0) != 0 || ::lseek(fd_, 0, SEEK_SET) != 0))
          std::exit(1);
      }
    }
    elapsed_s_ += static_cast<double>(NowNs() - start) / 1e9;
  }

  Summary Finish() { return Summarize(lat_, elapsed_s_); }

 private:
  static constexpr off_t kFileBytes = 64 << 20;
  const std::string path_;
  const bool preallocated_;
  const std::string rec_;
  int fd_ = -1;
  off_t off_ = 0;
  std::vector<int64_t> lat_;
  double elapsed_s_ = 0;
};

// One cell: `appenders` outstanding appends driven from a libuv loop.
// RunSlice may be called repeatedly; each slice starts all slots and ends
// when the slice time is up and every outstanding append has completed.
class Cell {
 public:
  Cell(dtx::wal::Log* log, int appenders, size_t record_bytes)
      : log_(log), slots_(static_cast<size_t>(appenders)), payload_(record_bytes, 'p') {
    lat_.reserve(1 << 20);
    done_.reserve(slots_.size());
    draining_.reserve(slots_.size());
    uv_loop_init(&loop_);
    uv_async_init(&loop_, &async_, &Cell::OnAsync);
    async_.data = this;
    before_ = log_->stats();
  }
  ~Cell() {
    uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }

  void RunSlice(double seconds) {
    const int64_t start = NowNs();
    end_ns_ = start + static_cast<int64_t>(seconds * 1e9);
    last_done_ns_ = start;
    for (uint32_t i = 0; i < slots_.size(); ++i) Issue(i);
    uv_run(&loop_, UV_RUN_DEFAULT);  // until OnAsync stops it
    elapsed_s_ += static_cast<double>(last_done_ns_ - start) / 1e9;
  }

  Summary Finish() {
    const dtx::wal::Stats after = log_->stats();
    Summary s = Summarize(lat_, elapsed_s_);
    uint64_t syncs = after.syncs - before_.syncs;
    s.records_per_sync =
        syncs ? static_cast<double>(after.records_synced - before_.records_synced) / syncs : 0;
    s.sync_us_avg =
        syncs ? static_cast<double>(after.sync_micros_total - before_.sync_micros_total) / syncs
              : 0;
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
    if (!go_on && self->outstanding_ == 0) uv_stop(&self->loop_);
  }

  dtx::wal::Log* const log_;
  std::vector<Slot> slots_;
  const std::string payload_;
  uv_loop_t loop_;
  uv_async_t async_;
  dtx::wal::Stats before_;
  std::mutex mu_;
  std::vector<uint32_t> done_;      // GUARDED_BY(mu_)
  std::vector<uint32_t> draining_;  // loop thread
  std::vector<int64_t> lat_;        // loop thread
  int64_t end_ns_ = 0, last_done_ns_ = 0;
  double elapsed_s_ = 0;
  int outstanding_ = 0;
};

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
    bool prefix =
        canon == mnt || (canon.rfind(mnt, 0) == 0 && (mnt == "/" || canon[mnt.size()] == '/'));
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
  desc.add_options()("help,h", "show this help")(
      "dir", po::value(&dir),
      "directory to benchmark in (default: a temp dir under /var/tmp, removed after)")(
      "seconds", po::value(&seconds)->default_value(3),
      "seconds per cell and per floor measurement")("json", po::value(&json_path),
                                                    "also write the results as JSON to FILE")(
      "appenders", po::value(&appenders_s)->default_value("1,4,16,64"),
      "outstanding appends per cell")("sizes", po::value(&sizes_s)->default_value("100,4096"),
                                      "record payload sizes in bytes");
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
  // Appended piece by piece: `const char* + std::string&&` trips g++ 12's
  // -Wrestrict false positive at -O3 (GCC bug 105329).
  for (int i = 0; i < argc; ++i) {
    if (i > 0) command += ' ';
    command += argv[i];
  }
  const std::string cpu = ReadCpuModel();
  const std::string fsdesc = DescribeFilesystem(dir);
  std::printf("dtx-wal-bench: %s\nmachine: nproc %u, CPU %s\ndir: %s, %s\n\n", command.c_str(),
              std::thread::hardware_concurrency(), cpu.c_str(), dir.c_str(), fsdesc.c_str());

  // --json: keys in the order written; a non-finite double is written as null.
  using Json = nlohmann::ordered_json;
  Json json = {{"command", command}, {"nproc", std::thread::hardware_concurrency()},
               {"cpu", cpu},         {"filesystem", fsdesc},
               {"seconds", seconds}, {"cells", Json::array()}};
  auto json_row = [&](const std::string& kind, int n, int size, const Summary& s,
                      const Summary& floor) {
    json["cells"].push_back({{"kind", kind},
                             {"appenders", n},
                             {"record_bytes", size},
                             {"durable_per_sec", s.per_sec},
                             {"p50_us", s.p50_us},
                             {"p99_us", s.p99_us},
                             {"max_us", s.max_us},
                             {"records", s.count},
                             {"records_per_sync", s.records_per_sync},
                             {"sync_us_avg", s.sync_us_avg},
                             {"adjacent_floor_p50_us", floor.p50_us}});
  };

  // The disk of a shared machine drifts by 10x within seconds, so for each
  // record size the raw floor and every appender count run interleaved, in
  // kSlices rounds of short slices: all of them see the same disk weather and
  // ratios between them stay meaningful.
  constexpr int kSlices = 10;
  std::printf("%-24s %5s %6s %10s %8s %8s %8s %9s %8s %11s %9s %9s\n", "cell", "appdr", "bytes",
              "durable/s", "p50 us", "p99 us", "max us", "recs/sync", "sync us", "floor p50us",
              "p50/floor", "p99/floor");
  auto row = [](const char* name, int n, int size, const Summary& s, const Summary* floor) {
    std::printf("%-24s %5d %6d %10.0f %8.1f %8.1f %8.1f", name, n, size, s.per_sec, s.p50_us,
                s.p99_us, s.max_us);
    if (floor == nullptr) {
      std::printf(" %9s %8s %11s %9s %9s\n", "-", "-", "-", "-", "-");
    } else {
      std::printf(" %9.1f %8.1f %11.1f %9.2f %9.2f\n", s.records_per_sync, s.sync_us_avg,
                  floor->p50_us, s.p50_us / floor->p50_us, s.p99_us / floor->p50_us);
    }
    std::fflush(stdout);
  };
  bool targets_ok = true;
  std::vector<std::string> verdicts;
  for (int size : sizes) {
    Summary one, many, floor;
    int many_n = 0;
    {
      Floor prealloc(dir, static_cast<size_t>(size), true);
      prealloc.RunSlice(seconds);
      Summary f = prealloc.Finish();
      row("floor pwrite(prealloc)", 1, size, f, nullptr);
      json_row("floor_pwrite_preallocated", 1, size, f, f);
    }
    std::vector<std::unique_ptr<dtx::wal::Log>> logs;
    std::vector<std::unique_ptr<Cell>> cells;
    for (int n : appenders) {
      const std::string sub = dir + "/wal-" + std::to_string(n) + "-" + std::to_string(size);
      auto log = dtx::wal::Log::Open(dtx::wal::Options(), sub, nullptr);
      if (!log.ok()) {
        std::fprintf(stderr, "open %s: %s\n", sub.c_str(), log.status().ToString().c_str());
        return 1;
      }
      logs.push_back(std::move(log.value()));
      cells.push_back(std::make_unique<Cell>(logs.back().get(), n, static_cast<size_t>(size)));
    }
    {
      Floor raw(dir, static_cast<size_t>(size), false);
      for (int r = 0; r < kSlices && !g_interrupted.load(); ++r) {
        raw.RunSlice(seconds / kSlices);
        for (auto& c : cells) c->RunSlice(seconds / kSlices);
      }
      floor = raw.Finish();
    }
    row("floor write+fdatasync", 1, size, floor, nullptr);
    json_row("floor_append", 1, size, floor, floor);
    for (size_t k = 0; k < appenders.size(); ++k) {
      const int n = appenders[k];
      Summary s = cells[k]->Finish();
      row("wal", n, size, s, &floor);
      json_row("wal", n, size, s, floor);
      if (n == 1) one = s;
      if (n >= many_n) many_n = n, many = s;
    }
    cells.clear();
    logs.clear();
    for (int n : appenders)
      std::filesystem::remove_all(dir + "/wal-" + std::to_string(n) + "-" + std::to_string(size));
    const Summary& one_floor = floor;
    const Summary& many_floor = floor;
    if (one.count > 0 && many_n == 64) {
      char line[512];
      bool a = one.p50_us <= 1.3 * one_floor.p50_us, b = many.per_sec >= 20 * one.per_sec,
           c = many.p99_us <= 4 * many_floor.p50_us;
      targets_ok = targets_ok && a && b && c;
      std::snprintf(
          line, sizeof(line),
          "%d B: 1 appender p50 = %.2fx floor (target <= 1.3) %s; 64 appenders: throughput %.1fx "
          "1 appender (target >= 20) %s, p99 = %.2fx floor (target <= 4) %s",
          size, one.p50_us / one_floor.p50_us, a ? "MET" : "MISSED", many.per_sec / one.per_sec,
          b ? "MET" : "MISSED", many.p99_us / many_floor.p50_us, c ? "MET" : "MISSED");
      verdicts.push_back(line);
    }
  }
  std::printf("\n");
  for (const auto& v : verdicts) std::printf("%s\n", v.c_str());
  if (!verdicts.empty()) std::printf("all targets %s\n", targets_ok ? "met" : "NOT met");
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    // Bytes that are not UTF-8 (the CPU name, the command line) become U+FFFD.
    out << json.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
    if (!out) std::fprintf(stderr, "could not write %s\n", json_path.c_str());
  }
  if (remove_dir) std::filesystem::remove_all(dir);
  return 0;
}
