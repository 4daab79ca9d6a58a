"""A disk that stalls (docs/design.md "The loop never blocks"), while the bank
workload runs: a `sleep(2000)` failpoint in participant-0's store worker (every
batch of committed writes waits 2 s before LevelDB gets it), or in a node's
WAL flusher (every fdatasync waits 2 s), or in participant-0's store reader
(every batch of keys read from the disk waits 2 s before the loop has them).
The loop thread that answers heartbeats is not the thread that sleeps, so no
node is suspected, none exits or restarts, and the bank's invariant holds.
With the store stalled the bank keeps committing at full speed (reads see the
queued writes); with a WAL stalled the transactions through that node wait or
abort, and resume; with reads stalled, the transactions that read a key not
in memory wait, the others go on."""

import datetime
import os
import re
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


READ_STALL_ACCOUNTS = 3000


def _metric(cluster, node: str, name: str) -> float:
    out = cluster.ctl("metrics", node)
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.search(r"^" + re.escape(name) + r"(?:\{\})? (\S+)$", out.stdout, re.M)
    assert m, f"{name} not in {node}'s metrics"
    return float(m.group(1))


def test_reads_from_a_stalled_disk_do_not_stop_heartbeats(tmp_path_factory):
    """participant-0 restarted after the accounts were loaded: its row cache
    is empty, so every account it holds is read from the disk once, by the
    store reader, which sleeps 2 s after each batch of reads."""
    gen = run_cluster(tmp_path_factory, "read-stall-cluster")
    cluster = next(gen)
    try:
        accounts = ("--accounts", str(READ_STALL_ACCOUNTS))
        with running_bench(cluster, "--workload", "bank", *accounts, "--clients", "4",
                           "--duration", "1") as load:
            assert load.result()["invariant_ok"]
        restarted = cluster.ctl("restart", "participant-0")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        # The coordinator may suspect the killed participant up to its
        # suspect-after (400 ms) after the kill, even once it answers again:
        # let that pass before the window the test looks at.
        time.sleep(1.5)
        nodes = ["coordinator-0", "participant-0", "participant-1", "participant-2"]
        pids = {n: cluster.pid(n) for n in nodes}
        # What the nodes logged about the restart itself is not looked at:
        # only lines stamped after the failpoint was armed (the log reaches
        # the file a little later than it was written).
        armed_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        waits_before = _metric(cluster, "participant-0", "dtx_store_read_waits_total")
        armed = cluster.ctl("failpoint", "participant-0", "participant.store.read", "sleep(2000)")
        assert armed.returncode == 0, armed.stdout + armed.stderr
        with running_bench(cluster, "--workload", "bank", *accounts, "--no-load", "--clients",
                           "8", "--duration", str(BENCH_SECONDS)) as bench:
            time.sleep(STALL_FROM_S + STALL_FOR_S)
            waits = _metric(cluster, "participant-0", "dtx_store_read_waits_total")
            off = cluster.ctl("failpoint", "participant-0", "participant.store.read", "off")
            assert off.returncode == 0, off.stdout + off.stderr
            r = bench.result()
        assert r["invariant_ok"], r
        assert waits > waits_before, "no read waited for the store reader: the test tested nothing"
        status = cluster.ctl("status")
        for n in nodes:
            assert cluster.pid(n) == pids[n], f"{n} was restarted"
            os.kill(pids[n], 0)
            log = (cluster.dir / n / "node.log").read_text(errors="replace").splitlines()
            late = [line for line in log if line[:27] >= armed_at and "suspected" in line]
            assert not late, \
                f"{n} logged a suspicion while participant-0's reads slept: {late}\n{status.stdout}"
        committed = sum(s["committed"] for s in r["timeline"][:STALL_FROM_S + STALL_FOR_S])
        assert committed > 0, f"nothing committed while reads were stalled: {r['timeline']}"
    finally:
        gen.close()
