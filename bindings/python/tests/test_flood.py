"""The flood of issue 15 at full size, against the default limits: 2,000
connections that never send a byte and 200 slow senders (a frame started,
then a byte a second) at every node's client listener, and 500 silent
connections at every peer listener (which wants a TLS handshake first), while
the bank workload runs (`dtx-bench`). The cluster keeps committing with its
invariant intact, no node exits or restarts, and no node is suspected."""

import json
import os
import resource
import socket
import subprocess
import threading

import pytest

from conftest import bench_path, run_cluster

IDLE_PER_CLIENT_LISTENER = 2000
SLOW_PER_CLIENT_LISTENER = 200
IDLE_PER_PEER_LISTENER = 500
BENCH_SECONDS = 6


@pytest.fixture(scope="module")
def flood_cluster(tmp_path_factory):
    yield from run_cluster(tmp_path_factory, "flood-cluster")


def _connect(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    return socket.create_connection((host, int(port)), timeout=10)


def test_idle_and_slow_connections_at_every_node_do_not_stop_the_bank(flood_cluster):
    from dtx.cluster_dir import load_cluster_conf
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nodes = list(load_cluster_conf(flood_cluster.dir))
    needed = len(nodes) * (IDLE_PER_CLIENT_LISTENER + SLOW_PER_CLIENT_LISTENER +
                           IDLE_PER_PEER_LISTENER) + 256
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard open-file limit {hard} is below the {needed} sockets needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    pids = {n.name: flood_cluster.pid(n.name) for n in nodes}
    bench = bench_path()
    idle, slow = [], []
    stop = threading.Event()

    def trickle():
        while not stop.wait(1.0):
            for s in slow:
                try:
                    s.send(b"x")
                except OSError:
                    pass

    trickler = threading.Thread(target=trickle, daemon=True)
    try:
        for n in nodes:
            for _ in range(IDLE_PER_CLIENT_LISTENER):
                idle.append(_connect(n.address))
            for _ in range(SLOW_PER_CLIENT_LISTENER):
                s = _connect(n.address)
                s.send(b"\x00\x00\x10\x00\x80")  # a 4 KiB frame begun
                slow.append(s)
            if n.peer:
                for _ in range(IDLE_PER_PEER_LISTENER):
                    idle.append(_connect(n.peer))
        trickler.start()
        report = flood_cluster.dir / "flood-bench.json"
        run = subprocess.run([str(bench), "--workload", "bank", "--cluster", str(flood_cluster.dir),
                              "--clients", "8", "--duration", str(BENCH_SECONDS), "--warmup", "1",
                              "--no-progress", "--json", str(report)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"dtx-bench failed:\n{run.stdout}\n{run.stderr}"
        r = json.loads(report.read_text())
        assert r["invariant_ok"], r
        assert r["committed_per_s"] > 50, f"the bank barely committed under the flood: {r}"
    finally:
        stop.set()
        for s in idle + slow:
            s.close()
    for n in nodes:
        assert flood_cluster.pid(n.name) == pids[n.name], f"{n.name} was restarted"
        os.kill(pids[n.name], 0)  # still running
        log = (flood_cluster.dir / n.name / "node.log").read_text(errors="replace")
        assert "suspected" not in log, f"{n.name} logged a suspicion under the flood"
