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
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

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

pid_t SpawnChild(const std::string& dir, uint64_t segment_bytes, uint32_t seed, int* read_fd) {
  int fds[2];
  DTX_CHECK(::pipe2(fds, O_CLOEXEC) == 0);
  std::string seg = std::to_string(segment_bytes), s = std::to_string(seed);
  pid_t pid = ::fork();
  DTX_CHECK(pid >= 0);
  if (pid == 0) {
    ::dup2(fds[1], 1);  // dup2 clears O_CLOEXEC on the copy
    ::execl(DTX_WAL_KILL_CHILD, DTX_WAL_KILL_CHILD, dir.c_str(), seg.c_str(), s.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(fds[1]);
  *read_fd = fds[0];
  return pid;
}

// Reads whatever arrives on fd until `until` (or EOF), appending to *buf.
bool ReadUntil(int fd, std::chrono::steady_clock::time_point until, std::string* buf) {
  char tmp[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() < 0) return true;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()) + 1);
    if (n <= 0) continue;
    ssize_t r = ::read(fd, tmp, sizeof(tmp));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;  // EOF: the child is gone
    buf->append(tmp, static_cast<size_t>(r));
  }
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
  for (; rounds < kRoundsMax && std::chrono::steady_clock::now() < deadline; ++rounds) {
    SCOPED_TRACE("round " + std::to_string(rounds));
    int fd = -1;
    ChildGuard child;
    child.pid = SpawnChild(dir.path(), kSegmentBytes, static_cast<uint32_t>(rng()), &fd);
    std::string bytes;
    // Kill at a random moment: sometimes during the child's own recovery.
    auto kill_at = std::chrono::steady_clock::now() + std::chrono::microseconds(rng() % 80000);
    bool alive = ReadUntil(fd, kill_at, &bytes);
    ::kill(child.pid, SIGKILL);
    int status = 0;
    ASSERT_EQ(child.pid, ::waitpid(child.pid, &status, 0));
    child.pid = -1;
    DrainToEof(fd, &bytes);
    ::close(fd);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child died on its own (alive=" << alive << ", status " << status << ")";
    ASSERT_EQ(0u, bytes.size() % sizeof(Lsn));
    // Reported LSNs come in order and continue past everything reported before.
    for (size_t i = 0; i < bytes.size(); i += sizeof(Lsn)) {
      Lsn lsn;
      std::memcpy(&lsn, bytes.data() + i, sizeof(lsn));
      ASSERT_GT(lsn, max_reported);
      max_reported = lsn;
      ++reported_total;
    }
    // Recover in this process: dense, intact, in order, covering max_reported.
    Lsn expect = 0, count = 0;
    bool intact = true;
    Stats first_stats;
    {
      auto log = Log::Open(Options{.segment_bytes = kSegmentBytes}, dir.path(),
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
      first_stats = (*log)->stats();
      torn_tails += first_stats.torn_tails_cut;
    }
    // Nothing follows the last good record: a second recovery finds a clean
    // end and the same records.
    auto again = Log::Open(Options{.segment_bytes = kSegmentBytes}, dir.path(), nullptr);
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(0u, (*again)->stats().torn_tails_cut);
    EXPECT_EQ(count, (*again)->stats().records_recovered);
  }
  std::printf("rounds %d, LSNs reported durable %llu, last %llu, torn tails cut %llu\n", rounds,
              static_cast<unsigned long long>(reported_total), static_cast<unsigned long long>(max_reported),
              static_cast<unsigned long long>(torn_tails));
  EXPECT_GE(rounds, 10);
  EXPECT_GT(reported_total, 100u) << "the child barely ran; the test proved little";
}

}  // namespace
}  // namespace dtx::wal
