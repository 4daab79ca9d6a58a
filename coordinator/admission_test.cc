// Admission (coordinator/admission.h) with a simulated clock: the limit holds,
// shrinks while the commits of an interval take longer than the target on
// average, grows back
// when the queue is gone and the limit is what holds commits back, and never
// leaves [limit_min, limit_max].
#include "coordinator/admission.h"

#include <gtest/gtest.h>

#include <string>

namespace dtx::coordinator {
namespace {

constexpr uint64_t kMs = 1000;

AdmissionOptions Options() {
  return AdmissionOptions{.queue_target_us = 50 * kMs,
                          .interval_us = 100 * kMs,
                          .limit_min = 16,
                          .limit_max = 4096,
                          .limit_initial = 256};
}

TEST(AdmissionTest, TheLimitHoldsAndRefusalsAreCounted) {
  AdmissionOptions o = Options();
  o.queue_target_us = 0;  // fixed: limit_max
  o.limit_max = 3;
  Admission a(o);
  EXPECT_TRUE(a.Admit(0));
  EXPECT_TRUE(a.Admit(0));
  EXPECT_TRUE(a.Admit(0));
  EXPECT_FALSE(a.Admit(0));
  EXPECT_EQ(a.refused(), 1u);
  EXPECT_NE(a.RefusalMessage().find("overloaded: 3 commits in flight (limit 3"), std::string::npos)
      << a.RefusalMessage();
  a.Done(1, 10);
  EXPECT_TRUE(a.Admit(1));
  EXPECT_EQ(a.in_flight(), 3u);
}

TEST(AdmissionTest, AStandingQueueShrinksTheLimitAndItsEndGrowsItBack) {
  Admission a(Options());
  ASSERT_EQ(a.limit(), 256u);
  uint64_t now = 0;
  // Unloaded: commits take 2 ms.
  for (int i = 0; i < 20; ++i, now += 10 * kMs) {
    ASSERT_TRUE(a.Admit(now));
    a.Done(now, 2 * kMs);
  }
  EXPECT_EQ(a.last_mean_us(), 2 * kMs);
  EXPECT_EQ(a.limit(), 256u);  // never reached: unchanged
  // Overload: every commit of each interval takes 200 ms. The limit falls by
  // a fifth per interval down to its floor.
  size_t before = a.limit();
  for (int interval = 0; interval < 30; ++interval) {
    for (int i = 0; i < 10; ++i, now += 10 * kMs) {
      if (a.Admit(now)) a.Done(now, 200 * kMs);
    }
    EXPECT_LE(a.limit(), before);
    before = a.limit();
  }
  EXPECT_EQ(a.limit(), 16u);
  EXPECT_NE(a.RefusalMessage().find("commits take over 50 ms on average; lately 200 ms"),
            std::string::npos)
      << a.RefusalMessage();
  // The queue is gone (2 ms again) and the limit is reached in every
  // interval: it grows back by a quarter per interval.
  size_t grown = a.limit();
  for (int interval = 0; interval < 40; ++interval) {
    // Fill up to the limit, answer one quickly.
    while (a.Admit(now)) {
    }
    a.Done(now, 2 * kMs);
    now += 100 * kMs;
  }
  EXPECT_GT(a.limit(), grown);
  EXPECT_LE(a.limit(), 4096u);
}

TEST(AdmissionTest, AQueueWithinTheTargetLeavesTheLimitAlone) {
  Admission a(Options());
  uint64_t now = 0;
  for (int i = 0; i < 5; ++i, now += 10 * kMs) {
    ASSERT_TRUE(a.Admit(now));
    a.Done(now, 2 * kMs);
  }
  // 42 ms: within the 50 ms target.
  for (int i = 0; i < 100; ++i, now += 10 * kMs) {
    ASSERT_TRUE(a.Admit(now));
    a.Done(now, 42 * kMs);
  }
  EXPECT_EQ(a.limit(), 256u);
}

TEST(AdmissionTest, AnUnreachedLimitDoesNotGrow) {
  Admission a(Options());
  uint64_t now = 0;
  for (int i = 0; i < 1000; ++i, now += 10 * kMs) {
    ASSERT_TRUE(a.Admit(now));
    a.Done(now, 1 * kMs);
  }
  EXPECT_EQ(a.limit(), 256u);
}

TEST(AdmissionTest, AQuietGapEndsTheIntervalUnderWayAndKeepsTheLimit) {
  Admission a(Options());
  uint64_t now = 0;
  ASSERT_TRUE(a.Admit(now));
  a.Done(now + 10 * kMs, 300 * kMs);
  now += 3600ull * 1000 * kMs;  // an hour later
  ASSERT_TRUE(a.Admit(now));
  EXPECT_EQ(a.last_mean_us(), 300 * kMs);
  EXPECT_EQ(a.limit(), 256u - 256u / 5);  // that one interval's signal, no more
}

TEST(AdmissionTest, InFlightNeverUnderflows) {
  Admission a(Options());
  a.Done(0, 5);
  EXPECT_EQ(a.in_flight(), 0u);
}

}  // namespace
}  // namespace dtx::coordinator
