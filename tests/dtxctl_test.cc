// dtxctl and its supervisor against stand-in nodes (dtx_fake_node symlinked
// as dtx-participant / dtx-coordinator): cluster up/down, status, kill and
// restart by the supervisor, failpoint, in-doubt, usage errors, and clean-up
// after failures.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/harness.h"
#include "tools/cluster_config.h"

namespace dtx::testing {
namespace {

using namespace std::chrono_literals;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class DtxctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"dtx-participant", "dtx-coordinator"}) {
      std::filesystem::create_symlink(DTX_FAKE_NODE_PATH, bin_.path() + "/" + name);
    }
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << cluster_.LogTails(15);
    cluster_.Down();
  }
  LocalCluster::Options FakeOptions(int participants) {
    LocalCluster::Options o;
    o.participants = participants;
    o.bin_dir = bin_.path();
    o.up_timeout_s = 10;
    // TLS, the default: `cluster up` makes the certificates, the fake nodes
    // serve with theirs (--certs-dir), dtxctl calls them with its own.
    return o;
  }
  std::vector<pid_t> AllNodePids() {
    std::vector<pid_t> out;
    for (const auto& n : cluster_.config().nodes()) out.push_back(cluster_.NodePid(n.name));
    return out;
  }

  TempDir bin_{"dtx-fake-bin"};
  LocalCluster cluster_;
};

TEST_F(DtxctlTest, BadUsageExitsTwoWithAMessage) {
  std::string d = DtxctlPath();
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {d},
           {d, "frobnicate"},
           {d, "cluster"},
           {d, "cluster", "sideways"},
           {d, "cluster", "up", "--dir", "/tmp/x"},
           {d, "cluster", "up", "--participants", "0"},
           {d, "cluster", "up", "--participants", "three"},
           {d, "status", "--no-such-flag"},
           {d, "kill"},
           {d, "failpoint", "participant-0", "wal.before_sync"},
           {d, "status", "extra-positional"},
           {d, "trace"},
           {d, "trace", "not-a-txid"},
           {d, "trace", "0123456789abcdef0123456789abcdef", "--timeout-ms", "0"},
           {d, "trace", "0123456789abcdef0123456789abcdef", "--bogus"},
           {d, "top", "--interval-ms", "5"},
           {d, "top", "--iterations", "-1"},
           {d, "top", "extra-positional"},
       }) {
    CommandResult r = RunCommand(argv, 10000);
    std::string joined;
    for (const auto& a : argv) joined += a + " ";
    EXPECT_EQ(r.exit_code, 2) << joined << r.Describe();
    EXPECT_NE(r.err.find("dtxctl: "), std::string::npos) << joined << r.Describe();
  }
  CommandResult help = RunCommand({d, "--help"}, 10000);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("cluster up"), std::string::npos);
}

TEST_F(DtxctlTest, UpStartsEveryNodeAndDownStopsThemAll) {
  ASSERT_TRUE(cluster_.Up(FakeOptions(3)).ok());
  ASSERT_EQ(cluster_.config().nodes().size(), 4u);
  EXPECT_EQ(cluster_.config().participants().size(), 3u);
  auto sup = tools::ReadPidFile(cluster_.dir() + "/supervisor.pid");
  ASSERT_TRUE(sup.ok());
  EXPECT_TRUE(tools::ProcessAlive(*sup));
  std::vector<pid_t> pids = AllNodePids();
  for (size_t i = 0; i < pids.size(); ++i) {
    const auto& name = cluster_.config().nodes()[i].name;
    EXPECT_TRUE(tools::IsNodeProcess(pids[i], name)) << name;
  }
  // The supervisor passed the conventional flags.
  std::string cmdline = ReadFile("/proc/" + std::to_string(pids[0]) + "/cmdline");
  EXPECT_NE(cmdline.find("--participants"), std::string::npos);

  CommandResult st = cluster_.Dtxctl({"status"});
  ASSERT_EQ(st.exit_code, 0) << st.Describe();
  EXPECT_NE(st.out.find("supervisor: running"), std::string::npos) << st.out;
  for (const auto& n : cluster_.config().nodes()) {
    size_t line = st.out.find(n.name);
    ASSERT_NE(line, std::string::npos) << st.out;
    std::string row = st.out.substr(line, st.out.find('\n', line) - line);
    EXPECT_NE(row.find(n.address), std::string::npos) << row;
    EXPECT_NE(row.find(" up"), std::string::npos) << row;
  }

  CommandResult down = cluster_.Dtxctl({"cluster", "down"});
  ASSERT_EQ(down.exit_code, 0) << down.Describe();
  EXPECT_FALSE(tools::ProcessAlive(*sup));
  for (pid_t p : pids) EXPECT_FALSE(tools::ProcessAlive(p)) << p;
  EXPECT_FALSE(std::filesystem::exists(cluster_.dir() + "/supervisor.pid"));
  EXPECT_NE(ReadFile(cluster_.dir() + "/supervisor.log").find("every node is down"),
            std::string::npos);

  // A stopped cluster shows every node down, and that is not an error.
  CommandResult st2 = cluster_.Dtxctl({"status"});
  EXPECT_EQ(st2.exit_code, 0) << st2.Describe();
  EXPECT_NE(st2.out.find("supervisor: not running"), std::string::npos);
  EXPECT_NE(st2.out.find("down"), std::string::npos);
  EXPECT_EQ(st2.out.find(" up\n"), std::string::npos) << st2.out;

  // The same directory starts again with the same addresses.
  std::string conf = ReadFile(cluster_.dir() + "/cluster.conf");
  ASSERT_TRUE(cluster_.Up(FakeOptions(3)).ok());
  EXPECT_EQ(ReadFile(cluster_.dir() + "/cluster.conf"), conf);
  // A second `up` over a running cluster is refused.
  CommandResult again =
      cluster_.Dtxctl({"cluster", "up", "--participants", "3", "--bin-dir", bin_.path()});
  EXPECT_EQ(again.exit_code, 1) << again.Describe();
  EXPECT_NE(again.err.find("already running"), std::string::npos) << again.err;
}

TEST_F(DtxctlTest, KilledNodeIsRestartedBySupervisor) {
  ASSERT_TRUE(cluster_.Up(FakeOptions(2)).ok());
  pid_t old_pid = cluster_.NodePid("participant-1");
  ASSERT_GT(old_pid, 0);
  CommandResult k = cluster_.Dtxctl({"kill", "participant-1"});
  ASSERT_EQ(k.exit_code, 0) << k.Describe();
  ASSERT_TRUE(WaitFor(
      [&] {
        pid_t p = cluster_.NodePid("participant-1");
        return p > 0 && p != old_pid && tools::IsNodeProcess(p, "participant-1");
      },
      10s));
  EXPECT_TRUE(WaitFor(
      [&] {
        return ReadFile(cluster_.dir() + "/supervisor.log")
                   .find("restarted participant-1 (killed by signal 9)") != std::string::npos;
      },
      5s))
      << ReadFile(cluster_.dir() + "/supervisor.log");

  // restart = kill + wait until it answers again.
  pid_t before = cluster_.NodePid("coordinator-0");
  CommandResult r = cluster_.Dtxctl({"restart", "coordinator-0"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("restarted coordinator-0"), std::string::npos) << r.out;
  EXPECT_NE(cluster_.NodePid("coordinator-0"), before);
  CommandResult st = cluster_.Dtxctl({"status"});
  EXPECT_EQ(st.out.find("down"), std::string::npos) << st.out;

  CommandResult unknown = cluster_.Dtxctl({"kill", "participant-7"});
  EXPECT_EQ(unknown.exit_code, 1) << unknown.Describe();
  EXPECT_NE(unknown.err.find("no node 'participant-7'"), std::string::npos) << unknown.err;
}

// A node that exits with 74 (a sync of its WAL failed, common/exit_codes.h)
// is not restarted: the supervisor writes why to NODEDIR/stopped, `status`
// shows it, and `restart` is the operator's go-ahead.
TEST_F(DtxctlTest, NodeStoppedBySyncFailureStaysDownWithItsReasonUntilRestarted) {
  ASSERT_TRUE(cluster_.Up(FakeOptions(2)).ok());
  const pid_t old_pid = cluster_.NodePid("participant-1");
  ASSERT_GT(old_pid, 0);
  const std::string stopped = tools::NodeDir(cluster_.dir(), "participant-1") + "/stopped";
  CommandResult fp = cluster_.Dtxctl({"failpoint", "participant-1", "fake.exit", "74"});
  ASSERT_EQ(fp.exit_code, 0) << fp.Describe();
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(stopped); }, 10s));
  // Long enough for three restarts at the 100 ms backoff the supervisor
  // uses for any other exit status (NodeThatCannotStart... below).
  std::this_thread::sleep_for(1000ms);
  EXPECT_FALSE(tools::ProcessAlive(old_pid));
  EXPECT_EQ(cluster_.NodePid("participant-1"), -1);
  const std::string log = ReadFile(cluster_.dir() + "/supervisor.log");
  EXPECT_EQ(log.find("restarted participant-1"), std::string::npos) << log;
  EXPECT_NE(log.find("participant-1 stopped: exit status 74"), std::string::npos) << log;
  const std::string reason = ReadFile(stopped);
  EXPECT_NE(reason.find("exit status 74"), std::string::npos) << reason;
  EXPECT_NE(reason.find("a sync of its WAL failed"), std::string::npos) << reason;
  EXPECT_NE(reason.find("fail-stop: fake: told to exit with status 74"), std::string::npos)
      << reason;

  CommandResult st = cluster_.Dtxctl({"status"});
  ASSERT_EQ(st.exit_code, 0) << st.Describe();
  size_t row = st.out.find("\nparticipant-1 ");
  ASSERT_NE(row, std::string::npos) << st.out;
  const std::string rest = st.out.substr(row + 1);
  EXPECT_NE(rest.substr(0, rest.find('\n')).find(" stopped"), std::string::npos) << st.out;
  EXPECT_NE(rest.find("  stopped: exit status 74"), std::string::npos) << st.out;
  EXPECT_NE(rest.find("fail-stop: fake"), std::string::npos) << st.out;

  CommandResult r = cluster_.Dtxctl({"restart", "participant-1"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("participant-1 was stopped (exit status 74"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("restarted participant-1"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(stopped));
  pid_t new_pid = cluster_.NodePid("participant-1");
  EXPECT_TRUE(new_pid > 0 && tools::IsNodeProcess(new_pid, "participant-1"));
  st = cluster_.Dtxctl({"status"});
  EXPECT_EQ(st.out.find("stopped"), std::string::npos) << st.out;
  EXPECT_EQ(st.out.find("down"), std::string::npos) << st.out;

  // `cluster up` again is the other go-ahead: it removes the file.
  fp = cluster_.Dtxctl({"failpoint", "participant-1", "fake.exit", "74"});
  ASSERT_EQ(fp.exit_code, 0) << fp.Describe();
  ASSERT_TRUE(WaitFor([&] { return std::filesystem::exists(stopped); }, 10s));
  ASSERT_EQ(cluster_.Dtxctl({"cluster", "down"}).exit_code, 0);
  EXPECT_TRUE(std::filesystem::exists(stopped)) << "the reason outlives the supervisor";
  CommandResult up =
      cluster_.Dtxctl({"cluster", "up", "--participants", "2", "--bin-dir", bin_.path()});
  ASSERT_EQ(up.exit_code, 0) << up.Describe();
  EXPECT_NE(up.out.find("participant-1 was stopped (exit status 74"), std::string::npos) << up.out;
  EXPECT_FALSE(std::filesystem::exists(stopped));
  new_pid = cluster_.NodePid("participant-1");
  EXPECT_TRUE(new_pid > 0 && tools::IsNodeProcess(new_pid, "participant-1"));
}

TEST_F(DtxctlTest, BackupCoordinatorStartsWithRolesAndRestartsAsBackupAfterFailover) {
  auto o = FakeOptions(1);
  o.backup = true;
  ASSERT_TRUE(cluster_.Up(o).ok());
  const tools::NodeEntry* c0 = cluster_.config().Find("coordinator-0");
  const tools::NodeEntry* c1 = cluster_.config().Find("coordinator-1");
  ASSERT_TRUE(c0 != nullptr && c1 != nullptr);
  auto args_of = [&](const std::string& node) {
    return ReadFile("/proc/" + std::to_string(cluster_.NodePid(node)) + "/cmdline");
  };
  auto has = [](const std::string& cmdline, const std::string& a, const std::string& b) {
    return cmdline.find(a + std::string(1, '\0') + b + std::string(1, '\0')) != std::string::npos;
  };
  EXPECT_TRUE(has(args_of("coordinator-0"), "--role", "primary"));
  // Peers by their peer listeners; clients sent to the client listeners.
  ASSERT_FALSE(c0->peer_address.empty());
  ASSERT_FALSE(c1->peer_address.empty());
  EXPECT_TRUE(has(args_of("coordinator-0"), "--peer-listen", c0->peer_address));
  EXPECT_TRUE(has(args_of("coordinator-0"), "--peer", "coordinator-1=" + c1->peer_address));
  EXPECT_TRUE(has(args_of("coordinator-0"), "--peer-client", c1->address));
  EXPECT_TRUE(has(args_of("coordinator-1"), "--role", "backup"));
  EXPECT_TRUE(has(args_of("coordinator-1"), "--peer", "coordinator-0=" + c0->peer_address));
  EXPECT_TRUE(has(args_of("coordinator-1"), "--peer-client", c0->address));
  // The participant still names coordinator-0 (the primary at start).
  EXPECT_TRUE(has(args_of("participant-0"), "--coordinator", c0->peer_address));
  // ... and every coordinator by name, for its access policy.
  EXPECT_TRUE(has(args_of("participant-0"), "--coordinators",
                  "coordinator-0=" + c0->peer_address + ",coordinator-1=" + c1->peer_address));
  // The primary dies with its peer still a backup: it comes back as primary.
  CommandResult r = cluster_.Dtxctl({"restart", "coordinator-0"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(has(args_of("coordinator-0"), "--role", "primary"));
  // After a failover (the backup reports "primary") it comes back as backup.
  r = cluster_.Dtxctl({"failpoint", "coordinator-1", "fake.role", "primary"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  r = cluster_.Dtxctl({"restart", "coordinator-0"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_TRUE(has(args_of("coordinator-0"), "--role", "backup"));
  EXPECT_NE(ReadFile(cluster_.dir() + "/supervisor.log")
                .find("coordinator-1 is primary now; starting coordinator-0 as backup"),
            std::string::npos);
  // The directory remembers it has a backup.
  ASSERT_EQ(cluster_.Dtxctl({"cluster", "down"}).exit_code, 0);
  CommandResult without =
      cluster_.Dtxctl({"cluster", "up", "--participants", "1", "--bin-dir", bin_.path()});
  EXPECT_EQ(without.exit_code, 1) << without.Describe();
  EXPECT_NE(without.err.find("with a backup coordinator"), std::string::npos) << without.err;
}

TEST_F(DtxctlTest, NodeThatCannotStartFailsUpAndLeavesNothingRunning) {
  auto o = FakeOptions(2);
  o.up_timeout_s = 3;
  o.env = {"DTX_FAKE_EXIT_AT_START=3", "DTX_FAKE_EXIT_NODE=participant-1"};
  Status s = cluster_.Up(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("participant-1"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("exiting at start as told"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("exit 1"), std::string::npos) << s.message();
  auto config = tools::ClusterConfig::Load(cluster_.dir());
  ASSERT_TRUE(config.ok());
  for (const auto& n : config->nodes()) {
    auto pid = tools::ReadPidFile(tools::NodeDir(cluster_.dir(), n.name) + "/pid");
    EXPECT_FALSE(pid.ok() && tools::IsNodeProcess(*pid, n.name)) << n.name << " still runs";
  }
  EXPECT_FALSE(std::filesystem::exists(cluster_.dir() + "/supervisor.pid"));
  // The supervisor logged the restarts it tried, backing off more each time.
  std::string log = ReadFile(cluster_.dir() + "/supervisor.log");
  EXPECT_NE(log.find("participant-1 exited (exit status 3)"), std::string::npos) << log;
  for (const char* backoff :
       {"restarting in 100 ms", "restarting in 200 ms", "restarting in 400 ms"}) {
    EXPECT_NE(log.find(backoff), std::string::npos) << backoff << "\n" << log;
  }
}

TEST_F(DtxctlTest, DownKillsNodesThatIgnoreSigtermAfterTheGracePeriod) {
  auto o = FakeOptions(2);
  o.env = {"DTX_FAKE_IGNORE_SIGTERM=1"};
  o.up_flags.insert(o.up_flags.end(), {"--stop-grace-ms", "300"});
  ASSERT_TRUE(cluster_.Up(o).ok());
  std::vector<pid_t> pids = AllNodePids();
  auto start = std::chrono::steady_clock::now();
  CommandResult down = cluster_.Dtxctl({"cluster", "down"});
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(down.exit_code, 0) << down.Describe();
  for (pid_t p : pids) EXPECT_FALSE(tools::ProcessAlive(p)) << p;
  EXPECT_LT(took, 5s);
  std::string log = ReadFile(cluster_.dir() + "/supervisor.log");
  EXPECT_NE(log.find("still running after 300 ms; SIGKILL"), std::string::npos) << log;
  EXPECT_NE(log.find("participant-1 stopped (killed by signal 9)"), std::string::npos) << log;
}

TEST_F(DtxctlTest, MissingBinariesAreReportedNotStarted) {
  TempDir empty("dtx-empty-bin");
  auto o = FakeOptions(1);
  o.bin_dir = empty.path();
  Status s = cluster_.Up(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cannot find dtx-participant"), std::string::npos) << s.message();
}

TEST_F(DtxctlTest, FailpointAndInDoubtCallTheNodes) {
  ASSERT_TRUE(cluster_.Up(FakeOptions(2)).ok());
  CommandResult ok = cluster_.Dtxctl({"failpoint", "participant-0", "wal.before_sync", "sleep(5)"});
  ASSERT_EQ(ok.exit_code, 0) << ok.Describe();
  // The fake node reports what was armed in its status counters.
  CommandResult bad = cluster_.Dtxctl({"failpoint", "participant-1", "bad", "crash"});
  EXPECT_EQ(bad.exit_code, 1) << bad.Describe();
  EXPECT_NE(bad.err.find("unknown failpoint 'bad'"), std::string::npos) << bad.err;
  CommandResult id = cluster_.Dtxctl({"in-doubt"});
  EXPECT_EQ(id.exit_code, 0) << id.Describe();
  EXPECT_NE(id.out.find("0 in-doubt transaction(s)"), std::string::npos) << id.out;
  // A participant that does not answer makes in-doubt incomplete: exit 1.
  pid_t p0 = cluster_.NodePid("participant-0");
  ASSERT_EQ(::kill(p0, SIGSTOP), 0);
  CommandResult partial = cluster_.Dtxctl({"in-doubt"});
  ::kill(p0, SIGCONT);
  EXPECT_EQ(partial.exit_code, 1) << partial.Describe();
  EXPECT_NE(partial.err.find("participant-0"), std::string::npos) << partial.err;
}

// The stand-in nodes serve neither GetTrace nor /metrics: trace marks every
// node as not answering and fails; top still shows them from GetStatus, and a
// stopped node as DOWN.
TEST_F(DtxctlTest, TraceAndTopAgainstNodesWithoutTracing) {
  ASSERT_TRUE(cluster_.Up(FakeOptions(2)).ok());
  const std::string txid = "0123456789abcdef0123456789abcdef";
  CommandResult r = cluster_.Dtxctl({"trace", txid});
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  for (const char* n : {"coordinator-0", "participant-0", "participant-1"}) {
    EXPECT_NE(r.out.find(std::string(n) + ": NO ANSWER ("), std::string::npos) << r.out;
  }
  EXPECT_NE(r.err.find("no node answered for txid " + txid), std::string::npos) << r.err;
  r = cluster_.Dtxctl({"top", "--interval-ms", "100", "--iterations", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("frame 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("frame 2"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("DOWN"), std::string::npos) << r.out;

  pid_t p0 = cluster_.NodePid("participant-0");
  ASSERT_EQ(::kill(p0, SIGSTOP), 0);
  CommandResult traced = cluster_.Dtxctl({"trace", txid, "--json", "--timeout-ms", "300"});
  CommandResult top = cluster_.Dtxctl({"top", "--interval-ms", "100", "--iterations", "1"});
  ::kill(p0, SIGCONT);
  EXPECT_EQ(traced.exit_code, 1) << traced.Describe();
  const nlohmann::json trace =
      nlohmann::json::parse(traced.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(trace.is_object()) << traced.out;
  EXPECT_EQ(trace.value("state", ""), "not_found") << traced.out;
  bool timed_out = false;
  for (const nlohmann::json& n : trace.value("unanswered", nlohmann::json::array())) {
    timed_out = timed_out ||
                (n.value("node", "") == "participant-0" && n.value("error", "") == "timed out");
  }
  EXPECT_TRUE(timed_out) << traced.out;
  ASSERT_EQ(top.exit_code, 0) << top.Describe();
  std::istringstream lines(top.out);
  std::string line;
  bool down = false;
  while (std::getline(lines, line)) {
    if (line.rfind("participant-0 ", 0) == 0) down = line.find(" DOWN ") != std::string::npos;
  }
  EXPECT_TRUE(down) << top.out;
}

TEST_F(DtxctlTest, DownCleansUpNodesOfAKilledSupervisor) {
  ASSERT_TRUE(cluster_.Up(FakeOptions(1)).ok());
  auto sup = tools::ReadPidFile(cluster_.dir() + "/supervisor.pid");
  ASSERT_TRUE(sup.ok());
  std::vector<pid_t> pids = AllNodePids();
  ASSERT_EQ(::kill(*sup, SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return !tools::ProcessAlive(*sup); }, 5s));
  for (pid_t p : pids) EXPECT_TRUE(tools::ProcessAlive(p));
  // `up` refuses while the orphans run.
  CommandResult up =
      cluster_.Dtxctl({"cluster", "up", "--participants", "1", "--bin-dir", bin_.path()});
  EXPECT_EQ(up.exit_code, 1) << up.Describe();
  EXPECT_NE(up.err.find("still running"), std::string::npos) << up.err;
  CommandResult down = cluster_.Dtxctl({"cluster", "down"});
  EXPECT_EQ(down.exit_code, 0) << down.Describe();
  for (pid_t p : pids) EXPECT_FALSE(tools::ProcessAlive(p)) << p;
}

TEST_F(DtxctlTest, DownWithoutAClusterIsANoOp) {
  CommandResult r = cluster_.Dtxctl({"cluster", "down"});
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  CommandResult st = cluster_.Dtxctl({"status"});
  EXPECT_EQ(st.exit_code, 1) << st.Describe();
  EXPECT_NE(st.err.find("no cluster in"), std::string::npos) << st.err;
}

// ---------------------------------------------------------------------------
// Certificates (tools/certs_cmd.h, common/certs.h).

mode_t FileMode(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// `dtxctl certs show FILE --ca CA`: exit 0 only if FILE verifies against CA.
CommandResult ShowVerified(const std::string& file, const std::string& ca) {
  return RunCommand({DtxctlPath(), "certs", "show", file, "--ca", ca}, 10000);
}

TEST(DtxctlCertsTest, CommandsMakeCertificatesThatVerifyAgainstTheirCa) {
  TempDir tmp("dtx-certs");
  const std::string dir = tmp.path() + "/certs";
  const std::string d = DtxctlPath();
  CommandResult ca = RunCommand({d, "certs", "create-ca", "--dir", dir}, 10000);
  ASSERT_EQ(ca.exit_code, 0) << ca.Describe();
  EXPECT_EQ(FileMode(dir + "/ca.key"), 0600u);
  struct Made {
    std::vector<std::string> argv;
    std::string name;
    std::string kind;
    std::string usage;
  };
  for (const Made& m : std::vector<Made>{
           {{"create-node", "participant-1", "--san", "10.1.2.3"},
            "participant-1",
            "participant",
            "serverAuth clientAuth"},
           {{"create-node", "coordinator-0"},
            "coordinator-0",
            "coordinator",
            "serverAuth clientAuth"},
           {{"create-node", "admin"}, "admin", "admin", "clientAuth"},
           {{"create-client", "bench"}, "bench", "client", "clientAuth"},
       }) {
    std::vector<std::string> argv = {d, "certs"};
    argv.insert(argv.end(), m.argv.begin(), m.argv.end());
    argv.insert(argv.end(), {"--dir", dir});
    CommandResult r = RunCommand(argv, 10000);
    ASSERT_EQ(r.exit_code, 0) << m.name << ": " << r.Describe();
    EXPECT_EQ(FileMode(dir + "/" + m.name + ".key"), 0600u) << m.name;
    CommandResult show = ShowVerified(dir + "/" + m.name + ".crt", dir + "/ca.crt");
    EXPECT_EQ(show.exit_code, 0) << m.name << ": " << show.Describe();
    EXPECT_NE(show.out.find("name     " + m.name + "\n"), std::string::npos) << show.out;
    EXPECT_NE(show.out.find("kind     " + m.kind + "\n"), std::string::npos) << show.out;
    EXPECT_NE(show.out.find("usage    " + m.usage + "\n"), std::string::npos) << show.out;
    EXPECT_NE(show.out.find("verified against"), std::string::npos) << show.out;
  }
  CommandResult p1 = ShowVerified(dir + "/participant-1.crt", dir + "/ca.crt");
  EXPECT_NE(p1.out.find("DNS:participant-1 IP:10.1.2.3"), std::string::npos) << p1.out;

  // Against another cluster's CA the same certificate does not verify.
  const std::string other = tmp.path() + "/other";
  ASSERT_EQ(RunCommand({d, "certs", "create-ca", "--dir", other}, 10000).exit_code, 0);
  CommandResult foreign = ShowVerified(dir + "/bench.crt", other + "/ca.crt");
  EXPECT_EQ(foreign.exit_code, 1) << foreign.Describe();
  EXPECT_NE(foreign.err.find("does not verify"), std::string::npos) << foreign.err;
}

TEST(DtxctlCertsTest, MistakesGetClearErrors) {
  TempDir tmp("dtx-certs");
  const std::string dir = tmp.path() + "/certs";
  const std::string d = DtxctlPath();
  struct Case {
    std::vector<std::string> args;
    int exit_code;
    std::string expect;
  };
  for (const Case& c : std::vector<Case>{
           {{"certs"}, 2, "expected create-ca"},
           {{"certs", "frobnicate"}, 2, "unknown subcommand"},
           {{"certs", "create-node"}, 2, "name"},
           {{"certs", "create-node", "participant-0", "--dir", dir}, 1, "create-ca --dir " + dir},
           {{"certs", "create-node", "bench", "--dir", dir}, 2, "create-client bench"},
           {{"certs", "create-node", "participant-01", "--dir", dir}, 2, "create-client"},
           {{"certs", "create-client", "coordinator-0", "--dir", dir}, 2, "create-node"},
           {{"certs", "create-client", "Bad_Name", "--dir", dir}, 2, "lower-case"},
           {{"certs", "create-ca", "--dir", dir, "--key-type", "dsa"}, 2, "--key-type"},
           {{"certs", "show", tmp.path() + "/missing.crt"}, 1, "missing.crt"},
       }) {
    std::vector<std::string> argv = {d};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    CommandResult r = RunCommand(argv, 10000);
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    EXPECT_EQ(r.exit_code, c.exit_code) << joined << r.Describe();
    EXPECT_NE(r.err.find("dtxctl certs: "), std::string::npos) << joined << r.Describe();
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << joined << r.Describe();
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/participant-0.key"));

  // A second create-ca keeps the key in use.
  ASSERT_EQ(RunCommand({d, "certs", "create-ca", "--dir", dir}, 10000).exit_code, 0);
  const std::string key = ReadFile(dir + "/ca.key");
  CommandResult again = RunCommand({d, "certs", "create-ca", "--dir", dir}, 10000);
  EXPECT_EQ(again.exit_code, 1) << again.Describe();
  EXPECT_NE(again.err.find("--overwrite"), std::string::npos) << again.err;
  EXPECT_EQ(ReadFile(dir + "/ca.key"), key);
  CommandResult overwrite =
      RunCommand({d, "certs", "create-ca", "--dir", dir, "--overwrite"}, 10000);
  EXPECT_EQ(overwrite.exit_code, 0) << overwrite.Describe();
  EXPECT_NE(ReadFile(dir + "/ca.key"), key);
}

TEST_F(DtxctlTest, UpCreatesTheCaAndEveryCertificate) {
  ASSERT_TRUE(cluster_.Up(FakeOptions(2)).ok());
  auto security = tools::ClusterSecurity::Load(cluster_.dir());
  ASSERT_TRUE(security.ok()) << security.status().ToString();
  EXPECT_TRUE(security->tls);
  const std::string certs = security->CertsDir(cluster_.dir());
  EXPECT_EQ(certs, cluster_.dir() + "/certs");
  EXPECT_EQ(FileMode(certs), 0700u);
  EXPECT_EQ(FileMode(certs + "/ca.key"), 0600u);
  std::vector<std::string> names = {"admin", "client"};
  for (const auto& n : cluster_.config().nodes()) names.push_back(n.name);
  ASSERT_EQ(names.size(), 5u);
  for (const std::string& name : names) {
    EXPECT_EQ(FileMode(certs + "/" + name + ".key"), 0600u) << name;
    CommandResult show = ShowVerified(certs + "/" + name + ".crt", certs + "/ca.crt");
    EXPECT_EQ(show.exit_code, 0) << name << ": " << show.Describe();
    EXPECT_NE(show.out.find("name     " + name + "\n"), std::string::npos) << show.out;
  }
  // Node certificates also name the host the node listens on.
  CommandResult p0 = ShowVerified(certs + "/participant-0.crt", certs + "/ca.crt");
  EXPECT_NE(p0.out.find("IP:127.0.0.1"), std::string::npos) << p0.out;

  // Starting the directory again keeps the CA and the certificates, except one
  // that no longer verifies against the CA: here participant-1's, replaced by
  // one from another CA.
  const std::string ca = ReadFile(certs + "/ca.crt");
  const std::string client_key = ReadFile(certs + "/client.key");
  TempDir other("dtx-other-ca");
  ASSERT_EQ(
      RunCommand({DtxctlPath(), "certs", "create-ca", "--dir", other.path()}, 10000).exit_code, 0);
  ASSERT_EQ(
      RunCommand({DtxctlPath(), "certs", "create-node", "participant-1", "--dir", other.path()},
                 10000)
          .exit_code,
      0);
  for (const char* ext : {".crt", ".key"}) {
    std::filesystem::copy_file(other.path() + "/participant-1" + ext,
                               certs + "/participant-1" + ext,
                               std::filesystem::copy_options::overwrite_existing);
  }
  ASSERT_NE(ShowVerified(certs + "/participant-1.crt", certs + "/ca.crt").exit_code, 0);
  cluster_.Down();
  ASSERT_TRUE(cluster_.Up(FakeOptions(2)).ok());
  EXPECT_EQ(ReadFile(certs + "/ca.crt"), ca);
  EXPECT_EQ(ReadFile(certs + "/client.key"), client_key);
  CommandResult p1 = ShowVerified(certs + "/participant-1.crt", certs + "/ca.crt");
  EXPECT_EQ(p1.exit_code, 0) << p1.Describe();
}

TEST_F(DtxctlTest, UpInsecureCreatesNoCertificatesAndWarns) {
  TempDir dir("dtx-insecure");
  struct DownOnExit {
    std::string dir;
    ~DownOnExit() { RunCommand({DtxctlPath(), "cluster", "down", "--dir", dir}, 30000); }
  } down{dir.path()};
  CommandResult up =
      RunCommand({DtxctlPath(), "cluster", "up", "--dir", dir.path(), "--participants", "1",
                  "--bin-dir", bin_.path(), "--timeout", "10", "--insecure"},
                 40000);
  ASSERT_EQ(up.exit_code, 0) << up.Describe();
  EXPECT_NE(up.err.find("--insecure: nodes accept plaintext from anyone"), std::string::npos)
      << up.err;
  EXPECT_NE(up.out.find("INSECURE"), std::string::npos) << up.out;
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/certs"));
  auto security = tools::ClusterSecurity::Load(dir.path());
  ASSERT_TRUE(security.ok()) << security.status().ToString();
  EXPECT_FALSE(security->tls);
  EXPECT_EQ(security->CertsDir(dir.path()), "");
}

}  // namespace
}  // namespace dtx::testing
