#include "coordinator/records.h"

#include <gtest/gtest.h>

namespace dtx::coordinator {
namespace {

Record RoundTrip(const Record& r) {
  std::string payload = EncodePayload(r);
  Result<Record> back = DecodeRecord(static_cast<uint8_t>(TypeOf(r)), payload);
  EXPECT_TRUE(back.ok()) << back.status().ToString();
  return back.ok() ? *back : Record(EpochRecord{});
}

DecisionRecord SampleDecision() {
  DecisionRecord d;
  d.txid = TxId{0x0102030405060708ull, 0xa1a2a3a4a5a6a7a8ull};
  d.epoch = 7;
  d.participants = {"127.0.0.1:4001", "127.0.0.1:4002"};
  return d;
}

TEST(CoordinatorRecords, EveryRecordRoundTrips) {
  EXPECT_EQ(RoundTrip(EpochRecord{42}), Record(EpochRecord{42}));
  EXPECT_EQ(RoundTrip(SampleDecision()), Record(SampleDecision()));
  EXPECT_EQ(RoundTrip(EndRecord{TxId{1, 2}}), Record(EndRecord{TxId{1, 2}}));
  EXPECT_EQ(RoundTrip(SyncRecord{7}), Record(SyncRecord{7}));
}

TEST(CoordinatorRecords, EncodingIsLittleEndianAsSpecified) {
  std::string p = EncodePayload(EpochRecord{0x0102});
  ASSERT_EQ(p.size(), 8u);
  EXPECT_EQ(static_cast<uint8_t>(p[0]), 0x02);
  EXPECT_EQ(static_cast<uint8_t>(p[1]), 0x01);
  std::string d = EncodePayload(SampleDecision());
  // txid(16) epoch(8) decision(1) count(4) 2 x (4 + 14)
  EXPECT_EQ(d.size(), 16u + 8 + 1 + 4 + 2 * (4 + 14));
  EXPECT_EQ(static_cast<uint8_t>(d[0]), 0x08);  // hi, least significant byte first
  EXPECT_EQ(static_cast<uint8_t>(d[24]), 1);    // decision = commit
}

TEST(CoordinatorRecords, EveryTruncationOfAPayloadIsCorruption) {
  for (const Record& r :
       {Record(EpochRecord{3}), Record(SampleDecision()), Record(EndRecord{TxId{5, 6}})}) {
    std::string p = EncodePayload(r);
    for (size_t n = 0; n < p.size(); ++n) {
      Result<Record> back = DecodeRecord(static_cast<uint8_t>(TypeOf(r)), p.substr(0, n));
      EXPECT_TRUE(back.status().IsCorruption()) << "prefix " << n;
    }
  }
}

// log_format.md: DECISION ends with the transaction's fingerprint; a record
// written before fingerprints (no fingerprint) still decodes, as "not known".
TEST(CoordinatorRecords, DecisionCarriesTheFingerprintAndOldDecisionsStillDecode) {
  DecisionRecord d = SampleDecision();
  d.fingerprint = Fingerprint{0x1122334455667788ull, 0x99aabbccddeeff00ull};
  EXPECT_EQ(RoundTrip(d), Record(d));
  const std::string with = EncodePayload(d);
  const std::string without = EncodePayload(SampleDecision());
  ASSERT_EQ(with.size(), without.size() + kFingerprintBytes);
  EXPECT_EQ(with.substr(0, without.size()), without);
  Result<Record> old = DecodeRecord(2, without);
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_FALSE(std::get<DecisionRecord>(*old).fingerprint.known());
  for (size_t n = 1; n < kFingerprintBytes; ++n) {
    EXPECT_TRUE(DecodeRecord(2, with.substr(0, without.size() + n)).status().IsCorruption())
        << "a torn fingerprint of " << n << " bytes";
  }
  EXPECT_TRUE(
      DecodeRecord(2, without + std::string(kFingerprintBytes, '\0')).status().IsCorruption())
      << "a zero fingerprint is never written";
  EXPECT_TRUE(DecodeRecord(2, with + "x").status().IsCorruption());
}

TEST(CoordinatorRecords, TrailingBytesAreCorruption) {
  std::string p = EncodePayload(EndRecord{TxId{1, 1}}) + "x";
  EXPECT_TRUE(DecodeRecord(3, p).status().IsCorruption());
}

TEST(CoordinatorRecords, UnknownTypeIsCorruption) {
  EXPECT_TRUE(DecodeRecord(0, "").status().IsCorruption());
  EXPECT_TRUE(DecodeRecord(99, "abc").status().IsCorruption());
}

TEST(CoordinatorRecords, HugeLengthsAreRejectedWithoutAllocating) {
  std::string p = EncodePayload(SampleDecision());
  // participant count (offset 25) = 0xffffffff
  std::string bad_count = p;
  for (int i = 0; i < 4; ++i) bad_count[25 + i] = static_cast<char>(0xff);
  EXPECT_TRUE(DecodeRecord(2, bad_count).status().IsCorruption());
  // first address length (offset 29) = 0x7fffffff
  std::string bad_len = p;
  bad_len[29] = static_cast<char>(0xff);
  bad_len[30] = static_cast<char>(0xff);
  bad_len[31] = static_cast<char>(0xff);
  bad_len[32] = static_cast<char>(0x7f);
  EXPECT_TRUE(DecodeRecord(2, bad_len).status().IsCorruption());
  // an address length within the limit but past the payload's end
  std::string past_end = p;
  past_end[29] = static_cast<char>(200);
  EXPECT_TRUE(DecodeRecord(2, past_end).status().IsCorruption());
}

TEST(CoordinatorRecords, UnknownDecisionValueAndBadEpochAreCorruption) {
  std::string p = EncodePayload(SampleDecision());
  p[24] = 0;  // an abort naming participants
  EXPECT_TRUE(DecodeRecord(2, p).status().IsCorruption());
  p[24] = 2;
  EXPECT_TRUE(DecodeRecord(2, p).status().IsCorruption());
  EXPECT_TRUE(DecodeRecord(1, EncodePayload(EpochRecord{1})).ok());
  std::string zero(8, '\0');
  EXPECT_TRUE(DecodeRecord(1, zero).status().IsCorruption());
}

// An ABORTED outcome answered to a client (docs/design.md "Aborts answered
// are logged"): decision 0, no participant, its reason, the fingerprint.
TEST(CoordinatorRecords, AbortDecisionRoundTripsWithItsReason) {
  DecisionRecord d;
  d.txid = TxId{3, 4};
  d.epoch = 2;
  d.commit = false;
  d.reason = AbortReason::kTimeout;
  d.fingerprint = Fingerprint{0x11, 0x22};
  EXPECT_EQ(RoundTrip(d), Record(d));
  std::string p = EncodePayload(d);
  // txid(16) epoch(8) decision(1) count(4) reason(1) fingerprint(16)
  ASSERT_EQ(p.size(), 16u + 8 + 1 + 4 + 1 + 16);
  EXPECT_EQ(static_cast<uint8_t>(p[24]), 0);
  EXPECT_EQ(static_cast<uint8_t>(p[29]), static_cast<uint8_t>(AbortReason::kTimeout));
  for (uint8_t bad : {0, 6, 255}) {
    std::string q = p;
    q[29] = static_cast<char>(bad);
    EXPECT_TRUE(DecodeRecord(2, q).status().IsCorruption()) << int{bad};
  }
  for (size_t n = 0; n < 30; ++n) {
    EXPECT_TRUE(DecodeRecord(2, p.substr(0, n)).status().IsCorruption()) << n;
  }
}

}  // namespace
}  // namespace dtx::coordinator

namespace dtx::coordinator {
namespace {

// SKIP (type 5): HaCore's run of skippable epochs; not part of Record.
TEST(CoordinatorRecords, SkipRoundTripsAndBadRangesOrTruncationsAreCorruption) {
  const std::string p = EncodeSkip(SkipRecord{3, 7});
  ASSERT_EQ(p.size(), 16u);
  Result<SkipRecord> back = DecodeSkip(p);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, (SkipRecord{3, 7}));
  for (size_t n = 0; n < p.size(); ++n)
    EXPECT_TRUE(DecodeSkip(p.substr(0, n)).status().IsCorruption()) << n;
  EXPECT_TRUE(DecodeSkip(p + "x").status().IsCorruption());
  std::string empty = p;
  empty[8] = 3;  // hi == lo
  EXPECT_TRUE(DecodeSkip(empty).status().IsCorruption());
  std::string negative = p;
  negative[7] = '\x80';  // lo < 0
  EXPECT_TRUE(DecodeSkip(negative).status().IsCorruption());
  EXPECT_FALSE(DecodeRecord(kSkipRecordType, p).ok()) << "the 2PC core never reads SKIP";
}

}  // namespace
}  // namespace dtx::coordinator
