// `dtx-bench plot` reading reports back (bench/dtx_bench_plot.h): a report
// as dtx-bench writes it gives the figures plot draws; a truncated, mistyped
// or incomplete one gives an error naming the file, never an exception.
#include "bench/dtx_bench_plot.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/dtx_bench_lib.h"

namespace dtx::bench {
namespace {

using Json = nlohmann::ordered_json;

class PlotReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "dtx-bench-plot-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::string& text) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }

  // The fields plot reads, shaped as dtx-bench --json writes them.
  static Json Report() {
    return Json{
        {"workload", "bank"},
        {"clients", 8},
        {"rate", 0},
        {"warmup_s", 1.0},
        {"committed_per_s", 1234.5},
        {"latency_us", {{"count", 10}, {"p50", 800.0}, {"p99", 2500.0}}},
        {"latency_cdf_us", Json::array({{700.0, 0.0}, {800.0, 0.5}, {2500.0, 1.0}})},
        {"timeline",
         Json::array({{{"t", 0}, {"committed", 100}, {"p99_us", 2000.0}, {"span_s", 1.0}},
                      {{"t", 1}, {"committed", 60}, {"p99_us", 3000.0}, {"span_s", 0.5}},
                      {{"t", 2}, {"committed", 1}, {"p99_us", 9000.0}, {"span_s", 0.1}}})},
        {"faults", Json::array({{{"ran_at_s", 1.25}, {"event", "at 1s kill participant-1"}}})}};
  }

  std::string dir_;
};

TEST_F(PlotReportTest, ReadsTheFiguresOfAReport) {
  auto r = ReadPlotReport(Write("good.json", Report().dump(2)));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->workload, "bank");
  EXPECT_EQ(r->clients, 8);
  EXPECT_DOUBLE_EQ(r->committed_per_s, 1234.5);
  EXPECT_DOUBLE_EQ(r->p99_us, 2500.0);
  EXPECT_DOUBLE_EQ(r->warmup_s, 1.0);
  // The half second is scaled to a rate; the 0.1 s drain is left out.
  ASSERT_EQ(r->timeline.size(), 2u);
  EXPECT_DOUBLE_EQ(r->timeline[1].committed_per_s, 120.0);
  EXPECT_DOUBLE_EQ(r->timeline[1].p99_us, 3000.0);
  ASSERT_EQ(r->cdf.size(), 3u);
  EXPECT_DOUBLE_EQ(r->cdf[1].first, 800.0);
  EXPECT_DOUBLE_EQ(r->cdf[1].second, 0.5);
  ASSERT_EQ(r->faults.size(), 1u);
  EXPECT_DOUBLE_EQ(r->faults[0].ran_at_s, 1.25);
  EXPECT_EQ(r->faults[0].event, "at 1s kill participant-1");
}

TEST_F(PlotReportTest, OpenLoopReportWithoutFaultsReads) {
  Json j = Report();
  j["clients"] = 0;
  j["rate"] = 4000;
  j.erase("faults");
  auto r = ReadPlotReport(Write("open.json", j.dump()));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->clients, 0);
  EXPECT_DOUBLE_EQ(r->rate, 4000);
  EXPECT_TRUE(r->faults.empty());
}

TEST_F(PlotReportTest, TruncatedReportIsAClearError) {
  const std::string text = Report().dump(2);
  for (size_t cut : {size_t{0}, size_t{1}, text.size() / 2, text.size() - 2}) {
    const std::string path = Write("cut.json", text.substr(0, cut));
    auto r = ReadPlotReport(path);
    ASSERT_FALSE(r.ok()) << "cut at " << cut;
    EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
    EXPECT_NE(r.status().message().find(path + ": not a dtx-bench report: "), std::string::npos)
        << r.status().ToString();
    EXPECT_NE(r.status().message().find("parse error"), std::string::npos) << r.status().ToString();
  }
}

TEST_F(PlotReportTest, MissingOrMistypedFieldIsAClearError) {
  struct Case {
    const char* what;
    Json report;
    const char* says;  // part of the message
  };
  std::vector<Case> cases;
  {
    Json j = Report();
    j.erase("timeline");
    cases.push_back({"no timeline", j, "timeline"});
  }
  {
    Json j = Report();
    j["committed_per_s"] = "fast";
    cases.push_back({"string for a number", j, "type must be number"});
  }
  {
    Json j = Report();
    j["latency_us"]["p99"] = nullptr;  // what a non-finite double is written as
    cases.push_back({"null p99", j, "type must be number"});
  }
  {
    Json j = Report();
    j["timeline"] = 7;
    cases.push_back({"timeline not an array", j, "cannot use at()"});
  }
  {
    Json j = Report();
    j["latency_cdf_us"][1] = {{"a", 1}, {"b", 2}};
    cases.push_back({"cdf point an object", j, "cannot use operator[]"});
  }
  cases.push_back({"an array, not an object", Json::array({1, 2}), "cannot use at()"});
  for (const Case& c : cases) {
    auto r = ReadPlotReport(Write("bad.json", c.report.dump()));
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_TRUE(r.status().IsInvalidArgument()) << c.what << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find("not a dtx-bench report"), std::string::npos)
        << c.what << ": " << r.status().ToString();
    EXPECT_NE(r.status().message().find(c.says), std::string::npos)
        << c.what << ": " << r.status().ToString();
  }
}

TEST_F(PlotReportTest, MissingFileIsAnError) {
  auto r = ReadPlotReport(dir_ + "/none.json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("none.json: cannot open"), std::string::npos)
      << r.status().ToString();
}

TEST_F(PlotReportTest, PlotExitsOneOnATruncatedReportBeforeDrawing) {
  std::string path = Write("cut.json", Report().dump(2).substr(0, 40));
  std::string prefix = dir_ + "/pic";
  std::vector<std::string> args = {"plot", path, "--out", prefix};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  testing::internal::CaptureStderr();
  int code = PlotMain(static_cast<int>(argv.size()), argv.data());
  std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(code, kExitFailed);
  EXPECT_NE(err.find("dtx-bench: plot: " + path + ": not a dtx-bench report"), std::string::npos)
      << err;
  EXPECT_FALSE(std::filesystem::exists(prefix + ".gp"));
}

}  // namespace
}  // namespace dtx::bench
