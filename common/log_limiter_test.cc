#include "common/log_limiter.h"

#include <gtest/gtest.h>

namespace dtx {
namespace {

TEST(LogLimiterTest, AtMostLinesMaxPerWindowAndTheRestCountedForOneSummary) {
  LogLimiter l(3, 1000);
  int allowed = 0;
  for (int i = 0; i < 10; ++i) allowed += l.Allow(5000 + i) ? 1 : 0;
  EXPECT_EQ(allowed, 3);
  EXPECT_EQ(l.TakeSuppressed(5500), 0u) << "not before the window has passed";
  EXPECT_EQ(l.TakeSuppressed(6000), 7u);
  EXPECT_EQ(l.TakeSuppressed(6001), 0u) << "handed over once";
  // A new window: three more lines.
  EXPECT_TRUE(l.Allow(6000));
  EXPECT_TRUE(l.Allow(6001));
  EXPECT_TRUE(l.Allow(6002));
  EXPECT_FALSE(l.Allow(6003));
  EXPECT_EQ(l.TakeSuppressed(7003), 1u);
}

TEST(LogLimiterTest, QuietTrafficIsNeverSuppressed) {
  LogLimiter l(2, 1000);
  for (uint64_t t = 0; t < 100000; t += 600) EXPECT_TRUE(l.Allow(t)) << t;
  EXPECT_EQ(l.TakeSuppressed(200000), 0u);
}

}  // namespace
}  // namespace dtx
