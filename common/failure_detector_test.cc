#include "common/failure_detector.h"

#include <gtest/gtest.h>

namespace dtx {
namespace {

using Mode = FailureDetectorOptions::Mode;

TEST(FailureDetectorTest, TimeoutModeSuspectsAfterKMissedIntervals) {
  FailureDetector fd(
      {.mode = Mode::kTimeout, .heartbeat_interval_ms = 100, .suspect_after_ms = 500});
  fd.Start(1000);
  for (uint64_t t = 1100; t <= 2000; t += 100) fd.Heartbeat(t);
  EXPECT_FALSE(fd.Suspected(2000));
  EXPECT_FALSE(fd.Suspected(2499));
  EXPECT_TRUE(fd.Suspected(2500));
  EXPECT_EQ(fd.AgeMs(2500), 500);
  fd.Heartbeat(2600);  // the peer came back: suspicion clears at once
  EXPECT_FALSE(fd.Suspected(2600));
  EXPECT_EQ(fd.AgeMs(2650), 50);
}

TEST(FailureDetectorTest, NeverHeardPeerIsSuspectedAfterTheTimeoutFromStart) {
  FailureDetector fd({.heartbeat_interval_ms = 100, .suspect_after_ms = 500});
  fd.Start(10);
  EXPECT_EQ(fd.AgeMs(100), -1);
  EXPECT_FALSE(fd.heard());
  EXPECT_FALSE(fd.Suspected(509));
  EXPECT_TRUE(fd.Suspected(510));
}

TEST(FailureDetectorTest, StartForgetsEarlierHeartbeats) {
  FailureDetector fd;
  fd.Start(0);
  fd.Heartbeat(100);
  fd.Start(10000);
  EXPECT_EQ(fd.AgeMs(10001), -1);
  EXPECT_FALSE(fd.Suspected(10001));
}

TEST(FailureDetectorTest, PhiGrowsWithSilenceAndSuspectsARegularPeerQuickly) {
  FailureDetector fd({.mode = Mode::kPhiAccrual,
                      .heartbeat_interval_ms = 100,
                      .suspect_after_ms = 5000,
                      .phi_threshold = 8.0,
                      .min_std_dev_ms = 10});
  fd.Start(0);
  for (uint64_t t = 100; t <= 5000; t += 100) fd.Heartbeat(t);
  EXPECT_LT(fd.Phi(5050), 1.0);
  EXPECT_FALSE(fd.Suspected(5100));
  double prev = 0;
  for (uint64_t t = 5000; t <= 5300; t += 10) {
    double phi = fd.Phi(t);
    EXPECT_GE(phi, prev) << t;
    prev = phi;
  }
  // Regular 100 ms beats with a 10 ms deviation floor: 200 ms of silence is
  // far in the tail, long before the 5000 ms cap.
  EXPECT_TRUE(fd.Suspected(5200));
}

TEST(FailureDetectorTest, PhiToleratesAJitteryPeerThatTheSameThresholdWouldSuspectIfRegular) {
  FailureDetectorOptions o{.mode = Mode::kPhiAccrual,
                           .heartbeat_interval_ms = 100,
                           .suspect_after_ms = 5000,
                           .phi_threshold = 8.0,
                           .min_std_dev_ms = 10};
  FailureDetector jittery(o);
  jittery.Start(0);
  uint64_t t = 0;
  for (int i = 0; i < 60; ++i) {
    t += (i % 2 == 0) ? 40 : 260;  // mean 150, large deviation
    jittery.Heartbeat(t);
  }
  EXPECT_FALSE(jittery.Suspected(t + 300));
  FailureDetector regular(o);
  regular.Start(0);
  uint64_t r = 0;
  for (int i = 0; i < 60; ++i) regular.Heartbeat(r += 150);
  EXPECT_TRUE(regular.Suspected(r + 300));
}

TEST(FailureDetectorTest, PhiModeStillSuspectsAtTheCap) {
  FailureDetector fd({.mode = Mode::kPhiAccrual,
                      .heartbeat_interval_ms = 100,
                      .suspect_after_ms = 400,
                      .phi_threshold = 1000.0});
  fd.Start(0);
  for (uint64_t t = 100; t <= 1000; t += 100) fd.Heartbeat(t);
  EXPECT_FALSE(fd.Suspected(1399));
  EXPECT_TRUE(fd.Suspected(1400));
}

TEST(FailureDetectorTest, BackwardsTimeIsHarmless) {
  FailureDetector fd;
  fd.Start(1000);
  fd.Heartbeat(1200);
  fd.Heartbeat(1100);  // earlier than the last: counts as 1200
  EXPECT_EQ(fd.AgeMs(1150), 0);
  EXPECT_FALSE(fd.Suspected(1150));
}

}  // namespace
}  // namespace dtx
