// The WAL metrics every node exposes (docs/observability.md), registered once
// here for the participant and the coordinator alike:
//   dtx_wal_sync_seconds, dtx_wal_records_per_sync  histograms, one observation
//       per group commit, fed by wal::Options::on_sync on the WAL's flusher thread;
//   dtx_wal_syncs_total, dtx_wal_records_synced_total, dtx_wal_sync_seconds_total
//       counters, copied from wal::Log::stats() by Update().
//
// Thread-safety: Hook's callback runs on the flusher thread (Histogram::Observe
// is thread-safe); Update() may run on any thread; scrapes read atomics.
// Lifetime: a WalMetrics must outlive every Log whose options it hooked, and
// the Registry's scrapes (its counter callbacks capture `this`).
#pragma once

#include <atomic>
#include <cstdint>

#include "common/metrics.h"
#include "wal/wal.h"

namespace dtx::obs {

class WalMetrics {
 public:
  explicit WalMetrics(Registry& r)
      : sync_(r.AddHistogram("dtx_wal_sync_seconds",
                             "WAL fdatasync latency per group commit (the batch's syncs; two when "
                             "it sealed a segment).",
                             LatencyBucketsSeconds())),
        records_per_sync_(r.AddHistogram("dtx_wal_records_per_sync",
                                         "Records made durable by one WAL group commit.",
                                         ExponentialBuckets(1, 2, 12))) {
    r.AddCounterCallback("dtx_wal_syncs_total", "WAL fdatasync calls that succeeded.", [this] {
      return static_cast<double>(syncs_.load(std::memory_order_relaxed));
    });
    r.AddCounterCallback("dtx_wal_records_synced_total", "WAL records made durable.", [this] {
      return static_cast<double>(records_synced_.load(std::memory_order_relaxed));
    });
    r.AddCounterCallback(
        "dtx_wal_sync_seconds_total", "Time spent in successful WAL fdatasync calls.", [this] {
          return static_cast<double>(sync_micros_.load(std::memory_order_relaxed)) * 1e-6;
        });
  }
  WalMetrics(const WalMetrics&) = delete;
  WalMetrics& operator=(const WalMetrics&) = delete;

  // Sets options.on_sync to feed the histograms.
  void Hook(wal::Options& options) {
    options.on_sync = [this](uint64_t records, uint64_t /*bytes*/, uint64_t sync_ns) {
      sync_.ObserveNs(sync_ns);
      records_per_sync_.Observe(static_cast<double>(records));
    };
  }

  // Copies the log's running totals into the counters.
  void Update(const wal::Stats& s) {
    syncs_.store(s.syncs, std::memory_order_relaxed);
    records_synced_.store(s.records_synced, std::memory_order_relaxed);
    sync_micros_.store(s.sync_micros_total, std::memory_order_relaxed);
  }

 private:
  Histogram& sync_;
  Histogram& records_per_sync_;
  std::atomic<uint64_t> syncs_{0};
  std::atomic<uint64_t> records_synced_{0};
  std::atomic<uint64_t> sync_micros_{0};
};

}  // namespace dtx::obs
