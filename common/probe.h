// Coverage probes: a counter per rare protocol branch (a decision re-sent
// after a timeout, a stale-epoch refusal, a step-down, ...), so the simulator
// can show that its seeds reach them (tests/sim/README.md "Coverage probes";
// `dtx-sim` prints the table, sim_test checks that its seeds reach each one).
//
// DTX_PROBE(name) is one increment of a thread-local counter: compiled in
// always, no branch, no lock, no allocation, and deterministic (nothing but
// the thread's own code touches its counters). `name` must be listed in
// DTX_PROBES below - the one list of every probe, as common/failpoint.h lists
// every failpoint - so a typo does not compile.
//
// Thread-safety: each thread has its own counters; Counts() and Reset() see
// the calling thread's only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

// X(name, "what the branch is")
#define DTX_PROBES(X)                                                                             \
  X(coordinator_commit_resent, "coordinator: a COMMIT re-sent after a failed or timed-out call")  \
  X(coordinator_late_yes_aborted_again,                                                           \
    "coordinator: a late YES for an aborted txid got another ABORT")                              \
  X(coordinator_prepare_stale_epoch, "coordinator: a PREPARE refused STALE_EPOCH (fenced)")       \
  X(coordinator_commit_call_failed,                                                               \
    "coordinator: a COMMIT call failed (timeout, refusal, no link)")                              \
  X(coordinator_outcome_unknown, "coordinator: a Commit answered UNKNOWN")                        \
  X(coordinator_decision_relogged,                                                                \
    "coordinator: an open DECISION far behind was written again, so the log could be truncated")  \
  X(coordinator_query_presumed_abort,                                                             \
    "coordinator: QueryDecision of an unknown txid answered ABORT")                               \
  X(coordinator_log_reload, "coordinator: a step-down reloaded the log into a fresh core")        \
  X(coordinator_snapshot_sent, "coordinator: the primary sent its backup a snapshot")             \
  X(coordinator_resync_snapshot,                                                                  \
    "coordinator: an in-sync backup re-snapshotted (resync_after_records)")                       \
  X(coordinator_replicate_refused_stale, "coordinator: a backup refused a Replicate STALE_EPOCH") \
  X(coordinator_adopt_epoch_refused, "coordinator: an AdoptEpoch refused STALE_EPOCH")            \
  X(coordinator_promotion, "coordinator: a backup promoted itself")                               \
  X(coordinator_epoch_blocked,                                                                    \
    "coordinator: an epoch nobody can establish was recorded, to be skipped")                     \
  X(coordinator_step_down, "coordinator: an established primary stepped down")                    \
  X(coordinator_backup_lost, "coordinator: the primary lost its backup (commits alone)")          \
  X(participant_prepare_relogged,                                                                 \
    "participant: a PREPARE far behind was written again, so the WAL could be truncated")         \
  X(participant_in_doubt_fallback,                                                                \
    "participant: in doubt, resolved by the other coordinator (fall-back)")                       \
  X(participant_stale_epoch_refusal, "participant: a call stamped with an old epoch refused")     \
  X(participant_attempt_restamped,                                                                \
    "participant: a prepared transaction moved to a newer attempt's stamp")                       \
  X(participant_stale_attempt_abort,                                                              \
    "participant: an ABORT of an older attempt than the one prepared was ignored")

namespace dtx::probe {

enum class Id : int {
#define DTX_PROBE_ENUM_(name, what) name,
  DTX_PROBES(DTX_PROBE_ENUM_)
#undef DTX_PROBE_ENUM_
      kCount
};
inline constexpr size_t kCount = static_cast<size_t>(Id::kCount);

inline constexpr std::array<const char*, kCount> kNames = {
#define DTX_PROBE_NAME_(name, what) #name,
    DTX_PROBES(DTX_PROBE_NAME_)
#undef DTX_PROBE_NAME_
};
inline constexpr std::array<const char*, kCount> kDescriptions = {
#define DTX_PROBE_WHAT_(name, what) what,
    DTX_PROBES(DTX_PROBE_WHAT_)
#undef DTX_PROBE_WHAT_
};

using Counts = std::array<uint64_t, kCount>;

inline thread_local Counts counts_{};

inline const Counts& Get() { return counts_; }
inline void Reset() { counts_ = Counts{}; }

}  // namespace dtx::probe

#define DTX_PROBE(name) (++::dtx::probe::counts_[static_cast<size_t>(::dtx::probe::Id::name)])
