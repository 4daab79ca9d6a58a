// AsyncStore: the participant's Store with its writes off the loop thread, so
// a slow disk or a LevelDB write stall delays the store, never the loop that
// answers heartbeats and runs timers (docs/design.md "The loop never blocks").
//
// The core applies the commits one WAL sync made durable with ApplyBatch and
// then answers them and releases their locks (participant/core.h
// FinishCommits). Here ApplyBatch records what the commits write in an
// overlay (key -> the item it will hold) and queues the batch for a worker
// thread, which writes it to the inner store and tells the loop; the loop
// then drops the batch's keys from the overlay. Get answers from the overlay
// first, so a read or a vote's validation after ApplyBatch returned sees the
// writes whether LevelDB holds them yet or not: the store reads exactly as if
// every apply had been made on the spot.
//
// Why the inner store may be read on the loop while the worker writes to it:
// a key in the overlay is never read from the inner store, and a key leaves
// the overlay only after the worker's write of it returned (the loop learns it
// from a post made after). So the two threads never touch one key at once,
// and LevelDB and the row cache are safe for different keys from two threads
// (participant/level_store.h "Thread-safety").
//
// Order: the worker runs jobs one at a time in the order queued. RunAfter
// queues other work behind every apply queued before it - the checkpoint,
// whose LevelStore::WriteCheckpoint makes "every Apply that returned before
// the call" durable and must find them written.
//
// Errors: a failed apply (or `error` armed at participant.store.apply) is
// handed once to `on_error` on the loop thread, and the worker runs no job
// after it - no checkpoint can claim what was not written. The runtime stops
// the node; the WAL holds the commits and replay applies them again.
//
// Backlog: backlog_bytes() counts the keys and values queued and not yet
// written. The runtime refuses new PREPAREs that write while it is past
// kStoreBacklogBytesMax (participant/runtime.cc), so it stays bounded: past
// the bound only the COMMITs of transactions already prepared add to it.
//
// Before Start() (recovery) every call goes straight to the inner store on
// the calling thread; replay needs no overlay.
//
// Threading: Get, Apply, ApplyBatch, RunAfter, backlog_bytes and Start on the
// loop thread; `post` is called from the worker and must be thread-safe (the
// runtime's posts to its loop, guarded by its lifetime token). Stop() (or the
// destructor) runs the jobs still queued, then joins the worker.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/thread_annotations.h"
#include "participant/core.h"

namespace dtx::participant {

// Past this many bytes of committed writes waiting for the worker, the
// runtime takes on no new PREPARE that writes (UNAVAILABLE, "overloaded").
inline constexpr size_t kStoreBacklogBytesMax = size_t{64} << 20;

class AsyncStore final : public Store {
 public:
  using Post = std::function<void(std::function<void()>)>;
  using OnError = std::function<void(const Status&)>;

  // `inner` must outlive this object.
  AsyncStore(Store* inner, Post post, OnError on_error);
  ~AsyncStore() override;  // Stop()
  AsyncStore(const AsyncStore&) = delete;
  AsyncStore& operator=(const AsyncStore&) = delete;

  // From now on applies are queued for the worker (started here).
  void Start();
  // Runs what is queued, then joins the worker. Safe to call twice.
  void Stop();

  Result<Item> Get(std::string_view key) override;
  Status Apply(const std::vector<WriteOp>& writes, Version version) override;
  // Queued (after Start): OK unless reading a key's current version failed.
  Status ApplyBatch(const std::vector<Commit>& commits) override;

  // Runs `job` on the worker after every apply queued so far was written
  // (not at all after a failed apply). Before Start: on the calling thread.
  void RunAfter(std::function<void()> job);

  size_t backlog_bytes() const { return backlog_bytes_; }
  // Applies queued and not yet written (batches), and written in all.
  size_t backlog_batches() const { return jobs_in_flight_; }
  uint64_t batches_written() const { return batches_written_; }

 private:
  struct Job {
    uint64_t seq = 0;
    // An apply: the commits (copied: the core's vectors do not outlive the
    // call); none for a RunAfter job.
    std::vector<std::vector<WriteOp>> writes;
    std::vector<Version> versions;
    std::function<void()> run;  // a RunAfter job
  };
  // What the loop keeps of a queued apply until it is written.
  struct Queued {
    uint64_t seq = 0;
    size_t bytes = 0;
    std::vector<std::string_view> keys;  // views of overlay_'s keys
  };
  struct Pending {
    Item item;
    uint64_t seq = 0;  // the apply that last wrote the key
  };

  void Enqueue(Job job);
  void WorkerLoop();
  // Loop thread: drops from the overlay what the worker has written.
  void Drain();

  Store* const inner_;
  const Post post_;
  const OnError on_error_;
  bool started_ = false;

  // Loop thread.
  std::unordered_map<std::string, Pending> overlay_;
  std::deque<Queued> queued_;
  uint64_t next_seq_ = 1;
  size_t backlog_bytes_ = 0;
  size_t jobs_in_flight_ = 0;
  uint64_t batches_written_ = 0;
  bool error_reported_ = false;

  // Shared with the worker.
  Mutex mu_;
  CondVar cv_;
  std::deque<Job> jobs_ GUARDED_BY(mu_);
  bool stopping_ GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> written_seq_{0};  // every apply up to it is written
  std::atomic<bool> drain_posted_{false};
  Status error_;  // set by the worker before failed_; read after it
  std::atomic<bool> failed_{false};
  std::thread worker_;
};

}  // namespace dtx::participant
