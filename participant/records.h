// Participant WAL records: types and a pure codec (no I/O).
//
// Format (participant/records.md has the grammar): little-endian fixed-width
// integers and u32-length-prefixed byte strings. Every decoder is bounds-checked
// and returns Status::Corruption for a short, overlong or malformed payload; no
// length read from disk is trusted before it is checked against the bytes left
// and the limits in common/types.h.
//
// Thread-safety: pure functions over values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "common/types.h"

namespace dtx::participant {

// WAL record type byte (0 is reserved by the WAL).
enum class RecordType : uint8_t {
  kPrepare = 1,  // forced: the YES vote depends on it
  kCommit = 2,   // forced: the commit ack (or one-phase YES) depends on it
  kAbort = 3,    // not forced: presumed abort makes a lost ABORT harmless
  kEpoch = 4,    // forced: the reply to the call that raised the epoch depends on it
};
static_assert(static_cast<uint8_t>(RecordType::kPrepare) != 0, "WAL type 0 is reserved");

// One write of a transaction. An unset value deletes the key.
struct WriteOp {
  std::string key;
  std::optional<std::string> value;
  friend bool operator==(const WriteOp&, const WriteOp&) = default;
};

struct PrepareRecord {
  TxId txid;
  Epoch epoch = 0;
  std::string coordinator;             // host:port to ask with QueryDecision ("" if unknown)
  std::vector<WriteOp> writes;         // exclusive locks
  std::vector<std::string> read_keys;  // shared locks (keys not also written)
  // The transaction's content (common/types.h); not known in records written
  // before fingerprints, or for a PREPARE that carried none.
  Fingerprint fingerprint = {};
  // The attempt prepared (common/types.h); a later PREPARE of the same txid
  // with a newer one moves the transaction to it. Not known in records
  // written before stamps.
  Attempt attempt;
  friend bool operator==(const PrepareRecord&, const PrepareRecord&) = default;
};

// Two-phase COMMIT names its transaction, whose writes are in its PREPARE.
// One-phase COMMIT carries the writes itself (there is no PREPARE).
struct CommitRecord {
  TxId txid;
  Version version = 0;  // the version every written key gets
  bool one_phase = false;
  std::vector<WriteOp> writes;   // only with one_phase
  Fingerprint fingerprint = {};  // as in PrepareRecord
  Attempt attempt = {};          // one_phase: the attempt it committed (not known: none)
  friend bool operator==(const CommitRecord&, const CommitRecord&) = default;
};

struct AbortRecord {
  TxId txid;
  friend bool operator==(const AbortRecord&, const AbortRecord&) = default;
};

// `owner`: the coordinator (host:port) whose AdoptEpoch made `epoch` current,
// so that a restarted participant still grants it to that coordinator only
// (an equal-epoch retry) and can name it in a STALE_EPOCH refusal. Empty:
// raised by a stamped call, or a record written before the owner was kept
// (the payload then ends after the epoch; both forms decode).
struct EpochRecord {
  Epoch epoch = 0;
  std::string owner = {};  // <= kCoordinatorAddressBytesMax
  friend bool operator==(const EpochRecord&, const EpochRecord&) = default;
};

// What a checkpoint makes durable (stored in the participant's LevelDB under
// the empty key, which is never a user key; records.md "Checkpoint"). Every
// record with LSN < `lsn` has its effect in the store, durably; records from
// `retain_from` on are kept in the WAL (retain_from <= lsn: the PREPAREs of
// transactions still prepared at the checkpoint).
//
// It also carries the outcomes the participant remembers (so that a client's
// retry of a committed transaction is still recognised after the COMMIT
// record was truncated and the node restarted; tests/sim/README.md KB2b):
// `outcomes`, oldest first, and `forgotten_version`, above which every
// commit made here before the checkpoint is in `outcomes`.
struct CheckpointOutcome {
  TxId txid;
  Version version = 0;  // > 0: committed at this version; 0: aborted (or voted NO)
  friend bool operator==(const CheckpointOutcome&, const CheckpointOutcome&) = default;
};

// At most this many outcomes in one checkpoint (encoder and decoder limit;
// the core keeps outcomes_remembered_max, 100 000 by default, 24 bytes each).
inline constexpr size_t kCheckpointOutcomesMax = size_t{1} << 20;

struct Checkpoint {
  uint64_t lsn = 0;            // replay applies records from here; 0/1: no checkpoint
  uint64_t retain_from = 0;    // the WAL keeps every record >= this
  Epoch epoch = 0;             // the epoch adopted (EPOCH records below may be gone)
  Version commit_counter = 0;  // >= every version handed out (COMMITs below may be gone)
  // Every transaction committed here with a version above this (and below
  // `lsn`) is in `outcomes`; at most commit_counter.
  Version forgotten_version = 0;
  std::vector<CheckpointOutcome> outcomes;  // oldest first, <= kCheckpointOutcomesMax
  // The owner of `epoch` (EpochRecord::owner), encoded after the outcomes
  // only when not empty; a checkpoint without it decodes with "".
  std::string epoch_owner = {};
  // Every outcome forgotten here (before the checkpoint) ended an attempt no
  // newer than `forgotten_attempt`; `attempt_seen` is the newest attempt seen
  // here (participant/core.h, the attempt fence). Encoded after the outcomes
  // (format 4); a format-3 checkpoint reads as none.
  Attempt forgotten_attempt = {};
  Attempt attempt_seen = {};
  friend bool operator==(const Checkpoint&, const Checkpoint&) = default;
};

// Coordinator address length accepted in a PREPARE.
inline constexpr size_t kCoordinatorAddressBytesMax = 256;

std::string EncodePrepare(const PrepareRecord& r);
std::string EncodeCommit(const CommitRecord& r);
std::string EncodeAbort(const AbortRecord& r);
std::string EncodeEpoch(const EpochRecord& r);
// A checkpoint carries a CRC32C over its bytes (records.md "Checkpoint");
// DecodeCheckpoint checks it before it reads any field: a mismatch is
// Corruption ("checkpoint record: CRC mismatch ...").
std::string EncodeCheckpoint(const Checkpoint& c);

Result<PrepareRecord> DecodePrepare(std::string_view payload);
Result<CommitRecord> DecodeCommit(std::string_view payload);
Result<AbortRecord> DecodeAbort(std::string_view payload);
Result<EpochRecord> DecodeEpoch(std::string_view payload);
Result<Checkpoint> DecodeCheckpoint(std::string_view bytes);

}  // namespace dtx::participant
