// DiskGuard: a node's free-space watermark and ballast file (issue 15, "Full
// disk"; docs/design.md "Full disk").
//
// A node whose disk fills must not find out from a failed WAL append: that is
// fail-stop, and the restart meets the same full disk (a crash loop). So the
// node watches the free space of the filesystem its WAL and store live on:
// - Below `free_min_bytes` the guard is low(): the node refuses new work that
//   would write (the participant's PREPAREs with writes) with a retryable
//   UNAVAILABLE that says why, while it still serves reads and finishes what
//   it already promised (COMMIT and ABORT of prepared transactions, the
//   checkpoint that lets the WAL be truncated).
// - A ballast file (`ballast_bytes`, preallocated in `dir`) is space held in
//   reserve: when the guard goes low it deletes the ballast, so that what
//   the node promised, and the checkpoint, find room even if something else
//   filled the disk.
// - The guard recovers by itself: once the free space is back to
//   free_min_bytes + ballast_bytes (an operator freed space, truncation
//   did), the ballast is made again and new work is accepted. Not at the bare
//   watermark: the space the ballast gave back is for what was promised, and
//   new writes would eat it. Nothing restarts.
//
// Check() runs on the node's loop every second (one statvfs; making the
// ballast is one posix_fallocate and fsync, done only when space returns).
// Not thread-safe: the loop thread only.
#pragma once

#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "common/status.h"

namespace dtx::node {

// --disk-free-min-mb and --disk-ballast-mb of the participant.
inline constexpr uint64_t kDiskFreeMinMbDefault = 256;
inline constexpr uint64_t kDiskBallastMbDefault = 64;
inline constexpr const char* kBallastFileName = "ballast";
inline constexpr const char* kDiskFreeMinFlagHelp =
    "below this many MiB free in NODEDIR's filesystem, new writes are refused (UNAVAILABLE, "
    "retryable) while reads and transactions already prepared or decided go on (0: off)";
inline constexpr const char* kDiskBallastFlagHelp =
    "MiB held in reserve in NODEDIR/ballast, released when the free space falls below "
    "--disk-free-min-mb (0: no ballast)";

// --disk-free-min-mb and --disk-ballast-mb in bytes; InvalidArgument past
// 1 PiB (no overflow).
Status DiskBytesFromFlags(uint64_t free_min_mb, uint64_t ballast_mb, uint64_t* free_min_bytes,
                          uint64_t* ballast_bytes);

struct DiskGuardOptions {
  std::string dir;              // the node's directory (WAL and store below it)
  uint64_t free_min_bytes = 0;  // 0: no watermark (never low)
  uint64_t ballast_bytes = 0;   // 0: no ballast file
  // Free bytes of dir's filesystem for an unprivileged writer; empty:
  // statvfs(dir) f_bavail * f_frsize. Tests give their own.
  std::function<Result<uint64_t>()> free_bytes;
};

class DiskGuard {
 public:
  explicit DiskGuard(DiskGuardOptions options);
  // A started guard of `dir` measured with statvfs (the runtimes' use).
  static Result<std::unique_ptr<DiskGuard>> Open(const std::string& dir, uint64_t free_min_bytes,
                                                 uint64_t ballast_bytes);

  // Measures once and makes the ballast if there is room for it. An error
  // only if the free space cannot be measured at all.
  Status Start();
  // Measures again: goes low (and deletes the ballast) below the watermark,
  // back to normal (making the ballast again) at the watermark plus the
  // ballast. True if low() changed. A failed measurement keeps the last
  // state (logged).
  bool Check();

  bool low() const { return low_; }
  uint64_t free_bytes() const { return free_; }
  bool ballast_present() const { return ballast_present_; }
  const DiskGuardOptions& options() const { return options_; }
  // The node refused a request because low() (counted for GetStatus).
  void CountRefusal() { ++refusals_; }
  // GetStatus counters: disk_low, disk_free_bytes, disk_ballast_present,
  // disk_low_refusals.
  void AddStatusCounters(std::map<std::string, int64_t>* counters) const;
  // For a refusal: "disk space low: 12 MiB free in DIR; new writes are
  // refused until 320 MiB are free (the 256 MiB watermark, ...".
  std::string Describe() const;

 private:
  Result<uint64_t> Measure() const;
  void MakeBallast();
  void ReleaseBallast();
  std::string BallastPath() const;

  DiskGuardOptions options_;
  uint64_t free_ = 0;
  bool low_ = false;
  bool ballast_present_ = false;
  uint64_t refusals_ = 0;
};

// The guard's Prometheus gauges, dtx_disk_low and dtx_disk_free_bytes
// (docs/observability.md), in the node's registry.
class DiskMetrics {
 public:
  explicit DiskMetrics(prometheus::Registry& registry);
  // From the runtime's metrics tick (loop thread).
  void Update(const DiskGuard& guard);

 private:
  prometheus::Gauge& low_;
  prometheus::Gauge& free_;
};

}  // namespace dtx::node
