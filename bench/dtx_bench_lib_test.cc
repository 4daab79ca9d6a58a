// Unit tests of dtx-bench's own logic: zipfian shape, key scrambling, open-loop
// scheduling, fault-schedule parsing, flags -> clear errors.
#include "bench/dtx_bench_lib.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <set>
#include <vector>

namespace dtx::bench {
namespace {

TEST(ZipfianTest, FrequenciesFollowThePowerLaw) {
  constexpr int64_t kN = 1000;
  constexpr int kDraws = 400000;
  for (double theta : {0.5, 0.8, 0.99}) {
    ZipfianGenerator z(kN, theta);
    std::mt19937_64 rng(1);
    std::vector<int> count(kN);
    for (int i = 0; i < kDraws; ++i) {
      int64_t v = z.Next(rng);
      ASSERT_GE(v, 0);
      ASSERT_LT(v, kN);
      ++count[static_cast<size_t>(v)];
    }
    // The hottest items match their exact probability within 5 sigma (binomial).
    for (int64_t i : {0, 1}) {
      double p = z.Probability(i);
      double expect = p * kDraws;
      double sigma = std::sqrt(kDraws * p * (1 - p));
      EXPECT_NEAR(count[static_cast<size_t>(i)], expect, 5 * sigma)
          << "theta " << theta << " item " << i;
    }
    // Beyond the first two items the generator is YCSB's approximation: check
    // the shape in bands (mass of ranks [a, b) within 15% of the exact mass)
    // and that popularity falls with rank.
    for (auto [a, b] : std::vector<std::pair<int64_t, int64_t>>{{2, 10}, {10, 100}, {100, 1000}}) {
      double exact = 0;
      int got = 0;
      for (int64_t i = a; i < b; ++i) {
        exact += z.Probability(i) * kDraws;
        got += count[static_cast<size_t>(i)];
      }
      EXPECT_NEAR(got, exact, 0.15 * exact) << "theta " << theta << " band " << a << ".." << b;
    }
    EXPECT_GT(count[0], count[1]);
    EXPECT_GT(count[1], count[10]);
    EXPECT_GT(count[10], count[500]);
  }
}

TEST(ZipfianTest, HigherThetaIsMoreSkewed) {
  std::mt19937_64 rng(2);
  auto top_share = [&](double theta) {
    ZipfianGenerator z(10000, theta);
    int top = 0;
    for (int i = 0; i < 100000; ++i) top += z.Next(rng) < 10 ? 1 : 0;
    return top / 100000.0;
  };
  double a = top_share(0.3), b = top_share(0.7), c = top_share(0.99);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_GT(c, 0.2);  // theta 0.99 over 10k keys: the top 10 get ~30%
}

TEST(KeyChooserTest, ScrambleIsABijectionAndUniformIsFlat) {
  for (int64_t n : {1, 2, 3, 10, 97, 1000, 4096}) {
    KeyChooser k(n, KeyDistribution::kZipfian, 0.99);
    std::set<int64_t> seen;
    for (int64_t r = 0; r < n; ++r) {
      int64_t s = k.Scramble(r);
      ASSERT_GE(s, 0);
      ASSERT_LT(s, n);
      seen.insert(s);
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), n) << n;
  }
  KeyChooser u(100, KeyDistribution::kUniform, 0.99);
  std::mt19937_64 rng(3);
  std::vector<int> count(100);
  for (int i = 0; i < 200000; ++i) ++count[static_cast<size_t>(u.Next(rng))];
  for (int c : count) EXPECT_NEAR(c, 2000, 5 * std::sqrt(2000.0));
  // Zipfian: the hottest key (scrambled rank 0) dominates.
  KeyChooser z(100, KeyDistribution::kZipfian, 0.99);
  std::map<int64_t, int> zc;
  for (int i = 0; i < 100000; ++i) ++zc[z.Next(rng)];
  int64_t hottest = z.Scramble(0);
  for (const auto& [key, c] : zc) {
    if (key != hottest) {
      EXPECT_LT(c, zc[hottest]) << key;
    }
  }
}

TEST(OpenLoopScheduleTest, IntendedStartsAreEvenlySpacedAndDueCountsThem) {
  auto t0 = Clock::now();
  OpenLoopSchedule s(t0, 1000.0);  // one per ms
  EXPECT_EQ(s.IntendedStart(0), t0);
  EXPECT_EQ(s.IntendedStart(1000) - t0, std::chrono::seconds(1));
  EXPECT_EQ(s.DueBy(t0 - std::chrono::milliseconds(1)), 0u);
  EXPECT_EQ(s.DueBy(t0), 1u);  // transaction 0 is due at t0
  EXPECT_EQ(s.DueBy(t0 + std::chrono::microseconds(999)), 1u);
  EXPECT_EQ(s.DueBy(t0 + std::chrono::milliseconds(1)), 2u);
  EXPECT_EQ(s.DueBy(t0 + std::chrono::milliseconds(2500)), 2501u);
  // A stall does not move the schedule: after a 3 s pause, 3000 more are due
  // at once, each with its own (earlier) intended start.
  EXPECT_EQ(s.DueBy(t0 + std::chrono::seconds(5)) - s.DueBy(t0 + std::chrono::seconds(2)), 3000u);
  EXPECT_LT(s.IntendedStart(2500), t0 + std::chrono::seconds(3));
  // Odd rates: monotone and consistent with IntendedStart.
  OpenLoopSchedule odd(t0, 333.3);
  uint64_t prev = 0;
  for (int us = 0; us < 100000; us += 777) {
    auto now = t0 + std::chrono::microseconds(us);
    uint64_t d = odd.DueBy(now);
    EXPECT_GE(d, prev);
    prev = d;
    EXPECT_LE(odd.IntendedStart(d - 1), now);
    EXPECT_GT(odd.IntendedStart(d), now);
  }
}

TEST(FaultScheduleTest, ParsesAndSortsEvents) {
  auto f = ParseFaultSchedule(
      "at 15s restart participant-1; at 10s kill participant-1;\n"
      "at 500ms failpoint coordinator-0 coordinator.after_decision_logged crash ; at 2.5s stop "
      "participant-0;"
      "at 3s cont participant-0");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->size(), 5u);
  EXPECT_DOUBLE_EQ((*f)[0].at_s, 0.5);
  EXPECT_EQ((*f)[0].action, "failpoint");
  EXPECT_EQ((*f)[0].node, "coordinator-0");
  EXPECT_EQ((*f)[0].args, (std::vector<std::string>{"coordinator.after_decision_logged", "crash"}));
  EXPECT_EQ((*f)[1].action, "stop");
  EXPECT_DOUBLE_EQ((*f)[1].at_s, 2.5);
  EXPECT_EQ((*f)[3].text, "at 10s kill participant-1");
  EXPECT_EQ((*f)[4].action, "restart");
  EXPECT_DOUBLE_EQ((*f)[4].at_s, 15);
}

TEST(FaultScheduleTest, BadSchedulesGetClearErrors) {
  struct Case {
    const char* text;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {"", "empty"},
           {" ; ;", "empty"},
           {"kill participant-1", "expected 'at TIME"},
           {"at 10 kill participant-1", "needs a unit"},
           {"at x1s kill participant-1", "bad time"},
           {"at -1s kill participant-1", "bad time"},
           {"at 10s explode participant-1", "unknown action 'explode'"},
           {"at 10s kill node-7", "bad node 'node-7'"},
           {"at 10s kill participant-1 now", "takes only a node"},
           {"at 10s failpoint participant-1 x", "failpoint takes NODE NAME ACTION"},
           {"at 1s kill participant-0; at 2s", "event 2"},
       }) {
    auto f = ParseFaultSchedule(c.text);
    ASSERT_FALSE(f.ok()) << c.text;
    EXPECT_NE(f.status().message().find(c.message), std::string::npos)
        << c.text << " -> " << f.status().message();
  }
}

Result<Config> Parse(std::vector<std::string> args) {
  std::vector<const char*> argv = {"dtx-bench"};
  for (const auto& a : args) argv.push_back(a.c_str());
  bool help = false;
  std::string usage;
  return ParseFlags(static_cast<int>(argv.size()), argv.data(), &help, &usage);
}

TEST(FlagsTest, GoodFlags) {
  auto c = Parse({"--workload",
                  "ycsb-b",
                  "--coordinator",
                  "127.0.0.1:1",
                  "--rate",
                  "500",
                  "--duration",
                  "2",
                  "--distribution",
                  "zipfian",
                  "--theta",
                  "0.8",
                  "--keys",
                  "1000",
                  "--keys-per-tx",
                  "4",
                  "--participants-per-tx",
                  "2",
                  "--seed",
                  "9"});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->workload, Workload::kYcsbB);
  EXPECT_TRUE(c->open_loop());
  EXPECT_EQ(c->distribution, KeyDistribution::kZipfian);
  EXPECT_DOUBLE_EQ(c->zipf_theta, 0.8);
  EXPECT_EQ(c->key_count(), 1000);
  EXPECT_EQ(c->seed, 9u);
  auto bank = Parse({"--workload", "bank", "--cluster", "/tmp", "--clients", "64", "--duration",
                     "3", "--accounts", "200", "--faults", "at 1s kill participant-1"});
  ASSERT_TRUE(bank.ok()) << bank.status().ToString();
  EXPECT_EQ(bank->key_count(), 200);
  EXPECT_EQ(bank->keys_per_tx, 2);
}

TEST(FlagsTest, BadFlagsGetClearErrors) {
  const std::vector<std::string> base = {"--workload",  "ycsb-a",     "--coordinator",
                                         "127.0.0.1:1", "--duration", "1"};
  struct Case {
    std::vector<std::string> extra;
    const char* message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--clients", "4", "--bogus"}, "unrecognised option '--bogus'"},
           {{}, "exactly one of --clients N and --rate R"},
           {{"--clients", "4", "--rate", "10"}, "exactly one of --clients N and --rate R"},
           {{"--clients", "0"}, "--clients must be"},
           {{"--clients", "x"}, "invalid"},
           {{"--rate", "-5"}, "--rate must be"},
           {{"--clients", "4", "--distribution", "normal"},
            "--distribution must be uniform or zipfian"},
           {{"--clients", "4", "--theta", "1.5"}, "--theta"},
           {{"--clients", "4", "--keys-per-tx", "0"}, "--keys-per-tx must be"},
           {{"--clients", "4", "--keys", "3", "--keys-per-tx", "5"}, "more than the 3 keys"},
           {{"--clients", "4", "--participants-per-tx", "3"}, "--participants-per-tx"},
           {{"--clients", "4", "--value-size", "0"}, "--value-size"},
           {{"--clients", "4", "--check-interval", "1"}, "for the bank workload"},
           {{"--clients", "4", "--faults", "at 1s kill participant-1"}, "--faults needs --cluster"},
       }) {
    std::vector<std::string> args = base;
    args.insert(args.end(), c.extra.begin(), c.extra.end());
    auto r = Parse(args);
    ASSERT_FALSE(r.ok()) << testing::PrintToString(c.extra);
    EXPECT_NE(r.status().message().find(c.message), std::string::npos)
        << testing::PrintToString(c.extra) << " -> " << r.status().message();
  }
  auto r = Parse(
      {"--workload", "tpcc", "--coordinator", "127.0.0.1:1", "--clients", "1", "--duration", "1"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unknown workload 'tpcc'"), std::string::npos);
  r = Parse({"--workload", "bank", "--cluster", "/nonexistent-dtx-dir", "--clients", "1",
             "--duration", "1"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no such directory"), std::string::npos);
  r = Parse({"--workload", "bank", "--cluster", "/tmp", "--clients", "1", "--duration", "1",
             "--faults", "at 1s kill"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("--faults: event 1"), std::string::npos)
      << r.status().message();
  r = Parse({"--workload", "bank", "--cluster", "/tmp", "--clients", "1", "--duration", "1",
             "--check-interval", "1", "--accounts", "5000"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("accounts <= 1024"), std::string::npos);
}

TEST(TimelineTest, BucketsByFinishSecond) {
  auto t0 = Clock::now();
  Timeline t(t0);
  t.At(t0 + std::chrono::milliseconds(100)).committed++;
  t.At(t0 + std::chrono::milliseconds(2100)).committed++;
  t.At(t0 - std::chrono::milliseconds(5)).failed++;  // before the start: second 0
  ASSERT_EQ(t.seconds().size(), 3u);
  EXPECT_EQ(t.seconds()[0].committed, 1u);
  EXPECT_EQ(t.seconds()[0].failed, 1u);
  EXPECT_EQ(t.seconds()[1].committed, 0u);
  EXPECT_EQ(t.seconds()[2].committed, 1u);
}

TEST(FormatNumberTest, ShortestReadableForm) {
  EXPECT_EQ(FormatNumber(4000), "4000");
  EXPECT_EQ(FormatNumber(0.99), "0.99");
  EXPECT_EQ(FormatNumber(1.5), "1.5");
}

}  // namespace
}  // namespace dtx::bench
