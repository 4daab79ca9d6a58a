// Reading Prometheus text exposition (format 0.0.4) as the nodes serve it
// (prometheus-cpp's TextSerializer, common/prometheus_support.h): for
// `dtxctl top` (rates and p99 from two scrapes) and
// for tests that check what a node exposes. Not a general parser: no
// timestamps, no exemplars, one sample per line.
//
// Thread-safety: plain functions and values.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dtx::tools {

struct MetricSample {
  std::string name;                           // e.g. "dtx_phase_seconds_bucket"
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;                           // +Inf, -Inf, NaN allowed
};

struct Exposition {
  std::vector<MetricSample> samples;         // in file order
  std::map<std::string, std::string> types;  // family -> "counter", "gauge", "histogram", ...
  std::map<std::string, std::string> help;   // family -> HELP text
};

// Parses a whole exposition. Corruption naming the line for a malformed one.
Result<Exposition> ParseExposition(std::string_view text);

// Sum of every sample named `name` whose labels include all of `match`.
double SumSamples(const Exposition& e, const std::string& name,
                  const std::map<std::string, std::string>& match = {});

// Cumulative buckets (le -> count) of histogram family `family` whose
// labels include `match` (the `le` label aside), summed over the rest.
std::map<double, double> HistogramBuckets(const Exposition& e, const std::string& family,
                                          const std::map<std::string, std::string>& match = {});

// The q-quantile (0 < q < 1) of the observations between two scrapes, from
// the bucket deltas `after - before`, interpolated linearly inside the
// bucket (as Prometheus' histogram_quantile). -1 when nothing was observed.
// An observation in the +Inf bucket gives the largest finite bound.
double QuantileOfDelta(const std::map<double, double>& before,
                       const std::map<double, double>& after, double q);

}  // namespace dtx::tools
