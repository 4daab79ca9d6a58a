// dtx write-ahead log: append records, learn when they are durable.
//
// On-disk format and recovery rules: docs/wal-format.md (constants in
// wal/format.h). The log knows nothing about transactions: a record is a
// one-byte type chosen by the caller plus an opaque payload.
//
// Durability contract: a record is durable only after the fdatasync covering
// it returned 0. Group commit: one flusher thread takes every record appended
// while the previous sync was in flight and writes them with one write() and
// one fdatasync() (see Options::linger_us_max for how it lets a burst of
// appends fill one batch). A failed write or fdatasync is fail-stop: the
// error is sticky, every waiting and every later append gets it, and no sync
// is ever retried.
//
// Ownership: Open returns the only owner of the Log. Destroying it flushes
// and syncs what is queued (their callbacks run), stops the flusher thread
// and closes the files; no callback runs after the destructor returns.
// Directory: one open Log per directory (a LOCK file is flock()ed; a second
// Open gets Busy).
//
// Thread-safety: all public methods of Log are thread-safe. Durable callbacks
// run on the flusher thread, exactly once per successful Append, in LSN
// order; they must be short and must not block (post to an event loop,
// signal a condition variable). They may call TryAppend but not Append.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace dtx::wal {

class Env;  // wal/env.h: the file-system seam

// Log sequence number. The first record ever appended is LSN 1; 0 means "no
// record". LSNs are dense: every append takes the next one.
using Lsn = uint64_t;

// Largest payload a record may carry. Anything larger is InvalidArgument on
// append and Corruption when read back (never an allocation).
inline constexpr uint32_t kRecordPayloadBytesMax = 16u << 20;

struct Options {
  // Roll to a new segment when the current one would exceed this size
  // (a single record larger than a segment gets a segment of its own).
  // At least format::kSegmentBytesMin.
  uint64_t segment_bytes = 64u << 20;
  // Bytes appended but not yet written that the queue may hold. When full,
  // Append blocks and TryAppend returns Busy: back-pressure, not memory.
  // (The batch being written is a second buffer of at most this size.)
  uint64_t queue_bytes_max = 32u << 20;
  // Largest payload accepted (<= kRecordPayloadBytesMax).
  uint32_t record_payload_bytes_max = kRecordPayloadBytesMax;
  // Group-commit linger: when fewer records are queued than the previous
  // batch held (completion-driven appenders re-issue in bursts), the flusher
  // waits up to this long - and never more than half the recent fdatasync
  // time - for the batch to fill before writing. 0 disables it.
  uint32_t linger_us_max = 100;
  // Preallocate each new segment to segment_bytes (fallocate) so syncs do
  // not also have to update the file size's metadata.
  bool preallocate = true;
  // File-system seam; nullptr means the real POSIX one. Not owned; must
  // outlive the Log.
  Env* env = nullptr;
  // Observability hook (may be empty): called once per group commit after
  // the batch's last fdatasync returned 0, before that batch's durable
  // callbacks, with the records and bytes (record frames) the batch made
  // durable and the nanoseconds spent in its fdatasync calls (steady clock,
  // including a wal.before_sync failpoint delay; normally one sync, two when
  // the batch sealed a full segment). Never called for a failed batch nor
  // during Open's replay. Runs on the flusher thread, so the same rules as
  // for DurableFn apply: short, non-blocking, thread-safe with respect to
  // whatever it touches, no Append (TryAppend is allowed); it must not throw.
  // What it captures must outlive the Log.
  std::function<void(uint64_t records, uint64_t bytes, uint64_t sync_ns)> on_sync = nullptr;
};

// Called once per recovered record during Open, in LSN order. A non-OK
// return stops Open with that status.
using ReplayFn = std::function<Status(Lsn lsn, uint8_t type, std::string_view payload)>;

// Called on the flusher thread when the record is durable (OK) or can never
// become durable (the sticky error).
using DurableFn = std::function<void(const Status&)>;

struct Stats {
  uint64_t syncs = 0;           // fdatasync calls that returned 0
  uint64_t records_synced = 0;  // records made durable
  uint64_t bytes_written = 0;
  uint64_t segments_created = 0;
  uint64_t segments_deleted = 0;
  uint64_t sync_micros_total =
      0;  // time in successful fdatasync calls (incl. wal.before_sync delays)
  uint64_t records_recovered = 0;  // records replayed by Open
  uint64_t torn_tails_cut = 0;     // 1 if Open cut a torn tail off the last segment
};

class Log {
 public:
  // Opens the log in `dir` (created if missing), replays every record with
  // `replay` (may be empty), cuts a torn tail of the last segment, and starts
  // the flusher thread. A bad record anywhere but the tail of the last
  // segment is Corruption naming the file and byte offset.
  // Before the first record is replayed, the directory and every segment are
  // synced and the segments' cached pages dropped, so every replayed record
  // is on the medium and read from it (docs/wal-format.md, "Recovery reads
  // the medium"); a failed sync there is IOError and SyncFailedInProcess().
  static Result<std::unique_ptr<Log>> Open(const Options& options, const std::string& dir,
                                           const ReplayFn& replay);

  // Flushes and syncs whatever is queued, stops the flusher, closes files.
  ~Log();
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  // Queues a record and returns its LSN. `on_durable` (may be empty) is
  // called once when the record is durable or has failed. Blocks while the
  // queue is full. Fails at once with the sticky error after a failure, and
  // with InvalidArgument for an oversized payload or type 0 (reserved).
  Result<Lsn> Append(uint8_t type, std::string_view payload, DurableFn on_durable = nullptr);

  // As Append, but returns Busy instead of blocking when the queue is full.
  Result<Lsn> TryAppend(uint8_t type, std::string_view payload, DurableFn on_durable = nullptr);

  // Blocks until `lsn` is durable (OK) or the log has failed (the error).
  // InvalidArgument for an LSN not handed out yet. After a failure, LSNs
  // that were durable before it still return OK.
  Status WaitDurable(Lsn lsn);

  // Highest LSN known durable; every LSN <= it is durable.
  Lsn durable_lsn() const;
  // Highest LSN handed out by Append (0 if none).
  Lsn last_lsn() const;
  // OK, or the sticky error after a failed write/sync.
  Status health() const;

  // Deletes every segment all of whose records are < `lsn`, then syncs the
  // directory. Never deletes the segment being written. Records below `lsn`
  // that share a segment with newer ones stay, and until the directory sync
  // returns a crash may bring deleted segments back: replay must tolerate
  // records below the truncation point.
  Status TruncateBefore(Lsn lsn);

  Stats stats() const;
  // Bytes appended and not yet taken by the flusher (what queue_bytes_max
  // bounds): grows while a write or sync is slow.
  uint64_t queued_bytes() const;

 private:
  class Impl;
  explicit Log(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// True once a sync of a log's files failed in this process: an fdatasync of
// a segment or an fsync of a log directory, while appending, creating or
// truncating segments or in Open, or `error` at wal.before_sync or
// wal.after_sync. Never reset. After a failed sync the kernel may report
// pages clean that never reached the disk, and a later sync returns 0, so
// the process can no longer tell what is durable: the node stops with its
// own exit code (node/fail_stop.h) and is not restarted blindly. Any thread.
bool SyncFailedInProcess();

}  // namespace dtx::wal
