// The crash matrix: every commit-path failpoint (docs/failpoints.md) armed
// with `crash` on a running 3-participant cluster under a bank workload, plus
// a seeded run of SIGKILLs to random nodes at random times.
//
// Each cell: the workload runs; `dtxctl failpoint NODE POINT crash` arms the
// point; the next transaction passing it kills the node (exit 86); the
// supervisor restarts it. Recovery time = crash -> the node answers GetStatus
// again AND no participant lists an in-doubt transaction AND a transfer begun
// after the crash (touching the crashed participant, or every participant for
// a coordinator) has committed. It must stay within the bound (default 5 s,
// DTX_CRASH_MATRIX_BOUND_MS). Then the workload stops and the cell checks:
//   - every transfer the client was told COMMITTED wrote both of its markers
//     (one per participant it touched) and nothing the client was told ABORTED
//     (or "nothing was committed") left one; an UNKNOWN outcome is resolved by
//     its markers, which must be all-or-nothing;
//   - every balance equals its start value plus the moves of exactly the
//     transfers whose markers exist (so balances changed iff markers exist),
//     and the total is unchanged (a validated read-only transaction);
//   - `dtxctl in-doubt` lists nothing; supervisor.log shows exactly one restart
//     in the cell, of the armed node, with exit status 86.
// The table (cell, pass/fail, restart ms, recovery ms, outcome counts) goes to
// stdout and, when DTX_CRASH_MATRIX_OUT names a file, into that file.
//
// One cluster serves all cells while they pass (cluster start-up dominates the
// run time otherwise); after a failing cell the next one gets a fresh cluster
// so one bug does not fail every later cell. The random-kill run has its own
// cluster. Environment knobs: DTX_CRASH_MATRIX_BOUND_MS (5000),
// DTX_CRASH_MATRIX_RANDOM_S (15), DTX_CRASH_MATRIX_SEED (random; printed),
// DTX_CRASH_MATRIX_CLIENTS (8 transfer threads, at most 256).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dtx/client.h"
#include "tests/harness.h"
#include "tools/admin_client.h"
#include "tools/cluster_config.h"

namespace dtx::testing {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int kParticipants = 3;
constexpr int kAccountsPerShard = 8;
constexpr int64_t kInitialBalance = 1000;
constexpr int kWorkersDefault = 8;  // client threads, each one transfer at a time
constexpr int kWorkersMax = 256;
constexpr int64_t kAmountMax = 10;
constexpr int kRecoveryBoundMsDefault = 5000;
constexpr int kRandomKillSecondsDefault = 15;
constexpr int kRandomKillGapMsMin = 200;
constexpr int kRandomKillGapMsMax = 1200;
constexpr int kFireTimeoutMs = 10000;     // an armed point must fire within this
constexpr int kObserveTimeoutMs = 20000;  // keep watching past the bound to report the time
constexpr int kQuiesceTimeoutMs = 20000;  // in-doubt empty / markers readable after the run
constexpr int kWarmCommitsMin = 20;       // commits before a point is armed
constexpr int kWarmTimeoutMs = 15000;
constexpr size_t kReadBatchKeysMax = 256;  // Gets in flight in one verification transaction
constexpr size_t kExamplesMax = 5;         // violations quoted per kind
constexpr int kPollMs = 10;
constexpr int kCrashExitStatus = 86;  // fp::kCrashExitCode

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  int out = 0;
  auto [p, ec] = std::from_chars(v, v + std::strlen(v), out);
  if (ec != std::errc() || *p != '\0' || out <= 0) {
    std::cerr << "crash matrix: ignoring bad " << name << "=" << v << "\n";
    return fallback;
  }
  return out;
}

int Workers() { return std::min(EnvInt("DTX_CRASH_MATRIX_CLIENTS", kWorkersDefault), kWorkersMax); }

int RecoveryBoundMs() { return EnvInt("DTX_CRASH_MATRIX_BOUND_MS", kRecoveryBoundMsDefault); }

int64_t Ms(Clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t CountOf(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

// ---------------------------------------------------------------------------
// The result table.

struct Row {
  std::string cell;
  std::string node;
  bool pass = false;
  int64_t restart_ms = -1;   // crash -> supervisor started the node again (-1: n/a)
  int64_t recovery_ms = -1;  // crash -> ready + no in-doubt + a new transfer committed
  bool random = false;       // the random-kill run (printed last)
  uint64_t committed = 0, aborted = 0, unknown = 0, not_committed = 0;
  std::string note;
};

std::vector<Row>& Rows() {
  static std::vector<Row> rows;
  return rows;
}

std::string FormatTable() {
  std::ostringstream out;
  out << "Crash matrix: 3 participants, 1 coordinator, bank workload (" << Workers() << " clients, "
      << kParticipants * kAccountsPerShard << " accounts), recovery bound " << RecoveryBoundMs()
      << " ms\n\n";
  out << "| cell | node | result | restart ms | recovery ms | after restart ms | committed | "
         "aborted | unknown | not committed | note |\n";
  out << "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
  auto num = [](int64_t v) { return v < 0 ? std::string("-") : std::to_string(v); };
  std::vector<Row> rows = Rows();
  std::stable_sort(rows.begin(), rows.end(),
                   [](const Row& a, const Row& b) { return !a.random && b.random; });
  for (const Row& r : rows) {
    int64_t after = r.restart_ms >= 0 && r.recovery_ms >= 0 ? r.recovery_ms - r.restart_ms : -1;
    out << "| " << r.cell << " | " << r.node << " | " << (r.pass ? "pass" : "FAIL") << " | "
        << num(r.restart_ms) << " | " << num(r.recovery_ms) << " | " << num(after) << " | "
        << r.committed << " | " << r.aborted << " | " << r.unknown << " | " << r.not_committed
        << " | " << r.note << " |\n";
  }
  out << "\nrestart ms: crash (random run: the last kill) -> the supervisor had started the "
         "node (every node) again; it includes the supervisor's restart backoff, 100 ms doubling "
         "for a node that dies again within 10 s of its start. recovery ms: crash -> the node "
         "answers, no participant is in doubt, and transfers begun after the crash committed on "
         "the crashed participant (every participant for coordinator cells and the random run). "
         "after restart ms = recovery - restart. Bound: recovery ms for the failpoint cells; "
         "after restart ms for the random run (whose backoff grows with the kills). Outcomes "
         "are what the client was told; unknown ones were resolved by their markers; \"not "
         "committed\" is Unavailable/Timeout without outcome_unknown (the client promises "
         "nothing was committed, and that is checked).\n";
  return out.str();
}

class TableEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    if (Rows().empty()) return;
    std::string table = FormatTable();
    std::cout << "\n" << table << std::flush;
    const char* path = std::getenv("DTX_CRASH_MATRIX_OUT");
    if (path != nullptr && *path != '\0') {
      std::ofstream out(path, std::ios::trunc);
      out << table;
      if (!out) std::cerr << "crash matrix: cannot write " << path << "\n";
    }
  }
};

[[maybe_unused]] ::testing::Environment* const kTableEnv =
    ::testing::AddGlobalTestEnvironment(new TableEnvironment);

// ---------------------------------------------------------------------------
// A cluster with a bank and a transfer workload that remembers every attempt.

enum class Outcome {
  kCommitted,     // Commit returned OK
  kAborted,       // Commit returned Aborted
  kUnknown,       // Unavailable with outcome_unknown(): resolved by the markers
  kNotCommitted,  // Unavailable/Timeout without outcome_unknown(): the client's promise
                  // is that nothing was committed
};

struct Attempt {
  uint64_t id = 0;
  int from = 0, to = 0;  // account indexes (on different participants)
  int64_t amount = 0;
  std::string markers[2];  // one marker key on each participant touched
  uint32_t shards = 0;     // bit per participant touched
  Outcome outcome = Outcome::kNotCommitted;
  std::string detail;  // the commit status, for reports
  Clock::time_point start, end;
};

struct HealthTimes {
  std::optional<Clock::time_point> ready;   // every watched node answered GetStatus
  std::optional<Clock::time_point> clear;   // no participant listed an in-doubt txn
  std::optional<Clock::time_point> commit;  // transfers begun after `since` covered the mask
  bool done() const { return ready && clear && commit; }
  Clock::time_point last() const { return std::max({*ready, *clear, *commit}); }
  // "answers +a, in-doubt empty +b, new commits +c ms" after `t0`.
  std::string Breakdown(Clock::time_point t0) const {
    auto at = [&](const std::optional<Clock::time_point>& t) {
      return t ? "+" + std::to_string(Ms(*t - t0)) : std::string("never");
    };
    return "answers " + at(ready) + ", in-doubt empty " + at(clear) + ", new commits " +
           at(commit) + " ms";
  }
  std::string Missing() const {
    std::string s;
    if (!ready) s += " node-not-answering";
    if (!clear) s += " in-doubt-not-empty";
    if (!commit) s += " no-new-commit";
    return s;
  }
};

// Owns a LocalCluster, a Client and the workload threads. All methods are
// for the test's thread; the workers only touch the client and, under mu_,
// attempts_.
class BankCluster {
 public:
  BankCluster() = default;
  ~BankCluster() {
    StopWorkload();
    client_.reset();
    cluster_.Down();
  }
  BankCluster(const BankCluster&) = delete;
  BankCluster& operator=(const BankCluster&) = delete;

  Status Start() {
    LocalCluster::Options o;
    o.participants = kParticipants;
    o.participant_bin = DTX_PARTICIPANT_PATH;
    o.coordinator_bin = DTX_COORDINATOR_PATH;
    DTX_RETURN_IF_ERROR(cluster_.Up(o));
    ClientOptions co = WithClusterTls(cluster_.dir(), {});
    co.coordinators = {cluster_.coordinator_address()};
    co.request_timeout_ms = 2000;
    co.commit_timeout_ms = 3000;
    auto c = Client::Connect(co);
    if (!c.ok()) return c.status();
    client_ = std::move(*c);
    if (client_->participants().size() != static_cast<size_t>(kParticipants)) {
      return Status::Internal("shard map has " + std::to_string(client_->participants().size()) +
                              " participants");
    }
    for (int shard = 0; shard < kParticipants; ++shard) {
      for (int i = 0; i < kAccountsPerShard; ++i) {
        accounts_.push_back(
            KeyOnShard(shard, "acct/" + std::to_string(shard) + "." + std::to_string(i)));
      }
    }
    Status s = client_->Run([&](Transaction& tx) -> Status {
      for (const auto& a : accounts_)
        DTX_RETURN_IF_ERROR(tx.Put(a, std::to_string(kInitialBalance)));
      return Status::OK();
    });
    if (!s.ok()) return Status::Internal("loading the accounts: " + s.ToString());
    balances_.assign(accounts_.size(), kInitialBalance);
    return Status::OK();
  }

  LocalCluster& cluster() { return cluster_; }

  // The shard (index in the shard map) of a participant node.
  int ShardOfNode(const std::string& node) const {
    const tools::NodeEntry* e = cluster_.config().Find(node);
    if (e == nullptr) return -1;
    auto ps = client_->participants();
    for (size_t i = 0; i < ps.size(); ++i) {
      if (ps[i] == e->address) return static_cast<int>(i);
    }
    return -1;
  }

  void StartWorkload() {
    stop_ = false;
    for (int i = 0; i < Workers(); ++i) {
      uint64_t seed = worker_seed_++;
      workers_.emplace_back([this, seed] { Worker(seed); });
    }
  }

  void StopWorkload() {
    stop_ = true;
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  size_t CommittedCount() {
    std::lock_guard<std::mutex> l(mu_);
    size_t n = 0;
    for (const auto& a : attempts_) n += a.outcome == Outcome::kCommitted ? 1 : 0;
    return n;
  }

  // When transfers begun after `since` that committed first touched every
  // participant in `mask` (their end time), if they have.
  std::optional<Clock::time_point> CommitsCovering(Clock::time_point since, uint32_t mask) {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<const Attempt*> hits;
    for (const auto& a : attempts_) {
      if (a.outcome == Outcome::kCommitted && a.start > since && (a.shards & mask) != 0) {
        hits.push_back(&a);
      }
    }
    std::sort(hits.begin(), hits.end(),
              [](const Attempt* x, const Attempt* y) { return x->end < y->end; });
    uint32_t covered = 0;
    for (const Attempt* a : hits) {
      covered |= a->shards & mask;
      if (covered == mask) return a->end;
    }
    return std::nullopt;
  }

  // Watches until every node in `nodes` answers, no participant is in doubt
  // and committed transfers begun after `since` cover `mask`; returns when
  // each first held (after `ready`, for the in-doubt check), or what did not.
  HealthTimes WaitHealthy(const std::vector<std::string>& nodes, Clock::time_point since,
                          uint32_t mask, Clock::time_point deadline) {
    HealthTimes t;
    const tools::AdminTimeouts quick{.connect_timeout_ms = 200, .recv_timeout_ms = 1000};
    std::vector<bool> up(nodes.size(), false);
    for (;;) {
      if (!t.ready) {
        bool all = true;
        for (size_t i = 0; i < nodes.size(); ++i) {
          if (!up[i])
            up[i] = tools::GetNodeStatus(*cluster_.config().Find(nodes[i]), cluster_.creds(), quick)
                        .ok();
          all = all && up[i];
        }
        if (all) t.ready = Clock::now();
      }
      if (t.ready && !t.clear) {
        bool empty = true;
        for (const auto& n : cluster_.config().participants()) {
          auto list = tools::ListNodeInDoubt(n, cluster_.creds(), quick);
          empty = empty && list.ok() && list->empty();
        }
        if (empty) t.clear = Clock::now();
      }
      if (!t.commit) t.commit = CommitsCovering(since, mask);
      if (t.done() || Clock::now() > deadline) return t;
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs));
    }
  }

  struct Verdict {
    std::vector<std::string> failures;
    uint64_t committed = 0, aborted = 0, unknown = 0, not_committed = 0;
    uint64_t unknown_committed = 0;
  };

  // After StopWorkload(): every check on the attempts since the last Verify.
  // On success the balances become the base of the next cell.
  Verdict Verify() {
    Verdict v;
    auto deadline = Clock::now() + std::chrono::milliseconds(kQuiesceTimeoutMs);
    // 1. Nobody in doubt (participants keep asking the coordinator until
    //    answered, so this settles once every node is back).
    std::string last_list;
    for (;;) {
      bool empty = true;
      last_list.clear();
      for (const auto& n : cluster_.config().participants()) {
        auto list = tools::ListNodeInDoubt(n, cluster_.creds());
        if (!list.ok()) {
          empty = false;
          last_list += n.name + ": " + list.status().ToString() + "; ";
          continue;
        }
        for (const auto& tx : *list) {
          empty = false;
          last_list += n.name + " " + tools::TxIdHex(tx.txid) + " age " +
                       std::to_string(tx.age_ms) + " ms; ";
        }
      }
      if (empty) break;
      if (Clock::now() > deadline) {
        v.failures.push_back("still in doubt " + std::to_string(kQuiesceTimeoutMs) +
                             " ms after the workload stopped: " + last_list);
        break;
      }
      std::this_thread::sleep_for(100ms);
    }

    // 2. Markers: all-or-nothing, and as the client was told.
    std::vector<Attempt> attempts;
    {
      std::lock_guard<std::mutex> l(mu_);
      attempts = attempts_;
    }
    std::vector<std::string> keys;
    for (const auto& a : attempts) {
      keys.push_back(a.markers[0]);
      keys.push_back(a.markers[1]);
    }
    std::map<std::string, bool> present;
    Status rs = ReadKeys(keys, deadline, &present);
    if (!rs.ok()) {
      v.failures.push_back("cannot read the markers: " + rs.ToString());
      return v;
    }
    std::vector<std::string> partial, lost, leaked;
    std::vector<int64_t> expected = balances_;
    for (const auto& a : attempts) {
      int n = (present[a.markers[0]] ? 1 : 0) + (present[a.markers[1]] ? 1 : 0);
      std::string what = "transfer " + std::to_string(a.id) + " (" + a.markers[0] + ", " +
                         a.markers[1] + "; told: " + a.detail + ")";
      switch (a.outcome) {
        case Outcome::kCommitted: ++v.committed; break;
        case Outcome::kAborted: ++v.aborted; break;
        case Outcome::kUnknown: ++v.unknown; break;
        case Outcome::kNotCommitted: ++v.not_committed; break;
      }
      if (n == 1) {
        partial.push_back(what + " has its marker on " +
                          (present[a.markers[0]] ? "the first" : "the second") +
                          " participant only");
      } else if (a.outcome == Outcome::kCommitted && n == 0) {
        lost.push_back(what);
      } else if ((a.outcome == Outcome::kAborted || a.outcome == Outcome::kNotCommitted) &&
                 n == 2) {
        leaked.push_back(what);
      }
      if (n == 2) {
        if (a.outcome == Outcome::kUnknown) ++v.unknown_committed;
        expected[a.from] -= a.amount;
        expected[a.to] += a.amount;
      }
    }
    auto quote = [&](const std::string& title, const std::vector<std::string>& list) {
      if (list.empty()) return;
      std::string s = std::to_string(list.size()) + " " + title + ":";
      for (size_t i = 0; i < list.size() && i < kExamplesMax; ++i) s += "\n    " + list[i];
      v.failures.push_back(s);
    };
    quote("transfers visible on one participant only (not all-or-nothing)", partial);
    quote("transfers told COMMITTED but not visible", lost);
    quote("transfers told ABORTED / not committed but visible", leaked);

    // 3. Balances: a validated read-only transaction over every account.
    std::vector<int64_t> actual(accounts_.size(), 0);
    Status bs = client_->Run(
        [&](Transaction& tx) -> Status {
          for (size_t i = 0; i < accounts_.size(); ++i) {
            auto r = tx.Get(accounts_[i]);
            if (!r.ok()) return r.status();
            if (!r->has_value()) return Status::Internal(accounts_[i] + " is missing");
            auto p = ParseBalance(**r);
            if (!p) return Status::Internal(accounts_[i] + " holds \"" + **r + "\"");
            actual[i] = *p;
          }
          return Status::OK();
        },
        20);
    if (!bs.ok()) {
      v.failures.push_back("cannot read the balances: " + bs.ToString());
      return v;
    }
    int64_t total = 0;
    std::vector<std::string> wrong;
    for (size_t i = 0; i < accounts_.size(); ++i) {
      total += actual[i];
      if (actual[i] != expected[i]) {
        wrong.push_back(accounts_[i] + " = " + std::to_string(actual[i]) + ", expected " +
                        std::to_string(expected[i]) + " from the transfers whose markers exist");
      }
    }
    const int64_t want_total = kInitialBalance * static_cast<int64_t>(accounts_.size());
    if (total != want_total) {
      v.failures.push_back("total balance " + std::to_string(total) +
                           " != " + std::to_string(want_total));
    }
    quote("balances that do not match the visible transfers", wrong);

    // 4. The operator's view agrees.
    CommandResult id = cluster_.Dtxctl({"in-doubt"}, 10000);
    if (id.exit_code != 0 || id.out.find("\n0 in-doubt transaction") == std::string::npos) {
      v.failures.push_back("dtxctl in-doubt: " + id.Describe());
    }

    if (v.failures.empty()) {
      balances_ = actual;
      std::lock_guard<std::mutex> l(mu_);
      attempts_.clear();
    }
    return v;
  }

  std::string SupervisorLog() const { return ReadFile(cluster_.dir() + "/supervisor.log"); }

 private:
  static std::optional<int64_t> ParseBalance(const std::string& s) {
    int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
  }

  std::string KeyOnShard(int shard, const std::string& prefix) const {
    for (int i = 0;; ++i) {
      std::string k = prefix + "-" + std::to_string(i);
      if (client_->ShardOf(k) == static_cast<size_t>(shard)) return k;
    }
  }

  void Worker(uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto pick = [&](uint64_t n) { return static_cast<int>(rng() % n); };
    while (!stop_.load()) {
      Attempt a;
      int sa = pick(kParticipants);
      int sb = (sa + 1 + pick(kParticipants - 1)) % kParticipants;
      a.from = sa * kAccountsPerShard + pick(kAccountsPerShard);
      a.to = sb * kAccountsPerShard + pick(kAccountsPerShard);
      a.amount = 1 + pick(kAmountMax);
      a.shards = (1u << sa) | (1u << sb);
      a.id = next_id_.fetch_add(1);
      a.markers[0] = KeyOnShard(sa, "tx/" + std::to_string(a.id) + "/a");
      a.markers[1] = KeyOnShard(sb, "tx/" + std::to_string(a.id) + "/b");
      a.start = Clock::now();
      auto tx = client_->Begin();
      if (!tx.ok()) {
        std::this_thread::sleep_for(10ms);
        continue;
      }
      auto fa = tx->Get(accounts_[a.from]);
      auto fb = fa.ok() ? tx->Get(accounts_[a.to]) : fa;
      std::optional<int64_t> ba, bb;
      if (fa.ok() && fb.ok() && fa->has_value() && fb->has_value()) {
        ba = ParseBalance(**fa);
        bb = ParseBalance(**fb);
      }
      if (!ba || !bb) {
        // Nothing was sent to the coordinator: not an attempt to check.
        (void)tx->Abort();
        std::this_thread::sleep_for(10ms);
        continue;
      }
      Status ps = tx->Put(accounts_[a.from], std::to_string(*ba - a.amount));
      if (ps.ok()) ps = tx->Put(accounts_[a.to], std::to_string(*bb + a.amount));
      if (ps.ok()) ps = tx->Put(a.markers[0], "1");
      if (ps.ok()) ps = tx->Put(a.markers[1], "1");
      if (!ps.ok()) {
        std::cerr << "crash matrix: Put failed: " << ps.ToString() << "\n";
        (void)tx->Abort();
        continue;
      }
      Status s = tx->Commit();
      a.end = Clock::now();
      a.detail = s.ok() ? "COMMITTED" : s.ToString();
      if (s.ok()) {
        a.outcome = Outcome::kCommitted;
      } else if (s.IsAborted()) {
        a.outcome = Outcome::kAborted;
      } else if (tx->outcome_unknown()) {
        a.outcome = Outcome::kUnknown;
      } else {
        a.outcome = Outcome::kNotCommitted;
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        attempts_.push_back(std::move(a));
      }
      if (!s.ok() && !s.IsAborted()) std::this_thread::sleep_for(10ms);
    }
  }

  // Reads `keys` (committed values, straight from their participants) into
  // `present` (true: the key exists), retrying unreadable ones until
  // `deadline`.
  Status ReadKeys(const std::vector<std::string>& keys, Clock::time_point deadline,
                  std::map<std::string, bool>* present) {
    std::vector<std::string> pending = keys;
    Status last = Status::OK();
    while (!pending.empty()) {
      std::vector<std::string> retry;
      for (size_t off = 0; off < pending.size(); off += kReadBatchKeysMax) {
        size_t n = std::min(kReadBatchKeysMax, pending.size() - off);
        auto tx = client_->BeginAsync();
        if (!tx.ok()) {
          last = tx.status();
          retry.insert(retry.end(), pending.begin() + off, pending.begin() + off + n);
          continue;
        }
        struct Batch {
          std::mutex mu;
          std::condition_variable cv;
          size_t left = 0;
          std::vector<std::optional<GetResult>> results;
        };
        auto b = std::make_shared<Batch>();
        b->left = n;
        b->results.resize(n);
        for (size_t i = 0; i < n; ++i) {
          (*tx)->Get(pending[off + i], [b, i](GetResult r) {
            std::lock_guard<std::mutex> l(b->mu);
            b->results[i] = std::move(r);
            if (--b->left == 0) b->cv.notify_all();
          });
        }
        {
          std::unique_lock<std::mutex> l(b->mu);
          b->cv.wait(l, [&] { return b->left == 0; });
        }
        (void)(*tx)->Abort();
        std::lock_guard<std::mutex> l(b->mu);
        for (size_t i = 0; i < n; ++i) {
          const GetResult& r = *b->results[i];
          if (r.ok()) {
            (*present)[pending[off + i]] = r->has_value();
          } else {
            last = r.status();
            retry.push_back(pending[off + i]);
          }
        }
      }
      if (retry.empty()) break;
      if (Clock::now() > deadline) {
        return Status::Timeout(std::to_string(retry.size()) + " keys unreadable, e.g. " +
                               retry.front() + ": " + last.ToString());
      }
      std::this_thread::sleep_for(100ms);
      pending = std::move(retry);
    }
    return Status::OK();
  }

  LocalCluster cluster_;
  std::unique_ptr<Client> client_;
  std::vector<std::string> accounts_;  // index / kAccountsPerShard = shard
  std::vector<int64_t> balances_;      // verified at the end of the previous cell
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> next_id_{1};
  uint64_t worker_seed_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::vector<Attempt> attempts_;  // GUARDED_BY(mu_)
};

void FillCounts(const BankCluster::Verdict& v, Row* row) {
  row->committed = v.committed;
  row->aborted = v.aborted;
  row->unknown = v.unknown;
  row->not_committed = v.not_committed;
  if (v.unknown > 0) {
    row->note += (row->note.empty() ? "" : "; ") + std::to_string(v.unknown_committed) + " of " +
                 std::to_string(v.unknown) + " unknown committed";
  }
}

// ---------------------------------------------------------------------------
// The failpoint cells.

struct Cell {
  const char* point;
  const char* node;
};

void PrintTo(const Cell& c, std::ostream* os) { *os << c.point << " on " << c.node; }

// Participant and coordinator cells interleaved (and participant cells spread
// over the three participants) so that the supervisor's restart backoff for a
// node that dies again within 10 s stays near its minimum.
const Cell kCells[] = {
    {"participant.prepare.before_log", "participant-0"},
    {"coordinator.votes.after_all", "coordinator-0"},
    {"participant.prepare.after_log", "participant-1"},
    {"coordinator.decision.before_log", "coordinator-0"},
    {"participant.prepare.after_vote", "participant-2"},
    {"coordinator.decision.after_log", "coordinator-0"},
    {"participant.commit.before_log", "participant-0"},
    {"coordinator.phase2.after_first_commit", "coordinator-0"},
    {"participant.commit.after_log", "participant-1"},
    {"coordinator.end.before_log", "coordinator-0"},
    {"participant.commit.after_apply", "participant-2"},
    {"participant.commit.before_ack", "participant-0"},
};

class CrashMatrixTest : public ::testing::TestWithParam<Cell> {
 protected:
  static void TearDownTestSuite() { bank_.reset(); }

  void TearDown() override {
    if (HasFailure() && bank_ != nullptr) {
      // The next cell gets a fresh cluster.
      std::cerr << bank_->cluster().LogTails(40);
      bank_.reset();
    }
  }

  // Runs one cell; failures are returned (and the row filled), never thrown.
  std::vector<std::string> RunCell(const Cell& cell, Row* row) {
    std::vector<std::string> f;
    if (bank_ == nullptr) {
      bank_ = std::make_unique<BankCluster>();
      Status s = bank_->Start();
      if (!s.ok()) {
        f.push_back("cluster start: " + s.ToString());
        return f;
      }
      row->note = "fresh cluster";
    }
    BankCluster& bank = *bank_;
    const std::string node = cell.node;
    const bool is_participant = node.starts_with("participant-");
    const uint32_t mask = is_participant ? 1u << bank.ShardOfNode(node) : (1u << kParticipants) - 1;
    const std::string exit_line =
        "restarted " + node + " (exit status " + std::to_string(kCrashExitStatus) + ")";
    std::string log_before = bank.SupervisorLog();
    size_t restarts_before = CountOf(log_before, "restarted ");
    size_t exits_before = CountOf(log_before, exit_line);

    bank.StartWorkload();
    struct StopGuard {
      BankCluster& b;
      ~StopGuard() { b.StopWorkload(); }
    } stop_guard{bank};

    auto warm_deadline = Clock::now() + std::chrono::milliseconds(kWarmTimeoutMs);
    while (bank.CommittedCount() < kWarmCommitsMin && Clock::now() < warm_deadline) {
      std::this_thread::sleep_for(20ms);
    }
    if (bank.CommittedCount() < kWarmCommitsMin) {
      f.push_back("the workload did not get going: " + std::to_string(bank.CommittedCount()) +
                  " commits in " + std::to_string(kWarmTimeoutMs) + " ms");
      return f;
    }

    pid_t old_pid = bank.cluster().NodePid(node);
    if (old_pid <= 0) {
      f.push_back(node + " has no pid before the cell");
      return f;
    }
    CommandResult arm = bank.cluster().Dtxctl({"failpoint", node, cell.point, "crash"}, 10000);
    if (arm.exit_code != 0) {
      f.push_back("dtxctl failpoint: " + arm.Describe());
      return f;
    }
    auto fire_deadline = Clock::now() + std::chrono::milliseconds(kFireTimeoutMs);
    while (tools::ProcessAlive(old_pid) && Clock::now() < fire_deadline) {
      std::this_thread::sleep_for(1ms);
    }
    if (tools::ProcessAlive(old_pid)) {
      f.push_back(std::string(cell.point) + " did not fire within " +
                  std::to_string(kFireTimeoutMs) + " ms under load");
      (void)bank.cluster().Dtxctl({"failpoint", node, cell.point, "off"}, 10000);
      return f;
    }
    const Clock::time_point crash = Clock::now();

    // The supervisor starts it again (a new pid, the node's own command line).
    const auto observe_deadline = crash + std::chrono::milliseconds(kObserveTimeoutMs);
    std::optional<Clock::time_point> restarted;
    while (Clock::now() < observe_deadline) {
      pid_t p = bank.cluster().NodePid(node);
      if (p > 0 && p != old_pid && tools::IsNodeProcess(p, node)) {
        restarted = Clock::now();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs / 2));
    }
    if (!restarted) {
      f.push_back("the supervisor did not restart " + node + " within " +
                  std::to_string(kObserveTimeoutMs) + " ms");
      return f;
    }
    row->restart_ms = Ms(*restarted - crash);
    HealthTimes h = bank.WaitHealthy({node}, crash, mask, observe_deadline);
    if (!h.done()) {
      f.push_back("not recovered " + std::to_string(kObserveTimeoutMs) +
                  " ms after the crash:" + h.Missing());
    } else {
      row->recovery_ms = Ms(h.last() - crash);
      row->note += (row->note.empty() ? "" : "; ") + h.Breakdown(crash);
      if (row->recovery_ms > RecoveryBoundMs()) {
        f.push_back("recovery took " + std::to_string(row->recovery_ms) + " ms > bound " +
                    std::to_string(RecoveryBoundMs()) + " ms (" + h.Breakdown(crash) + ")");
      }
    }
    bank.StopWorkload();

    BankCluster::Verdict v = bank.Verify();
    FillCounts(v, row);
    f.insert(f.end(), v.failures.begin(), v.failures.end());

    // Exactly one restart in the cell: the armed node, by the failpoint.
    auto log_deadline = Clock::now() + 2s;
    std::string log = bank.SupervisorLog();
    while (CountOf(log, exit_line) == exits_before && Clock::now() < log_deadline) {
      std::this_thread::sleep_for(50ms);
      log = bank.SupervisorLog();
    }
    if (CountOf(log, exit_line) != exits_before + 1) {
      f.push_back("supervisor.log has no new \"" + exit_line + "\"");
    }
    if (CountOf(log, "restarted ") != restarts_before + 1) {
      f.push_back("supervisor.log shows " +
                  std::to_string(CountOf(log, "restarted ") - restarts_before) +
                  " restarts in this cell (expected only " + node + "):\n" +
                  log.substr(std::min(log.size(), log_before.size())));
    }
    return f;
  }

  static std::unique_ptr<BankCluster> bank_;
};

std::unique_ptr<BankCluster> CrashMatrixTest::bank_;

TEST_P(CrashMatrixTest, CrashAtFailpointRecoversAllOrNothing) {
  const Cell& cell = GetParam();
  Row row;
  row.cell = cell.point;
  row.node = cell.node;
  std::vector<std::string> failures = RunCell(cell, &row);
  for (const auto& f : failures) ADD_FAILURE() << cell.point << " on " << cell.node << ": " << f;
  row.pass = failures.empty();
  if (!failures.empty()) {
    std::string first = failures.front().substr(0, failures.front().find('\n'));
    row.note += (row.note.empty() ? "" : "; ") + first;
  }
  Rows().push_back(row);
}

std::string CellName(const ::testing::TestParamInfo<Cell>& info) {
  std::string s = info.param.point;
  for (char& c : s) {
    if (c == '.') c = '_';
  }
  return s;
}

INSTANTIATE_TEST_SUITE_P(Failpoints, CrashMatrixTest, ::testing::ValuesIn(kCells), CellName);

// ---------------------------------------------------------------------------
// Random kills: SIGKILL to random nodes (coordinator included) at random
// times for a fixed duration, seeded; then heal and the same checks.

TEST(CrashMatrixRandomTest, RandomKillsUnderLoadRecoverAllOrNothing) {
  const int seconds = EnvInt("DTX_CRASH_MATRIX_RANDOM_S", kRandomKillSecondsDefault);
  const uint64_t seed = static_cast<uint64_t>(
      EnvInt("DTX_CRASH_MATRIX_SEED", static_cast<int>(std::random_device{}() & 0x7fffffff)));
  std::cout << "random-kill run: seed " << seed << " (DTX_CRASH_MATRIX_SEED=" << seed
            << ": the same kill times and picks; process timing still varies), " << seconds << " s"
            << std::endl;
  Row row;
  row.cell = "random SIGKILL " + std::to_string(seconds) + " s";
  row.node = "any";
  row.random = true;
  std::vector<std::string> f;

  BankCluster bank;
  Status s = bank.Start();
  ASSERT_TRUE(s.ok()) << s.ToString();
  std::vector<std::string> nodes;
  for (const auto& n : bank.cluster().config().nodes()) nodes.push_back(n.name);

  bank.StartWorkload();
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> gap_ms(kRandomKillGapMsMin, kRandomKillGapMsMax);
  std::map<std::string, int> kills;
  std::string schedule;
  auto start = Clock::now();
  auto end = start + std::chrono::seconds(seconds);
  std::optional<Clock::time_point> last_kill;
  for (;;) {
    auto wake = Clock::now() + std::chrono::milliseconds(gap_ms(rng));
    if (wake >= end) break;
    std::this_thread::sleep_until(wake);
    // A random node among those running now (one still in its restart
    // backoff cannot be killed).
    std::vector<std::pair<std::string, pid_t>> live;
    for (const auto& n : nodes) {
      pid_t p = bank.cluster().NodePid(n);
      if (p > 0 && tools::IsNodeProcess(p, n)) live.emplace_back(n, p);
    }
    size_t choice = static_cast<size_t>(rng() % 1024);
    if (live.empty()) continue;
    const auto& [name, pid] = live[choice % live.size()];
    if (::kill(pid, SIGKILL) == 0) {
      last_kill = Clock::now();
      ++kills[name];
      schedule += " +" + std::to_string(Ms(*last_kill - start)) + "ms:" + name;
    }
  }
  std::cout << "kills:" << schedule << std::endl;
  std::string note = "seed " + std::to_string(seed) + ", kills";
  for (const auto& [n, k] : kills) note += " " + n + "x" + std::to_string(k);
  row.note = note;
  if (!last_kill) f.push_back("no node was killed");

  // Heal: the supervisor has every node running again (after its backoff);
  // then every node answers, nobody is in doubt, and transfers begun after
  // the last kill commit on every participant.
  if (last_kill) {
    const auto deadline = *last_kill + std::chrono::milliseconds(kObserveTimeoutMs);
    std::optional<Clock::time_point> all_running;
    while (!all_running && Clock::now() < deadline) {
      bool all = true;
      for (const auto& n : nodes) {
        pid_t p = bank.cluster().NodePid(n);
        all = all && p > 0 && tools::IsNodeProcess(p, n);
      }
      if (all) {
        all_running = Clock::now();
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(kPollMs / 2));
      }
    }
    if (!all_running) {
      f.push_back("the supervisor did not have every node running " +
                  std::to_string(kObserveTimeoutMs) + " ms after the last kill");
    } else {
      row.restart_ms = Ms(*all_running - *last_kill);
      HealthTimes h = bank.WaitHealthy(nodes, *last_kill, (1u << kParticipants) - 1, deadline);
      if (!h.done()) {
        f.push_back("not healed " + std::to_string(kObserveTimeoutMs) +
                    " ms after the last kill:" + h.Missing());
      } else {
        row.recovery_ms = Ms(h.last() - *last_kill);
        row.note += "; " + h.Breakdown(*last_kill);
        int64_t after = Ms(h.last() - *all_running);
        if (after > RecoveryBoundMs()) {
          f.push_back("healing took " + std::to_string(after) +
                      " ms after every node was running again > bound " +
                      std::to_string(RecoveryBoundMs()) + " ms");
        }
      }
    }
  }
  bank.StopWorkload();
  BankCluster::Verdict v = bank.Verify();
  FillCounts(v, &row);
  f.insert(f.end(), v.failures.begin(), v.failures.end());
  std::string log = bank.SupervisorLog();
  int total_kills = 0;
  for (const auto& [n, k] : kills) total_kills += k;
  auto log_deadline = Clock::now() + 2s;
  while (CountOf(log, "(killed by signal 9) pid=") < static_cast<size_t>(total_kills) &&
         Clock::now() < log_deadline) {
    std::this_thread::sleep_for(50ms);
    log = bank.SupervisorLog();
  }
  size_t killed = CountOf(log, "(killed by signal 9) pid=");
  if (killed != static_cast<size_t>(total_kills)) {
    f.push_back("supervisor.log shows " + std::to_string(killed) +
                " restarts after SIGKILL, expected " + std::to_string(total_kills));
  }
  size_t other = CountOf(log, "restarted ") - killed;
  if (other != 0) {
    f.push_back(std::to_string(other) + " restarts of nodes that died on their own");
  }

  for (const auto& msg : f) ADD_FAILURE() << "random kills (seed " << seed << "): " << msg;
  row.pass = f.empty();
  if (!f.empty()) row.note += "; " + f.front().substr(0, f.front().find('\n'));
  Rows().push_back(row);
  if (!f.empty()) std::cerr << bank.cluster().LogTails(40);
}

}  // namespace
}  // namespace dtx::testing
