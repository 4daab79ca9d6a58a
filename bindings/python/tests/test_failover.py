"""The Python client against a cluster with a backup coordinator
(`dtxctl cluster up --backup`): a commit outstanding at a hung (SIGSTOPped)
primary moves to the promoted backup long before the socket timeout."""

import os
import signal
import threading
import time

import pytest

from conftest import run_cluster


@pytest.fixture(scope="module")
def ha_cluster(tmp_path_factory):
    yield from run_cluster(tmp_path_factory, "ha-cluster", "--backup")


def _role(cluster, node):
    out = cluster.ctl("status").stdout
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == node and len(parts) > 3:
            return parts[3]
    return None


def test_bad_probe_options_are_invalid_argument(ha_cluster):
    import dtx
    addrs = [ha_cluster.nodes["coordinator-0"], ha_cluster.nodes["coordinator-1"]]
    with pytest.raises(dtx.InvalidArgument):
        dtx.Client(addrs, probe_delay=-1)
    with pytest.raises(dtx.InvalidArgument):
        dtx.Client(addrs, failover_timeout=-1)


def test_commit_moves_from_a_hung_primary_to_the_promoted_backup(ha_cluster):
    import dtx
    addrs = [ha_cluster.nodes["coordinator-0"], ha_cluster.nodes["coordinator-1"]]
    deadline = time.monotonic() + 20
    while _role(ha_cluster, "coordinator-0") != "primary":
        assert time.monotonic() < deadline, ha_cluster.ctl("status").stdout
        time.sleep(0.1)
    client = dtx.Client(addrs, timeout=10.0, tls=ha_cluster.tls)
    try:
        for i in range(20):  # the backup is in sync once the primary's snapshot is durable
            with client.transaction() as tx:
                tx.put(b"warm-%d" % i, b"v")
        time.sleep(0.5)
        c0 = ha_cluster.pid("coordinator-0")
        os.kill(c0, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            # Commits from two threads, started right after the stop: each
            # hangs at coordinator-0 until the probe finds coordinator-1.
            took = {}

            def commit(n):
                tx = client.transaction()
                tx.put(b"after-stop-%d" % n, b"x%d" % n)
                tx.commit()
                took[n] = time.monotonic() - stopped

            threads = [threading.Thread(target=commit, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert sorted(took) == [0, 1], "a commit did not finish"
        finally:
            os.kill(c0, signal.SIGCONT)
        print(f"commits after SIGSTOP of the primary finished in "
              f"{', '.join('%.0f ms' % (v * 1000) for v in took.values())}; "
              f"primary switches {client.primary_switches}")
        # Well under the 10 s socket timeout the client would otherwise wait.
        assert max(took.values()) < 3.5
        assert client.primary_switches >= 1
        assert _role(ha_cluster, "coordinator-1") == "primary"
        for n in range(2):
            with client.transaction() as tx:
                assert tx.get(b"after-stop-%d" % n) == b"x%d" % n
    finally:
        client.close()
