// Faults on a real cluster: a participant killed with SIGKILL (dtxctl kill)
// is restarted by the supervisor and still has every committed write.
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
  ASSERT_TRUE(tools::WaitUntilReady(*cluster_.config().Find("participant-1"), 15000).ok());
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
}

}  // namespace
}  // namespace dtx::testing
