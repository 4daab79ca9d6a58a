// Coordinator decision-log records: a pure codec (no I/O).
//
// Format and grammar: coordinator/log_format.md. Each record is a WAL record
// whose type byte is a RecordType below (0 is reserved by the WAL) and whose
// payload is the encoding described there. Decoding never trusts a length:
// every read is bounds-checked and every failure is Status::Corruption.
//
// Thread-safety: free functions on values; safe from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"
#include "common/types.h"

namespace dtx::coordinator {

enum class RecordType : uint8_t {
  kEpoch = 1,
  kDecision = 2,
  kEnd = 3,
  kSync = 4,
};
static_assert(static_cast<uint8_t>(RecordType::kEpoch) == 1, "log_format.md: EPOCH is type 1");
static_assert(static_cast<uint8_t>(RecordType::kDecision) == 2,
              "log_format.md: DECISION is type 2");
static_assert(static_cast<uint8_t>(RecordType::kEnd) == 3, "log_format.md: END is type 3");
static_assert(static_cast<uint8_t>(RecordType::kSync) == 4, "log_format.md: SYNC is type 4");

// Largest number of participants one DECISION may name; also the largest
// number of participants one transaction may touch.
inline constexpr uint32_t kDecisionParticipantsMax = 256;
// Largest participant address ("host:port") a DECISION may carry.
inline constexpr uint32_t kParticipantAddressBytesMax = 256;

struct EpochRecord {
  Epoch epoch = 0;
  friend bool operator==(const EpochRecord&, const EpochRecord&) = default;
};

struct DecisionRecord {
  TxId txid;
  Epoch epoch = 0;
  // false: an ABORTED outcome answered to a client, logged before the answer
  // (docs/design.md "Aborts answered are logged"); names no participant.
  bool commit = true;
  std::vector<std::string> participants;  // host:port, shard order (commit only)
  AbortReason reason = AbortReason::kConflict;  // abort only
  // The transaction's content (common/types.h); not known in records written
  // before fingerprints (their payload ends after the participants).
  Fingerprint fingerprint = {};
  friend bool operator==(const DecisionRecord&, const DecisionRecord&) = default;
};

struct EndRecord {
  TxId txid;
  friend bool operator==(const EndRecord&, const EndRecord&) = default;
};

// Written only in a backup's log: a snapshot of the primary's open decisions
// follows (its DECISIONs); every DECISION before it without END is closed.
struct SyncRecord {
  int64_t generation = 0;
  friend bool operator==(const SyncRecord&, const SyncRecord&) = default;
};

using Record = std::variant<EpochRecord, DecisionRecord, EndRecord, SyncRecord>;

// SKIP (WAL type 5, log_format.md): epochs (lo, hi] this node may skip -
// each was granted to it by a blocking set of participants (HaCore, "Epoch
// skipping"). Written and read by HaCore only, never replicated and not part
// of `Record` (the 2PC core never sees it). Not forced: losing it only
// forgets what may be skipped.
inline constexpr uint8_t kSkipRecordType = 5;
struct SkipRecord {
  Epoch lo = 0;
  Epoch hi = 0;  // > lo >= 0
  friend bool operator==(const SkipRecord&, const SkipRecord&) = default;
};
std::string EncodeSkip(const SkipRecord& r);
Result<SkipRecord> DecodeSkip(std::string_view payload);

// The WAL type byte for a record.
RecordType TypeOf(const Record& r);

// Encodes the payload of `r`. DTX_CHECKs the limits above (a record that
// breaks them is a programmer error: the core validates before it logs).
std::string EncodePayload(const Record& r);

// Decodes a payload read back from the WAL. Corruption for an unknown type,
// a short or over-long payload, or a field past its limit.
Result<Record> DecodeRecord(uint8_t type, std::string_view payload);

}  // namespace dtx::coordinator
