#include "wal/format.h"

#include <charconv>
#include <cinttypes>
#include <cstdio>

#include "wal/crc32c.h"

namespace dtx::wal::format {

std::string EncodeSegmentHeader(Lsn first_lsn) {
  std::string h(kSegmentHeaderBytes, '\0');
  std::memcpy(h.data(), kSegmentMagic, sizeof(kSegmentMagic));
  PutU32(h.data() + 8, kFormatVersion);
  PutU32(h.data() + 12, 0);
  PutU64(h.data() + 16, first_lsn);
  PutU32(h.data() + 24, 0);
  PutU32(h.data() + kSegmentHeaderCrcOffset,
         crc32c::Mask(crc32c::Value(h.data(), kSegmentHeaderCrcOffset)));
  return h;
}

Status DecodeSegmentHeader(std::string_view b, Lsn* first_lsn) {
  if (b.size() < kSegmentHeaderBytes) {
    return Status::Corruption("segment header is " + std::to_string(b.size()) + " bytes, needs " +
                              std::to_string(kSegmentHeaderBytes));
  }
  if (std::memcmp(b.data(), kSegmentMagic, sizeof(kSegmentMagic)) != 0) {
    return Status::Corruption("bad magic: not a dtx WAL segment");
  }
  uint32_t version = GetU32(b.data() + 8);
  if (version != kFormatVersion) {
    return Status::Corruption("unsupported WAL format version " + std::to_string(version) +
                              " (this build reads version " + std::to_string(kFormatVersion) + ")");
  }
  uint32_t want = GetU32(b.data() + kSegmentHeaderCrcOffset);
  if (crc32c::Mask(crc32c::Value(b.data(), kSegmentHeaderCrcOffset)) != want) {
    return Status::Corruption("segment header checksum mismatch");
  }
  if (GetU32(b.data() + 12) != 0 || GetU32(b.data() + 24) != 0) {
    return Status::Corruption("segment header reserved fields are not zero");
  }
  *first_lsn = GetU64(b.data() + 16);
  if (*first_lsn == 0) return Status::Corruption("segment header first LSN is 0");
  return Status::OK();
}

uint32_t RecordCrc(uint8_t type, std::string_view payload) {
  char t = static_cast<char>(type);
  uint32_t c = crc32c::Value(&t, 1);
  return crc32c::Mask(crc32c::Extend(c, payload.data(), payload.size()));
}

void EncodeRecordHeader(char* dst, uint8_t type, std::string_view payload) {
  PutU32(dst, RecordCrc(type, payload));
  PutU32(dst + 4, static_cast<uint32_t>(payload.size()));
  dst[8] = static_cast<char>(type);
}

std::string EncodeSegmentEnd(Lsn next_lsn) {
  std::string r(kSegmentEndRecordBytes, '\0');
  PutU64(r.data() + kRecordHeaderBytes, next_lsn);
  EncodeRecordHeader(r.data(), kTypeSegmentEnd,
                     std::string_view(r.data() + kRecordHeaderBytes, kSegmentEndPayloadBytes));
  return r;
}

std::string SegmentFileName(Lsn first_lsn) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%020" PRIu64 ".wal", first_lsn);
  return buf;
}

bool ParseSegmentFileName(std::string_view name, Lsn* first_lsn) {
  if (name.size() != kSegmentNameDigits + kSegmentSuffix.size() ||
      !name.ends_with(kSegmentSuffix)) {
    return false;
  }
  uint64_t v = 0;
  const char* end = name.data() + kSegmentNameDigits;
  auto [p, ec] = std::from_chars(name.data(), end, v);
  if (ec != std::errc() || p != end || v == 0) return false;
  for (const char* q = name.data(); q < end; ++q) {
    if (*q < '0' || *q > '9') return false;
  }
  *first_lsn = v;
  return true;
}

}  // namespace dtx::wal::format
