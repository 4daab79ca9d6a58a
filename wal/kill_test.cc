// Kill test with real processes: a child appends and reports every durable
// LSN over a pipe; the parent SIGKILLs it at random moments. After each kill
// the log must hold every reported LSN, intact and in order, and nothing
// after the last good record.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/failpoint.h"
#include "wal/test_util.h"
#include "wal/wal.h"

namespace dtx::wal {
namespace {

using testing::PayloadMatches;
using testing::TempDir;
using testing::TypeFor;

// Kills and reaps the child on every exit path, failures included.
struct ChildGuard {
  pid_t pid = -1;
  ~ChildGuard() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

pid_t SpawnChild(const std::string& dir, uint64_t segment_bytes, uint32_t seed, int* read_fd,
                 const std::string& failpoints = "") {
  int fds[2];
  DTX_CHECK(::pipe2(fds, O_CLOEXEC) == 0);
  std::string seg = std::to_string(segment_bytes), s = std::to_string(seed);
  pid_t pid = ::fork();
  DTX_CHECK(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 1);  // dup2 clears O_CLOEXEC on the copy
    if (failpoints.empty()) {
      ::unsetenv("DTX_FAILPOINTS");
    } else {
      ::setenv("DTX_FAILPOINTS", failpoints.c_str(), 1);
    }
    ::execl(DTX_WAL_KILL_CHILD, DTX_WAL_KILL_CHILD, dir.c_str(), seg.c_str(), s.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(fds[1]);
  *read_fd = fds[0];
  return pid;
}

// Reads whatever arrives on fd until `until` (or EOF, or *buf holds `want`
// bytes), appending to *buf. False at EOF.
bool ReadUntil(int fd, std::chrono::steady_clock::time_point until, std::string* buf,
               size_t want = SIZE_MAX) {
  char tmp[4096];
  while (buf->size() < want) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() < 0) return true;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()) + 1);
    if (n <= 0) continue;
    ssize_t r = ::read(fd, tmp, sizeof(tmp));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;  // EOF: the child is gone
    buf->append(tmp, static_cast<size_t>(r));
  }
  return true;
}

void DrainToEof(int fd, std::string* buf) {
  char tmp[4096];
  for (;;) {
    ssize_t r = ::read(fd, tmp, sizeof(tmp));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    buf->append(tmp, static_cast<size_t>(r));
  }
}

// Recovers the log in this process and checks it: LSNs dense and in order,
// every payload intact and naming its LSN, nothing reported durable missing;
// then a second recovery finds a clean end and the same records.
void VerifyLog(const std::string& dir, uint64_t segment_bytes, Lsn max_reported, uint64_t* torn) {
  Lsn expect = 0, count = 0;
  bool intact = true;
  {
    auto log = Log::Open(Options{.segment_bytes = segment_bytes}, dir,
                         [&](Lsn lsn, uint8_t type, std::string_view p) {
                           if (expect != 0 && lsn != expect) intact = false;
                           if (type != TypeFor(lsn) || !PayloadMatches(lsn, p)) intact = false;
                           expect = lsn + 1;
                           ++count;
                           return Status::OK();
                         });
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    ASSERT_TRUE(intact);
    ASSERT_GE((*log)->last_lsn(), max_reported) << "a record reported durable is missing";
    *torn = (*log)->stats().torn_tails_cut;
  }
  auto again = Log::Open(Options{.segment_bytes = segment_bytes}, dir, nullptr);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(0u, (*again)->stats().torn_tails_cut);
  EXPECT_EQ(count, (*again)->stats().records_recovered);
}

// Reads LSNs from the pipe bytes; they must be increasing and above *max.
void TakeReported(const std::string& bytes, Lsn* max, uint64_t* total) {
  ASSERT_EQ(0u, bytes.size() % sizeof(Lsn));
  for (size_t i = 0; i < bytes.size(); i += sizeof(Lsn)) {
    Lsn lsn;
    std::memcpy(&lsn, bytes.data() + i, sizeof(lsn));
    ASSERT_GT(lsn, *max);
    *max = lsn;
    ++*total;
  }
}

TEST(WalKill, SigkilledWriterLosesNothingReportedDurable) {
  TempDir dir;
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr uint64_t kSegmentBytes = 256 << 10;
  constexpr int kRoundsMax = 40;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  Lsn max_reported = 0;
  uint64_t reported_total = 0, torn_tails = 0;
  int rounds = 0;
  std::chrono::steady_clock::duration startup{};
  for (; rounds < kRoundsMax && std::chrono::steady_clock::now() < deadline; ++rounds) {
    SCOPED_TRACE("round " + std::to_string(rounds));
    int fd = -1;
    ChildGuard child;
    const auto spawned = std::chrono::steady_clock::now();
    child.pid = SpawnChild(dir.path(), kSegmentBytes, static_cast<uint32_t>(rng()), &fd);
    std::string bytes;
    if (rounds == 0) {
      // The first round measures the child's start-up (exec, open, first sync):
      // under a sanitizer it alone can outlast the 80 ms of appends wanted below.
      ReadUntil(fd, spawned + std::chrono::seconds(20), &bytes, sizeof(Lsn));
      ASSERT_GE(bytes.size(), sizeof(Lsn)) << "the child reported nothing within 20 s";
      startup = std::chrono::steady_clock::now() - spawned;
    }
    // Kill at a random moment: sometimes during the child's own recovery.
    const auto window_us =
        std::chrono::duration_cast<std::chrono::microseconds>(startup).count() + 80000;
    auto kill_at = spawned + std::chrono::microseconds(rng() % static_cast<uint64_t>(window_us));
    bool alive = ReadUntil(fd, kill_at, &bytes);
    ::kill(child.pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(child.pid, ::waitpid(child.pid, &status, 0));
    child.pid = -1;
    DrainToEof(fd, &bytes);
    ::close(fd);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child died on its own (alive=" << alive << ", status " << status << ")";
    ASSERT_NO_FATAL_FAILURE(TakeReported(bytes, &max_reported, &reported_total));
    uint64_t torn = 0;
    ASSERT_NO_FATAL_FAILURE(VerifyLog(dir.path(), kSegmentBytes, max_reported, &torn));
    torn_tails += torn;
  }
  std::printf("rounds %d, LSNs reported durable %llu, last %llu, torn tails cut %llu\n", rounds,
              static_cast<unsigned long long>(reported_total),
              static_cast<unsigned long long>(max_reported),
              static_cast<unsigned long long>(torn_tails));
  EXPECT_GE(rounds, 10);
  EXPECT_GT(reported_total, 100u) << "the child barely ran; the test proved little";
}

// The same invariants when the writer dies at an exact WAL step: a failpoint
// `crash` (immediate _exit) before/after a write, before/after an fdatasync,
// before a segment is created.
TEST(WalKill, CrashAtEachWalFailpointLosesNothingReportedDurable) {
  TempDir dir;
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr uint64_t kSegmentBytes = 64 << 10;  // rolls often enough to reach segment creation
  Lsn max_reported = 0;
  uint64_t reported_total = 0;
  for (const char* point : {"wal.before_write", "wal.after_write", "wal.before_sync",
                            "wal.after_sync", "wal.before_segment_create"}) {
    for (int round = 0; round < 3; ++round) {
      SCOPED_TRACE(std::string(point) + " round " + std::to_string(round));
      const std::string spec =
          std::string(point) + "=crash-after(" + std::to_string(rng() % 40) + ")";
      int fd = -1;
      ChildGuard child;
      child.pid = SpawnChild(dir.path(), kSegmentBytes, static_cast<uint32_t>(rng()), &fd, spec);
      std::string bytes;
      bool alive =
          ReadUntil(fd, std::chrono::steady_clock::now() + std::chrono::seconds(20), &bytes);
      ASSERT_FALSE(alive) << "the child did not reach " << spec << " within 20 s";
      int status = 0;
      ASSERT_EQ(child.pid, ::waitpid(child.pid, &status, 0));
      child.pid = -1;
      ::close(fd);
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == fp::kCrashExitCode)
          << "child status " << status << " (expected the failpoint crash exit "
          << fp::kCrashExitCode << ")";
      ASSERT_NO_FATAL_FAILURE(TakeReported(bytes, &max_reported, &reported_total));
      uint64_t torn = 0;
      ASSERT_NO_FATAL_FAILURE(VerifyLog(dir.path(), kSegmentBytes, max_reported, &torn));
    }
  }
  EXPECT_GT(reported_total, 0u);
}

}  // namespace
}  // namespace dtx::wal
