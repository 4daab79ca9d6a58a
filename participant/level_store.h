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
// Thread-safety: Get and Apply may be called from any one thread at a time
// (the participant calls them on its loop thread); WriteCheckpoint from one
// other thread concurrently with them (the participant's checkpoint worker).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "participant/core.h"

namespace leveldb {
class DB;
class Env;
}

namespace dtx::participant {

inline constexpr size_t kStoredVersionBytes = 8;
inline constexpr uint64_t kStoredTombstoneBit = uint64_t{1} << 63;

class LevelStore final : public Store {
 public:
  // Opens (creating if missing) the database in `dir`.
  static Result<std::unique_ptr<LevelStore>> Open(const std::string& dir);
  ~LevelStore() override;

  Result<Item> Get(std::string_view key) override;
  Status Apply(const std::vector<WriteOp>& writes, Version version) override;

  // The last checkpoint written; nullopt if none. Corruption if malformed.
  Result<std::optional<Checkpoint>> ReadCheckpoint();
  // Makes every Apply that returned before the call durable, then stores
  // `cp` with a synced write. An error means neither is known durable; the
  // caller must treat it like a failed WAL sync (stop).
  Status WriteCheckpoint(const Checkpoint& cp);

 private:
  class SyncTrackingEnv;
  LevelStore(std::unique_ptr<SyncTrackingEnv> env, leveldb::DB* db);
  std::unique_ptr<SyncTrackingEnv> env_;  // outlives db_
  std::unique_ptr<leveldb::DB> db_;
};

}  // namespace dtx::participant
