// Metrics: counters, gauges and histograms in a Registry that renders the
// Prometheus text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/). No HTTP
// here: common/metrics_http.h serves Registry::Serialize() over civetweb.
// How a runtime wires these in: docs/observability.md.
//
// Hot path vs. setup path:
//  - Setup (Registry::Add*, Family::Get/AddCallback) validates names, takes a
//    mutex and allocates. Do it once at start-up (or the first time a label
//    value is seen) and keep the returned reference: it stays valid as long
//    as the Registry lives.
//  - Updates (Counter::Inc, Gauge::Set/Add, Histogram::Observe) are relaxed
//    atomics only: no lock, no allocation, callable from any thread.
//  - Serialize() reads the atomics (and runs gauge callbacks) under the
//    registry's mutexes, so it never blocks an update.
//
// Naming (checked at registration, a bad name is a programmer error and stops
// the process): metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
// [a-zA-Z_][a-zA-Z0-9_]* not starting with "__"; a histogram may not use the
// label "le". Project convention: "dtx_" prefix, counters end in "_total",
// durations are in seconds and end in "_seconds".
//
// Ownership: the Registry owns every family and child it hands out; all
// references returned by it live until the Registry is destroyed.
// Thread-safety: every method of every class here is thread-safe, except that
// gauge callbacks run on the thread that calls Serialize() (for the HTTP
// exporter: a civetweb worker thread), while registry mutexes are held: a
// callback must be thread-safe with respect to the code that owns its data
// (read atomics, or take that code's own short lock), must not throw, and
// must not call back into the Registry.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/thread_annotations.h"

namespace dtx::obs {

// Limits (a registry past one of them is a programmer error: label values
// come from code, e.g. abort reasons or configured peer names).
inline constexpr size_t kMetricFamiliesMax = 256;
inline constexpr size_t kLabelNamesMax = 8;
inline constexpr size_t kChildrenPerFamilyMax = 1024;
inline constexpr size_t kHistogramBucketsMax = 64;
inline constexpr size_t kMetricNameBytesMax = 128;
inline constexpr size_t kLabelValueBytesMax = 256;
inline constexpr size_t kHelpBytesMax = 1024;

// A monotonically increasing integer count. Each counter, gauge and
// histogram has its own cache line, so series updated by different threads
// do not slow each other down.
class alignas(64) Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down: either set by the owner (Set/Add), or
// computed at scrape time by a callback (Family<Gauge>::AddCallback,
// Registry::AddGaugeCallback). Set/Add on a callback gauge is a programmer
// error.
class alignas(64) Gauge {
 public:
  Gauge() = default;
  explicit Gauge(std::function<double()> callback) : callback_(std::move(callback)) {}
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v);
  void Add(double delta);
  void Inc() { Add(1); }
  void Dec() { Add(-1); }
  // The stored value, or the callback's result (runs the callback).
  double Value() const;

 private:
  std::atomic<double> value_{0};
  const std::function<double()> callback_;
};

// A distribution over fixed buckets: bucket i counts observations with
// bounds[i-1] < v <= bounds[i]; one more bucket counts v > bounds.back()
// (and NaN). Exposed as cumulative _bucket{le=...} series ending in
// le="+Inf", plus _sum and _count (_count is the +Inf bucket, by construction).
class alignas(64) Histogram {
 public:
  // `bounds` must be live as long as this histogram (its Family owns them).
  explicit Histogram(const std::vector<double>* bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double v);
  // Observe a duration given in nanoseconds, recorded in seconds.
  void ObserveNs(uint64_t ns) { Observe(static_cast<double>(ns) * 1e-9); }

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
  };
  Snapshot Read() const;
  const std::vector<double>& bounds() const { return *bounds_; }

 private:
  const std::vector<double>* const bounds_;
  const std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds->size() + 1
  std::atomic<double> sum_{0};
};

// Bucket boundaries in seconds for latencies: 50us .. 10s, 1-2.5-5 steps.
std::vector<double> LatencyBucketsSeconds();
// start, start*factor, ... (`count` bounds). start > 0, factor > 1.
std::vector<double> ExponentialBuckets(double start, double factor, size_t count);

enum class MetricType { kCounter, kGauge, kHistogram };

// One metric name with its HELP, TYPE and fixed label names; its children are
// the series, one per distinct tuple of label values.
class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  const std::string& name() const { return name_; }
  // Appends "# HELP", "# TYPE" and every series, children in label order.
  virtual void Write(std::string* out) const = 0;

 protected:
  FamilyBase(std::string_view name, std::string_view help, MetricType type,
             std::vector<std::string> label_names);
  void WriteHeader(std::string* out) const;
  // `{a="x",b="y"}` with escaped values, plus `le="<le>"` last when `le` is
  // not null; nothing at all when there are no labels and no `le`.
  void WriteLabels(const std::vector<std::string>& values, const char* le, std::string* out) const;

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
};

template <typename T>
class Family final : public FamilyBase {
 public:
  // Returns the child for these label values (one per label name, in order),
  // creating it on first use. Setup path: takes a mutex, may allocate; cache
  // the reference. Wrong number of values, an over-long value or more than
  // kChildrenPerFamilyMax children is a programmer error.
  T& Get(const std::vector<std::string>& label_values = {});
  // Gauge families only: adds a child whose value is `fn()` at scrape time.
  // Adding the same label values twice is a programmer error.
  T& AddCallback(const std::vector<std::string>& label_values, std::function<double()> fn);

  void Write(std::string* out) const override;

 private:
  friend class Registry;
  Family(std::string_view name, std::string_view help, MetricType type,
         std::vector<std::string> label_names, std::vector<double> bounds);
  void CheckLabelValues(const std::vector<std::string>& values) const;

  const std::vector<double> bounds_;  // histograms only
  mutable Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_ GUARDED_BY(mu_);
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Each Add* registers a new family; a duplicate or malformed name, a bad
  // label name or more than kMetricFamiliesMax families is a programmer error.
  CounterFamily& AddCounterFamily(std::string_view name, std::string_view help,
                                  std::vector<std::string> label_names);
  GaugeFamily& AddGaugeFamily(std::string_view name, std::string_view help,
                              std::vector<std::string> label_names);
  // `bounds`: strictly increasing, finite, 1..kHistogramBucketsMax of them.
  HistogramFamily& AddHistogramFamily(std::string_view name, std::string_view help,
                                      std::vector<double> bounds,
                                      std::vector<std::string> label_names);

  // Unlabelled shorthands.
  Counter& AddCounter(std::string_view name, std::string_view help);
  Gauge& AddGauge(std::string_view name, std::string_view help);
  Gauge& AddGaugeCallback(std::string_view name, std::string_view help, std::function<double()> fn);
  // A counter whose (non-decreasing) value is computed at scrape time, e.g.
  // process_cpu_seconds_total. Exposed with TYPE counter.
  void AddCounterCallback(std::string_view name, std::string_view help, std::function<double()> fn);
  Histogram& AddHistogram(std::string_view name, std::string_view help, std::vector<double> bounds);

  // The whole registry in text format 0.0.4, families sorted by name, series
  // sorted by label values: the same state always gives the same bytes.
  std::string Serialize() const;

 private:
  void Insert(std::unique_ptr<FamilyBase> family);

  mutable Mutex mu_;
  std::map<std::string, std::unique_ptr<FamilyBase>, std::less<>> families_ GUARDED_BY(mu_);
};

// Exposition helpers (exposed for tests and for other writers of the format).
// A sample value: integers without exponent where exact, "+Inf", "-Inf",
// "NaN", else the shortest round-trip form.
std::string FormatValue(double v);
// Escapes \ " and newline for a label value.
std::string EscapeLabelValue(std::string_view v);
// Escapes \ and newline for HELP text.
std::string EscapeHelp(std::string_view v);
bool IsValidMetricName(std::string_view name);
bool IsValidLabelName(std::string_view name);

// Content-Type of Serialize()'s output.
inline constexpr const char* kTextContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace dtx::obs
