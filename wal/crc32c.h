// CRC32C (Castagnoli), as used by iSCSI, ext4 and LevelDB.
//
// Value/Extend pick the SSE4.2 crc32 instruction when the CPU has it (checked
// once at run time with __builtin_cpu_supports) and a table-driven portable
// implementation otherwise. Both are exposed so tests can check each against
// known vectors. All functions are thread-safe and allocate nothing.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dtx::wal::crc32c {

// CRC of data[0, n) continued from the CRC `crc` of some preceding bytes.
uint32_t Extend(uint32_t crc, const char* data, size_t n);
inline uint32_t Value(const char* data, size_t n) { return Extend(0, data, n); }

uint32_t ExtendPortable(uint32_t crc, const char* data, size_t n);
// Only valid when HardwareAvailable().
uint32_t ExtendHardware(uint32_t crc, const char* data, size_t n);
bool HardwareAvailable();

// A CRC stored next to the data it covers is masked, so that computing the
// CRC of a buffer that embeds CRCs does not degenerate (LevelDB crc32c.h).
inline constexpr uint32_t kMaskDelta = 0xa282ead8u;
inline uint32_t Mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kMaskDelta; }
inline uint32_t Unmask(uint32_t masked) {
  uint32_t rot = masked - kMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace dtx::wal::crc32c
