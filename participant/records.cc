#include "participant/records.h"

#include <cstdio>
#include <cstring>

#include "common/codec.h"
#include "wal/crc32c.h"

namespace dtx::participant {

namespace {

// First byte of an encoded Checkpoint (records.md "Checkpoint"). Formats 1
// and 2 (no CRC) are refused: one changed byte could turn a format-3
// checkpoint's first byte into either, and so skip its CRC.
constexpr uint8_t kCheckpointFormatNoCrcLast = 2;
constexpr uint8_t kCheckpointFormatNoFence = 3;  // read: without the attempt fence
constexpr uint8_t kCheckpointFormat = 4;
// The masked CRC32C that follows the format byte.
constexpr size_t kCheckpointCrcOffset = 1;
constexpr size_t kCheckpointHeaderBytes = kCheckpointCrcOffset + 4;

// The CRC32C of an encoded checkpoint: its format byte and every byte after
// the CRC field (unmasked).
uint32_t CheckpointCrc(std::string_view encoded) {
  DTX_CHECK(encoded.size() >= kCheckpointHeaderBytes);
  const uint32_t format = wal::crc32c::Value(encoded.data(), kCheckpointCrcOffset);
  return wal::crc32c::Extend(format, encoded.data() + kCheckpointHeaderBytes,
                             encoded.size() - kCheckpointHeaderBytes);
}

// Bytes of one encoded CheckpointOutcome: txid + version.
constexpr size_t kCheckpointOutcomeBytes = 16 + 8;

// Flag bits of a COMMIT record.
constexpr uint8_t kCommitFlagOnePhase = 0x01;
constexpr uint8_t kCommitFlagFingerprint = 0x02;  // the fingerprint follows the flags
constexpr uint8_t kCommitFlagAttempt = 0x04;      // the attempt follows (the fingerprint)
constexpr uint8_t kCommitFlagsKnown =
    kCommitFlagOnePhase | kCommitFlagFingerprint | kCommitFlagAttempt;

// The shared codec plus this format's write sets.
class Writer : public codec::Writer {
 public:
  void Writes(const std::vector<WriteOp>& writes) {
    DTX_CHECK(writes.size() <= kTxKeysMax);
    U32(static_cast<uint32_t>(writes.size()));
    for (const WriteOp& w : writes) {
      DTX_CHECK(!w.key.empty() && w.key.size() <= kKeyBytesMax);
      Bytes(w.key);
      U8(w.value.has_value() ? 1 : 0);
      if (w.value.has_value()) {
        DTX_CHECK(w.value->size() <= kValueBytesMax);
        Bytes(*w.value);
      }
    }
  }
  void AttemptField(const Attempt& a) {
    DTX_CHECK(a.epoch >= 0);
    I64(a.epoch);
    U64(a.seq);
  }
};

class Reader : public codec::Reader {
 public:
  using codec::Reader::Reader;

  Status Count(uint32_t* n, const char* field) {
    DTX_RETURN_IF_ERROR(U32(n));
    if (*n > kTxKeysMax) {
      return Bad(std::string(field) + " count " + std::to_string(*n) + " exceeds " +
                 std::to_string(kTxKeysMax));
    }
    return Status::OK();
  }
  Status Writes(std::vector<WriteOp>* writes) {
    uint32_t n = 0;
    DTX_RETURN_IF_ERROR(Count(&n, "write"));
    writes->clear();
    writes->reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      WriteOp w;
      DTX_RETURN_IF_ERROR(Key(&w.key));
      uint8_t has_value = 0;
      DTX_RETURN_IF_ERROR(U8(&has_value));
      if (has_value > 1) return Bad("write value flag " + std::to_string(has_value));
      if (has_value == 1) {
        w.value.emplace();
        DTX_RETURN_IF_ERROR(Bytes(&*w.value, kValueBytesMax, "value"));
      }
      writes->push_back(std::move(w));
    }
    return Status::OK();
  }
  Status Key(std::string* key) {
    DTX_RETURN_IF_ERROR(Bytes(key, kKeyBytesMax, "key"));
    if (key->empty()) return Bad("empty key");
    return Status::OK();
  }
  // `zero_ok`: the all-zero attempt ("none") is a value, not corruption.
  Status AttemptField(Attempt* a, bool zero_ok) {
    DTX_RETURN_IF_ERROR(I64(&a->epoch));
    DTX_RETURN_IF_ERROR(U64(&a->seq));
    if (a->epoch < 0) return Bad("negative attempt epoch");
    if (!zero_ok && !a->known()) return Bad("zero attempt");
    return Status::OK();
  }
};

}  // namespace

std::string EncodePrepare(const PrepareRecord& r) {
  DTX_CHECK(r.coordinator.size() <= kCoordinatorAddressBytesMax);
  DTX_CHECK(r.read_keys.size() <= kTxKeysMax);
  Writer w;
  w.Tx(r.txid);
  w.I64(r.epoch);
  w.Bytes(r.coordinator);
  w.Writes(r.writes);
  w.U32(static_cast<uint32_t>(r.read_keys.size()));
  for (const std::string& k : r.read_keys) {
    DTX_CHECK(!k.empty() && k.size() <= kKeyBytesMax);
    w.Bytes(k);
  }
  // Optional tail: the fingerprint, then the attempt (which needs the
  // fingerprint before it: all zero when not known).
  if (r.attempt.known()) {
    w.U64(r.fingerprint.hi);
    w.U64(r.fingerprint.lo);
  } else if (r.fingerprint.known()) {
    w.Fp(r.fingerprint);
  }
  if (r.attempt.known()) w.AttemptField(r.attempt);
  return w.Take();
}

std::string EncodeCommit(const CommitRecord& r) {
  DTX_CHECK(r.version > 0);
  DTX_CHECK(r.one_phase || r.writes.empty());
  Writer w;
  w.Tx(r.txid);
  w.I64(r.version);
  w.U8(static_cast<uint8_t>((r.one_phase ? kCommitFlagOnePhase : 0) |
                            (r.fingerprint.known() ? kCommitFlagFingerprint : 0) |
                            (r.attempt.known() ? kCommitFlagAttempt : 0)));
  if (r.fingerprint.known()) w.Fp(r.fingerprint);
  if (r.attempt.known()) w.AttemptField(r.attempt);
  if (r.one_phase) w.Writes(r.writes);
  return w.Take();
}

std::string EncodeAbort(const AbortRecord& r) {
  Writer w;
  w.Tx(r.txid);
  return w.Take();
}

std::string EncodeEpoch(const EpochRecord& r) {
  DTX_CHECK(r.owner.size() <= kCoordinatorAddressBytesMax);
  Writer w;
  w.I64(r.epoch);
  if (!r.owner.empty()) w.Bytes(r.owner);
  return w.Take();
}

std::string EncodeCheckpoint(const Checkpoint& c) {
  DTX_CHECK(c.retain_from <= c.lsn);
  DTX_CHECK(c.epoch >= 0 && c.commit_counter >= 0);
  Writer w;
  w.U8(kCheckpointFormat);
  w.U32(0);  // the CRC, filled in below
  w.U64(c.lsn);
  w.U64(c.retain_from);
  w.I64(c.epoch);
  w.I64(c.commit_counter);
  DTX_CHECK(c.forgotten_version >= 0 && c.forgotten_version <= c.commit_counter);
  DTX_CHECK(c.outcomes.size() <= kCheckpointOutcomesMax);
  w.I64(c.forgotten_version);
  w.U32(static_cast<uint32_t>(c.outcomes.size()));
  for (const CheckpointOutcome& o : c.outcomes) {
    DTX_CHECK(o.version >= 0 && o.version <= c.commit_counter);
    w.Tx(o.txid);
    w.I64(o.version);
  }
  w.AttemptField(c.forgotten_attempt);
  w.AttemptField(c.attempt_seen);
  DTX_CHECK(c.epoch_owner.size() <= kCoordinatorAddressBytesMax);
  if (!c.epoch_owner.empty()) w.Bytes(c.epoch_owner);
  std::string out = w.Take();
  const uint32_t crc = wal::crc32c::Mask(CheckpointCrc(out));
  for (size_t i = 0; i < 4; ++i)
    out[kCheckpointCrcOffset + i] = static_cast<char>((crc >> (8 * i)) & 0xff);
  return out;
}

Result<PrepareRecord> DecodePrepare(std::string_view payload) {
  Reader in(payload, "PREPARE");
  PrepareRecord r;
  DTX_RETURN_IF_ERROR(in.Tx(&r.txid));
  DTX_RETURN_IF_ERROR(in.I64(&r.epoch));
  DTX_RETURN_IF_ERROR(in.Bytes(&r.coordinator, kCoordinatorAddressBytesMax, "coordinator"));
  DTX_RETURN_IF_ERROR(in.Writes(&r.writes));
  uint32_t n = 0;
  DTX_RETURN_IF_ERROR(in.Count(&n, "read key"));
  if (n + r.writes.size() > kTxKeysMax) return in.Bad("more than kTxKeysMax keys");
  r.read_keys.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    std::string k;
    DTX_RETURN_IF_ERROR(in.Key(&k));
    r.read_keys.push_back(std::move(k));
  }
  if (in.left() > 0) {
    DTX_RETURN_IF_ERROR(in.U64(&r.fingerprint.hi));
    DTX_RETURN_IF_ERROR(in.U64(&r.fingerprint.lo));
    if (in.left() == 0 && !r.fingerprint.known()) return in.Bad("zero fingerprint");
  }
  if (in.left() > 0) DTX_RETURN_IF_ERROR(in.AttemptField(&r.attempt, /*zero_ok=*/false));
  DTX_RETURN_IF_ERROR(in.End());
  return r;
}

Result<CommitRecord> DecodeCommit(std::string_view payload) {
  Reader in(payload, "COMMIT");
  CommitRecord r;
  DTX_RETURN_IF_ERROR(in.Tx(&r.txid));
  DTX_RETURN_IF_ERROR(in.I64(&r.version));
  if (r.version <= 0) return in.Bad("version " + std::to_string(r.version) + " is not positive");
  uint8_t flags = 0;
  DTX_RETURN_IF_ERROR(in.U8(&flags));
  if ((flags & ~kCommitFlagsKnown) != 0) return in.Bad("unknown flags " + std::to_string(flags));
  r.one_phase = (flags & kCommitFlagOnePhase) != 0;
  if ((flags & kCommitFlagFingerprint) != 0) DTX_RETURN_IF_ERROR(in.Fp(&r.fingerprint));
  if ((flags & kCommitFlagAttempt) != 0) {
    DTX_RETURN_IF_ERROR(in.AttemptField(&r.attempt, /*zero_ok=*/false));
  }
  if (r.one_phase) DTX_RETURN_IF_ERROR(in.Writes(&r.writes));
  DTX_RETURN_IF_ERROR(in.End());
  return r;
}

Result<AbortRecord> DecodeAbort(std::string_view payload) {
  Reader in(payload, "ABORT");
  AbortRecord r;
  DTX_RETURN_IF_ERROR(in.Tx(&r.txid));
  DTX_RETURN_IF_ERROR(in.End());
  return r;
}

Result<EpochRecord> DecodeEpoch(std::string_view payload) {
  Reader in(payload, "EPOCH");
  EpochRecord r;
  DTX_RETURN_IF_ERROR(in.I64(&r.epoch));
  if (r.epoch < 0) return in.Bad("negative epoch");
  if (in.left() > 0) {
    DTX_RETURN_IF_ERROR(in.Bytes(&r.owner, kCoordinatorAddressBytesMax, "owner"));
    if (r.owner.empty()) return in.Bad("empty owner");
  }
  DTX_RETURN_IF_ERROR(in.End());
  return r;
}

Result<Checkpoint> DecodeCheckpoint(std::string_view bytes) {
  Reader in(bytes, "checkpoint");
  uint8_t format = 0;
  DTX_RETURN_IF_ERROR(in.U8(&format));
  if (format >= 1 && format <= kCheckpointFormatNoCrcLast) {
    return in.Bad("format " + std::to_string(format) +
                  " is not read: written before checkpoints carried a CRC (format " +
                  std::to_string(kCheckpointFormat) + "), or a corrupt first byte");
  }
  if (format != kCheckpointFormat && format != kCheckpointFormatNoFence)
    return in.Bad("unknown format " + std::to_string(format));
  uint32_t stored = 0;
  DTX_RETURN_IF_ERROR(in.U32(&stored));
  // Nothing after the CRC is looked at before it matches.
  const uint32_t computed = CheckpointCrc(bytes);
  if (wal::crc32c::Unmask(stored) != computed) {
    char why[96];
    std::snprintf(why, sizeof(why), "CRC mismatch (stored %08x, computed %08x over %zu bytes)",
                  wal::crc32c::Unmask(stored), computed, bytes.size() - 4);
    return in.Bad(why);
  }
  Checkpoint c;
  DTX_RETURN_IF_ERROR(in.U64(&c.lsn));
  DTX_RETURN_IF_ERROR(in.U64(&c.retain_from));
  DTX_RETURN_IF_ERROR(in.I64(&c.epoch));
  DTX_RETURN_IF_ERROR(in.I64(&c.commit_counter));
  if (c.retain_from > c.lsn)
    return in.Bad("retain_from " + std::to_string(c.retain_from) + " above lsn " +
                  std::to_string(c.lsn));
  if (c.epoch < 0) return in.Bad("negative epoch");
  if (c.commit_counter < 0) return in.Bad("negative commit counter");
  DTX_RETURN_IF_ERROR(in.I64(&c.forgotten_version));
  if (c.forgotten_version < 0 || c.forgotten_version > c.commit_counter) {
    return in.Bad("forgotten_version " + std::to_string(c.forgotten_version) +
                  " outside 0..commit counter");
  }
  uint32_t n = 0;
  DTX_RETURN_IF_ERROR(in.U32(&n));
  if (n > kCheckpointOutcomesMax) {
    return in.Bad("outcome count " + std::to_string(n) + " exceeds " +
                  std::to_string(kCheckpointOutcomesMax));
  }
  if (in.left() < size_t{n} * kCheckpointOutcomeBytes) {
    return in.Bad(std::to_string(n) + " outcomes need " +
                  std::to_string(size_t{n} * kCheckpointOutcomeBytes) + " bytes, " +
                  std::to_string(in.left()) + " left");
  }
  c.outcomes.resize(n);
  for (CheckpointOutcome& o : c.outcomes) {
    DTX_RETURN_IF_ERROR(in.Tx(&o.txid));
    DTX_RETURN_IF_ERROR(in.I64(&o.version));
    if (o.version < 0 || o.version > c.commit_counter) {
      return in.Bad("outcome version " + std::to_string(o.version) + " outside 0..commit counter");
    }
  }
  if (format == kCheckpointFormat) {
    DTX_RETURN_IF_ERROR(in.AttemptField(&c.forgotten_attempt, /*zero_ok=*/true));
    DTX_RETURN_IF_ERROR(in.AttemptField(&c.attempt_seen, /*zero_ok=*/true));
  }
  if (in.left() > 0) {
    DTX_RETURN_IF_ERROR(in.Bytes(&c.epoch_owner, kCoordinatorAddressBytesMax, "epoch owner"));
    if (c.epoch_owner.empty()) return in.Bad("empty epoch owner");
  }
  DTX_RETURN_IF_ERROR(in.End());
  return c;
}

}  // namespace dtx::participant
