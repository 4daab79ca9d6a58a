// Fail-stop and failpoint evaluation, one definition for every node type.
//
// A node that can no longer trust its own state (a WAL write or sync failed,
// a checkpoint could not be written, the store failed to apply a durable
// commit) or that was told to fail a step it has no safe way to fail stops:
// it logs why and exits at once, with status 1, or with kSyncFailedExitCode
// (74, common/exit_codes.h) once a sync of its WAL failed. It never carries
// on and never retries a sync (LevelDB db/db_impl.cc; PostgreSQL after
// "fsyncgate").
//
// Why std::_Exit and not exit() or abort(): the caller may be any thread (the
// WAL flusher, the checkpoint worker, the loop) while the others keep
// running. exit() would run static destructors and atexit handlers under
// their feet (the log sink, the event loop's globals) and could deadlock or
// crash on the way out, turning a clean "status 1" into a signal; abort()
// reports a crash (SIGABRT, a core) for what is an orderly, expected stop.
// std::_Exit ends the process at once with the status we choose, runs no
// destructor (so nothing half-written is flushed behind our back: the WAL's
// files stay as the failed sync left them, and recovery decides), and is the
// standard C++ spelling of POSIX _exit (same system call on Linux).
//
// Thread-safety: every function here is thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/exit_codes.h"
#include "common/failpoint.h"
#include "common/status.h"

namespace dtx::node {

// The exit status of a fail-stop (coordinator/README.md, participant/README.md).
inline constexpr int kFailStopExitCode = 1;

// The exit status of a node that stops on an error - a fail-stop, or a start
// that failed: kSyncFailedExitCode once a sync of a WAL failed in this
// process (wal::SyncFailedInProcess(); whatever the stop's own reason, that
// failure is the one a supervisor must see), else kFailStopExitCode. Any
// thread.
int StopExitCode();

// Logs "fail-stop: <why>; exiting" at level error, flushes the log and ends
// the process with StopExitCode(). Any thread.
[[noreturn]] void FailStop(std::string_view why);

// What a failpoint armed with `error` does at a given point.
enum class OnFailpointError {
  // The step has no safe way to fail (it sits on the commit path between
  // two persist or send boundaries): the node fail-stops.
  kFailStop,
  // The node can fail the request instead: Eval returns the error.
  kReturn,
};

// Evaluates failpoint `p` with the node's semantics: `crash` exits at once
// (fp::kCrashExitCode), `sleep` blocks the calling thread, `error` either
// fail-stops (the message names `context`, e.g. "txid=...") or is returned.
// OK when disarmed (one branch).
Status EvalFailpoint(fp::Point p, OnFailpointError on_error, std::string_view context = {});

}  // namespace dtx::node
