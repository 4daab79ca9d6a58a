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


@pytest.fixture(scope="module")
def idle_cluster(tmp_path_factory):
    real = BUILD / "coordinator" / "dtx-coordinator"
    if not real.exists():
        real = BUILD / "bin" / "dtx-coordinator"
    wrapper = tmp_path_factory.mktemp("idle-bin") / "dtx-coordinator"
    wrapper.write_text(f'#!/bin/sh\nexec "{real}" --idle-timeout-ms {IDLE_TIMEOUT_MS} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    yield from run_cluster(tmp_path_factory, "idle-cluster", "--coordinator-bin", str(wrapper))


def _idle_closes(cluster) -> int:
    log = (cluster.dir / "coordinator-0" / "node.log").read_text(errors="replace")
    return log.count("idle for")


def test_client_idle_past_the_server_idle_timeout_then_commits(idle_cluster, caplog):
    import dtx
    caplog.set_level(logging.DEBUG, logger="dtx")
    client = dtx.Client(idle_cluster.coordinator, timeout=5.0, tls=idle_cluster.tls)
    try:
        key = b"idle-" + os.urandom(6).hex().encode()
        first = client.transaction()
        first.put(key, b"1")
        first.commit()
        closes_before = _idle_closes(idle_cluster)

        time.sleep(IDLE_WAIT_S)  # the coordinator closes the client's connection
        assert _idle_closes(idle_cluster) > closes_before, \
            "the coordinator did not close the idle connection: the test proves nothing"
        assert client.outcome(first.txid) == "committed"  # GetOutcome on the next call

        time.sleep(IDLE_WAIT_S)
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
