// tools/metrics_text.h: parsing the exposition the nodes serve, and p99 from
// histogram deltas (dtxctl top).
#include "tools/metrics_text.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "common/prometheus_support.h"

namespace dtx::tools {
namespace {

const char* kText =
    "# HELP dtx_aborts_total Aborts.\n"
    "# TYPE dtx_aborts_total counter\n"
    "dtx_aborts_total{reason=\"conflict\"} 3\n"
    "dtx_aborts_total{reason=\"we\\\"ird\\\\\"} 2\n"
    "# TYPE dtx_phase_seconds histogram\n"
    "dtx_phase_seconds_bucket{phase=\"total\",le=\"0.001\"} 10\n"
    "dtx_phase_seconds_bucket{phase=\"total\",le=\"0.01\"} 90\n"
    "dtx_phase_seconds_bucket{phase=\"total\",le=\"+Inf\"} 100\n"
    "dtx_phase_seconds_sum{phase=\"total\"} 0.5\n"
    "dtx_phase_seconds_count{phase=\"total\"} 100\n"
    "dtx_epoch 7\n";

TEST(MetricsText, ParsesSamplesLabelsAndTypes) {
  auto e = ParseExposition(kText);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(8u, e->samples.size());
  EXPECT_EQ("counter", e->types["dtx_aborts_total"]);
  EXPECT_EQ("histogram", e->types["dtx_phase_seconds"]);
  EXPECT_EQ(5, SumSamples(*e, "dtx_aborts_total"));
  EXPECT_EQ(2, SumSamples(*e, "dtx_aborts_total", {{"reason", "we\"ird\\"}}));
  EXPECT_EQ(7, SumSamples(*e, "dtx_epoch"));
  auto b = HistogramBuckets(*e, "dtx_phase_seconds", {{"phase", "total"}});
  ASSERT_EQ(3u, b.size());
  EXPECT_TRUE(std::isinf(b.rbegin()->first));
  EXPECT_EQ(100, b.rbegin()->second);
}

// What the nodes serve: prometheus-cpp's TextSerializer over a node-shaped
// registry parses back to the values put in.
TEST(MetricsText, ParsesWhatPrometheusCppSerializes) {
  prometheus::Registry r;
  auto& aborts = prometheus::BuildCounter().Name("dtx_aborts_total").Help("Aborts.").Register(r);
  aborts.Add({{"reason", "conflict"}}).Increment(3);
  aborts.Add({{"reason", "we\"ird\\va\nlue"}}).Increment(2);
  prometheus::BuildGauge().Name("dtx_epoch").Help("Epoch.").Register(r).Add({}).Set(7);
  prometheus::BuildGauge()
      .Name("dtx_in_doubt_oldest_age_seconds")
      .Help("Age.")
      .Register(r)
      .Add({})
      .Set(std::numeric_limits<double>::quiet_NaN());
  prometheus::Histogram& total = prometheus::BuildHistogram()
                                     .Name("dtx_phase_seconds")
                                     .Help("Phases.")
                                     .Register(r)
                                     .Add({{"phase", "total"}}, obs::LatencyBucketsSeconds());
  for (int i = 0; i < 90; ++i) total.Observe(0.0007);
  for (int i = 0; i < 10; ++i) total.Observe(20);
  const std::string text = prometheus::TextSerializer().Serialize(r.Collect());

  auto e = ParseExposition(text);
  ASSERT_TRUE(e.ok()) << e.status().ToString() << "\n" << text;
  EXPECT_EQ("counter", e->types["dtx_aborts_total"]);
  EXPECT_EQ("gauge", e->types["dtx_epoch"]);
  EXPECT_EQ("histogram", e->types["dtx_phase_seconds"]);
  EXPECT_EQ("Aborts.", e->help["dtx_aborts_total"]);
  EXPECT_EQ(3, SumSamples(*e, "dtx_aborts_total", {{"reason", "conflict"}}));
  EXPECT_EQ(2, SumSamples(*e, "dtx_aborts_total", {{"reason", "we\"ird\\va\nlue"}}));
  EXPECT_EQ(7, SumSamples(*e, "dtx_epoch"));
  EXPECT_TRUE(std::isnan(SumSamples(*e, "dtx_in_doubt_oldest_age_seconds")));
  EXPECT_EQ(100, SumSamples(*e, "dtx_phase_seconds_count"));
  EXPECT_DOUBLE_EQ(90 * 0.0007 + 10 * 20.0, SumSamples(*e, "dtx_phase_seconds_sum"));
  auto b = HistogramBuckets(*e, "dtx_phase_seconds", {{"phase", "total"}});
  ASSERT_EQ(obs::LatencyBucketsSeconds().size() + 1, b.size());
  EXPECT_EQ(0, b[0.0005]);
  EXPECT_EQ(90, b[0.001]);
  EXPECT_EQ(90, b[10.0]);
  EXPECT_EQ(100, b.rbegin()->second);
  EXPECT_TRUE(std::isinf(b.rbegin()->first));
  // 90 of 100 observations at 0.0007 s: the median is inside (0.0005, 0.001].
  std::map<double, double> none;
  for (const auto& [le, count] : b) none[le] = 0;
  const double p50 = QuantileOfDelta(none, b, 0.5);
  EXPECT_GT(p50, 0.0005);
  EXPECT_LE(p50, 0.001);
}

TEST(MetricsText, MalformedLinesAreErrorsNamingTheLine) {
  for (const char* bad :
       {"x{a=\"1\" 2\n", "{a=\"1\"} 2\n", "x 1 2 3 z\nx\n", "x notanumber\n", "# TYPE x\n"}) {
    auto e = ParseExposition(bad);
    EXPECT_FALSE(e.ok()) << bad;
    if (!e.ok()) {
      EXPECT_NE(std::string::npos, e.status().message().find("line")) << e.status().ToString();
    }
  }
}

TEST(MetricsText, QuantileOfDeltaInterpolatesWithinTheBucket) {
  std::map<double, double> before = {{0.001, 10}, {0.01, 10}, {INFINITY, 10}};
  std::map<double, double> after = {{0.001, 10}, {0.01, 110}, {INFINITY, 110}};
  // 100 new observations, all in (0.001, 0.01]: p99 is 99% of the way up.
  EXPECT_NEAR(0.001 + 0.009 * 0.99, QuantileOfDelta(before, after, 0.99), 1e-9);
  EXPECT_EQ(-1, QuantileOfDelta(after, after, 0.99));
  std::map<double, double> inf = {{0.001, 10}, {0.01, 110}, {INFINITY, 210}};
  EXPECT_EQ(0.01, QuantileOfDelta(after, inf, 0.99));
}

}  // namespace
}  // namespace dtx::tools
