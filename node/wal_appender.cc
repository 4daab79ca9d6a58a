#include "node/wal_appender.h"

#include <utility>

#include "common/check.h"
#include "node/fail_stop.h"
#include "wal/format.h"

namespace dtx::node {

WalAppender::WalAppender(EventLoop* loop, std::string what) : loop_(loop), what_(std::move(what)) {}

WalAppender::~WalAppender() { Close(); }

Status WalAppender::Open(const wal::Options& options, const std::string& dir,
                         const wal::ReplayFn& replay) {
  Close();
  Result<std::unique_ptr<wal::Log>> log = wal::Log::Open(options, dir, replay);
  if (!log.ok()) return log.status();
  log_ = std::move(*log);
  queue_bytes_max_ = options.queue_bytes_max;
  return Status::OK();
}

Status CheckWalSegmentBytes(uint64_t bytes) {
  if (bytes >= wal::format::kSegmentBytesMin && bytes <= kWalSegmentBytesMax) return Status::OK();
  return Status::InvalidArgument("--wal-segment-bytes must be in [" +
                                 std::to_string(wal::format::kSegmentBytesMin) + ", " +
                                 std::to_string(kWalSegmentBytesMax) + "]");
}

std::string WalAppender::Backlog() const {
  if (log_ == nullptr) return {};
  const uint64_t queued = log_->queued_bytes();
  if (queued <= queue_bytes_max_ / 2) return {};
  return "overloaded: " + std::to_string(queued >> 10) + " KiB of " + what_ +
         " records wait for the disk (new transactions are refused past " +
         std::to_string((queue_bytes_max_ / 2) >> 10) + " KiB); retry later";
}

void WalAppender::Close() {
  if (log_ == nullptr) return;
  // First the token, then the log: ~Log runs the last durable callbacks,
  // whose notices must find the old lifetime over.
  alive_.Renew();
  inbox_ = std::make_shared<Inbox>();
  log_.reset();
}

wal::Log& WalAppender::log() const {
  DTX_CHECK(log_ != nullptr);
  return *log_;
}

wal::Lsn WalAppender::Append(uint8_t type, std::string_view payload, DurableFn on_durable,
                             SyncedFn on_synced) {
  DTX_CHECK(log_ != nullptr);
  DTX_CHECK(loop_->InLoopThread());
  // wal::Log tells a record's callback only "durable", not its LSN, and
  // hands the LSN out only when Append returns. The notice is delivered on
  // this (the loop) thread after the current callback - i.e. after
  // `notice->lsn` is set below - never before.
  std::shared_ptr<Notice> notice;
  if (on_durable) notice = std::make_shared<Notice>(Notice{0, std::move(on_durable)});
  // Captures `this`: the callback runs at the latest inside ~Log, which
  // Close() runs before the appender goes.
  wal::DurableFn done = [this, watch = alive_.watch(), inbox = inbox_, notice,
                         on_synced = std::move(on_synced)](const Status& s) mutable {
    if (!s.ok()) FailStop(what_ + ": record did not become durable: " + s.ToString());
    if (on_synced) on_synced();
    if (notice != nullptr) Queue(watch, inbox, std::move(notice));
  };
  Result<wal::Lsn> lsn = log_->Append(type, payload, std::move(done));
  if (!lsn.ok()) FailStop(what_ + ": append failed: " + lsn.status().ToString());
  if (notice != nullptr) notice->lsn = *lsn;
  return *lsn;
}

void WalAppender::Queue(const LifetimeToken::Watch& watch, const std::shared_ptr<Inbox>& inbox,
                        std::shared_ptr<Notice> notice) {
  bool wake = false;
  {
    MutexLock lock(&inbox->mu);
    wake = inbox->ready.empty();
    inbox->ready.push_back(std::move(notice));
  }
  // A notice queued after this Post but before Deliver swaps the inbox
  // rides along; one queued after the swap finds the inbox empty and posts.
  if (wake) loop_->Post([watch, inbox] { Deliver(watch, inbox.get()); });
}

void WalAppender::Deliver(const LifetimeToken::Watch& watch, Inbox* inbox) {
  std::vector<std::shared_ptr<Notice>> batch;
  {
    MutexLock lock(&inbox->mu);
    batch.swap(inbox->ready);
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (watch.expired()) return;  // closed: by Close(), or by a notice of this batch
    batch[i]->fn(batch[i]->lsn, i + 1 < batch.size());
  }
}

}  // namespace dtx::node
