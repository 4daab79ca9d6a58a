#include "bench/dtx_bench_plot.h"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench/dtx_bench_lib.h"

namespace dtx::bench {
namespace {

using Json = nlohmann::json;

// The number at `key`, or `fallback` when the key is absent (a null or a
// string there is an error).
double NumberOr(const Json& j, const char* key, double fallback) {
  auto it = j.find(key);
  return it == j.end() ? fallback : it->get<double>();
}

}  // namespace

Result<PlotReport> ReadPlotReport(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument(path + ": cannot open");
  PlotReport r;
  r.path = path;
  // parse() (not JSON, e.g. truncated), at() (a missing key) and get<>() (a
  // wrong type) throw nlohmann::json::exception; it stops here.
  try {
    const Json t = Json::parse(in);
    r.workload = t.at("workload").get<std::string>();
    r.clients = static_cast<int>(NumberOr(t, "clients", 0));
    r.rate = NumberOr(t, "rate", 0);
    r.committed_per_s = t.at("committed_per_s").get<double>();
    r.p99_us = t.at("latency_us").at("p99").get<double>();
    r.warmup_s = NumberOr(t, "warmup_s", 0);
    for (const Json& s : t.at("timeline")) {
      // Per second; a partial last second is scaled by its span, a second
      // that only saw the drain after the stop is left out.
      double span = NumberOr(s, "span_s", 1.0);
      if (span < 0.2) continue;
      r.timeline.push_back({s.at("t").get<int>(), s.at("committed").get<double>() / span,
                            s.at("p99_us").get<double>()});
    }
    for (const Json& pair : t.at("latency_cdf_us")) {
      if (pair.size() == 2) r.cdf.emplace_back(pair[0].get<double>(), pair[1].get<double>());
    }
    if (auto f = t.find("faults"); f != t.end()) {
      for (const Json& e : *f)
        r.faults.push_back({e.at("ran_at_s").get<double>(), e.at("event").get<std::string>()});
    }
  } catch (const Json::exception& e) {
    return Status::InvalidArgument(path + ": not a dtx-bench report: " + e.what());
  }
  return r;
}

namespace {

std::string GpQuote(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o + "\"";
}

std::string Label(const PlotReport& r) {
  return r.workload +
         (r.clients > 0 ? " c=" + std::to_string(r.clients) : " " + FormatNumber(r.rate) + " tx/s");
}

}  // namespace

int PlotMain(int argc, char** argv) {
  std::vector<std::string> files;
  std::string prefix;
  std::string format = "png";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--out" || a == "--format") && i + 1 < argc) {
      (a == "--out" ? prefix : format) = argv[++i];
    } else if (a == "-h" || a == "--help") {
      std::cout << "usage: dtx-bench plot REPORT.json [REPORT.json ...] [--out PREFIX] [--format "
                   "png|svg]\n";
      return kExitOk;
    } else if (a.rfind("--", 0) == 0) {
      std::cerr << "dtx-bench: plot: unknown or incomplete flag '" << a << "'\n";
      return kExitUsage;
    } else {
      files.push_back(a);
    }
  }
  if (files.empty()) {
    std::cerr << "dtx-bench: plot: give at least one REPORT.json\n";
    return kExitUsage;
  }
  if (format != "png" && format != "svg") {
    std::cerr << "dtx-bench: plot: --format must be png or svg\n";
    return kExitUsage;
  }
  std::vector<PlotReport> reports;
  for (const auto& f : files) {
    auto r = ReadPlotReport(f);
    if (!r.ok()) {
      std::cerr << "dtx-bench: plot: " << r.status().message() << "\n";
      return kExitFailed;
    }
    reports.push_back(*r);
  }
  if (prefix.empty()) {
    prefix = files[0];
    if (prefix.size() > 5 && prefix.substr(prefix.size() - 5) == ".json")
      prefix.resize(prefix.size() - 5);
  }
  std::string term = format == "png" ? "set terminal pngcairo size 1000,560 font 'sans,10'\n"
                                     : "set terminal svg size 1000,560 dynamic font 'sans,10'\n";
  std::ostringstream gp;
  std::vector<std::string> outputs;
  gp << term << "set grid\nset key top left\n";

  if (reports.size() == 1) {
    const PlotReport& r = reports[0];
    std::string dat = prefix + "-timeline.dat";
    std::ofstream d(dat);
    d << "# t committed_per_s p99_ms\n";
    for (const auto& s : r.timeline)
      d << s.t + 0.5 << " " << s.committed_per_s << " " << s.p99_us / 1e3 << "\n";
    if (!d) {
      std::cerr << "dtx-bench: plot: cannot write " << dat << "\n";
      return kExitFailed;
    }
    std::string out = prefix + "-timeline." + format;
    outputs.push_back(out);
    gp << "set output " << GpQuote(out) << "\n"
       << "set title " << GpQuote("dtx-bench " + Label(r) + ": throughput and p99 per second")
       << "\n"
       << "set xlabel 'seconds since the load started'\nset ylabel 'committed tx/s'\n"
       << "set y2label 'p99 latency (ms, log)'\nset y2tics\nset ytics nomirror\nset logscale y2\n"
       << "set yrange [0:*]\n";
    if (r.warmup_s > 0) {
      gp << "set object 1 rect from 0, graph 0 to " << r.warmup_s
         << ", graph 1 fc rgb '#eeeeee' fs solid behind\n";
    }
    int n = 2;
    for (const auto& f : r.faults) {
      gp << "set arrow " << n << " from " << f.ran_at_s << ", graph 0 to " << f.ran_at_s
         << ", graph 1 nohead lc rgb 'red' dt 2 lw 1.5\n"
         << "set label " << n << " " << GpQuote(f.event.substr(f.event.find(' ', 3) + 1)) << " at "
         << f.ran_at_s << ", graph " << (0.95 - 0.05 * ((n - 2) % 4))
         << " left offset 0.5,0 tc rgb 'red'\n";
      ++n;
    }
    gp << "plot " << GpQuote(dat)
       << " using 1:2 with linespoints pt 7 ps 0.5 lw 2 title 'committed tx/s' axes x1y1, "
       << GpQuote(dat)
       << " using 1:($3 > 0 ? $3 : 1/0) with linespoints pt 5 ps 0.5 lw 1.5 title 'p99 (ms)' axes "
          "x1y2\n"
       << "unset arrow\nunset label\nunset object 1\nunset y2tics\nunset y2label\nunset logscale "
          "y2\nset ytics mirror\n";
  }

  // CDF of every report.
  {
    std::string out = prefix + "-cdf." + format;
    outputs.push_back(out);
    gp << "set output " << GpQuote(out)
       << "\nset title 'latency CDF (committed transactions, total)'\n"
       << "set xlabel 'latency (ms, log)'\nset ylabel 'fraction <= x'\nset logscale x\nset yrange "
          "[0:1]\n"
       << "set key bottom right\nplot ";
    for (size_t i = 0; i < reports.size(); ++i) {
      std::string dat = prefix + "-cdf-" + std::to_string(i) + ".dat";
      std::ofstream d(dat);
      for (const auto& [us, q] : reports[i].cdf) {
        if (us > 0) d << us / 1e3 << " " << q << "\n";
      }
      gp << (i ? ", " : "") << GpQuote(dat) << " using 1:2 with steps lw 2 title "
         << GpQuote(Label(reports[i]));
    }
    gp << "\nunset logscale x\nset yrange [*:*]\nset key top left\n";
  }

  if (reports.size() > 1) {
    std::map<std::string, std::map<int, const PlotReport*>> by_workload;
    for (const PlotReport& r : reports) {
      if (r.clients > 0) by_workload[r.workload][r.clients] = &r;
    }
    std::string out = prefix + "-sweep." + format;
    outputs.push_back(out);
    gp << "set output " << GpQuote(out)
       << "\nunset title\nset multiplot layout 1,2 title 'dtx-bench sweep (closed loop)'\n"
       << "set logscale x 2\nset xlabel 'clients (transactions in flight)'\n";
    std::vector<std::string> dats;
    for (const auto& [w, m] : by_workload) {
      std::string dat = prefix + "-sweep-" + w + ".dat";
      std::ofstream d(dat);
      for (const auto& [c, r] : m)
        d << c << " " << r->committed_per_s << " " << r->p99_us / 1e3 << "\n";
      dats.push_back(dat);
    }
    auto plot = [&](int col, const char* ylabel, bool logy) {
      gp << "set ylabel '" << ylabel << "'\n"
         << (logy ? "set logscale y\nset yrange [*:*]\n" : "unset logscale y\nset yrange [0:*]\n")
         << "plot ";
      size_t i = 0;
      for (const auto& [w, m] : by_workload) {
        gp << (i ? ", " : "") << GpQuote(dats[i]) << " using 1:" << col
           << " with linespoints lw 2 pt 7 title " << GpQuote(w);
        ++i;
      }
      gp << "\n";
    };
    plot(2, "committed tx/s", false);
    plot(3, "p99 latency (ms, log)", true);
    gp << "unset multiplot\n";
  }
  std::string script = prefix + ".gp";
  {
    std::ofstream s(script);
    s << gp.str();
    if (!s) {
      std::cerr << "dtx-bench: plot: cannot write " << script << "\n";
      return kExitFailed;
    }
  }
  std::string cmd = "gnuplot " + GpQuote(script) + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    std::cerr << "dtx-bench: plot: cannot run gnuplot\n";
    return kExitFailed;
  }
  std::string msgs;
  char buf[512];
  while (std::fgets(buf, sizeof(buf), p) != nullptr) msgs += buf;
  int st = ::pclose(p);
  if (st != 0) {
    std::cerr << "dtx-bench: plot: gnuplot failed (is gnuplot installed?):\n" << msgs;
    return kExitFailed;
  }
  for (const auto& o : outputs) std::cout << "wrote " << o << "\n";
  return kExitOk;
}

}  // namespace dtx::bench
