// dtx-bench end to end against a local cluster (3 participants): the JSON
// report is complete, the bank invariant holds (checked by the bench, by its
// periodic consistent checks while a participant is killed, and again here),
// open loop runs, `plot` draws, bad flags exit 2.
#include <gtest/gtest.h>

#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "dtx/client.h"
#include "tests/harness.h"

namespace dtx::bench {
namespace {

using testing::CommandResult;
using testing::LocalCluster;
using testing::RunCommand;
using testing::TempDir;
namespace pt = boost::property_tree;

class BenchE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LocalCluster::Options o;
    o.participants = 3;
    o.participant_bin = DTX_PARTICIPANT_PATH;
    o.coordinator_bin = DTX_COORDINATOR_PATH;
    Status s = cluster_.Up(o);
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << cluster_.LogTails(20);
    cluster_.Down();
  }
  pt::ptree ReadJson(const std::string& path) {
    pt::ptree t;
    try {
      pt::read_json(path, t);
    } catch (const std::exception& e) {
      ADD_FAILURE() << path << ": " << e.what();
    }
    return t;
  }
  LocalCluster cluster_;
  TempDir out_{"dtx-bench-e2e"};
};

TEST_F(BenchE2eTest, BankReportIsCompleteAndTheInvariantHoldsThroughAKill) {
  constexpr int kAccounts = 300;
  std::string json = out_.path() + "/bank.json";
  CommandResult r = RunCommand({DTX_BENCH_PATH,
                                "--workload",
                                "bank",
                                "--cluster",
                                cluster_.dir(),
                                "--clients",
                                "16",
                                "--duration",
                                "5",
                                "--warmup",
                                "0.5",
                                "--accounts",
                                std::to_string(kAccounts),
                                "--check-interval",
                                "1",
                                "--faults",
                                "at 2s kill participant-1",
                                "--floor",
                                "--json",
                                json,
                                "--seed",
                                "7"},
                               180000);
  std::cout << r.out;
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("invariant: ok"), std::string::npos);
  EXPECT_NE(r.err.find("measuring"), std::string::npos) << "no progress line: " << r.err;
  pt::ptree t = ReadJson(json);
  for (const char* key : {"workload",
                          "command",
                          "machine.load_average",
                          "participants",
                          "clients",
                          "keys_per_tx",
                          "distribution",
                          "duration_s",
                          "committed",
                          "committed_per_s",
                          "not_committed",
                          "abort_rate",
                          "not_committed_by_reason",
                          "latency_us.p50",
                          "latency_us.p90",
                          "latency_us.p99",
                          "latency_us.p999",
                          "latency_us.max",
                          "phases_us.read.p99",
                          "phases_us.commit.p99",
                          "phases_us.prepare.p99",
                          "phases_us.decision.p99",
                          "phases_us.total.p999",
                          "phases_us.note",
                          "latency_cdf_us",
                          "participants_per_committed_tx",
                          "timeline",
                          "faults",
                          "checks",
                          "floor.fsync_p50_us",
                          "floor.rtt_p50_us",
                          "floor.commit_floor_us",
                          "floor.commit_p50_ratio",
                          "cpu_per_tx_us",
                          "context_switches_per_tx.voluntary",
                          "context_switches_per_tx.involuntary",
                          "client_context_switches_per_tx.voluntary",
                          "total_balance",
                          "invariant_ok"}) {
    EXPECT_TRUE(t.get_child_optional(pt::ptree::path_type(key, '.')).has_value())
        << "missing " << key;
  }
  EXPECT_EQ(t.get<std::string>("workload", ""), "bank");
  EXPECT_EQ(t.get<int>("participants", 0), 3);
  EXPECT_EQ(t.get<std::string>("invariant_ok", ""), "true");
  EXPECT_EQ(t.get<int64_t>("total_balance", 0), int64_t{kAccounts} * 1000);
  EXPECT_GT(t.get<int64_t>("committed", 0), 0);
  // Every committed transaction made the nodes wait for a message or a disk.
  EXPECT_GT(t.get<double>("context_switches_per_tx.voluntary", 0), 0);
  double p50 = t.get<double>("latency_us.p50", -1), p99 = t.get<double>("latency_us.p99", -1),
         mx = t.get<double>("latency_us.max", -1);
  EXPECT_GT(p50, 0);
  EXPECT_LE(p50, p99);
  EXPECT_LE(p99, mx * (1 + 1.0 / 128));
  // The coordinator's per-phase split: every committed transaction reports
  // prepare; full-2PC ones report decision; both fit inside commit.
  EXPECT_GT(t.get<int64_t>("phases_us.prepare.count", 0), 0);
  EXPECT_GT(t.get<int64_t>("phases_us.decision.count", 0), 0);
  EXPECT_GT(t.get<double>("phases_us.decision.p50", 0), 0);
  EXPECT_LE(t.get<double>("phases_us.prepare.p50", 1e18), t.get<double>("phases_us.commit.p50", 0));
  EXPECT_LE(t.get<double>("phases_us.decision.p50", 1e18),
            t.get<double>("phases_us.commit.p50", 0));
  EXPECT_GT(t.get<double>("floor.fsync_p50_us", 0), 0);
  EXPECT_GT(t.get<double>("floor.rtt_p50_us", 0), 0);
  // The timeline covers warm-up + duration, one row per second.
  EXPECT_GE(t.get_child("timeline").size(), 5u);
  EXPECT_GE(t.get_child("latency_cdf_us").size(), 100u);
  // The fault ran at ~2 s and succeeded.
  ASSERT_EQ(t.get_child("faults").size(), 1u);
  const pt::ptree& f = t.get_child("faults").front().second;
  EXPECT_EQ(f.get<std::string>("event"), "at 2s kill participant-1");
  EXPECT_EQ(f.get<int>("exit_code"), 0) << f.get<std::string>("error");
  EXPECT_NEAR(f.get<double>("ran_at_s"), 2.0, 0.5);
  // Periodic consistent checks ran; none saw a violation.
  EXPECT_GE(t.get_child("checks").size(), 3u);
  int ok = 0;
  for (const auto& [k, c] : t.get_child("checks")) {
    EXPECT_NE(c.get<std::string>("outcome"), "violated") << c.get<std::string>("detail");
    ok += c.get<std::string>("outcome") == "ok" ? 1 : 0;
  }
  EXPECT_GE(ok, 1);

  // The total once more, independently: one read-only transaction.
  auto client = Client::Connect(cluster_.ClientOptionsFor());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  int64_t total = 0;
  Status s = (*client)->Run([&](Transaction& tx) -> Status {
    total = 0;
    for (int i = 0; i < kAccounts; ++i) {
      char key[32];
      std::snprintf(key, sizeof(key), "acct/%08d", i);
      auto v = tx.Get(key);
      if (!v.ok()) return v.status();
      if (!v->has_value()) return Status::Corruption(std::string(key) + " missing");
      total += std::stoll(**v);
    }
    return Status::OK();
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(total, int64_t{kAccounts} * 1000);

  // plot: timeline + CDF from one report.
  std::string prefix = out_.path() + "/pic";
  CommandResult p = RunCommand({DTX_BENCH_PATH, "plot", json, "--out", prefix}, 60000);
  ASSERT_EQ(p.exit_code, 0) << p.Describe();
  for (const char* suffix : {"-timeline.png", "-cdf.png"}) {
    std::ifstream png(prefix + suffix, std::ios::binary);
    char magic[4] = {};
    png.read(magic, 4);
    EXPECT_EQ(std::string(magic + 1, 3), "PNG") << prefix + suffix;
  }
}

TEST_F(BenchE2eTest, YcsbOpenLoopAndClosedLoopReportsAndASweepPlot) {
  std::string open_json = out_.path() + "/open.json";
  CommandResult r = RunCommand({DTX_BENCH_PATH,
                                "--workload",
                                "ycsb-a",
                                "--cluster",
                                cluster_.dir(),
                                "--rate",
                                "200",
                                "--duration",
                                "2",
                                "--warmup",
                                "0.2",
                                "--keys",
                                "500",
                                "--value-size",
                                "64",
                                "--distribution",
                                "zipfian",
                                "--theta",
                                "0.9",
                                "--keys-per-tx",
                                "3",
                                "--participants-per-tx",
                                "2",
                                "--json",
                                open_json,
                                "--no-progress"},
                               120000);
  std::cout << r.out;
  ASSERT_EQ(r.exit_code, 0) << r.Describe();
  pt::ptree o = ReadJson(open_json);
  EXPECT_EQ(o.get<std::string>("load", ""), "open");
  EXPECT_GT(o.get<int64_t>("committed", 0), 100);  // ~400 offered
  EXPECT_TRUE(o.get_child_optional("start_delay_us.p99").has_value());
  // Every committed transaction spanned exactly 2 participants.
  EXPECT_EQ(o.get_child("participants_per_committed_tx").size(), 1u);
  EXPECT_TRUE(o.get_child_optional("participants_per_committed_tx.2").has_value());

  std::vector<std::string> jsons;
  for (const char* w : {"ycsb-b", "ycsb-f"}) {
    for (const char* c : {"1", "8"}) {
      std::string j = out_.path() + "/" + w + "-" + c + ".json";
      CommandResult c2 = RunCommand(
          {DTX_BENCH_PATH, "--workload", w, "--cluster", cluster_.dir(), "--clients", c,
           "--duration", "1", "--warmup", "0.2", "--keys", "500", "--json", j, "--no-progress"},
          120000);
      ASSERT_EQ(c2.exit_code, 0) << c2.Describe();
      EXPECT_GT(ReadJson(j).get<int64_t>("committed", 0), 0) << j;
      jsons.push_back(j);
    }
  }
  std::vector<std::string> argv = {DTX_BENCH_PATH, "plot"};
  argv.insert(argv.end(), jsons.begin(), jsons.end());
  argv.insert(argv.end(), {"--out", out_.path() + "/sweep", "--format", "svg"});
  CommandResult p = RunCommand(argv, 60000);
  ASSERT_EQ(p.exit_code, 0) << p.Describe();
  std::ifstream svg(out_.path() + "/sweep-sweep.svg");
  std::string head(200, '\0');
  svg.read(head.data(), 200);
  EXPECT_NE(head.find("<svg"), std::string::npos) << head;
}

TEST_F(BenchE2eTest, BadFlagsAndBadFaultNodesExitTwo) {
  std::string b = DTX_BENCH_PATH;
  std::string d = cluster_.dir();
  for (const std::vector<std::string>& argv : std::vector<std::vector<std::string>>{
           {b, "--workload", "bank", "--cluster", d, "--clients", "4", "--duration", "1",
            "--faults", "at 1s boom participant-0"},
           {b, "--workload", "bank", "--cluster", d, "--clients", "4", "--duration", "1",
            "--faults", "at 1s kill participant-9"},
           {b, "--workload", "ycsb-f", "--cluster", d, "--clients", "4", "--rate", "5",
            "--duration", "1"},
           {b, "--workload", "ycsb-b", "--cluster", d, "--clients", "4", "--duration", "1",
            "--distribution", "pareto"},
           {b, "plot"},
           {b, "plot", "x.json", "--format", "gif"},
       }) {
    CommandResult r = RunCommand(argv, 30000);
    EXPECT_EQ(r.exit_code, 2) << r.Describe();
    EXPECT_NE(r.err.find("dtx-bench: "), std::string::npos) << r.Describe();
  }
  // A report that is not one: exit 1 with a message.
  std::string bad = out_.path() + "/bad.json";
  std::ofstream(bad) << "{\"workload\": 1";
  CommandResult r = RunCommand({b, "plot", bad}, 30000);
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("not a dtx-bench report"), std::string::npos) << r.Describe();
}

}  // namespace
}  // namespace dtx::bench
