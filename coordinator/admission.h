// Admission: how many client Commits a coordinator works on at once, adapted
// to the queueing it sees, so that above capacity it sheds new transactions
// with UNAVAILABLE ("overloaded", retryable) instead of building queues
// (docs/design.md "Overload").
//
// A commit's latency at the coordinator (Commit received to reply) is its
// work plus its waiting: for the votes, behind other transactions at every
// participant, and for the disks. Each interval (100 ms) the mean latency of
// the commits answered in it is compared with `queue_target_us`: above it,
// the limit on commits in flight shrinks by a fifth; not above it while the
// limit was what held commits back, it grows by a quarter. A Commit past the
// limit is refused. More commits in flight make bigger group commits (less
// CPU per transaction), so the limit settles where the mean latency meets
// the target: as much batching as that latency buys, and no standing queue
// beyond it.
//
// The target is absolute: on one machine or a LAN a commit of a few keys is a
// few milliseconds of work, and a mean of 50 ms is queueing. A deployment
// whose commits take longer unloaded (a backup across a WAN, transactions of
// hundreds of keys) raises it (--overload-queue-ms). Tried and dropped, both
// measured with the bank workload in open loop (bench/RESULTS.md session
// 10): the least latency of the interval (CoDel's signal) stays low while
// the mean is high, since commits differ in size and in how many
// participants they wait for; and a baseline learnt from the least latency
// seen, since a load over capacity from the first second has no unloaded
// latency to learn. The coordinator does not see the time a Commit waited in
// its socket before its loop read it; the client's throttle
// (bindings/cpp/shed_throttle.h) keeps that queue short by not sending what
// would be refused.
//
// Pure: time is an input; no threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dtx::coordinator {

struct AdmissionOptions {
  // 0: no adaptive limit (only `limit_max`).
  uint64_t queue_target_us = 50'000;
  uint64_t interval_us = 100'000;
  size_t limit_min = 16;
  size_t limit_max = 4096;  // the core's in_flight_tx_max
  size_t limit_initial = 1024;
};

class Admission {
 public:
  explicit Admission(const AdmissionOptions& options);

  // A Commit arrives at `now_us`: true if it is taken on (the caller must
  // call Done for it), false if it is to be refused (RefusalMessage).
  bool Admit(uint64_t now_us);
  // A taken-on Commit was answered after `latency_us`.
  void Done(uint64_t now_us, uint64_t latency_us);

  size_t limit() const { return limit_; }
  size_t in_flight() const { return in_flight_; }
  uint64_t refused() const { return refused_; }
  // The mean latency of the last interval with an answer (0: none yet).
  uint64_t last_mean_us() const { return last_mean_us_; }
  // Why the last Admit returned false.
  std::string RefusalMessage() const;

 private:
  // Ends every interval up to `now_us`.
  void Advance(uint64_t now_us);
  void EndInterval();

  AdmissionOptions options_;
  size_t limit_;
  size_t in_flight_ = 0;
  uint64_t refused_ = 0;
  uint64_t interval_start_us_ = 0;
  bool started_ = false;
  // This interval: the latencies answered, and whether the limit was met.
  uint64_t interval_sum_us_ = 0;
  uint64_t interval_count_ = 0;
  bool limited_ = false;
  // The last interval's mean (for the refusal message).
  uint64_t last_mean_us_ = 0;
};

}  // namespace dtx::coordinator
