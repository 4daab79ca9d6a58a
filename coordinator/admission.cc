#include "coordinator/admission.h"

#include <algorithm>

namespace dtx::coordinator {

Admission::Admission(const AdmissionOptions& options) : options_(options) {
  options_.limit_min = std::max<size_t>(1, std::min(options_.limit_min, options_.limit_max));
  limit_ = options_.queue_target_us == 0
               ? options_.limit_max
               : std::clamp(options_.limit_initial, options_.limit_min, options_.limit_max);
}

bool Admission::Admit(uint64_t now_us) {
  Advance(now_us);
  if (in_flight_ >= limit_) {
    limited_ = true;
    ++refused_;
    return false;
  }
  ++in_flight_;
  if (in_flight_ == limit_) limited_ = true;
  return true;
}

void Admission::Done(uint64_t now_us, uint64_t latency_us) {
  Advance(now_us);
  if (in_flight_ > 0) --in_flight_;
  interval_sum_us_ += latency_us;
  ++interval_count_;
}

std::string Admission::RefusalMessage() const {
  return "overloaded: " + std::to_string(in_flight_) + " commits in flight (limit " +
         std::to_string(limit_) + ", lowered while commits take over " +
         std::to_string(options_.queue_target_us / 1000) + " ms on average; lately " +
         std::to_string(last_mean_us_ / 1000) + " ms); retry later";
}

void Admission::Advance(uint64_t now_us) {
  if (!started_) {
    started_ = true;
    interval_start_us_ = now_us;
    return;
  }
  if (options_.queue_target_us == 0 || options_.interval_us == 0) return;
  if (now_us - interval_start_us_ > 10 * options_.interval_us) {
    // Quiet for a while: the interval under way ends, the empty ones after
    // it carry no signal.
    EndInterval();
    interval_start_us_ = now_us;
    return;
  }
  while (now_us - interval_start_us_ >= options_.interval_us) {
    EndInterval();
    interval_start_us_ += options_.interval_us;
  }
}

void Admission::EndInterval() {
  const uint64_t count = interval_count_;
  const uint64_t sum = interval_sum_us_;
  interval_count_ = 0;
  interval_sum_us_ = 0;
  const bool limited = limited_;
  limited_ = in_flight_ >= limit_;
  if (count == 0) return;  // nothing answered: no signal
  const uint64_t mean = sum / count;
  last_mean_us_ = mean;
  if (mean > options_.queue_target_us) {
    limit_ = std::max(options_.limit_min, limit_ - limit_ / 5);
  } else if (limited) {
    limit_ = std::min(options_.limit_max, limit_ + std::max<size_t>(1, limit_ / 4));
  }
}

}  // namespace dtx::coordinator
