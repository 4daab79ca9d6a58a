// Observability end to end on a real 3-participant cluster: the coordinator's
// commit counter moves by exactly the commits the client saw and every
// histogram every node exposes is well-formed; `dtxctl trace` names the
// participant and the phase a stuck transaction waits in, and still prints
// the others when a node is killed (marking it); a participant that crashed
// after voting YES logs the txid of every in-doubt transaction it resolved;
// `dtxctl metrics`, `dtxctl top` and `cluster up --no-obs`.
#include <signal.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/cluster_fixture.h"
#include "tools/metrics_text.h"

namespace dtx::testing {
namespace {

using ObsTest = ClusterTest;
using Json = nlohmann::json;

// `dtxctl trace --json` output parsed; an empty object if it is not one
// JSON object.
Json TraceJson(const CommandResult& r) {
  Json j = Json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  return j.is_object() ? j : Json::object();
}

// Checks the text-format exposition of one node: every histogram series has
// cumulative, non-decreasing buckets with increasing bounds ending in
// le="+Inf", `_count` equal to the +Inf bucket, and a `_sum`. Returns the
// problems found ("" if none) and counts the histogram series checked.
std::string CheckHistograms(const std::string& node, const tools::Exposition& e,
                            int* series_checked) {
  std::ostringstream problems;
  struct Series {
    std::vector<std::pair<double, double>> buckets;  // file order
    std::optional<double> sum, count;
  };
  for (const auto& [family, type] : e.types) {
    if (type != "histogram") continue;
    std::map<std::map<std::string, std::string>, Series> series;
    for (const tools::MetricSample& s : e.samples) {
      std::map<std::string, std::string> labels = s.labels;
      if (s.name == family + "_bucket") {
        auto le = labels.find("le");
        if (le == labels.end()) {
          problems << node << ": " << family << "_bucket without le\n";
          continue;
        }
        const double bound = le->second == "+Inf" ? INFINITY : std::stod(le->second);
        labels.erase("le");
        series[labels].buckets.emplace_back(bound, s.value);
      } else if (s.name == family + "_sum") {
        series[labels].sum = s.value;
      } else if (s.name == family + "_count") {
        series[labels].count = s.value;
      }
    }
    if (series.empty()) problems << node << ": histogram " << family << " has no series\n";
    for (const auto& [labels, s] : series) {
      ++*series_checked;
      std::string id = family;
      for (const auto& [k, v] : labels) id += " " + k + "=" + v;
      if (s.buckets.empty()) {
        problems << node << ": " << id << " has no buckets\n";
        continue;
      }
      for (size_t i = 1; i < s.buckets.size(); ++i) {
        if (!(s.buckets[i].first > s.buckets[i - 1].first))
          problems << node << ": " << id << " bounds not increasing\n";
        if (s.buckets[i].second < s.buckets[i - 1].second)
          problems << node << ": " << id << " buckets decrease\n";
      }
      if (!std::isinf(s.buckets.back().first))
        problems << node << ": " << id << " does not end with le=\"+Inf\"\n";
      if (!s.sum) problems << node << ": " << id << " has no _sum\n";
      if (!s.count) {
        problems << node << ": " << id << " has no _count\n";
      } else if (*s.count != s.buckets.back().second) {
        problems << node << ": " << id << " _count " << *s.count << " != +Inf bucket "
                 << s.buckets.back().second << "\n";
      }
    }
  }
  return problems.str();
}

// `dtxctl metrics NODE`, parsed.
Result<tools::Exposition> Scrape(const LocalCluster& cluster, const std::string& node) {
  CommandResult r = cluster.Dtxctl({"metrics", node}, 10000);
  if (r.exit_code != 0) return Status::Unavailable("dtxctl metrics " + node + ": " + r.Describe());
  return tools::ParseExposition(r.out);
}

rpc::TxId WireTxId(uint64_t hi, uint64_t lo) {
  rpc::TxId t;
  t.hi = static_cast<int64_t>(hi);
  t.lo = static_cast<int64_t>(lo);
  return t;
}

std::string Hex(const rpc::TxId& t) {
  return TxId{static_cast<uint64_t>(t.hi), static_cast<uint64_t>(t.lo)}.ToString();
}

// Commits blind writes through a stock CoordinatorClient with a txid of the
// test's choosing (the C++ client picks its own).
Result<rpc::CommitResult> StockCommit(const LocalCluster& cluster, const rpc::TxId& txid,
                                      const std::vector<std::string>& keys,
                                      int recv_timeout_ms = 15000) {
  const std::string coordinator = cluster.coordinator_address();
  auto c = tools::CoordinatorConnection::Open(
      coordinator, {.connect_timeout_ms = 1000, .recv_timeout_ms = recv_timeout_ms},
      cluster.ClientTlsAt(coordinator));
  if (!c.ok()) return c.status();
  rpc::ShardMap map;
  DTX_RETURN_IF_ERROR(tools::RunThrift("GetShardMap", [&] { (*c)->client().GetShardMap(map); }));
  rpc::CommitRequest req;
  req.txid = txid;
  req.shard_map_version = map.version;
  for (const std::string& k : keys) {
    rpc::WriteItem w;
    w.key = k;
    w.__set_value("v-" + k);
    req.writes.push_back(w);
  }
  rpc::CommitResult result;
  DTX_RETURN_IF_ERROR(tools::RunThrift("Commit", [&] { (*c)->client().Commit(result, req); }));
  return result;
}

// --- a. metrics during a workload -----------------------------------------

TEST_F(ObsTest, CommitCounterMovesByExactlyTheClientsCommitsAndHistogramsAreWellFormed) {
  auto before = Scrape(cluster_, "coordinator-0");
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  const double commits_before = tools::SumSamples(*before, "dtx_commits_total");

  // 4 threads of transfers between a few hot keys: some commit, some abort
  // on conflicts; only what the client saw COMMITTED may move the counter.
  constexpr int kThreads = 4;
  constexpr int kPerThread = 60;
  std::atomic<int> committed{0}, aborted{0}, unknown{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto tx = client_->Begin();
        if (!tx.ok()) continue;
        const std::string a =
            KeyOnShard(static_cast<size_t>(i % kParticipants), "hot" + std::to_string(i % 3));
        const std::string b = KeyOnShard(static_cast<size_t>((i + 1 + t) % kParticipants),
                                         "cold" + std::to_string(t));
        auto v = tx->Get(a);
        if (!v.ok()) continue;
        if (!tx->Put(a, "x" + std::to_string(i)).ok() || !tx->Put(b, "y").ok()) continue;
        Status s = tx->Commit();
        if (s.ok()) {
          ++committed;
        } else if (tx->outcome_unknown()) {
          ++unknown;
        } else {
          ++aborted;
        }
      }
    });
  }
  // Scrape every node while the workload runs: the exposition must be
  // well-formed under concurrent updates too.
  int series = 0;
  std::string problems;
  int scrapes_during = 0;
  std::thread scraper([&] {
    while (!done.load()) {
      for (const auto& n : cluster_.config().nodes()) {
        auto e = Scrape(cluster_, n.name);
        if (!e.ok()) {
          problems += e.status().ToString() + "\n";
          continue;
        }
        problems += CheckHistograms(n.name, *e, &series);
        ++scrapes_during;
      }
    }
  });
  for (auto& th : threads) th.join();
  done = true;
  scraper.join();
  EXPECT_EQ("", problems);
  EXPECT_GT(scrapes_during, 0);
  ASSERT_EQ(0, unknown.load()) << "an unknown outcome makes the exact count impossible";
  ASSERT_GT(committed.load(), 0);

  auto after = Scrape(cluster_, "coordinator-0");
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(static_cast<double>(committed.load()),
            tools::SumSamples(*after, "dtx_commits_total") - commits_before)
      << "committed " << committed << ", aborted " << aborted;

  // Every node, at rest: well-formed, and the participants' WAL histograms
  // saw the syncs of this workload.
  for (const auto& n : cluster_.config().nodes()) {
    auto e = Scrape(cluster_, n.name);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    int checked = 0;
    EXPECT_EQ("", CheckHistograms(n.name, *e, &checked));
    EXPECT_GT(checked, 0) << n.name;
    if (n.role == tools::NodeKind::kParticipant) {
      EXPECT_EQ("histogram", e->types["dtx_wal_sync_seconds"]) << n.name;
      EXPECT_EQ("histogram", e->types["dtx_wal_records_per_sync"]) << n.name;
      const double syncs = tools::SumSamples(*e, "dtx_wal_sync_seconds_count");
      EXPECT_GT(syncs, 0) << n.name;
      // One observation per group commit: as many as the sync counter.
      EXPECT_EQ(tools::SumSamples(*e, "dtx_wal_syncs_total"), syncs) << n.name;
      EXPECT_EQ(tools::SumSamples(*e, "dtx_wal_records_synced_total"),
                tools::SumSamples(*e, "dtx_wal_records_per_sync_sum"))
          << n.name;
    }
  }
}

// --- e. dtxctl metrics ----------------------------------------------------

TEST_F(ObsTest, DtxctlMetricsPrintsEachNodesExpositionAndFailsClearly) {
  for (const auto& n : cluster_.config().nodes()) {
    CommandResult r = cluster_.Dtxctl({"metrics", n.name}, 10000);
    ASSERT_EQ(0, r.exit_code) << r.Describe();
    EXPECT_NE(std::string::npos, r.out.find("# TYPE dtx_epoch gauge")) << n.name;
    EXPECT_NE(std::string::npos, r.out.find("process_resident_memory_bytes")) << n.name;
    auto e = tools::ParseExposition(r.out);
    EXPECT_TRUE(e.ok()) << e.status().ToString();
  }
  CommandResult r = cluster_.Dtxctl({"metrics", "participant-9"}, 10000);
  EXPECT_EQ(1, r.exit_code) << r.Describe();
  EXPECT_NE(std::string::npos, r.err.find("no node 'participant-9'")) << r.Describe();
  r = cluster_.Dtxctl({"metrics"}, 10000);
  EXPECT_EQ(2, r.exit_code) << r.Describe();
  // A node whose endpoint does not answer: exit 1 naming it.
  {
    std::ofstream out(cluster_.dir() + "/participant-1/metrics.addr", std::ios::trunc);
    out << "127.0.0.1:1\n";
  }
  r = cluster_.Dtxctl({"metrics", "participant-1"}, 10000);
  EXPECT_EQ(1, r.exit_code) << r.Describe();
  EXPECT_NE(std::string::npos, r.err.find("participant-1 did not answer")) << r.Describe();
}

// --- b. a stuck transaction -----------------------------------------------

TEST_F(ObsTest, TraceNamesTheParticipantAndPhaseAStuckTransactionWaitsIn) {
  // participant-1's WAL sync sleeps: its PREPARE is logged but not durable,
  // so it cannot vote and the coordinator waits for it.
  CommandResult r =
      cluster_.Dtxctl({"failpoint", "participant-1", "wal.before_sync", "sleep(3000)"});
  ASSERT_EQ(0, r.exit_code) << r.Describe();
  const rpc::TxId txid = WireTxId(0x0b5e7a11, 1);
  auto commit = std::async(std::launch::async, [&] {
    return StockCommit(cluster_, txid, {KeyOnShard(0, "stuck"), KeyOnShard(1, "stuck")});
  });
  bool named = false;
  std::string last;
  for (int i = 0; i < 40 && !named; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    r = cluster_.Dtxctl({"trace", Hex(txid), "--json", "--timeout-ms", "1000"}, 10000);
    last = r.Describe();
    // participant-1's own last event: its PREPARE is logged, not synced.
    const Json waiting = TraceJson(r).value("waiting", Json());
    named = r.exit_code == 0 && waiting.is_object() &&
            waiting.value("node", "") == "participant-1" &&
            waiting.value("phase", "") == "prepare" && waiting.value("last_event", "") == "logged";
  }
  EXPECT_TRUE(named) << last;
  // The text form says the same in words.
  r = cluster_.Dtxctl({"trace", Hex(txid)}, 10000);
  EXPECT_NE(std::string::npos,
            r.out.find("waiting: participant-1 in prepare (logged, not yet synced/voted) for "))
      << r.Describe();
  EXPECT_NE(std::string::npos, r.out.find("coordinator-0 sent prepare, has no vote from it"))
      << r.Describe();
  ASSERT_EQ(0, cluster_.Dtxctl({"failpoint", "participant-1", "wal.before_sync", "off"}).exit_code);
  auto result = commit.get();
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  // Once it is through, nothing waits.
  bool finished = false;
  for (int i = 0; i < 50 && !finished; ++i) {
    r = cluster_.Dtxctl({"trace", Hex(txid), "--json"}, 10000);
    const Json trace = TraceJson(r);
    finished = r.exit_code == 0 && trace.contains("waiting") && trace["waiting"].is_null();
    if (!finished) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(finished) << r.Describe();
}

// --- c. a killed node -----------------------------------------------------

TEST_F(ObsTest, TraceOfAFinishedTransactionStillPrintsTheOthersWhenANodeIsKilled) {
  const rpc::TxId txid = WireTxId(0x0b5e7a11, 2);
  auto result =
      StockCommit(cluster_, txid, {KeyOnShard(0, "k"), KeyOnShard(1, "k"), KeyOnShard(2, "k")});
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(rpc::Outcome::COMMITTED, result->outcome);
  // Every node knows it.
  CommandResult r;
  for (int i = 0; i < 50; ++i) {
    r = cluster_.Dtxctl({"trace", Hex(txid), "--json"}, 10000);
    if (TraceJson(r).value("state", "") == "complete") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(0, r.exit_code) << r.Describe();
  std::set<std::string> with_events;
  for (const Json& e : TraceJson(r).value("events", Json::array()))
    with_events.insert(e.value("node", ""));
  for (const char* n : {"coordinator-0", "participant-0", "participant-1", "participant-2"}) {
    EXPECT_EQ(1u, with_events.count(n)) << n << r.out;
  }
  // Keep participant-2 down: stop the supervisor first, so nothing restarts it.
  auto sup = tools::ReadPidFile(cluster_.dir() + "/supervisor.pid");
  ASSERT_TRUE(sup.ok());
  ASSERT_EQ(0, ::kill(*sup, SIGKILL));
  const pid_t victim = cluster_.NodePid("participant-2");
  ASSERT_GT(victim, 0);
  ASSERT_EQ(0, ::kill(victim, SIGKILL));
  for (int i = 0; i < 100 && ::kill(victim, 0) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));

  r = cluster_.Dtxctl({"trace", Hex(txid)}, 10000);
  EXPECT_EQ(0, r.exit_code) << r.Describe();
  EXPECT_NE(std::string::npos, r.out.find("participant-2: NO ANSWER (connection refused)"))
      << r.Describe();
  EXPECT_NE(std::string::npos, r.out.find("participant-1   commit    acked")) << r.Describe();
  EXPECT_NE(std::string::npos, r.out.find("coordinator-0   phase2    ended")) << r.Describe();
  r = cluster_.Dtxctl({"trace", Hex(txid), "--json"}, 10000);
  EXPECT_EQ(0, r.exit_code) << r.Describe();
  EXPECT_EQ(TraceJson(r).value("unanswered", Json()),
            Json::parse(R"([{"node":"participant-2","error":"connection refused"}])"))
      << r.Describe();

  // dtxctl top shows it DOWN and the others up.
  r = cluster_.Dtxctl({"top", "--interval-ms", "200", "--iterations", "2"}, 20000);
  ASSERT_EQ(0, r.exit_code) << r.Describe();
  EXPECT_NE(std::string::npos, r.out.find("frame 2")) << r.out;
  EXPECT_EQ(std::string::npos, r.out.find("\033[2J"))
      << "no screen clearing when stdout is not a tty";
  EXPECT_TRUE(std::regex_search(r.out, std::regex("participant-2 +DOWN"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("coordinator-0 +up +primary"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("participant-0 +up +participant"))) << r.out;
  // A txid no node knows: exit 1; bad usage: exit 2.
  r = cluster_.Dtxctl({"trace", "000000000000000000000000000000ff"}, 10000);
  EXPECT_EQ(1, r.exit_code) << r.Describe();
  EXPECT_EQ(2, cluster_.Dtxctl({"trace", "not-a-txid"}, 10000).exit_code);
  EXPECT_EQ(2, cluster_.Dtxctl({"trace"}, 10000).exit_code);
  EXPECT_EQ(2, cluster_.Dtxctl({"top", "--interval-ms", "0"}, 10000).exit_code);
}

TEST_F(ObsTest, TopShowsRatesOfAWorkload) {
  std::atomic<bool> stop{false};
  std::thread load([&] {
    for (int i = 0; !stop.load() && i < 2000; ++i) {
      (void)Write({{KeyOnShard(static_cast<size_t>(i % kParticipants), "top"), "v"},
                   {KeyOnShard(static_cast<size_t>((i + 1) % kParticipants), "top"), "w"}});
    }
  });
  CommandResult r = cluster_.Dtxctl({"top", "--interval-ms", "1000", "--iterations", "2"}, 20000);
  stop = true;
  load.join();
  ASSERT_EQ(0, r.exit_code) << r.Describe();
  // coordinator-0's row in the last frame: a positive tx/s and a p99.
  const std::string last = r.out.substr(r.out.find("frame 2"));
  std::smatch m;
  ASSERT_TRUE(std::regex_search(
      last, m,
      std::regex("coordinator-0 +up +primary +\\d+ +([0-9.]+) +([0-9.]+) +([0-9.]+(us|ms|s))")))
      << last;
  EXPECT_GT(std::stod(m[1].str()), 0) << last;
}

// --- d. logs of a crash-matrix run ----------------------------------------

TEST_F(ObsTest, ParticipantCrashedAfterVotingYesLogsEveryInDoubtTxidItResolved) {
  // participant-1 exits right after its first YES vote; the supervisor starts
  // it again, and it resolves what it had prepared.
  CommandResult r =
      cluster_.Dtxctl({"failpoint", "participant-1", "participant.prepare.after_vote", "crash"});
  ASSERT_EQ(0, r.exit_code) << r.Describe();
  const pid_t first_pid = cluster_.NodePid("participant-1");
  std::vector<std::future<Result<rpc::CommitResult>>> commits;
  for (uint64_t i = 0; i < 8; ++i) {
    commits.push_back(std::async(std::launch::async, [&, i] {
      return StockCommit(
          cluster_, WireTxId(0xc2a5, i),
          {KeyOnShard(0, "crash" + std::to_string(i)), KeyOnShard(1, "crash" + std::to_string(i))});
    }));
  }
  // What `dtxctl in-doubt` shows while it recovers (best effort: resolution is fast).
  std::set<std::string> seen_in_doubt;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  bool restarted = false;
  while (std::chrono::steady_clock::now() < deadline) {
    r = cluster_.Dtxctl({"in-doubt"}, 10000);
    std::istringstream lines(r.out);
    std::string line;
    while (std::getline(lines, line)) {
      std::smatch m;
      if (std::regex_search(line, m, std::regex("^participant-1 +([0-9a-f]{32}) ")))
        seen_in_doubt.insert(m[1].str());
    }
    const pid_t now = cluster_.NodePid("participant-1");
    restarted = now > 0 && now != first_pid;
    if (restarted && r.exit_code == 0 && r.out.find("\n0 in-doubt") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(restarted) << cluster_.LogTails(20);
  for (auto& c : commits) (void)c.get();

  // The restarted node says which transactions it found in doubt, and how
  // each was resolved (node.log is flushed every second: poll it).
  std::set<std::string> in_doubt_after_recovery, resolved;
  std::string all;
  for (int i = 0; i < 100; ++i) {
    std::ifstream log(cluster_.dir() + "/participant-1/node.log");
    std::stringstream text;
    text << log.rdbuf();
    all = text.str();
    in_doubt_after_recovery.clear();
    resolved.clear();
    std::smatch m;
    std::string::const_iterator from = all.cbegin();
    const std::regex doubt("txid=([0-9a-f]{32}) in doubt after recovery");
    while (std::regex_search(from, all.cend(), m, doubt)) {
      in_doubt_after_recovery.insert(m[1].str());
      from = m.suffix().first;
    }
    from = all.cbegin();
    const std::regex res("txid=([0-9a-f]{32}) in-doubt resolved by ");
    while (std::regex_search(from, all.cend(), m, res)) {
      resolved.insert(m[1].str());
      from = m.suffix().first;
    }
    const bool all_resolved =
        std::all_of(in_doubt_after_recovery.begin(), in_doubt_after_recovery.end(),
                    [&](const std::string& t) { return resolved.count(t) != 0; });
    if (!in_doubt_after_recovery.empty() && all_resolved) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // ... at least the one whose vote preceded the crash (its PREPARE was durable).
  EXPECT_FALSE(in_doubt_after_recovery.empty())
      << all.substr(all.size() > 4000 ? all.size() - 4000 : 0);
  for (const std::string& t : seen_in_doubt) {
    EXPECT_TRUE(in_doubt_after_recovery.count(t))
        << t << " listed by dtxctl in-doubt, not logged as in doubt";
  }
  for (const std::string& t : in_doubt_after_recovery) {
    EXPECT_TRUE(resolved.count(t))
        << "txid=" << t << " in doubt after recovery, no 'in-doubt resolved' line";
  }
  // Nothing stays in doubt.
  r = cluster_.Dtxctl({"in-doubt"}, 10000);
  EXPECT_NE(std::string::npos, r.out.find("\n0 in-doubt")) << r.Describe();
}

// --- --no-obs ----------------------------------------------------------------

class NoObsTest : public ClusterTest {
 protected:
  void CustomizeCluster(LocalCluster::Options* o) override { o->up_flags.push_back("--no-obs"); }
};

TEST_F(NoObsTest, NoMetricsEndpointAndNoTraceEvents) {
  const rpc::TxId txid = WireTxId(0x0b5e7a11, 3);
  auto result = StockCommit(cluster_, txid, {KeyOnShard(0, "n"), KeyOnShard(1, "n")});
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(rpc::Outcome::COMMITTED, result->outcome);
  for (const auto& n : cluster_.config().nodes()) {
    CommandResult r = cluster_.Dtxctl({"metrics", n.name}, 10000);
    EXPECT_EQ(1, r.exit_code) << r.Describe();
    EXPECT_NE(std::string::npos, r.err.find("metrics.addr")) << r.Describe();
  }
  CommandResult r = cluster_.Dtxctl({"trace", Hex(txid)}, 10000);
  EXPECT_EQ(1, r.exit_code) << r.Describe();
  EXPECT_NE(std::string::npos, r.out.find("no node that answered knows this txid")) << r.Describe();
}

}  // namespace
}  // namespace dtx::testing
