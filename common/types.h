// The vocabulary types live in the public include/dtx/types.h (the C++
// client's users see them); internal code keeps including this file.
#pragma once

#include <cstdint>
#include <limits>

#include "dtx/types.h"

namespace dtx {

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
