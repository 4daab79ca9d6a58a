// ShedThrottle (bindings/cpp/shed_throttle.h): no refusal while everything is
// taken on; at twice the coordinator's capacity the client refuses most of
// the excess itself; back to none once everything is taken on again.
#include "bindings/cpp/shed_throttle.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace dtx {
namespace {

constexpr int64_t kMs = 1'000'000;

// `n` new transactions, one per ms from `*now`; those let through are answered
// at once by a coordinator that takes on `capacity` per ms (a token bucket)
// and refuses the rest. Returns the share the client refused itself; adds
// the share the coordinator refused to `*shed`.
double Offer(ShedThrottle& t, int64_t* now, int n, double capacity, std::minstd_rand& rng,
           double* shed = nullptr) {
  std::uniform_real_distribution<double> u(0, 1);
  int refused = 0;
  int refused_there = 0;
  double tokens = 10;
  for (int i = 0; i < n; ++i, *now += kMs) {
    tokens = std::min(10.0, tokens + capacity);
    if (t.Refuse(*now, u(rng))) {
      ++refused;
      continue;
    }
    const bool taken = tokens >= 1;
    if (taken) tokens -= 1;
    if (!taken) ++refused_there;
    t.Answered(*now, taken);
  }
  if (shed != nullptr) *shed = static_cast<double>(refused_there) / n;
  return static_cast<double>(refused) / n;
}

TEST(ShedThrottleTest, NothingIsRefusedWhileEverythingIsTakenOn) {
  ShedThrottle t(1.1);
  std::minstd_rand rng(1);
  int64_t now = 1;
  EXPECT_EQ(Offer(t, &now, 10000, 1.0, rng), 0.0);
  EXPECT_EQ(t.RejectProbability(now), 0.0);
}

TEST(ShedThrottleTest, AtTwiceTheCapacityTheClientRefusesMostOfTheExcessItself) {
  ShedThrottle t(1.1);
  std::minstd_rand rng(2);
  int64_t now = 1;
  Offer(t, &now, 2000, 1.0, rng);
  // Twice what the coordinator takes on: the client lets through about
  // K = 1.1 times its capacity, so it refuses about 45 % itself and the
  // coordinator about 5 % of all.
  Offer(t, &now, 10000, 0.5, rng);  // ten decay times to settle
  double shed = 0;
  double refused = Offer(t, &now, 20000, 0.5, rng, &shed);
  EXPECT_GT(refused, 0.35);
  EXPECT_LT(refused, 0.5);
  EXPECT_LT(shed, 0.1);
  // Taken on again: within a few decay times nothing is refused.
  Offer(t, &now, 20000, 1.0, rng);
  EXPECT_LT(Offer(t, &now, 2000, 1.0, rng), 0.01);
}

TEST(ShedThrottleTest, KZeroIsOff) {
  ShedThrottle t(0);
  std::minstd_rand rng(3);
  int64_t now = 1;
  EXPECT_EQ(Offer(t, &now, 1000, 0.1, rng), 0.0);
}

}  // namespace
}  // namespace dtx
