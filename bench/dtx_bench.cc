// dtx-bench: closed-loop workloads against a running dtx cluster.
//
//   dtx-bench --workload bank (--cluster DIR | --coordinator HOST:PORT)
//             --clients N --duration S [--accounts 100000] [--warmup S]
//             [--initial-balance 1000] [--json FILE] [--seed N] [--no-load]
//
// bank: loads --accounts accounts ("acct/<8 digits>" -> decimal balance) with
// batched load transactions (they spread over the participants by the shard
// hash), then keeps --clients transfers in flight through the C++ client's
// asynchronous API from one thread (no thread per client): each transfer reads
// two random accounts, moves a random amount from one to the other and
// commits; when it finishes the next one starts. Reports committed tx/s,
// aborts by reason, latency of committed transfers (begin to commit outcome:
// both reads and the commit) p50/p99/p999/max (LatencyHistogram, within
// 1/128 relative error), and with --cluster the CPU seconds all dtx node
// processes used per committed transaction (/proc/<pid>/stat of the pids in
// DIR/<node>/pid, before and after the measured window). At the end it sums
// every balance with read-only transactions (each validated at commit; no
// transfer is running then) and checks the total is accounts * balance.
//
// Exit status: 0 ok; 1 the invariant is broken or the run failed; 2 bad usage.
#include <signal.h>
#include <sys/resource.h>

#include <boost/program_options.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/dtx_bench_histogram.h"
#include "dtx/client.h"
#include "tools/cluster_config.h"

namespace po = boost::program_options;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace dtx::bench {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

constexpr int kClientsMax = 4000;             // below the client's in-flight limit
constexpr int kDurationSecondsMax = 24 * 3600;
constexpr int64_t kAccountsMax = 100'000'000;
constexpr int kLoadBatchAccounts = 200;       // accounts written per load transaction
constexpr int kLoadInFlight = 16;             // load transactions in flight
constexpr int kSumBatchAccounts = 500;        // accounts read per read-only transaction
constexpr int kSumInFlight = 16;
constexpr int kBatchAttemptsMax = 20;         // load/sum batch retries on aborts
constexpr int kTransferAmountMax = 100;
constexpr auto kDrainTimeout = 60s;           // in-flight transfers after the stop

std::string AccountKey(int64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "acct/%08lld", static_cast<long long>(i));
  return buf;
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

struct Config {
  std::string workload;
  std::string cluster_dir;
  std::string coordinator;
  int clients = 0;
  double duration_s = 0;
  double warmup_s = 0;
  int64_t accounts = 100000;
  int64_t initial_balance = 1000;
  std::string json_path;
  uint64_t seed = 0;
  bool no_load = false;
};

// ---------------------------------------------------------------------------
// Batches (load and sum): async transactions over ranges of accounts, a few
// in flight, each retried on abort. Blocks the calling (main) thread.

class BatchRunner {
 public:
  // `start(first, count, done)` runs one attempt for accounts
  // [first, first+count) and calls done(status) once.
  using Attempt = std::function<void(int64_t first, int64_t count,
                                     std::function<void(const Status&)> done)>;

  static Status Run(int64_t total, int batch, int in_flight, const Attempt& attempt) {
    BatchRunner r;
    r.total_ = total;
    r.batch_ = batch;
    r.attempt_ = attempt;
    for (int i = 0; i < in_flight; ++i) r.StartNext();
    std::unique_lock lock(r.mu_);
    r.cv_.wait(lock, [&] { return r.running_ == 0; });
    return r.error_;
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
      bool retry = !s.ok() && (s.IsAborted() || s.IsTimeout() ||
                               (s.IsUnavailable() && s.message().find("outcome unknown") ==
                                                         std::string::npos)) &&
                   attempt_no < kBatchAttemptsMax;
      if (retry) {
        // Runs on the client's loop thread: retry at once, never sleep here.
        Try(first, count, attempt_no + 1);
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

  std::mutex mu_;
  std::condition_variable cv_;
  int64_t total_ = 0;
  int batch_ = 0;
  int64_t next_ = 0;
  int running_ = 0;
  Status error_;
  Attempt attempt_;
};

Status LoadAccounts(Client& client, const Config& cfg) {
  auto attempt = [&](int64_t first, int64_t count, std::function<void(const Status&)> done) {
    auto tx = client.BeginAsync();
    if (!tx.ok()) return done(tx.status());
    for (int64_t i = first; i < first + count; ++i) {
      Status s = (*tx)->Put(AccountKey(i), std::to_string(cfg.initial_balance));
      if (!s.ok()) return done(s);
    }
    auto keep = *tx;
    keep->Commit([keep, done](const CommitOutcome& o) { done(o.status); });
  };
  return BatchRunner::Run(cfg.accounts, kLoadBatchAccounts, kLoadInFlight, attempt);
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
// The closed loop of transfers.

struct Stats {
  uint64_t committed = 0;
  std::map<std::string, uint64_t> failures;  // "conflict", "get:Unavailable", ...
  LatencyHistogram latency_ns;
};

class TransferLoop : public std::enable_shared_from_this<TransferLoop> {
 public:
  TransferLoop(Client* client, const Config& cfg) : client_(client), cfg_(cfg), rng_(cfg.seed) {}

  void Start() {
    for (int i = 0; i < cfg_.clients; ++i) StartOne();
  }
  // From now on, finished transfers count.
  void BeginMeasuring() { measuring_.store(true); }
  // No new transfers; those in flight still finish.
  void Stop() {
    measuring_.store(false);
    stopping_.store(true);
  }
  bool WaitDrained(std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return in_flight_ == 0; });
  }
  Stats TakeStats() {
    std::lock_guard lock(mu_);
    return stats_;
  }
  uint64_t in_flight() {
    std::lock_guard lock(mu_);
    return in_flight_;
  }

 private:
  struct Transfer {
    std::shared_ptr<AsyncTransaction> tx;
    std::string from;
    std::string to;
    int64_t amount = 0;
    Clock::time_point start;
    std::mutex mu;
    int pending_reads = 2;
    std::optional<int64_t> from_balance;
    std::optional<int64_t> to_balance;
    Status error;
  };

  void StartOne() {
    auto t = std::make_shared<Transfer>();
    {
      std::lock_guard lock(mu_);
      if (stopping_.load()) return;
      ++in_flight_;
      std::uniform_int_distribution<int64_t> pick(0, cfg_.accounts - 1);
      int64_t a = pick(rng_);
      int64_t b = pick(rng_);
      while (b == a) b = pick(rng_);
      t->from = AccountKey(a);
      t->to = AccountKey(b);
      t->amount = std::uniform_int_distribution<int64_t>(1, kTransferAmountMax)(rng_);
    }
    t->start = Clock::now();
    auto tx = client_->BeginAsync();
    if (!tx.ok()) {
      // This client slot ends here (a closed or overloaded client would
      // otherwise fail again at once, forever).
      return Finish(t, "begin:" + std::string(CodeName(tx.status().code())), false);
    }
    t->tx = *tx;
    auto self = shared_from_this();
    for (bool from : {true, false}) {
      t->tx->Get(from ? t->from : t->to,
                 [self, t, from](GetResult r) { self->OnRead(t, from, r); });
    }
  }

  void OnRead(const std::shared_ptr<Transfer>& t, bool from, const GetResult& r) {
    {
      std::lock_guard lock(t->mu);
      if (!r.ok()) {
        if (t->error.ok()) t->error = r.status();
      } else {
        int64_t v = 0;
        if (!r->has_value() || !ParseBalance(**r, &v)) {
          t->error = Status::Corruption("bad account");
        }
        (from ? t->from_balance : t->to_balance) = v;
      }
      if (--t->pending_reads > 0) return;
    }
    if (!t->error.ok()) {
      (void)t->tx->Abort();
      return Finish(t, t->error.IsCorruption()
                           ? "bad_account"
                           : "get:" + std::string(CodeName(t->error.code())));
    }
    Status s = t->tx->Put(t->from, std::to_string(*t->from_balance - t->amount));
    if (s.ok()) s = t->tx->Put(t->to, std::to_string(*t->to_balance + t->amount));
    if (!s.ok()) {
      (void)t->tx->Abort();
      return Finish(t, "put:" + std::string(CodeName(s.code())));
    }
    t->tx->Commit([self = shared_from_this(), t](const CommitOutcome& o) {
      if (o.status.ok()) return self->Finish(t, "");
      if (o.abort_reason.has_value()) return self->Finish(t, AbortReasonName(*o.abort_reason));
      if (o.outcome_unknown) return self->Finish(t, "outcome_unknown");
      self->Finish(t, "commit:" + std::string(CodeName(o.status.code())));
    });
  }

  // `failure` empty: committed. `next`: start the next transfer of this slot.
  void Finish(const std::shared_ptr<Transfer>& t, const std::string& failure, bool next = true) {
    auto elapsed = Clock::now() - t->start;
    {
      std::lock_guard lock(mu_);
      if (measuring_.load()) {
        if (failure.empty()) {
          ++stats_.committed;
          stats_.latency_ns.Record(static_cast<uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()));
        } else {
          ++stats_.failures[failure];
        }
      }
      --in_flight_;
    }
    cv_.notify_all();
    if (next && !stopping_.load()) StartOne();
  }

  Client* client_;
  const Config& cfg_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::mt19937_64 rng_;   // GUARDED_BY(mu_)
  uint64_t in_flight_ = 0;  // GUARDED_BY(mu_)
  Stats stats_;           // GUARDED_BY(mu_)
  std::atomic<bool> measuring_{false};
  std::atomic<bool> stopping_{false};
};

// CPU seconds of every node process of the cluster (by its pid file), or
// nullopt without --cluster. `pids` gets the pids read.
std::optional<double> ClusterCpuSeconds(const Config& cfg, const tools::ClusterConfig* cluster,
                                        std::map<std::string, pid_t>* pids) {
  if (cluster == nullptr) return std::nullopt;
  double total = 0;
  for (const tools::NodeEntry& n : cluster->nodes()) {
    auto pid = tools::ReadPidFile(tools::NodeDir(cfg.cluster_dir, n.name) + "/" +
                                  tools::kNodePidFile);
    if (!pid.ok()) continue;
    auto cpu = tools::ProcessCpuSeconds(*pid);
    if (!cpu.ok()) continue;
    (*pids)[n.name] = *pid;
    total += *cpu;
  }
  return total;
}

// CPU seconds (user + system) this process used so far: the client side.
double SelfCpuSeconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) + tv.tv_usec / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

int RunBank(const Config& cfg) {
  std::optional<tools::ClusterConfig> cluster;
  std::string coordinator = cfg.coordinator;
  std::vector<std::string> coordinators = {cfg.coordinator};
  if (!cfg.cluster_dir.empty()) {
    auto c = tools::ClusterConfig::Load(cfg.cluster_dir);
    if (!c.ok()) {
      std::cerr << "dtx-bench: " << c.status().ToString() << "\n";
      return kExitFailed;
    }
    cluster = *c;
    coordinator = cluster->primary()->address;
    coordinators.clear();  // coordinator-0 first, then its backup(s)
    for (const tools::NodeEntry& n : cluster->nodes()) {
      if (n.role == tools::NodeRole::kCoordinator) coordinators.push_back(n.address);
    }
  }
  auto client = Client::Connect({.coordinators = coordinators});
  if (!client.ok()) {
    std::cerr << "dtx-bench: cannot connect to " << coordinator << ": "
              << client.status().ToString() << "\n";
    return kExitFailed;
  }
  std::printf("dtx-bench bank: coordinator %s, %zu participants, %lld accounts x %lld, "
              "%d clients, %.1f s (+%.1f s warm-up)\n",
              coordinator.c_str(), (*client)->participants().size(),
              static_cast<long long>(cfg.accounts), static_cast<long long>(cfg.initial_balance),
              cfg.clients, cfg.duration_s, cfg.warmup_s);
  std::fflush(stdout);

  auto load_start = Clock::now();
  double load_s = 0;
  if (cfg.no_load) {
    std::printf("not loading: using the %lld accounts already in the cluster\n",
                static_cast<long long>(cfg.accounts));
  } else {
    Status s = LoadAccounts(**client, cfg);
    if (!s.ok()) {
      std::cerr << "dtx-bench: loading accounts failed: " << s.ToString() << "\n";
      return kExitFailed;
    }
    load_s = std::chrono::duration<double>(Clock::now() - load_start).count();
    std::printf("loaded %lld accounts in %.2f s\n", static_cast<long long>(cfg.accounts), load_s);
  }
  std::fflush(stdout);

  // Shared with its callbacks, so it outlives transfers that never drained.
  auto loop = std::make_shared<TransferLoop>(client->get(), cfg);
  loop->Start();
  std::this_thread::sleep_for(std::chrono::duration<double>(cfg.warmup_s));
  std::map<std::string, pid_t> pids_before;
  std::map<std::string, pid_t> pids_after;
  auto cpu_before = ClusterCpuSeconds(cfg, cluster ? &*cluster : nullptr, &pids_before);
  double self_cpu_before = SelfCpuSeconds();
  auto window_start = Clock::now();
  loop->BeginMeasuring();
  std::this_thread::sleep_for(std::chrono::duration<double>(cfg.duration_s));
  loop->Stop();
  double window_s = std::chrono::duration<double>(Clock::now() - window_start).count();
  auto cpu_after = ClusterCpuSeconds(cfg, cluster ? &*cluster : nullptr, &pids_after);
  double self_cpu = SelfCpuSeconds() - self_cpu_before;
  bool drained = loop->WaitDrained(kDrainTimeout);
  Stats st = loop->TakeStats();

  uint64_t failed = 0;
  for (const auto& [why, n] : st.failures) failed += n;
  double tps = static_cast<double>(st.committed) / window_s;
  double abort_rate =
      st.committed + failed == 0 ? 0.0
                                 : static_cast<double>(failed) / static_cast<double>(st.committed + failed);
  auto us = [&](double q) { return static_cast<double>(st.latency_ns.ValueAtQuantile(q)) / 1000.0; };
  std::printf("committed: %llu in %.2f s = %.1f tx/s\n",
              static_cast<unsigned long long>(st.committed), window_s, tps);
  std::printf("not committed: %llu (%.2f%%)\n", static_cast<unsigned long long>(failed),
              abort_rate * 100);
  for (const auto& [why, n] : st.failures) {
    std::printf("  %-28s %llu\n", why.c_str(), static_cast<unsigned long long>(n));
  }
  std::printf("latency (committed transfers, begin to outcome, us): p50 %.1f  p99 %.1f  p999 %.1f  max %.1f  mean %.1f\n",
              us(0.5), us(0.99), us(0.999), static_cast<double>(st.latency_ns.max()) / 1000.0,
              st.latency_ns.mean() / 1000.0);
  std::optional<double> cpu_per_tx_us;
  bool restarted = pids_before != pids_after;
  if (cpu_before && cpu_after && st.committed > 0) {
    cpu_per_tx_us = (*cpu_after - *cpu_before) / static_cast<double>(st.committed) * 1e6;
    std::printf("cpu per committed tx (all %zu dtx processes): %.1f us%s\n", pids_after.size(),
                *cpu_per_tx_us, restarted ? " (a node restarted: undercounted)" : "");
  } else if (!cluster) {
    std::printf("cpu per committed tx: n/a (needs --cluster DIR for the node pids)\n");
  }
  std::optional<double> client_cpu_per_tx_us;
  if (st.committed > 0) {
    client_cpu_per_tx_us = self_cpu / static_cast<double>(st.committed) * 1e6;
    std::printf("client cpu per committed tx (dtx-bench itself): %.1f us\n",
                *client_cpu_per_tx_us);
  }
  std::fflush(stdout);
  int exit_code = kExitOk;
  if (!drained) {
    std::cerr << "dtx-bench: " << loop->in_flight() << " transfers still unfinished after "
              << kDrainTimeout.count() << " s\n";
    exit_code = kExitFailed;
  }

  int64_t expected = cfg.accounts * cfg.initial_balance;
  auto total = drained ? SumBalances(**client, cfg)
                       : Result<int64_t>(Status::Aborted("transfers still running"));
  bool invariant_ok = total.ok() && *total == expected;
  if (!total.ok() && total.status().IsCorruption()) {  // a missing or garbled account
    std::printf("invariant: VIOLATED: %s\n", total.status().ToString().c_str());
    exit_code = kExitFailed;
  } else if (!total.ok()) {
    std::printf("invariant: NOT CHECKED: %s\n", total.status().ToString().c_str());
    exit_code = kExitFailed;
  } else if (!invariant_ok) {
    std::printf("invariant: VIOLATED: total balance %lld, expected %lld\n",
                static_cast<long long>(*total), static_cast<long long>(expected));
    exit_code = kExitFailed;
  } else {
    std::printf("invariant: ok (total balance %lld)\n", static_cast<long long>(*total));
  }

  if (!cfg.json_path.empty()) {
    std::ofstream out(cfg.json_path);
    out << "{\n  \"workload\": \"bank\",\n"
        << "  \"coordinator\": \"" << JsonEscape(coordinator) << "\",\n"
        << "  \"participants\": " << (*client)->participants().size() << ",\n"
        << "  \"clients\": " << cfg.clients << ",\n"
        << "  \"accounts\": " << cfg.accounts << ",\n"
        << "  \"warmup_s\": " << cfg.warmup_s << ",\n"
        << "  \"duration_s\": " << window_s << ",\n"
        << "  \"load_s\": " << load_s << ",\n"
        << "  \"committed\": " << st.committed << ",\n"
        << "  \"committed_per_s\": " << tps << ",\n"
        << "  \"not_committed\": " << failed << ",\n"
        << "  \"abort_rate\": " << abort_rate << ",\n"
        << "  \"not_committed_by_reason\": {";
    bool first = true;
    for (const auto& [why, n] : st.failures) {
      out << (first ? "" : ",") << "\n    \"" << JsonEscape(why) << "\": " << n;
      first = false;
    }
    out << (first ? "" : "\n  ") << "},\n"
        << "  \"latency_us\": {\"p50\": " << us(0.5) << ", \"p99\": " << us(0.99)
        << ", \"p999\": " << us(0.999)
        << ", \"max\": " << static_cast<double>(st.latency_ns.max()) / 1000.0
        << ", \"mean\": " << st.latency_ns.mean() / 1000.0 << "},\n"
        << "  \"cpu_per_tx_us\": ";
    if (cpu_per_tx_us) {
      out << *cpu_per_tx_us;
    } else {
      out << "null";
    }
    out << ",\n  \"client_cpu_per_tx_us\": ";
    if (client_cpu_per_tx_us) {
      out << *client_cpu_per_tx_us;
    } else {
      out << "null";
    }
    out << ",\n  \"node_restarted\": " << (restarted ? "true" : "false") << ",\n"
        << "  \"invariant_ok\": " << (invariant_ok ? "true" : "false") << "\n}\n";
    if (!out) {
      std::cerr << "dtx-bench: cannot write " << cfg.json_path << "\n";
      exit_code = kExitFailed;
    }
  }
  return exit_code;
}

int Usage(const std::string& error, const po::options_description& desc) {
  std::cerr << "dtx-bench: " << error << "\n\n"
            << "usage: dtx-bench --workload bank (--cluster DIR | --coordinator HOST:PORT) "
               "--clients N --duration S [options]\n"
            << desc;
  return kExitUsage;
}

}  // namespace
}  // namespace dtx::bench

int main(int argc, char** argv) {
  using namespace dtx::bench;
  // libuv writes with write(2): a node that dies mid-request must not kill the
  // benchmark with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  Config cfg;
  po::options_description desc("options");
  desc.add_options()("help,h", "show help")(
      "workload", po::value<std::string>(&cfg.workload)->required(),
      "bank (ycsb-a, ycsb-b, ycsb-f: later)")(
      "cluster", po::value<std::string>(&cfg.cluster_dir), "cluster directory (dtxctl cluster up)")(
      "coordinator", po::value<std::string>(&cfg.coordinator), "coordinator HOST:PORT")(
      "clients", po::value<int>(&cfg.clients)->required(), "transactions in flight")(
      "duration", po::value<double>(&cfg.duration_s)->required(), "measured seconds")(
      "warmup", po::value<double>(&cfg.warmup_s)->default_value(1.0), "seconds before measuring")(
      "accounts", po::value<int64_t>(&cfg.accounts)->default_value(100000), "bank accounts")(
      "initial-balance", po::value<int64_t>(&cfg.initial_balance)->default_value(1000),
      "balance of each account at load")(
      "json", po::value<std::string>(&cfg.json_path), "write a JSON report here")(
      "seed", po::value<uint64_t>(&cfg.seed), "random seed (default: random)")(
      "no-load", po::bool_switch(&cfg.no_load),
      "use the accounts already loaded (same --accounts and --initial-balance)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("help")) {
      std::cout << "usage: dtx-bench --workload bank (--cluster DIR | --coordinator HOST:PORT) "
                   "--clients N --duration S [options]\n"
                << desc;
      return kExitOk;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return Usage(e.what(), desc);
  }
  if (cfg.workload != "bank") {
    if (cfg.workload == "ycsb-a" || cfg.workload == "ycsb-b" || cfg.workload == "ycsb-f") {
      return Usage("workload '" + cfg.workload + "' is not implemented yet (only bank)", desc);
    }
    return Usage("unknown workload '" + cfg.workload + "'", desc);
  }
  if (cfg.cluster_dir.empty() == cfg.coordinator.empty()) {
    return Usage("give exactly one of --cluster DIR and --coordinator HOST:PORT", desc);
  }
  if (cfg.clients < 1 || cfg.clients > kClientsMax) {
    return Usage("--clients must be 1.." + std::to_string(kClientsMax), desc);
  }
  if (!(cfg.duration_s > 0) || cfg.duration_s > kDurationSecondsMax) {
    return Usage("--duration must be > 0 and <= " + std::to_string(kDurationSecondsMax), desc);
  }
  if (!(cfg.warmup_s >= 0) || cfg.warmup_s > kDurationSecondsMax) {
    return Usage("--warmup must be >= 0", desc);
  }
  if (cfg.accounts < 2 || cfg.accounts > kAccountsMax) {
    return Usage("--accounts must be 2.." + std::to_string(kAccountsMax), desc);
  }
  if (cfg.initial_balance < 0 || cfg.initial_balance > 1'000'000'000) {
    return Usage("--initial-balance must be 0..1000000000", desc);
  }
  if (!vm.count("seed")) cfg.seed = std::random_device{}();
  return RunBank(cfg);
}
