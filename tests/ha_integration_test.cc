// A cluster with a backup coordinator (dtxctl cluster up --backup): roles at
// start, and the primary killed under load: the backup takes over, the old
// primary comes back as backup, the bank invariant holds.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/wire.h"
#include "tests/cluster_fixture.h"

namespace dtx::testing {
namespace {

using namespace std::chrono_literals;

class HaTest : public ClusterTest {
 protected:
  void CustomizeCluster(LocalCluster::Options* o) override { o->backup = true; }

  // node -> role, from dtxctl status.
  std::map<std::string, std::string> Roles() {
    std::map<std::string, std::string> out;
    for (const auto& n : cluster_.config().nodes()) {
      auto st = tools::GetNodeStatus(n, cluster_.creds(),
                                     {.connect_timeout_ms = 500, .recv_timeout_ms = 2000});
      out[n.name] = st.ok() ? NodeRoleName(st->role) : "down";
    }
    return out;
  }
};

TEST_F(HaTest, PrimaryAndBackupServeTransactions) {
  // Ready (answering GetStatus) is not yet established: coordinator-0 says
  // "starting" until a majority of participants adopted its epoch.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  std::map<std::string, std::string> roles;
  while ((roles = Roles())["coordinator-0"] != "primary" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(roles["coordinator-0"], "primary");
  EXPECT_EQ(roles["coordinator-1"], "backup");
  std::map<std::string, std::optional<std::string>> writes;
  for (size_t shard = 0; shard < kParticipants; ++shard) writes[KeyOnShard(shard, "ha")] = "v";
  ASSERT_TRUE(Write(writes).ok());
  for (const auto& [k, v] : writes) EXPECT_EQ(*Read(k), v);
  CommandResult st = cluster_.Dtxctl({"status"});
  EXPECT_EQ(st.exit_code, 0);
  EXPECT_NE(st.out.find(" backup "), std::string::npos) << st.out;
  // Under each node's row, its listeners and how each is secured (TLS here).
  EXPECT_NE(st.out.find("\n  listeners: client "), std::string::npos) << st.out;
  EXPECT_NE(st.out.find(" (mutual TLS), peer "), std::string::npos) << st.out;
}

TEST_F(HaTest, KilledPrimaryFailsOverAndTheBankInvariantHolds) {
  CommandResult bench;
  std::thread runner([&] {
    bench =
        RunCommand({DTX_BENCH_PATH, "--workload", "bank", "--cluster", cluster_.dir(), "--clients",
                    "32", "--duration", "6", "--warmup", "0.5", "--accounts", "500"},
                   150000);
  });
  std::this_thread::sleep_for(2000ms);
  CommandResult k = cluster_.Dtxctl({"kill", "coordinator-0"});
  EXPECT_EQ(k.exit_code, 0) << k.Describe();
  runner.join();
  EXPECT_EQ(bench.exit_code, 0) << bench.Describe();
  EXPECT_NE(bench.out.find("invariant: ok"), std::string::npos) << bench.Describe();
  std::cout << bench.out;
  // Exactly one primary afterwards; the restarted coordinator-0 is not it
  // unless it took the role back.
  auto deadline = std::chrono::steady_clock::now() + 15s;
  std::map<std::string, std::string> roles;
  for (;;) {
    roles = Roles();
    int primaries = (roles["coordinator-0"] == "primary") + (roles["coordinator-1"] == "primary");
    if (primaries == 1 && roles["coordinator-0"] != "down" && roles["coordinator-1"] != "down") {
      break;
    }
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "coordinator-0 " << roles["coordinator-0"] << ", coordinator-1 "
        << roles["coordinator-1"];
    std::this_thread::sleep_for(100ms);
  }
  std::map<std::string, std::optional<std::string>> writes;
  for (size_t shard = 0; shard < kParticipants; ++shard) {
    writes[KeyOnShard(shard, "after-failover")] = "v";
  }
  Status s = Write(writes);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

TEST_F(HaTest, BackupPromotesWhenThePrimaryHangsAndTheOldPrimaryRestartsAsBackup) {
  // Load first, so the backup is in sync (an out-of-sync backup never promotes).
  // Then clients commit while the primary is stopped: measured, the time until
  // their commits go through the new primary (printed).
  CommandResult warm =
      RunCommand({DTX_BENCH_PATH, "--workload", "bank", "--cluster", cluster_.dir(), "--clients",
                  "8", "--duration", "0.5", "--warmup", "0", "--accounts", "200"},
                 60000);
  ASSERT_EQ(warm.exit_code, 0) << warm.Describe();
  // Client threads commit blind writes all along (the fixture's client:
  // both coordinators, default options). With the primary stopped, their
  // commits hang at it until the client's probe finds the promoted backup;
  // they must not wait for the 10 s commit timeout.
  using Clock = std::chrono::steady_clock;
  struct Commit {
    Clock::time_point started, done;
    bool ok = false;
    bool unknown = false;
  };
  std::mutex mu;
  std::vector<Commit> commits;
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      for (int n = 0; !stop; ++n) {
        Commit c;
        c.started = Clock::now();
        auto tx = client_->Begin();
        if (!tx.ok()) continue;
        (void)tx->Put("hang-" + std::to_string(w) + "-" + std::to_string(n % 50),
                      std::to_string(n));
        Status st = tx->Commit();
        c.done = Clock::now();
        c.ok = st.ok();
        c.unknown = tx->outcome_unknown();
        std::lock_guard<std::mutex> lock(mu);
        commits.push_back(c);
      }
    });
  }
  auto stop_workers = [&] {
    stop = true;
    for (auto& t : workers) t.join();
    workers.clear();
  };
  std::this_thread::sleep_for(500ms);
  pid_t c0 = cluster_.NodePid("coordinator-0");
  const uint64_t switches_before = client_->primary_switches();
  ASSERT_EQ(::kill(c0, SIGSTOP), 0);
  const auto stopped = Clock::now();
  auto deadline = stopped + 10s;
  const tools::NodeEntry* c1 = cluster_.config().Find("coordinator-1");
  ASSERT_NE(c1, nullptr);
  for (;;) {
    auto st = tools::GetNodeStatus(*c1, cluster_.creds(),
                                   {.connect_timeout_ms = 500, .recv_timeout_ms = 1000});
    if (st.ok() && st->role == rpc::NodeRole::PRIMARY) break;
    if (Clock::now() > deadline) {
      ::kill(c0, SIGCONT);
      stop_workers();
      FAIL() << "coordinator-1 did not promote while coordinator-0 was stopped";
    }
    std::this_thread::sleep_for(10ms);
  }
  const auto promoted = Clock::now();
  // The first commit begun after the stop that committed went through
  // coordinator-1 (coordinator-0 answers nothing).
  std::optional<Clock::time_point> resumed;
  while (!resumed && Clock::now() < promoted + 10s) {
    {
      std::lock_guard<std::mutex> lock(mu);
      for (const Commit& c : commits) {
        if (c.ok && c.started > stopped && (!resumed || c.done < *resumed)) resumed = c.done;
      }
    }
    if (!resumed) std::this_thread::sleep_for(20ms);
  }
  std::this_thread::sleep_for(300ms);
  stop_workers();
  ASSERT_EQ(::kill(c0, SIGCONT), 0);
  ASSERT_TRUE(resumed.has_value()) << "no commit went through the new primary within 10 s";
  auto ms = [](Clock::duration d) {
    return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  size_t unknown = 0, hung_then_ok = 0;
  for (const Commit& c : commits) {
    unknown += c.unknown;
    hung_then_ok += c.ok && c.started < stopped && c.done > stopped + 100ms;
  }
  std::printf(
      "SIGSTOP primary: backup primary after %lld ms; client commits resumed %lld ms after "
      "the stop (%lld ms after the promotion was seen); %zu commits outstanding at the stop "
      "completed COMMITTED at the new primary; %zu unknown outcomes; client primary "
      "switches %llu\n",
      ms(promoted - stopped), ms(*resumed - stopped), ms(*resumed - promoted), hung_then_ok,
      unknown, static_cast<unsigned long long>(client_->primary_switches() - switches_before));
  // Generous bound (shared machine); without the probe this was the 10 s
  // commit timeout.
  EXPECT_LT(*resumed - promoted, 3s);
  EXPECT_GE(client_->primary_switches(), switches_before + 1);
  // The old primary steps down; restarted, the supervisor brings it back as
  // the backup because its peer is primary now.
  CommandResult r = cluster_.Dtxctl({"restart", "coordinator-0"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  std::string cmdline;
  {
    std::ifstream in("/proc/" + std::to_string(cluster_.NodePid("coordinator-0")) + "/cmdline");
    cmdline.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_NE(cmdline.find(std::string("--role") + '\0' + "backup" + '\0'), std::string::npos);
  deadline = std::chrono::steady_clock::now() + 10s;
  std::map<std::string, std::string> roles;
  while ((roles = Roles())["coordinator-0"] != "backup" || roles["coordinator-1"] != "primary") {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "coordinator-0 " << roles["coordinator-0"] << ", coordinator-1 "
        << roles["coordinator-1"];
    std::this_thread::sleep_for(100ms);
  }
  // Transactions go through the new primary (the client follows NOT_PRIMARY),
  // and the money from the warm-up run is all there.
  CommandResult after =
      RunCommand({DTX_BENCH_PATH, "--workload", "bank", "--cluster", cluster_.dir(), "--clients",
                  "8", "--duration", "1", "--warmup", "0", "--accounts", "200", "--no-load"},
                 60000);
  EXPECT_EQ(after.exit_code, 0) << after.Describe();
  EXPECT_NE(after.out.find("invariant: ok"), std::string::npos) << after.Describe();
  EXPECT_EQ(after.out.find("committed: 0 "), std::string::npos) << after.Describe();
}

}  // namespace
}  // namespace dtx::testing
