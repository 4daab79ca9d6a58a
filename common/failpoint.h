// Failpoints: named places in the code where a test or an operator can inject
// a fault (etcd server/storage/wal/wal.go walBeforeSync/walAfterSync,
// tikv/fail-rs).
//
// This header is the one list of every failpoint name; docs/failpoints.md
// describes them for users. A point is armed with an action:
//   off            disarm
//   crash          _exit() at once: no flush, no destructors (like SIGKILL)
//   crash-after(n) pass n times, then crash
//   sleep(ms)      block the calling thread for ms milliseconds, then go on
//   error          make the guarded operation fail with an IOError
//   error-after(n) pass n times, then fail every time
// Points are armed from the environment (DTX_FAILPOINTS="name=action;...",
// read by InitFromEnv at start-up) or through Arm() (the admin RPC calls it).
// A node binary does either only when started with --enable-failpoints
// (InitFromEnvForNode, node/handler.h SetFailpoint).
//
// Cost when disarmed: one relaxed atomic load and one predictable branch.
// Thread-safety: all functions are thread-safe.
#pragma once

#include <string>
#include <string_view>
#include <vector>
#include <atomic>
#include <cstdint>

#include "common/status.h"

namespace dtx::fp {

// X(enumerator, "name")
#define DTX_FAILPOINT_LIST(X)                                                    \
  /* write-ahead log: around every write and every sync */                       \
  X(kWalBeforeWrite, "wal.before_write")                                         \
  X(kWalAfterWrite, "wal.after_write")                                           \
  X(kWalBeforeSync, "wal.before_sync")                                           \
  X(kWalAfterSync, "wal.after_sync")                                             \
  X(kWalBeforeSegmentCreate, "wal.before_segment_create")                        \
  /* participant commit path */                                                  \
  X(kParticipantPrepareBeforeLog, "participant.prepare.before_log")              \
  X(kParticipantPrepareAfterLog, "participant.prepare.after_log")                \
  X(kParticipantPrepareAfterVote, "participant.prepare.after_vote")              \
  X(kParticipantCommitBeforeLog, "participant.commit.before_log")                \
  X(kParticipantCommitAfterLog, "participant.commit.after_log")                  \
  X(kParticipantCommitAfterApply, "participant.commit.after_apply")              \
  X(kParticipantCommitBeforeAck, "participant.commit.before_ack")                \
  /* participant store worker: before each batch of commits is written */        \
  X(kParticipantStoreApply, "participant.store.apply")                           \
  /* participant store reader: after each batch of reads */                      \
  X(kParticipantStoreRead, "participant.store.read")                             \
  /* coordinator commit path */                                                  \
  X(kCoordinatorVotesAfterAll, "coordinator.votes.after_all")                    \
  X(kCoordinatorDecisionBeforeLog, "coordinator.decision.before_log")            \
  X(kCoordinatorDecisionAfterLog, "coordinator.decision.after_log")              \
  X(kCoordinatorPhase2AfterFirstCommit, "coordinator.phase2.after_first_commit") \
  X(kCoordinatorEndBeforeLog, "coordinator.end.before_log")

enum class Point : int {
#define DTX_FP_ENUM(e, name) e,
  DTX_FAILPOINT_LIST(DTX_FP_ENUM)
#undef DTX_FP_ENUM
      kCount
};

inline constexpr int kPointCount = static_cast<int>(Point::kCount);

// The name of a point, e.g. "wal.before_sync".
const char* Name(Point p);
// Every point's name, in list order.
std::vector<std::string> AllNames();

// Arms `name` with `action` (see above). Unknown names and malformed actions
// are InvalidArgument; nothing changes then.
Status Arm(std::string_view name, std::string_view action);
// What Arm() would answer, without arming: OK, or InvalidArgument.
Status Check(std::string_view name, std::string_view action);
// Parses "name=action;name=action" (whitespace allowed around items). All or
// nothing: on any error nothing is armed.
Status ArmFromSpec(std::string_view spec);
// Reads DTX_FAILPOINTS; OK when unset or empty.
Status InitFromEnv();
// InitFromEnv for a node binary. `enabled`: the node started with
// --enable-failpoints. Without it a non-empty DTX_FAILPOINTS is
// PermissionDenied and nothing is armed (docs/failpoints.md).
Status InitFromEnvForNode(bool enabled);
void DisarmAll();
// "name=action" for every armed point.
std::vector<std::string> Armed();

// The exit code of a `crash` action, so a supervisor can tell it in logs.
inline constexpr int kCrashExitCode = 86;

namespace internal {
extern std::atomic<bool> g_armed[kPointCount];
Status EvalSlow(Point p);
}  // namespace internal

// Whether `p` is armed (cheap: one relaxed load). For work done only for an
// armed point, e.g. writing out a sent message before a crash after it.
inline bool IsArmed(Point p) {
  return internal::g_armed[static_cast<int>(p)].load(std::memory_order_relaxed);
}

// Evaluates a point: OK unless armed with `error` (IOError naming the point).
// `crash` does not return; `sleep` returns OK after the delay.
[[nodiscard]] inline Status Eval(Point p) {
  if (__builtin_expect(!internal::g_armed[static_cast<int>(p)].load(std::memory_order_relaxed),
                       1)) {
    return Status::OK();
  }
  return internal::EvalSlow(p);
}

}  // namespace dtx::fp
