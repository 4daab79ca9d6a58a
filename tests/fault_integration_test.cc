// Faults on a real cluster: a participant killed with SIGKILL (dtxctl kill)
// is restarted by the supervisor and still has every committed write; nodes
// crashed at failpoints recover all-or-nothing.
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "tests/cluster_fixture.h"

namespace dtx::testing {
namespace {

using namespace std::chrono_literals;
using FaultTest = ClusterTest;

TEST_F(FaultTest, KilledParticipantIsRestartedAndKeepsCommittedData) {
  std::map<std::string, std::optional<std::string>> writes;
  for (int i = 0; i < 30; ++i) {
    for (size_t shard = 0; shard < kParticipants; ++shard) {
      writes[KeyOnShard(shard, "durable" + std::to_string(i))] = "v" + std::to_string(i);
    }
  }
  // Several transactions, each spanning all participants.
  auto it = writes.begin();
  while (it != writes.end()) {
    std::map<std::string, std::optional<std::string>> batch;
    for (int n = 0; n < 10 && it != writes.end(); ++n, ++it) batch.insert(*it);
    ASSERT_TRUE(Write(batch).ok());
  }

  pid_t old_pid = cluster_.NodePid("participant-1");
  ASSERT_GT(old_pid, 0);
  CommandResult k = cluster_.Dtxctl({"kill", "participant-1"});
  ASSERT_EQ(k.exit_code, 0) << k.Describe();
  // The supervisor starts it again...
  auto deadline = std::chrono::steady_clock::now() + 15s;
  pid_t new_pid = -1;
  while (std::chrono::steady_clock::now() < deadline) {
    new_pid = cluster_.NodePid("participant-1");
    if (new_pid > 0 && new_pid != old_pid && tools::IsNodeProcess(new_pid, "participant-1")) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_NE(new_pid, old_pid);
  ASSERT_TRUE(
      tools::WaitUntilReady(*cluster_.config().Find("participant-1"), cluster_.creds(), 15000)
          .ok());
  std::ifstream log(cluster_.dir() + "/supervisor.log");
  std::stringstream ss;
  ss << log.rdbuf();
  EXPECT_NE(ss.str().find("restarted participant-1"), std::string::npos) << ss.str();

  // ... and every committed write is still there, on every participant.
  for (const auto& [key, value] : writes) {
    auto stock = StockRead(key);
    ASSERT_TRUE(stock.ok()) << key << ": " << stock.status().ToString();
    EXPECT_TRUE(stock->found) << key;
    EXPECT_EQ(stock->value, *value) << key;
  }
  // The client reaches the restarted participant again (Run retries while its
  // connection reconnects), and new transactions through it commit.
  for (const auto& [key, value] : writes) {
    auto r = Read(key);
    ASSERT_TRUE(r.ok()) << key << ": " << r.status().ToString();
    EXPECT_EQ(*r, value) << key;
  }
  std::string k1 = KeyOnShard(1, "after-restart");
  ASSERT_TRUE(Write({{k1, "new"}, {KeyOnShard(0, "after-restart"), "new"}}).ok());
  EXPECT_EQ(*Read(k1), std::optional<std::string>("new"));

  // dtxctl restart does the same and waits until the node answers.
  CommandResult r = cluster_.Dtxctl({"restart", "participant-0"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  for (size_t shard = 0; shard < kParticipants; ++shard) {
    std::string key = KeyOnShard(shard, "durable0");
    auto stock = StockRead(key);
    ASSERT_TRUE(stock.ok()) << stock.status().ToString();
    EXPECT_EQ(stock->value, "v0");
  }
  CommandResult st = cluster_.Dtxctl({"status"});
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_EQ(st.out.find("down"), std::string::npos) << st.out;
  // Real nodes report their roles: one row per node.
  for (const auto& n : cluster_.config().nodes()) {
    size_t at = st.out.find(n.name + " ");
    ASSERT_NE(at, std::string::npos) << st.out;
    std::string row = st.out.substr(at, st.out.find('\n', at) - at);
    EXPECT_NE(row.find(n.role == tools::NodeKind::kCoordinator ? " primary " : " participant "),
              std::string::npos)
        << row;
    EXPECT_NE(row.find(std::to_string(cluster_.NodePid(n.name))), std::string::npos) << row;
  }
}

TEST_F(FaultTest, BankInvariantHoldsWhileNodesAreKilled) {
  CommandResult bench;
  std::thread runner([&] {
    bench =
        RunCommand({DTX_BENCH_PATH, "--workload", "bank", "--cluster", cluster_.dir(), "--clients",
                    "64", "--duration", "6", "--warmup", "0.5", "--accounts", "500"},
                   150000);
  });
  for (const char* node : {"participant-1", "coordinator-0", "participant-2"}) {
    std::this_thread::sleep_for(1500ms);
    CommandResult k = cluster_.Dtxctl({"kill", node});
    EXPECT_EQ(k.exit_code, 0) << k.Describe();
  }
  runner.join();
  EXPECT_EQ(bench.exit_code, 0) << bench.Describe();
  EXPECT_NE(bench.out.find("invariant: ok"), std::string::npos) << bench.Describe();
  std::cout << bench.out;
  CommandResult id;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  do {
    std::this_thread::sleep_for(100ms);
    id = cluster_.Dtxctl({"in-doubt"});
  } while ((id.exit_code != 0 || id.out.find("\n0 in-doubt") == std::string::npos) &&
           std::chrono::steady_clock::now() < deadline);
  EXPECT_NE(id.out.find("\n0 in-doubt"), std::string::npos) << id.Describe();
}

// Crash tests: a node armed (dtxctl failpoint) to crash at a protocol step;
// the supervisor restarts it and recovery must end all-or-nothing.
class CrashTest : public ClusterTest {
 protected:
  void Arm(const std::string& node, const std::string& point, const std::string& action) {
    CommandResult r = cluster_.Dtxctl({"failpoint", node, point, action});
    ASSERT_EQ(r.exit_code, 0) << r.Describe();
  }
  // One key per participant, written "v" in one transaction; its outcome.
  CommitOutcome CommitAcrossAll(const std::string& prefix, std::vector<std::string>* keys) {
    auto tx = client_->BeginAsync();
    EXPECT_TRUE(tx.ok());
    for (size_t shard = 0; shard < kParticipants; ++shard) {
      keys->push_back(KeyOnShard(shard, prefix));
      EXPECT_TRUE((*tx)->Put(keys->back(), "v").ok());
    }
    return AsyncCommit(**tx).get();
  }
  // How many of `keys` the participants hold with value "v", once every
  // participant answers (waits up to `timeout` for all to become visible
  // when `want_all`).
  size_t VisibleCount(const std::vector<std::string>& keys, bool want_all,
                      std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    size_t visible = 0;
    for (;;) {
      visible = 0;
      bool all_answered = true;
      for (const auto& k : keys) {
        auto r = StockRead(k);
        if (!r.ok()) {
          all_answered = false;
          continue;
        }
        if (r->found && r->value == "v") ++visible;
      }
      bool done = all_answered && (!want_all || visible == keys.size());
      if (done || std::chrono::steady_clock::now() > deadline) return visible;
      std::this_thread::sleep_for(50ms);
    }
  }
  bool NoInDoubt(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      CommandResult r = cluster_.Dtxctl({"in-doubt"});
      if (r.exit_code == 0 && r.out.find("\n0 in-doubt") != std::string::npos) return true;
      if (std::chrono::steady_clock::now() > deadline) {
        std::cerr << r.Describe();
        return false;
      }
      std::this_thread::sleep_for(100ms);
    }
  }
  void WaitRestarted(const std::string& node, pid_t old_pid) {
    auto deadline = std::chrono::steady_clock::now() + 15s;
    while (std::chrono::steady_clock::now() < deadline) {
      pid_t p = cluster_.NodePid(node);
      if (p > 0 && p != old_pid && tools::IsNodeProcess(p, node)) break;
      std::this_thread::sleep_for(20ms);
    }
    ASSERT_NE(cluster_.NodePid(node), old_pid) << node << " was not restarted";
    ASSERT_TRUE(tools::WaitUntilReady(*cluster_.config().Find(node), cluster_.creds(), 15000).ok());
  }
};

TEST_F(CrashTest, ParticipantCrashAfterLoggingCommitReappliesOnRestart) {
  pid_t old_pid = cluster_.NodePid("participant-1");
  Arm("participant-1", "participant.commit.after_log", "crash");
  std::vector<std::string> keys;
  CommitOutcome o = CommitAcrossAll("crash-commit", &keys);
  // The decision was durable at the coordinator before phase 2 began.
  ASSERT_TRUE(o.status.ok() || o.outcome_unknown) << o.status.ToString();
  WaitRestarted("participant-1", old_pid);
  EXPECT_EQ(VisibleCount(keys, true, 20s), keys.size());
  EXPECT_TRUE(NoInDoubt(20s));
}

TEST_F(CrashTest, CoordinatorCrashAfterLoggingDecisionCommitsOnRestart) {
  pid_t old_pid = cluster_.NodePid("coordinator-0");
  Arm("coordinator-0", "coordinator.decision.after_log", "crash");
  std::vector<std::string> keys;
  CommitOutcome o = CommitAcrossAll("crash-decision", &keys);
  // The client may learn the outcome from the restarted coordinator (same
  // txid) or be told it is unknown; it is never told ABORTED.
  EXPECT_FALSE(o.status.IsAborted()) << o.status.ToString();
  WaitRestarted("coordinator-0", old_pid);
  // DECISION was durable: the restarted coordinator re-sends COMMIT.
  EXPECT_EQ(VisibleCount(keys, true, 20s), keys.size());
  EXPECT_TRUE(NoInDoubt(20s));
}

TEST_F(CrashTest, ParticipantCrashAfterLoggingPrepareAbortsEverywhere) {
  pid_t old_pid = cluster_.NodePid("participant-2");
  Arm("participant-2", "participant.prepare.after_log", "crash");
  std::vector<std::string> keys;
  CommitOutcome o = CommitAcrossAll("crash-prepare", &keys);
  // It never voted: the transaction cannot have committed.
  EXPECT_FALSE(o.status.ok()) << "committed without participant-2's vote";
  WaitRestarted("participant-2", old_pid);
  // The restarted participant finds PREPARE without an outcome, asks the
  // coordinator (presumed abort) and releases the locks.
  EXPECT_TRUE(NoInDoubt(20s));
  EXPECT_EQ(VisibleCount(keys, false, 5s), 0u);
  // The keys are writable again.
  std::map<std::string, std::optional<std::string>> again;
  for (const auto& k : keys) again[k] = "w";
  Status s = Write(again);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_F(CrashTest, InDoubtTransactionIsListedByDtxctlAndThenResolved) {
  // participant-0 votes YES and crashes; the coordinator stalls before it
  // decides, so the restarted participant holds a PREPARE without an outcome
  // until the coordinator answers.
  pid_t old_pid = cluster_.NodePid("participant-0");
  Arm("coordinator-0", "coordinator.votes.after_all", "sleep(3000)");
  Arm("participant-0", "participant.prepare.after_vote", "crash");
  auto tx = client_->BeginAsync();
  ASSERT_TRUE(tx.ok());
  std::vector<std::string> keys;
  for (size_t shard = 0; shard < kParticipants; ++shard) {
    keys.push_back(KeyOnShard(shard, "in-doubt"));
    ASSERT_TRUE((*tx)->Put(keys.back(), "v").ok());
  }
  std::string txid = (*tx)->txid().ToString();
  std::future<CommitOutcome> outcome = AsyncCommit(**tx);
  WaitRestarted("participant-0", old_pid);
  bool listed = false;
  std::string seen;
  auto deadline = std::chrono::steady_clock::now() + 2500ms;
  while (!listed && std::chrono::steady_clock::now() < deadline) {
    CommandResult r = cluster_.Dtxctl({"in-doubt"});
    seen = r.out;
    // The row: "participant-0  <txid>  <age_ms>  <coordinator>".
    std::istringstream rows(r.out);
    for (std::string row; std::getline(rows, row);) {
      if (row.starts_with("participant-0 ") && row.find(txid) != std::string::npos &&
          row.ends_with(cluster_.coordinator_address())) {
        listed = true;
      }
    }
    if (!listed) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(listed) << "txid " << txid << " not listed:\n" << seen;
  CommitOutcome o = outcome.get();
  EXPECT_TRUE(NoInDoubt(20s));
  size_t visible = VisibleCount(keys, o.status.ok(), 20s);
  if (o.status.ok()) {
    EXPECT_EQ(visible, keys.size());
  } else if (o.status.IsAborted()) {
    EXPECT_EQ(visible, 0u);
  } else {
    EXPECT_TRUE(visible == 0 || visible == keys.size()) << visible << " of " << keys.size();
  }
}

// DTX_FAILPOINTS given to `cluster up` arms the nodes' first start only: every
// participant crashes once after logging COMMIT, comes back without the
// failpoint, re-applies the commit, and later transactions run normally.
class StartupFailpointTest : public CrashTest {
 protected:
  void CustomizeCluster(LocalCluster::Options* o) override {
    o->env.push_back("DTX_FAILPOINTS=participant.commit.after_log=crash");
  }
};

TEST_F(StartupFailpointTest, CrashesOnlyTheFirstIncarnationAndCommitsSurvive) {
  std::vector<pid_t> first;
  for (size_t i = 0; i < kParticipants; ++i) {
    first.push_back(cluster_.NodePid("participant-" + std::to_string(i)));
  }
  std::vector<std::string> keys;
  CommitOutcome o = CommitAcrossAll("startup-fp", &keys);
  ASSERT_TRUE(o.status.ok() || o.outcome_unknown) << o.status.ToString();
  for (size_t i = 0; i < kParticipants; ++i) {
    WaitRestarted("participant-" + std::to_string(i), first[i]);
  }
  EXPECT_EQ(VisibleCount(keys, true, 20s), keys.size());
  // Restarted without the failpoint: the next commits do not crash anyone.
  std::vector<pid_t> second;
  for (size_t i = 0; i < kParticipants; ++i) {
    second.push_back(cluster_.NodePid("participant-" + std::to_string(i)));
  }
  std::vector<std::string> more;
  for (int round = 0; round < 3; ++round) {
    std::map<std::string, std::optional<std::string>> writes;
    for (size_t shard = 0; shard < kParticipants; ++shard) {
      writes[KeyOnShard(shard, "after-fp" + std::to_string(round))] = "v";
    }
    Status s = Write(writes);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  for (size_t i = 0; i < kParticipants; ++i) {
    EXPECT_EQ(cluster_.NodePid("participant-" + std::to_string(i)), second[i]);
  }
}

}  // namespace
}  // namespace dtx::testing
