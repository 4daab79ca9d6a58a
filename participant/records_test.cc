#include "participant/records.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "wal/crc32c.h"

namespace dtx::participant {
namespace {

// An encoded checkpoint: format byte, CRC, then the fields (records.md).
constexpr size_t kCpHeader = 1 + 4;
constexpr size_t kCpFixed = kCpHeader + 32;  // + lsn, retain_from, epoch, commit_counter

// Recomputes the CRC of a checkpoint edited by a test, so that the decoder
// judges the edited fields rather than the CRC.
std::string Recrc(std::string b) {
  uint32_t crc = wal::crc32c::Value(b.data(), 1);
  crc = wal::crc32c::Mask(wal::crc32c::Extend(crc, b.data() + kCpHeader, b.size() - kCpHeader));
  for (size_t i = 0; i < 4; ++i) b[1 + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  return b;
}

PrepareRecord SamplePrepare() {
  PrepareRecord r;
  r.txid = {0x0102030405060708ull, 42};
  r.epoch = 7;
  r.coordinator = "127.0.0.1:4000";
  r.writes = {
      {"a", std::string("value-a")}, {"b", std::nullopt}, {std::string("\0k", 2), std::string()}};
  r.read_keys = {"r1", "r2"};
  return r;
}

TEST(RecordsTest, PrepareRoundTrips) {
  PrepareRecord r = SamplePrepare();
  auto back = DecodePrepare(EncodePrepare(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, r);
}

TEST(RecordsTest, PrepareWithAnAttemptRoundTripsWithAndWithoutAFingerprint) {
  PrepareRecord r = SamplePrepare();
  r.attempt = {7, 3};
  auto back = DecodePrepare(EncodePrepare(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, r);
  EXPECT_FALSE(back->fingerprint.known());
  r.fingerprint = {0xabc, 0xdef};
  back = DecodePrepare(EncodePrepare(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, r);
  // Without an attempt the record is what older binaries wrote (and read).
  const size_t stamped = EncodePrepare(r).size();
  r.attempt = {};
  EXPECT_EQ(EncodePrepare(r).size() + 16, stamped) << "an attempt adds epoch:i64 seq:u64, no more";
  back = DecodePrepare(EncodePrepare(r));
  ASSERT_TRUE(back.ok());
  EXPECT_FALSE(back->attempt.known());
}

TEST(RecordsTest, PrepareWithAZeroOrNegativeAttemptIsCorrupt) {
  PrepareRecord r = SamplePrepare();
  r.attempt = {7, 3};
  std::string bytes = EncodePrepare(r);
  std::string zero = bytes;
  std::fill(zero.end() - 16, zero.end(), '\0');
  EXPECT_FALSE(DecodePrepare(zero).ok());
  std::string negative = bytes;
  negative[negative.size() - 9] = static_cast<char>(0x80);  // the epoch's top byte
  EXPECT_FALSE(DecodePrepare(negative).ok());
}

TEST(RecordsTest, CommitAbortEpochRoundTrip) {
  CommitRecord two{{1, 2}, 99, false, {}};
  auto c2 = DecodeCommit(EncodeCommit(two));
  ASSERT_TRUE(c2.ok());
  EXPECT_EQ(*c2, two);
  CommitRecord one{{1, 3}, 100, true, {{"x", std::string("1")}, {"y", std::nullopt}}};
  auto c1 = DecodeCommit(EncodeCommit(one));
  ASSERT_TRUE(c1.ok());
  EXPECT_EQ(*c1, one);
  CommitRecord stamped = one;  // a one-phase COMMIT carries its attempt
  stamped.attempt = {4, 9};
  auto cs = DecodeCommit(EncodeCommit(stamped));
  ASSERT_TRUE(cs.ok()) << cs.status().ToString();
  EXPECT_EQ(*cs, stamped);
  stamped.fingerprint = {5, 6};
  cs = DecodeCommit(EncodeCommit(stamped));
  ASSERT_TRUE(cs.ok()) << cs.status().ToString();
  EXPECT_EQ(*cs, stamped);
  auto a = DecodeAbort(EncodeAbort({{5, 6}}));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->txid, (TxId{5, 6}));
  auto e = DecodeEpoch(EncodeEpoch({12}));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->epoch, 12);
  EXPECT_EQ(e->owner, "");
  auto o = DecodeEpoch(EncodeEpoch({12, "127.0.0.1:4000"}));
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(*o, (EpochRecord{12, "127.0.0.1:4000"}));
}

// EPOCH records written before the owner was kept are the bare epoch: both
// forms decode; a truncated, empty or oversized owner is corruption.
TEST(RecordsTest, EpochOwnerIsOptionalAndBoundsChecked) {
  std::string old = EncodeEpoch({7});
  ASSERT_EQ(old.size(), 8u);
  std::string with = EncodeEpoch({7, "c0:1"});
  ASSERT_EQ(with.substr(0, 8), old);
  for (size_t n = 9; n < with.size(); ++n) {
    EXPECT_TRUE(DecodeEpoch(std::string_view(with).substr(0, n)).status().IsCorruption()) << n;
  }
  EXPECT_TRUE(DecodeEpoch(with + "x").status().IsCorruption());
  std::string empty = old + std::string(4, '\0');
  EXPECT_TRUE(DecodeEpoch(empty).status().IsCorruption());
  std::string huge = old + std::string("\xff\xff\xff\x7f", 4);
  EXPECT_TRUE(DecodeEpoch(huge).status().IsCorruption());
  // The checkpoint carries the owner after its outcomes; without it, "".
  Checkpoint cp{1000, 990, 3, 12345, 12000, {{{7, 1}, 12001}}};
  cp.epoch_owner = "c1:2";
  auto back = DecodeCheckpoint(EncodeCheckpoint(cp));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, cp);
  std::string b = EncodeCheckpoint(cp);
  for (size_t n = kCpFixed + 8 + 4 + 24 + 32 + 1; n < b.size(); ++n) {  // within the owner
    EXPECT_TRUE(DecodeCheckpoint(Recrc(b.substr(0, n))).status().IsCorruption()) << n;
  }
}

// PREPARE and COMMIT carry the transaction's fingerprint (records.md); records
// written before fingerprints decode with it unknown.
TEST(RecordsTest, PrepareAndCommitCarryTheFingerprintAndOldRecordsStillDecode) {
  const Fingerprint f{0x1111222233334444ull, 0x5555666677778888ull};
  PrepareRecord p = SamplePrepare();
  p.fingerprint = f;
  const std::string with = EncodePrepare(p);
  const std::string without = EncodePrepare(SamplePrepare());
  ASSERT_EQ(with.size(), without.size() + kFingerprintBytes);
  auto back = DecodePrepare(with);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, p);
  auto old = DecodePrepare(without);
  ASSERT_TRUE(old.ok());
  EXPECT_FALSE(old->fingerprint.known());
  for (size_t n = without.size() + 1; n < with.size(); ++n)
    EXPECT_TRUE(DecodePrepare(std::string_view(with).substr(0, n)).status().IsCorruption()) << n;
  EXPECT_TRUE(DecodePrepare(without + std::string(kFingerprintBytes, '\0')).status().IsCorruption())
      << "a zero fingerprint is never written";

  for (bool one_phase : {false, true}) {
    CommitRecord c{{1, 3}, 100, one_phase, {}, f};
    if (one_phase) c.writes = {{"x", std::string("1")}, {"y", std::nullopt}};
    const std::string bytes = EncodeCommit(c);
    EXPECT_EQ(bytes[24] & 0x02, 0x02) << "flag bit 1: the fingerprint follows";
    auto cb = DecodeCommit(bytes);
    ASSERT_TRUE(cb.ok()) << cb.status().ToString();
    EXPECT_EQ(*cb, c);
    for (size_t n = 0; n < bytes.size(); ++n)
      EXPECT_TRUE(DecodeCommit(std::string_view(bytes).substr(0, n)).status().IsCorruption()) << n;
    c.fingerprint = Fingerprint{};
    auto plain = DecodeCommit(EncodeCommit(c));
    ASSERT_TRUE(plain.ok());
    EXPECT_FALSE(plain->fingerprint.known());
    EXPECT_EQ(plain->writes, c.writes);
  }
}

TEST(RecordsTest, EveryTruncationIsCorruption) {
  std::string p = EncodePrepare(SamplePrepare());
  for (size_t n = 0; n < p.size(); ++n) {
    auto r = DecodePrepare(std::string_view(p).substr(0, n));
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  }
  std::string c = EncodeCommit({{1, 3}, 100, true, {{"x", std::string("1")}}});
  for (size_t n = 0; n < c.size(); ++n)
    EXPECT_TRUE(DecodeCommit(std::string_view(c).substr(0, n)).status().IsCorruption());
}

TEST(RecordsTest, TrailingBytesAreCorruption) {
  EXPECT_TRUE(DecodePrepare(EncodePrepare(SamplePrepare()) + "x").status().IsCorruption());
  EXPECT_TRUE(DecodeAbort(EncodeAbort({{1, 1}}) + "x").status().IsCorruption());
  EXPECT_TRUE(DecodeEpoch(EncodeEpoch({1}) + "x").status().IsCorruption());
}

TEST(RecordsTest, HugeLengthsAndCountsAreRejectedWithoutAllocating) {
  // A PREPARE whose coordinator length claims 4 GiB.
  std::string p(16 + 8, '\0');
  p += std::string("\xff\xff\xff\xff", 4);
  auto r = DecodePrepare(p);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("coordinator length"), std::string::npos)
      << r.status().ToString();
  // A one-phase COMMIT claiming 2^32-1 writes.
  std::string c(16, '\0');
  c += std::string("\x01\0\0\0\0\0\0\0", 8);  // version 1
  c += '\x01';                                // one-phase
  c += std::string("\xff\xff\xff\xff", 4);
  auto cr = DecodeCommit(c);
  ASSERT_FALSE(cr.ok());
  EXPECT_NE(cr.status().message().find("count"), std::string::npos) << cr.status().ToString();
}

TEST(RecordsTest, BadFieldValuesAreCorruption) {
  std::string c = EncodeCommit({{1, 3}, 100, false, {}});
  c[24] = 0x04;  // unknown flag
  EXPECT_TRUE(DecodeCommit(c).status().IsCorruption());
  std::string zero = EncodeCommit({{1, 3}, 100, false, {}});
  for (int i = 16; i < 24; ++i) zero[i] = 0;  // version 0
  EXPECT_TRUE(DecodeCommit(zero).status().IsCorruption());
  PrepareRecord pr = SamplePrepare();
  pr.writes = {{"k", std::string("v")}};
  pr.read_keys = {};
  std::string p = EncodePrepare(pr);
  // Layout: txid 16, epoch 8, coord len 4 + 14, count 4, key len 4 + 1, flag.
  size_t flag = 16 + 8 + 4 + pr.coordinator.size() + 4 + 4 + 1;
  p[flag] = 2;
  EXPECT_TRUE(DecodePrepare(p).status().IsCorruption());
  std::string empty_key = EncodePrepare(pr);
  empty_key[16 + 8 + 4 + pr.coordinator.size() + 4] = 0;  // key length 0
  EXPECT_TRUE(DecodePrepare(empty_key).status().IsCorruption());
}

TEST(RecordsTest, CheckpointRoundTripsAndEveryTruncationOrBadFieldIsCorruption) {
  Checkpoint cp{1000, 990, 3, 12345, 12000, {{{7, 1}, 12001}, {{7, 2}, 0}}};
  std::string b = EncodeCheckpoint(cp);
  ASSERT_EQ(b.size(), kCpFixed + 8 + 4 + 2 * 24 + 32);  // + the attempt fence (format 4)
  auto back = DecodeCheckpoint(b);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, cp);
  ASSERT_TRUE(DecodeCheckpoint(Recrc(b)).ok()) << "Recrc recomputes the same CRC";
  // Each edit below carries a recomputed CRC: the field checks catch it.
  for (size_t n = kCpHeader; n < b.size(); ++n) {
    EXPECT_TRUE(DecodeCheckpoint(Recrc(b.substr(0, n))).status().IsCorruption()) << n;
  }
  for (size_t n = 0; n < kCpHeader; ++n) {
    EXPECT_TRUE(DecodeCheckpoint(b.substr(0, n)).status().IsCorruption()) << n;
  }
  EXPECT_TRUE(DecodeCheckpoint(Recrc(b + "x")).status().IsCorruption());
  std::string format = b;
  format[0] = 5;
  EXPECT_TRUE(DecodeCheckpoint(Recrc(format)).status().IsCorruption());
  std::string count = b;
  count[kCpFixed + 8] = 3;  // three outcomes announced, two present
  EXPECT_TRUE(DecodeCheckpoint(Recrc(count)).status().IsCorruption());
  std::string huge = b;
  huge[kCpFixed + 8 + 3] = '\x7f';  // a count far beyond kCheckpointOutcomesMax: no allocation
  EXPECT_TRUE(DecodeCheckpoint(Recrc(huge)).status().IsCorruption());
  std::string forgotten = b;
  forgotten[kCpFixed + 7] = '\x7f';  // forgotten_version above the commit counter
  EXPECT_TRUE(DecodeCheckpoint(Recrc(forgotten)).status().IsCorruption());
  std::string version = b;
  version[kCpFixed + 8 + 4 + 16 + 7] = '\x80';  // negative outcome version
  EXPECT_TRUE(DecodeCheckpoint(Recrc(version)).status().IsCorruption());
  std::string retain = EncodeCheckpoint({10, 10, 0, 0, 0, {}});
  retain[kCpHeader + 8] = 11;  // retain_from 11 > lsn 10
  EXPECT_TRUE(DecodeCheckpoint(Recrc(retain)).status().IsCorruption());
  std::string epoch = b;
  epoch[kCpHeader + 23] = '\x80';  // top byte of the epoch: negative
  EXPECT_TRUE(DecodeCheckpoint(Recrc(epoch)).status().IsCorruption());
}

// Format 4 adds the attempt fence after the outcomes; a format-3 checkpoint
// (the same without it) still reads, with no fence; a negative fence epoch
// is corruption.
TEST(RecordsTest, CheckpointCarriesTheAttemptFenceAndFormat3StillReads) {
  Checkpoint cp{1000, 990, 3, 12345, 12000, {{{7, 1}, 12001}}};
  cp.epoch_owner = "c1:2";
  cp.forgotten_attempt = {3, 40};
  cp.attempt_seen = {3, 77};
  std::string b = EncodeCheckpoint(cp);
  auto back = DecodeCheckpoint(b);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, cp);
  const size_t fence = kCpFixed + 8 + 4 + 24;
  std::string v3 = b.substr(0, fence) + b.substr(fence + 32);
  v3[0] = 3;
  auto old = DecodeCheckpoint(Recrc(v3));
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->forgotten_attempt, Attempt{});
  EXPECT_EQ(old->epoch_owner, "c1:2");
  std::string negative = b;
  negative[fence + 7] = '\x80';
  EXPECT_TRUE(DecodeCheckpoint(Recrc(negative)).status().IsCorruption());
}

// The checkpoint's CRC (records.md "Checkpoint"): one changed byte anywhere
// - a field that would still decode to a plausible checkpoint (an lsn, an
// outcome, the epoch owner) included - is refused, and says so.
TEST(RecordsTest, AnyFlippedByteInACheckpointIsRefused) {
  Checkpoint cp{1000, 990, 3, 12345, 12000, {{{7, 1}, 12001}, {{7, 2}, 0}}};
  cp.epoch_owner = "coordinator-0:7101";
  const std::string b = EncodeCheckpoint(cp);
  ASSERT_TRUE(DecodeCheckpoint(b).ok());
  for (size_t i = 0; i < b.size(); ++i) {
    for (char mask : {'\x01', '\x80', '\xff'}) {
      std::string flipped = b;
      flipped[i] = static_cast<char>(flipped[i] ^ mask);
      auto got = DecodeCheckpoint(flipped);
      ASSERT_FALSE(got.ok()) << "byte " << i << " ^ " << int(static_cast<uint8_t>(mask));
      EXPECT_TRUE(got.status().IsCorruption()) << got.status().ToString();
      if (i >= 1) {  // past the format byte the CRC is what refuses it
        EXPECT_NE(got.status().message().find("CRC mismatch"), std::string::npos)
            << i << ": " << got.status().ToString();
      }
    }
  }
}

// Formats 1 and 2 had no CRC. They are refused rather than read: one changed
// first byte of a format-3 checkpoint could make it either.
TEST(RecordsTest, CheckpointFormatsWithoutACrcAreRefused) {
  const std::string b = EncodeCheckpoint({1000, 990, 3, 12345, 0, {}});
  std::string v2 = b.substr(0, 1) + b.substr(kCpHeader);  // the format-2 layout
  v2[0] = 2;
  std::string v1 = v2.substr(0, 33);
  v1[0] = 1;
  for (const std::string& old : {v1, v2}) {
    auto got = DecodeCheckpoint(old);
    ASSERT_FALSE(got.ok());
    EXPECT_TRUE(got.status().IsCorruption());
    EXPECT_NE(got.status().message().find("is not read"), std::string::npos)
        << got.status().ToString();
  }
}

}  // namespace
}  // namespace dtx::participant
