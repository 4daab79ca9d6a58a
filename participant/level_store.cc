#include "participant/level_store.h"

#include <fcntl.h>
#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/filter_policy.h>
#include <leveldb/iterator.h>
#include <leveldb/table.h>
#include <leveldb/write_batch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>
#include <vector>

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

// Every read checks the checksums of the blocks it reads (the header says why).
leveldb::ReadOptions VerifiedRead() {
  leveldb::ReadOptions ro;
  ro.verify_checksums = true;
  return ro;
}

// Reads every block of sstable `path` with checksums verified; the error,
// if any.
leveldb::Status ScanTable(const std::string& path, uint64_t size) {
  leveldb::Env* env = leveldb::Env::Default();
  leveldb::RandomAccessFile* file = nullptr;
  leveldb::Status s = env->NewRandomAccessFile(path, &file);
  if (!s.ok()) return s;
  std::unique_ptr<leveldb::RandomAccessFile> owned(file);
  leveldb::Options options;
  options.paranoid_checks = true;  // the index block's checksum too
  leveldb::Table* table = nullptr;
  s = leveldb::Table::Open(options, file, size, &table);
  if (!s.ok()) return s;
  std::unique_ptr<leveldb::Table> owned_table(table);
  leveldb::ReadOptions ro = VerifiedRead();
  ro.fill_cache = false;
  // A full scan in file order needs no comparator (only seeks do).
  std::unique_ptr<leveldb::Iterator> it(table->NewIterator(ro));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
  }
  return it->status();
}

// Which sstable in `dir` fails its checksums, as words for a message. Reads
// at most kCorruptionScanBytesMax bytes of them. Tables that vanish meanwhile
// (compaction) are skipped.
std::string LocateCorruptTable(const std::string& dir) {
  std::vector<std::filesystem::path> tables;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string ext = entry.path().extension().string();
    if (ext == ".ldb" || ext == ".sst") tables.push_back(entry.path());
  }
  if (ec) return "its sstables could not be listed (" + ec.message() + ")";
  std::sort(tables.begin(), tables.end());
  uint64_t scanned = 0;
  for (const std::filesystem::path& path : tables) {
    const uint64_t size = std::filesystem::file_size(path, ec);
    if (ec) continue;
    if (scanned + size > kCorruptionScanBytesMax) {
      return "the damaged sstable was not located (scan stopped after " + std::to_string(scanned) +
             " bytes)";
    }
    scanned += size;
    leveldb::Status s = ScanTable(path.string(), size);
    if (s.IsCorruption()) return "sstable " + path.string() + " fails its checksums";
  }
  return "no sstable fails its checksums now (" + std::to_string(tables.size()) +
         " scanned; LevelDB's own log " + dir + "/LOG may say more)";
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
  std::unique_ptr<const leveldb::FilterPolicy> filter(leveldb::NewBloomFilterPolicy(10));
  leveldb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  options.env = env.get();
  options.filter_policy = filter.get();
  leveldb::DB* db = nullptr;
  leveldb::Status s = leveldb::DB::Open(options, dir, &db);
  if (s.IsCorruption()) {
    // Open checks the log files and the MANIFEST (paranoid_checks); LevelDB's
    // own log names the file it found damaged.
    return Status::Corruption("LevelDB store " + dir + " is corrupt: opening it failed: " +
                              s.ToString() + " (LevelDB's own log " + dir + "/LOG names the file)");
  }
  if (!s.ok()) return FromLevel(s, "opening LevelDB in " + dir);
  return std::unique_ptr<LevelStore>(new LevelStore(dir, std::move(env), std::move(filter), db));
}

LevelStore::LevelStore(std::string dir, std::unique_ptr<SyncTrackingEnv> env,
                       std::unique_ptr<const leveldb::FilterPolicy> filter, leveldb::DB* db)
    : dir_(std::move(dir)),
      env_(std::move(env)),
      filter_(std::move(filter)),
      db_(db),
      rows_(leveldb::NewLRUCache(kRowCacheBytes)) {}
LevelStore::~LevelStore() = default;

std::optional<Store::Item> LevelStore::Cached(std::string_view key) const {
  leveldb::Cache::Handle* h = rows_->Lookup(leveldb::Slice(key.data(), key.size()));
  if (h == nullptr) return std::nullopt;
  Item item = *static_cast<const Item*>(rows_->Value(h));
  rows_->Release(h);
  return item;
}

void LevelStore::Cache(std::string_view key, const Item& item) {
  auto* copy = new Item(item);
  const size_t charge = sizeof(Item) + key.size() + item.value.size();
  rows_->Release(rows_->Insert(leveldb::Slice(key.data(), key.size()), copy, charge,
                               [](const leveldb::Slice&, void* v) { delete static_cast<Item*>(v); }));
}

void LevelStore::Uncache(std::string_view key) {
  rows_->Erase(leveldb::Slice(key.data(), key.size()));
}

Status LevelStore::Error(const leveldb::Status& s, std::string_view what) const {
  if (!s.IsCorruption()) return FromLevel(s, what);
  return Status::Corruption("LevelDB store " + dir_ + " is corrupt: " + std::string(what) +
                            " failed: " + s.ToString() + "; " + LocateCorruptTable(dir_));
}

void LevelStore::BeginReplay() {
  replaying_ = true;
  replay_batch_ = std::make_unique<leveldb::WriteBatch>();
}

Status LevelStore::FlushReplayBatch() {
  if (replay_batch_ == nullptr || replay_batch_->ApproximateSize() == 0) return Status::OK();
  leveldb::WriteOptions wo;
  wo.sync = false;  // the WAL holds durability; see the header
  Status s = Error(db_->Write(wo, replay_batch_.get()), "LevelDB write (replay)");
  replay_batch_->Clear();
  return s;
}

Status LevelStore::EndReplay() {
  Status s = FlushReplayBatch();
  replaying_ = false;
  replay_batch_.reset();
  rows_->Prune();  // nothing is cached while replaying; an empty cache to start from
  return s;
}

Result<Store::Item> LevelStore::Get(std::string_view key) {
  if (replaying_) DTX_RETURN_IF_ERROR(FlushReplayBatch());
  if (!replaying_) {
    if (std::optional<Item> hit = Cached(key)) return *std::move(hit);
  }
  auto item = ReadThrough(key);
  if (item.ok() && !replaying_) Cache(key, *item);
  return item;
}

bool LevelStore::IsCached(std::string_view key) const {
  leveldb::Cache::Handle* h = rows_->Lookup(leveldb::Slice(key.data(), key.size()));
  if (h == nullptr) return false;
  rows_->Release(h);
  return true;
}

Result<Store::Item> LevelStore::ReadThrough(std::string_view key) {
  std::string raw;
  leveldb::Status s = db_->Get(VerifiedRead(), leveldb::Slice(key.data(), key.size()), &raw);
  if (s.IsNotFound()) return Item{};
  if (!s.ok()) return Error(s, "reading a key of " + std::to_string(key.size()) + " bytes");
  auto item = DecodeStored(key, raw);
  if (!item.ok()) {
    return Status::Corruption("LevelDB store " + dir_ +
                              " holds a malformed value: " + item.status().message());
  }
  return item;
}

void LevelStore::Remember(std::string_view key, const Item& item) { Cache(key, item); }

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
  return ApplyBatch({Commit{&writes, version}});
}

Status LevelStore::ApplyBatch(const std::vector<Commit>& commits) {
  if (replaying_) return Store::ApplyBatch(commits);  // the replay batch takes them
  leveldb::WriteBatch batch;
  std::vector<std::pair<std::string_view, Item>> put;  // what the batch writes, in order
  for (const Commit& c : commits) {
    DTX_CHECK(c.version > 0);
    DTX_RETURN_IF_ERROR(AddToBatch(*c.writes, c.version, &batch, &put));
  }
  if (put.empty()) return Status::OK();
  leveldb::WriteOptions wo;
  wo.sync = false;  // the WAL holds durability; see the header
  Status s = Error(db_->Write(wo, &batch), "LevelDB write");
  if (!s.ok()) {
    // What LevelDB holds now is not known: read it again next time.
    for (const auto& [key, item] : put) Uncache(key);
    return s;
  }
  // In batch order: of two commits writing one key, the later one stays.
  for (const auto& [key, item] : put) Cache(key, item);
  return s;
}

Status LevelStore::AddToBatch(const std::vector<WriteOp>& writes, Version version,
                              leveldb::WriteBatch* batch,
                              std::vector<std::pair<std::string_view, Item>>* put) {
  for (const WriteOp& w : writes) {
    DTX_CHECK(!w.key.empty());  // the empty key holds the checkpoint
    auto cur = Get(w.key);
    if (!cur.ok()) return cur.status();
    if (cur->version >= version) continue;  // already applied (replay); tombstones too
    leveldb::Slice key(w.key.data(), w.key.size());
    batch->Put(key, EncodeStored(version, !w.value.has_value(),
                                 w.value ? std::string_view(*w.value) : std::string_view()));
    put->emplace_back(w.key, Item{w.value.has_value(), w.value.value_or(std::string()), version});
  }
  return Status::OK();
}

Result<std::optional<Checkpoint>> LevelStore::ReadCheckpoint() {
  std::string raw;
  leveldb::Status s = db_->Get(VerifiedRead(), kCheckpointKey, &raw);
  if (s.IsNotFound()) return std::optional<Checkpoint>();
  if (!s.ok()) return Error(s, "reading the checkpoint");
  auto cp = DecodeCheckpoint(raw);
  if (!cp.ok()) {
    return Status::Corruption("checkpoint in " + dir_ +
                              " (LevelDB, the empty key) is corrupt: " + cp.status().message());
  }
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
  return Error(db_->Put(wo, kCheckpointKey, EncodeCheckpoint(cp)), "LevelDB checkpoint write");
}

}  // namespace dtx::participant
