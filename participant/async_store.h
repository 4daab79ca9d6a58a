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
// Reads (Warm): a key neither in the overlay nor in the inner store's row
// cache would be read from the disk by Get, on the loop. The runtime first
// calls Warm with the keys a request names; a reader thread reads the missing
// ones (Warmable::ReadThrough, caching nothing) and the loop, told on its own
// thread, puts each into the row cache (Remember) unless an apply of that key
// was queued since Warm: the reader may have read the key before that write
// reached LevelDB, and the worker caches what it writes, so what the reader
// saw would be older. Watched keys count their applies (`watched_`); an item
// is remembered only if the count did not move. The request then runs, and
// its Gets are answered from memory. A key the row cache dropped meanwhile is
// read on the loop as before: slower, never wrong. The reader runs apart from
// the worker, so reads do not wait behind a stalled write. A key that several
// queued requests name is read once per batch; a batch is bounded in bytes
// (kReadBatchBytesMax) and only one is handed to the loop at a time.
//
// Before Start() (recovery) every call goes straight to the inner store on
// the calling thread; replay needs no overlay, and Warm never waits.
//
// Threading: Get, Apply, ApplyBatch, RunAfter, Warm, InMemory, the counters
// and Start on the loop thread; `post` is called from the worker and the
// reader and must be thread-safe (the runtime's posts to its loop, guarded by
// its lifetime token). Stop() (or the destructor) runs the writes still
// queued, drops the reads still queued (their `done` never runs), then joins
// both threads.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
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

// Past this many reads waiting for the reader (or held for reply room), the
// runtime refuses a Read of a key that is not in memory (UNAVAILABLE,
// "overloaded"; participant/runtime.cc).
inline constexpr size_t kReadBacklogKeysMax = 16384;
// The reader stops adding requests to a batch once it read this many bytes
// of keys and values (at least one request per batch), and reads the next
// batch only once the loop took the last. The loop puts what it read into
// the row cache (32 MiB, participant/level_store.h), so more would only push
// the first ones out before their calls ran; and it bounds what the reader
// holds, whatever the values' size.
inline constexpr size_t kReadBatchBytesMax = size_t{8} << 20;

// The inner store's side of AsyncStore::Warm (LevelStore: its row cache and
// LevelDB).
class Warmable {
 public:
  virtual ~Warmable() = default;
  // Loop thread: a Get of `key` would be answered without reading the disk.
  virtual bool IsCached(std::string_view key) const = 0;
  // The reader thread: the key's item as the store holds it; caches nothing.
  virtual Result<Store::Item> ReadThrough(std::string_view key) = 0;
  // Loop thread: `item` is what `key` holds now; Get answers it from memory.
  virtual void Remember(std::string_view key, const Store::Item& item) = 0;
};

class AsyncStore final : public Store {
 public:
  using Post = std::function<void(std::function<void()>)>;
  using OnError = std::function<void(const Status&)>;

  // `inner` (and `warm`, if any: usually the same object) must outlive this
  // object. Without `warm`, Warm never waits.
  AsyncStore(Store* inner, Post post, OnError on_error, Warmable* warm = nullptr);
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

  // False: every key of `keys` reads from memory now (the overlay or the row
  // cache), or there is no reader (no Warmable, before Start, after Stop);
  // `done` is dropped. True: the reader reads the others, and `done` runs
  // later on the loop thread, once they are in the row cache (see the header).
  // Failed reads are left out (the Get on the loop reads again and reports).
  bool Warm(const std::vector<std::string_view>& keys, std::function<void()> done);
  // A Get of `key` would not read the disk.
  bool InMemory(std::string_view key) const;
  // Keys queued for the reader or being read; keys read in all.
  size_t read_backlog_keys() const { return read_backlog_keys_; }
  uint64_t keys_warmed() const { return keys_warmed_; }

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

  // Keys the reader reads for one Warm, and what it found.
  struct ReadJob {
    std::vector<std::string> keys;
    std::vector<uint64_t> applies;  // watched_[key].applies when queued
    std::vector<std::shared_ptr<const Item>> items;  // null: the read failed
    std::function<void()> done;
  };
  struct Watched {
    size_t refs = 0;       // ReadJobs reading the key
    uint64_t applies = 0;  // applies of the key queued since it is watched
  };

  void Enqueue(Job job);
  void WorkerLoop();
  void ReaderLoop();
  // Loop thread: a ReadJob came back.
  void Warmed(ReadJob& job);
  // Loop thread: drops from the overlay what the worker has written.
  void Drain();

  Store* const inner_;
  const Post post_;
  const OnError on_error_;
  Warmable* const warm_;
  bool started_ = false;
  bool reading_ = false;  // the reader runs (Start to Stop)

  // Loop thread.
  std::unordered_map<std::string, Pending> overlay_;
  std::deque<Queued> queued_;
  uint64_t next_seq_ = 1;
  size_t backlog_bytes_ = 0;
  size_t jobs_in_flight_ = 0;
  uint64_t batches_written_ = 0;
  bool error_reported_ = false;
  std::unordered_map<std::string, Watched> watched_;
  size_t read_backlog_keys_ = 0;
  uint64_t keys_warmed_ = 0;

  // Shared with the worker.
  Mutex mu_;
  CondVar cv_;
  std::deque<Job> jobs_ GUARDED_BY(mu_);
  CondVar read_cv_;
  std::deque<std::shared_ptr<ReadJob>> reads_ GUARDED_BY(mu_);
  bool batch_posted_ GUARDED_BY(mu_) = false;  // a batch of reads waits for the loop
  bool stopping_ GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> written_seq_{0};  // every apply up to it is written
  std::atomic<bool> drain_posted_{false};
  Status error_;  // set by the worker before failed_; read after it
  std::atomic<bool> failed_{false};
  std::thread worker_;
  std::thread reader_;
};

}  // namespace dtx::participant
