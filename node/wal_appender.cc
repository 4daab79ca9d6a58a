#include "node/wal_appender.h"

#include <utility>

#include "common/check.h"
#include "node/fail_stop.h"

namespace dtx::node {

WalAppender::WalAppender(EventLoop* loop, std::string what) : loop_(loop), what_(std::move(what)) {}

WalAppender::~WalAppender() { Close(); }

Status WalAppender::Open(const wal::Options& options, const std::string& dir,
                         const wal::ReplayFn& replay) {
  Close();
  Result<std::unique_ptr<wal::Log>> log = wal::Log::Open(options, dir, replay);
  if (!log.ok()) return log.status();
  log_ = std::move(*log);
  return Status::OK();
}

void WalAppender::Close() {
  if (log_ == nullptr) return;
  // First the token, then the log: ~Log runs the last durable callbacks,
  // whose notices must find the old lifetime over.
  alive_.Renew();
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
  // hands the LSN out only when Append returns. The notice is Post()ed from
  // the flusher and so runs on this (the loop) thread after the current
  // callback - i.e. after `notice->lsn` is set below - never before.
  struct Notice {
    wal::Lsn lsn = 0;
    DurableFn fn;
  };
  std::shared_ptr<Notice> notice;
  if (on_durable) notice = std::make_shared<Notice>(Notice{0, std::move(on_durable)});
  // Captures `this`: the callback runs at the latest inside ~Log, which
  // Close() runs before the appender goes.
  wal::DurableFn done = [this, watch = alive_.watch(), notice,
                         on_synced = std::move(on_synced)](const Status& s) {
    if (!s.ok()) FailStop(what_ + ": record did not become durable: " + s.ToString());
    if (on_synced) on_synced();
    if (notice == nullptr) return;
    loop_->Post([watch, notice] {
      if (watch.expired()) return;
      notice->fn(notice->lsn);
    });
  };
  Result<wal::Lsn> lsn = log_->Append(type, payload, std::move(done));
  if (!lsn.ok()) FailStop(what_ + ": append failed: " + lsn.status().ToString());
  if (notice != nullptr) notice->lsn = *lsn;
  return *lsn;
}

}  // namespace dtx::node
