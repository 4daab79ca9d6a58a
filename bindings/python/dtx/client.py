"""The dtx Python client: Client, Transaction and the exception types.

Built on the Thrift-generated code for ``idl/dtx.thrift`` (package
``dtx_thrift``, generated at build time into ``build/python``) and Debian's
``python3-thrift``; it speaks the same framed binary protocol as every node.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, Union

from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TException
from thrift.transport import TSocket, TTransport

try:
    from dtx_thrift import Coordinator, Participant
    from dtx_thrift import ttypes
except ImportError as e:  # pragma: no cover - a set-up error, said plainly
    raise ImportError(
        "dtx needs the Thrift-generated package 'dtx_thrift'; build the project "
        "(./scripts/build) and put build/python on PYTHONPATH"
    ) from e

# Limits: the same numbers as common/types.h (the nodes enforce them too).
KEY_BYTES_MAX = 1024
VALUE_BYTES_MAX = 1 << 20
TX_KEYS_MAX = 1024

_RETRYABLE_REASONS = ("conflict", "participant_unavailable", "timeout")
_REASON_NAMES = {
    ttypes.AbortReason.CONFLICT: "conflict",
    ttypes.AbortReason.PARTICIPANT_UNAVAILABLE: "participant_unavailable",
    ttypes.AbortReason.TIMEOUT: "timeout",
    ttypes.AbortReason.CLIENT_ABORT: "client_abort",
    ttypes.AbortReason.COORDINATOR_FAILOVER: "coordinator_failover",
}


class Error(Exception):
    """Base class of every error this package raises."""


class Aborted(Error):
    """The transaction was aborted; nothing it wrote is visible.

    ``reason`` is one of ``"conflict"``, ``"participant_unavailable"``,
    ``"timeout"``, ``"client_abort"``, ``"coordinator_failover"``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"transaction aborted: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail


class Unavailable(Error):
    """A node could not be reached or cannot serve now; nothing was committed."""


class UnknownOutcome(Error):
    """The commit may or may not have happened (the coordinator was lost after
    the request was sent). ``txid`` identifies it; :meth:`Client.outcome`
    asks the coordinator what became of it."""

    def __init__(self, message: str, txid: Tuple[int, int]) -> None:
        super().__init__(message)
        self.txid = txid


class InvalidArgument(Error, ValueError):
    """Bad input: wrong type, empty or oversized key, oversized value, a finished
    transaction used again. Nothing was sent."""


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


class _Pool:
    """Idle Thrift connections to one address; thread-safe. A connection is
    used by one thread at a time and dropped after any transport error."""

    _IDLE_MAX = 16

    def __init__(self, address: str, service, timeout_s: float) -> None:
        self.address = address
        self._host, self._port = _parse_address(address)
        self._service = service
        self._timeout_ms = int(timeout_s * 1000)
        self._idle: List[Tuple[TTransport.TTransportBase, object]] = []
        self._lock = threading.Lock()
        self._closed = False

    def _open(self):
        sock = TSocket.TSocket(self._host, self._port)
        sock.setTimeout(self._timeout_ms)
        transport = TTransport.TFramedTransport(sock)
        client = self._service.Client(TBinaryProtocol.TBinaryProtocol(transport))
        transport.open()
        return transport, client

    def call(self, method: str, *args):
        """Calls ``method`` on a pooled connection. Transport failures raise
        ``_TransportError``; ``DtxError`` replies propagate as they are."""
        with self._lock:
            if self._closed:
                raise InvalidArgument("client is closed")
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = self._open()
            result = getattr(conn[1], method)(*args)
        except ttypes.DtxError:
            self._release(conn)
            raise
        except (TException, socket.error, OSError, EOFError) as e:
            if conn is not None:
                conn[0].close()
            raise _TransportError(f"{self.address}: {e}") from e
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
        for transport, _ in idle:
            transport.close()


class _TransportError(Exception):
    pass


def _from_dtx_error(e: "ttypes.DtxError") -> Error:
    code = e.code
    if code == ttypes.ErrorCode.BAD_ARGUMENT:
        return InvalidArgument(e.message)
    if code == ttypes.ErrorCode.UNKNOWN_TX:
        return InvalidArgument(f"unknown transaction: {e.message}")
    if code == ttypes.ErrorCode.TIMEOUT:
        return Aborted("timeout", e.message)
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
    """

    def __init__(self, addresses: Union[str, Iterable[str]], timeout: float = 5.0) -> None:
        if isinstance(addresses, str):
            addresses = [addresses]
        addresses = list(addresses)
        if not addresses:
            raise InvalidArgument("at least one coordinator address is needed")
        for a in addresses:
            _parse_address(a)
        if timeout <= 0:
            raise InvalidArgument("timeout must be positive")
        self._timeout = timeout
        self._coordinators = [_Pool(a, Coordinator, timeout) for a in addresses]
        self._primary = 0
        self._lock = threading.Lock()
        self._participants: List[_Pool] = []
        self._shard_version = -1
        self._client_id = random.getrandbits(63) or 1
        self._counter = 0
        self._closed = False
        self._refresh_shard_map()

    # -- public API -----------------------------------------------------------
    def transaction(self) -> Transaction:
        """Begins a transaction (no round trip: nothing is sent until a read)."""
        if self._closed:
            raise InvalidArgument("client is closed")
        with self._lock:
            self._counter += 1
            txid = (self._client_id, self._counter)
        return Transaction(self, txid)

    def run(self, fn: Callable[[Transaction], T], retries: int = 10,
            backoff: float = 0.005, backoff_max: float = 0.5) -> T:
        """Calls ``fn(tx)`` in a fresh transaction and commits it, retrying
        aborts for conflict, an unavailable participant or a timeout up to
        ``retries`` more times with jittered exponential backoff. Returns what
        ``fn`` returned; raises the last error when the retries run out.
        Exceptions raised by ``fn`` itself abort and propagate at once."""
        if retries < 0:
            raise InvalidArgument("retries must be >= 0")
        delay = backoff
        for attempt in range(retries + 1):
            tx = self.transaction()
            try:
                result = fn(tx)
                if not tx.finished:
                    tx.commit()
                return result
            except Aborted as e:
                tx.abort()
                if e.reason not in _RETRYABLE_REASONS or attempt == retries:
                    raise
            except BaseException:
                tx.abort()
                raise
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, backoff_max)
        raise AssertionError("unreachable")

    def outcome(self, txid: Tuple[int, int]) -> Optional[str]:
        """What became of a transaction (e.g. after :class:`UnknownOutcome`):
        ``"committed"``, ``"aborted"`` (it never committed: presumed abort), or
        ``None`` when the coordinator cannot tell yet."""
        try:
            d = self._call_coordinator("QueryDecision", ttypes.TxId(hi=txid[0], lo=txid[1]))
        except _TransportError as e:
            raise Unavailable(f"coordinator unreachable: {e}") from None
        except ttypes.DtxError as e:
            raise _from_dtx_error(e) from None
        if d == ttypes.Decision.COMMIT:
            return "committed"
        if d == ttypes.Decision.ABORT:
            return "aborted"
        return None

    def close(self) -> None:
        """Closes every connection. Idempotent."""
        self._closed = True
        for p in self._coordinators + self._participants:
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
        raise _TransportError(str(last))

    def _refresh_shard_map(self) -> None:
        try:
            m = self._call_coordinator("GetShardMap")
        except _TransportError as e:
            raise Unavailable(f"coordinator unreachable: {e}") from None
        except ttypes.DtxError as e:
            raise _from_dtx_error(e) from None
        if m.scheme != "hash" or not m.participants:
            raise Unavailable(f"unsupported shard map (scheme {m.scheme!r}, "
                              f"{len(m.participants)} participants)")
        with self._lock:
            old = self._participants
            self._participants = [_Pool(a, Participant, self._timeout) for a in m.participants]
            self._shard_version = m.version
        for p in old:
            p.close()

    def _participant_for(self, key: bytes) -> _Pool:
        parts = self._participants
        return parts[_fnv1a64(key) % len(parts)]

    def _read(self, key: bytes):
        pool = self._participant_for(key)
        try:
            return pool.call("Read", key)
        except _TransportError as e:
            raise Unavailable(f"participant unreachable: {e}") from None
        except ttypes.DtxError as e:
            if e.code == ttypes.ErrorCode.WRONG_SHARD:
                self._refresh_shard_map()
            raise _from_dtx_error(e) from None

    def _commit(self, txid: Tuple[int, int], reads, writes) -> None:
        req = ttypes.CommitRequest(
            txid=ttypes.TxId(hi=txid[0], lo=txid[1]), reads=reads, writes=writes,
            shard_map_version=self._shard_version)
        result = None
        last: Optional[Exception] = None
        # A transport failure after the request may have left the coordinator
        # deciding: ask again with the same txid (commit is idempotent by txid).
        for attempt in range(3):
            # A re-sent txid may already have committed: the coordinator must
            # then answer UNKNOWN rather than ABORTED when it cannot tell.
            req.is_retry = attempt > 0 or None
            try:
                result = self._call_coordinator("Commit", req)
                break
            except ttypes.DtxError as e:
                if e.code == ttypes.ErrorCode.WRONG_SHARD:
                    self._refresh_shard_map()
                    raise Aborted("conflict", "shard map changed: " + e.message) from None
                raise _from_dtx_error(e) from None
            except _TransportError as e:
                last = e
                time.sleep(0.05)
        if result is None:
            # The request may have reached the coordinator before the failure.
            raise UnknownOutcome(f"commit outcome unknown: {last}", txid)
        if result.outcome == ttypes.Outcome.COMMITTED:
            return
        if result.outcome == ttypes.Outcome.ABORTED:
            reason = _REASON_NAMES.get(result.reason, "conflict")
            raise Aborted(reason, result.detail or "")
        raise UnknownOutcome(f"commit outcome unknown: {result.detail or ''}", txid)


__all__ = ["Client", "Transaction", "Error", "Aborted", "Unavailable", "UnknownOutcome",
           "InvalidArgument", "KEY_BYTES_MAX", "VALUE_BYTES_MAX", "TX_KEYS_MAX"]
