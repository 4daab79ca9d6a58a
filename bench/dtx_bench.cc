// dtx-bench: workloads against a running dtx cluster (tools/README.md,
// "dtx-bench"; flags in bench/dtx_bench_lib.cc).
//
//   dtx-bench --workload bank|ycsb-a|ycsb-b|ycsb-f
//             (--cluster DIR | --coordinator HOST:PORT)
//             (--clients N | --rate R) --duration S [--warmup S] [options]
//   dtx-bench plot REPORT.json [...] [--out PREFIX] [--format png|svg]
//
// Every transaction goes through the C++ client's asynchronous API from one
// thread (no thread per client). Closed loop (--clients N): N transactions in
// flight, the next starts when one finishes. Open loop (--rate R): transaction
// i is meant to start at t0 + i/R; its latency counts from that intended start
// (no coordinated omission), and at most --max-in-flight run at once (later
// ones wait, and their wait counts).
//
// Workloads (keys chosen uniform or zipfian, --keys-per-tx distinct keys,
// optionally spanning exactly --participants-per-tx participants):
//   bank    read K accounts, move a random amount from the first to each of
//           the others, commit. The total is checked at the end (read-only
//           transactions after the load stopped) and, with --check-interval,
//           periodically by one consistent read-only transaction over all
//           accounts while transfers run.
//   ycsb-a  each key: read (50%) or blind update (50%); ycsb-b: 95% / 5%.
//   ycsb-f  each key: read, then write a modified value (read-modify-write).
//
// Phases per transaction, as the client sees them: read (begin to the last
// Get answer), commit (Commit call to its outcome), total (intended start to
// outcome). Inside 'commit', the coordinator reports (CommitResult.prepare_us
// / decision_us, its own steady clock): prepare (first PREPARE sent -> last
// vote in; one-phase: the whole Prepare) and decision (DECISION appended ->
// durable at the coordinator and, with a backup, acknowledged by it; full 2PC
// only). commit - prepare - decision is the client<->coordinator round trip
// plus queueing; phase 2 runs after the reply and is in none of them.
//
// Exit status: 0 ok; 1 the invariant is broken or the run failed; 2 bad usage.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/dtx_bench_histogram.h"
#include "bench/dtx_bench_lib.h"
#include "bench/dtx_bench_plot.h"
#include "dtx/client.h"
#include "tools/cluster_config.h"

extern char** environ;

using namespace std::chrono_literals;

namespace dtx::bench {
namespace {

constexpr int kLoadBatchKeys = 200;     // keys written per load transaction
constexpr int kLoadInFlight = 16;       // load transactions in flight
constexpr int kSumBatchAccounts = 500;  // accounts read per read-only transaction
constexpr int kSumInFlight = 16;
constexpr int kBatchAttemptsMax = 20;  // load/sum batch retries on aborts
constexpr int kCheckAttemptsFree = 5;  // periodic check attempts under full load
constexpr int kCheckAttemptsMax = 20;  // then with new transfers held back
constexpr int kTransferAmountMax = 100;
constexpr int kShardPickAttemptsMax = 1000;  // --participants-per-tx key search
constexpr auto kDrainTimeout = 60s;          // in-flight transactions after the stop
constexpr int kFloorFsyncs = 200;
constexpr int kFloorRoundTrips = 2000;
constexpr size_t kFloorRecordBytes = 256;

std::string AccountKey(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "acct/%08lld", static_cast<long long>(i));
  return buf;
}
std::string YcsbKey(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "user/%010lld", static_cast<long long>(i));
  return buf;
}
std::string KeyName(const Config& cfg, int64_t i) {
  return cfg.workload == Workload::kBank ? AccountKey(i) : YcsbKey(i);
}
std::string LoadValue(const Config& cfg, int64_t i) {
  if (cfg.workload == Workload::kBank) return std::to_string(cfg.initial_balance);
  std::string v(static_cast<size_t>(cfg.value_size), 'a');
  for (size_t j = 0; j < v.size(); ++j) v[j] = static_cast<char>('a' + (i + j) % 26);
  return v;
}

bool ParseBalance(const std::string& s, int64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size()) return false;
  int64_t v = 0;
  for (; i < s.size(); ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = s[0] == '-' ? -v : v;
  return true;
}

uint64_t Ns(Clock::duration d) {
  return static_cast<uint64_t>(
      std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()));
}

// ---------------------------------------------------------------------------
// Batches (load and sum): async transactions over ranges of accounts, a few
// in flight, each retried on abort. Blocks the calling (main) thread.

class BatchRunner {
 public:
  // `start(first, count, done)` runs one attempt for accounts
  // [first, first+count) and calls done(status) once.
  using Attempt =
      std::function<void(int64_t first, int64_t count, std::function<void(const Status&)> done)>;

  static Status Run(int64_t total, int batch, int in_flight, const Attempt& attempt) {
    BatchRunner r;
    r.total_ = total;
    r.batch_ = batch;
    r.attempt_ = attempt;
    for (int i = 0; i < in_flight; ++i) r.StartNext();
    // This thread also makes the retries that must wait (a refusal to take
    // on load: see Try), so that no client thread sleeps.
    std::unique_lock lock(r.mu_);
    for (;;) {
      r.cv_.wait(lock, [&] { return r.running_ == 0 || !r.later_.empty(); });
      if (r.running_ == 0) return r.error_;
      Later next = r.later_.front();
      r.later_.erase(r.later_.begin());
      lock.unlock();
      std::this_thread::sleep_until(next.due);
      r.Try(next.first, next.count, next.attempt_no);
      lock.lock();
    }
  }

 private:
  void StartNext() {
    int64_t first;
    {
      std::lock_guard lock(mu_);
      if (next_ >= total_ || !error_.ok()) return;
      first = next_;
      next_ += batch_;
      ++running_;
    }
    Try(first, std::min<int64_t>(batch_, total_ - first), 1);
  }

  void Try(int64_t first, int64_t count, int attempt_no) {
    attempt_(first, count, [this, first, count, attempt_no](const Status& s) {
      const bool overloaded = !s.ok() && s.message().find("overloaded") != std::string::npos;
      bool retry =
          !s.ok() && !overloaded &&
          (s.IsAborted() || s.IsTimeout() ||
           (s.IsUnavailable() && s.message().find("outcome unknown") == std::string::npos)) &&
          attempt_no < kBatchAttemptsMax;
      if (retry) {
        // Runs on the client's loop thread: retry at once, never sleep here.
        Try(first, count, attempt_no + 1);
        return;
      }
      // A node or the client shedding load (Busy "overloaded" from Begin,
      // Unavailable with retry_after_ms): ask again later, from Run's
      // thread, with a growing delay.
      if (overloaded && attempt_no < kBatchAttemptsMax) {
        std::lock_guard lock(mu_);
        later_.push_back(Later{first, count, attempt_no + 1,
                               Clock::now() + std::chrono::milliseconds(10 << std::min(attempt_no, 6))});
        cv_.notify_all();
        return;
      }
      {
        std::lock_guard lock(mu_);
        if (!s.ok() && error_.ok()) {
          std::string m = "batch of accounts " + std::to_string(first) + ".." +
                          std::to_string(first + count - 1) + " failed " +
                          std::to_string(attempt_no) + " time(s): " + s.ToString();
          error_ = s.IsCorruption() ? Status::Corruption(m) : Status::Aborted(m);
        }
      }
      StartNext();
      std::lock_guard lock(mu_);
      if (--running_ == 0) cv_.notify_all();
    });
  }

  struct Later {
    int64_t first = 0;
    int64_t count = 0;
    int attempt_no = 0;
    Clock::time_point due;
  };
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Later> later_;  // retries waiting for Run's thread, oldest first
  int64_t total_ = 0;
  int batch_ = 0;
  int64_t next_ = 0;
  int running_ = 0;
  Status error_;
  Attempt attempt_;
};

// Writes every key of the workload (bank: the accounts with their initial
// balance; ycsb: --value-size bytes).
Status LoadKeys(Client& client, const Config& cfg) {
  int batch =
      std::max<int>(1, std::min<int64_t>(kLoadBatchKeys, (2 << 20) / (cfg.value_size + 32)));
  auto attempt = [&](int64_t first, int64_t count, std::function<void(const Status&)> done) {
    auto tx = client.BeginAsync();
    if (!tx.ok()) return done(tx.status());
    for (int64_t i = first; i < first + count; ++i) {
      Status s = (*tx)->Put(KeyName(cfg, i), LoadValue(cfg, i));
      if (!s.ok()) return done(s);
    }
    auto keep = *tx;
    keep->Commit([keep, done](const CommitOutcome& o) { done(o.status); });
  };
  return BatchRunner::Run(cfg.key_count(), batch, kLoadInFlight, attempt);
}

// Sums every balance with read-only transactions; fails on a missing or
// garbled account.
Result<int64_t> SumBalances(Client& client, const Config& cfg) {
  std::mutex mu;
  std::map<int64_t, int64_t> sums;  // batch first -> sum (a retried batch overwrites)
  auto attempt = [&](int64_t first, int64_t count, std::function<void(const Status&)> done) {
    auto tx = client.BeginAsync();
    if (!tx.ok()) return done(tx.status());
    auto keep = *tx;
    struct Batch {
      std::mutex mu;
      int64_t pending;
      int64_t sum = 0;
      Status error;
    };
    auto batch = std::make_shared<Batch>();
    batch->pending = count;
    for (int64_t i = first; i < first + count; ++i) {
      std::string key = AccountKey(i);
      keep->Get(key, [&, keep, batch, key, first, done](GetResult r) {
        bool last;
        {
          std::lock_guard lock(batch->mu);
          if (!r.ok()) {
            if (batch->error.ok()) batch->error = r.status();
          } else if (!r->has_value()) {
            batch->error = Status::Corruption("account " + key + " is missing");
          } else {
            int64_t v = 0;
            if (!ParseBalance(**r, &v)) {
              batch->error = Status::Corruption("account " + key + " holds '" + **r + "'");
            }
            batch->sum += v;
          }
          last = --batch->pending == 0;
        }
        if (!last) return;
        if (!batch->error.ok()) {
          (void)keep->Abort();
          return done(batch->error);
        }
        keep->Commit([&, keep, batch, first, done](const CommitOutcome& o) {
          if (o.status.ok()) {
            std::lock_guard lock(mu);
            sums[first] = batch->sum;
          }
          done(o.status);
        });
      });
    }
  };
  Status s = BatchRunner::Run(cfg.accounts, kSumBatchAccounts, kSumInFlight, attempt);
  if (!s.ok()) return s;
  int64_t total = 0;
  for (const auto& [first, sum] : sums) total += sum;
  return total;
}

// ---------------------------------------------------------------------------
// The transaction loop (closed or open).

struct Stats {
  uint64_t committed = 0;
  uint64_t started = 0;
  std::map<std::string, uint64_t> failures;  // "conflict", "get:Unavailable", ...
  LatencyHistogram total_ns;                 // committed: intended start to outcome
  LatencyHistogram read_ns;                  // committed: begin to the last Get answer
  LatencyHistogram commit_ns;                // committed: Commit call to outcome
  // Committed, as reported by the coordinator (absent: not counted).
  LatencyHistogram prepare_ns;      // first PREPARE sent -> last vote in
  LatencyHistogram decision_ns;     // DECISION appended -> durable (and at the backup)
  LatencyHistogram start_delay_ns;  // open loop: actual - intended start
  // Committed with writes on >= 2 participants (the full two-phase commit;
  // what the 2PC floor is about).
  LatencyHistogram commit_2pc_ns;
  LatencyHistogram total_2pc_ns;
  std::map<int, uint64_t> participants_per_tx;  // committed, by distinct participants
};

class TxLoop : public std::enable_shared_from_this<TxLoop> {
 public:
  TxLoop(Client* client, const Config& cfg, Clock::time_point t0)
      : client_(client),
        cfg_(cfg),
        chooser_(cfg.key_count(), cfg.distribution, cfg.zipf_theta),
        rng_(cfg.seed),
        timeline_(t0),
        shards_(client->participants().size()) {}

  // Closed loop: fill every slot.
  void StartClosed() {
    for (int i = 0; i < cfg_.clients; ++i) StartOne(Clock::now());
  }

  // Open loop: runs on the calling thread until Stop(); starts transaction i
  // at its intended time (or as soon as a slot frees up).
  void RunOpen(Clock::time_point t0) {
    OpenLoopSchedule sched(t0, cfg_.rate);
    uint64_t next = 0;
    while (!stopping_.load()) {
      auto now = Clock::now();
      uint64_t due = sched.DueBy(now);
      while (next < due && !stopping_.load() && !paused_.load()) {
        {
          std::lock_guard lock(mu_);
          if (in_flight_ >= static_cast<uint64_t>(cfg_.open_loop_in_flight_max)) break;
        }
        StartOne(sched.IntendedStart(next));
        ++next;
      }
      std::unique_lock lock(mu_);
      bool behind = next < sched.DueBy(Clock::now());
      if (behind) {
        // Wait for a slot (a finishing transaction notifies).
        cv_.wait_for(lock, 1ms);
      } else {
        lock.unlock();
        std::this_thread::sleep_until(std::min(sched.IntendedStart(next), Clock::now() + 50ms));
      }
    }
    std::lock_guard lock(mu_);
    backlog_at_stop_ = sched.DueBy(Clock::now()) - next;
  }

  // Shard `shard` gets no new transaction's key while avoided (--avoid-stopped).
  void Avoid(size_t shard, bool on) {
    std::lock_guard lock(mu_);
    if (on) {
      avoided_.insert(shard);
    } else {
      avoided_.erase(shard);
    }
  }

  void BeginMeasuring() { measuring_.store(true); }
  // No new transactions until Resume() (those in flight run on); the closed
  // loop's slots wait, the open loop's schedule keeps running (its waits
  // count as latency).
  void Pause() { paused_.store(true); }
  void Resume() {
    int parked;
    {
      std::lock_guard lock(mu_);
      paused_.store(false);
      parked = parked_;
      parked_ = 0;
    }
    for (int i = 0; i < parked; ++i) StartOne(Clock::now());
  }
  void Stop() {
    measuring_.store(false);
    stopping_.store(true);
    cv_.notify_all();
  }
  bool WaitDrained(std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return in_flight_ == 0; });
  }
  Stats TakeStats() {
    std::lock_guard lock(mu_);
    return stats_;
  }
  Timeline TakeTimeline() {
    std::lock_guard lock(mu_);
    return timeline_;
  }
  uint64_t in_flight() {
    std::lock_guard lock(mu_);
    return in_flight_;
  }
  uint64_t backlog_at_stop() {
    std::lock_guard lock(mu_);
    return backlog_at_stop_;
  }
  // Committed, failed and p99 (us) of timeline second `s` (for the progress line).
  std::tuple<uint64_t, uint64_t, double> Second(size_t s) {
    std::lock_guard lock(mu_);
    if (s >= timeline_.seconds().size()) return {0, 0, 0};
    const TimelineSecond& t = timeline_.seconds()[s];
    return {t.committed, t.failed, static_cast<double>(t.latency_ns.ValueAtQuantile(0.99)) / 1e3};
  }

 private:
  struct Tx {
    std::shared_ptr<AsyncTransaction> tx;
    std::vector<std::string> keys;
    std::vector<bool> is_read;  // ycsb-a/b: read or blind update
    std::vector<std::optional<std::string>> values;
    Clock::time_point intended;
    Clock::time_point start;
    Clock::time_point reads_done;
    Clock::time_point commit_start;
    std::optional<int64_t> prepare_us;  // from the coordinator's CommitResult
    std::optional<int64_t> decision_us;
    int participants = 0;
    bool has_write = false;
    int64_t amount = 0;
    std::mutex mu;
    int pending_reads = 0;
    Status error;
  };

  // Picks the keys of one transaction (mu_ held).
  void PickKeys(Tx* t) {
    int k = cfg_.keys_per_tx;
    std::set<int64_t> used;
    std::vector<size_t> targets;
    if (cfg_.participants_per_tx > 0 && shards_ > 1) {
      std::vector<size_t> all(shards_);
      for (size_t i = 0; i < shards_; ++i) all[i] = i;
      std::shuffle(all.begin(), all.end(), rng_);
      targets.assign(
          all.begin(),
          all.begin() + std::min<size_t>(static_cast<size_t>(cfg_.participants_per_tx), shards_));
    }
    std::set<size_t> touched;
    for (int j = 0; j < k; ++j) {
      int64_t idx = 0;
      for (int attempt = 0;; ++attempt) {
        idx = chooser_.Next(rng_);
        if (used.count(idx)) {
          if (attempt < kShardPickAttemptsMax) continue;
          idx = 0;  // fall back to the first unused index
          while (used.count(idx)) ++idx;
          break;
        }
        // An avoided shard is never picked while another is left (the
        // chooser spreads keys over every shard: a few draws find one).
        if (!avoided_.empty() && avoided_.size() < shards_ && attempt < 100 * kShardPickAttemptsMax &&
            avoided_.count(client_->ShardOf(KeyName(cfg_, idx))) != 0) {
          continue;
        }
        if (targets.empty() || attempt >= kShardPickAttemptsMax) break;
        if (client_->ShardOf(KeyName(cfg_, idx)) ==
            targets[static_cast<size_t>(j) % targets.size()])
          break;
      }
      used.insert(idx);
      t->keys.push_back(KeyName(cfg_, idx));
      touched.insert(client_->ShardOf(t->keys.back()));
    }
    t->participants = static_cast<int>(touched.size());
    double read_share = cfg_.workload == Workload::kYcsbA   ? 0.5
                        : cfg_.workload == Workload::kYcsbB ? 0.95
                                                            : 1.0;
    std::uniform_real_distribution<double> u(0, 1);
    for (int j = 0; j < k; ++j) t->is_read.push_back(read_share >= 1.0 || u(rng_) < read_share);
    t->has_write = cfg_.workload == Workload::kBank || cfg_.workload == Workload::kYcsbF ||
                   std::find(t->is_read.begin(), t->is_read.end(), false) != t->is_read.end();
    t->values.resize(static_cast<size_t>(k));
    t->amount = std::uniform_int_distribution<int64_t>(1, kTransferAmountMax)(rng_);
  }

  std::string NewValue(const std::string& old) {
    std::string v = old.empty() ? std::string(static_cast<size_t>(cfg_.value_size), 'x') : old;
    std::lock_guard lock(mu_);
    v[0] = static_cast<char>('A' + rng_() % 26);
    return v;
  }

  void StartOne(Clock::time_point intended) {
    auto t = std::make_shared<Tx>();
    {
      std::lock_guard lock(mu_);
      if (stopping_.load()) return;
      ++in_flight_;
      if (measuring_.load()) ++stats_.started;
      PickKeys(t.get());
    }
    t->intended = intended;
    t->start = Clock::now();
    auto tx = client_->BeginAsync();
    if (!tx.ok()) {
      // In the closed loop this slot ends here (a closed or overloaded client
      // would otherwise fail again at once, forever).
      return Finish(t, "begin:" + std::string(CodeName(tx.status().code())), cfg_.open_loop());
    }
    t->tx = *tx;
    for (size_t j = 0; j < t->keys.size(); ++j) t->pending_reads += t->is_read[j] ? 1 : 0;
    if (t->pending_reads == 0) return AfterReads(t);
    auto self = shared_from_this();
    for (size_t j = 0; j < t->keys.size(); ++j) {
      if (!t->is_read[j]) continue;
      t->tx->Get(t->keys[j], [self, t, j](GetResult r) { self->OnRead(t, j, r); });
    }
  }

  void OnRead(const std::shared_ptr<Tx>& t, size_t j, const GetResult& r) {
    {
      std::lock_guard lock(t->mu);
      if (!r.ok()) {
        if (t->error.ok()) t->error = r.status();
      } else if (!r->has_value()) {
        t->error = Status::Corruption("key " + t->keys[j] + " is missing");
      } else {
        t->values[j] = **r;
      }
      if (--t->pending_reads > 0) return;
    }
    AfterReads(t);
  }

  void AfterReads(const std::shared_ptr<Tx>& t) {
    t->reads_done = Clock::now();
    if (!t->error.ok()) {
      (void)t->tx->Abort();
      return Finish(t, t->error.IsCorruption() ? "missing_key"
                                               : "get:" + std::string(CodeName(t->error.code())));
    }
    Status s;
    if (cfg_.workload == Workload::kBank) {
      std::vector<int64_t> bal(t->keys.size());
      for (size_t j = 0; j < t->keys.size() && s.ok(); ++j) {
        if (!ParseBalance(*t->values[j], &bal[j])) s = Status::Corruption("bad balance");
      }
      int64_t others = static_cast<int64_t>(t->keys.size()) - 1;
      if (s.ok()) s = t->tx->Put(t->keys[0], std::to_string(bal[0] - t->amount * others));
      for (size_t j = 1; j < t->keys.size() && s.ok(); ++j) {
        s = t->tx->Put(t->keys[j], std::to_string(bal[j] + t->amount));
      }
    } else {
      for (size_t j = 0; j < t->keys.size() && s.ok(); ++j) {
        if (cfg_.workload == Workload::kYcsbF) {
          s = t->tx->Put(t->keys[j], NewValue(*t->values[j]));
        } else if (!t->is_read[j]) {
          s = t->tx->Put(t->keys[j], NewValue(""));
        }
      }
    }
    if (!s.ok()) {
      (void)t->tx->Abort();
      return Finish(t, s.IsCorruption() ? "bad_account" : "put:" + std::string(CodeName(s.code())));
    }
    t->commit_start = Clock::now();
    t->tx->Commit([self = shared_from_this(), t](const CommitOutcome& o) {
      t->prepare_us = o.prepare_us;
      t->decision_us = o.decision_us;
      if (o.status.ok()) return self->Finish(t, "");
      if (o.abort_reason.has_value()) return self->Finish(t, AbortReasonName(*o.abort_reason));
      if (o.outcome_unknown) return self->Finish(t, "outcome_unknown");
      self->Finish(t, "commit:" + std::string(CodeName(o.status.code())));
    });
  }

  // `failure` empty: committed. `next`: closed loop, start the next one.
  void Finish(const std::shared_ptr<Tx>& t, const std::string& failure, bool next = true) {
    auto now = Clock::now();
    {
      std::lock_guard lock(mu_);
      TimelineSecond& sec = timeline_.At(now);
      if (failure.empty()) {
        ++sec.committed;
        sec.latency_ns.Record(Ns(now - t->intended));
      } else {
        ++sec.failed;
      }
      if (measuring_.load()) {
        if (failure.empty()) {
          ++stats_.committed;
          stats_.total_ns.Record(Ns(now - t->intended));
          stats_.read_ns.Record(Ns(t->reads_done - t->start));
          stats_.commit_ns.Record(Ns(now - t->commit_start));
          if (t->prepare_us && *t->prepare_us >= 0) {
            stats_.prepare_ns.Record(static_cast<uint64_t>(*t->prepare_us) * 1000);
          }
          if (t->decision_us && *t->decision_us >= 0) {
            stats_.decision_ns.Record(static_cast<uint64_t>(*t->decision_us) * 1000);
          }
          ++stats_.participants_per_tx[t->participants];
          if (t->has_write && t->participants >= 2) {
            stats_.commit_2pc_ns.Record(Ns(now - t->commit_start));
            stats_.total_2pc_ns.Record(Ns(now - t->intended));
          }
        } else {
          ++stats_.failures[failure];
        }
        if (cfg_.open_loop()) stats_.start_delay_ns.Record(Ns(t->start - t->intended));
      }
      --in_flight_;
    }
    cv_.notify_all();
    if (next && !cfg_.open_loop() && !stopping_.load()) {
      {
        std::lock_guard lock(mu_);
        if (paused_.load()) {
          ++parked_;
          return;
        }
      }
      StartOne(Clock::now());
    }
  }

  Client* client_;
  const Config& cfg_;
  KeyChooser chooser_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::mt19937_64 rng_;           // GUARDED_BY(mu_)
  uint64_t in_flight_ = 0;        // GUARDED_BY(mu_)
  uint64_t backlog_at_stop_ = 0;  // GUARDED_BY(mu_)
  Stats stats_;                   // GUARDED_BY(mu_)
  Timeline timeline_;             // GUARDED_BY(mu_)
  size_t shards_;
  std::set<size_t> avoided_;  // GUARDED_BY(mu_): shards of stopped participants
  int parked_ = 0;  // GUARDED_BY(mu_): closed-loop slots waiting for Resume()
  std::atomic<bool> measuring_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> paused_{false};
};

// ---------------------------------------------------------------------------
// Bank: a periodic consistent check (one read-only transaction over every
// account, validated at commit) while transfers run.

struct CheckResult {
  double t_s = 0;       // since the load started
  std::string outcome;  // "ok", "violated", "not_checked"
  int64_t total = 0;
  int attempts = 0;
  bool quiesced = false;  // new transfers were held back for the last attempts
  std::string detail;
};

// Up to `attempts_max` attempts (a read-only transaction over hot accounts
// often loses the validation race against the transfers).
CheckResult ConsistentCheck(Client& client, const Config& cfg, int attempts_max) {
  CheckResult r;
  int64_t expected = cfg.accounts * cfg.initial_balance;
  for (r.attempts = 1; r.attempts <= attempts_max; ++r.attempts) {
    auto tx = client.BeginAsync();
    if (!tx.ok()) {
      r.detail = tx.status().ToString();
      continue;
    }
    auto keep = *tx;
    struct Acc {
      std::mutex mu;
      int64_t pending = 0;
      int64_t sum = 0;
      Status error;
      std::promise<void> done;
    };
    auto acc = std::make_shared<Acc>();
    acc->pending = cfg.accounts;
    for (int64_t i = 0; i < cfg.accounts; ++i) {
      std::string key = AccountKey(i);
      keep->Get(key, [acc, key](GetResult g) {
        std::lock_guard lock(acc->mu);
        int64_t v = 0;
        if (!g.ok()) {
          if (acc->error.ok()) acc->error = g.status();
        } else if (!g->has_value()) {
          acc->error = Status::Corruption("account " + key + " is missing");
        } else if (!ParseBalance(**g, &v)) {
          acc->error = Status::Corruption("account " + key + " holds '" + **g + "'");
        }
        acc->sum += v;
        if (--acc->pending == 0) acc->done.set_value();
      });
    }
    acc->done.get_future().wait();
    if (!acc->error.ok()) {
      (void)keep->Abort();
      r.detail = acc->error.ToString();
      if (acc->error.IsCorruption()) {
        r.outcome = "violated";
        return r;
      }
      continue;
    }
    std::promise<CommitOutcome> p;
    keep->Commit([&p](const CommitOutcome& o) { p.set_value(o); });
    CommitOutcome o = p.get_future().get();
    if (!o.status.ok()) {
      r.detail = o.status.ToString();
      continue;
    }
    r.total = acc->sum;
    r.outcome = acc->sum == expected ? "ok" : "violated";
    if (acc->sum != expected) {
      r.detail = "total " + std::to_string(acc->sum) + ", expected " + std::to_string(expected);
    }
    return r;
  }
  r.attempts = attempts_max;
  r.outcome = "not_checked";
  return r;
}

// ---------------------------------------------------------------------------
// The fault schedule.

struct FaultRecord {
  FaultEvent event;
  double ran_at_s = 0;  // since the load started
  double took_s = 0;
  int exit_code = 0;
  std::string error;
};

std::string FindDtxctl(const Config& cfg) {
  if (!cfg.dtxctl.empty()) return cfg.dtxctl;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto dir = self.parent_path();
    for (auto p :
         {dir / ".." / "tools" / "dtxctl", dir / "dtxctl", dir / ".." / "bin" / "dtxctl"}) {
      if (::access(p.c_str(), X_OK) == 0) return p.lexically_normal().string();
    }
  }
  return "dtxctl";  // PATH
}

// Runs argv (stdout to our stderr, so the report stays clean); exit status
// or -1.
int RunProcess(const std::vector<std::string>& argv) {
  std::vector<char*> a;
  for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
  a.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, 2, 1);
  pid_t pid = -1;
  int rc = ::posix_spawnp(&pid, a[0], &fa, nullptr, a.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  return 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

FaultRecord RunFault(const Config& cfg, const std::string& dtxctl, const FaultEvent& e,
                     Clock::time_point t0) {
  FaultRecord r;
  r.event = e;
  auto start = Clock::now();
  r.ran_at_s = std::chrono::duration<double>(start - t0).count();
  if (e.action == "stop" || e.action == "cont") {
    auto pid =
        tools::ReadPidFile(tools::NodeDir(cfg.cluster_dir, e.node) + "/" + tools::kNodePidFile);
    if (!pid.ok()) {
      r.exit_code = 1;
      r.error = pid.status().ToString();
    } else if (!tools::IsNodeProcess(*pid, e.node)) {
      r.exit_code = 1;
      r.error = "pid " + std::to_string(*pid) + " is not " + e.node;
    } else if (::kill(*pid, e.action == "stop" ? SIGSTOP : SIGCONT) != 0) {
      r.exit_code = 1;
      r.error = std::strerror(errno);
    }
  } else {
    std::vector<std::string> argv = {dtxctl, e.action, e.node};
    argv.insert(argv.end(), e.args.begin(), e.args.end());
    argv.insert(argv.end(), {"--dir", cfg.cluster_dir});
    r.exit_code = RunProcess(argv);
    if (r.exit_code != 0)
      r.error = dtxctl + " " + e.action + " exited " + std::to_string(r.exit_code);
  }
  r.took_s = std::chrono::duration<double>(Clock::now() - start).count();
  return r;
}

// ---------------------------------------------------------------------------
// The floor: this machine's append+fdatasync and loopback round trip.

struct Floor {
  double fsync_p50_us = 0;
  double fsync_p99_us = 0;
  double rtt_p50_us = 0;
  double rtt_p99_us = 0;
  std::string fsync_dir;
  // Commit call, >= 2 participants: client->coordinator->participants
  // (prepare, forced) -> coordinator (decision, forced) -> client.
  double commit_floor_us() const { return 2 * rtt_p50_us + 2 * fsync_p50_us; }
  // A transaction: the parallel reads (one round trip) + the commit.
  double tx_floor_us() const { return 3 * rtt_p50_us + 2 * fsync_p50_us; }
};

Result<Floor> MeasureFloor(const std::string& dir) {
  Floor f;
  f.fsync_dir = dir;
  std::string path = dir + "/dtx-bench-floor." + std::to_string(::getpid());
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno("open " + path, errno);
  LatencyHistogram h;
  std::string rec(kFloorRecordBytes, 'f');
  for (int i = 0; i < kFloorFsyncs; ++i) {
    auto s = Clock::now();
    if (::write(fd, rec.data(), rec.size()) != static_cast<ssize_t>(rec.size()) ||
        ::fdatasync(fd) != 0) {
      int e = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return Status::FromErrno("append+fdatasync " + path, e);
    }
    h.Record(Ns(Clock::now() - s));
  }
  ::close(fd);
  ::unlink(path.c_str());
  f.fsync_p50_us = static_cast<double>(h.ValueAtQuantile(0.5)) / 1e3;
  f.fsync_p99_us = static_cast<double>(h.ValueAtQuantile(0.99)) / 1e3;

  int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (ls < 0 || ::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::listen(ls, 1) != 0 || ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    int e = errno;
    if (ls >= 0) ::close(ls);
    return Status::FromErrno("loopback listen", e);
  }
  int one = 1;
  std::thread echo([ls, one] {
    int c = ::accept(ls, nullptr, nullptr);
    if (c < 0) return;
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[64];
    for (;;) {
      ssize_t n = ::read(c, buf, sizeof(buf));
      if (n <= 0 || ::write(c, buf, static_cast<size_t>(n)) != n) break;
    }
    ::close(c);
  });
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  Status st;
  LatencyHistogram rtt;
  if (c < 0 || ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    st = Status::FromErrno("loopback connect", errno);
  } else {
    ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[64] = {};
    for (int i = 0; i < kFloorRoundTrips && st.ok(); ++i) {
      auto s = Clock::now();
      if (::write(c, buf, sizeof(buf)) != static_cast<ssize_t>(sizeof(buf))) {
        st = Status::FromErrno("loopback write", errno);
        break;
      }
      size_t got = 0;
      while (got < sizeof(buf)) {
        ssize_t n = ::read(c, buf + got, sizeof(buf) - got);
        if (n <= 0) {
          st = Status::IOError("loopback read failed");
          break;
        }
        got += static_cast<size_t>(n);
      }
      rtt.Record(Ns(Clock::now() - s));
    }
  }
  if (c >= 0) ::shutdown(c, SHUT_RDWR);
  ::shutdown(ls, SHUT_RDWR);
  echo.join();
  if (c >= 0) ::close(c);
  ::close(ls);
  if (!st.ok()) return st;
  f.rtt_p50_us = static_cast<double>(rtt.ValueAtQuantile(0.5)) / 1e3;
  f.rtt_p99_us = static_cast<double>(rtt.ValueAtQuantile(0.99)) / 1e3;
  return f;
}

// ---------------------------------------------------------------------------

// What a set of processes has used so far: CPU seconds and context switches.
struct Usage {
  double cpu_s = 0;
  tools::ContextSwitches switches;
  Usage operator-(const Usage& o) const {
    return {
        cpu_s - o.cpu_s,
        {switches.voluntary - o.switches.voluntary, switches.involuntary - o.switches.involuntary}};
  }
};

// The usage of every node process of the cluster (by its pid file), or
// nullopt without --cluster. `pids` gets the pids read.
std::optional<Usage> ClusterUsage(const Config& cfg, const tools::ClusterConfig* cluster,
                                  std::map<std::string, pid_t>* pids) {
  if (cluster == nullptr) return std::nullopt;
  Usage total;
  for (const tools::NodeEntry& n : cluster->nodes()) {
    auto pid =
        tools::ReadPidFile(tools::NodeDir(cfg.cluster_dir, n.name) + "/" + tools::kNodePidFile);
    if (!pid.ok()) continue;
    auto cpu = tools::ProcessCpuSeconds(*pid);
    auto switches = tools::ProcessContextSwitches(*pid);
    if (!cpu.ok() || !switches.ok()) continue;
    (*pids)[n.name] = *pid;
    total.cpu_s += *cpu;
    total.switches.voluntary += switches->voluntary;
    total.switches.involuntary += switches->involuntary;
  }
  return total;
}

// dtx-bench's own usage (every thread, including those that exited).
Usage SelfUsage() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  return {sec(ru.ru_utime) + sec(ru.ru_stime),
          {static_cast<uint64_t>(ru.ru_nvcsw), static_cast<uint64_t>(ru.ru_nivcsw)}};
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

void PrintHist(const char* name, const LatencyHistogram& h) {
  auto us = [&](double q) { return static_cast<double>(h.ValueAtQuantile(q)) / 1e3; };
  std::printf("  %-8s %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f\n", name, us(0.5), us(0.9),
              us(0.99), us(0.999), static_cast<double>(h.max()) / 1e3, h.mean() / 1e3);
}

// Where the load goes: the coordinator(s) and, with --cluster, the cluster
// (node pids for the CPU figures, nodes for --faults) and the fault schedule.
struct Target {
  std::optional<tools::ClusterConfig> cluster;
  std::string coordinator;
  // With --cluster: ClientOptions::FromClusterDir (every coordinator, and the
  // cluster's client certificate when it runs TLS); else --coordinator,
  // plaintext.
  ClientOptions client_options;
  std::vector<FaultEvent> faults;
};

// False when the run ends here: `*code` is the exit code.
bool ResolveTarget(const Config& cfg, Target* t, int* code) {
  std::optional<tools::ClusterConfig>& cluster = t->cluster;
  std::string& coordinator = t->coordinator;
  std::vector<FaultEvent>& faults = t->faults;
  coordinator = cfg.coordinator;
  t->client_options.coordinators = {cfg.coordinator};
  if (!cfg.cluster_dir.empty()) {
    auto options = ClientOptions::FromClusterDir(cfg.cluster_dir);
    // The nodes themselves (their pids, --faults), from the same cluster.conf.
    auto c = tools::ClusterConfig::Load(cfg.cluster_dir);
    for (const Status& s : {options.status(), c.status()}) {
      if (s.ok()) continue;
      std::cerr << "dtx-bench: " << s.ToString() << "\n";
      *code = kExitFailed;
      return false;
    }
    cluster = *c;
    t->client_options = *options;  // coordinator-0 first, then its backup(s)
    coordinator = t->client_options.coordinators.front();
  }
  if (!cfg.cluster_file.empty()) {
    // A cluster on other hosts: no pid files, so no node CPU figures.
    auto options = ClientOptions::FromClusterFile(cfg.cluster_file);
    if (!options.ok()) {
      std::cerr << "dtx-bench: " << options.status().ToString() << "\n";
      *code = kExitFailed;
      return false;
    }
    t->client_options = *options;
    coordinator = t->client_options.coordinators.front();
  }
  t->client_options.shed_throttle_k = cfg.shed_throttle_k;
  if (!cfg.faults.empty()) faults = *ParseFaultSchedule(cfg.faults);  // checked by ParseFlags
  if (!faults.empty()) {
    for (const FaultEvent& e : faults) {
      if (cluster->Find(e.node) == nullptr) {
        std::cerr << "dtx-bench: --faults: no node " << e.node << " in " << cfg.cluster_dir << "\n";
        *code = kExitUsage;
        return false;
      }
    }
  }
  return true;
}

// --floor: measures the machine's 2PC floor and prints it; false on failure.
bool MeasureAndPrintFloor(const Config& cfg, std::optional<Floor>* floor) {
  std::string dir = !cfg.floor_dir.empty()     ? cfg.floor_dir
                    : !cfg.cluster_dir.empty() ? cfg.cluster_dir
                                               : "/tmp";
  auto f = MeasureFloor(dir);
  if (!f.ok()) {
    std::cerr << "dtx-bench: floor: " << f.status().ToString() << "\n";
    return false;
  }
  *floor = *f;
  std::printf(
      "floor (%s): append+fdatasync p50 %.1f us (p99 %.1f), loopback round trip p50 %.1f us "
      "(p99 %.1f)\n  2PC floor: commit call 2 RTT + 2 fdatasync = %.1f us; transaction "
      "(reads + commit) 3 RTT + 2 fdatasync = %.1f us\n",
      dir.c_str(), (*floor)->fsync_p50_us, (*floor)->fsync_p99_us, (*floor)->rtt_p50_us,
      (*floor)->rtt_p99_us, (*floor)->commit_floor_us(), (*floor)->tx_floor_us());
  return true;
}

void PrintRunHeader(const Config& cfg, const std::string& coordinator, size_t participants) {
  std::string load_desc = cfg.open_loop() ? "open loop " + FormatNumber(cfg.rate) + " tx/s"
                                          : std::to_string(cfg.clients) + " clients (closed loop)";
  std::printf(
      "dtx-bench %s: coordinator %s, %zu participants, %lld keys, %d keys/tx%s, %s, %s, "
      "%.1f s (+%.1f s warm-up), load average %s\n",
      cfg.workload_name.c_str(), coordinator.c_str(), participants,
      static_cast<long long>(cfg.key_count()), cfg.keys_per_tx,
      cfg.participants_per_tx > 0
          ? (" on " + std::to_string(cfg.participants_per_tx) + " participants").c_str()
          : "",
      cfg.distribution == KeyDistribution::kZipfian
          ? ("zipfian theta " + FormatNumber(cfg.zipf_theta)).c_str()
          : "uniform",
      load_desc.c_str(), cfg.duration_s, cfg.warmup_s, LoadAverage().c_str());
  std::fflush(stdout);
}

// Loads the keys unless --no-load; `*load_s`: how long it took. False on failure.
bool LoadPhase(Client& client, const Config& cfg, double* load_s) {
  if (cfg.no_load) {
    std::printf("not loading: using the %lld keys already in the cluster\n",
                static_cast<long long>(cfg.key_count()));
  } else {
    auto load_start = Clock::now();
    Status s = LoadKeys(client, cfg);
    if (!s.ok()) {
      std::cerr << "dtx-bench: loading keys failed: " << s.ToString() << "\n";
      return false;
    }
    *load_s = std::chrono::duration<double>(Clock::now() - load_start).count();
    std::printf("loaded %lld keys in %.2f s\n", static_cast<long long>(cfg.key_count()), *load_s);
  }
  std::fflush(stdout);
  return true;
}

// What the timed run measured. `loop` stays alive as long as this (its
// transactions may still be running when the drain timed out).
struct RunResult {
  std::shared_ptr<TxLoop> loop;
  Clock::time_point t0;         // the load started: timeline and fault times count from here
  Clock::time_point stop_time;  // the load stopped
  double window_s = 0;          // the measured window (after the warm-up)
  std::map<std::string, pid_t> pids_before, pids_after;  // node pids around the window
  std::optional<Usage> cpu_before, cpu_after;            // their usage (nullopt: no --cluster)
  Usage self_cpu;                                        // dtx-bench's own usage in the window
  bool drained = false;  // every transaction finished after the stop
  Stats st;
  Timeline timeline{Clock::time_point{}};  // the loop's, taken after the drain
  std::vector<FaultRecord> fault_records;
  std::vector<CheckResult> checks;
};

// The shard index of participant `node` (its client address in the shard
// map); nullopt for a coordinator or a node the map does not list.
std::optional<size_t> ShardOfNode(Client& client, const tools::ClusterConfig& cluster,
                                  const std::string& node) {
  const tools::NodeEntry* n = cluster.Find(node);
  if (n == nullptr) return std::nullopt;
  const std::vector<std::string> participants = client.participants();
  for (size_t i = 0; i < participants.size(); ++i) {
    if (participants[i] == n->address) return i;
  }
  return std::nullopt;
}

// Runs the load (closed or open loop) with the fault schedule and the
// periodic checks beside it: warm-up, the measured window, stop, drain.
RunResult RunTimed(Client& client, const Config& cfg, const Target& target) {
  // t0: the load starts (timeline and fault times count from here).
  RunResult r;
  const auto t0 = r.t0 = Clock::now();
  auto loop = r.loop = std::make_shared<TxLoop>(&client, cfg, t0);
  std::thread open_thread;
  if (cfg.open_loop()) {
    open_thread = std::thread([loop, t0] { loop->RunOpen(t0); });
  } else {
    loop->StartClosed();
  }
  std::atomic<bool> done{false};
  std::mutex side_mu;
  std::vector<FaultRecord>& fault_records = r.fault_records;  // GUARDED_BY(side_mu) until the joins
  std::vector<CheckResult>& checks = r.checks;                // GUARDED_BY(side_mu) until the joins
  std::condition_variable side_cv;
  std::thread fault_thread;
  const std::vector<FaultEvent>& faults = target.faults;
  if (!faults.empty()) {
    std::string dtxctl = FindDtxctl(cfg);
    fault_thread = std::thread([&, dtxctl] {
      for (const FaultEvent& e : faults) {
        auto when =
            t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(e.at_s));
        std::unique_lock lock(side_mu);
        if (side_cv.wait_until(lock, when, [&] { return done.load(); })) return;
        lock.unlock();
        if (cfg.progress) std::fprintf(stderr, "fault at %.1f s: %s\n", e.at_s, e.text.c_str());
        // --avoid-stopped: the load leaves a participant before it stops and
        // comes back after it continues.
        std::optional<size_t> shard;
        if (cfg.avoid_stopped && (e.action == "stop" || e.action == "cont")) {
          shard = ShardOfNode(client, *target.cluster, e.node);
        }
        if (shard && e.action == "stop") loop->Avoid(*shard, true);
        FaultRecord f = RunFault(cfg, dtxctl, e, t0);
        if (shard && e.action == "cont") loop->Avoid(*shard, false);
        if (!f.error.empty())
          std::fprintf(stderr, "dtx-bench: fault '%s' failed: %s\n", e.text.c_str(),
                       f.error.c_str());
        lock.lock();
        fault_records.push_back(f);
      }
    });
  }
  std::thread check_thread;
  if (cfg.check_interval_s > 0) {
    check_thread = std::thread([&] {
      auto next = t0;
      for (;;) {
        next += std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(cfg.check_interval_s));
        {
          std::unique_lock lock(side_mu);
          if (side_cv.wait_until(lock, next, [&] { return done.load(); })) return;
        }
        // First against the full load; if every attempt aborts, hold back
        // new transfers (those in flight still run, prepare and commit
        // around the check) and try again.
        CheckResult c = ConsistentCheck(client, cfg, kCheckAttemptsFree);
        if (c.outcome == "not_checked") {
          loop->Pause();
          CheckResult q = ConsistentCheck(client, cfg, kCheckAttemptsMax);
          loop->Resume();
          q.attempts += c.attempts;
          q.quiesced = true;
          c = q;
        }
        c.t_s = std::chrono::duration<double>(Clock::now() - t0).count();
        std::lock_guard lock(side_mu);
        checks.push_back(c);
      }
    });
  }

  auto window_start =
      t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg.warmup_s));
  auto window_end = window_start + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(cfg.duration_s));
  std::map<std::string, pid_t>& pids_before = r.pids_before;
  std::map<std::string, pid_t>& pids_after = r.pids_after;
  std::optional<Usage>& cpu_before = r.cpu_before;
  Usage self_cpu_before;
  bool measuring = false;
  size_t reported = 0;
  for (;;) {
    auto now = Clock::now();
    if (!measuring && now >= window_start) {
      cpu_before = ClusterUsage(cfg, target.cluster ? &*target.cluster : nullptr, &pids_before);
      self_cpu_before = SelfUsage();
      window_start = Clock::now();
      window_end = window_start + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(cfg.duration_s));
      loop->BeginMeasuring();
      measuring = true;
    }
    if (measuring && now >= window_end) break;
    auto sec = static_cast<size_t>(std::chrono::duration<double>(now - t0).count());
    if (cfg.progress && sec > reported) {
      reported = sec;
      auto [c, f, p99] = loop->Second(sec - 1);
      std::fprintf(
          stderr, "[%4zus] %-9s %8llu tx/s  p99 %9.1f us  not committed %llu  in flight %llu\n",
          sec, measuring ? "measuring" : "warm-up", static_cast<unsigned long long>(c), p99,
          static_cast<unsigned long long>(f), static_cast<unsigned long long>(loop->in_flight()));
    }
    auto wake = std::min(t0 + std::chrono::seconds(sec + 1), measuring ? window_end : window_start);
    std::this_thread::sleep_until(std::min(wake, Clock::now() + 100ms));
  }
  loop->Stop();
  r.stop_time = Clock::now();
  r.window_s = std::chrono::duration<double>(Clock::now() - window_start).count();
  r.cpu_after = ClusterUsage(cfg, target.cluster ? &*target.cluster : nullptr, &pids_after);
  r.self_cpu = SelfUsage() - self_cpu_before;
  if (open_thread.joinable()) open_thread.join();
  {
    std::lock_guard lock(side_mu);
    done.store(true);
  }
  side_cv.notify_all();
  if (fault_thread.joinable()) fault_thread.join();
  if (check_thread.joinable()) check_thread.join();
  r.drained = loop->WaitDrained(kDrainTimeout);
  r.st = loop->TakeStats();
  r.timeline = loop->TakeTimeline();
  return r;
}

// Figures the text report and the JSON share.
struct Summary {
  uint64_t failed = 0;  // transactions not committed
  double tps = 0;
  double abort_rate = 0;
  std::optional<double> cpu_per_tx_us;         // all node processes
  std::optional<double> client_cpu_per_tx_us;  // dtx-bench itself
  // Context switches per committed transaction (voluntary, involuntary).
  std::optional<std::pair<double, double>> switches_per_tx;         // all node processes
  std::optional<std::pair<double, double>> client_switches_per_tx;  // dtx-bench itself
  bool restarted = false;  // a node's pid changed in the window
};

// Prints the results of the run (throughput, latencies, CPU, faults, timeline).
Summary PrintReport(const Config& cfg, const RunResult& r, const std::optional<Floor>& floor,
                    bool have_cluster) {
  const Stats& st = r.st;
  const double window_s = r.window_s;
  const std::shared_ptr<TxLoop>& loop = r.loop;
  const std::optional<Usage>& cpu_before = r.cpu_before;
  const std::optional<Usage>& cpu_after = r.cpu_after;
  const std::map<std::string, pid_t>& pids_before = r.pids_before;
  const std::map<std::string, pid_t>& pids_after = r.pids_after;
  const Usage& self_cpu = r.self_cpu;
  const std::vector<FaultRecord>& fault_records = r.fault_records;
  const Timeline& timeline = r.timeline;
  Summary sum;
  uint64_t& failed = sum.failed;
  for (const auto& [why, n] : st.failures) failed += n;
  double& tps = sum.tps;
  tps = static_cast<double>(st.committed) / window_s;
  double& abort_rate = sum.abort_rate;
  abort_rate = st.committed + failed == 0
                   ? 0.0
                   : static_cast<double>(failed) / static_cast<double>(st.committed + failed);
  std::printf("committed: %llu in %.2f s = %.1f tx/s\n",
              static_cast<unsigned long long>(st.committed), window_s, tps);
  std::printf("not committed: %llu (%.2f%%)\n", static_cast<unsigned long long>(failed),
              abort_rate * 100);
  for (const auto& [why, n] : st.failures) {
    std::printf("  %-28s %llu\n", why.c_str(), static_cast<unsigned long long>(n));
  }
  std::printf(
      "latency of committed transactions, us (read/commit/total: client-side; prepare/decision: "
      "coordinator-side, inside 'commit'):\n"
      "  %-8s %10s %10s %10s %10s %10s %10s\n",
      "phase", "p50", "p90", "p99", "p999", "max", "mean");
  PrintHist("read", st.read_ns);
  PrintHist("commit", st.commit_ns);
  PrintHist("prepare", st.prepare_ns);
  PrintHist("decision", st.decision_ns);
  PrintHist(cfg.open_loop() ? "total*" : "total", st.total_ns);
  PrintHist("commit2", st.commit_2pc_ns);
  PrintHist(cfg.open_loop() ? "total2*" : "total2", st.total_2pc_ns);
  std::printf(
      "  (commit2/total2: the %llu committed transactions that wrote on >= 2 participants: full "
      "2PC)\n",
      static_cast<unsigned long long>(st.commit_2pc_ns.count()));
  std::printf(
      "  (prepare: first PREPARE sent -> last vote in, %llu tx; decision: DECISION appended -> "
      "durable at the "
      "coordinator and its backup, %llu tx; as reported by the coordinator)\n",
      static_cast<unsigned long long>(st.prepare_ns.count()),
      static_cast<unsigned long long>(st.decision_ns.count()));
  if (cfg.open_loop()) {
    std::printf(
        "  * open loop: total counts from the intended start; start delay p99 %.1f us, %llu behind "
        "schedule at the stop\n",
        static_cast<double>(st.start_delay_ns.ValueAtQuantile(0.99)) / 1e3,
        static_cast<unsigned long long>(loop->backlog_at_stop()));
  }
  std::string ppt;
  for (const auto& [p, n] : st.participants_per_tx)
    ppt += " " + std::to_string(p) + ":" + std::to_string(n);
  std::printf("participants per committed tx (count):%s\n", ppt.c_str());
  if (floor) {
    std::printf(
        "vs. the 2PC floor (full-2PC transactions): commit p50 %.2fx (%.1f us floor), total p50 "
        "%.2fx "
        "(%.1f us floor)\n",
        static_cast<double>(st.commit_2pc_ns.ValueAtQuantile(0.5)) / 1e3 / floor->commit_floor_us(),
        floor->commit_floor_us(),
        static_cast<double>(st.total_2pc_ns.ValueAtQuantile(0.5)) / 1e3 / floor->tx_floor_us(),
        floor->tx_floor_us());
  }
  std::optional<double>& cpu_per_tx_us = sum.cpu_per_tx_us;
  bool& restarted = sum.restarted;
  restarted = pids_before != pids_after;
  auto per_tx = [&st](const tools::ContextSwitches& s) {
    const double n = static_cast<double>(st.committed);
    return std::pair<double, double>(static_cast<double>(s.voluntary) / n,
                                     static_cast<double>(s.involuntary) / n);
  };
  if (cpu_before && cpu_after && st.committed > 0) {
    const Usage used = *cpu_after - *cpu_before;
    cpu_per_tx_us = used.cpu_s / static_cast<double>(st.committed) * 1e6;
    sum.switches_per_tx = per_tx(used.switches);
    std::printf("cpu per committed tx (all %zu dtx processes): %.1f us%s\n", pids_after.size(),
                *cpu_per_tx_us, restarted ? " (a node restarted: undercounted)" : "");
    std::printf(
        "context switches per committed tx (all dtx processes): %.2f voluntary, %.2f "
        "involuntary\n",
        sum.switches_per_tx->first, sum.switches_per_tx->second);
  } else if (!have_cluster) {
    std::printf("cpu per committed tx: n/a (needs --cluster DIR for the node pids)\n");
  }
  std::optional<double>& client_cpu_per_tx_us = sum.client_cpu_per_tx_us;
  if (st.committed > 0) {
    client_cpu_per_tx_us = self_cpu.cpu_s / static_cast<double>(st.committed) * 1e6;
    sum.client_switches_per_tx = per_tx(self_cpu.switches);
    std::printf("client cpu per committed tx (dtx-bench itself): %.1f us\n", *client_cpu_per_tx_us);
    std::printf(
        "client context switches per committed tx (dtx-bench itself): %.2f voluntary, %.2f "
        "involuntary\n",
        sum.client_switches_per_tx->first, sum.client_switches_per_tx->second);
  }
  for (const FaultRecord& f : fault_records) {
    std::printf("fault at %.2f s: %s -> %s (%.2f s)\n", f.ran_at_s, f.event.text.c_str(),
                f.exit_code == 0 ? "ok" : f.error.c_str(), f.took_s);
  }
  std::printf("timeline (s: committed/s, p99 us):");
  for (size_t i = 0; i < timeline.seconds().size(); ++i) {
    const TimelineSecond& s = timeline.seconds()[i];
    std::printf("%s%zu:%llu/%.0f", i % 8 == 0 ? "\n  " : "  ", i,
                static_cast<unsigned long long>(s.committed),
                static_cast<double>(s.latency_ns.ValueAtQuantile(0.99)) / 1e3);
  }
  std::printf("\n");
  std::fflush(stdout);
  return sum;
}

// Prints the periodic consistent checks; returns how many found a violation
// (each fails the run: `*exit_code`).
uint64_t ReportChecks(const std::vector<CheckResult>& checks, int* exit_code) {
  uint64_t checks_ok = 0, checks_violated = 0, checks_not = 0;
  for (const CheckResult& c : checks) {
    if (c.outcome == "ok") ++checks_ok;
    if (c.outcome == "violated") ++checks_violated;
    if (c.outcome == "not_checked") ++checks_not;
  }
  if (!checks.empty()) {
    int quiesced = 0;
    for (const CheckResult& c : checks) quiesced += c.quiesced ? 1 : 0;
    std::printf(
        "periodic consistent checks: %llu ok, %llu violated, %llu not checked; %d needed new "
        "transfers "
        "held back after %d aborted attempts\n",
        static_cast<unsigned long long>(checks_ok),
        static_cast<unsigned long long>(checks_violated),
        static_cast<unsigned long long>(checks_not), quiesced, kCheckAttemptsFree);
    for (const CheckResult& c : checks) {
      if (c.outcome == "violated")
        std::printf("  at %.1f s: VIOLATED: %s\n", c.t_s, c.detail.c_str());
    }
    if (checks_violated > 0) *exit_code = kExitFailed;
  }
  return checks_violated;
}

// The bank workload's invariant after the drain: the total balance (other
// workloads: nothing to check).
struct InvariantResult {
  bool ok = true;
  std::optional<int64_t> total_balance;
};

InvariantResult CheckBankInvariant(Client& client, const Config& cfg, bool drained,
                                   uint64_t checks_violated, int* exit_code) {
  InvariantResult inv;
  bool& invariant_ok = inv.ok;
  std::optional<int64_t>& total_balance = inv.total_balance;
  if (cfg.workload == Workload::kBank) {
    int64_t expected = cfg.accounts * cfg.initial_balance;
    auto total = drained ? SumBalances(client, cfg)
                         : Result<int64_t>(Status::Aborted("transfers still running"));
    invariant_ok = total.ok() && *total == expected && checks_violated == 0;
    if (total.ok()) total_balance = *total;
    if (!total.ok() && total.status().IsCorruption()) {  // a missing or garbled account
      std::printf("invariant: VIOLATED: %s\n", total.status().ToString().c_str());
      *exit_code = kExitFailed;
    } else if (!total.ok()) {
      std::printf("invariant: NOT CHECKED: %s\n", total.status().ToString().c_str());
      *exit_code = kExitFailed;
    } else if (*total != expected) {
      std::printf("invariant: VIOLATED: total balance %lld, expected %lld\n",
                  static_cast<long long>(*total), static_cast<long long>(expected));
      *exit_code = kExitFailed;
    } else if (checks_violated > 0) {
      std::printf("invariant: VIOLATED during the run (periodic check)\n");
    } else {
      std::printf("invariant: ok (total balance %lld)\n", static_cast<long long>(*total));
    }
  }
  return inv;
}

// --json: every figure of the run in one object (bench/README.md), keys in
// the order written. A non-finite double is written as null (nlohmann-json's
// rule, as before).
using Json = nlohmann::ordered_json;

Json HistJson(const LatencyHistogram& h) {
  auto us = [&](double q) { return static_cast<double>(h.ValueAtQuantile(q)) / 1e3; };
  return Json{{"count", h.count()},    {"p50", us(0.5)},
              {"p90", us(0.9)},        {"p99", us(0.99)},
              {"p999", us(0.999)},     {"max", static_cast<double>(h.max()) / 1e3},
              {"mean", h.mean() / 1e3}};
}

// {"voluntary": V, "involuntary": I} or null.
Json SwitchesJson(const std::optional<std::pair<double, double>>& per_tx) {
  if (!per_tx) return nullptr;
  return Json{{"voluntary", per_tx->first}, {"involuntary", per_tx->second}};
}

template <typename T>
Json OrNull(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}

// False if the file cannot be written.
bool WriteJson(const Config& cfg, const std::string& command_line, const std::string& coordinator,
               size_t participants, double load_s, const RunResult& r, const Summary& sum,
               const std::optional<Floor>& floor, const InvariantResult& inv) {
  const Stats& st = r.st;
  utsname un{};
  ::uname(&un);
  Json o;
  o["workload"] = cfg.workload_name;
  o["command"] = command_line;
  o["machine"] = {{"host", un.nodename},
                  {"kernel", un.release},
                  {"cpus", std::thread::hardware_concurrency()},
                  {"load_average", LoadAverage()}};
  o["coordinator"] = coordinator;
  o["participants"] = participants;
  o["load"] = cfg.open_loop() ? "open" : "closed";
  o["clients"] = cfg.open_loop() ? 0 : cfg.clients;
  o["rate"] = cfg.rate;
  o["keys"] = cfg.key_count();
  o["accounts"] = cfg.accounts;
  o["value_size"] = cfg.value_size;
  o["keys_per_tx"] = cfg.keys_per_tx;
  o["participants_per_tx"] = cfg.participants_per_tx;
  o["distribution"] = cfg.distribution == KeyDistribution::kZipfian ? "zipfian" : "uniform";
  o["theta"] = cfg.zipf_theta;
  o["seed"] = cfg.seed;
  o["warmup_s"] = cfg.warmup_s;
  o["duration_s"] = r.window_s;
  o["load_s"] = load_s;
  o["committed"] = st.committed;
  o["committed_per_s"] = sum.tps;
  o["not_committed"] = sum.failed;
  o["abort_rate"] = sum.abort_rate;
  Json reasons = Json::object();
  for (const auto& [why, n] : st.failures) reasons[why] = n;
  o["not_committed_by_reason"] = std::move(reasons);
  o["latency_us"] = HistJson(st.total_ns);
  o["phases_us"] = {
      {"read", HistJson(st.read_ns)},
      {"commit", HistJson(st.commit_ns)},
      {"prepare", HistJson(st.prepare_ns)},
      {"decision", HistJson(st.decision_ns)},
      {"total", HistJson(st.total_ns)},
      {"commit_2pc", HistJson(st.commit_2pc_ns)},
      {"total_2pc", HistJson(st.total_2pc_ns)},
      {"note",
       "client-side: read = begin to the last Get answer; commit = Commit call to outcome; "
       "total = intended start to outcome; *_2pc = only transactions that wrote on >= 2 "
       "participants. Coordinator-side (CommitResult.prepare_us/decision_us, inside commit): "
       "prepare = first PREPARE sent to last vote in (one-phase: the whole Prepare); decision = "
       "DECISION appended to durable at the coordinator and acknowledged by its backup (full 2PC "
       "only); phase 2 is after the reply and in neither"}};
  o["start_delay_us"] = cfg.open_loop() ? HistJson(st.start_delay_ns) : Json(nullptr);
  std::vector<double> qs;
  for (int i = 0; i <= 99; ++i) qs.push_back(i / 100.0);
  for (double q : {0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0}) qs.push_back(q);
  Json cdf = Json::array();
  for (double q : qs) {
    cdf.push_back({static_cast<double>(st.total_ns.ValueAtQuantile(q)) / 1e3, q});
  }
  o["latency_cdf_us"] = std::move(cdf);
  Json per_tx = Json::object();
  for (const auto& [p, n] : st.participants_per_tx) per_tx[std::to_string(p)] = n;
  o["participants_per_committed_tx"] = std::move(per_tx);
  // The last second(s) may be partial (the stop, then the drain).
  const double end_s = std::chrono::duration<double>(r.stop_time - r.t0).count();
  Json timeline = Json::array();
  for (size_t i = 0; i < r.timeline.seconds().size(); ++i) {
    const TimelineSecond& s = r.timeline.seconds()[i];
    auto us = [&](double q) { return static_cast<double>(s.latency_ns.ValueAtQuantile(q)) / 1e3; };
    timeline.push_back({{"t", i},
                        {"committed", s.committed},
                        {"not_committed", s.failed},
                        {"p50_us", us(0.5)},
                        {"p99_us", us(0.99)},
                        {"max_us", static_cast<double>(s.latency_ns.max()) / 1e3},
                        {"span_s", std::clamp(end_s - static_cast<double>(i), 0.0, 1.0)},
                        {"warmup", static_cast<double>(i) < cfg.warmup_s}});
  }
  o["timeline"] = std::move(timeline);
  Json faults = Json::array();
  for (const FaultRecord& f : r.fault_records) {
    faults.push_back({{"at_s", f.event.at_s},
                      {"ran_at_s", f.ran_at_s},
                      {"took_s", f.took_s},
                      {"event", f.event.text},
                      {"action", f.event.action},
                      {"node", f.event.node},
                      {"exit_code", f.exit_code},
                      {"error", f.error}});
  }
  o["faults"] = std::move(faults);
  Json checks = Json::array();
  for (const CheckResult& c : r.checks) {
    checks.push_back({{"t_s", c.t_s},
                      {"outcome", c.outcome},
                      {"total", c.total},
                      {"attempts", c.attempts},
                      {"quiesced", c.quiesced},
                      {"detail", c.detail}});
  }
  o["checks"] = std::move(checks);
  o["floor"] = nullptr;
  if (floor) {
    o["floor"] = {{"fsync_p50_us", floor->fsync_p50_us},
                  {"fsync_p99_us", floor->fsync_p99_us},
                  {"rtt_p50_us", floor->rtt_p50_us},
                  {"rtt_p99_us", floor->rtt_p99_us},
                  {"fsync_dir", floor->fsync_dir},
                  {"commit_floor_us", floor->commit_floor_us()},
                  {"tx_floor_us", floor->tx_floor_us()},
                  {"commit_p50_ratio", static_cast<double>(st.commit_2pc_ns.ValueAtQuantile(0.5)) /
                                           1e3 / floor->commit_floor_us()},
                  {"total_p50_ratio", static_cast<double>(st.total_2pc_ns.ValueAtQuantile(0.5)) /
                                          1e3 / floor->tx_floor_us()},
                  {"ratio_of", "p50 of committed transactions that wrote on >= 2 participants"},
                  {"formula",
                   "commit = 2 RTT + 2 fdatasync (prepare at the participants, decision at the "
                   "coordinator); tx = 3 RTT + 2 fdatasync"}};
  }
  o["cpu_per_tx_us"] = OrNull(sum.cpu_per_tx_us);
  o["client_cpu_per_tx_us"] = OrNull(sum.client_cpu_per_tx_us);
  o["context_switches_per_tx"] = SwitchesJson(sum.switches_per_tx);
  o["client_context_switches_per_tx"] = SwitchesJson(sum.client_switches_per_tx);
  o["node_restarted"] = sum.restarted;
  o["total_balance"] = OrNull(inv.total_balance);
  o["invariant_ok"] = inv.ok;
  std::ofstream out(cfg.json_path);
  // Bytes that are not UTF-8 (a host name, an error text) become U+FFFD
  // instead of an exception.
  out << o.dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  out.flush();
  return static_cast<bool>(out);
}

int Run(const Config& cfg, const std::string& command_line) {
  Target target;
  int code = kExitOk;
  if (!ResolveTarget(cfg, &target, &code)) return code;
  std::optional<Floor> floor;
  if (cfg.floor && !MeasureAndPrintFloor(cfg, &floor)) return kExitFailed;

  auto client = Client::Connect(target.client_options);
  if (!client.ok()) {
    std::cerr << "dtx-bench: cannot connect to " << target.coordinator << ": "
              << client.status().ToString() << "\n";
    if (target.client_options.tls_ca_file.empty()) {
      // A TLS node closes a plaintext connection without a word to it.
      std::cerr << "dtx-bench: (plaintext: if the cluster runs TLS, give --cluster DIR so its "
                   "client certificate is used)\n";
    }
    return kExitFailed;
  }
  const size_t participants = (*client)->participants().size();
  PrintRunHeader(cfg, target.coordinator, participants);
  double load_s = 0;
  if (!LoadPhase(**client, cfg, &load_s)) return kExitFailed;

  RunResult r = RunTimed(**client, cfg, target);
  Summary sum = PrintReport(cfg, r, floor, target.cluster.has_value());
  int exit_code = kExitOk;
  if (!r.drained) {
    std::cerr << "dtx-bench: " << r.loop->in_flight() << " transactions still unfinished after "
              << kDrainTimeout.count() << " s\n";
    exit_code = kExitFailed;
  }
  const uint64_t checks_violated = ReportChecks(r.checks, &exit_code);
  InvariantResult inv = CheckBankInvariant(**client, cfg, r.drained, checks_violated, &exit_code);
  if (!cfg.json_path.empty() &&
      !WriteJson(cfg, command_line, target.coordinator, participants, load_s, r, sum, floor, inv)) {
    std::cerr << "dtx-bench: cannot write " << cfg.json_path << "\n";
    exit_code = kExitFailed;
  }
  return exit_code;
}

}  // namespace
}  // namespace dtx::bench

int main(int argc, char** argv) {
  using namespace dtx::bench;
  // libuv writes with write(2): a node that dies mid-request must not kill the
  // benchmark with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && std::string(argv[1]) == "plot") return PlotMain(argc - 1, argv + 1);
  bool help = false;
  std::string usage;
  auto cfg = ParseFlags(argc, argv, &help, &usage);
  if (help) {
    std::cout << usage;
    return kExitOk;
  }
  if (!cfg.ok()) {
    std::cerr << "dtx-bench: " << cfg.status().message() << "\n\n" << usage;
    return kExitUsage;
  }
  std::string command_line;
  for (int i = 0; i < argc; ++i) command_line += (i ? " " : "") + std::string(argv[i]);
  return Run(*cfg, command_line);
}
