// AsyncStore over a real LevelStore: reads see an apply at once while the
// worker is held (participant.store.apply sleep), the overlay empties once the
// worker wrote, RunAfter waits for the applies queued before it, and a failed
// apply is reported once and stops every later job.
#include "participant/async_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/failpoint.h"
#include "participant/level_store.h"

namespace dtx::participant {
namespace {

using namespace std::chrono_literals;

// Stands in for the runtime's event loop: posts queue, RunPosted runs them
// on the test's thread.
class FakeLoop {
 public:
  void Post(std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    posted_.push_back(std::move(fn));
  }
  // Runs what is posted until `done()` holds or `limit` passed.
  bool RunUntil(const std::function<bool()>& done,
                std::chrono::milliseconds limit = std::chrono::milliseconds(5000)) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::vector<std::function<void()>> fns;
      {
        std::lock_guard<std::mutex> lock(mu_);
        fns.swap(posted_);
      }
      for (auto& f : fns) f();
      if (fns.empty()) std::this_thread::sleep_for(1ms);
    }
    return true;
  }

 private:
  std::mutex mu_;
  std::vector<std::function<void()>> posted_;
};

class AsyncStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dtx-async-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto level = LevelStore::Open(dir_);
    ASSERT_TRUE(level.ok()) << level.status().ToString();
    level_ = std::move(*level);
    store_ = std::make_unique<AsyncStore>(
        level_.get(), [this](std::function<void()> fn) { loop_.Post(std::move(fn)); },
        [this](const Status& s) {
          ++errors_;
          error_ = s;
        },
        level_.get());
    store_->Start();
  }
  // Writes `key` = `value` at `version` to LevelDB the way replay does, so
  // that the row cache does not hold it: a read of it goes to the disk.
  void WriteCold(const std::string& key, const std::string& value, Version version) {
    level_->BeginReplay();
    ASSERT_TRUE(level_->Apply(Put(key, value), version).ok());
    ASSERT_TRUE(level_->EndReplay().ok());
    ASSERT_FALSE(level_->IsCached(key));
  }
  void TearDown() override {
    fp::DisarmAll();
    store_.reset();
    level_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  static std::vector<WriteOp> Put(const std::string& k, const std::string& v) {
    return {WriteOp{k, v}};
  }
  bool Drained() {
    return loop_.RunUntil([&] { return store_->backlog_batches() == 0; });
  }

  std::string dir_;
  FakeLoop loop_;
  std::unique_ptr<LevelStore> level_;
  std::unique_ptr<AsyncStore> store_;
  int errors_ = 0;
  Status error_;
};

TEST_F(AsyncStoreTest, ReadsSeeAnApplyAtOnceWhileTheWorkerIsHeld) {
  ASSERT_TRUE(fp::Arm("participant.store.apply", "sleep(300)").ok());
  auto w1 = Put("k", "v1");
  std::vector<WriteOp> w2 = {WriteOp{"k", "v2"}, WriteOp{"gone", std::nullopt}};
  ASSERT_TRUE(store_->ApplyBatch({Store::Commit{&w1, 5}, Store::Commit{&w2, 6}}).ok());
  // The worker sleeps; LevelDB does not have it yet, the store reads it.
  auto in_level = level_->Get("k");
  ASSERT_TRUE(in_level.ok());
  EXPECT_FALSE(in_level->found);
  auto got = store_->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->found);
  EXPECT_EQ(got->value, "v2");
  EXPECT_EQ(got->version, 6);
  auto tomb = store_->Get("gone");
  ASSERT_TRUE(tomb.ok());
  EXPECT_FALSE(tomb->found);
  EXPECT_EQ(tomb->version, 6);
  EXPECT_GT(store_->backlog_bytes(), 0u);
  EXPECT_EQ(store_->backlog_batches(), 1u);

  ASSERT_TRUE(Drained());
  EXPECT_EQ(store_->backlog_bytes(), 0u);
  EXPECT_EQ(store_->batches_written(), 1u);
  in_level = level_->Get("k");
  ASSERT_TRUE(in_level.ok());
  EXPECT_EQ(in_level->value, "v2");
  EXPECT_EQ(in_level->version, 6);
  EXPECT_EQ(errors_, 0);
}

TEST_F(AsyncStoreTest, AnOlderVersionIsSkippedAsTheInnerStoreWould) {
  auto w = Put("k", "new");
  ASSERT_TRUE(store_->Apply(w, 9).ok());
  auto old = Put("k", "old");
  ASSERT_TRUE(store_->Apply(old, 4).ok());  // idempotent by version: left alone
  auto got = store_->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "new");
  ASSERT_TRUE(Drained());
  got = store_->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "new");
  EXPECT_EQ(got->version, 9);
}

TEST_F(AsyncStoreTest, AKeyWrittenByTwoQueuedBatchesKeepsTheNewerUntilItIsWritten) {
  ASSERT_TRUE(fp::Arm("participant.store.apply", "sleep(100)").ok());
  auto a = Put("k", "a");
  auto b = Put("k", "b");
  ASSERT_TRUE(store_->Apply(a, 1).ok());
  ASSERT_TRUE(store_->Apply(b, 2).ok());
  // The first batch written leaves the key in the overlay for the second.
  ASSERT_TRUE(loop_.RunUntil([&] { return store_->batches_written() >= 1; }));
  auto got = store_->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "b");
  ASSERT_TRUE(Drained());
  got = store_->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "b");
}

TEST_F(AsyncStoreTest, RunAfterFindsEveryEarlierApplyWritten) {
  ASSERT_TRUE(fp::Arm("participant.store.apply", "sleep(200)").ok());
  auto w = Put("k", "v");
  ASSERT_TRUE(store_->Apply(w, 3).ok());
  std::atomic<bool> ran{false};
  std::atomic<bool> saw{false};
  store_->RunAfter([&] {
    auto got = level_->Get("k");
    saw = got.ok() && got->found && got->value == "v";
    ran = true;
  });
  ASSERT_TRUE(loop_.RunUntil([&] { return ran.load(); }));
  EXPECT_TRUE(saw.load());
}

TEST_F(AsyncStoreTest, AFailedApplyIsReportedOnceAndStopsLaterJobs) {
  ASSERT_TRUE(fp::Arm("participant.store.apply", "error").ok());
  auto w = Put("k", "v");
  ASSERT_TRUE(store_->Apply(w, 1).ok());  // queued: the error comes later
  auto w2 = Put("k2", "v");
  ASSERT_TRUE(store_->Apply(w2, 2).ok());
  std::atomic<bool> ran{false};
  store_->RunAfter([&] { ran = true; });
  ASSERT_TRUE(loop_.RunUntil([&] { return errors_ > 0; }));
  store_->Stop();  // runs (skips) what is queued
  loop_.RunUntil([] { return false; }, 100ms);  // whatever is still posted
  EXPECT_EQ(errors_, 1);
  EXPECT_NE(error_.ToString().find("participant.store.apply"), std::string::npos)
      << error_.ToString();
  EXPECT_FALSE(ran.load()) << "a job after a failed apply ran (a checkpoint would claim it)";
}

TEST_F(AsyncStoreTest, StopWritesWhatIsQueued) {
  ASSERT_TRUE(fp::Arm("participant.store.apply", "sleep(100)").ok());
  auto w = Put("k", "v");
  ASSERT_TRUE(store_->Apply(w, 1).ok());
  store_->Stop();
  auto got = level_->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "v");
}

TEST_F(AsyncStoreTest, WarmReadsAColdKeyOffTheCallingThreadAndThenGetIsAnsweredFromMemory) {
  WriteCold("cold", "v", 4);
  auto put = Put("hot", "h");
  ASSERT_TRUE(store_->Apply(put, 5).ok());  // in the overlay, then in the row cache
  ASSERT_TRUE(level_->Get("known").ok());   // read once: cached (as absent)
  EXPECT_TRUE(store_->InMemory("hot"));
  EXPECT_TRUE(store_->InMemory("known"));
  EXPECT_FALSE(store_->InMemory("cold"));
  bool called = false;
  EXPECT_FALSE(store_->Warm({"hot", "known"}, [&] { called = true; }))
      << "keys in memory must not wait for the reader";

  ASSERT_TRUE(fp::Arm("participant.store.read", "sleep(200)").ok());
  const auto t0 = std::chrono::steady_clock::now();
  bool warmed = false;
  ASSERT_TRUE(store_->Warm({"cold", "hot", "cold"}, [&] { warmed = true; }));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 150ms) << "Warm waited for the disk";
  EXPECT_EQ(store_->read_backlog_keys(), 1u);  // "cold", once
  ASSERT_TRUE(loop_.RunUntil([&] { return warmed; }));
  EXPECT_FALSE(called);
  EXPECT_EQ(store_->read_backlog_keys(), 0u);
  EXPECT_EQ(store_->keys_warmed(), 1u);
  EXPECT_TRUE(level_->IsCached("cold"));
  auto got = store_->Get("cold");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "v");
  EXPECT_EQ(got->version, 4);
}

TEST_F(AsyncStoreTest, AKeyWrittenWhileTheReaderHoldsItIsNotRememberedStale) {
  WriteCold("k", "old", 3);
  // The reader reads "old", then holds it 300 ms; meanwhile a commit of "new"
  // is queued, written and cached by the worker, and leaves the overlay.
  ASSERT_TRUE(fp::Arm("participant.store.read", "sleep(300)").ok());
  bool warmed = false;
  ASSERT_TRUE(store_->Warm({"k"}, [&] { warmed = true; }));
  std::this_thread::sleep_for(100ms);  // the reader has read "old"
  auto w = Put("k", "new");
  ASSERT_TRUE(store_->Apply(w, 7).ok());
  ASSERT_TRUE(Drained());
  ASSERT_TRUE(loop_.RunUntil([&] { return warmed; }));
  EXPECT_EQ(store_->keys_warmed(), 0u);
  auto got = store_->Get("k");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "new") << "the reader's older item was remembered over the write";
  EXPECT_EQ(got->version, 7);
}

TEST_F(AsyncStoreTest, AFailedReadIsLeftToTheLoopToReadAgain) {
  WriteCold("k", "v", 2);
  ASSERT_TRUE(fp::Arm("participant.store.read", "error").ok());
  bool warmed = false;
  ASSERT_TRUE(store_->Warm({"k"}, [&] { warmed = true; }));
  ASSERT_TRUE(loop_.RunUntil([&] { return warmed; }));
  EXPECT_EQ(store_->keys_warmed(), 0u);
  EXPECT_FALSE(level_->IsCached("k"));
  auto got = store_->Get("k");  // on the calling thread, as before Warm existed
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "v");
}

TEST_F(AsyncStoreTest, ReadsDoNotWaitBehindAStalledWrite) {
  WriteCold("cold", "v", 2);
  ASSERT_TRUE(fp::Arm("participant.store.apply", "sleep(2000)").ok());
  auto w = Put("other", "x");
  ASSERT_TRUE(store_->Apply(w, 3).ok());  // the worker sleeps 2 s on it
  const auto t0 = std::chrono::steady_clock::now();
  bool warmed = false;
  ASSERT_TRUE(store_->Warm({"cold"}, [&] { warmed = true; }));
  ASSERT_TRUE(loop_.RunUntil([&] { return warmed; }));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  fp::DisarmAll();
}

TEST_F(AsyncStoreTest, StopJoinsTheReaderAndWarmThenNeverWaits) {
  WriteCold("k", "v", 2);
  WriteCold("k2", "v", 2);
  ASSERT_TRUE(fp::Arm("participant.store.read", "sleep(200)").ok());
  ASSERT_TRUE(store_->Warm({"k"}, [] {}));
  ASSERT_TRUE(store_->Warm({"k2"}, [] {}));
  store_->Stop();  // returns once the reader has (at most one sleep)
  EXPECT_FALSE(store_->Warm({"k"}, [] {})) << "no reader after Stop";
}

}  // namespace
}  // namespace dtx::participant
