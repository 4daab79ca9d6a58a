// Functional tests of the WAL: round trips across segment rolls, reopen,
// truncation, group commit with concurrent appenders, back-pressure.
#include "wal/wal.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common/failpoint.h"
#include "wal/format.h"
#include "wal/test_util.h"

namespace dtx::wal {
namespace {

using testing::MakePayload;
using testing::PayloadMatches;
using testing::PayloadSizeFor;
using testing::TempDir;
using testing::TypeFor;

struct Replayed {
  std::vector<Lsn> lsns;
  bool all_match = true;
  ReplayFn fn() {
    return [this](Lsn lsn, uint8_t type, std::string_view payload) {
      lsns.push_back(lsn);
      if (type != TypeFor(lsn) || !PayloadMatches(lsn, payload)) all_match = false;
      return Status::OK();
    };
  }
};

std::vector<std::string> SegmentFiles(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".wal") out.push_back(e.path().filename());
  }
  std::sort(out.begin(), out.end());
  return out;
}

Options SmallSegments() {
  Options o;
  o.segment_bytes = 4096;
  return o;
}

TEST(Wal, RoundTripAcrossSegmentRollsAndReopen) {
  TempDir dir;
  constexpr Lsn kRecords = 600;
  {
    auto log = Log::Open(SmallSegments(), dir.path(), nullptr);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    for (Lsn i = 1; i <= kRecords; ++i) {
      auto lsn = (*log)->Append(TypeFor(i), MakePayload(i, PayloadSizeFor(i, 300)));
      ASSERT_TRUE(lsn.ok()) << lsn.status().ToString();
      ASSERT_EQ(i, *lsn);
    }
    ASSERT_TRUE((*log)->WaitDurable(kRecords).ok());
    EXPECT_EQ(kRecords, (*log)->durable_lsn());
    EXPECT_EQ(kRecords, (*log)->last_lsn());
    EXPECT_GT((*log)->stats().segments_created, 10u);
    EXPECT_EQ(kRecords, (*log)->stats().records_synced);
  }
  auto files = SegmentFiles(dir.path());
  ASSERT_GT(files.size(), 10u);
  EXPECT_EQ(format::SegmentFileName(1), files.front());
  for (const auto& f : files) EXPECT_LE(std::filesystem::file_size(dir.Sub(f)), 4096u) << f;

  Replayed r;
  {
    auto log = Log::Open(SmallSegments(), dir.path(), r.fn());
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    EXPECT_EQ(kRecords, (*log)->last_lsn());
    EXPECT_EQ(kRecords, (*log)->stats().records_recovered);
    EXPECT_EQ(0u, (*log)->stats().torn_tails_cut);
    // Appending after a reopen continues the LSN sequence.
    for (Lsn i = kRecords + 1; i <= kRecords + 50; ++i) {
      auto lsn = (*log)->Append(TypeFor(i), MakePayload(i, PayloadSizeFor(i, 300)));
      ASSERT_TRUE(lsn.ok());
      ASSERT_EQ(i, *lsn);
    }
  }
  ASSERT_EQ(kRecords, r.lsns.size());
  for (Lsn i = 0; i < kRecords; ++i) ASSERT_EQ(i + 1, r.lsns[i]);
  EXPECT_TRUE(r.all_match);

  Replayed again;
  auto log = Log::Open(SmallSegments(), dir.path(), again.fn());
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ(kRecords + 50, again.lsns.size());
  EXPECT_TRUE(again.all_match);
}

TEST(Wal, RecordLargerThanASegmentGetsItsOwnSegment) {
  TempDir dir;
  Options o = SmallSegments();
  {
    auto log = Log::Open(o, dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(1, MakePayload(1, 100)).ok());
    ASSERT_TRUE((*log)->Append(2, MakePayload(2, 20000)).ok());
    ASSERT_TRUE((*log)->Append(3, MakePayload(3, 100)).ok());
    ASSERT_TRUE((*log)->WaitDurable(3).ok());
  }
  EXPECT_EQ(3u, SegmentFiles(dir.path()).size());
  Replayed r;
  auto log = Log::Open(o, dir.path(), r.fn());
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  ASSERT_EQ((std::vector<Lsn>{1, 2, 3}), r.lsns);
}

TEST(Wal, TruncateBeforeDropsOnlyWholeSegmentsBelowTheLsn) {
  TempDir dir;
  std::vector<std::string> before;
  Lsn cut = 0;
  {
    auto log = Log::Open(SmallSegments(), dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    for (Lsn i = 1; i <= 400; ++i)
      ASSERT_TRUE((*log)->Append(TypeFor(i), MakePayload(i, 100)).ok());
    ASSERT_TRUE((*log)->WaitDurable(400).ok());
    before = SegmentFiles(dir.path());
    ASSERT_GT(before.size(), 5u);
    // Cut in the middle of the fourth segment: the first three go.
    Lsn s3 = 0, s4 = 0;
    ASSERT_TRUE(format::ParseSegmentFileName(before[3], &s3));
    ASSERT_TRUE(format::ParseSegmentFileName(before[4], &s4));
    cut = s3 + (s4 - s3) / 2;
    ASSERT_TRUE((*log)->TruncateBefore(cut).ok());
    EXPECT_EQ(3u, (*log)->stats().segments_deleted);
    // Truncating far past the end never deletes the segment being written.
    ASSERT_TRUE((*log)->TruncateBefore(1'000'000).ok());
    auto after = SegmentFiles(dir.path());
    ASSERT_EQ(1u, after.size());
    EXPECT_EQ(before.back(), after.back());
    ASSERT_TRUE((*log)->Append(1, MakePayload(401, 100)).ok());
  }
  Replayed r;
  auto log = Log::Open(SmallSegments(), dir.path(), r.fn());
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  Lsn last_first = 0;
  ASSERT_TRUE(format::ParseSegmentFileName(before.back(), &last_first));
  ASSERT_FALSE(r.lsns.empty());
  EXPECT_EQ(last_first, r.lsns.front());
  EXPECT_EQ(401u, r.lsns.back());
  EXPECT_EQ(401u, (*log)->last_lsn());
}

TEST(Wal, TruncateBeforeKeepsTheSegmentHoldingTheLsn) {
  TempDir dir;
  auto log = Log::Open(SmallSegments(), dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  for (Lsn i = 1; i <= 200; ++i) ASSERT_TRUE((*log)->Append(TypeFor(i), MakePayload(i, 100)).ok());
  ASSERT_TRUE((*log)->WaitDurable(200).ok());
  auto files = SegmentFiles(dir.path());
  Lsn s1 = 0;
  ASSERT_TRUE(format::ParseSegmentFileName(files[1], &s1));
  ASSERT_TRUE((*log)->TruncateBefore(s1 - 1).ok());  // lsn s1-1 lives in segment 0
  EXPECT_EQ(files, SegmentFiles(dir.path()));
  ASSERT_TRUE((*log)->TruncateBefore(s1).ok());
  auto after = SegmentFiles(dir.path());
  ASSERT_EQ(files.size() - 1, after.size());
  EXPECT_EQ(files[1], after.front());
}

TEST(Wal, ConcurrentAppendersAllRecordsSurviveReopen) {
  TempDir dir;
  constexpr int kThreads = 8;
  constexpr int kPerThread = 1500;
  Options o;
  o.segment_bytes = 64 << 10;
  auto log = Log::Open(o, dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  std::atomic<int> errors{0}, durable{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        std::string payload = std::to_string(t) + ":" + std::to_string(i);
        auto lsn =
            (*log)->Append(1, payload, [&](const Status& s) { s.ok() ? durable++ : errors++; });
        if (!lsn.ok()) errors++;
      }
    });
  }
  for (auto& t : threads) t.join();
  const Lsn last = (*log)->last_lsn();
  ASSERT_EQ(Lsn{kThreads * kPerThread}, last);
  ASSERT_TRUE((*log)->WaitDurable(last).ok());
  EXPECT_GT((*log)->stats().segments_created, 1u);
  log->reset();  // joins the flusher: every callback has run
  EXPECT_EQ(0, errors.load());
  EXPECT_EQ(kThreads * kPerThread, durable.load());
  // Every thread's records come back once each, in that thread's order.
  std::vector<int> next(kThreads, 0);
  Lsn expect = 1;
  auto reopened = Log::Open(o, dir.path(), [&](Lsn lsn, uint8_t, std::string_view p) {
    if (lsn != expect++) return Status::Corruption("lsn gap");
    std::string s(p);
    int t = std::stoi(s.substr(0, s.find(':')));
    int i = std::stoi(s.substr(s.find(':') + 1));
    if (t < 0 || t >= kThreads || next[t] != i) return Status::Corruption("out of order: " + s);
    next[t]++;
    return Status::OK();
  });
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(kPerThread, next[t]);
}

// Each callback knows its LSN up front (append and LSN read under a test
// lock), so callback order and once-only delivery are checked exactly.
TEST(Wal, DurableCallbacksRunOncePerRecordInLsnOrder) {
  TempDir dir;
  constexpr int kThreads = 8;
  constexpr int kPerThread = 1500;
  auto log = Log::Open(Options(), dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  std::mutex append_mu;  // makes "append + remember lsn" atomic for the test only
  std::vector<Lsn> reported;
  std::vector<int> seen(kThreads * kPerThread + 1, 0);
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        std::unique_lock<std::mutex> lock(append_mu);
        Lsn expect = (*log)->last_lsn() + 1;
        auto lsn = (*log)->Append(1, "x", [&, expect](const Status& s) {
          if (!s.ok()) errors++;
          reported.push_back(expect);  // callbacks run on the one flusher thread
          seen[expect]++;
        });
        if (!lsn.ok() || *lsn != expect) errors++;
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE((*log)->WaitDurable((*log)->last_lsn()).ok());
  Stats st = (*log)->stats();
  log->reset();
  EXPECT_EQ(0, errors.load());
  ASSERT_EQ(size_t{kThreads * kPerThread}, reported.size());
  for (size_t i = 0; i < reported.size(); ++i) ASSERT_EQ(i + 1, reported[i]) << "callback order";
  for (size_t i = 1; i < seen.size(); ++i) ASSERT_EQ(1, seen[i]) << "lsn " << i;
  // Group commit: far fewer syncs than records.
  EXPECT_LT(st.syncs, st.records_synced);
}

// A driver that re-issues an append whenever one completes (as an event loop
// does) sends its records in bursts; the flusher's linger must let each burst
// share one sync instead of splitting it over two.
void RunCompletionDriven(Log* log, int outstanding, int total, std::atomic<int>* errors) {
  std::mutex mu;
  std::condition_variable cv;
  int completed_unhandled = 0, issued = 0, done = 0;
  auto issue = [&] {
    ++issued;
    auto r = log->Append(1, std::string(100, 'd'), [&](const Status& s) {
      if (!s.ok()) (*errors)++;
      std::lock_guard<std::mutex> lock(mu);
      ++completed_unhandled;
      cv.notify_one();
    });
    if (!r.ok()) (*errors)++;
  };
  for (int i = 0; i < outstanding; ++i) issue();
  std::unique_lock<std::mutex> lock(mu);
  while (done < total) {
    cv.wait(lock, [&] { return completed_unhandled > 0; });
    int n = completed_unhandled;
    completed_unhandled = 0;
    done += n;
    lock.unlock();
    for (int i = 0; i < n && issued < total; ++i) {
      // Some work per completion (a real handler does some): the burst takes
      // longer than the flusher needs to wake up.
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(15);
      while (std::chrono::steady_clock::now() < until) {
      }
      issue();
    }
    lock.lock();
  }
}

TEST(Wal, LingerLetsACompletionDrivenBurstShareOneSync) {
  TempDir dir;
  Options o;
  o.linger_us_max = 5000;
  auto log = Log::Open(o, dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  // A slow disk (10 ms syncs) lets the linger reach 5 ms, far more than the
  // ~0.5 ms burst needs even on a loaded machine.
  ASSERT_TRUE(fp::Arm("wal.before_sync", "sleep(10)").ok());
  std::atomic<int> errors{0};
  constexpr int kOutstanding = 32;
  RunCompletionDriven(log->get(), kOutstanding, kOutstanding * 60, &errors);
  fp::DisarmAll();
  EXPECT_EQ(0, errors.load());
  Stats st = (*log)->stats();
  const double per_sync = static_cast<double>(st.records_synced) / static_cast<double>(st.syncs);
  // Without the linger the bursts split (about kOutstanding / 2 per sync).
  EXPECT_GE(per_sync, 0.65 * kOutstanding)
      << st.records_synced << " records in " << st.syncs << " syncs";
}

TEST(Wal, TryAppendReturnsBusyWhenTheQueueIsFullAndAppendWaits) {
  TempDir dir;
  Options o;
  o.queue_bytes_max = 4096;
  auto log = Log::Open(o, dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE(fp::Arm("wal.before_sync", "sleep(200)").ok());
  // The first record goes in flight (the flusher sleeps before its sync); the
  // queue then fills up.
  ASSERT_TRUE((*log)->Append(1, std::string(1000, 'a')).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  int accepted = 0;
  Status busy;
  for (int i = 0; i < 100; ++i) {
    auto r = (*log)->TryAppend(1, std::string(1000, 'b'));
    if (!r.ok()) {
      busy = r.status();
      break;
    }
    ++accepted;
  }
  EXPECT_TRUE(busy.IsBusy()) << busy.ToString();
  EXPECT_GE(accepted, 3);
  EXPECT_LE(accepted, 4);  // 4096 / (1000 + 9)
  // A blocking Append waits for room instead of failing.
  auto t0 = std::chrono::steady_clock::now();
  auto r = (*log)->Append(1, std::string(1000, 'c'));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(50));
  fp::DisarmAll();
  ASSERT_TRUE((*log)->WaitDurable(*r).ok());
}

TEST(Wal, BadAppendArgumentsAreInvalidArgument) {
  TempDir dir;
  Options o;
  o.record_payload_bytes_max = 1000;
  auto log = Log::Open(o, dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  EXPECT_TRUE((*log)->Append(0, "reserved type").status().IsInvalidArgument());
  EXPECT_TRUE((*log)->Append(1, std::string(1001, 'x')).status().IsInvalidArgument());
  EXPECT_TRUE((*log)->Append(1, std::string(1000, 'x')).ok());
  EXPECT_TRUE((*log)->Append(255, "").ok());  // empty payloads are fine
  EXPECT_TRUE((*log)->WaitDurable(99).IsInvalidArgument());
  EXPECT_TRUE((*log)->health().ok());
}

TEST(Wal, BadOptionsAreInvalidArgument) {
  TempDir dir;
  Options o;
  o.segment_bytes = 10;
  EXPECT_TRUE(Log::Open(o, dir.path(), nullptr).status().IsInvalidArgument());
  o = Options();
  o.record_payload_bytes_max = kRecordPayloadBytesMax + 1;
  EXPECT_TRUE(Log::Open(o, dir.path(), nullptr).status().IsInvalidArgument());
}

TEST(Wal, SecondOpenOfTheSameDirectoryIsRefused) {
  TempDir dir;
  auto a = Log::Open(Options(), dir.path(), nullptr);
  ASSERT_TRUE(a.ok());
  auto b = Log::Open(Options(), dir.path(), nullptr);
  EXPECT_TRUE(b.status().IsBusy()) << b.status().ToString();
  a->reset();
  EXPECT_TRUE(Log::Open(Options(), dir.path(), nullptr).ok());
}

TEST(Wal, ReplayErrorStopsOpen) {
  TempDir dir;
  {
    auto log = Log::Open(Options(), dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(1, "a").ok());
    ASSERT_TRUE((*log)->Append(1, "b").ok());
  }
  auto log = Log::Open(Options(), dir.path(), [](Lsn lsn, uint8_t, std::string_view) {
    return lsn == 2 ? Status::Aborted("replay says no") : Status::OK();
  });
  EXPECT_TRUE(log.status().IsAborted());
}

TEST(Wal, DestructorFlushesQueuedRecords) {
  TempDir dir;
  std::atomic<int> ok{0};
  {
    auto log = Log::Open(Options(), dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE((*log)->Append(1, "r", [&](const Status& s) { ok += s.ok(); }).ok());
    }
  }
  EXPECT_EQ(100, ok.load());
  Replayed r;
  auto log = Log::Open(Options(), dir.path(), [&](Lsn lsn, uint8_t, std::string_view) {
    r.lsns.push_back(lsn);
    return Status::OK();
  });
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(100u, r.lsns.size());
}

TEST(Wal, CallbackMayTryAppend) {
  TempDir dir;
  auto log = Log::Open(Options(), dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  std::atomic<Lsn> chained{0};
  Log* l = log->get();
  ASSERT_TRUE(l->Append(1, "first", [&](const Status&) {
                 auto r = l->TryAppend(1, "from callback");
                 if (r.ok()) chained = *r;
               }).ok());
  for (int i = 0; i < 1000 && chained.load() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(2u, chained.load());
  EXPECT_TRUE(l->WaitDurable(2).ok());
}

// Options::on_sync: once per group commit, after its fdatasync and before the
// batch's durable callbacks, with the batch's records, frame bytes and sync
// time; never for a batch whose sync failed.
TEST(Wal, OnSyncHookReportsEveryGroupCommitBeforeItsCallbacks) {
  TempDir dir;
  struct Seen {
    std::mutex mu;
    uint64_t calls = 0, records = 0, bytes = 0, min_ns = UINT64_MAX, max_ns = 0;
  } seen;
  Options o;
  o.on_sync = [&seen](uint64_t records, uint64_t bytes, uint64_t sync_ns) {
    std::lock_guard<std::mutex> lock(seen.mu);
    ++seen.calls;
    seen.records += records;
    seen.bytes += bytes;
    seen.min_ns = std::min(seen.min_ns, sync_ns);
    seen.max_ns = std::max(seen.max_ns, sync_ns);
  };
  auto opened = Log::Open(o, dir.path(), nullptr);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Log* log = opened->get();
  constexpr int kThreads = 4;
  constexpr Lsn kPerThread = 100;
  std::atomic<uint64_t> expected_bytes{0};
  std::atomic<int> callbacks_before_hook{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (Lsn i = 1; i <= kPerThread; ++i) {
        const std::string payload = MakePayload(i, PayloadSizeFor(i + t, 200));
        expected_bytes += format::kRecordHeaderBytes + payload.size();
        auto lsn = log->Append(7, payload, [&](const Status& s) {
          EXPECT_TRUE(s.ok());
          // The hook ran for this batch already: it has counted this record.
          std::lock_guard<std::mutex> lock(seen.mu);
          if (seen.records == 0) ++callbacks_before_hook;
        });
        ASSERT_TRUE(lsn.ok()) << lsn.status().ToString();
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_TRUE(log->WaitDurable(kThreads * kPerThread).ok());
  Stats st = log->stats();
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    EXPECT_EQ(kThreads * kPerThread, seen.records);
    EXPECT_EQ(expected_bytes.load(), seen.bytes);
    EXPECT_EQ(st.syncs, seen.calls);  // no segment was sealed: one sync per batch
    EXPECT_GT(seen.min_ns, 0u);
  }
  EXPECT_EQ(0, callbacks_before_hook.load());

  // A slow sync shows in sync_ns.
  ASSERT_TRUE(fp::Arm("wal.before_sync", "sleep(30)").ok());
  auto lsn = log->Append(7, "slow");
  ASSERT_TRUE(lsn.ok());
  ASSERT_TRUE(log->WaitDurable(*lsn).ok());
  fp::DisarmAll();
  uint64_t calls_before_failure = 0;
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    EXPECT_GE(seen.max_ns, 30'000'000u);
    calls_before_failure = seen.calls;
  }

  // A failed sync is not reported.
  ASSERT_TRUE(fp::Arm("wal.before_sync", "error").ok());
  lsn = log->Append(7, "lost");
  ASSERT_TRUE(lsn.ok());
  EXPECT_FALSE(log->WaitDurable(*lsn).ok());
  fp::DisarmAll();
  std::lock_guard<std::mutex> lock(seen.mu);
  EXPECT_EQ(calls_before_failure, seen.calls);
}

}  // namespace
}  // namespace dtx::wal
