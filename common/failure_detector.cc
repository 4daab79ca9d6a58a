#include "common/failure_detector.h"

#include <algorithm>
#include <cmath>

#include "common/check.h"

namespace dtx {

FailureDetector::FailureDetector(FailureDetectorOptions options) : options_(options) {
  DTX_CHECK(options_.heartbeat_interval_ms > 0 && options_.suspect_after_ms > 0);
  DTX_CHECK(options_.window_max >= 1 && options_.window_max <= kPhiWindowMax);
  DTX_CHECK(options_.phi_threshold > 0);
}

void FailureDetector::Start(uint64_t now_ms) {
  started_ms_ = now_ms;
  last_ms_ = now_ms;
  heard_ = false;
  intervals_ms_.clear();
  sum_ = sum_sq_ = 0;
}

void FailureDetector::Heartbeat(uint64_t now_ms) {
  now_ms = std::max(now_ms, last_ms_);
  if (heard_) {
    uint64_t interval = now_ms - last_ms_;
    intervals_ms_.push_back(interval);
    sum_ += static_cast<double>(interval);
    sum_sq_ += static_cast<double>(interval) * static_cast<double>(interval);
    if (intervals_ms_.size() > options_.window_max) {
      double old = static_cast<double>(intervals_ms_.front());
      intervals_ms_.pop_front();
      sum_ -= old;
      sum_sq_ -= old * old;
    }
  }
  heard_ = true;
  last_ms_ = now_ms;
}

uint64_t FailureDetector::SinceLast(uint64_t now_ms) const {
  return now_ms > last_ms_ ? now_ms - last_ms_ : 0;
}

double FailureDetector::Phi(uint64_t now_ms) const {
  const double t = static_cast<double>(SinceLast(now_ms));
  double mean = static_cast<double>(options_.heartbeat_interval_ms);
  double std_dev = mean / 4;
  const size_t n = intervals_ms_.size();
  if (n >= 2) {
    mean = sum_ / static_cast<double>(n);
    double var = sum_sq_ / static_cast<double>(n) - mean * mean;
    std_dev = std::sqrt(std::max(var, 0.0));
  }
  std_dev = std::max(std_dev, static_cast<double>(options_.min_std_dev_ms));
  // Logistic approximation of the normal CDF (as in Akka's detector), in a
  // form that stays finite far out in the tail.
  const double y = (t - mean) / std_dev;
  const double e = std::exp(-y * (1.5976 + 0.070566 * y * y));
  if (t > mean) return -std::log10(e / (1.0 + e));
  return -std::log10(1.0 - 1.0 / (1.0 + e));
}

bool FailureDetector::Suspected(uint64_t now_ms) const {
  const uint64_t silence = SinceLast(now_ms);
  if (silence >= options_.suspect_after_ms) return true;
  if (options_.mode == FailureDetectorOptions::Mode::kTimeout || !heard_) return false;
  return Phi(now_ms) >= options_.phi_threshold;
}

int64_t FailureDetector::AgeMs(uint64_t now_ms) const {
  return heard_ ? static_cast<int64_t>(SinceLast(now_ms)) : -1;
}

}  // namespace dtx
