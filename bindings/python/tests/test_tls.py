"""TLS in the Python binding against small in-test servers: Thrift over
Python's ``ssl``, with certificates made by ``dtxctl certs``. They stand in for
dtx nodes where a real cluster cannot produce the case (an expired or foreign
server certificate, a participant's certificate at a coordinator's address)
and copy what a node does on the wire (common/rpc_server.cc, common/tls.cc):
a TLS listener closes a plaintext connection without a word, a plaintext one
closes a connection whose first bytes are a TLS handshake record.
test_client.py runs the same client against a real TLS cluster."""

import pathlib
import socket
import ssl
import subprocess
import threading
import time

import pytest

import dtx
from conftest import dtxctl_path, make_expired_cert
from dtx._gen.dtx_thrift import Coordinator, Participant, ttypes
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport


def _certs(directory: pathlib.Path, *commands):
    for cmd in commands:
        r = subprocess.run([str(dtxctl_path()), "certs", *cmd.split(), "--dir", str(directory)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"dtxctl certs {cmd}: {r.stdout}{r.stderr}"
    return directory


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    """The cluster's CA with two nodes and a client."""
    return _certs(tmp_path_factory.mktemp("ca"), "create-ca", "create-node coordinator-0",
                  "create-node participant-0", "create-client client")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    """Another cluster's CA, with the same principal names."""
    return _certs(tmp_path_factory.mktemp("other-ca"), "create-ca", "create-node coordinator-0",
                  "create-client client")


def _tls(d: pathlib.Path, name: str = "client", ca: pathlib.Path = None) -> dtx.TLS:
    return dtx.TLS(ca=(ca or d) / "ca.crt", cert=d / f"{name}.crt", key=d / f"{name}.key")


class _Handler:
    """Coordinator + Participant of a one-shard cluster, in memory."""

    def __init__(self) -> None:
        self.participant = ""
        self.data = {}
        self.lock = threading.Lock()
        self.clients = []  # the certificate CN of each TLS caller

    def GetShardMap(self):
        return ttypes.ShardMap(version=1, scheme="hash", participants=[self.participant])

    def GetStatus(self):
        return ttypes.NodeStatus(name="coordinator-0", role=ttypes.NodeRole.PRIMARY, epoch=1,
                                 uptime_ms=0, durable_lsn=0, in_flight=0, in_doubt=0, peers=[])

    def GetOutcome(self, txid):
        return ttypes.Outcome.UNKNOWN

    def Commit(self, req):
        with self.lock:
            for r in req.reads:
                if self.data.get(r.key, (None, 0))[1] != r.version:
                    return ttypes.CommitResult(outcome=ttypes.Outcome.ABORTED,
                                               reason=ttypes.AbortReason.CONFLICT)
            for w in req.writes:
                self.data[w.key] = (w.value, self.data.get(w.key, (None, 0))[1] + 1)
        return ttypes.CommitResult(outcome=ttypes.Outcome.COMMITTED)

    def Read(self, key):
        with self.lock:
            value, version = self.data.get(key, (None, 0))
        return ttypes.ReadResult(found=value is not None, value=value or b"", version=version)


class FakeNode:
    """A framed-Thrift server on 127.0.0.1 in a thread per connection. With
    ``context`` it is a TLS listener that requires a client certificate and,
    like a dtx node, closes a connection whose first byte is not a TLS record
    without answering (``alert_plaintext`` lets Python's ssl answer with an
    alert instead). Without, it is plaintext and closes a connection that
    opens with a TLS handshake record."""

    def __init__(self, processor, context=None, alert_plaintext=False,
                 first_context=None) -> None:
        self._processor = processor
        self._context = context
        # If given: the first connection's handshake uses it, and the
        # connection is then reset (SO_LINGER 0) without an answer.
        self._first_context = first_context
        self._alert_plaintext = alert_plaintext
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self.handshake_errors = []
        self.peers = []
        self._conns = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        try:
            conn.settimeout(10)
            first = conn.recv(1, socket.MSG_PEEK)
            if self._context is not None:
                if first[:1] != b"\x16" and not self._alert_plaintext:
                    return
                context, reset = self._context, False
                if self._first_context is not None:
                    context, reset, self._first_context = self._first_context, True, None
                try:
                    conn = context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    self.handshake_errors.append(e)
                    return
                if reset:
                    conn.recv(1)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                    return
                self._conns.append(conn)
                self.peers.append(dict(x[0] for x in conn.getpeercert()["subject"]))
            elif first[:1] == b"\x16":
                return
            sock = TSocket.TSocket()
            sock.setHandle(conn)
            transport = TTransport.TFramedTransport(sock)
            protocol = TBinaryProtocol.TBinaryProtocol(transport)
            while not self._closed:
                self._processor.process(protocol, protocol)
        except (TTransport.TTransportException, OSError, EOFError):
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for c in self._conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _eventually(condition, timeout_s=5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _server_context(d: pathlib.Path, name: str, ca: pathlib.Path = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(d / f"{name}.crt", d / f"{name}.key")
    context.load_verify_locations(ca or d / "ca.crt")
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@pytest.fixture
def nodes(ca):
    """A TLS coordinator-0 and participant-0 whose certificates come from ``ca``."""
    handler = _Handler()
    participant = FakeNode(Participant.Processor(handler), _server_context(ca, "participant-0"))
    handler.participant = participant.address
    coordinator = FakeNode(Coordinator.Processor(handler), _server_context(ca, "coordinator-0"))
    yield coordinator, participant
    coordinator.close()
    participant.close()


def test_tls_client_reads_and_commits_over_tls_1_3(ca, nodes):
    coordinator, participant = nodes
    with dtx.Client(coordinator.address, tls=_tls(ca), timeout=5) as c:
        c.run(lambda tx: tx.put(b"k", b"v1"))
        assert c.run(lambda tx: tx.get(b"k")) == b"v1"
        c.run(lambda tx: tx.put(b"k", tx.get(b"k") + b"+"))
        assert c.run(lambda tx: tx.get(b"k")) == b"v1+"
    # Both servers saw this client's certificate, i.e. every connection was TLS.
    for node in nodes:
        assert node.peers and all(p["commonName"] == "client" for p in node.peers), node.peers
        assert all(p["organizationalUnitName"] == "client" for p in node.peers)


@pytest.mark.parametrize("alert", [False, True], ids=["silent-close", "alert"])
def test_client_without_tls_is_told_to_pass_tls(ca, nodes, alert):
    coordinator, _ = nodes
    node = coordinator
    if alert:
        node = FakeNode(Coordinator.Processor(_Handler()), _server_context(ca, "coordinator-0"),
                        alert_plaintext=True)
    try:
        with pytest.raises(dtx.TLSError) as e:
            dtx.Client(node.address, timeout=5)
        assert "the server requires TLS: pass tls=dtx.TLS(" in str(e.value)
    finally:
        if node is not coordinator:
            node.close()


def test_client_certificate_from_another_ca_is_refused(ca, other_ca, nodes):
    coordinator, _ = nodes
    with pytest.raises(dtx.TLSError) as e:
        dtx.Client(coordinator.address, tls=_tls(other_ca, ca=ca), timeout=5)
    assert "refused our certificate: not signed by the CA it trusts" in str(e.value)
    # Refused at the handshake, on the server too.
    assert _eventually(lambda: coordinator.handshake_errors)


def test_refusal_whose_alert_was_lost_is_explained_by_a_second_handshake(ca, other_ca):
    # The first connection is reset after the handshake without an alert (as
    # when our request reaches a socket the server closed after refusing us);
    # the client's second, silent handshake then receives the refusal.
    first = _server_context(ca, "coordinator-0")
    first.load_verify_locations(other_ca / "ca.crt")  # accepts the foreign client once
    node = FakeNode(Coordinator.Processor(_Handler()), _server_context(ca, "coordinator-0"),
                    first_context=first)
    try:
        with pytest.raises(dtx.TLSError) as e:
            dtx.Client(node.address, tls=_tls(other_ca, ca=ca), timeout=5)
        assert "refused our certificate: not signed by the CA it trusts" in str(e.value)
        # The second connection's (the server notes it just after its alert).
        assert _eventually(lambda: len(node.handshake_errors) == 1), node.handshake_errors
    finally:
        node.close()


def test_server_certificate_from_another_ca_is_refused(ca, other_ca):
    node = FakeNode(Coordinator.Processor(_Handler()),
                    _server_context(other_ca, "coordinator-0", ca=ca / "ca.crt"))
    try:
        with pytest.raises(dtx.TLSError) as e:
            dtx.Client(node.address, tls=_tls(ca), timeout=5)
        assert "server certificate not signed by the given CA" in str(e.value)
        assert str(ca / "ca.crt") in str(e.value)
    finally:
        node.close()


def test_expired_server_certificate_is_refused(ca, tmp_path):
    make_expired_cert(ca, tmp_path, "coordinator-0", "coordinator")
    node = FakeNode(Coordinator.Processor(_Handler()),
                    _server_context(tmp_path, "coordinator-0", ca=ca / "ca.crt"))
    try:
        with pytest.raises(dtx.TLSError) as e:
            dtx.Client(node.address, tls=_tls(ca), timeout=5)
        assert "server certificate expired" in str(e.value)
    finally:
        node.close()


def test_plaintext_server_on_a_tls_connection_is_named(ca):
    node = FakeNode(Coordinator.Processor(_Handler()))
    try:
        with pytest.raises(dtx.TLSError) as e:
            dtx.Client(node.address, tls=_tls(ca), timeout=5)
        assert "a plaintext server" in str(e.value)
    finally:
        node.close()


def test_participant_certificate_at_a_coordinator_address_is_refused(ca):
    node = FakeNode(Coordinator.Processor(_Handler()), _server_context(ca, "participant-0"))
    try:
        with pytest.raises(dtx.TLSError) as e:
            dtx.Client(node.address, tls=_tls(ca), timeout=5)
        assert "names participant-0 (OU participant), not a coordinator" in str(e.value)
    finally:
        node.close()


def test_coordinator_certificate_at_a_participant_address_is_refused(ca):
    handler = _Handler()
    wrong = FakeNode(Participant.Processor(handler), _server_context(ca, "coordinator-0"))
    handler.participant = wrong.address
    coordinator = FakeNode(Coordinator.Processor(handler), _server_context(ca, "coordinator-0"))
    try:
        with dtx.Client(coordinator.address, tls=_tls(ca), timeout=5) as c:
            with pytest.raises(dtx.TLSError) as e:
                c.run(lambda tx: tx.get(b"k"))
        assert "names coordinator-0 (OU coordinator), not a participant" in str(e.value)
    finally:
        coordinator.close()
        wrong.close()


def test_unreadable_or_mismatched_files_are_invalid_argument(ca, other_ca, tmp_path):
    with pytest.raises(dtx.InvalidArgument, match="cannot read the cluster CA file"):
        dtx.Client("127.0.0.1:1", tls=dtx.TLS(ca=tmp_path / "none.crt", cert=ca / "client.crt",
                                              key=ca / "client.key"))
    with pytest.raises(dtx.InvalidArgument, match="does not match the certificate"):
        dtx.Client("127.0.0.1:1", tls=dtx.TLS(ca=ca / "ca.crt", cert=ca / "client.crt",
                                              key=other_ca / "client.key"))
    (tmp_path / "garbage.crt").write_text("not a certificate\n")
    with pytest.raises(dtx.InvalidArgument, match="holds no usable PEM certificate"):
        dtx.Client("127.0.0.1:1", tls=dtx.TLS(ca=tmp_path / "garbage.crt", cert=ca / "client.crt",
                                              key=ca / "client.key"))
    with pytest.raises(TypeError):
        dtx.Client("127.0.0.1:1", tls=str(ca))
    with pytest.raises(dtx.InvalidArgument):
        dtx.TLS(ca="", cert="c", key="k")


def test_tls_is_a_frozen_value():
    t = dtx.TLS(ca="a", cert=pathlib.Path("b"), key="c")
    assert (t.ca, t.cert, t.key) == ("a", "b", "c")
    assert t == dtx.TLS(ca="a", cert="b", key="c")
    with pytest.raises(AttributeError):
        t.ca = "x"


def _cluster_dir(tmp_path, text, names=("client",)):
    certs = tmp_path / "certs"
    certs.mkdir(exist_ok=True)
    for f in ["ca.crt"] + [f"{n}.{ext}" for n in names for ext in ("crt", "key")]:
        (certs / f).write_text("")
    if text is not None:
        (tmp_path / "security.conf").write_text(text)
    return tmp_path


def test_from_cluster_dir_follows_security_conf(tmp_path):
    d = _cluster_dir(tmp_path, "# dtx cluster security\ntls on  # yes\ncerts certs\n",
                     names=("client", "admin"))
    assert dtx.TLS.from_cluster_dir(d) == dtx.TLS(
        ca=str(d / "certs" / "ca.crt"), cert=str(d / "certs" / "client.crt"),
        key=str(d / "certs" / "client.key"))
    assert dtx.TLS.from_cluster_dir(str(d), name="admin").cert == str(d / "certs" / "admin.crt")
    (d / "security.conf").write_text(f"tls on\ncerts {d / 'certs'}\n")  # absolute
    assert dtx.TLS.from_cluster_dir(d).ca == str(d / "certs" / "ca.crt")
    (d / "security.conf").write_text("tls off    # --insecure: plaintext\n")
    assert dtx.TLS.from_cluster_dir(d) is None
    (d / "security.conf").unlink()  # a directory from before TLS: plaintext
    assert dtx.TLS.from_cluster_dir(d) is None


@pytest.mark.parametrize("text,error", [
    ("tls maybe\n", "line 1: tls must be 'on' or 'off'"),
    ("certs x\n", "no tls line"),
    ("tls on\n", "tls on without certs"),
    ("tls on\ntls on\ncerts c\n", "line 2: tls given twice"),
    ("tls on\ncolour blue\n", "line 2: unknown key 'colour'"),
    ("tls\n", "line 1: expected 'KEY VALUE'"),
])
def test_from_cluster_dir_names_the_bad_line(tmp_path, text, error):
    d = _cluster_dir(tmp_path, text)
    with pytest.raises(dtx.InvalidArgument, match=error):
        dtx.TLS.from_cluster_dir(d)


def test_from_cluster_dir_without_the_certificate_or_directory(tmp_path):
    d = _cluster_dir(tmp_path, "tls on\ncerts certs\n")
    with pytest.raises(dtx.InvalidArgument, match="dtxctl certs create-client bench"):
        dtx.TLS.from_cluster_dir(d, name="bench")
    with pytest.raises(dtx.InvalidArgument, match="certificate name"):
        dtx.TLS.from_cluster_dir(d, name="../ca")
    with pytest.raises(dtx.InvalidArgument, match="no cluster directory"):
        dtx.TLS.from_cluster_dir(tmp_path / "missing")


def test_no_thrift_connect_noise_on_stderr(capfd):
    with pytest.raises(dtx.Unavailable, match="cannot connect"):
        dtx.Client("127.0.0.1:1", timeout=1.0)
    assert "Could not connect" not in capfd.readouterr().err
