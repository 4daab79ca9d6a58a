#include "bench/dtx_bench_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace dtx::bench {
namespace {

using H = LatencyHistogram;

TEST(LatencyHistogramTest, EveryValueFallsInsideItsBucket) {
  std::vector<uint64_t> probes;
  for (uint64_t v = 0; v < 5000; ++v) probes.push_back(v);
  for (int b = 1; b < 64; ++b) {
    uint64_t p = uint64_t{1} << b;
    probes.insert(probes.end(), {p - 1, p, p + 1, p + p / 3});
  }
  probes.push_back(std::numeric_limits<uint64_t>::max());
  std::mt19937_64 rng(42);
  for (int i = 0; i < 100000; ++i) probes.push_back(rng() >> (rng() % 64));
  for (uint64_t v : probes) {
    size_t b = H::BucketOf(v);
    ASSERT_LT(b, H::kBucketCount) << v;
    uint64_t lo = H::BucketLow(b);
    uint64_t w = H::BucketWidth(b);
    ASSERT_LE(lo, v) << v;
    ASSERT_LE(v - lo, w - 1) << v;
    // The bound that makes the relative error hold: lo >= kHalf * w.
    if (w > 1) {
      ASSERT_GE(lo / w, H::kHalf) << v;
    }
  }
  EXPECT_EQ(H::BucketOf(std::numeric_limits<uint64_t>::max()), H::kBucketCount - 1);
}

TEST(LatencyHistogramTest, BucketsAreContiguousAndIncreasing) {
  for (size_t i = 0; i + 1 < H::kBucketCount; ++i) {
    ASSERT_EQ(H::BucketLow(i) + H::BucketWidth(i), H::BucketLow(i + 1)) << i;
  }
}

// Exact nearest-rank quantile of sorted data.
uint64_t ExactQuantile(const std::vector<uint64_t>& sorted, double q) {
  auto rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

TEST(LatencyHistogramTest, QuantilesAreWithinTheRelativeErrorBound) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    H h;
    std::vector<uint64_t> values;
    // Log-uniform latencies from 1 us to ~10 s in ns, plus a few spikes.
    std::uniform_real_distribution<double> log_us(0.0, std::log(1e7));
    size_t n = 1000 + static_cast<size_t>(rng() % 50000);
    for (size_t i = 0; i < n; ++i) {
      auto v = static_cast<uint64_t>(std::exp(log_us(rng)) * 1000.0);
      values.push_back(v);
      h.Record(v);
    }
    std::sort(values.begin(), values.end());
    ASSERT_EQ(h.count(), values.size());
    EXPECT_EQ(h.min(), values.front());
    EXPECT_EQ(h.max(), values.back());
    for (double q : {0.0, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0}) {
      uint64_t exact = ExactQuantile(values, q);
      uint64_t est = h.ValueAtQuantile(q);
      double err = std::fabs(static_cast<double>(est) - static_cast<double>(exact));
      EXPECT_LE(err, static_cast<double>(exact) * H::kRelativeErrorMax)
          << "trial " << trial << " q=" << q << " exact=" << exact << " est=" << est;
    }
  }
}

TEST(LatencyHistogramTest, SmallValuesAreExactAndMergeAddsUp) {
  H a;
  H b;
  for (uint64_t v = 1; v <= 100; ++v) (v % 2 ? a : b).Record(v);
  a.Merge(b);
  EXPECT_EQ(a.count(), 100u);
  EXPECT_EQ(a.ValueAtQuantile(0.5), 50u);
  EXPECT_EQ(a.ValueAtQuantile(0.99), 99u);
  EXPECT_EQ(a.ValueAtQuantile(1.0), 100u);
  EXPECT_EQ(a.min(), 1u);
  EXPECT_DOUBLE_EQ(a.mean(), 50.5);
  H empty;
  EXPECT_EQ(empty.ValueAtQuantile(0.5), 0u);
  EXPECT_EQ(empty.min(), 0u);
}

}  // namespace
}  // namespace dtx::bench
