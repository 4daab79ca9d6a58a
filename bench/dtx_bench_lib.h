// dtx-bench's testable logic (no cluster, no client): flags, key choice
// (uniform / zipfian), open-loop scheduling, the fault schedule, per-second
// timeline buckets. The program is bench/dtx_bench.cc (its --json report is
// written with nlohmann-json); the tests are bench/dtx_bench_lib_test.cc.
//
// Thread-safety: every class here is a value without internal locking; the
// caller serializes access.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "bench/dtx_bench_histogram.h"
#include "common/status.h"

namespace dtx::bench {

using Clock = std::chrono::steady_clock;

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

inline constexpr int kClientsMax = 4000;  // below the client's in-flight limit
inline constexpr double kRateMax = 1e6;   // tx/s, open loop
inline constexpr int kDurationSecondsMax = 24 * 3600;
inline constexpr int64_t kAccountsMax = 100'000'000;
inline constexpr int64_t kKeysMax = 100'000'000;
inline constexpr int kKeysPerTxMax = 256;
inline constexpr int64_t kValueBytesMaxBench = 64 * 1024;
inline constexpr double kZipfThetaMax = 0.999;  // the YCSB generator needs theta < 1
inline constexpr size_t kFaultEventsMax = 256;

enum class Workload { kBank, kYcsbA, kYcsbB, kYcsbF };
enum class KeyDistribution { kUniform, kZipfian };

const char* WorkloadName(Workload w);

struct Config {
  Workload workload = Workload::kBank;
  std::string workload_name;
  std::string cluster_dir;
  std::string cluster_file;  // --cluster-file: a cluster on other hosts (no node pids)
  std::string coordinator;
  int clients = 0;                  // closed loop: transactions in flight
  double rate = 0;                  // > 0: open loop, tx/s
  int open_loop_in_flight_max = 0;  // open loop: cap on transactions in flight
  double shed_throttle_k = 1.1;     // ClientOptions::shed_throttle_k
  // With --faults: while a participant is stopped (stop .. cont), start no
  // transaction with a key on it (a long outage that the load goes around).
  bool avoid_stopped = false;
  double duration_s = 0;
  double warmup_s = 1.0;
  int64_t accounts = 100000;       // bank
  int64_t initial_balance = 1000;  // bank
  int64_t keys = 100000;           // ycsb
  int64_t value_size = 100;        // ycsb, bytes
  int keys_per_tx = 2;
  int participants_per_tx = 0;  // 0: wherever the keys fall
  KeyDistribution distribution = KeyDistribution::kUniform;
  double zipf_theta = 0.99;
  double check_interval_s = 0;  // bank: periodic consistent check; 0 = off
  std::string faults;           // the fault schedule text
  std::string dtxctl;           // path; empty = search
  bool floor = false;
  std::string floor_dir;  // where the fdatasync floor writes; empty = cluster/tmp
  std::string json_path;
  uint64_t seed = 0;
  bool no_load = false;
  bool progress = true;

  int64_t key_count() const { return workload == Workload::kBank ? accounts : keys; }
  bool open_loop() const { return rate > 0; }
};

// Parses dtx-bench's run flags (argv[0] is the program). InvalidArgument
// with a one-line message for bad or missing flags; `help` is set (and OK
// returned) for --help, with the usage text in *usage.
Result<Config> ParseFlags(int argc, const char* const* argv, bool* help, std::string* usage);

// YCSB's zipfian generator (Gray et al., "Quickly generating billion-record
// synthetic databases"): Next() returns item i in [0, n) with probability
// proportional to 1 / (i+1)^theta; item 0 is the hottest. O(n) set-up
// (zeta), O(1) per draw. 0 < theta < 1.
class ZipfianGenerator {
 public:
  ZipfianGenerator(int64_t n, double theta);
  int64_t Next(std::mt19937_64& rng) const;
  int64_t n() const { return n_; }
  double theta() const { return theta_; }
  // The exact probability of item i (for tests): 1/(i+1)^theta / zeta(n).
  double Probability(int64_t i) const;

 private:
  int64_t n_;
  double theta_;
  double zetan_;
  double alpha_;
  double eta_;
  double half_pow_theta_;
};

// Uniform or zipfian choice of a key index in [0, n). For zipfian the hot
// items are scattered over the key space by a fixed permutation-like hash
// (as YCSB's "scrambled zipfian"), so the hot keys do not all fall on
// neighbouring key names; Rank(index) is the popularity rank before that.
class KeyChooser {
 public:
  KeyChooser(int64_t n, KeyDistribution d, double theta);
  int64_t Next(std::mt19937_64& rng) const;
  int64_t n() const { return n_; }
  // The unscrambled draw (popularity rank 0 = hottest), for tests.
  int64_t NextRank(std::mt19937_64& rng) const;
  // Rank -> key index: a bijection on [0, n).
  int64_t Scramble(int64_t rank) const;

 private:
  int64_t n_;
  KeyDistribution dist_;
  std::optional<ZipfianGenerator> zipf_;
  uint64_t mult_ = 1;  // coprime to n_
};

// Open loop: transaction i is meant to start at start + i / rate. Latency is
// measured from that intended start, so a stall of the system (or of the
// benchmark) shows as latency instead of as fewer samples (no coordinated
// omission).
class OpenLoopSchedule {
 public:
  OpenLoopSchedule(Clock::time_point start, double rate_per_s) : start_(start), rate_(rate_per_s) {}
  Clock::time_point IntendedStart(uint64_t i) const {
    return start_ + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(static_cast<double>(i) / rate_));
  }
  // How many transactions should have started by `now` (i.e. those with
  // IntendedStart(i) <= now).
  uint64_t DueBy(Clock::time_point now) const {
    if (now < start_) return 0;
    double s = std::chrono::duration<double>(now - start_).count();
    auto n = static_cast<uint64_t>(std::floor(s * rate_)) + 1;
    // Guard against rounding at the boundaries.
    while (n > 0 && IntendedStart(n - 1) > now) --n;
    while (IntendedStart(n) <= now) ++n;
    return n;
  }

 private:
  Clock::time_point start_;
  double rate_;
};

// The fault schedule: "at 10s kill participant-1; at 15s restart
// participant-1; at 20s failpoint participant-0 participant.after_prepare
// crash; at 25s stop coordinator-0; at 27s cont coordinator-0".
//   event  = "at" time action node [args]
//   time   = number ("s" | "ms")        seconds since the load started
//   action = kill | restart             dtxctl kill / restart NODE
//          | failpoint NAME ACTION      dtxctl failpoint NODE NAME ACTION
//          | stop | cont                SIGSTOP / SIGCONT to DIR/<node>/pid
// Events are separated by ';' or newlines and may come in any order; they
// run sorted by time.
struct FaultEvent {
  double at_s = 0;
  std::string action;  // kill, restart, failpoint, stop, cont
  std::string node;
  std::vector<std::string> args;  // failpoint: NAME ACTION
  std::string text;               // as written (normalized spacing)
};
Result<std::vector<FaultEvent>> ParseFaultSchedule(std::string_view text);

// One second of the run timeline (t = seconds since the load started).
struct TimelineSecond {
  uint64_t committed = 0;
  uint64_t failed = 0;
  LatencyHistogram latency_ns;  // committed, by finish time
};

// Per-second buckets, indexed by finish time.
class Timeline {
 public:
  explicit Timeline(Clock::time_point start) : start_(start) {}
  TimelineSecond& At(Clock::time_point t) {
    auto s =
        t < start_ ? 0 : static_cast<size_t>(std::chrono::duration<double>(t - start_).count());
    if (s >= seconds_.size()) seconds_.resize(s + 1);
    return seconds_[s];
  }
  const std::vector<TimelineSecond>& seconds() const { return seconds_; }
  Clock::time_point start() const { return start_; }

 private:
  Clock::time_point start_;
  std::vector<TimelineSecond> seconds_;
};

// A number for text (headers, plot labels): printf's %g, e.g. "4000", "0.99".
std::string FormatNumber(double v);

// Parses "10s", "1.5s", "500ms" -> seconds. InvalidArgument otherwise.
Result<double> ParseSeconds(std::string_view text);

}  // namespace dtx::bench
