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
#pragma once

namespace dtx::bench {
int PlotMain(int argc, char** argv);
}  // namespace dtx::bench
