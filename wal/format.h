// On-disk constants of the write-ahead log. The grammar, the recovery rules
// and the reason for each are in docs/wal-format.md; change neither without
// the other, and bump kFormatVersion for any incompatible change.
//
// All integers are little-endian. A log directory holds segment files named
// "<first LSN as 20 decimal digits>.wal":
//
//   segment      := header record* [end-marker] zero-fill*
//   header       := magic[8] version:u32 reserved:u32(=0) first_lsn:u64
//                   reserved:u32(=0) header_crc:u32        (32 bytes)
//   record       := crc:u32 length:u32 type:u8 payload[length]
//   end-marker   := crc:u32 length:u32(=8) type:u8(=0) next_lsn:u64
//
// crc is the masked CRC32C of type+payload; header_crc is the masked CRC32C
// of the first 28 header bytes.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "wal/wal.h"

namespace dtx::wal::format {

static_assert(
    std::endian::native == std::endian::little,
    "the WAL encoder writes host integers with memcpy; add byte swapping for big-endian hosts");

inline constexpr char kSegmentMagic[8] = {'d', 't', 'x', 'W', 'A', 'L', '\r', '\n'};
inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kSegmentHeaderBytes = 32;
inline constexpr size_t kSegmentHeaderCrcOffset = 28;
inline constexpr size_t kRecordHeaderBytes = 9;  // crc:u32 length:u32 type:u8
// Type 0 is reserved for the log itself: the segment end marker.
inline constexpr uint8_t kTypeSegmentEnd = 0;
inline constexpr size_t kSegmentEndPayloadBytes = 8;  // next_lsn:u64
inline constexpr size_t kSegmentEndRecordBytes = kRecordHeaderBytes + kSegmentEndPayloadBytes;
// A length field above this is corruption, never an allocation.
inline constexpr uint32_t kRecordPayloadBytesMax = wal::kRecordPayloadBytesMax;
// "00000000000000000001.wal"
inline constexpr size_t kSegmentNameDigits = 20;
inline constexpr std::string_view kSegmentSuffix = ".wal";
inline constexpr std::string_view kTempSuffix = ".tmp";
inline constexpr std::string_view kLockFileName = "LOCK";
// Smallest segment_bytes accepted: a header, one small record and an end marker.
inline constexpr uint64_t kSegmentBytesMin = 256;

static_assert(sizeof(kSegmentMagic) == 8);
static_assert(kSegmentHeaderBytes == 8 + 4 + 4 + 8 + 4 + 4);
static_assert(kSegmentHeaderCrcOffset == kSegmentHeaderBytes - 4);
static_assert(kRecordHeaderBytes == 4 + 4 + 1);
static_assert(kSegmentEndRecordBytes == 17);
static_assert(kRecordPayloadBytesMax == (16u << 20), "docs/wal-format.md states 16 MiB");
static_assert(uint64_t{kRecordPayloadBytesMax} + kRecordHeaderBytes < (uint64_t{1} << 32));
static_assert(kSegmentBytesMin >=
              kSegmentHeaderBytes + kRecordHeaderBytes + kSegmentEndRecordBytes);

inline void PutU32(char* p, uint32_t v) { std::memcpy(p, &v, 4); }
inline void PutU64(char* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline uint32_t GetU32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint64_t GetU64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// The 32-byte header of a segment whose first record has `first_lsn`.
std::string EncodeSegmentHeader(Lsn first_lsn);

// Decodes a header. Corruption (with a reason, no file name) if anything is off.
Status DecodeSegmentHeader(std::string_view bytes, Lsn* first_lsn);

// Masked CRC of a record: over the type byte, then the payload.
uint32_t RecordCrc(uint8_t type, std::string_view payload);

// Writes the 9-byte record header for (type, payload) to `dst`.
void EncodeRecordHeader(char* dst, uint8_t type, std::string_view payload);

// The complete end marker saying the next segment starts at `next_lsn`.
std::string EncodeSegmentEnd(Lsn next_lsn);

// "<dir>/<20 digits>.wal"
std::string SegmentFileName(Lsn first_lsn);
// Parses a segment file name; false if `name` is not one.
bool ParseSegmentFileName(std::string_view name, Lsn* first_lsn);

}  // namespace dtx::wal::format
