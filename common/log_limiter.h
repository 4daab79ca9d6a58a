// LogLimiter: bounds how many lines one kind of event may write to the log.
// A flood that is not our own doing (thousands of half-open connections,
// failed TLS handshakes, slow senders) must not grow the log without bound or
// drown the lines that matter; the events are still counted in their
// counters (RpcServerStats), only their lines are limited.
//
// At most `lines_max` lines per window of `window_ms`. Lines past that are
// suppressed and counted; once the window has passed, TakeSuppressed() hands
// the count over for one summary line ("N more like it suppressed").
//
// Pure: time is an input (any monotonic millisecond clock, the same for every
// call). Not thread-safe: one owner thread (RpcServer: the loop thread).
#pragma once

#include <cstdint>

namespace dtx {

class LogLimiter {
 public:
  LogLimiter(uint32_t lines_max, uint64_t window_ms)
      : lines_max_(lines_max), window_ms_(window_ms) {}

  // True if a line may be written at `now_ms`; false: it is counted as
  // suppressed instead.
  bool Allow(uint64_t now_ms) {
    if (now_ms >= window_start_ms_ + window_ms_ || now_ms < window_start_ms_) {
      window_start_ms_ = now_ms;
      lines_in_window_ = 0;
    }
    if (lines_in_window_ < lines_max_) {
      ++lines_in_window_;
      return true;
    }
    ++suppressed_;
    return false;
  }

  // The lines suppressed so far, once the window they fell in has passed (0
  // before, or when none were); the count starts again from 0.
  uint64_t TakeSuppressed(uint64_t now_ms) {
    if (suppressed_ == 0 || now_ms < window_start_ms_ + window_ms_) return 0;
    const uint64_t n = suppressed_;
    suppressed_ = 0;
    return n;
  }

 private:
  uint32_t lines_max_;
  uint64_t window_ms_;
  uint64_t window_start_ms_ = 0;
  uint32_t lines_in_window_ = 0;
  uint64_t suppressed_ = 0;
};

}  // namespace dtx
