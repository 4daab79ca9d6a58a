// A cluster spread over five hosts, each node started on its own from one
// cluster file (docs/deploy.md), the way a user deploys dtx: no supervisor,
// no local cluster directory. Each host is a network namespace
// (tests/netns_lab.h): coordinator-0 on c0, coordinator-1 on c1,
// participant-0..2 on p0..p2, and the bank workload (dtx-bench
// --cluster-file) on a sixth host, w0. TLS on every listener, with the
// certificates in the directory the file names.
//
// Every node runs `dtx-participant|dtx-coordinator --cluster FILE --name NAME`
// inside its namespace; nothing else on its command line but logging. While
// the workload runs the test kills (SIGKILL) participant-1 and starts it again
// with the same command, then kills the primary coordinator-0: coordinator-1
// takes over, and coordinator-0 started again with the same command must come
// back as the backup (it asks its peer: tools/node_launch.h). The workload's
// own invariant check (the total balance) must hold, it must have committed,
// and `dtxctl --cluster FILE status` (from w0) must show every node up.
//
// Needs root and `ip netns`; skipped (with the reason) otherwise.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/harness.h"
#include "tests/netns_lab.h"
#include "tools/admin_client.h"
#include "tools/cluster_config.h"

namespace dtx::testing {
namespace {

using namespace std::chrono_literals;

constexpr int kAdminPort = 7002;
constexpr int kMetricsPort = 7003;
constexpr int kWorkloadSeconds = 14;
const std::vector<std::string> kNodeHosts = {"c0", "c1", "p0", "p1", "p2"};

std::string NodeName(const std::string& host) {
  return (host[0] == 'c' ? "coordinator-" : "participant-") + host.substr(1);
}

class MultiHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for ip netns (euid " << ::geteuid() << ")";
    if (IpBinary().empty()) GTEST_SKIP() << "no ip binary (iproute2)";
    RemoveLeftovers();
    std::vector<std::string> hosts = kNodeHosts;
    hosts.push_back("w0");
    Status made = lab_.Create(hosts);
    if (!made.ok()) {
      lab_.Destroy();
      GTEST_SKIP() << "cannot build the network namespaces: " << made.ToString();
    }
    // The certificates every host would get (here one directory on the one
    // filesystem): the CA, one per node, "admin" and "client".
    std::vector<std::string> names;
    for (const std::string& h : kNodeHosts) names.push_back(NodeName(h));
    ASSERT_TRUE(MakeClusterCerts(dir_.path(), names).ok());
    // The cluster file, with its own TLS settings (no security.conf is
    // needed: remove the one MakeClusterCerts wrote to prove it) and the
    // NODEDIRs under data/.
    std::filesystem::remove(dir_.path() + "/" + tools::kSecurityConfFile);
    std::string text = "# five hosts\ntls on\ncerts certs\ndata data\n";
    for (const std::string& h : kNodeHosts) {
      const std::string ip = lab_.host(h).ip;
      text += NodeName(h) + " " + ip + ":" + std::to_string(kNetnsNodePort) + " admin=" + ip + ":" +
              std::to_string(kAdminPort) + " peer=" + ip + ":" + std::to_string(kNetnsPeerPort) +
              " metrics=" + ip + ":" + std::to_string(kMetricsPort) + "\n";
    }
    file_ = dir_.path() + "/cluster.conf";
    ASSERT_TRUE(tools::WriteFileAtomic(file_, text).ok());
    auto file = tools::ClusterFile::Load(file_);
    ASSERT_TRUE(file.ok()) << file.status().ToString();
    file_config_ = std::move(*file);
    auto creds = tools::ToolCredentials::FromClusterFile(file_config_);
    ASSERT_TRUE(creds.ok()) << creds.status().ToString();
    creds_ = std::move(*creds);
    for (const std::string& h : kNodeHosts) ASSERT_TRUE(StartNode(h).ok()) << h;
  }

  void TearDown() override {
    if (HasFailure()) {
      for (const std::string& h : kNodeHosts) {
        const std::string d = file_config_.NodeDir(NodeName(h));
        std::cerr << "==== " << NodeName(h) << " node.log\n"
                  << TailOfFile(d + "/node.log", 30) << "==== console\n"
                  << TailOfFile(dir_.path() + "/" + h + ".console", 5);
      }
      dir_.Keep();
      std::cerr << "kept " << dir_.path() << "\n";
    }
    for (auto& [h, p] : procs_) p->Signal(SIGTERM);
    for (auto& [h, p] : procs_) p->Stop(3000);
    procs_.clear();
    lab_.Destroy();
  }

  // The node on `host`, started as a user would start it there.
  Status StartNode(const std::string& host) {
    std::vector<std::string> argv = lab_.Exec(host);
    argv.insert(argv.end(), {host[0] == 'c' ? DTX_COORDINATOR_PATH : DTX_PARTICIPANT_PATH,
                             "--cluster", file_, "--name", NodeName(host)});
    auto p = std::make_unique<ChildProcess>();
    DTX_RETURN_IF_ERROR(p->Start(argv, dir_.path() + "/" + host + ".console"));
    procs_[host] = std::move(p);
    return Status::OK();
  }

  void KillNode(const std::string& host) {
    procs_.at(host)->Signal(SIGKILL);
    procs_.at(host)->Stop(3000);
  }

  Result<rpc::NodeStatus> NodeStatus(const std::string& host) const {
    const tools::NodeEntry* e = file_config_.config.Find(NodeName(host));
    return tools::GetNodeStatus(*e, creds_, {.connect_timeout_ms = 300, .recv_timeout_ms = 500});
  }

  bool HasRole(const std::string& host, rpc::NodeRole::type role) const {
    auto st = NodeStatus(host);
    return st.ok() && st->role == role;
  }

  bool BackupInSync(const std::string& primary) const {
    auto st = NodeStatus(primary);
    return st.ok() && st->role == rpc::NodeRole::PRIMARY && st->counters.count("backup_in_sync") &&
           st->counters.at("backup_in_sync") == 1;
  }

  NetnsLab lab_;
  TempDir dir_{"dtx-multihost"};
  std::string file_;
  tools::ClusterFile file_config_;
  tools::ToolCredentials creds_;
  std::map<std::string, std::unique_ptr<ChildProcess>> procs_;
};

TEST_F(MultiHostTest, NodesStartedFromOneClusterFileSurviveKillsAndRestarts) {
  ASSERT_TRUE(WaitFor([&] { return BackupInSync("c0") && HasRole("c1", rpc::NodeRole::BACKUP); },
                      20s))
      << "coordinator-0 primary with coordinator-1 an in-sync backup";

  // The workload from its own host, through the cluster file.
  const std::string report = dir_.path() + "/bank.txt";
  std::vector<std::string> bench = lab_.Exec("w0");
  bench.insert(bench.end(),
               {DTX_BENCH_PATH, "--workload", "bank", "--cluster-file", file_, "--clients", "8",
                "--accounts", "1000", "--duration", std::to_string(kWorkloadSeconds)});
  ChildProcess workload;
  ASSERT_TRUE(workload.Start(bench, report).ok());

  // A participant's host: the node killed, then started again by the same
  // command.
  std::this_thread::sleep_for(3s);
  KillNode("p1");
  std::this_thread::sleep_for(1s);
  ASSERT_TRUE(StartNode("p1").ok());
  ASSERT_TRUE(WaitFor([&] { return HasRole("p1", rpc::NodeRole::PARTICIPANT); }, 20s))
      << "participant-1 answers again";

  // The primary's host: coordinator-1 takes over; coordinator-0, started
  // again with the same command, finds it primary and comes back as backup.
  KillNode("c0");
  ASSERT_TRUE(WaitFor([&] { return HasRole("c1", rpc::NodeRole::PRIMARY); }, 20s))
      << "coordinator-1 takes over";
  ASSERT_TRUE(StartNode("c0").ok());
  ASSERT_TRUE(WaitFor([&] { return BackupInSync("c1") && HasRole("c0", rpc::NodeRole::BACKUP); },
                      20s))
      << "coordinator-0 back as coordinator-1's in-sync backup";

  int code = workload.Stop((kWorkloadSeconds + 60) * 1000);
  std::string out = TailOfFile(report, 200);
  for (const char* key : {"committed: ", "not committed: ", "invariant: "}) {
    size_t at = out.find(key);
    if (at != std::string::npos) std::cout << out.substr(at, out.find('\n', at) - at) << "\n";
  }
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("invariant: ok"), std::string::npos) << out;
  EXPECT_EQ(out.find("committed: 0 "), std::string::npos) << out;

  // The operator's view from another host, by the same file.
  std::vector<std::string> status = lab_.Exec("w0");
  status.insert(status.end(), {DtxctlPath(), "--cluster", file_, "status"});
  CommandResult st = RunCommand(status, 20000);
  ASSERT_EQ(st.exit_code, 0) << st.Describe();
  for (const std::string& h : kNodeHosts) {
    bool up = false;
    std::istringstream lines(st.out);
    for (std::string line; std::getline(lines, line);) {
      if (line.starts_with(NodeName(h) + " ") && line.ends_with(" up")) up = true;
    }
    EXPECT_TRUE(up) << NodeName(h) << " up in:\n" << st.out;
  }
  // Each node's metrics endpoint is where the file says (Prometheus scrapes
  // it there).
  std::vector<std::string> metrics = lab_.Exec("w0");
  metrics.insert(metrics.end(), {DtxctlPath(), "--cluster", file_, "metrics", "participant-1"});
  CommandResult m = RunCommand(metrics, 20000);
  EXPECT_EQ(m.exit_code, 0) << m.Describe();
  EXPECT_NE(m.out.find("dtx_"), std::string::npos) << m.Describe();
}

}  // namespace
}  // namespace dtx::testing
