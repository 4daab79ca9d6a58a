#include "tools/metrics_text.h"

#include <cmath>
#include <cstdlib>
#include <limits>

namespace dtx::tools {

namespace {

bool NameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

Result<double> ParseValue(std::string_view v) {
  if (v == "+Inf" || v == "Inf") return std::numeric_limits<double>::infinity();
  if (v == "-Inf") return -std::numeric_limits<double>::infinity();
  if (v == "NaN") return std::numeric_limits<double>::quiet_NaN();
  std::string s(v);
  char* end = nullptr;
  double d = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) return Status::Corruption("bad value '" + s + "'");
  return d;
}

Status ParseSample(std::string_view line, MetricSample* out) {
  size_t i = 0;
  while (i < line.size() && NameChar(line[i], i == 0)) ++i;
  if (i == 0) return Status::Corruption("no metric name");
  out->name = std::string(line.substr(0, i));
  if (i < line.size() && line[i] == '{') {
    ++i;
    for (;;) {
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      size_t start = i;
      while (i < line.size() && NameChar(line[i], i == start)) ++i;
      if (i == start || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') {
        return Status::Corruption("bad label");
      }
      std::string key(line.substr(start, i - start));
      i += 2;
      std::string value;
      for (;;) {
        if (i >= line.size()) return Status::Corruption("unterminated label value");
        char c = line[i++];
        if (c == '"') break;
        if (c == '\\') {
          if (i >= line.size()) return Status::Corruption("bad escape");
          char e = line[i++];
          value += e == 'n' ? '\n' : e;
        } else {
          value += c;
        }
      }
      if (!out->labels.emplace(key, value).second)
        return Status::Corruption("duplicate label " + key);
      if (i < line.size() && line[i] == ',') ++i;
    }
  }
  if (i >= line.size() || line[i] != ' ') return Status::Corruption("no value");
  while (i < line.size() && line[i] == ' ') ++i;
  std::string_view rest = line.substr(i);
  const size_t sp = rest.find(' ');
  if (sp != std::string_view::npos) rest = rest.substr(0, sp);  // a timestamp after it is ignored
  auto v = ParseValue(rest);
  if (!v.ok()) return v.status();
  out->value = *v;
  return Status::OK();
}

bool Matches(const MetricSample& s, const std::map<std::string, std::string>& match) {
  for (const auto& [k, v] : match) {
    auto it = s.labels.find(k);
    if (it == s.labels.end() || it->second != v) return false;
  }
  return true;
}

}  // namespace

Result<Exposition> ParseExposition(std::string_view text) {
  Exposition e;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    if (line[0] == '#') {
      // "# TYPE name type" / "# HELP name text"; other comments are ignored.
      std::string_view rest = line.substr(1);
      while (!rest.empty() && rest[0] == ' ') rest.remove_prefix(1);
      const bool is_type = rest.substr(0, 5) == "TYPE ";
      const bool is_help = rest.substr(0, 5) == "HELP ";
      if (!is_type && !is_help) continue;
      rest.remove_prefix(5);
      const size_t sp = rest.find(' ');
      if (sp == std::string_view::npos || sp == 0) {
        return Status::Corruption("line " + std::to_string(line_no) + ": malformed # " +
                                  (is_type ? "TYPE" : "HELP"));
      }
      std::string name(rest.substr(0, sp));
      (is_type ? e.types : e.help)[name] = std::string(rest.substr(sp + 1));
      continue;
    }
    MetricSample s;
    Status st = ParseSample(line, &s);
    if (!st.ok()) {
      return Status::Corruption("line " + std::to_string(line_no) + " '" + std::string(line) +
                                "': " + st.message());
    }
    e.samples.push_back(std::move(s));
  }
  return e;
}

double SumSamples(const Exposition& e, const std::string& name,
                  const std::map<std::string, std::string>& match) {
  double sum = 0;
  for (const MetricSample& s : e.samples) {
    if (s.name == name && Matches(s, match)) sum += s.value;
  }
  return sum;
}

std::map<double, double> HistogramBuckets(const Exposition& e, const std::string& family,
                                          const std::map<std::string, std::string>& match) {
  std::map<double, double> out;
  const std::string name = family + "_bucket";
  for (const MetricSample& s : e.samples) {
    if (s.name != name || !Matches(s, match)) continue;
    auto le = s.labels.find("le");
    if (le == s.labels.end()) continue;
    auto v = ParseValue(le->second);
    if (!v.ok()) continue;
    out[*v] += s.value;
  }
  return out;
}

double QuantileOfDelta(const std::map<double, double>& before,
                       const std::map<double, double>& after, double q) {
  std::vector<std::pair<double, double>> delta;  // (upper bound, cumulative count)
  for (const auto& [le, count] : after) {
    auto b = before.find(le);
    delta.emplace_back(le, count - (b == before.end() ? 0 : b->second));
  }
  if (delta.empty() || delta.back().second <= 0) return -1;
  const double total = delta.back().second;
  const double rank = q * total;
  double prev_bound = 0;
  double prev_count = 0;
  double largest_finite = 0;
  for (const auto& [le, cum] : delta) {
    if (std::isfinite(le)) largest_finite = le;
    if (cum >= rank) {
      if (!std::isfinite(le)) return largest_finite;
      const double in_bucket = cum - prev_count;
      if (in_bucket <= 0) return le;
      return prev_bound + (le - prev_bound) * (rank - prev_count) / in_bucket;
    }
    prev_bound = le;
    prev_count = cum;
  }
  return largest_finite;
}

}  // namespace dtx::tools
