// RecordLog: where a node's glue appends its records - the disk seam. The
// real one is WalAppender (a wal::Log on the event loop); a simulator can put
// a simulated disk behind the same interface.
//
// WalAppender owns the node's wal::Log. Append() queues a record; a record
// somebody waits for (a forced one: PREPARE/COMMIT, DECISION, EPOCH) passes
// an `on_durable` callback, which runs on the loop thread with the record's
// LSN once the fdatasync covering it returned 0 - the only way the glue
// learns that a record is durable ("save to stable storage BEFORE messages
// are sent"). A failed append or sync is fail-stop (node/fail_stop.h): the
// WAL's error is sticky, nothing is retried, the node exits with status 1,
// or 74 when a sync failed (node::StopExitCode()).
//
// Batches: the records one sync made durable reach the loop together - the
// flusher queues their notices in an inbox and wakes the loop once (one
// Post) per batch, not once per record - and run back to back with `more`
// set on all but the last, so a receiver may leave its work to the last one
// (the participant applies the batch's commits to its store in one write:
// participant/driver.h). The flusher may deliver one sync's records in two
// batches when the loop drains the inbox between them; never the reverse.
//
// Lifetime: the wal::Log's durable callbacks run on its flusher thread and
// hand notices to the loop; the notices carry a watch of the appender's own
// lifetime token, so a notice of a log that was replaced (Open() again, the
// coordinator's reload after a step-down) or closed does nothing, and a
// batch stops at the first notice after one of its callbacks closed the
// log. Callbacks given to Append must stay valid while the appender is open.
//
// Threading: every method runs on the loop thread (Append checks it); the
// wal::Log that log() returns may be used from other threads for its
// thread-safe methods (the participant's checkpoint worker truncates through
// it) while the appender stays open.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/event_loop.h"
#include "common/status.h"
#include "common/thread_annotations.h"
#include "node/lifetime.h"
#include "wal/wal.h"

namespace dtx::node {

// --wal-segment-bytes of both node binaries: the size of a WAL segment
// (truncation deletes whole segments). The bound each accepts, and the check.
inline constexpr uint64_t kWalSegmentBytesMax = uint64_t{1} << 30;
inline constexpr const char* kWalSegmentBytesFlagHelp =
    "WAL segment size in bytes; truncation deletes whole segments";
// InvalidArgument naming the flag and its range, or OK.
Status CheckWalSegmentBytes(uint64_t bytes);
// --carry-forward-records of both node binaries (docs/design.md "Long
// outages"): the coordinator's CoreOptions::decision_relog_lsn_gap, the
// participant's CoreOptions::prepare_relog_lsn_gap.
inline constexpr uint64_t kCarryForwardRecordsDefault = 100000;
inline constexpr const char* kCarryForwardFlagHelp =
    "a record the log is kept for (an open DECISION at a coordinator, a PREPARE in doubt at a "
    "participant) this many records behind the head is written again near it, so that the log "
    "is truncated past it and stays within about this many records whatever is down; 0: never";
// The help of dtx_carried_forward_total, on both node kinds.
inline constexpr const char* kCarriedForwardHelp =
    "Records written again near the head of the log so it could be truncated past the first "
    "copy (--carry-forward-records): open DECISIONs at a coordinator, PREPAREs in doubt at a "
    "participant. Climbing: something the log is kept for has been waiting long (a node down).";

// The retry_after_ms of an "overloaded" refusal (idl/dtx.thrift DtxError):
// about one admission interval (coordinator/admission.h) or one slow sync.
inline constexpr int32_t kOverloadRetryAfterMs = 100;

class RecordLog {
 public:
  // Runs on the loop thread with the LSN of the record now durable. `more`:
  // the notice of another record made durable with it runs right after this
  // one (see WalAppender "Batches"); false on the last of a batch.
  using DurableFn = std::function<void(wal::Lsn lsn, bool more)>;
  // Runs on the writer's own thread (the WAL flusher) as soon as the record
  // is durable, before any notice reaches the loop: short, non-blocking,
  // thread-safe (e.g. obs::TraceRing::Record).
  using SyncedFn = std::function<void()>;

  virtual ~RecordLog() = default;
  // Appends a record and returns its LSN (never fails: a failure stops the
  // node). `on_durable` may be empty for a record nobody waits for.
  virtual wal::Lsn Append(uint8_t type, std::string_view payload, DurableFn on_durable,
                          SyncedFn on_synced = nullptr) = 0;
};

class WalAppender final : public RecordLog {
 public:
  // `what` names the log in fail-stop messages ("decision log", "WAL").
  // `loop` must outlive the appender.
  WalAppender(EventLoop* loop, std::string what);
  ~WalAppender() override;  // Close()
  WalAppender(const WalAppender&) = delete;
  WalAppender& operator=(const WalAppender&) = delete;

  // Opens the wal::Log in `dir`, replaying every record into `replay`
  // (wal::Log::Open). An open log is closed first (see Close()).
  Status Open(const wal::Options& options, const std::string& dir, const wal::ReplayFn& replay);
  // Drops the notices still in flight, then closes the log (which syncs what
  // is queued; those records' on_synced still run, their on_durable not).
  // Safe to call twice.
  void Close();
  bool is_open() const { return log_ != nullptr; }

  wal::Lsn Append(uint8_t type, std::string_view payload, DurableFn on_durable,
                  SyncedFn on_synced = nullptr) override;

  // The open log (checked), for WaitDurable, TruncateBefore and stats.
  wal::Log& log() const;

  // Non-empty while the log's queue holds more than half its
  // queue_bytes_max (wal::Log::queued_bytes: a sync or write is slow): the
  // words for an UNAVAILABLE "overloaded" refusal. The nodes take on no new
  // transaction then, so Append - which blocks on a full queue - has the
  // other half for the records of what they already promised and never
  // blocks the loop (docs/design.md "The loop never blocks").
  std::string Backlog() const;

 private:
  struct Notice {
    wal::Lsn lsn = 0;
    DurableFn fn;
  };
  // Notices of durable records, from the flusher to the loop thread.
  struct Inbox {
    Mutex mu;
    std::vector<std::shared_ptr<Notice>> ready GUARDED_BY(mu);
  };
  // Flusher thread: queues `notice`; the first into an empty inbox wakes
  // the loop to Deliver. `watch`, `inbox`: of the lifetime that appended it.
  void Queue(const LifetimeToken::Watch& watch, const std::shared_ptr<Inbox>& inbox,
             std::shared_ptr<Notice> notice);
  // Loop thread: runs every queued notice, in LSN order, while `watch` lives.
  static void Deliver(const LifetimeToken::Watch& watch, Inbox* inbox);

  EventLoop* const loop_;
  const std::string what_;
  std::unique_ptr<wal::Log> log_;
  uint64_t queue_bytes_max_ = 0;  // of the open log's options
  LifetimeToken alive_;  // renewed by every Close()
  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();  // renewed with alive_
};

}  // namespace dtx::node
