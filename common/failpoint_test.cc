#include "common/failpoint.h"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include <gtest/gtest.h>

namespace dtx::fp {
namespace {

class FailpointTest : public ::testing::Test {
 protected:
  void TearDown() override { DisarmAll(); }
};

TEST_F(FailpointTest, DisarmedPointPasses) {
  EXPECT_TRUE(Eval(Point::kWalBeforeSync).ok());
  EXPECT_TRUE(Armed().empty());
}

TEST_F(FailpointTest, ErrorActionFailsWithThePointName) {
  ASSERT_TRUE(Arm("wal.before_sync", "error").ok());
  Status s = Eval(Point::kWalBeforeSync);
  EXPECT_TRUE(s.IsIOError());
  EXPECT_NE(s.message().find("wal.before_sync"), std::string::npos);
  EXPECT_TRUE(Eval(Point::kWalAfterSync).ok());  // other points untouched
  ASSERT_TRUE(Arm("wal.before_sync", "off").ok());
  EXPECT_TRUE(Eval(Point::kWalBeforeSync).ok());
}

TEST_F(FailpointTest, ErrorAfterPassesNTimesThenFails) {
  ASSERT_TRUE(Arm("wal.after_write", "error-after(2)").ok());
  EXPECT_TRUE(Eval(Point::kWalAfterWrite).ok());
  EXPECT_TRUE(Eval(Point::kWalAfterWrite).ok());
  EXPECT_FALSE(Eval(Point::kWalAfterWrite).ok());
  EXPECT_FALSE(Eval(Point::kWalAfterWrite).ok());
}

TEST_F(FailpointTest, SleepDelaysThenPasses) {
  ASSERT_TRUE(Arm("wal.after_sync", "sleep(30)").ok());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(Eval(Point::kWalAfterSync).ok());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(30));
}

TEST_F(FailpointTest, CrashExitsTheProcessImmediately) {
  ASSERT_TRUE(Arm("participant.prepare.after_log", "crash").ok());
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    (void)Eval(Point::kParticipantPrepareAfterLog);
    _exit(0);  // not reached when the crash works
  }
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), kCrashExitCode);
}

TEST_F(FailpointTest, CrashAfterCountsPasses) {
  ASSERT_TRUE(Arm("coordinator.decision.after_log", "crash-after(3)").ok());
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    for (int i = 0; i < 3; ++i) (void)Eval(Point::kCoordinatorDecisionAfterLog);
    (void)Eval(Point::kCoordinatorDecisionAfterLog);
    _exit(0);
  }
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), kCrashExitCode);
}

TEST_F(FailpointTest, BadNamesAndActionsAreRejected) {
  EXPECT_TRUE(Arm("no.such.point", "crash").IsInvalidArgument());
  EXPECT_TRUE(Arm("wal.before_sync", "explode").IsInvalidArgument());
  EXPECT_TRUE(Arm("wal.before_sync", "sleep(").IsInvalidArgument());
  EXPECT_TRUE(Arm("wal.before_sync", "sleep(-1)").IsInvalidArgument());
  EXPECT_TRUE(Arm("wal.before_sync", "sleep(12x)").IsInvalidArgument());
  EXPECT_TRUE(Arm("wal.before_sync", "crash-after").IsInvalidArgument());
  EXPECT_TRUE(Armed().empty());
}

TEST_F(FailpointTest, SpecIsAllOrNothing) {
  EXPECT_TRUE(ArmFromSpec("wal.before_sync=error; bogus=crash").IsInvalidArgument());
  EXPECT_TRUE(Armed().empty());
  EXPECT_TRUE(ArmFromSpec("wal.before_sync=error;missing-equals").IsInvalidArgument());
  EXPECT_TRUE(Armed().empty());
  ASSERT_TRUE(ArmFromSpec(" wal.before_sync = error ; wal.after_sync=sleep(1);").ok());
  EXPECT_EQ(Armed().size(), 2u);
}

TEST_F(FailpointTest, EnvironmentArmsPoints) {
  setenv("DTX_FAILPOINTS", "wal.before_write=error", 1);
  ASSERT_TRUE(InitFromEnv().ok());
  unsetenv("DTX_FAILPOINTS");
  EXPECT_FALSE(Eval(Point::kWalBeforeWrite).ok());
  setenv("DTX_FAILPOINTS", "wal.before_write=whatever", 1);
  Status s = InitFromEnv();
  unsetenv("DTX_FAILPOINTS");
  EXPECT_TRUE(s.IsInvalidArgument());
  EXPECT_NE(s.message().find("DTX_FAILPOINTS"), std::string::npos);
}

TEST_F(FailpointTest, NodeWithoutEnableFlagRefusesTheEnvironmentAndArmsNothing) {
  setenv("DTX_FAILPOINTS", "wal.before_write=error", 1);
  Status off = InitFromEnvForNode(/*enabled=*/false);
  EXPECT_TRUE(Armed().empty());
  Status on = InitFromEnvForNode(/*enabled=*/true);
  unsetenv("DTX_FAILPOINTS");
  EXPECT_TRUE(off.IsPermissionDenied()) << off.ToString();
  EXPECT_NE(off.message().find("--enable-failpoints"), std::string::npos);
  EXPECT_TRUE(on.ok()) << on.ToString();
  EXPECT_EQ(Armed(), std::vector<std::string>{"wal.before_write=error"});
  DisarmAll();
  // Unset or blank: nothing to refuse.
  EXPECT_TRUE(InitFromEnvForNode(false).ok());
  setenv("DTX_FAILPOINTS", " ", 1);
  EXPECT_TRUE(InitFromEnvForNode(false).ok());
  unsetenv("DTX_FAILPOINTS");
}

TEST_F(FailpointTest, EveryNameIsUniqueAndDotted) {
  auto names = AllNames();
  ASSERT_EQ(static_cast<int>(names.size()), kPointCount);
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_NE(names[i].find('.'), std::string::npos) << names[i];
    for (size_t j = i + 1; j < names.size(); ++j) EXPECT_NE(names[i], names[j]);
  }
}

}  // namespace
}  // namespace dtx::fp
