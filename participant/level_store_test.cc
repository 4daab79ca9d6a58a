#include "participant/level_store.h"

#include <gtest/gtest.h>
#include <leveldb/db.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace dtx::participant {
namespace {

class LevelStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dtx-level-store-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // The sstable in the store holding `needle`, and where; "" if none.
  std::pair<std::string, size_t> FindInTable(const std::string& needle) const {
    for (const auto& e : std::filesystem::directory_iterator(dir_ + "/data")) {
      if (e.path().extension() != ".ldb") continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      size_t at = bytes.find(needle);
      if (at != std::string::npos) return {e.path().string(), at};
    }
    return {"", 0};
  }
  // Flips every bit of the byte at `offset` of `path`.
  static void FlipByte(const std::string& path, size_t offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.is_open()) << path;
    f.seekg(static_cast<std::streamoff>(offset));
    char c = 0;
    f.get(c);
    f.seekp(static_cast<std::streamoff>(offset));
    f.put(static_cast<char>(c ^ 0xff));
    ASSERT_TRUE(f.good()) << path;
  }
  // Opening a store again moves what its log holds into a level-0 sstable.
  void ReopenSoDataIsInAnSstable() {
    auto st = Open();
    ASSERT_NE(st, nullptr);
  }
  std::unique_ptr<LevelStore> Open() {
    auto s = LevelStore::Open(dir_ + "/data");
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s.value()) : nullptr;
  }
  std::string dir_;
};

// A batch reads as its commits applied one after the other: of two commits
// writing one key the later version wins, a delete leaves its tombstone, and
// a commit the store already holds (replay) changes nothing.
TEST_F(LevelStoreTest, ABatchOfCommitsReadsAsTheCommitsAppliedInOrder) {
  auto st = Open();
  ASSERT_TRUE(st->Apply({{"held", std::string("new")}}, 9).ok());
  const std::vector<WriteOp> w4 = {{"a", std::string("4")}, {"b", std::string("4")}};
  const std::vector<WriteOp> w5 = {{"a", std::string("5")}, {"b", std::nullopt}};
  const std::vector<WriteOp> w6 = {{"held", std::string("old")}};
  // Read first, so the row cache holds what the batch must replace.
  for (const char* k : {"a", "b", "held"}) ASSERT_TRUE(st->Get(k).ok());
  ASSERT_TRUE(st->ApplyBatch({{&w4, 4}, {&w5, 5}, {&w6, 6}}).ok());
  auto a = st->Get("a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->value, "5");
  EXPECT_EQ(a->version, 5);
  auto b = st->Get("b");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->found);
  EXPECT_EQ(b->version, 5);
  auto held = st->Get("held");
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(held->value, "new");
  EXPECT_EQ(held->version, 9);
  // An older commit applied again (replay) changes neither LevelDB nor the cache.
  ASSERT_TRUE(st->Apply({{"a", std::string("4 again")}}, 4).ok());
  EXPECT_EQ(st->Get("a")->value, "5");
  // And the same across a reopen (one LevelDB write, replayed from its log).
  st.reset();
  st = Open();
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->Get("a")->value, "5");
  EXPECT_EQ(st->Get("b")->version, 5);
}

TEST_F(LevelStoreTest, ValuesCarryTheirVersionAcrossReopen) {
  {
    auto st = Open();
    ASSERT_TRUE(
        st->Apply({{"a", std::string("1")}, {std::string("b\0", 2), std::string()}}, 3).ok());
  }
  auto st = Open();
  auto a = st->Get("a");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->found);
  EXPECT_EQ(a->value, "1");
  EXPECT_EQ(a->version, 3);
  auto b = st->Get(std::string("b\0", 2));
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(b->found);
  EXPECT_EQ(b->value, "");
  auto none = st->Get("c");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->found);
  EXPECT_EQ(none->version, 0);
}

TEST_F(LevelStoreTest, ApplyIsIdempotentByVersion) {
  auto st = Open();
  ASSERT_TRUE(st->Apply({{"k", std::string("v5")}}, 5).ok());
  ASSERT_TRUE(st->Apply({{"k", std::string("v3")}}, 3).ok());     // older: left alone
  ASSERT_TRUE(st->Apply({{"k", std::string("again")}}, 5).ok());  // same: left alone
  EXPECT_EQ(st->Get("k")->value, "v5");
  ASSERT_TRUE(st->Apply({{"k", std::nullopt}}, 4).ok());  // older delete: left alone
  EXPECT_TRUE(st->Get("k")->found);
  ASSERT_TRUE(st->Apply({{"k", std::nullopt}}, 7).ok());
  EXPECT_FALSE(st->Get("k")->found);
  ASSERT_TRUE(st->Apply({{"k", std::nullopt}}, 8).ok());  // deleting an absent key is fine
  ASSERT_TRUE(st->Apply({{"k", std::string("v9")}}, 9).ok());
  EXPECT_EQ(st->Get("k")->version, 9);
}

TEST_F(LevelStoreTest, DeleteLeavesATombstoneWithItsVersion) {
  {
    auto st = Open();
    ASSERT_TRUE(st->Apply({{"k", std::string("v")}}, 2).ok());
    ASSERT_TRUE(st->Apply({{"k", std::nullopt}, {"never", std::nullopt}}, 5).ok());
  }
  auto st = Open();
  auto k = st->Get("k");
  ASSERT_TRUE(k.ok()) << k.status().ToString();
  EXPECT_FALSE(k->found);
  EXPECT_EQ(k->version, 5);
  EXPECT_EQ(k->value, "");
  EXPECT_EQ(st->Get("never")->version, 5) << "deleting an absent key is a write too";
  EXPECT_EQ(st->Get("other")->version, 0);
  ASSERT_TRUE(st->Apply({{"k", std::string("old")}}, 4).ok());  // older than the delete: left alone
  EXPECT_FALSE(st->Get("k")->found);
  ASSERT_TRUE(st->Apply({{"k", std::string("new")}}, 6).ok());
  EXPECT_TRUE(st->Get("k")->found);
  EXPECT_EQ(st->Get("k")->version, 6);
}

TEST_F(LevelStoreTest, TombstoneWithValueBytesIsCorruption) {
  {
    leveldb::DB* db = nullptr;
    leveldb::Options o;
    o.create_if_missing = true;
    ASSERT_TRUE(leveldb::DB::Open(o, dir_ + "/data", &db).ok());
    std::string raw("\x01\0\0\0\0\0\0\x80x", 9);
    ASSERT_TRUE(db->Put(leveldb::WriteOptions(), "t", raw).ok());
    delete db;
  }
  auto st = Open();
  auto r = st->Get("t");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
}

TEST_F(LevelStoreTest, CheckpointIsStoredUnderTheEmptyKeyAndSurvivesReopen) {
  {
    auto st = Open();
    auto none = st->ReadCheckpoint();
    ASSERT_TRUE(none.ok());
    EXPECT_FALSE(none->has_value());
    ASSERT_TRUE(st->Apply({{"k", std::string("v")}}, 1).ok());
    ASSERT_TRUE(st->WriteCheckpoint({5, 3, 2, 1, 0, {}}).ok());
    ASSERT_TRUE(st->WriteCheckpoint({9, 4, 2, 7, 5, {{{1, 2}, 6}}}).ok());
  }
  auto st = Open();
  auto cp = st->ReadCheckpoint();
  ASSERT_TRUE(cp.ok()) << cp.status().ToString();
  ASSERT_TRUE(cp->has_value());
  EXPECT_EQ(**cp, (Checkpoint{9, 4, 2, 7, 5, {{{1, 2}, 6}}}));
  EXPECT_EQ(st->Get("k")->value, "v");
}

TEST_F(LevelStoreTest, MalformedCheckpointIsCorruption) {
  {
    leveldb::DB* db = nullptr;
    leveldb::Options o;
    o.create_if_missing = true;
    ASSERT_TRUE(leveldb::DB::Open(o, dir_ + "/data", &db).ok());
    ASSERT_TRUE(db->Put(leveldb::WriteOptions(), "", "\x01short").ok());
    delete db;
  }
  auto st = Open();
  auto cp = st->ReadCheckpoint();
  ASSERT_FALSE(cp.ok());
  EXPECT_TRUE(cp.status().IsCorruption()) << cp.status().ToString();
}

TEST_F(LevelStoreTest, ReplayModeBatchesWritesInOrderAndTheLastWriteWins) {
  {
    auto st = Open();
    ASSERT_TRUE(st->Apply({{"k", std::string("live")}}, 10).ok());
    st->BeginReplay();
    // Replay re-applies from the checkpoint in version order: no version
    // check against what LevelDB holds, the last write wins.
    ASSERT_TRUE(st->Apply({{"k", std::string("v4")}, {"d", std::string("x")}}, 4).ok());
    ASSERT_TRUE(st->Apply({{"d", std::nullopt}}, 5).ok());
    ASSERT_TRUE(st->Apply({{"k", std::string("v11")}}, 11).ok());
    auto k = st->Get("k");  // writes the batch out first
    ASSERT_TRUE(k.ok());
    EXPECT_EQ(k->value, "v11");
    ASSERT_TRUE(st->Apply({{"k", std::string("v12")}}, 12).ok());
    ASSERT_TRUE(st->EndReplay().ok());
    // Out of replay mode the version check is back.
    ASSERT_TRUE(st->Apply({{"k", std::string("older")}}, 7).ok());
  }
  auto st = Open();
  EXPECT_EQ(st->Get("k")->value, "v12");
  EXPECT_EQ(st->Get("k")->version, 12);
  EXPECT_FALSE(st->Get("d")->found);
  EXPECT_EQ(st->Get("d")->version, 5);
}

TEST_F(LevelStoreTest, MalformedStoredValueIsCorruption) {
  {
    leveldb::DB* db = nullptr;
    leveldb::Options o;
    o.create_if_missing = true;
    ASSERT_TRUE(leveldb::DB::Open(o, dir_ + "/data", &db).ok());
    ASSERT_TRUE(db->Put(leveldb::WriteOptions(), "short", "abc").ok());
    delete db;
  }
  auto st = Open();
  auto r = st->Get("short");
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
}

TEST_F(LevelStoreTest, OpenFailsClearlyWhenTheDirectoryIsLocked) {
  auto first = Open();
  auto second = LevelStore::Open(dir_ + "/data");
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("opening LevelDB"), std::string::npos);
}

// Incompressible (no repeated 4-byte run), so it appears verbatim in an
// sstable block whether or not LevelDB compressed the block.
const std::string kMarker = "q7Zk2Xv9LmP4wR8tY1bN6cH3jD5fG0sA";

// Store integrity (issue "Store integrity"): a byte flipped on disk in an
// sstable is a Corruption naming the store and the file, never a wrong value
// and never "not found"; LevelDB's checksums are verified on every read.
TEST_F(LevelStoreTest, AFlippedByteInAnSstableIsCorruptionNamingTheFileNeverAValue) {
  {
    auto st = Open();
    ASSERT_TRUE(st->Apply({{"k", "value-" + kMarker}}, 3).ok());
  }
  ReopenSoDataIsInAnSstable();
  auto [table, at] = FindInTable(kMarker);
  ASSERT_FALSE(table.empty()) << "the value is not in an .ldb file: LevelDB kept it in its log";
  FlipByte(table, at + 5);
  auto st = Open();  // LevelDB opens sstables lazily: the damage is found by the read
  auto k = st->Get("k");
  ASSERT_FALSE(k.ok()) << "served a value from a damaged block: " << k->value;
  EXPECT_TRUE(k.status().IsCorruption()) << k.status().ToString();
  const std::string& m = k.status().message();
  EXPECT_NE(m.find("LevelDB store " + dir_ + "/data is corrupt"), std::string::npos) << m;
  EXPECT_NE(m.find("block checksum mismatch"), std::string::npos) << m;
  EXPECT_NE(m.find("sstable " + table + " fails its checksums"), std::string::npos) << m;
  // Applying over the damaged key reads it first: refused the same way.
  Status applied = st->Apply({{"k", std::string("new")}}, 4);
  EXPECT_TRUE(applied.IsCorruption()) << applied.ToString();
}

// The checkpoint's own bytes flipped on disk: LevelDB's block checksum
// refuses them (and were it not asked to verify, the checkpoint's CRC would).
TEST_F(LevelStoreTest, AFlippedByteInTheCheckpointOnDiskIsCorruption) {
  Checkpoint cp{9, 4, 2, 7, 5, {{{1, 2}, 6}}};
  cp.epoch_owner = "owner-" + kMarker;
  {
    auto st = Open();
    ASSERT_TRUE(st->WriteCheckpoint(cp).ok());
  }
  ReopenSoDataIsInAnSstable();
  auto [table, at] = FindInTable(kMarker);
  ASSERT_FALSE(table.empty()) << "the checkpoint is not in an .ldb file";
  FlipByte(table, at + 3);
  auto st = Open();
  auto got = st->ReadCheckpoint();
  ASSERT_FALSE(got.ok()) << "a damaged checkpoint was read";
  EXPECT_TRUE(got.status().IsCorruption()) << got.status().ToString();
  EXPECT_NE(got.status().message().find("reading the checkpoint"), std::string::npos)
      << got.status().ToString();
  EXPECT_NE(got.status().message().find(table), std::string::npos) << got.status().ToString();
}

// A checkpoint damaged before LevelDB checksummed it (in memory, by a bug):
// LevelDB's checks pass, the checkpoint's CRC does not.
TEST_F(LevelStoreTest, ACheckpointWithAFlippedByteUnderValidLevelDbChecksumsIsACrcMismatch) {
  std::string raw = EncodeCheckpoint({9, 4, 2, 7, 5, {{{1, 2}, 6}}});
  raw[5] = static_cast<char>(raw[5] ^ 0xff);  // the lsn's low byte: 9 would read as 246
  {
    leveldb::DB* db = nullptr;
    leveldb::Options o;
    o.create_if_missing = true;
    ASSERT_TRUE(leveldb::DB::Open(o, dir_ + "/data", &db).ok());
    ASSERT_TRUE(db->Put(leveldb::WriteOptions(), "", raw).ok());
    delete db;
  }
  auto st = Open();
  auto got = st->ReadCheckpoint();
  ASSERT_FALSE(got.ok()) << "read lsn " << (*got)->lsn;
  EXPECT_TRUE(got.status().IsCorruption());
  const std::string& m = got.status().message();
  EXPECT_NE(m.find("checkpoint in " + dir_ + "/data"), std::string::npos) << m;
  EXPECT_NE(m.find("is corrupt"), std::string::npos) << m;
  EXPECT_NE(m.find("CRC mismatch"), std::string::npos) << m;
}

}  // namespace
}  // namespace dtx::participant
