#include "wal/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>

namespace dtx::wal::crc32c {
namespace {

using ExtendFn = uint32_t (*)(uint32_t, const char*, size_t);

// Vectors from RFC 3720 (iSCSI) appendix B.4 and the "123456789" check value.
void CheckKnownVectors(ExtendFn fn) {
  char buf[32];
  std::memset(buf, 0, sizeof(buf));
  EXPECT_EQ(0x8a9136aau, fn(0, buf, sizeof(buf)));
  std::memset(buf, 0xff, sizeof(buf));
  EXPECT_EQ(0x62a8ab43u, fn(0, buf, sizeof(buf)));
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<char>(i);
  EXPECT_EQ(0x46dd794eu, fn(0, buf, sizeof(buf)));
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<char>(31 - i);
  EXPECT_EQ(0x113fdb5cu, fn(0, buf, sizeof(buf)));
  EXPECT_EQ(0xe3069283u, fn(0, "123456789", 9));
  EXPECT_EQ(0u, fn(0, "", 0));
  // Extend continues a CRC: split anywhere, same answer.
  const std::string s = "hello crc32c, extend me across an unaligned split";
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    EXPECT_EQ(fn(0, s.data(), s.size()), fn(fn(0, s.data(), cut), s.data() + cut, s.size() - cut))
        << cut;
  }
}

TEST(Crc32c, PortableMatchesKnownVectors) { CheckKnownVectors(&ExtendPortable); }

TEST(Crc32c, HardwareMatchesKnownVectors) {
  if (!HardwareAvailable()) GTEST_SKIP() << "CPU has no SSE4.2";
  CheckKnownVectors(&ExtendHardware);
}

TEST(Crc32c, DispatchedMatchesKnownVectors) { CheckKnownVectors(&Extend); }

TEST(Crc32c, HardwareAndPortableAgreeOnRandomUnalignedBuffers) {
  if (!HardwareAvailable()) GTEST_SKIP() << "CPU has no SSE4.2";
  std::mt19937 rng(42);
  std::string buf(5000, '\0');
  for (char& c : buf) c = static_cast<char>(rng());
  for (int i = 0; i < 500; ++i) {
    size_t off = rng() % 64, n = rng() % (buf.size() - off);
    uint32_t seed = rng();
    ASSERT_EQ(ExtendPortable(seed, buf.data() + off, n), ExtendHardware(seed, buf.data() + off, n))
        << "off=" << off << " n=" << n;
  }
}

TEST(Crc32c, MaskRoundTripsAndChangesTheValue) {
  uint32_t crc = Value("foo", 3);
  EXPECT_NE(crc, Mask(crc));
  EXPECT_NE(crc, Mask(Mask(crc)));
  EXPECT_EQ(crc, Unmask(Mask(crc)));
  EXPECT_EQ(crc, Unmask(Unmask(Mask(Mask(crc)))));
}

}  // namespace
}  // namespace dtx::wal::crc32c
