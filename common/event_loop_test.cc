#include "common/event_loop.h"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <string>
#include <thread>
#include <vector>

namespace dtx {
namespace {

TEST(EventLoopTest, PostFromOtherThreadsRunsOnLoopThreadInOrder) {
  EventLoop loop;
  std::vector<int> seen;
  std::atomic<bool> wrong_thread{false};
  constexpr int kPerThread = 1000;
  std::thread producer([&] {
    for (int i = 0; i < kPerThread; ++i) {
      ASSERT_TRUE(loop.Post([&, i] {
        if (!loop.InLoopThread()) wrong_thread = true;
        seen.push_back(i);
        if (i == kPerThread - 1) loop.Stop();
      }));
    }
  });
  TimerId guard = loop.RunAfter(10000, [&] { loop.Stop(); });
  loop.Run();
  producer.join();
  loop.Cancel(guard);
  ASSERT_EQ(seen.size(), static_cast<size_t>(kPerThread));
  for (int i = 0; i < kPerThread; ++i) EXPECT_EQ(seen[i], i);
  EXPECT_FALSE(wrong_thread);
}

TEST(EventLoopTest, TurnEndRunsOnceAfterTheTurnsCallbacks) {
  EventLoop loop;
  std::vector<std::string> seen;
  // Three Post()s drained in one turn; the first queues a turn-end function.
  loop.Post([&] {
    seen.push_back("post0");
    loop.AtTurnEnd([&] {
      seen.push_back("end");
      // Queued while turn-end functions run: still this turn.
      loop.AtTurnEnd([&] { seen.push_back("end2"); });
    });
  });
  loop.Post([&] { seen.push_back("post1"); });
  loop.Post([&] {
    seen.push_back("post2");
    loop.Post([&] {
      seen.push_back("next-turn");
      loop.Stop();
    });
  });
  loop.Run();
  EXPECT_EQ(seen,
            (std::vector<std::string>{"post0", "post1", "post2", "end", "end2", "next-turn"}));
}

TEST(EventLoopTest, TurnEndQueuedByATimerRunsBeforeTheLoopWaits) {
  EventLoop loop;
  bool guard_fired = false;
  // Nothing else is due for 10 s: the turn-end function must not wait for it.
  TimerId guard = loop.RunAfter(10000, [&] {
    guard_fired = true;
    loop.Stop();
  });
  loop.RunAfter(1, [&] { loop.AtTurnEnd([&] { loop.Stop(); }); });
  loop.Run();
  EXPECT_FALSE(guard_fired);
  loop.Cancel(guard);
}

TEST(EventLoopTest, StopBeforeRunMakesRunReturn) {
  EventLoop loop;
  loop.Stop();
  loop.Run();  // must return; the test's TIMEOUT catches a hang
  SUCCEED();
}

TEST(EventLoopTest, OneShotTimerFiresOnceAndCannotBeCancelledAfter) {
  EventLoop loop;
  int fired = 0;
  TimerId id = loop.RunAfter(5, [&] { ++fired; });
  loop.RunAfter(50, [&] { loop.Stop(); });
  EXPECT_EQ(loop.timer_count(), 2u);
  loop.Run();
  EXPECT_EQ(fired, 1);
  EXPECT_FALSE(loop.Cancel(id));
  EXPECT_EQ(loop.timer_count(), 0u);
}

TEST(EventLoopTest, CancelledTimerNeverFires) {
  EventLoop loop;
  bool fired = false;
  TimerId id = loop.RunAfter(10, [&] { fired = true; });
  EXPECT_TRUE(loop.Cancel(id));
  EXPECT_FALSE(loop.Cancel(id));
  loop.RunAfter(40, [&] { loop.Stop(); });
  loop.Run();
  EXPECT_FALSE(fired);
}

TEST(EventLoopTest, RepeatingTimerCancelsItselfFromItsCallback) {
  EventLoop loop;
  int ticks = 0;
  TimerId id = 0;
  id = loop.RunEvery(2, [&] {
    if (++ticks == 5) {
      EXPECT_TRUE(loop.Cancel(id));
    }
  });
  loop.RunAfter(100, [&] { loop.Stop(); });
  loop.Run();
  EXPECT_EQ(ticks, 5);
}

TEST(EventLoopTest, SigtermCallsStopCallbackOnLoopThread) {
  EventLoop loop;
  int got = 0;
  bool on_loop = false;
  ASSERT_TRUE(loop.HandleStopSignals([&](int sig) {
                    got = sig;
                    on_loop = loop.InLoopThread();
                    loop.Stop();
                  })
                  .ok());
  loop.RunAfter(5, [] { std::raise(SIGTERM); });
  TimerId guard = loop.RunAfter(5000, [&] { loop.Stop(); });
  loop.Run();
  loop.Cancel(guard);
  EXPECT_EQ(got, SIGTERM);
  EXPECT_TRUE(on_loop);
}

TEST(EventLoopTest, DestroyWithQueuedWorkDropsItWithoutRunning) {
  bool ran = false;
  {
    EventLoop loop;
    ASSERT_TRUE(loop.Post([&] { ran = true; }));
    loop.RunAfter(1000, [&] { ran = true; });
  }
  EXPECT_FALSE(ran);
}

TEST(LoopThreadTest, RunSyncRunsOnTheLoopThread) {
  LoopThread t;
  t.Start();
  bool on_loop = false;
  t.RunSync([&] { on_loop = t.loop()->InLoopThread(); });
  EXPECT_TRUE(on_loop);
  EXPECT_FALSE(t.loop()->InLoopThread());
  t.Stop();
  t.Stop();  // twice is fine
}

TEST(LoopThreadTest, LoopThreadOnlyMethodsAreUsableAnywhereWhileTheLoopIsIdle) {
  LoopThread t;
  EXPECT_TRUE(t.loop()->InLoopThreadOrIdle()) << "not running yet";
  TimerId id = t.loop()->RunAfter(1000, [] {});
  t.Start();
  EXPECT_FALSE(t.loop()->InLoopThreadOrIdle()) << "running on another thread";
  bool on_loop = false;
  t.RunSync([&] { on_loop = t.loop()->InLoopThreadOrIdle(); });
  EXPECT_TRUE(on_loop);
  t.Stop();
  EXPECT_TRUE(t.loop()->InLoopThreadOrIdle()) << "stopped: the owner may tear down";
  EXPECT_TRUE(t.loop()->Cancel(id));
}

TEST(LoopThreadDeathTest, LoopThreadOnlyMethodOffTheLoopThreadStopsTheProcess) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        LoopThread t;
        t.Start();
        t.loop()->RunAfter(1, [] {});
      },
      "InLoopThreadOrIdle");
}

}  // namespace
}  // namespace dtx
