// DiskGuard (node/disk_guard.h): the watermark, the ballast, and the way back.
#include "node/disk_guard.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace dtx::node {
namespace {

constexpr uint64_t kMiB = 1u << 20;

class DiskGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dtx-disk-guard-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A guard with a 2 MiB watermark and a 1 MiB ballast whose free space is
  // `free_` (what statvfs would say), so every state can be reached.
  DiskGuard Guard() {
    return DiskGuard(DiskGuardOptions{
        .dir = dir_, .free_min_bytes = 2 * kMiB, .ballast_bytes = kMiB, .free_bytes = [this] {
          return Result<uint64_t>(free_);
        }});
  }
  bool BallastOnDisk() const {
    std::error_code ec;
    return std::filesystem::file_size(dir_ + "/" + kBallastFileName, ec) == kMiB;
  }

  std::string dir_;
  uint64_t free_ = 100 * kMiB;
};

TEST_F(DiskGuardTest, BelowTheWatermarkItIsLowAndReleasesTheBallastThenRecoversByItself) {
  DiskGuard g = Guard();
  ASSERT_TRUE(g.Start().ok());
  EXPECT_FALSE(g.low());
  EXPECT_TRUE(g.ballast_present());
  EXPECT_TRUE(BallastOnDisk());

  free_ = kMiB;  // below the 2 MiB watermark
  EXPECT_TRUE(g.Check());
  EXPECT_TRUE(g.low());
  EXPECT_FALSE(g.ballast_present());
  EXPECT_FALSE(BallastOnDisk()) << "the ballast was not released";
  EXPECT_NE(g.Describe().find("disk space low: 1 MiB free"), std::string::npos) << g.Describe();

  // Above the watermark but without room for the ballast: still low, so
  // the space the ballast gave back is not eaten by new writes.
  free_ = 2 * kMiB + kMiB / 2;
  EXPECT_FALSE(g.Check());
  EXPECT_TRUE(g.low());
  EXPECT_FALSE(BallastOnDisk());

  // Room for the watermark and the ballast: normal again, ballast remade.
  free_ = 3 * kMiB;
  EXPECT_TRUE(g.Check());
  EXPECT_FALSE(g.low());
  EXPECT_TRUE(BallastOnDisk());
}

TEST_F(DiskGuardTest, AStartBelowTheWatermarkIsLowAndAKeptBallastIsReleased) {
  {
    DiskGuard first = Guard();
    ASSERT_TRUE(first.Start().ok());
    ASSERT_TRUE(BallastOnDisk());
  }
  free_ = kMiB;  // the disk filled while the node was down
  DiskGuard g = Guard();
  ASSERT_TRUE(g.Start().ok());
  EXPECT_TRUE(g.low());
  EXPECT_FALSE(BallastOnDisk());
}

TEST_F(DiskGuardTest, AZeroWatermarkIsNeverLow) {
  DiskGuard g(
      DiskGuardOptions{.dir = dir_, .free_min_bytes = 0, .ballast_bytes = 0, .free_bytes = [] {
                         return Result<uint64_t>(uint64_t{0});
                       }});
  ASSERT_TRUE(g.Start().ok());
  EXPECT_FALSE(g.low());
  EXPECT_FALSE(g.ballast_present());
}

TEST_F(DiskGuardTest, TheRealFilesystemIsMeasured) {
  DiskGuard g(
      DiskGuardOptions{.dir = dir_, .free_min_bytes = 1, .ballast_bytes = 0, .free_bytes = {}});
  ASSERT_TRUE(g.Start().ok());
  EXPECT_GT(g.free_bytes(), 0u);
  DiskGuard missing(DiskGuardOptions{
      .dir = dir_ + "/no-such-dir", .free_min_bytes = 1, .ballast_bytes = 0, .free_bytes = {}});
  EXPECT_FALSE(missing.Start().ok());
}

}  // namespace
}  // namespace dtx::node
