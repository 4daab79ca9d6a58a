#include "participant/async_store.h"

#include <utility>

#include "common/check.h"
#include "common/failpoint.h"

namespace dtx::participant {

namespace {
// What a queued write costs besides its key and value (the overlay entry, the
// job's copy): counted so that many empty writes still add up.
constexpr size_t kWriteOverheadBytes = 64;
}  // namespace

AsyncStore::AsyncStore(Store* inner, Post post, OnError on_error)
    : inner_(inner), post_(std::move(post)), on_error_(std::move(on_error)) {}

AsyncStore::~AsyncStore() { Stop(); }

void AsyncStore::Start() {
  if (started_) return;
  started_ = true;
  worker_ = std::thread([this] { WorkerLoop(); });
}

void AsyncStore::Stop() {
  if (!worker_.joinable()) return;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  worker_.join();
}

Result<Store::Item> AsyncStore::Get(std::string_view key) {
  if (!overlay_.empty()) {
    // (C++20's heterogeneous lookup needs a transparent hash; one string
    // copy per read of a key with writes in flight is not worth one.)
    auto it = overlay_.find(std::string(key));
    if (it != overlay_.end()) return it->second.item;
  }
  return inner_->Get(key);
}

Status AsyncStore::Apply(const std::vector<WriteOp>& writes, Version version) {
  if (!started_) return inner_->Apply(writes, version);
  return ApplyBatch({Commit{&writes, version}});
}

Status AsyncStore::ApplyBatch(const std::vector<Commit>& commits) {
  if (!started_) return inner_->ApplyBatch(commits);
  Job job;
  job.seq = next_seq_++;
  job.writes.reserve(commits.size());
  job.versions.reserve(commits.size());
  Queued q;
  q.seq = job.seq;
  for (const Commit& c : commits) {
    for (const WriteOp& w : *c.writes) {
      // The inner store skips a write no newer than what it holds (Apply is
      // idempotent by version); the overlay must agree with what it will hold.
      Version current = 0;
      auto it = overlay_.find(w.key);
      if (it != overlay_.end()) {
        current = it->second.item.version;
      } else {
        auto got = inner_->Get(w.key);
        if (!got.ok()) return got.status();
        current = got->version;
      }
      if (current >= c.version) continue;
      Item item{.found = w.value.has_value(), .value = w.value.value_or(""), .version = c.version};
      if (it == overlay_.end()) {
        it = overlay_.emplace(w.key, Pending{std::move(item), job.seq}).first;
        q.keys.push_back(it->first);
      } else {
        // A key two commits of this batch write is listed once: Drain
        // erases it at the first listing.
        if (it->second.seq != job.seq) q.keys.push_back(it->first);
        it->second = Pending{std::move(item), job.seq};
      }
      q.bytes += w.key.size() + (w.value ? w.value->size() : 0) + kWriteOverheadBytes;
    }
    job.writes.push_back(*c.writes);
    job.versions.push_back(c.version);
  }
  backlog_bytes_ += q.bytes;
  ++jobs_in_flight_;
  queued_.push_back(std::move(q));
  Enqueue(std::move(job));
  return Status::OK();
}

void AsyncStore::RunAfter(std::function<void()> job) {
  if (!started_) {
    job();
    return;
  }
  Enqueue(Job{.seq = 0, .writes = {}, .versions = {}, .run = std::move(job)});
}

void AsyncStore::Enqueue(Job job) {
  {
    MutexLock lock(&mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.Signal();
}

void AsyncStore::WorkerLoop() {
  for (;;) {
    Job job;
    {
      MutexLock lock(&mu_);
      while (jobs_.empty() && !stopping_) cv_.Wait(&lock);
      if (jobs_.empty()) return;  // stopping, nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    if (failed_.load()) continue;  // nothing after a failed apply
    if (job.run) {
      job.run();
      continue;
    }
    Status s = fp::Eval(fp::Point::kParticipantStoreApply);
    if (s.ok()) {
      std::vector<Commit> commits;
      commits.reserve(job.writes.size());
      for (size_t i = 0; i < job.writes.size(); ++i)
        commits.push_back(Commit{&job.writes[i], job.versions[i]});
      s = inner_->ApplyBatch(commits);
    }
    if (!s.ok()) {
      error_ = s;
      failed_.store(true);
    } else {
      written_seq_.store(job.seq);
    }
    // One post per run of batches the loop has not drained yet.
    if (!drain_posted_.exchange(true)) post_([this] { Drain(); });
  }
}

void AsyncStore::Drain() {
  drain_posted_.store(false);  // a batch written from here on posts again
  const uint64_t written = written_seq_.load();
  while (!queued_.empty() && queued_.front().seq <= written) {
    Queued& q = queued_.front();
    for (std::string_view key : q.keys) {
      auto it = overlay_.find(std::string(key));
      if (it != overlay_.end() && it->second.seq == q.seq) overlay_.erase(it);
    }
    backlog_bytes_ -= q.bytes;
    --jobs_in_flight_;
    ++batches_written_;
    queued_.pop_front();
  }
  if (failed_.load() && !error_reported_) {
    error_reported_ = true;
    on_error_(error_);
  }
}

}  // namespace dtx::participant
