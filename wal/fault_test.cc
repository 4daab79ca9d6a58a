// Fault tests: a failed write/fdatasync fail-stops the log (sticky error, no
// retry, nothing reported durable after it); a simulated power loss keeps
// every record that was reported durable.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "common/failpoint.h"
#include "wal/env.h"
#include "wal/fault_env.h"
#include "wal/format.h"
#include "wal/test_util.h"
#include "wal/wal.h"

namespace dtx::wal {
namespace {

using Op = FaultInjectionEnv::Op;
using testing::MakePayload;
using testing::PayloadMatches;
using testing::TempDir;

bool IsSegment(const std::string& path) { return path.ends_with(".wal"); }

// What the durable callbacks saw, in the order they ran (one flusher thread).
struct CallbackLog {
  std::mutex mu;
  std::vector<std::pair<Lsn, Status>> calls;
  DurableFn For(Lsn lsn) {
    return [this, lsn](const Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      calls.emplace_back(lsn, s);
    };
  }
};

// Appends from several threads until the log fails; checks the fail-stop
// contract. `arm` runs after a few hundred records are durable.
void RunUntilFailure(Log* log, const std::function<void()>& arm, CallbackLog* cbs,
                     Lsn* last_appended) {
  std::mutex append_mu;
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      while (!failed.load() && std::chrono::steady_clock::now() < deadline) {
        std::lock_guard<std::mutex> lock(append_mu);
        Lsn expect = log->last_lsn() + 1;
        auto r = log->Append(1, MakePayload(expect, 64), cbs->For(expect));
        if (!r.ok()) {
          failed = true;
          return;
        }
        DTX_CHECK(*r == expect);
      }
    });
  }
  while (log->durable_lsn() < 300) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  arm();
  for (auto& t : threads) t.join();
  *last_appended = log->last_lsn();
}

void CheckFailStop(Log* log, CallbackLog* cbs, Lsn last_appended) {
  const Status health = log->health();
  ASSERT_FALSE(health.ok());
  // The flusher publishes the error first, then runs the failed callbacks.
  for (int i = 0; i < 5000; ++i) {
    {
      std::lock_guard<std::mutex> lock(cbs->mu);
      if (cbs->calls.size() >= last_appended) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const Lsn durable = log->durable_lsn();
  // Later appends fail at once with the sticky error.
  for (int i = 0; i < 3; ++i) {
    auto r = log->Append(1, "after failure", cbs->For(0));
    EXPECT_FALSE(r.ok());
    EXPECT_EQ(health, r.status());
    EXPECT_EQ(health, log->TryAppend(1, "x").status());
  }
  if (last_appended > durable) {
    EXPECT_EQ(health, log->WaitDurable(last_appended));
  }
  EXPECT_TRUE(log->WaitDurable(durable).ok());
  EXPECT_EQ(durable, log->durable_lsn());
  std::lock_guard<std::mutex> lock(cbs->mu);
  // Every appended record got exactly one callback, in LSN order, and once
  // one failed none after it succeeded.
  ASSERT_EQ(last_appended, cbs->calls.size());
  bool seen_error = false;
  for (size_t i = 0; i < cbs->calls.size(); ++i) {
    ASSERT_EQ(i + 1, cbs->calls[i].first);
    if (!cbs->calls[i].second.ok()) {
      seen_error = true;
      EXPECT_EQ(health, cbs->calls[i].second);
      EXPECT_GT(cbs->calls[i].first, durable);
    } else {
      ASSERT_FALSE(seen_error) << "lsn " << cbs->calls[i].first
                               << " reported durable after the failure";
      EXPECT_LE(cbs->calls[i].first, durable);
    }
  }
  EXPECT_TRUE(seen_error);
}

TEST(WalFault, FdatasyncFailureIsStickyFailsWaitersAndIsNeverRetried) {
  TempDir dir;
  FaultInjectionEnv env(Env::Posix());
  Options o;
  o.env = &env;
  o.segment_bytes = 32 << 10;
  auto log = Log::Open(o, dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  CallbackLog cbs;
  Lsn last = 0;
  std::atomic<bool> broken{false};
  RunUntilFailure(
      log->get(),
      [&] {
        env.SetFaultHook([&](Op op, const std::string& path) {
          if (op == Op::kSync && IsSegment(path)) {
            broken = true;
            return Status::IOError("fdatasync " + path + ": Input/output error (injected)");
          }
          return Status::OK();
        });
      },
      &cbs, &last);
  ASSERT_TRUE(broken.load());
  const uint64_t syncs_at_failure = env.count(Op::kSync);
  CheckFailStop(log->get(), &cbs, last);
  EXPECT_NE(std::string::npos, (*log)->health().message().find("injected"));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(syncs_at_failure, env.count(Op::kSync)) << "a failed sync was retried";
  env.SetFaultHook(nullptr);
  log->reset();
  EXPECT_EQ(syncs_at_failure, env.count(Op::kSync)) << "closing a failed log must not sync";
}

TEST(WalFault, WriteFailureIsStickyToo) {
  TempDir dir;
  FaultInjectionEnv env(Env::Posix());
  Options o;
  o.env = &env;
  auto log = Log::Open(o, dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  CallbackLog cbs;
  Lsn last = 0;
  RunUntilFailure(
      log->get(),
      [&] {
        env.SetFaultHook([](Op op, const std::string& path) {
          return op == Op::kWrite && IsSegment(path)
                     ? Status::IOError("pwrite: No space left on device (injected)")
                     : Status::OK();
        });
      },
      &cbs, &last);
  CheckFailStop(log->get(), &cbs, last);
}

class WalFailpoint : public ::testing::TestWithParam<const char*> {
 protected:
  void TearDown() override { fp::DisarmAll(); }
};

// `error` at each failpoint behaves like the guarded syscall failing.
TEST_P(WalFailpoint, ErrorAtFailpointFailStopsTheLog) {
  TempDir dir;
  Options o;
  o.segment_bytes = 16 << 10;  // rolls often, so wal.before_segment_create is reached
  auto log = Log::Open(o, dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  CallbackLog cbs;
  Lsn last = 0;
  RunUntilFailure(
      log->get(), [&] { ASSERT_TRUE(fp::Arm(GetParam(), "error").ok()); }, &cbs, &last);
  CheckFailStop(log->get(), &cbs, last);
  EXPECT_NE(std::string::npos, (*log)->health().message().find(GetParam()))
      << (*log)->health().ToString();
}

INSTANTIATE_TEST_SUITE_P(Points, WalFailpoint,
                         ::testing::Values("wal.before_write", "wal.after_write", "wal.before_sync",
                                           "wal.after_sync", "wal.before_segment_create"));

// The model the power-loss test relies on: unsynced bytes and unsynced
// directory entries are gone after LosePower, synced ones stay.
TEST(WalFault, FaultEnvLosesExactlyWhatWasNotSynced) {
  TempDir dir;
  FaultInjectionEnv env(Env::Posix());
  const std::string a = dir.Sub("a"), b = dir.Sub("b"), c_tmp = dir.Sub("c.tmp"), c = dir.Sub("c");
  {
    auto fa = env.OpenFile(a, OpenMode::kCreate);
    ASSERT_TRUE(fa.ok());
    ASSERT_TRUE((*fa)->Append("synced").ok());
    ASSERT_TRUE((*fa)->Sync().ok());
    ASSERT_TRUE(env.SyncDir(dir.path()).ok());
    ASSERT_TRUE((*fa)->Append("-lost").ok());
    ASSERT_TRUE((*fa)->WriteAt(0, "SY").ok());     // overwrite of synced bytes, unsynced
    auto fb = env.OpenFile(b, OpenMode::kCreate);  // created, never dir-synced
    ASSERT_TRUE(fb.ok());
    ASSERT_TRUE((*fb)->Append("data").ok());
    ASSERT_TRUE((*fb)->Sync().ok());
    auto fc = env.OpenFile(c_tmp, OpenMode::kCreate);
    ASSERT_TRUE(fc.ok());
    ASSERT_TRUE((*fc)->Allocate(0, 100).ok());
    ASSERT_TRUE((*fc)->Sync().ok());
    ASSERT_TRUE(env.RenameFile(c_tmp, c).ok());
  }
  ASSERT_TRUE(env.LosePower().ok());
  EXPECT_FALSE(env.OpenFile(a, OpenMode::kExisting).ok()) << "powered off: every call fails";
  env.PowerOn();
  auto fa = env.OpenFile(a, OpenMode::kExisting);
  ASSERT_TRUE(fa.ok());
  char buf[32];
  size_t got = 0;
  ASSERT_TRUE((*fa)->ReadAt(0, sizeof(buf), buf, &got).ok());
  EXPECT_EQ("synced", std::string(buf, got));
  EXPECT_TRUE(env.OpenFile(b, OpenMode::kExisting).status().IsNotFound());
  EXPECT_TRUE(env.OpenFile(c, OpenMode::kExisting).status().IsNotFound());
  EXPECT_TRUE(env.OpenFile(c_tmp, OpenMode::kExisting).status().IsNotFound());
}

// Power is cut at random moments while appenders run; after each "reboot"
// every record reported durable is present and intact, in LSN order.
TEST(WalFault, PowerLossKeepsEveryRecordReportedDurable) {
  TempDir dir;
  FaultInjectionEnv env(Env::Posix());
  Options o;
  o.env = &env;
  o.segment_bytes = 64 << 10;    // rolls every ~200 records
  o.queue_bytes_max = 16 << 10;  // back-pressure keeps appenders near the flusher
  std::mt19937 rng(12345);
  std::set<Lsn> reported;  // every LSN ever reported durable
  std::mutex reported_mu;
  uint64_t total_lost_unsynced = 0;
  constexpr int kRounds = 40;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  Lsn kept_from = 1;  // records below this may have been truncated away
  int rounds = 0;
  for (; rounds < kRounds && std::chrono::steady_clock::now() < deadline; ++rounds) {
    // Reboot: recover and check.
    Lsn expect = 0;
    bool intact = true;
    auto log = Log::Open(o, dir.path(), [&](Lsn lsn, uint8_t, std::string_view p) {
      if (expect != 0 && lsn != expect) intact = false;
      expect = lsn + 1;
      if (!PayloadMatches(lsn, p)) intact = false;
      return Status::OK();
    });
    ASSERT_TRUE(log.ok()) << "round " << rounds << ": " << log.status().ToString();
    ASSERT_TRUE(intact) << "round " << rounds;
    const Lsn recovered_last = (*log)->last_lsn();
    // Keep the log short (and truncate under power loss too): drop segments
    // wholly below the last 300 records.
    if (recovered_last > 300 && rounds % 3 == 2) {
      kept_from = recovered_last - 300;
      ASSERT_TRUE((*log)->TruncateBefore(kept_from).ok());
    }
    {
      std::lock_guard<std::mutex> lock(reported_mu);
      if (!reported.empty()) {
        ASSERT_GE(recovered_last, *reported.rbegin())
            << "round " << rounds << ": a durable record was lost";
      }
    }
    // Run appenders, then cut the power at a random moment.
    std::mutex append_mu;
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&, seed = rng()] {
        std::mt19937 r(seed);
        while (!stop.load()) {
          std::lock_guard<std::mutex> lock(append_mu);
          Lsn lsn = (*log)->last_lsn() + 1;
          auto res = (*log)->Append(1, MakePayload(lsn, 12 + r() % 700), [&, lsn](const Status& s) {
            if (!s.ok()) return;
            std::lock_guard<std::mutex> l2(reported_mu);
            reported.insert(lsn);
          });
          if (!res.ok()) return;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 30000));
    ASSERT_TRUE(env.LosePower().ok());
    stop = true;
    for (auto& t : threads) t.join();
    total_lost_unsynced += (*log)->last_lsn() - (*log)->durable_lsn();
    log->reset();
    env.PowerOn();
  }
  std::printf("power-loss rounds %d, LSNs reported durable %zu, unsynced records lost %llu\n",
              rounds, reported.size(), static_cast<unsigned long long>(total_lost_unsynced));
  // Final reboot: everything ever reported durable is there.
  std::vector<Lsn> lsns;
  bool intact = true;
  auto log = Log::Open(o, dir.path(), [&](Lsn lsn, uint8_t, std::string_view p) {
    lsns.push_back(lsn);
    if (!PayloadMatches(lsn, p)) intact = false;
    return Status::OK();
  });
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_TRUE(intact);
  std::set<Lsn> present(lsns.begin(), lsns.end());
  ASSERT_EQ(present.size(), lsns.size()) << "duplicate LSNs";
  for (size_t i = 1; i < lsns.size(); ++i) ASSERT_EQ(lsns[i - 1] + 1, lsns[i]);
  ASSERT_FALSE(lsns.empty());
  EXPECT_LE(lsns.front(), kept_from);
  for (Lsn l : reported) {
    if (l >= kept_from) {
      ASSERT_TRUE(present.count(l)) << "durable LSN " << l << " lost";
    }
  }
  EXPECT_GT(reported.size(), 100u);
  EXPECT_GE(rounds, 10);
  // The test is only meaningful if power losses did drop unsynced records.
  EXPECT_GT(total_lost_unsynced, 0u);
}

}  // namespace
}  // namespace dtx::wal
