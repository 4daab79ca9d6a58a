// Helper for wal_kill_test: appends self-describing records to the log in
// argv[1] forever and writes each LSN reported durable (8 bytes, host order)
// to stdout, until the parent SIGKILLs it.
//   wal_kill_child DIR SEGMENT_BYTES SEED
// DTX_FAILPOINTS is honoured, so a test can crash it at an exact WAL step.
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

#include "common/failpoint.h"
#include "wal/test_util.h"
#include "wal/wal.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: wal_kill_child DIR SEGMENT_BYTES SEED\n");
    return 2;
  }
  if (dtx::Status s = dtx::fp::InitFromEnv(); !s.ok()) {
    std::fprintf(stderr, "wal_kill_child: %s\n", s.ToString().c_str());
    return 2;
  }
  dtx::wal::Options o;
  o.segment_bytes = std::strtoull(argv[2], nullptr, 10);
  std::mt19937 rng(static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10)));
  auto log = dtx::wal::Log::Open(o, argv[1], nullptr);
  if (!log.ok()) {
    std::fprintf(stderr, "wal_kill_child: open: %s\n", log.status().ToString().c_str());
    return 3;
  }
  constexpr int kOutstandingMax = 32;
  std::atomic<int> outstanding{0};
  for (;;) {
    while (outstanding.load() >= kOutstandingMax) std::this_thread::yield();
    const dtx::wal::Lsn lsn = (*log)->last_lsn() + 1;  // the only appender
    outstanding++;
    auto r = (*log)->Append(
        dtx::wal::testing::TypeFor(lsn), dtx::wal::testing::MakePayload(lsn, 12 + rng() % 3000),
        [lsn, &outstanding](const dtx::Status& s) {
          if (!s.ok()) {
            std::fprintf(stderr, "wal_kill_child: sync failed: %s\n", s.ToString().c_str());
            std::_Exit(4);
          }
          const char* p = reinterpret_cast<const char*>(&lsn);
          size_t left = sizeof(lsn);
          while (left > 0) {
            ssize_t n = ::write(1, p, left);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) std::_Exit(5);
            p += n;
            left -= static_cast<size_t>(n);
          }
          outstanding--;
        });
    if (!r.ok() || *r != lsn) {
      std::fprintf(stderr, "wal_kill_child: append: %s\n", r.status().ToString().c_str());
      return 6;
    }
  }
}
