"""The Python binding against a real local cluster."""

import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

import dtx
from conftest import BINDING, dtxctl_path, make_expired_cert, run_cluster


def _uniq(prefix: str) -> bytes:
    return f"{prefix}-{os.getpid()}-{time.monotonic_ns()}".encode()


def test_commit_and_read_back_across_participants(client):
    keys = [_uniq(f"k{i}") for i in range(12)]  # 12 keys land on all 3 participants
    with client.transaction() as tx:
        for i, k in enumerate(keys):
            tx.put(k, f"v{i}".encode())
    with client.transaction() as tx:
        assert [tx.get(k) for k in keys] == [f"v{i}".encode() for i in range(len(keys))]


def test_outcome_reports_without_deciding(client):
    # GetOutcome changes nothing: asking about a txid first does not stop it
    # from committing afterwards (QueryDecision would have aborted it).
    tx = client.transaction()
    assert client.outcome(tx.txid) is None
    tx.put(_uniq("outcome"), b"v")
    tx.commit()
    assert client.outcome(tx.txid) == "committed"


def test_delete_removes_the_key(client):
    k = _uniq("del")
    with client.transaction() as tx:
        tx.put(k, b"x")
    with client.transaction() as tx:
        assert tx.get(k) == b"x"
        tx.delete(k)
        assert tx.get(k) is None  # reads its own buffered delete
    with client.transaction() as tx:
        assert tx.get(k) is None


def test_exception_in_block_aborts_and_leaves_nothing(client):
    k1, k2 = _uniq("a"), _uniq("b")
    with pytest.raises(RuntimeError):
        with client.transaction() as tx:
            tx.put(k1, b"1")
            tx.put(k2, b"2")
            raise RuntimeError("boom")
    assert tx.finished
    with client.transaction() as tx:
        assert tx.get(k1) is None and tx.get(k2) is None


def test_conflicting_transactions_one_aborts_with_reason_conflict(client):
    k = _uniq("c")
    with client.transaction() as tx:
        tx.put(k, b"0")
    t1, t2 = client.transaction(), client.transaction()
    assert t1.get(k) == b"0" and t2.get(k) == b"0"
    t1.put(k, b"1")
    t2.put(k, b"2")
    errors = []

    def commit(tx):
        try:
            tx.commit()
        except dtx.Aborted as e:
            errors.append(e)

    threads = [threading.Thread(target=commit, args=(t,)) for t in (t1, t2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(errors) == 1, errors
    assert errors[0].reason == "conflict"
    with client.transaction() as tx:
        assert tx.get(k) in (b"1", b"2")


def test_run_retries_conflicts_to_success(client):
    k = _uniq("counter")
    with client.transaction() as tx:
        tx.put(k, b"0")
    n_threads, n_incr = 4, 10

    def incr(tx):
        v = int(tx.get(k))
        tx.put(k, str(v + 1).encode())

    def worker():
        for _ in range(n_incr):
            client.run(incr, retries=200)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    with client.transaction() as tx:
        assert int(tx.get(k)) == n_threads * n_incr


def test_bank_invariant_with_8_threads(client):
    accounts = [_uniq(f"acct{i}") for i in range(20)]
    with client.transaction() as tx:
        for a in accounts:
            tx.put(a, b"100")
    stop = time.monotonic() + 5

    def transfer_loop(seed):
        import random
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            a, b = rnd.sample(accounts, 2)

            def transfer(tx):
                va, vb = int(tx.get(a)), int(tx.get(b))
                amount = rnd.randint(1, 10)
                tx.put(a, str(va - amount).encode())
                tx.put(b, str(vb + amount).encode())

            client.run(transfer, retries=100)

    threads = [threading.Thread(target=transfer_loop, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    total = client.run(lambda tx: sum(int(tx.get(a)) for a in accounts))
    assert total == 100 * len(accounts)


def test_str_keys_and_values_are_type_errors(client):
    tx = client.transaction()
    with pytest.raises(TypeError):
        tx.get("str-key")
    with pytest.raises(TypeError):
        tx.put("str-key", b"v")
    with pytest.raises(TypeError):
        tx.put(b"k", "str-value")
    tx.abort()


def test_bad_sizes_are_invalid_argument(client):
    tx = client.transaction()
    with pytest.raises(dtx.InvalidArgument):
        tx.put(b"", b"v")
    with pytest.raises(dtx.InvalidArgument):
        tx.put(b"k" * (dtx.KEY_BYTES_MAX + 1), b"v")
    with pytest.raises(dtx.InvalidArgument):
        tx.put(b"k", b"v" * (dtx.VALUE_BYTES_MAX + 1))
    tx.abort()


def test_finished_transaction_cannot_be_used(client):
    k = _uniq("fin")
    tx = client.transaction()
    tx.put(k, b"1")
    tx.commit()
    for use in (lambda: tx.get(k), lambda: tx.put(k, b"2"), lambda: tx.delete(k), tx.commit):
        with pytest.raises(dtx.InvalidArgument):
            use()
    tx2 = client.transaction()
    tx2.put(k, b"3")
    tx2.abort()
    with pytest.raises(dtx.InvalidArgument):
        tx2.commit()
    with client.transaction() as tx3:
        assert tx3.get(k) == b"1"


def test_bad_address_is_invalid_argument():
    with pytest.raises(dtx.InvalidArgument):
        dtx.Client("no-port")
    with pytest.raises(dtx.Unavailable):
        dtx.Client("127.0.0.1:1", timeout=1.0)


def test_stopped_participant_gives_an_error_not_a_hang(cluster):
    """A participant that stops answering (SIGSTOP: alive but silent, the
    hardest case for timeouts) makes operations on its keys fail with a
    named error within the timeouts; it serves again once resumed."""
    c = dtx.Client(cluster.coordinator, timeout=1.0, tls=cluster.tls)
    try:
        pid = cluster.pid("participant-0")
        # find a key owned by participant-0
        key = next(k for k in (_uniq(f"p0-{i}") for i in range(1000))
                   if c._participant_for(k) is c._participants[0])
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises((dtx.Aborted, dtx.Unavailable)):
                with c.transaction() as tx:
                    tx.get(key)
            with pytest.raises((dtx.Aborted, dtx.Unavailable, dtx.UnknownOutcome)):
                with c.transaction() as tx:
                    tx.put(key, b"x")
                    tx.put(_uniq("elsewhere"), b"y")
            assert time.monotonic() - t0 < 30
        finally:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 20
        while True:
            try:
                c.run(lambda tx: tx.put(key, b"back"), retries=5)
                break
            except (dtx.Aborted, dtx.Unavailable):
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        c.close()


def test_killed_participant_gives_an_error_or_recovers(cluster, client):
    """SIGKILL a participant: operations never hang; once the supervisor has
    restarted it, committed data is still there."""
    k = _uniq("survivor")
    client.run(lambda tx: tx.put(k, b"kept"))
    r = cluster.ctl("kill", "participant-1")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    while True:
        try:
            assert client.run(lambda tx: tx.get(k), retries=3) == b"kept"
            break
        except (dtx.Aborted, dtx.Unavailable):
            assert time.monotonic() < deadline, "participant did not come back"
            time.sleep(0.2)


def test_cluster_is_tls_and_a_tls_client_reads_and_commits_on_every_participant(cluster):
    # `dtxctl cluster up` secures the cluster by default; the fixture's
    # clients use the certificate it made (TLS.from_cluster_dir).
    assert cluster.tls is not None, "the cluster fixture should start a TLS cluster"
    assert cluster.tls.cert.endswith("client.crt")
    with dtx.Client(cluster.coordinator, tls=dtx.TLS.from_cluster_dir(cluster.dir)) as c:
        keys = []
        for i in range(1000):  # two keys on each of the 3 participants
            k = _uniq(f"tls{i}")
            if sum(c._participant_for(x) is c._participant_for(k) for x in keys) < 2:
                keys.append(k)
            if len(keys) == 6:
                break
        assert len({id(c._participant_for(k)) for k in keys}) == 3
        # An earlier test may have killed a participant: wait for its restart.
        deadline = time.monotonic() + 30
        while True:
            try:
                c.run(lambda tx: [tx.put(k, k) for k in keys], retries=3)
                break
            except (dtx.Aborted, dtx.Unavailable):
                assert time.monotonic() < deadline, "the cluster did not serve"
                time.sleep(0.2)
        assert c.run(lambda tx: [tx.get(k) for k in keys]) == keys


def test_client_without_tls_is_told_the_cluster_requires_it(cluster):
    with pytest.raises(dtx.TLSError,
                       match=re.escape("the server requires TLS: pass tls=dtx.TLS(")):
        dtx.Client(cluster.coordinator, timeout=5.0)


def test_a_closed_port_or_a_silent_server_is_unavailable_not_a_tls_error(cluster):
    assert issubclass(dtx.TLSError, dtx.Unavailable)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(dtx.Unavailable, match="cannot connect") as e:
        dtx.Client(f"127.0.0.1:{port}", tls=cluster.tls, timeout=2.0)
    assert not isinstance(e.value, dtx.TLSError)
    # A server that never answers the handshake may only be overloaded.
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never accepts: the backlog does
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        with pytest.raises(dtx.Unavailable, match="no TLS handshake within the timeout") as e:
            dtx.Client(address, tls=cluster.tls, timeout=0.3)
        assert not isinstance(e.value, dtx.TLSError)


def _other_ca(directory):
    for cmd in (["create-ca"], ["create-client", "client"]):
        r = subprocess.run([str(dtxctl_path()), "certs", *cmd, "--dir", str(directory)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    return directory


def test_client_certificate_from_another_ca_is_refused(cluster, tmp_path):
    other = _other_ca(tmp_path)
    tls = dtx.TLS(ca=cluster.tls.ca, cert=other / "client.crt", key=other / "client.key")
    with pytest.raises(dtx.TLSError,
                       match="the server refused our certificate: not signed by the CA it trusts"):
        dtx.Client(cluster.coordinator, tls=tls, timeout=5.0)


def test_expired_client_certificate_is_refused(cluster, tmp_path):
    make_expired_cert(pathlib.Path(cluster.tls.ca).parent, tmp_path, "client", "client")
    tls = dtx.TLS(ca=cluster.tls.ca, cert=tmp_path / "client.crt", key=tmp_path / "client.key")
    with pytest.raises(dtx.TLSError, match="the server refused our certificate: expired"):
        dtx.Client(cluster.coordinator, tls=tls, timeout=5.0)


def test_cluster_certificates_do_not_verify_against_another_ca(cluster, tmp_path):
    other = _other_ca(tmp_path)
    tls = dtx.TLS(ca=other / "ca.crt", cert=cluster.tls.cert, key=cluster.tls.key)
    with pytest.raises(dtx.TLSError, match="server certificate not signed by the given CA"):
        dtx.Client(cluster.coordinator, tls=tls, timeout=5.0)


@pytest.fixture(scope="module")
def insecure_cluster(tmp_path_factory):
    yield from run_cluster(tmp_path_factory, "insecure-cluster", "--insecure")


def test_insecure_cluster_takes_plaintext_and_a_tls_client_is_told_so(insecure_cluster, cluster):
    assert dtx.TLS.from_cluster_dir(insecure_cluster.dir) is None  # security.conf: tls off
    with dtx.Client(insecure_cluster.coordinator) as c:
        k = _uniq("plain")
        c.run(lambda tx: tx.put(k, b"v"))
        assert c.run(lambda tx: tx.get(k)) == b"v"
    with pytest.raises(dtx.TLSError, match="without answering in TLS: a plaintext server"):
        dtx.Client(insecure_cluster.coordinator, tls=cluster.tls, timeout=5.0)


def test_from_cluster_dir_of_an_insecure_cluster_is_plaintext(insecure_cluster):
    with dtx.Client.from_cluster_dir(insecure_cluster.dir, timeout=5.0) as c:
        assert c._tls is None
        assert [p.address for p in c._coordinators] == [insecure_cluster.coordinator]
        k = _uniq("plain-dir")
        c.run(lambda tx: tx.put(k, b"v"))
        assert c.run(lambda tx: tx.get(k)) == b"v"


def test_bank_example_runs_against_a_cluster_directory(cluster):
    # examples/bank.py takes only the cluster directory (Client.from_cluster_dir).
    example = pathlib.Path(__file__).resolve().parents[1] / "examples" / "bank.py"
    r = subprocess.run(["/usr/bin/python3", str(example), str(cluster.dir)], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(BINDING)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "total balance 1000 (expected 1000)" in r.stdout


def test_clients_made_after_the_same_random_seed_get_different_txids(cluster):
    # Issue 14's scenario: seeding the global `random` module alike (common in
    # tests and simulations) must not make two clients share txids. With a
    # shared txid b was told COMMITTED and its write never happened.
    import random
    random.seed(1)
    a = dtx.Client(cluster.coordinator, timeout=5.0, tls=cluster.tls)
    random.seed(1)
    b = dtx.Client(cluster.coordinator, timeout=5.0, tls=cluster.tls)
    try:
        from_a, from_b = _uniq("from-a"), _uniq("from-b")
        ta, tb = a.transaction(), b.transaction()
        assert ta.txid != tb.txid
        with ta:
            ta.put(from_a, b"1")
        with tb:
            tb.put(from_b, b"1")
        assert a.run(lambda tx: tx.get(from_b)) == b"1"
        assert b.run(lambda tx: tx.get(from_a)) == b"1"
    finally:
        a.close()
        b.close()


def test_txid_reused_with_other_content_is_refused_and_applies_nothing(client):
    # A txid means one transaction: the coordinator compares the content of a
    # repeated commit with what it knows under that txid.
    first, other = _uniq("reuse-first"), _uniq("reuse-other")
    tx = client.transaction()
    tx.put(first, b"1")
    tx.commit()
    again = dtx.Transaction(client, tx.txid)
    again.put(other, b"2")
    with pytest.raises(dtx.InvalidArgument, match="txid reused with different content"):
        again.commit()
    assert client.run(lambda t: t.get(other)) is None
    # The same content under the same txid is a retry: its recorded outcome.
    same = dtx.Transaction(client, tx.txid)
    same.put(first, b"1")
    same.commit()
    assert client.run(lambda t: t.get(first)) == b"1"


def test_shed_throttle_refuses_nothing_while_all_is_taken_on_and_most_of_the_excess_when_not():
    import random as _random
    from dtx import ShedThrottle
    rng = _random.Random(1)
    t = ShedThrottle(1.1)
    now = 1.0
    for _ in range(5000):  # everything taken on
        assert not t.refuse(now, rng.random())
        t.answered(now, accepted=True)
        now += 0.001
    assert t.reject_probability(now) == 0.0
    # Twice what the coordinator takes on (a token bucket of 0.5 per ms):
    # after settling, the client refuses most of the excess itself.
    tokens = 10.0
    refused = shed = 0
    for i in range(30000):
        tokens = min(10.0, tokens + 0.5)
        if t.refuse(now, rng.random()):
            if i >= 10000:
                refused += 1
        else:
            taken = tokens >= 1
            if taken:
                tokens -= 1
            elif i >= 10000:
                shed += 1
            t.answered(now, accepted=taken)
        now += 0.001
    assert 0.35 < refused / 20000 < 0.5, refused
    assert shed / 20000 < 0.1, shed
    assert ShedThrottle(0).reject_probability(now) == 0.0


def test_run_retries_a_transaction_its_own_throttle_refused(monkeypatch):
    """Client.run retries an Overloaded raised by transaction() (the client's
    throttle, before any read) like one raised by the commit."""
    c = dtx.Client.__new__(dtx.Client)  # no connection needed: transaction() is replaced below
    calls = []

    class FakeTx:
        finished = True

        def abort(self):
            pass

    def transaction():
        calls.append(1)
        if len(calls) < 3:
            raise dtx.Overloaded("overloaded: refused here", 0.001)
        return FakeTx()

    monkeypatch.setattr(c, "transaction", transaction)
    assert c.run(lambda tx: "done", retries=5) == "done"
    assert len(calls) == 3
    with pytest.raises(dtx.Overloaded):
        calls.clear()
        c.run(lambda tx: "never", retries=1)
