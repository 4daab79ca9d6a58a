// The WAL metrics every node exposes (docs/observability.md), registered once
// here for the participant and the coordinator alike:
//   dtx_wal_sync_seconds, dtx_wal_records_per_sync  histograms, one observation
//       per group commit, fed by wal::Options::on_sync on the WAL's flusher thread;
//   dtx_wal_syncs_total, dtx_wal_records_synced_total, dtx_wal_sync_seconds_total
//       counters, advanced to wal::Log::stats() by Update().
//
// Thread-safety: Hook's callback runs on the flusher thread
// (prometheus::Histogram::Observe is thread-safe); Update() must always run on
// the same thread (the node's loop thread: it keeps the totals it last saw).
// Lifetime: a WalMetrics must outlive every Log whose options it hooked; the
// registry must outlive the WalMetrics.
#pragma once

#include <cstdint>

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "common/prometheus_support.h"
#include "wal/wal.h"

namespace dtx::obs {

class WalMetrics {
 public:
  explicit WalMetrics(prometheus::Registry& r)
      : sync_(prometheus::BuildHistogram()
                  .Name("dtx_wal_sync_seconds")
                  .Help("WAL fdatasync latency per group commit (the batch's syncs; two when it "
                        "sealed a segment).")
                  .Register(r)
                  .Add({}, LatencyBucketsSeconds())),
        records_per_sync_(prometheus::BuildHistogram()
                              .Name("dtx_wal_records_per_sync")
                              .Help("Records made durable by one WAL group commit.")
                              .Register(r)
                              .Add({}, ExponentialBuckets(1, 2, 12))),
        syncs_(prometheus::BuildCounter()
                   .Name("dtx_wal_syncs_total")
                   .Help("WAL fdatasync calls that succeeded.")
                   .Register(r)
                   .Add({})),
        records_synced_(prometheus::BuildCounter()
                            .Name("dtx_wal_records_synced_total")
                            .Help("WAL records made durable.")
                            .Register(r)
                            .Add({})),
        sync_seconds_(prometheus::BuildCounter()
                          .Name("dtx_wal_sync_seconds_total")
                          .Help("Time spent in successful WAL fdatasync calls.")
                          .Register(r)
                          .Add({})) {}
  WalMetrics(const WalMetrics&) = delete;
  WalMetrics& operator=(const WalMetrics&) = delete;

  // Sets options.on_sync to feed the histograms.
  void Hook(wal::Options& options) {
    options.on_sync = [this](uint64_t records, uint64_t /*bytes*/, uint64_t sync_ns) {
      sync_.Observe(static_cast<double>(sync_ns) * 1e-9);
      records_per_sync_.Observe(static_cast<double>(records));
    };
  }

  // Advances the counters by what the log's running totals grew since the
  // last call. A log opened anew (its totals restart from 0) adds all of its
  // totals, so the counters never go down.
  void Update(const wal::Stats& s) {
    AdvanceCounter(syncs_, seen_.syncs, s.syncs);
    AdvanceCounter(records_synced_, seen_.records_synced, s.records_synced);
    AdvanceCounter(sync_seconds_, seen_.sync_micros, s.sync_micros_total, 1e-6);
  }

 private:

  prometheus::Histogram& sync_;
  prometheus::Histogram& records_per_sync_;
  prometheus::Counter& syncs_;
  prometheus::Counter& records_synced_;
  prometheus::Counter& sync_seconds_;
  struct {
    uint64_t syncs = 0, records_synced = 0, sync_micros = 0;
  } seen_;
};

}  // namespace dtx::obs
