"""The Python client against a coordinator that closes idle connections
quickly (``--idle-timeout-ms 1000``, through a wrapper given to ``dtxctl
cluster up --coordinator-bin``): a client that sat idle past it finds its
pooled connection closed and goes on, on a new one, without a failed call."""

import logging
import os
import stat
import time

import pytest

from conftest import BUILD, run_cluster

IDLE_TIMEOUT_MS = 1000
# The node checks once a second: closed within timeout + 1 s; some slack.
IDLE_WAIT_S = IDLE_TIMEOUT_MS / 1000 + 2.0


def _wrapped(tmp_path_factory, binary: str, prelude: str, args: str = ""):
    """A shell wrapper of the node binary `binary` ("dtx-participant"): runs
    `prelude` first and adds `args` to the command line."""
    real = BUILD / binary.removeprefix("dtx-") / binary
    if not real.exists():
        real = BUILD / "bin" / binary
    wrapper = tmp_path_factory.mktemp("wrapped-bin") / binary
    wrapper.write_text(f'#!/bin/sh\n{prelude}\nexec "{real}" {args} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def _with_idle_timeout(tmp_path_factory, binary: str):
    return _wrapped(tmp_path_factory, binary, ":", f"--idle-timeout-ms {IDLE_TIMEOUT_MS}")


@pytest.fixture(scope="module")
def idle_cluster(tmp_path_factory):
    yield from run_cluster(tmp_path_factory, "idle-cluster",
                           "--coordinator-bin", str(_with_idle_timeout(tmp_path_factory,
                                                                       "dtx-coordinator")),
                           "--participant-bin", str(_with_idle_timeout(tmp_path_factory,
                                                                       "dtx-participant")))


def _wait_log(cluster, text: str, timeout_s: float = 10.0) -> bool:
    """True once coordinator-0's log has `text` (the log is flushed
    periodically, not per line)."""
    deadline = time.monotonic() + timeout_s
    while True:
        log = (cluster.dir / "coordinator-0" / "node.log").read_text(errors="replace")
        if text in log:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _idle_closes(cluster, node: str = "coordinator-0") -> int:
    log = (cluster.dir / node / "node.log").read_text(errors="replace")
    return log.count("idle for")


def _participant_idle_closes(cluster) -> int:
    return sum(_idle_closes(cluster, d.name) for d in cluster.dir.glob("participant-*"))


def test_client_idle_past_the_server_idle_timeout_then_commits(idle_cluster, caplog):
    import dtx
    caplog.set_level(logging.DEBUG, logger="dtx")
    client = dtx.Client(idle_cluster.coordinator, timeout=5.0, tls=idle_cluster.tls)
    try:
        key = b"idle-" + os.urandom(6).hex().encode()
        first = client.transaction()
        assert first.get(key) is None  # a connection to the key's participant, pooled
        first.put(key, b"1")
        first.commit()
        closes_before = _idle_closes(idle_cluster)
        participant_closes_before = _participant_idle_closes(idle_cluster)

        # The coordinator closes the client's connection, and the key's
        # participant the client's read connection.
        time.sleep(IDLE_WAIT_S)
        assert _idle_closes(idle_cluster) > closes_before, \
            "the coordinator did not close the idle connection: the test proves nothing"
        assert _participant_idle_closes(idle_cluster) > participant_closes_before, \
            "no participant closed an idle connection: the read below proves nothing"
        assert client.outcome(first.txid) == "committed"  # GetOutcome on the next call

        with client.transaction() as tx:
            assert tx.get(key) == b"1"
            tx.put(key, b"2")
        with client.transaction() as tx:
            assert tx.get(key) == b"2"
    finally:
        client.close()
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert not failed, f"calls failed on connections the server had closed: {failed}"
    dropped = [r for r in caplog.records if "closed by the server" in r.getMessage()]
    assert dropped, "the pooled connection was not found closed (nothing was tested)"


# The scenario, scaled down: nodes whose open-file limit leaves each
# listener 64 connections (common/fd_limit.h: (1292 - 1100) / 3), a flood of
# connections that never send a byte at every client listener, then a bank
# workload. Without eviction the flood holds every slot and the client is
# refused ("no coordinator served the shard map").
SMALL_FD_LIMIT = 1292
SILENT_PER_LISTENER = 150


def _limited(tmp_path_factory, binary: str):
    return _wrapped(tmp_path_factory, binary, f"ulimit -n {SMALL_FD_LIMIT}")


@pytest.fixture(scope="module")
def small_cap_cluster(tmp_path_factory):
    yield from run_cluster(tmp_path_factory, "small-cap-cluster",
                           "--coordinator-bin", str(_limited(tmp_path_factory, "dtx-coordinator")),
                           "--participant-bin", str(_limited(tmp_path_factory, "dtx-participant")))


def test_silent_connections_at_the_cap_do_not_keep_clients_out(small_cap_cluster):
    import socket
    import dtx
    assert _wait_log(small_cap_cluster, "up to 64 connections per listener"), \
        "the cap is not the small one"
    silent = []
    try:
        for address in small_cap_cluster.nodes.values():  # every node's client listener
            host, _, port = address.rpartition(":")
            for _ in range(SILENT_PER_LISTENER):
                silent.append(socket.create_connection((host, int(port)), timeout=5))
        time.sleep(0.5)  # accepted (and evicted) by now

        client = dtx.Client(small_cap_cluster.coordinator, timeout=5.0,
                            tls=small_cap_cluster.tls)
        try:
            accounts = [b"acct-%d-" % i + os.urandom(4).hex().encode() for i in range(4)]
            with client.transaction() as tx:
                for a in accounts:
                    tx.put(a, b"100")

            def transfer(tx, src, dst):
                s, d = int(tx.get(src)), int(tx.get(dst))
                tx.put(src, str(s - 7).encode())
                tx.put(dst, str(d + 7).encode())

            for i in range(40):
                client.run(lambda tx: transfer(tx, accounts[i % 4], accounts[(i + 1) % 4]))
            with client.transaction() as tx:
                assert sum(int(tx.get(a)) for a in accounts) == 400
        finally:
            client.close()
    finally:
        for s in silent:
            s.close()
    assert _wait_log(small_cap_cluster, "to serve a new one"), \
        "no connection was evicted: the flood did not fill the cap"
