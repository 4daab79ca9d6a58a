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
// Thread-safety: Get and Apply may be called from any one thread at a time
// (the participant calls them on its loop thread).
#pragma once

#include <memory>
#include <string>

#include "participant/core.h"

namespace leveldb {
class DB;
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

 private:
  explicit LevelStore(leveldb::DB* db);
  std::unique_ptr<leveldb::DB> db_;
};

}  // namespace dtx::participant
