// The participant's committed state on LevelDB (NODEDIR/data).
//
// Each LevelDB value is a 64-bit little-endian word followed by the value
// bytes. The word is the key's version; its top bit set marks a tombstone (a
// deleted key keeps its version; no value bytes follow). Data written before
// tombstones existed reads the same: versions are positive int64s, so the bit
// was always clear. Writes are not synced: the WAL's
// COMMIT records hold durability, and replay re-applies them (Apply is
// idempotent by version), so LevelDB losing its unsynced tail is harmless.
//
// Checkpoints (records.md "Checkpoint") live under the empty key, never a
// user key. WriteCheckpoint makes every LevelDB write made before it durable
// and only then stores the checkpoint durably. LevelDB's own sync covers just
// its current log file, and a memtable switch closes the previous log without
// syncing it, so the store opens LevelDB with an Env that remembers every log
// file it creates; WriteCheckpoint fsyncs those still present (and the
// directory) before its synced write, which then has little left to sync.
//
// Integrity: every read asks LevelDB to verify the checksums of the blocks
// it reads (ReadOptions::verify_checksums), and the database is opened with
// paranoid_checks (its log and MANIFEST at open, compaction inputs). A
// Corruption from LevelDB is returned as Status::Corruption naming the
// directory, what was being read and - found by a checksum scan of the
// sstables, since LevelDB's message names no file - the damaged file; never
// as "not found" or as a value. The participant stops on it (core.h
// Store::Get). The checkpoint carries a CRC of its own (records.md).
//
// Row cache: the participant is LevelDB's only writer, so the items it read
// or wrote last are kept in a bounded LRU (LevelDB's own leveldb::Cache,
// kRowCacheBytes) and Get answers from it: a transaction's key is read by
// Read, again by the vote's validation and again by the apply's version check
// (three LevelDB lookups, each through the memtable and level-0 tables,
// were 16 % of a participant's CPU under the bank workload). Apply writes
// LevelDB first and then the cache; a failed write erases the keys from it.
// Replay bypasses it (and empties it at EndReplay). What it holds was
// checksum-verified when read, or written by this process. Tables carry
// Bloom filters (10 bits per key), so a lookup skips the level-0 tables that
// lack the key.
//
// Thread-safety: Apply, ApplyBatch and WriteCheckpoint from one thread at a
// time (the participant's store worker, participant/async_store.h); Get,
// IsCached and Remember from one other thread concurrently with them (the
// loop thread), for keys no write under way touches - AsyncStore never reads
// a key from here while a write of it is queued or running, so a Get cannot
// cache an item older than one just written; ReadThrough from any thread (the
// store reader: AsyncStore remembers what it read only if no write of the key
// was queued meanwhile). LevelDB and the row cache are thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "participant/async_store.h"
#include "participant/core.h"

namespace leveldb {
class Cache;
class DB;
class FilterPolicy;
class Status;
class WriteBatch;
}  // namespace leveldb

namespace dtx::participant {

inline constexpr size_t kStoredVersionBytes = 8;
inline constexpr uint64_t kStoredTombstoneBit = uint64_t{1} << 63;
// Replay mode writes its batch to LevelDB once it holds this many bytes.
inline constexpr size_t kReplayBatchBytesMax = 4u << 20;
// After a Corruption, the sstables are scanned (checksums verified) to name
// the damaged one, up to this many bytes of them; past it the message says
// the file was not located.
inline constexpr uint64_t kCorruptionScanBytesMax = uint64_t{256} << 20;
// The row cache's bound: keys, values and bookkeeping of the items it holds.
inline constexpr size_t kRowCacheBytes = size_t{32} << 20;

class LevelStore final : public Store, public Warmable {
 public:
  // Opens (creating if missing) the database in `dir`.
  static Result<std::unique_ptr<LevelStore>> Open(const std::string& dir);
  ~LevelStore() override;

  Result<Item> Get(std::string_view key) override;
  // Warmable (participant/async_store.h): the row cache holds `key`; a
  // LevelDB read of it that caches nothing (any thread, not in replay mode);
  // `item` into the row cache.
  bool IsCached(std::string_view key) const override;
  Result<Item> ReadThrough(std::string_view key) override;
  void Remember(std::string_view key, const Item& item) override;
  Status Apply(const std::vector<WriteOp>& writes, Version version) override;
  // One LevelDB write (one WriteBatch, one write(2) to LevelDB's log) for
  // all of `commits`. Each key's stored version is read from LevelDB, not
  // from the batch: two commits of one batch writing a key both put it, in
  // version order, and the later one wins, as one Apply after the other.
  Status ApplyBatch(const std::vector<Commit>& commits) override;

  // Replay mode (recovery, before the store serves anything): Apply appends
  // to one WriteBatch, written to LevelDB every kReplayBatchBytesMax, instead
  // of one LevelDB write (and one log write(2)) per commit, and skips the
  // per-key version check (a LevelDB read per written key). That is safe because
  // replay applies every COMMIT from the checkpoint on, in LSN order, which is
  // version order, and LevelDB never holds a write the WAL does not (a COMMIT
  // is applied only once durable): the last write of each key wins, as it did
  // before the crash. EndReplay writes what is left; Get in replay mode
  // writes the batch out first.
  void BeginReplay();
  Status EndReplay();

  // The last checkpoint written; nullopt if none. Corruption ("checkpoint in
  // DIR ... is corrupt: ...") if LevelDB's checksums or the checkpoint's CRC
  // fail, or it is malformed.
  Result<std::optional<Checkpoint>> ReadCheckpoint();
  // Makes every Apply that returned before the call durable, then stores
  // `cp` with a synced write. An error means neither is known durable; the
  // caller must treat it like a failed WAL sync (stop).
  Status WriteCheckpoint(const Checkpoint& cp);

 private:
  class SyncTrackingEnv;
  LevelStore(std::string dir, std::unique_ptr<SyncTrackingEnv> env,
             std::unique_ptr<const leveldb::FilterPolicy> filter, leveldb::DB* db);
  // The row cache (see the header): what it holds for `key`, if anything;
  // `item` as the key's content now; `key` forgotten.
  std::optional<Item> Cached(std::string_view key) const;
  void Cache(std::string_view key, const Item& item);
  void Uncache(std::string_view key);
  Status FlushReplayBatch();
  // Puts into `batch` the writes of one commit the store does not hold yet,
  // and appends each to `put` (its key, viewing `writes`, and the item it
  // makes) for the row cache.
  Status AddToBatch(const std::vector<WriteOp>& writes, Version version,
                    leveldb::WriteBatch* batch, std::vector<std::pair<std::string_view, Item>>* put);
  // A LevelDB error as a Status; a Corruption names the store, `what` and
  // the damaged sstable (LocateCorruptTable). Any thread.
  Status Error(const leveldb::Status& s, std::string_view what) const;

  const std::string dir_;
  std::unique_ptr<SyncTrackingEnv> env_;                 // outlives db_
  std::unique_ptr<const leveldb::FilterPolicy> filter_;  // outlives db_
  std::unique_ptr<leveldb::DB> db_;
  std::unique_ptr<leveldb::Cache> rows_;  // the row cache
  bool replaying_ = false;
  std::unique_ptr<leveldb::WriteBatch> replay_batch_;  // replay mode only
  std::string replay_scratch_;                         // one stored value, reused
};

}  // namespace dtx::participant
