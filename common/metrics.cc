#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>
#include <utility>

#include "common/check.h"

namespace dtx::obs {

// ---- Gauge ----------------------------------------------------------------

void Gauge::Set(double v) {
  DTX_CHECK_MSG(!callback_, "Set on a callback gauge");
  value_.store(v, std::memory_order_relaxed);
}

void Gauge::Add(double delta) {
  DTX_CHECK_MSG(!callback_, "Add on a callback gauge");
  value_.fetch_add(delta, std::memory_order_relaxed);
}

double Gauge::Value() const {
  if (callback_) return callback_();
  return value_.load(std::memory_order_relaxed);
}

// ---- Histogram ------------------------------------------------------------

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  const std::vector<double>& b = *bounds_;
  // First bound >= v (buckets are "less than or equal"); NaN compares false
  // everywhere and lands in the +Inf bucket.
  size_t i = std::isnan(v)
                 ? b.size()
                 : static_cast<size_t>(std::lower_bound(b.begin(), b.end(), v) - b.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Read() const {
  Snapshot s;
  s.cumulative.resize(bounds_->size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

std::vector<double> LatencyBucketsSeconds() {
  return {50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
          50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};
}

std::vector<double> ExponentialBuckets(double start, double factor, size_t count) {
  DTX_CHECK(start > 0 && factor > 1 && count >= 1 && count <= kHistogramBucketsMax);
  std::vector<double> b;
  b.reserve(count);
  double v = start;
  for (size_t i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

// ---- Exposition helpers ----------------------------------------------------

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integers up to 2^53 print exactly without an exponent.
  if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0) {
    char buf[32];
    auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), static_cast<int64_t>(v));
    DTX_CHECK(ec == std::errc());
    return std::string(buf, p);
  }
  // Shortest round-trip digits; plain decimal unless the number is tiny or
  // huge, like Go's strconv 'g' that Prometheus itself uses (le="0.0005").
  const double mag = std::fabs(v);
  const auto format =
      mag >= 1e-4 && mag < 1e21 ? std::chars_format::fixed : std::chars_format::scientific;
  char buf[400];
  auto [p, ec] = std::to_chars(buf, buf + sizeof(buf), v, format);
  DTX_CHECK(ec == std::errc());
  return std::string(buf, p);
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

namespace {
bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

const char* TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}
}  // namespace

bool IsValidMetricName(std::string_view name) {
  if (name.empty() || name.size() > kMetricNameBytesMax) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = IsAlpha(c) || c == '_' || c == ':' || (i > 0 && IsDigit(c));
    if (!ok) return false;
  }
  return true;
}

bool IsValidLabelName(std::string_view name) {
  if (name.empty() || name.size() > kMetricNameBytesMax) return false;
  if (name.size() >= 2 && name[0] == '_' && name[1] == '_') return false;  // reserved
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = IsAlpha(c) || c == '_' || (i > 0 && IsDigit(c));
    if (!ok) return false;
  }
  return true;
}

// ---- Families -------------------------------------------------------------

FamilyBase::FamilyBase(std::string_view name, std::string_view help, MetricType type,
                       std::vector<std::string> label_names)
    : name_(name), help_(help), type_(type), label_names_(std::move(label_names)) {
  DTX_CHECK_MSG(IsValidMetricName(name_), "invalid metric name");
  DTX_CHECK_MSG(help_.size() <= kHelpBytesMax, "metric help too long");
  DTX_CHECK_MSG(label_names_.size() <= kLabelNamesMax, "too many label names");
  for (size_t i = 0; i < label_names_.size(); ++i) {
    DTX_CHECK_MSG(IsValidLabelName(label_names_[i]), "invalid label name");
    DTX_CHECK_MSG(!(type_ == MetricType::kHistogram && label_names_[i] == "le"),
                  "histogram label 'le' is reserved");
    for (size_t j = 0; j < i; ++j)
      DTX_CHECK_MSG(label_names_[i] != label_names_[j], "duplicate label name");
  }
}

void FamilyBase::WriteHeader(std::string* out) const {
  *out += "# HELP ";
  *out += name_;
  *out += ' ';
  *out += EscapeHelp(help_);
  *out += "\n# TYPE ";
  *out += name_;
  *out += ' ';
  *out += TypeName(type_);
  *out += '\n';
}

void FamilyBase::WriteLabels(const std::vector<std::string>& values, const char* le,
                             std::string* out) const {
  if (label_names_.empty() && le == nullptr) return;
  *out += '{';
  for (size_t i = 0; i < label_names_.size(); ++i) {
    if (i > 0) *out += ',';
    *out += label_names_[i];
    *out += "=\"";
    *out += EscapeLabelValue(values[i]);
    *out += '"';
  }
  if (le != nullptr) {
    if (!label_names_.empty()) *out += ',';
    *out += "le=\"";
    *out += le;
    *out += '"';
  }
  *out += '}';
}

template <typename T>
Family<T>::Family(std::string_view name, std::string_view help, MetricType type,
                  std::vector<std::string> label_names, std::vector<double> bounds)
    : FamilyBase(name, help, type, std::move(label_names)), bounds_(std::move(bounds)) {
  if (type_ == MetricType::kHistogram) {
    DTX_CHECK_MSG(!bounds_.empty() && bounds_.size() <= kHistogramBucketsMax,
                  "histogram needs 1..kHistogramBucketsMax bounds");
    for (size_t i = 0; i < bounds_.size(); ++i) {
      DTX_CHECK_MSG(std::isfinite(bounds_[i]), "histogram bound not finite");
      DTX_CHECK_MSG(i == 0 || bounds_[i - 1] < bounds_[i], "histogram bounds not increasing");
    }
  }
}

template <typename T>
void Family<T>::CheckLabelValues(const std::vector<std::string>& values) const {
  DTX_CHECK_MSG(values.size() == label_names_.size(), "wrong number of label values");
  for (const std::string& v : values)
    DTX_CHECK_MSG(v.size() <= kLabelValueBytesMax, "label value too long");
}

template <typename T>
T& Family<T>::Get(const std::vector<std::string>& label_values) {
  CheckLabelValues(label_values);
  MutexLock lock(&mu_);
  auto it = children_.find(label_values);
  if (it != children_.end()) return *it->second;
  DTX_CHECK_MSG(children_.size() < kChildrenPerFamilyMax, "too many series in one metric family");
  std::unique_ptr<T> child;
  if constexpr (std::is_same_v<T, Histogram>) {
    child = std::make_unique<Histogram>(&bounds_);
  } else {
    child = std::make_unique<T>();
  }
  T& ref = *child;
  children_.emplace(label_values, std::move(child));
  return ref;
}

template <typename T>
T& Family<T>::AddCallback(const std::vector<std::string>& label_values,
                          std::function<double()> fn) {
  if constexpr (std::is_same_v<T, Gauge>) {
    CheckLabelValues(label_values);
    DTX_CHECK(fn != nullptr);
    MutexLock lock(&mu_);
    DTX_CHECK_MSG(children_.count(label_values) == 0, "callback series already exists");
    DTX_CHECK_MSG(children_.size() < kChildrenPerFamilyMax, "too many series in one metric family");
    auto child = std::make_unique<Gauge>(std::move(fn));
    Gauge& ref = *child;
    children_.emplace(label_values, std::move(child));
    return ref;
  } else {
    (void)label_values;
    (void)fn;
    DTX_CHECK_MSG(false, "AddCallback is for gauge families only");
    __builtin_unreachable();
  }
}

template <typename T>
void Family<T>::Write(std::string* out) const {
  WriteHeader(out);
  MutexLock lock(&mu_);
  for (const auto& [values, child] : children_) {
    if constexpr (std::is_same_v<T, Histogram>) {
      Histogram::Snapshot s = child->Read();
      for (size_t i = 0; i <= bounds_.size(); ++i) {
        std::string le = i < bounds_.size() ? FormatValue(bounds_[i]) : "+Inf";
        *out += name_;
        *out += "_bucket";
        WriteLabels(values, le.c_str(), out);
        *out += ' ';
        *out += std::to_string(s.cumulative[i]);
        *out += '\n';
      }
      *out += name_;
      *out += "_sum";
      WriteLabels(values, nullptr, out);
      *out += ' ';
      *out += FormatValue(s.sum);
      *out += '\n';
      *out += name_;
      *out += "_count";
      WriteLabels(values, nullptr, out);
      *out += ' ';
      *out += std::to_string(s.cumulative.back());
      *out += '\n';
    } else {
      *out += name_;
      WriteLabels(values, nullptr, out);
      *out += ' ';
      if constexpr (std::is_same_v<T, Counter>) {
        *out += std::to_string(child->Value());
      } else {
        *out += FormatValue(child->Value());
      }
      *out += '\n';
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- Registry -------------------------------------------------------------

void Registry::Insert(std::unique_ptr<FamilyBase> family) {
  MutexLock lock(&mu_);
  DTX_CHECK_MSG(families_.size() < kMetricFamiliesMax, "too many metric families");
  auto [it, inserted] = families_.emplace(family->name(), std::move(family));
  (void)it;
  DTX_CHECK_MSG(inserted, "metric family registered twice");
}

CounterFamily& Registry::AddCounterFamily(std::string_view name, std::string_view help,
                                          std::vector<std::string> label_names) {
  auto* f = new CounterFamily(name, help, MetricType::kCounter, std::move(label_names), {});
  Insert(std::unique_ptr<FamilyBase>(f));
  return *f;
}

GaugeFamily& Registry::AddGaugeFamily(std::string_view name, std::string_view help,
                                      std::vector<std::string> label_names) {
  auto* f = new GaugeFamily(name, help, MetricType::kGauge, std::move(label_names), {});
  Insert(std::unique_ptr<FamilyBase>(f));
  return *f;
}

HistogramFamily& Registry::AddHistogramFamily(std::string_view name, std::string_view help,
                                              std::vector<double> bounds,
                                              std::vector<std::string> label_names) {
  auto* f = new HistogramFamily(name, help, MetricType::kHistogram, std::move(label_names),
                                std::move(bounds));
  Insert(std::unique_ptr<FamilyBase>(f));
  return *f;
}

Counter& Registry::AddCounter(std::string_view name, std::string_view help) {
  return AddCounterFamily(name, help, {}).Get();
}

Gauge& Registry::AddGauge(std::string_view name, std::string_view help) {
  return AddGaugeFamily(name, help, {}).Get();
}

Gauge& Registry::AddGaugeCallback(std::string_view name, std::string_view help,
                                  std::function<double()> fn) {
  return AddGaugeFamily(name, help, {}).AddCallback({}, std::move(fn));
}

void Registry::AddCounterCallback(std::string_view name, std::string_view help,
                                  std::function<double()> fn) {
  // A gauge child (callback-valued) in a family exposed as TYPE counter.
  auto* f = new GaugeFamily(name, help, MetricType::kCounter, {}, {});
  f->AddCallback({}, std::move(fn));
  Insert(std::unique_ptr<FamilyBase>(f));
}

Histogram& Registry::AddHistogram(std::string_view name, std::string_view help,
                                  std::vector<double> bounds) {
  return AddHistogramFamily(name, help, std::move(bounds), {}).Get();
}

std::string Registry::Serialize() const {
  std::string out;
  MutexLock lock(&mu_);
  for (const auto& [name, family] : families_) family->Write(&out);
  return out;
}

}  // namespace dtx::obs
