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
        });
    store_->Start();
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

}  // namespace
}  // namespace dtx::participant
