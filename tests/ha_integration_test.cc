// A cluster with a backup coordinator (dtxctl cluster up --backup): roles at
// start, and the primary killed under load: the backup takes over, the old
// primary comes back as backup, the bank invariant holds.
#include <signal.h>

#include <chrono>
#include <fstream>
#include <thread>

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
      auto st = tools::GetNodeStatus(n, {.connect_timeout_ms = 500, .recv_timeout_ms = 2000});
      out[n.name] = st.ok() ? st->role : "down";
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
}

TEST_F(HaTest, KilledPrimaryFailsOverAndTheBankInvariantHolds) {
  CommandResult bench;
  std::thread runner([&] {
    bench = RunCommand({DTX_BENCH_PATH, "--workload", "bank", "--cluster", cluster_.dir(),
                        "--clients", "32", "--duration", "6", "--warmup", "0.5", "--accounts",
                        "500"},
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
  CommandResult warm = RunCommand({DTX_BENCH_PATH, "--workload", "bank", "--cluster",
                                   cluster_.dir(), "--clients", "8", "--duration", "0.5",
                                   "--warmup", "0", "--accounts", "200"},
                                  60000);
  ASSERT_EQ(warm.exit_code, 0) << warm.Describe();
  pid_t c0 = cluster_.NodePid("coordinator-0");
  ASSERT_EQ(::kill(c0, SIGSTOP), 0);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (Roles()["coordinator-1"] != "primary") {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(c0, SIGCONT);
      FAIL() << "coordinator-1 did not promote while coordinator-0 was stopped";
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(::kill(c0, SIGCONT), 0);
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
  CommandResult after = RunCommand({DTX_BENCH_PATH, "--workload", "bank", "--cluster",
                                    cluster_.dir(), "--clients", "8", "--duration", "1",
                                    "--warmup", "0", "--accounts", "200", "--no-load"},
                                   60000);
  EXPECT_EQ(after.exit_code, 0) << after.Describe();
  EXPECT_NE(after.out.find("invariant: ok"), std::string::npos) << after.Describe();
  EXPECT_EQ(after.out.find("committed: 0 "), std::string::npos) << after.Describe();
}

}  // namespace
}  // namespace dtx::testing
