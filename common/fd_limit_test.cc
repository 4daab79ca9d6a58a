#include "common/fd_limit.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

namespace dtx {
namespace {

TEST(FdLimitTest, ConnectionsPerListenerKeepsTheReserveWithinBounds) {
  EXPECT_EQ(ConnectionsPerListener(1024, 3), kConnectionsPerListenerMin) << "below the reserve";
  EXPECT_EQ(ConnectionsPerListener(kFdReserve + 3000, 3), 1000u);
  EXPECT_EQ(ConnectionsPerListener(uint64_t{1} << 20, 3), kConnectionsPerListenerMax);
  EXPECT_EQ(ConnectionsPerListener(kFdReserve + 300, 0), 300u) << "0 listeners counts as 1";
}

TEST(FdLimitTest, RaiseOpenFileLimitLiftsTheSoftLimitToTheHardOne) {
  rlimit r{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &r), 0);
  if (r.rlim_max < 64) GTEST_SKIP() << "hard limit too low to lower the soft one";
  rlimit lowered = r;
  lowered.rlim_cur = 64;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &lowered), 0);
  const uint64_t got = RaiseOpenFileLimit();
  rlimit after{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &after), 0);
  EXPECT_EQ(got, static_cast<uint64_t>(after.rlim_cur));
  EXPECT_EQ(after.rlim_cur, std::min<rlim_t>(r.rlim_max, rlim_t{1} << 20));
  setrlimit(RLIMIT_NOFILE, &r);
}

}  // namespace
}  // namespace dtx
