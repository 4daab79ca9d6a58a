#include "coordinator/fingerprint.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace dtx::coordinator {
namespace {

const std::vector<ReadItem> kReads = {{"alice", 3}, {"bob", 0}, {"carol", 9}};
const std::vector<WriteItem> kWrites = {{"alice", std::string("7")}, {"dave", std::nullopt}};

TEST(TxFingerprint, OrderOfReadsAndWritesDoesNotMatter) {
  const Fingerprint f = TxFingerprint(kReads, kWrites);
  EXPECT_TRUE(f.known());
  std::vector<ReadItem> reads(kReads.rbegin(), kReads.rend());
  std::vector<WriteItem> writes(kWrites.rbegin(), kWrites.rend());
  EXPECT_EQ(TxFingerprint(reads, writes), f);
  EXPECT_EQ(TxFingerprint(kReads, kWrites), f) << "deterministic";
}

TEST(TxFingerprint, EveryDifferenceInContentChangesIt) {
  std::vector<Fingerprint> seen = {TxFingerprint(kReads, kWrites)};
  auto variant = [&](std::vector<ReadItem> r, std::vector<WriteItem> w) {
    seen.push_back(TxFingerprint(r, w));
  };
  {  // another version read
    auto r = kReads;
    r[1].version = 1;
    variant(r, kWrites);
  }
  {  // a read left out
    auto r = kReads;
    r.pop_back();
    variant(r, kWrites);
  }
  {  // another value written
    auto w = kWrites;
    w[0].value = "8";
    variant(kReads, w);
  }
  {  // a delete made a put of the empty value
    auto w = kWrites;
    w[1].value = "";
    variant(kReads, w);
  }
  {  // a key moved from the read set to the write set
    auto r = kReads;
    r.erase(r.begin() + 1);
    auto w = kWrites;
    w.push_back({"bob", std::nullopt});
    variant(r, w);
  }
  // Length prefixes: "ab"+"c" is not "a"+"bc".
  variant({}, {{"ab", std::string("c")}});
  variant({}, {{"a", std::string("bc")}});
  variant({}, {});
  variant({{"x", 0}}, {});
  variant({}, {{"x", std::nullopt}});
  std::set<std::pair<uint64_t, uint64_t>> distinct;
  for (const Fingerprint& f : seen) {
    EXPECT_TRUE(f.known());
    distinct.emplace(f.hi, f.lo);
  }
  EXPECT_EQ(distinct.size(), seen.size());
}

}  // namespace
}  // namespace dtx::coordinator
