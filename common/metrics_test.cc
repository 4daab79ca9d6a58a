#include "common/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/process_stats.h"

namespace dtx::obs {
namespace {

// ---- A strict parser of the text format 0.0.4, for the tests ---------------

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Parsed {
  std::map<std::string, std::string> type;  // family -> type
  std::map<std::string, std::string> help;  // family -> unescaped help
  std::vector<Sample> samples;
  std::vector<std::string> family_order;  // as first seen in # TYPE lines
};

bool ValidName(const std::string& s) { return IsValidMetricName(s); }

bool ParseFloatGo(const std::string& s, double* out) {
  if (s == "+Inf" || s == "Inf") {
    *out = INFINITY;
    return true;
  }
  if (s == "-Inf") {
    *out = -INFINITY;
    return true;
  }
  if (s == "NaN") {
    *out = NAN;
    return true;
  }
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+'))
      return false;
  }
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size();
}

// Returns an error description, or "" if `text` is valid. Checks every line
// is HELP, TYPE or a sample with valid syntax; TYPE precedes a family's
// samples and appears once; sample names belong to their family; histogram
// buckets are cumulative, end in +Inf, and _count equals the +Inf bucket.
std::string ParseExposition(const std::string& text, Parsed* p) {
  if (!text.empty() && text.back() != '\n') return "does not end in newline";
  size_t pos = 0;
  std::string current;  // family of the last TYPE line
  int line_no = 0;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    std::string where = "line " + std::to_string(line_no) + " '" + line + "': ";
    if (line.empty()) return where + "empty line";
    if (line.rfind("# HELP ", 0) == 0) {
      std::string rest = line.substr(7);
      size_t sp = rest.find(' ');
      if (sp == std::string::npos) return where + "HELP without text";
      std::string name = rest.substr(0, sp);
      if (!ValidName(name)) return where + "bad HELP name";
      if (p->help.count(name)) return where + "second HELP";
      std::string h;
      for (size_t i = sp + 1; i < rest.size(); ++i) {
        if (rest[i] == '\\') {
          if (i + 1 >= rest.size()) return where + "dangling escape";
          char c = rest[++i];
          if (c == 'n') h += '\n';
          else if (c == '\\') h += '\\';
          else return where + "bad HELP escape";
        } else {
          h += rest[i];
        }
      }
      p->help[name] = h;
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      std::string rest = line.substr(7);
      size_t sp = rest.find(' ');
      if (sp == std::string::npos) return where + "TYPE without type";
      std::string name = rest.substr(0, sp), type = rest.substr(sp + 1);
      if (!ValidName(name)) return where + "bad TYPE name";
      static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary",
                                                   "untyped"};
      if (!kTypes.count(type)) return where + "bad type";
      if (p->type.count(name)) return where + "second TYPE";
      p->type[name] = type;
      p->family_order.push_back(name);
      current = name;
      continue;
    }
    if (line[0] == '#') return where + "unknown comment";
    // Sample.
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    if (!ValidName(s.name)) return where + "bad sample name";
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (true) {
        if (i >= line.size()) return where + "unterminated labels";
        if (line[i] == '}') {
          ++i;
          break;
        }
        size_t eq = line.find('=', i);
        if (eq == std::string::npos) return where + "label without '='";
        std::string lname = line.substr(i, eq - i);
        if (!IsValidLabelName(lname) && lname != "le") return where + "bad label name";
        i = eq + 1;
        if (i >= line.size() || line[i] != '"') return where + "label value not quoted";
        ++i;
        std::string v;
        while (true) {
          if (i >= line.size()) return where + "unterminated label value";
          char c = line[i++];
          if (c == '"') break;
          if (c == '\\') {
            if (i >= line.size()) return where + "dangling escape";
            char e = line[i++];
            if (e == 'n') v += '\n';
            else if (e == '\\') v += '\\';
            else if (e == '"') v += '"';
            else return where + "bad label escape";
          } else {
            v += c;
          }
        }
        if (s.labels.count(lname)) return where + "duplicate label";
        s.labels[lname] = v;
        if (i < line.size() && line[i] == ',') ++i;
      }
    }
    if (i >= line.size() || line[i] != ' ') return where + "no space before value";
    std::string value = line.substr(i + 1);
    size_t sp = value.find(' ');
    if (sp != std::string::npos) {  // optional timestamp
      std::string ts = value.substr(sp + 1);
      value = value.substr(0, sp);
      double t;
      if (!ParseFloatGo(ts, &t)) return where + "bad timestamp";
    }
    if (!ParseFloatGo(value, &s.value)) return where + "bad value";
    if (current.empty()) return where + "sample before any TYPE";
    const std::string& type = p->type[current];
    bool belongs = s.name == current;
    if (type == "histogram") {
      belongs = s.name == current + "_bucket" || s.name == current + "_sum" ||
                s.name == current + "_count";
      if (s.name == current + "_bucket" && !s.labels.count("le"))
        return where + "bucket without le";
    }
    if (!belongs) return where + "sample not of family " + current;
    p->samples.push_back(s);
  }
  // Histogram checks.
  for (const auto& [family, type] : p->type) {
    if (type != "histogram") continue;
    std::map<std::map<std::string, std::string>, std::vector<std::pair<double, double>>> buckets;
    std::map<std::map<std::string, std::string>, double> counts;
    for (const Sample& s : p->samples) {
      auto labels = s.labels;
      if (s.name == family + "_bucket") {
        double le;
        if (!ParseFloatGo(labels["le"], &le)) return family + ": bad le";
        labels.erase("le");
        buckets[labels].push_back({le, s.value});
      } else if (s.name == family + "_count") {
        counts[labels] = s.value;
      }
    }
    for (const auto& [labels, bs] : buckets) {
      for (size_t k = 1; k < bs.size(); ++k) {
        if (!(bs[k - 1].first < bs[k].first)) return family + ": le not increasing";
        if (bs[k - 1].second > bs[k].second) return family + ": buckets not cumulative";
      }
      if (!std::isinf(bs.back().first)) return family + ": last bucket is not +Inf";
      if (!counts.count(labels)) return family + ": no _count";
      if (counts[labels] != bs.back().second) return family + ": _count != +Inf bucket";
    }
    if (buckets.size() != counts.size()) return family + ": _count without buckets";
  }
  return "";
}

const Sample* Find(const Parsed& p, const std::string& name,
                   const std::map<std::string, std::string>& labels) {
  for (const Sample& s : p.samples) {
    if (s.name == name && s.labels == labels) return &s;
  }
  ADD_FAILURE() << "no sample " << name << " with " << labels.size() << " labels";
  static const Sample kMissing{"missing", {}, NAN};
  return &kMissing;
}

// ---- Tests ----------------------------------------------------------------

TEST(MetricsTest, ExpositionParsesBackWithEveryKindOfMetric) {
  Registry r;
  auto& aborts =
      r.AddCounterFamily("dtx_aborts_total", "Aborted transactions by reason.", {"reason"});
  aborts.Get({"conflict"}).Inc(3);
  aborts.Get({"timeout"}).Inc();
  aborts.Get({"we\"ird\\va\nlue"}).Inc(7);
  r.AddCounter("dtx_commits_total", "Committed transactions.").Inc(42);
  r.AddGauge("dtx_in_doubt", "Transactions prepared and not decided.\nSecond \\ line.").Set(5);
  r.AddGaugeCallback("dtx_epoch", "Coordinator epoch.", [] { return 17.0; });
  auto& hb = r.AddGaugeFamily("dtx_heartbeat_age_seconds", "Age of the last heartbeat per peer.",
                              {"peer"});
  hb.AddCallback({"participant-1"}, [] { return 0.25; });
  hb.Get({"participant-0"}).Set(0.125);
  auto& phase = r.AddHistogramFamily("dtx_phase_seconds", "Latency per commit phase.",
                                     LatencyBucketsSeconds(), {"phase"});
  phase.Get({"prepare"}).Observe(0.0003);
  phase.Get({"prepare"}).Observe(0.002);
  phase.Get({"prepare"}).Observe(100);
  phase.Get({"decision"});  // empty histogram
  r.AddHistogram("dtx_wal_records_per_sync", "Records per WAL sync.", ExponentialBuckets(1, 2, 11))
      .Observe(3);
  RegisterProcessMetrics(&r);

  std::string text = r.Serialize();
  Parsed p;
  ASSERT_EQ(ParseExposition(text, &p), "") << text;

  EXPECT_EQ(p.type["dtx_aborts_total"], "counter");
  EXPECT_EQ(p.type["dtx_in_doubt"], "gauge");
  EXPECT_EQ(p.type["dtx_phase_seconds"], "histogram");
  EXPECT_EQ(p.type["process_cpu_seconds_total"], "counter");
  EXPECT_EQ(p.type["process_resident_memory_bytes"], "gauge");
  EXPECT_EQ(p.help["dtx_in_doubt"], "Transactions prepared and not decided.\nSecond \\ line.");

  EXPECT_EQ(Find(p, "dtx_aborts_total", {{"reason", "conflict"}})->value, 3);
  EXPECT_EQ(Find(p, "dtx_aborts_total", {{"reason", "we\"ird\\va\nlue"}})->value, 7);
  EXPECT_EQ(Find(p, "dtx_commits_total", {})->value, 42);
  EXPECT_EQ(Find(p, "dtx_in_doubt", {})->value, 5);
  EXPECT_EQ(Find(p, "dtx_epoch", {})->value, 17);
  EXPECT_EQ(Find(p, "dtx_heartbeat_age_seconds", {{"peer", "participant-0"}})->value, 0.125);
  EXPECT_EQ(Find(p, "dtx_heartbeat_age_seconds", {{"peer", "participant-1"}})->value, 0.25);
  EXPECT_EQ(Find(p, "dtx_phase_seconds_count", {{"phase", "prepare"}})->value, 3);
  EXPECT_DOUBLE_EQ(Find(p, "dtx_phase_seconds_sum", {{"phase", "prepare"}})->value, 100.0023);
  EXPECT_EQ(Find(p, "dtx_phase_seconds_bucket", {{"phase", "prepare"}, {"le", "0.0005"}})->value,
            1);
  EXPECT_EQ(Find(p, "dtx_phase_seconds_bucket", {{"phase", "prepare"}, {"le", "10"}})->value, 2);
  EXPECT_EQ(Find(p, "dtx_phase_seconds_bucket", {{"phase", "prepare"}, {"le", "+Inf"}})->value, 3);
  EXPECT_EQ(Find(p, "dtx_phase_seconds_count", {{"phase", "decision"}})->value, 0);
  EXPECT_EQ(Find(p, "dtx_wal_records_per_sync_bucket", {{"le", "2"}})->value, 0);
  EXPECT_EQ(Find(p, "dtx_wal_records_per_sync_bucket", {{"le", "4"}})->value, 1);
  const Sample* rss = Find(p, "process_resident_memory_bytes", {});
  EXPECT_GT(rss->value, 1 << 20);
  EXPECT_GE(Find(p, "process_cpu_seconds_total", {})->value, 0);
}

TEST(MetricsTest, ParserRejectsMalformedExposition) {
  // The parser is what the other tests lean on: it must be able to fail.
  Parsed p1, p2, p3, p4, p5;
  EXPECT_NE(ParseExposition("dtx_x 1\n", &p1), "");                       // no TYPE
  EXPECT_NE(ParseExposition("# TYPE a counter\na{l=\"x} 1\n", &p2), "");  // unterminated
  EXPECT_NE(ParseExposition("# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\n"
                            "h_count 1\n",
                            &p3),
            "");  // not cumulative
  EXPECT_NE(ParseExposition("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                            "h_count 3\n",
                            &p4),
            "");                                                   // count mismatch
  EXPECT_NE(ParseExposition("# TYPE a gauge\na one\n", &p5), "");  // bad value
}

TEST(MetricsTest, OutputIsSortedAndExact) {
  Registry r;
  r.AddGauge("dtx_b", "B.").Set(1.5);
  auto& a = r.AddCounterFamily("dtx_a_total", "A.", {"x", "y"});
  a.Get({"2", "b"}).Inc(2);
  a.Get({"1", "z"}).Inc(1);
  r.AddHistogram("dtx_c_seconds", "C.", {0.001, 0.01}).Observe(0.005);
  const std::string want =
      "# HELP dtx_a_total A.\n"
      "# TYPE dtx_a_total counter\n"
      "dtx_a_total{x=\"1\",y=\"z\"} 1\n"
      "dtx_a_total{x=\"2\",y=\"b\"} 2\n"
      "# HELP dtx_b B.\n"
      "# TYPE dtx_b gauge\n"
      "dtx_b 1.5\n"
      "# HELP dtx_c_seconds C.\n"
      "# TYPE dtx_c_seconds histogram\n"
      "dtx_c_seconds_bucket{le=\"0.001\"} 0\n"
      "dtx_c_seconds_bucket{le=\"0.01\"} 1\n"
      "dtx_c_seconds_bucket{le=\"+Inf\"} 1\n"
      "dtx_c_seconds_sum 0.005\n"
      "dtx_c_seconds_count 1\n";
  EXPECT_EQ(r.Serialize(), want);
  EXPECT_EQ(r.Serialize(), r.Serialize());
}

TEST(MetricsTest, HistogramBucketUpperBoundIsInclusive) {
  Registry r;
  Histogram& h = r.AddHistogram("dtx_h_seconds", "H.", {1, 2, 3});
  h.Observe(1);     // le=1
  h.Observe(1.5);   // le=2
  h.Observe(3);     // le=3
  h.Observe(3.01);  // +Inf
  h.Observe(NAN);   // +Inf
  h.Observe(-5);    // le=1
  Histogram::Snapshot s = h.Read();
  EXPECT_EQ(s.cumulative, (std::vector<uint64_t>{2, 3, 4, 6}));
}

TEST(MetricsTest, GaugeSetAddAndCallback) {
  Registry r;
  Gauge& g = r.AddGauge("dtx_g", "G.");
  g.Set(10);
  g.Add(2.5);
  g.Dec();
  EXPECT_DOUBLE_EQ(g.Value(), 11.5);
  int calls = 0;
  Gauge& c = r.AddGaugeCallback("dtx_c", "C.", [&] { return ++calls; });
  EXPECT_EQ(c.Value(), 1);
  r.Serialize();
  EXPECT_EQ(calls, 2);
}

TEST(MetricsTest, CountersAndHistogramsMoveExactlyByTheIncrementsFromManyThreads) {
  Registry r;
  auto& fam = r.AddCounterFamily("dtx_ops_total", "Ops.", {"kind"});
  Counter& shared = fam.Get({"shared"});
  Histogram& h = r.AddHistogram("dtx_lat_seconds", "Lat.", LatencyBucketsSeconds());
  Gauge& g = r.AddGauge("dtx_level", "Level.");
  constexpr int kThreads = 4;
  constexpr int kIters = 200000;
  std::atomic<bool> stop{false};
  std::string last_error;
  // A scraper runs meanwhile: every snapshot must parse and stay consistent.
  std::thread scraper([&] {
    while (!stop.load()) {
      Parsed p;
      std::string e = ParseExposition(r.Serialize(), &p);
      if (!e.empty()) {
        last_error = e;
        return;
      }
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter& mine = fam.Get({"t" + std::to_string(t)});
      for (int i = 0; i < kIters; ++i) {
        shared.Inc();
        mine.Inc(2);
        h.Observe((i % 4) * 0.001);  // 0, 1ms, 2ms, 3ms
        g.Add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  stop = true;
  scraper.join();
  EXPECT_EQ(last_error, "");
  EXPECT_EQ(shared.Value(), uint64_t{kThreads} * kIters);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(fam.Get({"t" + std::to_string(t)}).Value(), uint64_t{2} * kIters);
  }
  EXPECT_EQ(g.Value(), double{kThreads} * kIters);
  Histogram::Snapshot s = h.Read();
  const uint64_t n = uint64_t{kThreads} * kIters;
  EXPECT_EQ(s.cumulative.back(), n);
  // le=0.001 holds 0 and 1ms; le=0.0025 adds 2ms; le=0.005 adds 3ms.
  EXPECT_EQ(s.cumulative[4], n / 2);      // le=1e-3
  EXPECT_EQ(s.cumulative[5], n * 3 / 4);  // le=2.5e-3
  EXPECT_EQ(s.cumulative[6], n);          // le=5e-3
  EXPECT_NEAR(s.sum, (0.001 + 0.002 + 0.003) * (n / 4), 1e-6);
}

TEST(MetricsTest, FormatAndEscape) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(5e-05), "5e-05");
  EXPECT_EQ(FormatValue(0.0005), "0.0005");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(2.5e-3), "0.0025");
  EXPECT_EQ(FormatValue(123.456), "123.456");
  EXPECT_EQ(FormatValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatValue(-INFINITY), "-Inf");
  EXPECT_EQ(FormatValue(NAN), "NaN");
  EXPECT_EQ(FormatValue(1e300), "1e+300");
  EXPECT_EQ(EscapeLabelValue("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(EscapeHelp("a\"b\\c\nd"), "a\"b\\\\c\\nd");
  EXPECT_TRUE(IsValidMetricName("dtx_commits_total"));
  EXPECT_TRUE(IsValidMetricName("a:b_1"));
  EXPECT_FALSE(IsValidMetricName("1abc"));
  EXPECT_FALSE(IsValidMetricName("dtx-commits"));
  EXPECT_FALSE(IsValidMetricName(""));
  EXPECT_TRUE(IsValidLabelName("reason"));
  EXPECT_FALSE(IsValidLabelName("__reserved"));
  EXPECT_FALSE(IsValidLabelName("a:b"));
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
}

using MetricsDeathTest = ::testing::Test;

TEST_F(MetricsDeathTest, MisuseIsAProgrammerError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Registry r;
        r.AddCounter("dtx-bad", "x");
      },
      "invalid metric name");
  EXPECT_DEATH(
      {
        Registry r;
        r.AddCounter("dtx_a", "x");
        r.AddGauge("dtx_a", "y");
      },
      "registered twice");
  EXPECT_DEATH(
      {
        Registry r;
        r.AddCounterFamily("dtx_a", "x", {"l"}).Get({});
      },
      "wrong number");
  EXPECT_DEATH(
      {
        Registry r;
        r.AddHistogramFamily("dtx_h", "x", {1, 2}, {"le"});
      },
      "reserved");
  EXPECT_DEATH(
      {
        Registry r;
        r.AddHistogram("dtx_h", "x", {2, 1});
      },
      "not increasing");
  EXPECT_DEATH(
      {
        Registry r;
        r.AddGaugeCallback("dtx_g", "x", [] { return 1.0; }).Set(2);
      },
      "callback gauge");
}

TEST(ProcessStatsTest, ParsesProcStatWithAwkwardCommand) {
  // Fields after ')': state ppid pgrp session tty tpgid flags minflt cminflt
  // majflt cmajflt utime(14) stime(15) cutime cstime prio nice threads
  // itreal starttime vsize(23) rss(24) ...
  std::string stat =
      "1234 (a ) (b c) S 1 1 1 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 555 "
      "123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
  auto s = ParseProcStat(stat, 100, 4096);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_DOUBLE_EQ(s->cpu_seconds, 4.0);
  EXPECT_EQ(s->resident_memory_bytes, 2048u * 4096u);
  EXPECT_EQ(s->virtual_memory_bytes, 123456789u);
  EXPECT_FALSE(ParseProcStat("1234 (x) S 1 2 3", 100, 4096).ok());
  EXPECT_FALSE(ParseProcStat("garbage", 100, 4096).ok());
  EXPECT_FALSE(
      ParseProcStat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 1 0 0 20 0 1 0 1 10 10\n", 100, 4096).ok());
}

TEST(ProcessStatsTest, ReadsThisProcess) {
  auto before = ReadProcessStats();
  ASSERT_TRUE(before.ok()) << before.status().ToString();
  EXPECT_GT(before->resident_memory_bytes, 1u << 20);
  EXPECT_GE(before->virtual_memory_bytes, before->resident_memory_bytes);
  // Burn ~100 ms of CPU; the counter must move.
  auto start = std::chrono::steady_clock::now();
  volatile uint64_t x = 0;
  while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(150)) x = x + 1;
  auto after = ReadProcessStats();
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->cpu_seconds, before->cpu_seconds);
}

}  // namespace
}  // namespace dtx::obs
