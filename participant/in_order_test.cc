// InOrder: a connection's calls run in arrival order; one whose keys are not
// in memory waits for its warm, and the calls behind it wait with it.
#include "participant/in_order.h"

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace dtx::participant {
namespace {

// Keys in `cold` are not in memory: Warm holds their `done` until Finish().
struct FakeWarm {
  std::set<std::string> cold;
  std::vector<std::function<void()>> held;
  int calls = 0;

  InOrder::Warm Fn() {
    return [this](const std::vector<std::string_view>& keys, std::function<void()> done) {
      ++calls;
      for (std::string_view k : keys) {
        if (cold.count(std::string(k)) != 0) {
          held.push_back(std::move(done));
          return true;
        }
      }
      return false;
    };
  }
  void Finish() {
    auto fns = std::move(held);
    held.clear();
    cold.clear();
    for (auto& f : fns) f();
  }
};

TEST(InOrderTest, CallsBehindAWaitingOneWaitAndThenRunInArrivalOrder) {
  FakeWarm warm;
  warm.cold = {"c"};
  auto order = std::make_shared<InOrder>(warm.Fn());
  std::vector<int> ran;
  EXPECT_TRUE(order->idle());
  order->Queue({"a"}, [&] { ran.push_back(1); });  // in memory: at once
  EXPECT_EQ(ran, std::vector<int>{1});
  EXPECT_TRUE(order->idle());
  order->Queue({"c", "a"}, [&] { ran.push_back(2); });  // waits for "c"
  order->Queue({}, [&] { ran.push_back(3); });          // no keys, but behind 2
  order->Queue({"a"}, [&] { ran.push_back(4); });
  EXPECT_EQ(ran, std::vector<int>{1});
  EXPECT_FALSE(order->idle());
  EXPECT_EQ(order->waiting(), 3u);
  EXPECT_EQ(warm.calls, 2) << "only the head asks for its keys";
  warm.Finish();
  EXPECT_EQ(ran, (std::vector<int>{1, 2, 3, 4}));
  EXPECT_TRUE(order->idle());
}

TEST(InOrderTest, TheNextHeadWarmsItsOwnKeysAfterTheFirstRan) {
  FakeWarm warm;
  warm.cold = {"x", "y"};
  auto order = std::make_shared<InOrder>(warm.Fn());
  std::vector<int> ran;
  order->Queue({"x"}, [&] { ran.push_back(1); });
  order->Queue({"y"}, [&] { ran.push_back(2); });
  ASSERT_EQ(warm.held.size(), 1u);
  auto x_read = std::move(warm.held[0]);
  warm.held.clear();
  x_read();  // 1 runs; 2 then asks for "y"
  EXPECT_EQ(ran, std::vector<int>{1});
  EXPECT_EQ(warm.held.size(), 1u);
  EXPECT_EQ(order->waiting(), 1u);
  warm.Finish();
  EXPECT_EQ(ran, (std::vector<int>{1, 2}));
}

TEST(InOrderTest, AWaitingCallOutlivesItsHandler) {
  FakeWarm warm;
  warm.cold = {"c"};
  int ran = 0;
  {
    auto order = std::make_shared<InOrder>(warm.Fn());
    order->Queue({"c"}, [&] { ++ran; });
    order->Queue({}, [&] { ++ran; });
  }  // the connection's handler is gone; the warm's `done` holds the order
  warm.Finish();
  EXPECT_EQ(ran, 2);
}

}  // namespace
}  // namespace dtx::participant
