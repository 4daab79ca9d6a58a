// A log-bucketed latency histogram with bounded relative error, in the style
// of HdrHistogram (Gil Tene): values below 2^kSubBucketBits are counted
// exactly; above, every power-of-two range [2^k, 2^(k+1)) is split into
// 2^(kSubBucketBits-1) equal buckets. A bucket [lo, lo + w) has
// lo >= 2^(kSubBucketBits-1) * w, so reporting its midpoint is off from any
// value in it by at most w/2 <= value / 2^kSubBucketBits: every quantile is
// within kRelativeErrorMax of the exact one (the test checks this bound).
//
// Fixed memory (kBucketCount counters, ~30 KiB), no allocation on Record().
// Thread-safety: none; give each thread its own and Merge() them.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace dtx::bench {

class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 7;
  static constexpr double kRelativeErrorMax = 1.0 / (1u << kSubBucketBits);
  static constexpr uint64_t kExactMax = (uint64_t{1} << kSubBucketBits) - 1;
  static constexpr uint64_t kHalf = uint64_t{1} << (kSubBucketBits - 1);
  static constexpr size_t kBucketCount =
      (size_t{1} << kSubBucketBits) + (64 - kSubBucketBits) * kHalf;

  void Record(uint64_t value) {
    ++counts_[BucketOf(value)];
    ++count_;
    sum_ += static_cast<double>(value);
    if (value < min_) min_ = value;
    if (value > max_) max_ = value;
  }

  void Merge(const LatencyHistogram& other) {
    for (size_t i = 0; i < kBucketCount; ++i) counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ += other.sum_;
    if (other.min_ < min_) min_ = other.min_;
    if (other.max_ > max_) max_ = other.max_;
  }

  void Reset() { *this = LatencyHistogram(); }

  uint64_t count() const { return count_; }
  uint64_t min() const { return count_ == 0 ? 0 : min_; }
  uint64_t max() const { return max_; }
  double mean() const { return count_ == 0 ? 0.0 : sum_ / static_cast<double>(count_); }

  // The value at quantile q in [0, 1] (nearest rank: the smallest recorded
  // value v with at least ceil(q * count) values <= v), within
  // kRelativeErrorMax. 0 when empty. q = 1 gives the exact max.
  uint64_t ValueAtQuantile(double q) const {
    if (count_ == 0) return 0;
    if (q <= 0) return min_;
    if (q >= 1) return max_;
    auto rank = static_cast<uint64_t>(q * static_cast<double>(count_));
    if (static_cast<double>(rank) < q * static_cast<double>(count_)) ++rank;
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < kBucketCount; ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        uint64_t m = Midpoint(i);
        if (m < min_) m = min_;
        if (m > max_) m = max_;
        return m;
      }
    }
    return max_;
  }

  // Bucket arithmetic, public for the tests.
  static size_t BucketOf(uint64_t v) {
    if (v <= kExactMax) return static_cast<size_t>(v);
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - (kSubBucketBits - 1);  // >= 1
    uint64_t sub = v >> shift;               // in [kHalf, 2 * kHalf)
    return static_cast<size_t>((uint64_t{1} << kSubBucketBits) +
                               static_cast<uint64_t>(shift - 1) * kHalf + (sub - kHalf));
  }
  static uint64_t BucketLow(size_t i) {
    if (i <= kExactMax) return i;
    uint64_t j = i - (uint64_t{1} << kSubBucketBits);
    int shift = static_cast<int>(j / kHalf) + 1;
    uint64_t sub = kHalf + j % kHalf;
    return sub << shift;
  }
  static uint64_t BucketWidth(size_t i) {
    if (i <= kExactMax) return 1;
    return uint64_t{1} << ((i - (size_t{1} << kSubBucketBits)) / kHalf + 1);
  }
  static uint64_t Midpoint(size_t i) { return BucketLow(i) + BucketWidth(i) / 2; }

 private:
  std::array<uint64_t, kBucketCount> counts_{};
  uint64_t count_ = 0;
  double sum_ = 0;
  uint64_t min_ = std::numeric_limits<uint64_t>::max();
  uint64_t max_ = 0;
};

}  // namespace dtx::bench
