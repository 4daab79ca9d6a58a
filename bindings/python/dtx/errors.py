"""The exception types of the dtx package (re-exported by ``dtx`` and
``dtx.client``)."""

from __future__ import annotations

from typing import Tuple


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


class Overloaded(Unavailable):
    """A node sheds load - above capacity - and did nothing for
    this request; or this client refused a new transaction itself because the
    coordinator has been refusing its commits (docs/design.md "Overload").
    ``retry_after`` (seconds) is when asking again may be served.
    :meth:`Client.run` retries it with backoff; the client never retries it
    on its own."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TLSError(Unavailable):
    """A connection failed at TLS: a handshake that either side refused (a
    certificate from another CA, an expired one, a node of the wrong kind at
    an address), or TLS on one side only (a client without ``tls=`` at a TLS
    cluster, a TLS client at an ``--insecure`` one). The message says which
    (dtx/tls.py words them). Nothing was sent over it. A subclass of
    :class:`Unavailable`, which is what it was raised as before; unlike a
    node that is down, waiting does not help: the configuration must change."""


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
