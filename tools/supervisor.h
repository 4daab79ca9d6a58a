// The local-cluster supervisor behind `dtxctl cluster up` (it runs as
// `dtxctl supervise --dir DIR ...`, daemonised by `cluster up`).
//
// It starts every node listed in DIR/cluster.conf with the flags fixed in the
// conventions (coordinator-N: --participants in shard order; participant-N:
// --coordinator coordinator-0's address; every node --enable-failpoints, as
// this is the test and demo harness), with stdout/stderr appended to
// DIR/<node>/console.log and the node's log at DIR/<node>/node.log, and writes
// DIR/<node>/pid while the node runs. A node that exits while the supervisor
// is not stopping is started again after a backoff (restart_backoff_min_ms,
// doubling up to restart_backoff_max_ms while it keeps dying within
// stable_run_ms of its start), and the supervisor logs
// "restarted <node> (exit status N)" or "(killed by signal S)".
// Except after exit status 74 (kSyncFailedExitCode, common/exit_codes.h: a
// sync of the node's WAL failed): that node is left down, the reason written
// to DIR/<node>/stopped (tools/cluster_config.h kNodeStoppedFile: the exit,
// the time, the node's last "fail-stop:" or "cannot start:" log line) and
// logged; it is started again once that file is gone (polled every
// stopped_poll_ms; `dtxctl restart NODE` removes it). A node whose file
// exists when the supervisor starts is not started either.
// DTX_FAILPOINTS in the supervisor's environment reaches each node's first
// start only: a restart never re-arms a start-up failpoint (a `crash` point
// would otherwise loop forever); arm failpoints on restarted nodes with
// `dtxctl failpoint`.
//
// With a backup (coordinator-0 and coordinator-1 both in cluster.conf) the
// coordinators start as "--role primary --peer <c1>" and "--role backup
// --peer <c0>"; a coordinator restarted while its peer answers GetStatus as
// primary comes back as the backup (failover happened), else in its first
// role.
//
// SIGTERM or SIGINT: SIGTERM to every node, SIGKILL to those still alive after
// stop_grace_ms, remove the pid files, return.
//
// All process handling is libuv (uv_spawn, exit callbacks, timers, signal
// handles) on one loop owned by RunSupervisor; nothing here is thread-safe and
// nothing needs to be: RunSupervisor is called once, from main.
#pragma once

#include <string>

#include "common/status.h"
#include "tools/cluster_config.h"

namespace dtx::tools {

struct SupervisorOptions {
  std::string dir;                 // the cluster directory (absolute)
  std::string participant_bin;     // path of dtx-participant
  std::string coordinator_bin;     // path of dtx-coordinator
  std::string log_level = "info";  // passed to the nodes as --log-level
  int restart_backoff_min_ms = 100;
  int restart_backoff_max_ms = 5000;
  int stable_run_ms = 10000;
  int stop_grace_ms = 5000;
  int stopped_poll_ms = 200;  // how often a node left down is checked for its file's removal
  // Start every node with --metrics-listen off --trace-events 0 (no metrics
  // endpoint, no tracing; `dtxctl cluster up --no-obs`).
  bool no_obs = false;
};

// Runs the supervisor until SIGTERM/SIGINT has stopped every node. Returns an
// error only if it could not start (bad config, libuv set-up failure); node
// failures are handled by restarting, not returned.
Status RunSupervisor(const SupervisorOptions& options, const ClusterConfig& config);

}  // namespace dtx::tools
