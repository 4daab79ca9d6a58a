// Exit statuses of the node binaries (dtx-coordinator, dtx-participant) that
// something else acts on: their supervisor (tools/supervisor.h), dtxctl and
// tests. The whole list:
//   0   stopped by SIGTERM / SIGINT
//   1   fail-stop (node/fail_stop.h), or could not start
//   2   bad usage (command line, DTX_FAILPOINTS)
//   74  kSyncFailedExitCode, below
//   86  a failpoint's `crash` (fp::kCrashExitCode, common/failpoint.h)
#pragma once

namespace dtx {

// The node stopped because a sync of its WAL failed (an fdatasync of a
// segment or an fsync of the log directory returned an error, at start or
// while running: wal::SyncFailedInProcess()). The disk may have lost writes
// the node had accepted, and restarting at once only replays onto a medium
// that just failed: the supervisor leaves such a node down with the reason
// in NODEDIR/stopped until an operator starts it again (tools/README.md).
// 74 is EX_IOERR of sysexits.h; a systemd unit would list it in
// RestartPreventExitStatus=.
inline constexpr int kSyncFailedExitCode = 74;

}  // namespace dtx
