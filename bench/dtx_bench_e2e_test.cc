// dtx-bench end to end against a local cluster (3 participants): the JSON
// report is complete, the bank invariant holds (checked by the bench, by its
// periodic consistent checks while a participant is killed, and again here),
// open loop runs, `plot` draws, bad flags exit 2.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
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
using Json = nlohmann::json;

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
  // The report at `path`; an empty object (and a failure) if it is not JSON.
  Json ReadJson(const std::string& path) {
    std::ifstream in(path);
    Json t = Json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (t.is_discarded() || !t.is_object()) {
      ADD_FAILURE() << path << ": not a JSON object";
      return Json::object();
    }
    return t;
  }
  // The number at a JSON pointer ("/latency_us/p50"), or `fallback`.
  static double Num(const Json& t, const char* pointer, double fallback) {
    const Json::json_pointer p(pointer);
    return t.contains(p) && t.at(p).is_number() ? t.at(p).get<double>() : fallback;
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
  Json t = ReadJson(json);
  for (std::string key : {"workload",
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
    std::replace(key.begin(), key.end(), '.', '/');
    EXPECT_TRUE(t.contains(Json::json_pointer("/" + key))) << "missing " << key;
  }
  EXPECT_EQ(t.value("workload", ""), "bank");
  EXPECT_EQ(t.value("participants", 0), 3);
  EXPECT_EQ(t.value("invariant_ok", false), true);
  EXPECT_EQ(t.value("total_balance", int64_t{0}), int64_t{kAccounts} * 1000);
  EXPECT_GT(t.value("committed", int64_t{0}), 0);
  // Every committed transaction made the nodes wait for a message or a disk.
  EXPECT_GT(Num(t, "/context_switches_per_tx/voluntary", 0), 0);
  double p50 = Num(t, "/latency_us/p50", -1), p99 = Num(t, "/latency_us/p99", -1),
         mx = Num(t, "/latency_us/max", -1);
  EXPECT_GT(p50, 0);
  EXPECT_LE(p50, p99);
  EXPECT_LE(p99, mx * (1 + 1.0 / 128));
  // The coordinator's per-phase split: every committed transaction reports
  // prepare; full-2PC ones report decision; both fit inside commit.
  EXPECT_GT(Num(t, "/phases_us/prepare/count", 0), 0);
  EXPECT_GT(Num(t, "/phases_us/decision/count", 0), 0);
  EXPECT_GT(Num(t, "/phases_us/decision/p50", 0), 0);
  EXPECT_LE(Num(t, "/phases_us/prepare/p50", 1e18), Num(t, "/phases_us/commit/p50", 0));
  EXPECT_LE(Num(t, "/phases_us/decision/p50", 1e18), Num(t, "/phases_us/commit/p50", 0));
  EXPECT_GT(Num(t, "/floor/fsync_p50_us", 0), 0);
  EXPECT_GT(Num(t, "/floor/rtt_p50_us", 0), 0);
  // The timeline covers warm-up + duration, one row per second.
  EXPECT_GE(t.value("timeline", Json::array()).size(), 5u);
  EXPECT_GE(t.value("latency_cdf_us", Json::array()).size(), 100u);
  // The fault ran at ~2 s and succeeded.
  const Json faults = t.value("faults", Json::array());
  ASSERT_EQ(faults.size(), 1u);
  const Json& f = faults.front();
  EXPECT_EQ(f.value("event", ""), "at 2s kill participant-1");
  EXPECT_EQ(f.value("exit_code", -1), 0) << f.value("error", "");
  EXPECT_NEAR(f.value("ran_at_s", -1.0), 2.0, 0.5);
  // Periodic consistent checks ran; none saw a violation.
  const Json checks = t.value("checks", Json::array());
  EXPECT_GE(checks.size(), 3u);
  int ok = 0;
  for (const Json& c : checks) {
    EXPECT_NE(c.value("outcome", ""), "violated") << c.value("detail", "");
    ok += c.value("outcome", "") == "ok" ? 1 : 0;
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
  Json o = ReadJson(open_json);
  EXPECT_EQ(o.value("load", ""), "open");
  EXPECT_GT(o.value("committed", int64_t{0}), 100);  // ~400 offered
  EXPECT_TRUE(o.contains(Json::json_pointer("/start_delay_us/p99")));
  // Every committed transaction spanned exactly 2 participants.
  EXPECT_EQ(o.value("participants_per_committed_tx", Json::object()).size(), 1u);
  EXPECT_TRUE(o.contains(Json::json_pointer("/participants_per_committed_tx/2")));

  std::vector<std::string> jsons;
  for (const char* w : {"ycsb-b", "ycsb-f"}) {
    for (const char* c : {"1", "8"}) {
      std::string j = out_.path() + "/" + w + "-" + c + ".json";
      CommandResult c2 = RunCommand(
          {DTX_BENCH_PATH, "--workload", w, "--cluster", cluster_.dir(), "--clients", c,
           "--duration", "1", "--warmup", "0.2", "--keys", "500", "--json", j, "--no-progress"},
          120000);
      ASSERT_EQ(c2.exit_code, 0) << c2.Describe();
      EXPECT_GT(ReadJson(j).value("committed", int64_t{0}), 0) << j;
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
