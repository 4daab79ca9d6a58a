"""The dtx Python client: Client, Transaction and the exception types.

Built on the Thrift-generated code for ``idl/dtx.thrift`` (``dtx._gen``,
generated at build time: idl/CMakeLists.txt, build_backend/dtx_build.py) and
Debian's ``python3-thrift``; it speaks the same framed binary protocol as every
node.

Logging: the logger ``dtx`` at DEBUG, one line per connection that could not
be made or was lost (the error itself reaches the caller as
:class:`Unavailable`, or as a retry). Thrift's own loggers stay silent: the
client opens its sockets itself (``_Socket``), never through
``TSocket.open``, which logs every refused connection at ERROR.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import random
import secrets
import select
import socket
import ssl
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, Union

from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TException
from thrift.transport import TSocket, TTransport

from dtx.errors import (Aborted, Error, InvalidArgument, Overloaded, TLSError, Unavailable,
                        UnknownOutcome)
from dtx import cluster_dir as _cluster_dir
from dtx import tls as _tls
from dtx.tls import TLS

try:
    from dtx._gen.dtx_thrift import Coordinator, Participant
    from dtx._gen.dtx_thrift import ttypes
except ImportError as e:  # pragma: no cover - a set-up error, said plainly
    raise ImportError(
        "dtx needs its Thrift-generated modules (dtx._gen): install the package "
        "(pip install bindings/python), or build the project (./scripts/build), which "
        "generates them into bindings/python/dtx/_gen"
    ) from e

_log = logging.getLogger("dtx")

# Limits: the same numbers as common/types.h (the nodes enforce them too).
KEY_BYTES_MAX = 1024
VALUE_BYTES_MAX = 1 << 20
TX_KEYS_MAX = 1024

# Following a hung primary (see Client): a Commit outstanding this long at the
# current coordinator makes the client ask the others who is primary.
PROBE_DELAY_DEFAULT = 0.3
# How long a commit whose outcome is open is asked again with the same txid.
FAILOVER_TIMEOUT_DEFAULT = 5.0
_COMMIT_THREADS_MAX = 64
_COMMIT_RETRY_DELAY = 0.05  # times the attempt number, at most 0.2 s

# The subject OU a node's certificate carries (common/certs.h); with TLS the
# client checks it, so that a coordinator address cannot be served by a
# participant's certificate or the other way round.
_COORDINATOR_KIND = "coordinator"
_PARTICIPANT_KIND = "participant"

_RETRYABLE_REASONS = ("conflict", "participant_unavailable", "timeout")
# Calls that change nothing at the node (common/rpc_client.h kSafeToRepeat):
# sent once more on a new connection when the pooled one they went out on
# turns out closed (a node closes idle connections, common/rpc_server.h).
# Commit is not: its retries are _commit's (same txid, is_retry).
_SAFE_TO_REPEAT = frozenset(("Read", "GetShardMap", "GetStatus", "GetOutcome"))
_REASON_NAMES = {
    ttypes.AbortReason.CONFLICT: "conflict",
    ttypes.AbortReason.PARTICIPANT_UNAVAILABLE: "participant_unavailable",
    ttypes.AbortReason.TIMEOUT: "timeout",
    ttypes.AbortReason.CLIENT_ABORT: "client_abort",
    ttypes.AbortReason.COORDINATOR_FAILOVER: "coordinator_failover",
}


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _parse_address(address: str) -> Tuple[str, int]:
    if not isinstance(address, str) or ":" not in address:
        raise InvalidArgument(f"address must be 'host:port', got {address!r}")
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):  # [v6host]:port, as cluster.conf has it
        host = host[1:-1]
    try:
        port_n = int(port)
    except ValueError:
        raise InvalidArgument(f"address must be 'host:port', got {address!r}") from None
    if not host or not 0 < port_n < 65536:
        raise InvalidArgument(f"address must be 'host:port', got {address!r}")
    return host, port_n


def _check_key(key: object) -> bytes:
    if not isinstance(key, bytes):
        raise TypeError(f"keys are bytes, not {type(key).__name__}")
    if not key:
        raise InvalidArgument("empty key")
    if len(key) > KEY_BYTES_MAX:
        raise InvalidArgument(f"key of {len(key)} bytes exceeds the limit of {KEY_BYTES_MAX}")
    return key


def _check_value(value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"values are bytes, not {type(value).__name__}")
    if len(value) > VALUE_BYTES_MAX:
        raise InvalidArgument(
            f"value of {len(value)} bytes exceeds the limit of {VALUE_BYTES_MAX}")
    return value


class _Socket(TSocket.TSocket):
    """A Thrift socket that connects by itself (so a failed connect raises
    one clear error instead of Thrift's logged "Could not connect to any
    of [...]"), runs the TLS handshake when the client has TLS, and says why
    a server closed the connection where it can tell: a plaintext connection
    to a TLS server, or a TLS server refusing our certificate. Used by one
    thread at a time, as every Thrift transport."""

    def __init__(self, host: str, port: int, timeout_s: float,
                 tls: Optional[Tuple[ssl.SSLContext, str]], expected_kind: str) -> None:
        super().__init__(host, port)
        self._timeout = timeout_s
        self._tls = tls
        self._expected_kind = expected_kind
        self._received_any = False

    def open(self) -> None:
        if self.handle is not None:
            raise _transport_error(TTransport.TTransportException.ALREADY_OPEN, "already open")
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._timeout)
        except (socket.timeout, TimeoutError):
            message = f"cannot connect: no answer within {self._timeout:g} s"
            raise _transport_error(TTransport.TTransportException.NOT_OPEN, message) from None
        except OSError as e:
            raise _transport_error(TTransport.TTransportException.NOT_OPEN,
                                   f"cannot connect: {e.strerror or e}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is not None:
            context, ca_path = self._tls
            try:
                sock = _tls.connect(sock, context, ca_path, self._expected_kind)
            except _tls.HandshakeTimeout as e:
                raise _transport_error(TTransport.TTransportException.TIMED_OUT,
                                       f"TLS: {e}") from None
            except _tls.ConnectError as e:
                raise _tls_failure(f"TLS: {e}") from None
        self.handle = sock

    def read(self, sz: int) -> bytes:
        try:
            buff = self.handle.recv(sz)
        except (socket.timeout, TimeoutError):
            raise _transport_error(TTransport.TTransportException.TIMED_OUT,
                                   f"no answer within {self._timeout:g} s") from None
        except OSError as e:  # ssl.SSLError is one
            self._failed(e)
        else:
            if not buff:
                self._closed_before_answer("the server closed the connection")
            if not self._received_any and self._tls is None and _tls.looks_like_tls(buff):
                raise _tls_failure(_tls.REQUIRES_TLS)
            self._received_any = True
            return buff

    def write(self, buff: bytes) -> None:
        if not self.handle:
            raise _transport_error(TTransport.TTransportException.NOT_OPEN, "transport not open")
        try:
            self.handle.sendall(buff)
        except (socket.timeout, TimeoutError):
            raise _transport_error(TTransport.TTransportException.TIMED_OUT,
                                   f"cannot send within {self._timeout:g} s") from None
        except OSError as e:  # ssl.SSLError is one
            self._failed(e)

    def _failed(self, e: OSError) -> None:
        """Raises for a send or receive that failed with ``e``: a TLS alert
        that refused us says so; anything else is a connection that failed."""
        if isinstance(e, ssl.SSLError):
            refused = _tls.refusal_from_alert(e)
            if refused:
                raise _tls_failure(f"TLS: {refused}") from None
            self._closed_before_answer(f"TLS: {_tls.describe_read_error(e)}")
        self._closed_before_answer(f"connection lost: {e.strerror or e}")

    def _closed_before_answer(self, what: str) -> None:
        """Raises for a connection that failed; before its first answer it
        says why if a second look can tell. A TLS listener closes a plaintext
        connection without a word (common/tls.cc), and so does a node that
        died: a TLS probe tells them apart. A TLS server that refuses our
        certificate sends an alert and closes, but the alert is lost when our
        request reaches the closed socket first (the reset discards it): a
        second handshake that sends nothing reads it."""
        if not self._received_any:
            if self._tls is None:
                if _tls.speaks_tls(self.host, self.port, self._timeout):
                    raise _tls_failure(_tls.REQUIRES_TLS)
            else:
                context, ca_path = self._tls
                refused = _tls.refusal_after_handshake(self.host, self.port, context, ca_path,
                                                      self._expected_kind, self._timeout)
                if refused:
                    raise _tls_failure(f"TLS: {refused}")
                what += " before answering (its log says why)"
        raise _transport_error(TTransport.TTransportException.END_OF_FILE, what)


def _transport_error(kind: int, message: str) -> TTransport.TTransportException:
    return TTransport.TTransportException(kind, message)


class _TlsFailure(TTransport.TTransportException):
    """A connection that failed at TLS (see :class:`TLSError`); the client
    raises it as TLSError."""


def _tls_failure(message: str) -> _TlsFailure:
    return _TlsFailure(TTransport.TTransportException.NOT_OPEN, message)


class _Pool:
    """Idle Thrift connections to one address; thread-safe. A connection is
    used by one thread at a time and dropped after any transport error.
    ``tls`` (an SSLContext and the CA path it trusts) makes every connection
    TLS 1.3 to a server whose certificate names ``expected_kind``.

    Nodes close connections that sit idle (``--idle-timeout-ms``, 5 minutes
    by default) and, at their connection cap, the one idle longest
    (common/rpc_server.h). So a pooled connection is checked before it is
    used: one the server closed is dropped and the next (or a new one) is
    taken. A close that races with the request (the server closed it just as
    it was sent) costs a call that is safe to repeat (``_SAFE_TO_REPEAT``) one
    more try on a new connection; any other call raises ``_TransportError``
    with ``maybe_sent`` and its caller decides (a commit is retried with the
    same txid)."""

    _IDLE_MAX = 16

    def __init__(self, address: str, service, timeout_s: float,
                 tls: Optional[Tuple[ssl.SSLContext, str]] = None,
                 expected_kind: str = "") -> None:
        self.address = address
        self._host, self._port = _parse_address(address)
        self._service = service
        self._timeout_s = timeout_s
        self._tls = tls
        self._expected_kind = expected_kind
        # (framed transport, Thrift client, socket)
        self._idle: List[Tuple[TTransport.TTransportBase, object, _Socket]] = []
        self._lock = threading.Lock()
        self._closed = False

    def _open(self):
        sock = _Socket(self._host, self._port, self._timeout_s, self._tls, self._expected_kind)
        transport = TTransport.TFramedTransport(sock)
        client = self._service.Client(TBinaryProtocol.TBinaryProtocol(transport))
        transport.open()
        return transport, client, sock

    def _take_idle(self):
        """A pooled connection the server has not closed, or None."""
        while True:
            with self._lock:
                if self._closed:
                    raise InvalidArgument("client is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None or not _closed_by_peer(conn[2]):
                return conn
            _log.debug("%s: a pooled connection was closed by the server (idle); dropped",
                       self.address)
            conn[0].close()

    def call(self, method: str, *args):
        """Calls ``method`` on a pooled connection. Transport failures raise
        ``_TransportError`` (``maybe_sent`` False when no connection could be
        made, so the request never left); ``DtxError`` replies propagate as
        they are."""
        conn = self._take_idle()
        reused = conn is not None
        while True:
            if conn is None:
                try:
                    conn = self._open()
                except (TException, OSError, EOFError) as e:
                    _log.debug("%s: %s", self.address, _describe(e))
                    raise _TransportError(f"{self.address}: {_describe(e)}", maybe_sent=False,
                                          tls=isinstance(e, _TlsFailure)) from e
            try:
                result = getattr(conn[1], method)(*args)
            except ttypes.DtxError:
                self._release(conn)
                raise
            except (TException, socket.error, OSError, EOFError) as e:
                conn[0].close()
                _log.debug("%s: %s failed: %s", self.address, method, _describe(e))
                if _tls.is_tls_required_reply(e):
                    raise _TransportError(f"{self.address}: {_tls.REQUIRES_TLS}",
                                          maybe_sent=False, tls=True) from e
                if reused and method in _SAFE_TO_REPEAT and _connection_lost(e):
                    _log.debug("%s: %s once more on a new connection", self.address, method)
                    conn, reused = None, False
                    continue
                raise _TransportError(f"{self.address}: {_describe(e)}",
                                      tls=isinstance(e, _TlsFailure)) from e
            self._release(conn)
            return result

    def _release(self, conn) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._IDLE_MAX:
                self._idle.append(conn)
                return
        conn[0].close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for transport, _, _ in idle:
            transport.close()


def _closed_by_peer(sock: _Socket) -> bool:
    """True if an idle connection is no longer usable: anything to read on
    it (the server's FIN or reset, or bytes nobody asked for) means so."""
    handle = sock.handle
    if handle is None:
        return True
    try:
        if isinstance(handle, ssl.SSLSocket) and handle.pending():
            return True
        readable, _, _ = select.select([handle], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _connection_lost(e: BaseException) -> bool:
    """A connection closed under the call (not a timeout, not TLS refusing us)."""
    if isinstance(e, _TlsFailure):
        return False
    if isinstance(e, TTransport.TTransportException):
        return e.type == TTransport.TTransportException.END_OF_FILE
    return isinstance(e, (ConnectionError, EOFError))


def _describe(e: BaseException) -> str:
    if isinstance(e, TTransport.TTransportException) and e.message:
        return e.message
    return str(e) or type(e).__name__


class _TransportError(Exception):
    """``tls``: the connection failed at TLS (raised to the user as
    :class:`TLSError`)."""

    def __init__(self, message: str, maybe_sent: bool = True, tls: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent
        self.tls = tls


def _unavailable(what: str, e: _TransportError) -> Unavailable:
    """The error a failed call raises: TLSError when TLS failed."""
    return (TLSError if e.tls else Unavailable)(f"{what}: {e}")


SHED_THROTTLE_K_DEFAULT = 1.1


class ShedThrottle:
    """Client-side adaptive throttling, as the C++ client's
    (bindings/cpp/shed_throttle.h, where the reasoning is): commits answered
    (``requests``, with the transactions refused here) and commits the
    coordinator took on (``accepts``), decayed over about a second; a new
    transaction is refused with probability
    ``max(0, (requests - k * accepts) / (requests + 1))``. Not thread-safe
    (the client holds its lock)."""

    DECAY_S = 1.0

    def __init__(self, k: float) -> None:
        self._k = k
        self._requests = 0.0
        self._accepts = 0.0
        self._at = 0.0

    def _decay(self, now: float) -> None:
        if now > self._at:
            f = math.exp(-(now - self._at) / self.DECAY_S)
            self._requests *= f
            self._accepts *= f
            self._at = now

    def reject_probability(self, now: float) -> float:
        self._decay(now)
        if self._k <= 0:
            return 0.0
        return max(0.0, (self._requests - self._k * self._accepts) / (self._requests + 1))

    def refuse(self, now: float, draw: float) -> bool:
        if draw >= self.reject_probability(now):
            return False
        self._requests += 1
        return True

    def answered(self, now: float, accepted: bool) -> None:
        self._decay(now)
        self._requests += 1
        if accepted:
            self._accepts += 1


def _from_dtx_error(e: "ttypes.DtxError") -> Error:
    code = e.code
    if code == ttypes.ErrorCode.BAD_ARGUMENT:
        return InvalidArgument(e.message)
    if code == ttypes.ErrorCode.UNKNOWN_TX:
        return InvalidArgument(f"unknown transaction: {e.message}")
    if code == ttypes.ErrorCode.TIMEOUT:
        return Aborted("timeout", e.message)
    if code == ttypes.ErrorCode.UNAVAILABLE and e.retry_after_ms is not None:
        return Overloaded(f"UNAVAILABLE: {e.message}", max(0, e.retry_after_ms) / 1000.0)
    return Unavailable(f"{ttypes.ErrorCode._VALUES_TO_NAMES.get(code, code)}: {e.message}")


class Transaction:
    """One transaction: reads, buffered writes, then commit or abort.

    Obtain one from :meth:`Client.transaction`. Use it from one thread at a
    time. After :meth:`commit` or :meth:`abort` (or an error that ended it)
    every method raises :class:`InvalidArgument`.
    """

    def __init__(self, client: "Client", txid: Tuple[int, int]) -> None:
        self._client = client
        self.txid = txid
        self._reads: Dict[bytes, int] = {}           # key -> version read
        self._read_values: Dict[bytes, Optional[bytes]] = {}
        self._writes: Dict[bytes, Optional[bytes]] = {}  # key -> value (None: delete)
        self._finished = False

    # -- reads and writes -------------------------------------------------
    def get(self, key: bytes) -> Optional[bytes]:
        """The value of ``key`` (``None`` if absent), as of this transaction:
        its own buffered write if any, else the committed value, whose version
        is checked again at commit."""
        self._check_open()
        key = _check_key(key)
        if key in self._writes:
            return self._writes[key]
        if key in self._read_values:
            return self._read_values[key]
        self._check_room(key)
        result = self._client._read(key)
        value = result.value if result.found else None
        self._reads[key] = result.version
        self._read_values[key] = value
        return value

    def put(self, key: bytes, value: bytes) -> None:
        """Buffers a write of ``value`` to ``key``; visible to others after commit."""
        self._check_open()
        key = _check_key(key)
        value = _check_value(value)
        self._check_room(key)
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        """Buffers a delete of ``key``."""
        self._check_open()
        key = _check_key(key)
        self._check_room(key)
        self._writes[key] = None

    # -- ending -------------------------------------------------------------
    def commit(self) -> None:
        """Commits atomically. Raises :class:`Aborted` (with ``.reason``),
        :class:`Unavailable` or :class:`UnknownOutcome`; the transaction is
        finished either way."""
        self._check_open()
        self._finished = True
        if not self._writes and not self._reads:
            return
        reads = [ttypes.ReadItem(key=k, version=v) for k, v in sorted(self._reads.items())]
        writes = [ttypes.WriteItem(key=k, value=v) for k, v in sorted(self._writes.items())]
        self._client._commit(self.txid, reads, writes)

    def abort(self) -> None:
        """Drops the buffered writes; nothing was sent for them. Idempotent."""
        self._finished = True

    @property
    def finished(self) -> bool:
        return self._finished

    def _check_open(self) -> None:
        if self._finished:
            raise InvalidArgument("transaction already finished")

    def _check_room(self, key: bytes) -> None:
        if key not in self._writes and key not in self._reads and \
                len(self._writes) + len(self._reads) >= TX_KEYS_MAX:
            raise InvalidArgument(f"a transaction touches at most {TX_KEYS_MAX} keys")

    # -- context manager: commit on success, abort on an exception ---------
    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._finished:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


T = TypeVar("T")


class Client:
    """A connection to a dtx cluster.

    ``addresses`` is the coordinator's ``"host:port"`` (or a list of
    coordinator addresses: the client follows the one that answers as
    primary). The shard map is fetched once and refreshed when a node says it
    moved. Shareable between threads (see the module docstring).

    Failover (with two or more addresses): a commit whose outcome is open
    (connection lost, NOT_PRIMARY, a coordinator not serving yet, an UNKNOWN
    answer) is asked again with the same txid - commit is idempotent by txid -
    flagged ``is_retry``, following NOT_PRIMARY hints, for up to
    ``failover_timeout`` seconds; only then is :class:`UnknownOutcome` raised.
    A commit still unanswered after ``probe_delay`` seconds (a hung primary)
    makes the client ask every coordinator's GetStatus (again every
    ``probe_delay / 2``); if another one is primary at an epoch newer than any
    the current one reported, the commit is abandoned there and asked again
    at the new primary (same txid, ``is_retry``): it reports committed or
    aborted only on that answer. ``probe_delay=0`` turns probing off (a hung
    primary is then waited out for ``timeout``). An abort for
    ``participant_unavailable`` also probes, so that later commits leave a
    primary cut off from the participants.

    TLS: ``tls=dtx.TLS(ca=..., cert=..., key=...)`` (or
    ``dtx.TLS.from_cluster_dir(DIR)``) makes every connection, to
    coordinators and participants, TLS 1.3 with this client's certificate;
    each server's certificate must be signed by the CA and name the kind of
    node expected at that address. Without ``tls`` the client speaks
    plaintext, which only an ``--insecure`` cluster accepts. A connection that
    fails raises :class:`Unavailable` saying why (another CA, an expired
    certificate, a plaintext server, a TLS server reached without ``tls``).

    Overload: a commit the coordinator refuses as overloaded raises
    :class:`Overloaded` at once (nothing was done; it is not retried
    elsewhere), and after such refusals :meth:`transaction` refuses a share of
    new transactions itself (:class:`ShedThrottle` with ``shed_throttle_k``;
    0 turns that off).
    """

    def __init__(self, addresses: Union[str, Iterable[str]], timeout: float = 5.0,
                 probe_delay: float = PROBE_DELAY_DEFAULT,
                 failover_timeout: float = FAILOVER_TIMEOUT_DEFAULT,
                 tls: Optional[_tls.TLS] = None,
                 shed_throttle_k: float = SHED_THROTTLE_K_DEFAULT) -> None:
        if isinstance(addresses, str):
            addresses = [addresses]
        addresses = list(addresses)
        if not addresses:
            raise InvalidArgument("at least one coordinator address is needed")
        for a in addresses:
            _parse_address(a)
        if timeout <= 0:
            raise InvalidArgument("timeout must be positive")
        if probe_delay < 0:
            raise InvalidArgument("probe_delay must be >= 0")
        if failover_timeout < 0:
            raise InvalidArgument("failover_timeout must be >= 0")
        # One context for every connection (SSLContext is thread-safe); the
        # files are read here, so a wrong path fails now, not at first use.
        self._tls = None if tls is None else (_tls.make_context(tls), tls.ca)
        self._timeout = timeout
        self._probe_delay = probe_delay
        self._failover_timeout = failover_timeout
        self._coordinators = [_Pool(a, Coordinator, timeout, self._tls, _COORDINATOR_KIND)
                              for a in addresses]
        # GetStatus probes: their own connections, with a short timeout.
        self._probers = [_Pool(a, Coordinator, max(probe_delay / 2, 0.01), self._tls,
                               _COORDINATOR_KIND) for a in addresses]
        self._primary = 0
        self._lock = threading.Lock()
        self._epoch_seen: Dict[int, int] = {}  # coordinator index -> newest epoch it said primary at
        self._last_probe = 0.0
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        #: How many times a probe moved this client to a newer primary.
        self.primary_switches = 0
        self._participants: List[_Pool] = []
        self._shard_version = -1
        # The txid's high half: from the OS's cryptographic source, never the
        # `random` module, whose state a program may seed (random.seed(1) in two
        # processes would give two clients the same txids). 63 bits: the wire's
        # i64 stays positive.
        self._client_id = secrets.randbits(63) or 1
        self._counter = 0
        self._throttle = ShedThrottle(shed_throttle_k)
        self._closed = False
        self._refresh_shard_map()

    @classmethod
    def from_cluster_dir(cls, directory: Union[str, "os.PathLike[str]"], name: str = "client",
                         **kwargs) -> "Client":
        """A client of the cluster in ``directory``, as ``dtxctl cluster up
        --dir DIR`` wrote it: every coordinator's client address from
        ``DIR/cluster.conf`` (coordinator-0 first), and TLS from
        ``DIR/security.conf`` with the certificate ``name``
        (:meth:`TLS.from_cluster_dir`; plaintext for an ``--insecure``
        cluster). ``kwargs`` are the other arguments of :class:`Client`
        (``timeout``, ``probe_delay``, ``failover_timeout``). Raises
        :class:`InvalidArgument` for a missing or malformed file, naming it
        and the line, and what :class:`Client` raises."""
        if "tls" in kwargs or "addresses" in kwargs:
            raise TypeError("from_cluster_dir takes the addresses and TLS from the directory; "
                            "use name= for another certificate, or Client(addresses, tls=...)")
        nodes = _cluster_dir.load_cluster_conf(directory)
        addresses = [n.address for n in nodes if n.kind == _COORDINATOR_KIND]
        return cls(addresses, tls=TLS.from_cluster_dir(directory, name=name), **kwargs)

    @classmethod
    def from_cluster_file(cls, path: Union[str, "os.PathLike[str]"], name: str = "client",
                          **kwargs) -> "Client":
        """A client of the cluster a cluster file describes (docs/deploy.md),
        e.g. ``/etc/dtx/cluster.conf`` on an application host: every
        coordinator's client address (coordinator-0 first), and TLS as its
        ``tls``/``certs`` lines say, with ``ca.crt``, ``NAME.crt`` and
        ``NAME.key`` of that directory (relative to the file's directory).
        A file without a ``tls`` line takes ``security.conf`` beside it (a
        ``dtxctl cluster up`` directory); with neither it is refused: there
        is no insecure default. ``kwargs`` as :meth:`from_cluster_dir`."""
        if "tls" in kwargs or "addresses" in kwargs:
            raise TypeError("from_cluster_file takes the addresses and TLS from the file; "
                            "use name= for another certificate, or Client(addresses, tls=...)")
        path = os.fspath(path)
        parsed = _cluster_dir.load_cluster_file(path)
        directory = os.path.dirname(os.path.abspath(path))
        addresses = [n.address for n in parsed.nodes if n.kind == _COORDINATOR_KIND]
        if parsed.tls is None:
            if not os.path.exists(os.path.join(directory, "security.conf")):
                raise InvalidArgument(f"{path}: no 'tls on' or 'tls off' line, and no "
                                      f"security.conf beside it")
            tls = TLS.from_cluster_dir(directory, name=name)
        elif parsed.tls:
            tls = TLS.from_certs_dir(os.path.join(directory, parsed.certs), name=name)
        else:
            tls = None
        return cls(addresses, tls=tls, **kwargs)

    # -- public API -----------------------------------------------------------
    def transaction(self) -> Transaction:
        """Begins a transaction (no round trip: nothing is sent until a read).
        Raises :class:`Overloaded` when the coordinator has been refusing this
        client's commits as overloaded and this one is held back (the share
        follows what the coordinator refuses: :class:`ShedThrottle`)."""
        if self._closed:
            raise InvalidArgument("client is closed")
        with self._lock:
            now = time.monotonic()
            if self._throttle.refuse(now, random.random()):
                raise Overloaded(
                    "overloaded: the coordinator refused commits lately (it sheds load); this "
                    "client refused this transaction before its first read, as it does "
                    f"{int(self._throttle.reject_probability(now) * 100)} % of new ones now "
                    "(docs/design.md \"Overload\"); retry later", 0.1)
            self._counter += 1
            txid = (self._client_id, self._counter)
        return Transaction(self, txid)

    def run(self, fn: Callable[[Transaction], T], retries: int = 10,
            backoff: float = 0.005, backoff_max: float = 0.5) -> T:
        """Calls ``fn(tx)`` in a fresh transaction and commits it, retrying
        aborts for conflict, an unavailable participant or a timeout, and
        :class:`Overloaded` refusals (waiting at least half their
        ``retry_after``), up to ``retries`` more times with jittered
        exponential backoff. Returns what ``fn`` returned; raises the last
        error when the retries run out. Exceptions raised by ``fn`` itself
        abort and propagate at once."""
        if retries < 0:
            raise InvalidArgument("retries must be >= 0")
        delay = backoff
        for attempt in range(retries + 1):
            try:
                tx = self.transaction()
            except Overloaded as e:
                # Refused before any read (this client's throttle).
                if attempt == retries:
                    raise
                time.sleep(random.uniform(e.retry_after / 2, max(delay, e.retry_after)))
                delay = min(delay * 2, backoff_max)
                continue
            floor = 0.0
            try:
                result = fn(tx)
                if not tx.finished:
                    tx.commit()
                return result
            except Aborted as e:
                tx.abort()
                if e.reason not in _RETRYABLE_REASONS or attempt == retries:
                    raise
            except Overloaded as e:
                # Nothing was done for it: wait about as long as asked.
                tx.abort()
                if attempt == retries:
                    raise
                floor = e.retry_after / 2
            except BaseException:
                tx.abort()
                raise
            time.sleep(random.uniform(floor, max(delay, 2 * floor)))
            delay = min(delay * 2, backoff_max)
        raise AssertionError("unreachable")

    def outcome(self, txid: Tuple[int, int]) -> Optional[str]:
        """What became of a transaction (e.g. after :class:`UnknownOutcome`):
        ``"committed"``, ``"aborted"``, or ``None`` when the coordinator cannot
        tell (still running, never seen there, or forgotten). Asks GetOutcome,
        which changes nothing: unlike a participant's QueryDecision it never
        aborts an undecided transaction."""
        try:
            o = self._call_coordinator("GetOutcome", ttypes.TxId(hi=txid[0], lo=txid[1]))
        except _TransportError as e:
            raise _unavailable("coordinator unreachable", e) from None
        except ttypes.DtxError as e:
            raise _from_dtx_error(e) from None
        if o == ttypes.Outcome.COMMITTED:
            return "committed"
        if o == ttypes.Outcome.ABORTED:
            return "aborted"
        return None

    def close(self) -> None:
        """Closes every connection. Idempotent."""
        self._closed = True
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)
        for p in self._coordinators + self._probers + self._participants:
            p.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    # -- internals ------------------------------------------------------------
    def _call_coordinator(self, method: str, *args):
        """Calls the primary coordinator, moving on to the next address when
        one cannot be reached or says it is not the primary."""
        last: Optional[Exception] = None
        n = len(self._coordinators)
        for i in range(n):
            idx = (self._primary + i) % n
            try:
                result = self._coordinators[idx].call(method, *args)
                self._primary = idx
                return result
            except ttypes.DtxError as e:
                if e.code == ttypes.ErrorCode.NOT_PRIMARY and n > 1:
                    last = e
                    continue
                raise
            except _TransportError as e:
                last = e
        if isinstance(last, ttypes.DtxError):
            raise last
        raise last

    def _refresh_shard_map(self) -> None:
        try:
            m = self._call_coordinator("GetShardMap")
        except _TransportError as e:
            raise _unavailable("coordinator unreachable", e) from None
        except ttypes.DtxError as e:
            raise _from_dtx_error(e) from None
        if m.scheme != "hash" or not m.participants:
            raise Unavailable(f"unsupported shard map (scheme {m.scheme!r}, "
                              f"{len(m.participants)} participants)")
        with self._lock:
            old = self._participants
            self._participants = [_Pool(a, Participant, self._timeout, self._tls,
                                        _PARTICIPANT_KIND) for a in m.participants]
            self._shard_version = m.version
        for p in old:
            p.close()
        # The primary's epoch, so that a probe can tell a newer primary from a
        # stale one without waiting for this one (best effort).
        if self._probing():
            self._status(self._primary)

    def _participant_for(self, key: bytes) -> _Pool:
        parts = self._participants
        return parts[_fnv1a64(key) % len(parts)]

    def _read(self, key: bytes):
        pool = self._participant_for(key)
        try:
            return pool.call("Read", key)
        except _TransportError as e:
            raise _unavailable("participant unreachable", e) from None
        except ttypes.DtxError as e:
            if e.code == ttypes.ErrorCode.WRONG_SHARD:
                self._refresh_shard_map()
            raise _from_dtx_error(e) from None

    def _commit(self, txid: Tuple[int, int], reads, writes) -> None:
        try:
            self._commit_attempts(txid, reads, writes)
        except Overloaded:
            with self._lock:
                self._throttle.answered(time.monotonic(), accepted=False)
            raise
        except BaseException:
            with self._lock:
                self._throttle.answered(time.monotonic(), accepted=True)
            raise
        with self._lock:
            self._throttle.answered(time.monotonic(), accepted=True)

    def _commit_attempts(self, txid: Tuple[int, int], reads, writes) -> None:
        req = ttypes.CommitRequest(
            txid=ttypes.TxId(hi=txid[0], lo=txid[1]), reads=reads, writes=writes,
            shard_map_version=self._shard_version)
        deadline = time.monotonic() + self._failover_timeout
        n = len(self._coordinators)
        maybe_sent = False  # an earlier attempt may have reached a coordinator
        last = ""
        last_tls = False  # the last failure was a TLS one (raised as TLSError)
        attempt = 0
        while True:
            attempt += 1
            # A re-sent txid may already have committed: the coordinator must
            # then answer UNKNOWN rather than ABORTED when it cannot tell.
            req.is_retry = True if maybe_sent else None
            idx = self._primary
            delay = min(_COMMIT_RETRY_DELAY * attempt, 0.2)
            try:
                result = self._commit_at(idx, req)
            except _Moved:
                maybe_sent = True  # the abandoned attempt may have reached it
                last = "moved to a newer primary"
                last_tls = False
                delay = 0
            except ttypes.DtxError as e:
                if e.code == ttypes.ErrorCode.WRONG_SHARD:
                    self._refresh_shard_map()
                    raise Aborted("conflict", "shard map changed: " + e.message) from None
                if e.code == ttypes.ErrorCode.NOT_PRIMARY and n > 1:
                    self._follow(idx, e.primary)
                    delay = 0 if e.primary else delay
                elif (e.code == ttypes.ErrorCode.UNAVAILABLE and n > 1 and
                      e.retry_after_ms is None):
                    # (With retry_after_ms the node sheds load and did
                    # nothing: raised below as Unavailable, not retried.)
                    self._follow(idx, None)  # e.g. a primary still establishing itself
                else:
                    if maybe_sent:
                        raise UnknownOutcome(f"commit outcome unknown: {e.message}", txid) from None
                    raise _from_dtx_error(e) from None
                last = f"{self._coordinators[idx].address}: {e.message}"
                last_tls = False
            except _TransportError as e:
                maybe_sent = maybe_sent or e.maybe_sent
                last, last_tls = str(e), e.tls
                if n > 1:
                    self._follow(idx, None)
            else:
                if result.outcome == ttypes.Outcome.COMMITTED:
                    return
                if result.outcome == ttypes.Outcome.ABORTED:
                    reason = _REASON_NAMES.get(result.reason, "conflict")
                    if result.reason == ttypes.AbortReason.PARTICIPANT_UNAVAILABLE:
                        self._probe_soon(idx)
                    raise Aborted(reason, result.detail or "")
                maybe_sent = True  # UNKNOWN: ask again (a new primary may know)
                last = f"the coordinator could not tell: {result.detail or ''}"
                last_tls = False
            if time.monotonic() + delay >= deadline or attempt >= 40:
                if not maybe_sent:
                    raise (TLSError if last_tls else Unavailable)(
                        f"coordinator unavailable: {last}")
                raise UnknownOutcome(f"commit outcome unknown: {last}", txid)
            if delay > 0:
                time.sleep(delay)

    def _probing(self) -> bool:
        return self._probe_delay > 0 and len(self._coordinators) > 1 and not self._closed

    def _follow(self, failed: int, hint: Optional[str]) -> None:
        """After coordinator ``failed`` did not serve: to the hinted primary,
        else the next address (unless another thread moved on already)."""
        if hint:
            for i, p in enumerate(self._coordinators):
                if p.address == hint:
                    self._primary = i
                    return
        if self._primary == failed:
            self._primary = (failed + 1) % len(self._coordinators)

    def _commit_at(self, idx: int, req):
        """Commit at coordinator ``idx``; raises ``_Moved`` when a probe found
        a newer primary while it was unanswered (the client then points at
        it, and this attempt's late answer is dropped)."""
        pool = self._coordinators[idx]
        if not self._probing():
            return pool.call("Commit", req)
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=_COMMIT_THREADS_MAX, thread_name_prefix="dtx-commit")
            executor = self._executor
        try:
            future = executor.submit(pool.call, "Commit", req)
        except RuntimeError:  # closed meanwhile
            raise InvalidArgument("client is closed") from None
        wait = self._probe_delay
        while True:
            try:
                return future.result(timeout=wait)
            except concurrent.futures.TimeoutError:
                pass
            wait = self._probe_delay / 2
            if self._primary == idx:
                newer = self._newer_primary(idx)
                if newer is not None and self._primary == idx:
                    self._primary = newer
                    self.primary_switches += 1
            if self._primary != idx:
                # Moved on (this probe or another thread's): ask there, with
                # the same txid; this attempt's answer is dropped.
                future.add_done_callback(lambda f: f.exception())
                raise _Moved()

    def _status(self, idx: int):
        """GetStatus of coordinator ``idx`` (probe timeout), or None. Records
        the epoch of one that says it is primary."""
        try:
            st = self._probers[idx].call("GetStatus")
        except (_TransportError, ttypes.DtxError):
            return None
        if st.role == ttypes.NodeRole.PRIMARY:
            with self._lock:
                self._epoch_seen[idx] = max(self._epoch_seen.get(idx, 0), st.epoch)
        return st

    def _newer_primary(self, current: int) -> Optional[int]:
        """Index of another coordinator that says it is primary at an epoch
        newer than any ``current`` reported, or None. ``current`` is asked
        too when its epoch is not known yet (it may be the newest)."""
        self._last_probe = time.monotonic()
        best, best_epoch = None, 0
        for i in range(len(self._coordinators)):
            if i == current:
                continue
            st = self._status(i)
            if st is not None and st.role == ttypes.NodeRole.PRIMARY and st.epoch > best_epoch:
                best, best_epoch = i, st.epoch
        if best is None:
            return None
        if self._epoch_seen.get(current, 0) == 0:
            self._status(current)
        return best if best_epoch > self._epoch_seen.get(current, 0) else None

    def _probe_soon(self, current: int) -> None:
        """A probe now unless one ran within the last probe delay; switches
        to a newer primary for the next commits."""
        if not self._probing() or time.monotonic() - self._last_probe < self._probe_delay:
            return
        newer = self._newer_primary(current)
        if newer is not None and self._primary == current:
            self._primary = newer
            self.primary_switches += 1


class _Moved(Exception):
    """A commit attempt abandoned for a newer primary (internal)."""


__all__ = ["Client", "Transaction", "Error", "Aborted", "Unavailable", "UnknownOutcome",
           "Overloaded", "ShedThrottle", "InvalidArgument", "TLS", "KEY_BYTES_MAX", "VALUE_BYTES_MAX", "TX_KEYS_MAX"]
