#include "participant/level_store.h"

#include <leveldb/db.h>
#include <leveldb/write_batch.h>

namespace dtx::participant {

namespace {

Status FromLevel(const leveldb::Status& s, std::string_view what) {
  if (s.ok()) return Status::OK();
  std::string m = std::string(what) + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(m);
  if (s.IsNotFound()) return Status::NotFound(m);
  return Status::IOError(m);
}

std::string EncodeStored(Version version, bool tombstone, std::string_view value) {
  DTX_CHECK(version > 0);
  DTX_CHECK(!tombstone || value.empty());
  std::string out;
  out.reserve(kStoredVersionBytes + value.size());
  uint64_t v = static_cast<uint64_t>(version) | (tombstone ? kStoredTombstoneBit : 0);
  for (size_t i = 0; i < kStoredVersionBytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  out.append(value);
  return out;
}

Result<Store::Item> DecodeStored(std::string_view key, const std::string& raw) {
  if (raw.size() < kStoredVersionBytes) {
    return Status::Corruption("stored value of key (" + std::to_string(key.size()) + " bytes) has " +
                              std::to_string(raw.size()) + " bytes, less than its version");
  }
  uint64_t v = 0;
  for (size_t i = 0; i < kStoredVersionBytes; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(raw[i])) << (8 * i);
  Store::Item item;
  item.found = (v & kStoredTombstoneBit) == 0;
  item.version = static_cast<Version>(v & ~kStoredTombstoneBit);
  if (item.version <= 0) return Status::Corruption("stored version " + std::to_string(item.version) + " is not positive");
  if (!item.found && raw.size() != kStoredVersionBytes) {
    return Status::Corruption("tombstone of key (" + std::to_string(key.size()) + " bytes) carries " +
                              std::to_string(raw.size() - kStoredVersionBytes) + " value bytes");
  }
  item.value = raw.substr(kStoredVersionBytes);
  return item;
}

}  // namespace

Result<std::unique_ptr<LevelStore>> LevelStore::Open(const std::string& dir) {
  leveldb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, dir, &db);
  if (!s.ok()) return FromLevel(s, "opening LevelDB in " + dir);
  return std::unique_ptr<LevelStore>(new LevelStore(db));
}

LevelStore::LevelStore(leveldb::DB* db) : db_(db) {}
LevelStore::~LevelStore() = default;

Result<Store::Item> LevelStore::Get(std::string_view key) {
  std::string raw;
  leveldb::Status s = db_->Get(leveldb::ReadOptions(), leveldb::Slice(key.data(), key.size()), &raw);
  if (s.IsNotFound()) return Item{};
  if (!s.ok()) return FromLevel(s, "LevelDB get");
  return DecodeStored(key, raw);
}

Status LevelStore::Apply(const std::vector<WriteOp>& writes, Version version) {
  DTX_CHECK(version > 0);
  leveldb::WriteBatch batch;
  size_t changed = 0;
  for (const WriteOp& w : writes) {
    auto cur = Get(w.key);
    if (!cur.ok()) return cur.status();
    if (cur->version >= version) continue;  // already applied (replay); tombstones too
    leveldb::Slice key(w.key.data(), w.key.size());
    batch.Put(key, EncodeStored(version, !w.value.has_value(), w.value ? std::string_view(*w.value) : std::string_view()));
    ++changed;
  }
  if (changed == 0) return Status::OK();
  leveldb::WriteOptions wo;
  wo.sync = false;  // the WAL holds durability; see the header
  return FromLevel(db_->Write(wo, &batch), "LevelDB write");
}

}  // namespace dtx::participant
