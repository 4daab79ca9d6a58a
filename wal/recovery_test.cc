// Recovery: torn tails are cut, corruption anywhere else refuses to open with
// the file and offset, bad files give clear errors without big allocations;
// Open reads the segments from the disk, not from the page cache.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <new>
#include <random>
#include <vector>

#include "wal/crc32c.h"
#include "wal/fault_env.h"
#include "wal/format.h"
#include "wal/test_util.h"
#include "wal/wal.h"

// GCC pairs the replaced operator new below with free() and warns; the
// replacement is the whole point here.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

// Tracks the largest single allocation so the tests can prove that a huge
// length field is never allocated.
namespace {
std::atomic<size_t> g_largest_allocation{0};
}  // namespace

void* operator new(size_t n) {
  size_t cur = g_largest_allocation.load(std::memory_order_relaxed);
  while (n > cur &&
         !g_largest_allocation.compare_exchange_weak(cur, n, std::memory_order_relaxed)) {
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace dtx::wal {
namespace {

namespace fs = std::filesystem;
using testing::MakePayload;
using testing::PayloadMatches;
using testing::TempDir;

constexpr uint64_t kFrame = format::kRecordHeaderBytes;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void WriteAll(const std::string& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// Recovery logic does not need the disk to be durable: skip real fsyncs so
// the hundreds of reopens stay fast on a busy machine.
Env* NoSyncEnv() {
  static FaultInjectionEnv* env = new FaultInjectionEnv(Env::Posix(), /*real_sync=*/false);
  return env;
}

Options Opts(bool preallocate, uint64_t segment_bytes = 64 << 10) {
  Options o;
  o.env = NoSyncEnv();
  o.preallocate = preallocate;
  o.segment_bytes = segment_bytes;
  return o;
}

// Appends records with payload sizes `sizes` (LSN i+1 gets sizes[i]) and
// returns each record's byte offset, assuming a single segment.
std::vector<uint64_t> WriteRecords(const std::string& dir, const Options& o,
                                   const std::vector<size_t>& sizes) {
  auto log = Log::Open(o, dir, nullptr);
  DTX_CHECK(log.ok());
  std::vector<uint64_t> offsets;
  uint64_t off = format::kSegmentHeaderBytes;
  for (size_t i = 0; i < sizes.size(); ++i) {
    DTX_CHECK((*log)->Append(1, MakePayload(i + 1, sizes[i])).ok());
    offsets.push_back(off);
    off += kFrame + sizes[i];
  }
  offsets.push_back(off);  // end of the last record
  DTX_CHECK((*log)->WaitDurable(sizes.size()).ok());
  return offsets;
}

struct OpenResult {
  Status status;
  std::vector<Lsn> lsns;
  bool intact = true;
  Stats stats;
};

OpenResult OpenAndReplay(const std::string& dir, const Options& o) {
  OpenResult r;
  auto log = Log::Open(o, dir, [&](Lsn lsn, uint8_t, std::string_view p) {
    r.lsns.push_back(lsn);
    if (!PayloadMatches(lsn, p)) r.intact = false;
    return Status::OK();
  });
  r.status = log.status();
  if (log.ok()) r.stats = (*log)->stats();
  return r;
}

std::string Seg(const TempDir& d, Lsn first) { return d.Sub(format::SegmentFileName(first)); }

std::vector<Lsn> Iota(Lsn n) {
  std::vector<Lsn> v;
  for (Lsn i = 1; i <= n; ++i) v.push_back(i);
  return v;
}

class TornTail : public ::testing::TestWithParam<bool> {};

// A crash mid-write leaves a prefix of the last record: with preallocation
// the rest reads as zeros, without it the file just ends. Every cut point
// must recover exactly the records before it, and the log must go on.
TEST_P(TornTail, TornTailIsCutOnRecoveryAtEveryByteOffset) {
  const bool prealloc = GetParam();
  TempDir dir;
  const Options o = Opts(prealloc);
  const std::vector<size_t> sizes = {50, 120, 33, 200};
  auto offsets = WriteRecords(dir.path(), o, sizes);
  const std::string path = Seg(dir, 1);
  const std::string pristine = ReadAll(path);
  const uint64_t start = offsets[3], end = offsets[4];
  for (uint64_t k = start; k < end; ++k) {
    std::string torn = pristine;
    if (prealloc) {
      std::fill(torn.begin() + static_cast<ptrdiff_t>(k),
                torn.begin() + static_cast<ptrdiff_t>(end), '\0');
    } else {
      torn.resize(k);
    }
    WriteAll(path, torn);
    OpenResult r = OpenAndReplay(dir.path(), o);
    ASSERT_TRUE(r.status.ok()) << "cut at " << k << ": " << r.status.ToString();
    ASSERT_EQ(Iota(3), r.lsns) << "cut at " << k;
    ASSERT_TRUE(r.intact);
    EXPECT_EQ(k > start ? 1u : 0u, r.stats.torn_tails_cut) << "cut at " << k;
    // The log continues right after the last good record, and a second
    // recovery finds a clean end.
    {
      auto log = Log::Open(o, dir.path(), nullptr);
      ASSERT_TRUE(log.ok());
      ASSERT_EQ(4u, *(*log)->Append(1, MakePayload(4, 77)));
    }
    OpenResult again = OpenAndReplay(dir.path(), o);
    ASSERT_TRUE(again.status.ok()) << again.status.ToString();
    ASSERT_EQ(Iota(4), again.lsns) << "cut at " << k;
    ASSERT_TRUE(again.intact);
    ASSERT_EQ(0u, again.stats.torn_tails_cut);
  }
}

INSTANTIATE_TEST_SUITE_P(Preallocate, TornTail, ::testing::Bool());

// A flipped bit in a record that has a valid successor cannot be a torn
// write: Open must refuse and say where.
TEST(Recovery, BitFlipInAMiddleRecordFailsNamingFileAndOffset) {
  for (bool prealloc : {true, false}) {
    const Options o = Opts(prealloc);
    const std::vector<size_t> sizes = {40, 40, 300, 40, 40};
    // Flip a bit in the crc, the length, the type and the payload of record 3.
    for (uint64_t field : {0, 4, 6, 8, 9, 150}) {
      TempDir dir;
      auto offsets = WriteRecords(dir.path(), o, sizes);
      const std::string path = Seg(dir, 1);
      std::string bytes = ReadAll(path);
      bytes[offsets[2] + field] ^= 0x10;
      WriteAll(path, bytes);
      OpenResult r = OpenAndReplay(dir.path(), o);
      ASSERT_TRUE(r.status.IsCorruption()) << "field " << field << ": " << r.status.ToString();
      EXPECT_NE(std::string::npos, r.status.message().find(path)) << r.status.ToString();
      EXPECT_NE(std::string::npos, r.status.message().find("offset " + std::to_string(offsets[2])))
          << r.status.ToString();
    }
  }
}

// The same flip in the last record looks exactly like a torn write (no valid
// record follows), so it is cut: the documented limit of any log without a
// commit record after every write.
TEST(Recovery, BitFlipInTheLastRecordIsTreatedAsATornTail) {
  TempDir dir;
  const Options o = Opts(true);
  auto offsets = WriteRecords(dir.path(), o, {40, 40, 40});
  std::string bytes = ReadAll(Seg(dir, 1));
  bytes[offsets[2] + 20] ^= 1;
  WriteAll(Seg(dir, 1), bytes);
  OpenResult r = OpenAndReplay(dir.path(), o);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Iota(2), r.lsns);
  EXPECT_EQ(1u, r.stats.torn_tails_cut);
}

TEST(Recovery, BitFlipInANonLastSegmentFailsEvenInItsLastRecord) {
  TempDir dir;
  const Options o = Opts(true, 1024);
  {
    auto log = Log::Open(o, dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    for (Lsn i = 1; i <= 30; ++i) ASSERT_TRUE((*log)->Append(1, MakePayload(i, 100)).ok());
    ASSERT_TRUE((*log)->WaitDurable(30).ok());
  }
  // Segment 1 holds LSNs 1..8 (32 + 8 * 109 + 17 <= 1024); flip a bit in LSN 8.
  const uint64_t off8 = format::kSegmentHeaderBytes + 7 * (kFrame + 100);
  std::string bytes = ReadAll(Seg(dir, 1));
  bytes[off8 + 50] ^= 4;
  WriteAll(Seg(dir, 1), bytes);
  OpenResult r = OpenAndReplay(dir.path(), o);
  ASSERT_TRUE(r.status.IsCorruption()) << r.status.ToString();
  EXPECT_NE(std::string::npos,
            r.status.message().find(Seg(dir, 1) + " at offset " + std::to_string(off8)))
      << r.status.ToString();
}

TEST(Recovery, NonLastSegmentWithoutEndMarkerIsCorruption) {
  TempDir dir;
  const Options o = Opts(true, 1024);
  {
    auto log = Log::Open(o, dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    for (Lsn i = 1; i <= 30; ++i) ASSERT_TRUE((*log)->Append(1, MakePayload(i, 100)).ok());
    ASSERT_TRUE((*log)->WaitDurable(30).ok());
  }
  const uint64_t marker = format::kSegmentHeaderBytes + 8 * (kFrame + 100);
  std::string bytes = ReadAll(Seg(dir, 1));
  std::fill(bytes.begin() + marker, bytes.begin() + marker + format::kSegmentEndRecordBytes, '\0');
  WriteAll(Seg(dir, 1), bytes);
  OpenResult r = OpenAndReplay(dir.path(), o);
  ASSERT_TRUE(r.status.IsCorruption()) << r.status.ToString();
  EXPECT_NE(std::string::npos, r.status.message().find("without an end marker"))
      << r.status.ToString();
  EXPECT_NE(std::string::npos, r.status.message().find("offset " + std::to_string(marker)));
}

TEST(Recovery, MissingMiddleSegmentIsCorruption) {
  TempDir dir;
  const Options o = Opts(true, 1024);
  {
    auto log = Log::Open(o, dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    for (Lsn i = 1; i <= 30; ++i) ASSERT_TRUE((*log)->Append(1, MakePayload(i, 100)).ok());
    ASSERT_TRUE((*log)->WaitDurable(30).ok());
  }
  ASSERT_TRUE(fs::remove(Seg(dir, 9)));  // the second segment
  OpenResult r = OpenAndReplay(dir.path(), o);
  ASSERT_TRUE(r.status.IsCorruption()) << r.status.ToString();
  EXPECT_NE(std::string::npos, r.status.message().find("missing")) << r.status.ToString();
  EXPECT_NE(std::string::npos, r.status.message().find(format::SegmentFileName(17)));
}

// A crash after the end marker was synced but before the next segment was
// created leaves a sealed last segment; Open starts the next one.
TEST(Recovery, SealedLastSegmentGetsItsSuccessorCreated) {
  TempDir dir;
  const Options o = Opts(true, 1024);
  {
    auto log = Log::Open(o, dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    for (Lsn i = 1; i <= 10; ++i) ASSERT_TRUE((*log)->Append(1, MakePayload(i, 100)).ok());
    ASSERT_TRUE((*log)->WaitDurable(10).ok());
  }
  ASSERT_TRUE(fs::remove(Seg(dir, 9)));  // lose LSNs 9, 10 with their segment
  {
    OpenResult r = OpenAndReplay(dir.path(), o);
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_EQ(Iota(8), r.lsns);
  }
  EXPECT_TRUE(fs::exists(Seg(dir, 9)));
  auto log = Log::Open(o, dir.path(), nullptr);
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(9u, *(*log)->Append(1, MakePayload(9, 100)));
}

struct BadHeaderCase {
  const char* name;
  std::function<void(std::string&)> mutate;
  const char* expect;  // substring of the error
};

TEST(Recovery, BadSegmentFilesGiveClearErrors) {
  // Re-seal a mutated header so the field under test, not the checksum, is
  // what recovery objects to.
  auto fix_crc = [](std::string& h) {
    format::PutU32(h.data() + format::kSegmentHeaderCrcOffset,
                   crc32c::Mask(crc32c::Value(h.data(), format::kSegmentHeaderCrcOffset)));
  };
  std::vector<BadHeaderCase> cases = {
      {"zero-length file", [](std::string& s) { s.clear(); }, "0 bytes"},
      {"short file", [](std::string& s) { s.resize(20); }, "20 bytes"},
      {"garbage",
       [](std::string& s) {
         std::mt19937 rng(7);
         for (char& c : s) c = static_cast<char>(rng());
       },
       "bad magic"},
      {"wrong magic", [](std::string& s) { s[0] = 'X'; }, "bad magic"},
      {"wrong version",
       [&](std::string& s) {
         format::PutU32(s.data() + 8, 99);
         fix_crc(s);
       },
       "version 99"},
      {"header checksum", [](std::string& s) { s[20] ^= 1; }, "header checksum"},
      {"name and header disagree",
       [&](std::string& s) {
         format::PutU64(s.data() + 16, 5);
         fix_crc(s);
       },
       "file name says 1"},
  };
  for (const auto& c : cases) {
    TempDir dir;
    WriteRecords(dir.path(), Opts(false), {10, 10});
    std::string bytes = ReadAll(Seg(dir, 1));
    c.mutate(bytes);
    WriteAll(Seg(dir, 1), bytes);
    g_largest_allocation = 0;
    OpenResult r = OpenAndReplay(dir.path(), Opts(false));
    EXPECT_TRUE(r.status.IsCorruption()) << c.name << ": " << r.status.ToString();
    EXPECT_NE(std::string::npos, r.status.message().find(c.expect))
        << c.name << ": " << r.status.ToString();
    EXPECT_NE(std::string::npos, r.status.message().find(Seg(dir, 1))) << c.name;
    EXPECT_LT(g_largest_allocation.load(), size_t{4} << 20) << c.name;
  }
}

TEST(Recovery, OversizedLengthFieldIsCorruptionNotAnAllocation) {
  TempDir dir;
  const Options o = Opts(false);
  auto offsets = WriteRecords(dir.path(), o, {40, 40, 40, 40});
  std::string bytes = ReadAll(Seg(dir, 1));
  format::PutU32(bytes.data() + offsets[1] + 4, 0xfffffff0u);
  WriteAll(Seg(dir, 1), bytes);
  g_largest_allocation = 0;
  OpenResult r = OpenAndReplay(dir.path(), o);
  ASSERT_TRUE(r.status.IsCorruption()) << r.status.ToString();
  EXPECT_NE(std::string::npos, r.status.message().find("length field 4294967280 exceeds"))
      << r.status.ToString();
  EXPECT_NE(std::string::npos, r.status.message().find("offset " + std::to_string(offsets[1])));
  EXPECT_LT(g_largest_allocation.load(), size_t{4} << 20);
}

TEST(Recovery, OversizedLengthFieldInTheLastRecordIsCutAsTorn) {
  TempDir dir;
  const Options o = Opts(false);
  auto offsets = WriteRecords(dir.path(), o, {40, 40});
  std::string bytes = ReadAll(Seg(dir, 1));
  format::PutU32(bytes.data() + offsets[1] + 4, 0x7ffffff0u);
  WriteAll(Seg(dir, 1), bytes);
  g_largest_allocation = 0;
  OpenResult r = OpenAndReplay(dir.path(), o);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(Iota(1), r.lsns);
  EXPECT_LT(g_largest_allocation.load(), size_t{4} << 20);
}

TEST(Recovery, GarbageAfterTheLastRecordWithAValidRecordInsideIsCorruption) {
  TempDir dir;
  const Options o = Opts(false);
  auto offsets = WriteRecords(dir.path(), o, {40, 40});
  std::string bytes = ReadAll(Seg(dir, 1));
  // Junk, then a well-formed record: not something a torn append can produce.
  std::string junk(13, '\x55');
  std::string rec(kFrame, '\0');
  format::EncodeRecordHeader(rec.data(), 1, "hello");
  bytes += junk + rec + "hello";
  WriteAll(Seg(dir, 1), bytes);
  OpenResult r = OpenAndReplay(dir.path(), o);
  ASSERT_TRUE(r.status.IsCorruption()) << r.status.ToString();
  EXPECT_NE(std::string::npos, r.status.message().find("offset " + std::to_string(offsets[2])));
  EXPECT_NE(std::string::npos,
            r.status.message().find("valid record at offset " + std::to_string(offsets[2] + 13)));
}

TEST(Recovery, BadSegmentFileNameIsCorruptionAndTempFilesAreRemoved) {
  TempDir dir;
  WriteRecords(dir.path(), Opts(false), {10});
  WriteAll(dir.Sub(format::SegmentFileName(2) + ".tmp"), "half-made segment");
  {
    OpenResult r = OpenAndReplay(dir.path(), Opts(false));
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    EXPECT_FALSE(fs::exists(dir.Sub(format::SegmentFileName(2) + ".tmp")));
  }
  WriteAll(dir.Sub("12.wal"), "");
  OpenResult r = OpenAndReplay(dir.path(), Opts(false));
  ASSERT_TRUE(r.status.IsCorruption()) << r.status.ToString();
  EXPECT_NE(std::string::npos, r.status.message().find("12.wal"));
}

// Pages of `path` in the page cache (mincore over a read-only mapping,
// which faults nothing in).
size_t ResidentPages(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  DTX_CHECK(fd >= 0);
  struct stat st {};
  DTX_CHECK(::fstat(fd, &st) == 0);
  size_t resident = 0;
  if (st.st_size > 0) {
    const size_t len = static_cast<size_t>(st.st_size);
    void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
    DTX_CHECK(m != MAP_FAILED);
    const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> vec((len + page - 1) / page);
    DTX_CHECK(::mincore(m, len, vec.data()) == 0);
    for (unsigned char v : vec) resident += v & 1;
    ::munmap(m, len);
  }
  ::close(fd);
  return resident;
}

// Where the page cache is the storage (tmpfs) there is no medium to read.
bool PageCacheIsTheStorage(const std::string& dir) {
  struct statfs sfs {};
  return ::statfs(dir.c_str(), &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
}

// The real Env's DropCache (posix_fadvise DONTNEED) evicts every page of a
// synced file: the next read comes from the disk.
TEST(Recovery, PosixDropCacheEvictsEveryPageOfASyncedFile) {
  TempDir dir;
  if (PageCacheIsTheStorage(dir.path())) GTEST_SKIP() << dir.path() << " is tmpfs";
  auto f = Env::Posix()->OpenFile(dir.Sub("f"), OpenMode::kCreate);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Append(std::string(1 << 20, 'x')).ok());
  ASSERT_TRUE((*f)->Sync().ok());
  std::string back(1 << 20, '\0');
  size_t got = 0;
  ASSERT_TRUE((*f)->ReadAt(0, back.size(), back.data(), &got).ok());
  ASSERT_EQ(back.size(), got);
  ASSERT_GT(ResidentPages(dir.Sub("f")), 0u);
  ASSERT_TRUE((*f)->DropCache().ok());
  EXPECT_EQ(0u, ResidentPages(dir.Sub("f")));
  ASSERT_TRUE((*f)->ReadAt(0, back.size(), back.data(), &got).ok());
  EXPECT_EQ(std::string(1 << 20, 'x'), back);
}

// Issue 14 "Recovery reads the medium", on the real file system: every
// segment's cached pages are gone before the first record is replayed, so
// what the scan hands to replay was read from the disk (after the sync).
TEST(Recovery, OpenReadsEverySegmentFromTheDiskNotThePageCache) {
  TempDir dir;
  if (PageCacheIsTheStorage(dir.path())) GTEST_SKIP() << dir.path() << " is tmpfs";
  Options o;  // the real Env, real syncs
  o.segment_bytes = 64 << 10;
  o.preallocate = false;
  {
    auto log = Log::Open(o, dir.path(), nullptr);
    ASSERT_TRUE(log.ok());
    for (Lsn lsn = 1; lsn <= 300; ++lsn)
      ASSERT_TRUE((*log)->Append(1, MakePayload(lsn, 1000)).ok());
    ASSERT_TRUE((*log)->WaitDurable(300).ok());
  }
  std::vector<std::string> segments;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    if (e.path().extension() == ".wal") segments.push_back(e.path().string());
  }
  ASSERT_GE(segments.size(), 3u);
  for (const std::string& seg : segments) {
    ReadAll(seg);  // the page cache holds every segment now
    ASSERT_GT(ResidentPages(seg), 0u) << seg;
  }
  size_t resident_at_first_record = 0;
  std::vector<Lsn> lsns;
  auto log = Log::Open(o, dir.path(), [&](Lsn lsn, uint8_t, std::string_view p) {
    if (lsns.empty()) {
      // Only the first segment has been read so far.
      for (const std::string& seg : segments) {
        if (seg != Seg(dir, 1)) resident_at_first_record += ResidentPages(seg);
      }
    }
    if (!PayloadMatches(lsn, p)) return Status::Corruption("bad payload");
    lsns.push_back(lsn);
    return Status::OK();
  });
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  EXPECT_EQ(Iota(300), lsns);
  EXPECT_EQ(0u, resident_at_first_record) << "pages cached before Open were replayed from memory";
}

}  // namespace
}  // namespace dtx::wal
