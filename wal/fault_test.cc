// Fault tests: a failed write/fdatasync fail-stops the log (sticky error, no
// retry, nothing reported durable after it); a simulated power loss keeps
// every record that was reported durable; recovery makes every segment
// durable and reads it from the medium before replaying, so nothing replayed
// (acted on) can vanish in a later power loss.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
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

// What a restarted node acts on: the LSNs Open replays from `dir`.
std::vector<Lsn> Replay(const Options& o, const std::string& dir) {
  std::vector<Lsn> lsns;
  auto log = Log::Open(o, dir, [&](Lsn lsn, uint8_t, std::string_view p) {
    EXPECT_TRUE(PayloadMatches(lsn, p)) << "lsn " << lsn;
    lsns.push_back(lsn);
    return Status::OK();
  });
  EXPECT_TRUE(log.ok()) << log.status().ToString();
  return lsns;
}

std::vector<Lsn> Range(Lsn first, Lsn last) {
  std::vector<Lsn> v;
  for (Lsn l = first; l <= last; ++l) v.push_back(l);
  return v;
}

// Records 1..5 durable, then record 6 written by a process whose fdatasync
// of it fails (the hook), after which the process goes away: record 6 is in
// the page cache only.
void WriteFiveDurableAndOneUnsynced(FaultInjectionEnv* env, const Options& o,
                                    const std::string& dir, const std::string& why) {
  auto log = Log::Open(o, dir, nullptr);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  for (Lsn lsn = 1; lsn <= 5; ++lsn) ASSERT_TRUE((*log)->Append(1, MakePayload(lsn, 100)).ok());
  ASSERT_TRUE((*log)->WaitDurable(5).ok());
  env->SetFaultHook([why](Op op, const std::string& path) {
    return op == Op::kSync && IsSegment(path) ? Status::IOError(why) : Status::OK();
  });
  auto six = (*log)->Append(1, MakePayload(6, 100));
  ASSERT_TRUE(six.ok());
  ASSERT_EQ(6u, *six);
  ASSERT_FALSE((*log)->WaitDurable(6).ok());
  env->SetFaultHook(nullptr);
}

// Issue 14 "Recovery reads the medium": a record written but never synced
// (the process was killed before its fdatasync), then a restart, then a
// power loss. The restart acts on record 6 only after Open made it durable,
// so the power loss cannot take it away.
TEST(WalFault, RecordWrittenButNeverSyncedIsMadeDurableBeforeItIsReplayed) {
  TempDir dir;
  FaultInjectionEnv env(Env::Posix());
  Options o;
  o.env = &env;
  WriteFiveDurableAndOneUnsynced(&env, o, dir.path(), "killed before its fdatasync (injected)");
  if (HasFatalFailure()) return;
  const std::vector<Lsn> acted = Replay(o, dir.path());
  EXPECT_EQ(Range(1, 6), acted) << "record 6 was in the page cache: Open syncs it, then replays it";
  ASSERT_TRUE(env.LosePower().ok());
  env.PowerOn();
  EXPECT_EQ(acted, Replay(o, dir.path())) << "a record acted on after the restart was lost";
}

// The same after a failed fdatasync that, as Linux does, marked the pages
// clean though they never reached the disk ("fsyncgate"): a later sync
// returns 0 and the cache still returns record 6. Open drops the cache and
// reads the medium, so record 6 is never acted on, and the power loss after
// the restart loses nothing that was.
TEST(WalFault, RecordWhoseSyncFailedIsNotReadFromThePageCacheAfterARestart) {
  TempDir dir;
  FaultInjectionEnv env(Env::Posix());
  env.SetSyncErrorsLoseData(true);
  Options o;
  o.env = &env;
  WriteFiveDurableAndOneUnsynced(&env, o, dir.path(), "fdatasync: Input/output error (injected)");
  if (HasFatalFailure()) return;
  {
    // The scenario is real: a plain read still returns record 6.
    auto f = env.OpenFile(dir.Sub(format::SegmentFileName(1)), OpenMode::kExisting);
    ASSERT_TRUE(f.ok());
    std::string bytes(4096, '\0');
    size_t got = 0;
    ASSERT_TRUE((*f)->ReadAt(0, bytes.size(), bytes.data(), &got).ok());
    bytes.resize(got);
    ASSERT_NE(std::string::npos, bytes.find(MakePayload(6, 100)));
  }
  const std::vector<Lsn> acted = Replay(o, dir.path());
  EXPECT_EQ(Range(1, 5), acted) << "record 6 never reached the medium but was replayed";
  ASSERT_TRUE(env.LosePower().ok());
  env.PowerOn();
  EXPECT_EQ(acted, Replay(o, dir.path())) << "a record acted on after the restart was lost";
}

// A sync that fails before replay stops Open with a clear error, and no
// record reaches the replay callback.
TEST(WalFault, FailedSyncBeforeReplayStopsOpenAndReplaysNothing) {
  TempDir dir;
  FaultInjectionEnv env(Env::Posix());
  Options o;
  o.env = &env;
  o.segment_bytes = 4 << 10;
  {
    auto log = Log::Open(o, dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    for (Lsn lsn = 1; lsn <= 100; ++lsn) ASSERT_TRUE((*log)->Append(1, MakePayload(lsn, 100)).ok());
    ASSERT_TRUE((*log)->WaitDurable(100).ok());
  }
  std::string segment;  // the last segment, whatever it is called
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (IsSegment(e.path().string()) && e.path().string() > segment) segment = e.path().string();
  }
  ASSERT_NE(dir.Sub(format::SegmentFileName(1)), segment) << "the log should span segments";
  struct Case {
    Op op;
    std::string path;
    const char* says;
  };
  for (const Case& c : {Case{Op::kSync, segment, "durable before replaying it"},
                        Case{Op::kSyncDir, dir.path(), "the directory"}}) {
    env.SetFaultHook([&c](Op op, const std::string& path) {
      return op == c.op && path == c.path ? Status::IOError("Input/output error (injected)")
                                          : Status::OK();
    });
    int replayed = 0;
    auto log = Log::Open(o, dir.path(), [&](Lsn, uint8_t, std::string_view) {
      ++replayed;
      return Status::OK();
    });
    ASSERT_FALSE(log.ok()) << c.path;
    EXPECT_TRUE(log.status().IsIOError()) << log.status().ToString();
    EXPECT_NE(std::string::npos, log.status().message().find(c.says)) << log.status().ToString();
    EXPECT_NE(std::string::npos, log.status().message().find(c.path)) << log.status().ToString();
    EXPECT_NE(std::string::npos, log.status().message().find("injected"))
        << log.status().ToString();
    EXPECT_EQ(0, replayed) << "records were replayed before every segment was synced";
  }
  env.SetFaultHook(nullptr);
  EXPECT_EQ(Range(1, 100), Replay(o, dir.path()));
}

// ... and the process knows it cannot trust its page cache any more (a node
// then exits with kSyncFailedExitCode). In a fresh process: the flag is
// process-wide and sticky.
TEST(WalFaultDeathTest, FailedSyncBeforeReplayMarksTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const int code = [] {
          if (SyncFailedInProcess()) return 2;
          TempDir dir;
          FaultInjectionEnv env(Env::Posix());
          Options o;
          o.env = &env;
          if (!Log::Open(o, dir.path(), nullptr).ok()) return 3;  // creates a segment
          if (SyncFailedInProcess()) return 4;
          env.SetFaultHook([](Op op, const std::string& path) {
            return op == Op::kSync && IsSegment(path) ? Status::IOError("injected") : Status::OK();
          });
          if (Log::Open(o, dir.path(), nullptr).ok()) return 5;
          return SyncFailedInProcess() ? 0 : 6;
        }();
        std::_Exit(code);
      },
      ::testing::ExitedWithCode(0), "");
}

// Open syncs the directory and every segment, and drops every segment's
// cached pages, before it reads a byte of any segment.
TEST(WalFault, OpenSyncsAndDropsTheCacheOfEverySegmentBeforeReadingAny) {
  TempDir dir;
  FaultInjectionEnv env(Env::Posix());
  Options o;
  o.env = &env;
  o.segment_bytes = 4 << 10;
  {
    auto log = Log::Open(o, dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    for (Lsn lsn = 1; lsn <= 100; ++lsn) ASSERT_TRUE((*log)->Append(1, MakePayload(lsn, 100)).ok());
    ASSERT_TRUE((*log)->WaitDurable(100).ok());
  }
  std::vector<std::string> segments;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (IsSegment(e.path().string())) segments.push_back(e.path().string());
  }
  ASSERT_GE(segments.size(), 3u);
  std::mutex mu;
  std::vector<std::pair<Op, std::string>> ops;
  env.SetFaultHook([&](Op op, const std::string& path) {
    std::lock_guard<std::mutex> lock(mu);
    ops.emplace_back(op, path);
    return Status::OK();
  });
  EXPECT_EQ(Range(1, 100), Replay(o, dir.path()));
  env.SetFaultHook(nullptr);
  std::lock_guard<std::mutex> lock(mu);
  auto first = [&](Op op, const std::function<bool(const std::string&)>& match) {
    for (size_t i = 0; i < ops.size(); ++i) {
      if (ops[i].first == op && match(ops[i].second)) return i;
    }
    return ops.size();
  };
  const size_t first_read = first(Op::kRead, IsSegment);
  ASSERT_LT(first_read, ops.size());
  EXPECT_LT(first(Op::kSyncDir, [&](const std::string& p) { return p == dir.path(); }), first_read);
  for (const std::string& seg : segments) {
    auto is = [&](const std::string& p) { return p == seg; };
    const size_t sync = first(Op::kSync, is);
    const size_t drop = first(Op::kDropCache, is);
    EXPECT_LT(sync, drop) << seg;
    EXPECT_LT(drop, first_read) << seg;
  }
}

}  // namespace
}  // namespace dtx::wal
