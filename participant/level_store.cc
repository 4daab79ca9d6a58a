#include "participant/level_store.h"

#include <fcntl.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/write_batch.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "common/thread_annotations.h"

namespace dtx::participant {

namespace {

Status FromLevel(const leveldb::Status& s, std::string_view what) {
  if (s.ok()) return Status::OK();
  std::string m = std::string(what) + ": " + s.ToString();
  if (s.IsCorruption()) return Status::Corruption(m);
  if (s.IsNotFound()) return Status::NotFound(m);
  return Status::IOError(m);
}

// Writes the stored form into `*out` (reusing its capacity).
void EncodeStoredTo(Version version, bool tombstone, std::string_view value, std::string* out) {
  DTX_CHECK(version > 0);
  DTX_CHECK(!tombstone || value.empty());
  char word[kStoredVersionBytes];
  uint64_t v = static_cast<uint64_t>(version) | (tombstone ? kStoredTombstoneBit : 0);
  for (size_t i = 0; i < kStoredVersionBytes; ++i)
    word[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  out->assign(word, kStoredVersionBytes);
  out->append(value);
}

std::string EncodeStored(Version version, bool tombstone, std::string_view value) {
  std::string out;
  EncodeStoredTo(version, tombstone, value, &out);
  return out;
}

Result<Store::Item> DecodeStored(std::string_view key, const std::string& raw) {
  if (raw.size() < kStoredVersionBytes) {
    return Status::Corruption("stored value of key (" + std::to_string(key.size()) +
                              " bytes) has " + std::to_string(raw.size()) +
                              " bytes, less than its version");
  }
  uint64_t v = 0;
  for (size_t i = 0; i < kStoredVersionBytes; ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(raw[i])) << (8 * i);
  Store::Item item;
  item.found = (v & kStoredTombstoneBit) == 0;
  item.version = static_cast<Version>(v & ~kStoredTombstoneBit);
  if (item.version <= 0)
    return Status::Corruption("stored version " + std::to_string(item.version) +
                              " is not positive");
  if (!item.found && raw.size() != kStoredVersionBytes) {
    return Status::Corruption("tombstone of key (" + std::to_string(key.size()) +
                              " bytes) carries " +
                              std::to_string(raw.size() - kStoredVersionBytes) + " value bytes");
  }
  item.value = raw.substr(kStoredVersionBytes);
  return item;
}

// The key the checkpoint is stored under: user keys are never empty.
const leveldb::Slice kCheckpointKey("", 0);

Status SyncPath(const std::string& path, bool* missing) {
  *missing = false;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      *missing = true;
      return Status::OK();
    }
    return Status::IOError("open " + path + ": " + std::strerror(errno));
  }
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::IOError("fsync " + path + ": " + std::strerror(err));
  return Status::OK();
}

}  // namespace

// Remembers the LevelDB log files (*.log) it creates, so that a checkpoint
// can fsync the ones LevelDB closed without syncing. Thread-safe.
class LevelStore::SyncTrackingEnv final : public leveldb::EnvWrapper {
 public:
  SyncTrackingEnv(std::string dir)
      : leveldb::EnvWrapper(leveldb::Env::Default()), dir_(std::move(dir)) {}

  leveldb::Status NewWritableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::Status s = target()->NewWritableFile(f, r);
    if (s.ok()) Track(f);
    return s;
  }
  leveldb::Status NewAppendableFile(const std::string& f, leveldb::WritableFile** r) override {
    leveldb::Status s = target()->NewAppendableFile(f, r);
    if (s.ok()) Track(f);
    return s;
  }

  // fsyncs every tracked log file still present, then the directory (new
  // log files, CURRENT renames). A deleted log was obsolete: LevelDB deletes
  // a log only after its memtable is in a synced table named by a synced
  // manifest.
  Status SyncAll() {
    std::set<std::string> logs;
    {
      MutexLock lock(&mu_);
      logs = logs_;
    }
    for (const std::string& path : logs) {
      bool missing = false;
      DTX_RETURN_IF_ERROR(SyncPath(path, &missing));
      if (missing) {
        MutexLock lock(&mu_);
        logs_.erase(path);
      }
    }
    bool missing = false;
    DTX_RETURN_IF_ERROR(SyncPath(dir_, &missing));
    if (missing) return Status::IOError("LevelDB directory " + dir_ + " is gone");
    return Status::OK();
  }

 private:
  void Track(const std::string& f) {
    if (!f.ends_with(".log")) return;
    MutexLock lock(&mu_);
    logs_.insert(f);
  }
  const std::string dir_;
  Mutex mu_;
  std::set<std::string> logs_ GUARDED_BY(mu_);
};

Result<std::unique_ptr<LevelStore>> LevelStore::Open(const std::string& dir) {
  auto env = std::make_unique<SyncTrackingEnv>(dir);
  leveldb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  options.env = env.get();
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, dir, &db);
  if (!s.ok()) return FromLevel(s, "opening LevelDB in " + dir);
  return std::unique_ptr<LevelStore>(new LevelStore(std::move(env), db));
}

LevelStore::LevelStore(std::unique_ptr<SyncTrackingEnv> env, leveldb::DB* db)
    : env_(std::move(env)), db_(db) {}
LevelStore::~LevelStore() = default;

void LevelStore::BeginReplay() {
  replaying_ = true;
  replay_batch_ = std::make_unique<leveldb::WriteBatch>();
}

Status LevelStore::FlushReplayBatch() {
  if (replay_batch_ == nullptr || replay_batch_->ApproximateSize() == 0) return Status::OK();
  leveldb::WriteOptions wo;
  wo.sync = false;  // the WAL holds durability; see the header
  Status s = FromLevel(db_->Write(wo, replay_batch_.get()), "LevelDB write (replay)");
  replay_batch_->Clear();
  return s;
}

Status LevelStore::EndReplay() {
  Status s = FlushReplayBatch();
  replaying_ = false;
  replay_batch_.reset();
  return s;
}

Result<Store::Item> LevelStore::Get(std::string_view key) {
  if (replaying_) DTX_RETURN_IF_ERROR(FlushReplayBatch());
  std::string raw;
  leveldb::Status s =
      db_->Get(leveldb::ReadOptions(), leveldb::Slice(key.data(), key.size()), &raw);
  if (s.IsNotFound()) return Item{};
  if (!s.ok()) return FromLevel(s, "LevelDB get");
  return DecodeStored(key, raw);
}

Status LevelStore::Apply(const std::vector<WriteOp>& writes, Version version) {
  DTX_CHECK(version > 0);
  if (replaying_) {
    for (const WriteOp& w : writes) {
      DTX_CHECK(!w.key.empty());
      EncodeStoredTo(version, !w.value.has_value(),
                     w.value ? std::string_view(*w.value) : std::string_view(), &replay_scratch_);
      replay_batch_->Put(leveldb::Slice(w.key.data(), w.key.size()), replay_scratch_);
    }
    if (replay_batch_->ApproximateSize() >= kReplayBatchBytesMax) return FlushReplayBatch();
    return Status::OK();
  }
  leveldb::WriteBatch batch;
  size_t changed = 0;
  for (const WriteOp& w : writes) {
    DTX_CHECK(!w.key.empty());  // the empty key holds the checkpoint
    auto cur = Get(w.key);
    if (!cur.ok()) return cur.status();
    if (cur->version >= version) continue;  // already applied (replay); tombstones too
    leveldb::Slice key(w.key.data(), w.key.size());
    batch.Put(key, EncodeStored(version, !w.value.has_value(),
                                w.value ? std::string_view(*w.value) : std::string_view()));
    ++changed;
  }
  if (changed == 0) return Status::OK();
  leveldb::WriteOptions wo;
  wo.sync = false;  // the WAL holds durability; see the header
  return FromLevel(db_->Write(wo, &batch), "LevelDB write");
}

Result<std::optional<Checkpoint>> LevelStore::ReadCheckpoint() {
  std::string raw;
  leveldb::Status s = db_->Get(leveldb::ReadOptions(), kCheckpointKey, &raw);
  if (s.IsNotFound()) return std::optional<Checkpoint>();
  if (!s.ok()) return FromLevel(s, "LevelDB get of the checkpoint");
  auto cp = DecodeCheckpoint(raw);
  if (!cp.ok()) return cp.status();
  return std::optional<Checkpoint>(*cp);
}

Status LevelStore::WriteCheckpoint(const Checkpoint& cp) {
  // First the data the checkpoint vouches for, outside LevelDB's write lock
  // (the loop thread keeps applying meanwhile)...
  DTX_RETURN_IF_ERROR(env_->SyncAll());
  // ...then the checkpoint itself; this sync covers only what was written
  // since, so writers queued behind it wait briefly.
  leveldb::WriteOptions wo;
  wo.sync = true;
  return FromLevel(db_->Put(wo, kCheckpointKey, EncodeCheckpoint(cp)), "LevelDB checkpoint write");
}

}  // namespace dtx::participant
