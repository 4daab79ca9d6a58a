"""dtx: serializable multi-key transactions over a dtx cluster.

Usage::

    import dtx
    with dtx.Client.from_cluster_dir("dtx-cluster") as c:   # `dtxctl cluster up --dir`
        with c.transaction() as tx:
            a = int(tx.get(b"alice") or b"0")
            tx.put(b"alice", str(a - 10).encode())
            tx.put(b"bob", b"10")
        # committed here; an exception inside the block aborts instead

Keys and values are ``bytes``. Reads go straight to the participant that owns
the key and remember its version; writes are buffered; commit hands the read
set (with versions) and the write set to the coordinator, which runs
two-phase commit. A conflicting transaction raises :class:`Aborted` with
``reason == "conflict"``; :meth:`Client.run` retries those with backoff.

Thread safety: one :class:`Client` may be shared by any number of threads:
every RPC checks a connection out of a per-address pool, so no two threads
ever use one Thrift connection at once. A :class:`Transaction` belongs to
one thread at a time.

``Client.from_cluster_dir(DIR)`` reads the coordinators' addresses from
``DIR/cluster.conf`` and TLS from ``DIR/security.conf``: a cluster started by
``dtxctl cluster up`` speaks TLS 1.3 and wants a client certificate, and the
one it made is used (``name="app"`` picks another). By hand::

    with dtx.Client(["127.0.0.1:40101"], tls=dtx.TLS(ca="ca.crt", cert="client.crt",
                                                     key="client.key")) as c:
        ...

``tls=None`` (the default) is plaintext, for clusters started with
``--insecure``.
"""

from dtx.client import (  # noqa: F401
    Aborted,
    Client,
    Error,
    InvalidArgument,
    Overloaded,
    ShedThrottle,
    TLS,
    TLSError,
    Transaction,
    Unavailable,
    UnknownOutcome,
    KEY_BYTES_MAX,
    VALUE_BYTES_MAX,
    TX_KEYS_MAX,
)

__all__ = [
    "Aborted",
    "Client",
    "Error",
    "InvalidArgument",
    "TLS",
    "TLSError",
    "Transaction",
    "Unavailable",
    "UnknownOutcome",
    "KEY_BYTES_MAX",
    "VALUE_BYTES_MAX",
    "TX_KEYS_MAX",
]
