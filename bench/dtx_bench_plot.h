// `dtx-bench plot`: pictures from dtx-bench JSON reports, drawn by gnuplot.
//
//   dtx-bench plot REPORT.json [REPORT.json ...] [--out PREFIX] [--format png|svg]
//
// Writes, next to PREFIX (default: the first report without ".json"):
//   PREFIX-timeline.EXT  one report: committed tx/s and p99 latency per second,
//                        warm-up shaded, a vertical marker per fault event
//   PREFIX-cdf.EXT       latency CDF of every report (log latency axis)
//   PREFIX-sweep.EXT     two or more reports: committed tx/s and p99 against
//                        clients, one line per workload
// and PREFIX.gp (the gnuplot script) plus PREFIX-*.dat (its data). Exit 0 ok,
// 1 a report could not be read or gnuplot failed, 2 bad usage.
//
// Thread-safety: plain functions; no shared state.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace dtx::bench {

// What `plot` takes from one dtx-bench --json report (bench/README.md).
struct PlotReport {
  std::string path;
  std::string workload;
  int clients = 0;  // 0: open loop
  double rate = 0;  // open loop: tx/s
  double committed_per_s = 0;
  double p99_us = 0;
  double warmup_s = 0;
  struct Second {
    int t = 0;
    double committed_per_s = 0;  // scaled by the span of a partial second
    double p99_us = 0;
  };
  std::vector<Second> timeline;  // seconds that saw less than 0.2 s of load are left out
  std::vector<std::pair<double, double>> cdf;  // latency us, quantile
  struct Fault {
    double ran_at_s = 0;
    std::string event;
  };
  std::vector<Fault> faults;
};

// Reads the report at `path`. InvalidArgument naming the file for a file
// that cannot be read, is not JSON (e.g. truncated) or lacks a field plot
// needs or has it with the wrong type; never throws.
Result<PlotReport> ReadPlotReport(const std::string& path);

int PlotMain(int argc, char** argv);

}  // namespace dtx::bench
