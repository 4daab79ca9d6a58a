"""A disk that stalls (docs/design.md "The loop never blocks"), while the bank
workload runs: a `sleep(2000)` failpoint in participant-0's store worker (every
batch of committed writes waits 2 s before LevelDB gets it), or in a node's
WAL flusher (every fdatasync waits 2 s). The loop thread that answers
heartbeats is not the thread that sleeps, so no node is suspected, none exits
or restarts, and the bank's invariant holds. With the store stalled the bank
keeps committing at full speed (reads see the queued writes); with a WAL
stalled the transactions through that node wait or abort, and resume."""

import os
import time

import pytest

from conftest import run_cluster, running_bench

BENCH_SECONDS = 9
STALL_FROM_S = 2  # after the bench started
STALL_FOR_S = 5


@pytest.mark.parametrize("node,point", [
    ("participant-0", "participant.store.apply"),
    ("participant-0", "wal.before_sync"),
    ("coordinator-0", "wal.before_sync"),
])
def test_a_stalled_disk_does_not_stop_heartbeats(tmp_path_factory, node, point):
    gen = run_cluster(tmp_path_factory, "stall-cluster")
    cluster = next(gen)
    try:
        nodes = ["coordinator-0", "participant-0", "participant-1", "participant-2"]
        pids = {n: cluster.pid(n) for n in nodes}
        with running_bench(cluster, "--workload", "bank", "--clients", "8", "--duration",
                           str(BENCH_SECONDS)) as bench:
            time.sleep(STALL_FROM_S)
            armed = cluster.ctl("failpoint", node, point, "sleep(2000)")
            assert armed.returncode == 0, armed.stdout + armed.stderr
            time.sleep(STALL_FOR_S)
            off = cluster.ctl("failpoint", node, point, "off")
            assert off.returncode == 0, off.stdout + off.stderr
            r = bench.result()
        assert r["invariant_ok"], r
        status = cluster.ctl("status")
        for n in nodes:
            assert cluster.pid(n) == pids[n], f"{n} was restarted"
            os.kill(pids[n], 0)  # still running
            log = (cluster.dir / n / "node.log").read_text(errors="replace")
            assert "suspected" not in log, \
                f"{n} logged a suspicion while {node}'s {point} slept:\n{status.stdout}"
        if point == "participant.store.apply":
            # The stall is in the store worker only: the commits are answered
            # once durable in the WAL, so the bank goes on through it.
            seconds = r["timeline"]
            during = [s for s in seconds[STALL_FROM_S + 1:STALL_FROM_S + STALL_FOR_S]]
            assert during and all(s["committed"] > 0 for s in during), \
                f"the bank stopped committing while the store was stalled: {during}"
    finally:
        gen.close()
