"""dtx: serializable multi-key transactions over a dtx cluster.

Usage::

    import dtx
    with dtx.Client("127.0.0.1:40101") as c:
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

A cluster started by ``dtxctl cluster up`` speaks TLS 1.3 and wants a client
certificate; ``dtx.TLS.from_cluster_dir(DIR)`` finds the one it made::

    with dtx.Client(addrs, tls=dtx.TLS.from_cluster_dir("dtx-cluster")) as c:
        ...

or name the files: ``tls=dtx.TLS(ca="ca.crt", cert="client.crt",
key="client.key")``. ``tls=None`` (the default) is plaintext, for clusters
started with ``--insecure``.
"""

from dtx.client import (  # noqa: F401
    Aborted,
    Client,
    Error,
    InvalidArgument,
    TLS,
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
    "Transaction",
    "Unavailable",
    "UnknownOutcome",
    "KEY_BYTES_MAX",
    "VALUE_BYTES_MAX",
    "TX_KEYS_MAX",
]
