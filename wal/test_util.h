// Helpers shared by the WAL tests (not part of the library).
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/check.h"
#include "wal/wal.h"

namespace dtx::wal::testing {

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/dtx-wal-test-XXXXXX";
    DTX_CHECK(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string Sub(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// A payload that names its own LSN: [lsn:u64][size:u32][bytes derived from lsn].
inline std::string MakePayload(Lsn lsn, size_t size) {
  if (size < 12) size = 12;
  std::string p(size, '\0');
  std::memcpy(p.data(), &lsn, 8);
  uint32_t s = static_cast<uint32_t>(size);
  std::memcpy(p.data() + 8, &s, 4);
  uint64_t x = lsn * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 12; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = static_cast<char>(x);
  }
  return p;
}

// Size of the payload for `lsn` in tests that vary sizes deterministically.
inline size_t PayloadSizeFor(Lsn lsn, size_t max_bytes) {
  return 12 + (lsn * 7919) % (max_bytes - 11);
}

// True if `payload` is exactly MakePayload(lsn, payload.size()).
inline bool PayloadMatches(Lsn lsn, std::string_view payload) {
  if (payload.size() < 12) return false;
  return payload == MakePayload(lsn, payload.size());
}

// The record type tests use for the record with `lsn` (never 0).
inline uint8_t TypeFor(Lsn lsn) { return static_cast<uint8_t>(1 + lsn % 255); }

}  // namespace dtx::wal::testing
