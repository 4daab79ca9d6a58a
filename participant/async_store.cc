#include "participant/async_store.h"

#include <algorithm>
#include <utility>

#include "common/check.h"
#include "common/failpoint.h"

namespace dtx::participant {

namespace {
// What a queued write costs besides its key and value (the overlay entry, the
// job's copy): counted so that many empty writes still add up.
constexpr size_t kWriteOverheadBytes = 64;
}  // namespace

AsyncStore::AsyncStore(Store* inner, Post post, OnError on_error, Warmable* warm)
    : inner_(inner), post_(std::move(post)), on_error_(std::move(on_error)), warm_(warm) {}

AsyncStore::~AsyncStore() { Stop(); }

void AsyncStore::Start() {
  if (started_) return;
  started_ = true;
  worker_ = std::thread([this] { WorkerLoop(); });
  if (warm_ != nullptr) {
    reading_ = true;
    reader_ = std::thread([this] { ReaderLoop(); });
  }
}

void AsyncStore::Stop() {
  if (!worker_.joinable()) return;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  read_cv_.SignalAll();
  worker_.join();
  if (reader_.joinable()) reader_.join();
  reading_ = false;
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
      if (!watched_.empty()) {
        // A read of this key under way may return what LevelDB held before
        // this write: it must not be remembered (Warmed).
        auto wt = watched_.find(w.key);
        if (wt != watched_.end()) ++wt->second.applies;
      }
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

bool AsyncStore::InMemory(std::string_view key) const {
  if (!overlay_.empty() && overlay_.count(std::string(key)) != 0) return true;
  return warm_ == nullptr || warm_->IsCached(key);
}

bool AsyncStore::Warm(const std::vector<std::string_view>& keys, std::function<void()> done) {
  if (!reading_) return false;
  std::vector<std::string_view> cold;
  for (std::string_view key : keys) {
    if (!InMemory(key)) cold.push_back(key);
  }
  if (cold.empty()) return false;
  std::sort(cold.begin(), cold.end());
  cold.erase(std::unique(cold.begin(), cold.end()), cold.end());
  auto job = std::make_shared<ReadJob>();
  job->keys.reserve(cold.size());
  job->applies.reserve(cold.size());
  for (std::string_view key : cold) {
    Watched& w = watched_[std::string(key)];
    ++w.refs;
    job->keys.emplace_back(key);
    job->applies.push_back(w.applies);
  }
  job->done = std::move(done);
  read_backlog_keys_ += job->keys.size();
  {
    MutexLock lock(&mu_);
    reads_.push_back(std::move(job));
  }
  read_cv_.Signal();
  return true;
}

void AsyncStore::ReaderLoop() {
  std::deque<std::shared_ptr<ReadJob>> pending;  // taken from reads_, not read yet
  for (;;) {
    {
      MutexLock lock(&mu_);
      while (((reads_.empty() && pending.empty()) || batch_posted_) && !stopping_) {
        read_cv_.Wait(&lock);
      }
      if (stopping_) return;  // the reads still queued are dropped
      while (!reads_.empty()) {
        pending.push_back(std::move(reads_.front()));
        reads_.pop_front();
      }
      batch_posted_ = true;
    }
    // Requests in the order queued, until the batch's bytes are read. Only
    // the loop thread touches a job's entries in watched_ and its `done`;
    // the reader fills `items`.
    std::vector<std::shared_ptr<ReadJob>> batch;
    std::unordered_map<std::string_view, std::shared_ptr<const Item>> read;
    size_t bytes = 0;
    while (!pending.empty() && (batch.empty() || bytes < kReadBatchBytesMax)) {
      batch.push_back(std::move(pending.front()));
      pending.pop_front();
      ReadJob& job = *batch.back();
      job.items.reserve(job.keys.size());
      for (const std::string& key : job.keys) {
        auto it = read.find(key);
        if (it == read.end()) {
          auto got = warm_->ReadThrough(key);
          std::shared_ptr<const Item> item;
          if (got.ok()) {
            bytes += key.size() + got->value.size();
            item = std::make_shared<const Item>(*std::move(got));
          }
          it = read.emplace(key, std::move(item)).first;
        }
        job.items.push_back(it->second);
      }
    }
    // After the reads, before the loop hears of them: a `sleep` holds their
    // results as a slow disk would; `error` loses them (the loop reads again).
    if (!fp::Eval(fp::Point::kParticipantStoreRead).ok()) {
      for (auto& job : batch) job->items.assign(job->keys.size(), nullptr);
    }
    post_([this, batch = std::move(batch)] {
      for (const auto& job : batch) Warmed(*job);
      {
        MutexLock lock(&mu_);
        batch_posted_ = false;
      }
      read_cv_.Signal();
    });
  }
}

void AsyncStore::Warmed(ReadJob& job) {
  for (size_t i = 0; i < job.keys.size(); ++i) {
    auto it = watched_.find(job.keys[i]);
    DTX_CHECK(it != watched_.end());
    if (job.items[i] != nullptr && it->second.applies == job.applies[i]) {
      warm_->Remember(job.keys[i], *job.items[i]);
      ++keys_warmed_;
    }
    if (--it->second.refs == 0) watched_.erase(it);
  }
  read_backlog_keys_ -= job.keys.size();
  job.done();
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
