// The vocabulary types live in the public include/dtx/types.h (the C++
// client's users see them); internal code keeps including this file.
#pragma once

#include <compare>
#include <cstdint>
#include <limits>
#include <string>

#include "dtx/types.h"

namespace dtx {

// What a transaction is: a 128-bit hash of its canonical read set (keys and
// versions read) and write set (keys, values, deletes), computed by the
// coordinator from the Commit request it received (coordinator/fingerprint.h;
// docs/design.md "Transaction identity"). A txid means one transaction: a
// node that knows a txid with one fingerprint refuses it with another.
// {0, 0} is "not known" (a record or a request from before fingerprints, or
// from a coordinator that sends none): it is never compared. A computed
// fingerprint is never {0, 0}.
struct Fingerprint {
  uint64_t hi = 0;
  uint64_t lo = 0;
  bool known() const { return hi != 0 || lo != 0; }
  friend bool operator==(const Fingerprint&, const Fingerprint&) = default;
  // 32 hex digits: hi then lo.
  std::string ToString() const { return TxId{hi, lo}.ToString(); }
};

// True when both are known and differ: the same txid names two transactions.
inline bool Contradicts(const Fingerprint& a, const Fingerprint& b) {
  return a.known() && b.known() && a != b;
}

// Bytes of a fingerprint on disk and on the wire (hi then lo, big-endian on
// the wire: idl/dtx.thrift PrepareRequest.fingerprint).
inline constexpr size_t kFingerprintBytes = 16;

// One attempt of a transaction: the coordinator stamps every attempt it
// starts (a Commit that runs PREPARE) with its epoch and a sequence number
// that grows within the epoch. Every coordinator incarnation runs at an
// epoch of its own (a new one at every start, coordinator/core.h Start), so
// a stamp names one attempt, ever. PREPARE and ABORT carry it, and so does a
// participant's QueryDecision: a participant applies an ABORT, or an ABORT
// answer, only to the attempt it holds under that stamp or an older one
// (docs/design.md "Attempts"). {0, 0}: not stamped (a record written before
// stamps); it orders before every stamp.
struct Attempt {
  Epoch epoch = 0;
  uint64_t seq = 0;
  bool known() const { return epoch != 0 || seq != 0; }
  friend auto operator<=>(const Attempt&, const Attempt&) = default;
  friend bool operator==(const Attempt&, const Attempt&) = default;
  // "3.17" (epoch.seq).
  std::string ToString() const { return std::to_string(epoch) + "." + std::to_string(seq); }
};

// The largest step a coordinator epoch may take in one move, at a
// participant (AdoptEpoch or an epoch-stamped call) and at a coordinator (a
// peer's heartbeat, a Replicate, a participant's STALE_EPOCH answer). A
// legitimate epoch moves by one per failover (or by a run of skipped epochs,
// coordinator/README.md); a jump of more than a million is a bug or a forged
// message, and adopting it would fence every real coordinator out for good.
// participant/README.md and coordinator/README.md ("Epoch bounds") say what
// each side does with one.
inline constexpr Epoch kEpochJumpMax = 1'000'000;

// True when `to` is more than kEpochJumpMax above `from`. Exact for any two
// epochs (no overflow near INT64_MAX, negative values included).
constexpr bool EpochJumpTooFar(Epoch from, Epoch to) {
  return to > from && static_cast<uint64_t>(to) - static_cast<uint64_t>(from) >
                          static_cast<uint64_t>(kEpochJumpMax);
}
static_assert(!EpochJumpTooFar(1, 1 + kEpochJumpMax) && EpochJumpTooFar(1, 2 + kEpochJumpMax));
static_assert(EpochJumpTooFar(0, std::numeric_limits<Epoch>::max()));
static_assert(!EpochJumpTooFar(std::numeric_limits<Epoch>::max() - 1,
                               std::numeric_limits<Epoch>::max()));
static_assert(EpochJumpTooFar(std::numeric_limits<Epoch>::min(), 0));

}  // namespace dtx
