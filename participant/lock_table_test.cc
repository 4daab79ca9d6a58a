#include "participant/lock_table.h"

#include <gtest/gtest.h>

#include <string>

namespace dtx::participant {
namespace {

const TxId kT1{1, 1};
const TxId kT2{1, 2};
const TxId kT3{1, 3};
using R = LockTable::Result;

struct TestWaiter : LockWaiter {
  int id = 0;
};

TEST(LockTableTest, SharedLocksAreCompatible) {
  LockTable t;
  EXPECT_EQ(t.TryLock(kT1, "k", LockMode::kShared), R::kGranted);
  EXPECT_EQ(t.TryLock(kT2, "k", LockMode::kShared), R::kGranted);
  EXPECT_EQ(t.key_count(), 1u);
  EXPECT_EQ(t.grant_count(), 2u);
  EXPECT_FALSE(t.ExclusiveHolder("k").has_value());
}

TEST(LockTableTest, ExclusiveConflictsWithAnyOtherHolder) {
  LockTable t;
  EXPECT_EQ(t.TryLock(kT1, "k", LockMode::kShared), R::kGranted);
  EXPECT_EQ(t.TryLock(kT2, "k", LockMode::kExclusive), R::kConflict);
  EXPECT_EQ(t.ConflictingHolder(kT2, "k", LockMode::kExclusive), kT1);
  EXPECT_EQ(t.TryLock(kT3, "x", LockMode::kExclusive), R::kGranted);
  EXPECT_EQ(t.TryLock(kT1, "x", LockMode::kShared), R::kConflict);
  EXPECT_EQ(t.TryLock(kT1, "x", LockMode::kExclusive), R::kConflict);
  // A failed try changes nothing.
  EXPECT_EQ(t.grant_count(), 2u);
  EXPECT_FALSE(t.Holds(kT2, "k", LockMode::kShared));
  EXPECT_EQ(t.ExclusiveHolder("x"), kT3);
}

TEST(LockTableTest, RelockingIsHeldAndSoleSharedHolderUpgrades) {
  LockTable t;
  EXPECT_EQ(t.TryLock(kT1, "k", LockMode::kShared), R::kGranted);
  EXPECT_EQ(t.TryLock(kT1, "k", LockMode::kShared), R::kHeld);
  EXPECT_EQ(t.TryLock(kT1, "k", LockMode::kExclusive), R::kGranted);
  EXPECT_EQ(t.ExclusiveHolder("k"), kT1);
  EXPECT_EQ(t.TryLock(kT1, "k", LockMode::kShared), R::kHeld);
  EXPECT_EQ(t.TryLock(kT1, "k", LockMode::kExclusive), R::kHeld);
  EXPECT_EQ(t.grant_count(), 1u);
  // Upgrade refused when another transaction shares the key.
  EXPECT_EQ(t.TryLock(kT2, "s", LockMode::kShared), R::kGranted);
  EXPECT_EQ(t.TryLock(kT3, "s", LockMode::kShared), R::kGranted);
  EXPECT_EQ(t.TryLock(kT2, "s", LockMode::kExclusive), R::kConflict);
  EXPECT_TRUE(t.Holds(kT2, "s", LockMode::kShared));
  EXPECT_FALSE(t.Holds(kT2, "s", LockMode::kExclusive));
}

TEST(LockTableTest, ReleaseAllFreesEveryKeyOfTheTransactionOnly) {
  LockTable t;
  for (int i = 0; i < 10; ++i)
    ASSERT_EQ(t.TryLock(kT1, "a" + std::to_string(i), LockMode::kExclusive), R::kGranted);
  ASSERT_EQ(t.TryLock(kT2, "shared", LockMode::kShared), R::kGranted);
  ASSERT_EQ(t.TryLock(kT1, "shared", LockMode::kShared), R::kGranted);
  EXPECT_EQ(t.tx_count(), 2u);
  t.ReleaseAll(kT1, nullptr);
  EXPECT_EQ(t.key_count(), 1u);
  EXPECT_EQ(t.grant_count(), 1u);
  EXPECT_EQ(t.tx_count(), 1u);
  EXPECT_TRUE(t.Holds(kT2, "shared", LockMode::kShared));
  EXPECT_EQ(t.TryLock(kT3, "a3", LockMode::kExclusive), R::kGranted);
  t.ReleaseAll(kT1, nullptr);  // unknown now: no-op
  t.ReleaseAll(kT2, nullptr);
  t.ReleaseAll(kT3, nullptr);
  EXPECT_EQ(t.key_count(), 0u);
  EXPECT_EQ(t.grant_count(), 0u);
  EXPECT_EQ(t.tx_count(), 0u);
}

TEST(LockTableTest, WaitersAreWokenInOrderWhenTheExclusiveHolderReleases) {
  LockTable t;
  ASSERT_EQ(t.TryLock(kT1, "k", LockMode::kExclusive), R::kGranted);
  ASSERT_EQ(t.TryLock(kT1, "other", LockMode::kExclusive), R::kGranted);
  TestWaiter w1, w2, w3;
  w1.id = 1;
  w2.id = 2;
  w3.id = 3;
  t.Park("k", &w1);
  t.Park("k", &w2);
  t.Park("other", &w3);
  EXPECT_TRUE(w1.is_parked());
  std::vector<LockWaiter*> woken;
  t.ReleaseAll(kT1, &woken);
  ASSERT_EQ(woken.size(), 3u);
  EXPECT_EQ(static_cast<TestWaiter*>(woken[0])->id, 1);
  EXPECT_EQ(static_cast<TestWaiter*>(woken[1])->id, 2);
  EXPECT_EQ(static_cast<TestWaiter*>(woken[2])->id, 3);
  EXPECT_FALSE(w1.is_parked());
  EXPECT_EQ(t.key_count(), 0u);
}

TEST(LockTableTest, DestroyedWaiterUnlinksItself) {
  LockTable t;
  ASSERT_EQ(t.TryLock(kT1, "k", LockMode::kExclusive), R::kGranted);
  TestWaiter keep;
  keep.id = 7;
  {
    TestWaiter gone;
    t.Park("k", &gone);
    t.Park("k", &keep);
  }
  std::vector<LockWaiter*> woken;
  t.ReleaseAll(kT1, &woken);
  ASSERT_EQ(woken.size(), 1u);
  EXPECT_EQ(static_cast<TestWaiter*>(woken[0])->id, 7);
}

TEST(LockTableTest, ManyKeysGrowTheTableAndRecycleObjects) {
  LockTable t(16);
  constexpr int kKeys = 5000;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < kKeys; ++i) {
      TxId tx{2, static_cast<uint64_t>(i % 100)};
      ASSERT_EQ(t.TryLock(tx, "key-" + std::to_string(i), LockMode::kExclusive), R::kGranted);
    }
    EXPECT_EQ(t.key_count(), static_cast<size_t>(kKeys));
    EXPECT_EQ(t.tx_count(), 100u);
    for (int i = 0; i < kKeys; ++i) {
      EXPECT_EQ(t.ExclusiveHolder("key-" + std::to_string(i)),
                (TxId{2, static_cast<uint64_t>(i % 100)}));
    }
    for (uint64_t tx = 0; tx < 100; ++tx) t.ReleaseAll(TxId{2, tx}, nullptr);
    EXPECT_EQ(t.key_count(), 0u);
  }
}

TEST(LockTableTest, DestructorWithLiveLocksAndWaitersIsClean) {
  TestWaiter w;
  {
    LockTable t;
    ASSERT_EQ(t.TryLock(kT1, "k", LockMode::kExclusive), R::kGranted);
    ASSERT_EQ(t.TryLock(kT2, "j", LockMode::kShared), R::kGranted);
    t.Park("k", &w);
  }
  EXPECT_FALSE(w.is_parked());
}

}  // namespace
}  // namespace dtx::participant
