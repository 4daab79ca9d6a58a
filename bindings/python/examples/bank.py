#!/usr/bin/python3
"""Bank transfers with the dtx Python binding.

Run against a local cluster (see the README):
    PYTHONPATH=bindings/python:build/python /usr/bin/python3 \
        bindings/python/examples/bank.py 127.0.0.1:PORT [CLUSTER_DIR]
CLUSTER_DIR (default $DTX_CLUSTER_DIR) is the `dtxctl cluster up --dir`
directory: its client certificate is used when the cluster has TLS. Without
one the client speaks plaintext (an --insecure cluster).
"""

import os
import random
import sys
from typing import Optional

import dtx


def main(address: str, cluster_dir: Optional[str]) -> None:
    accounts = [f"acct-{i}".encode() for i in range(10)]
    tls = dtx.TLS.from_cluster_dir(cluster_dir) if cluster_dir else None
    with dtx.Client(address, tls=tls) as c:
        with c.transaction() as tx:
            for a in accounts:
                tx.put(a, b"100")

        def transfer(tx: dtx.Transaction) -> None:
            src, dst = random.sample(accounts, 2)
            a, b = int(tx.get(src)), int(tx.get(dst))
            tx.put(src, str(a - 5).encode())
            tx.put(dst, str(b + 5).encode())

        for _ in range(100):
            c.run(transfer, retries=20)
        total = c.run(lambda tx: sum(int(tx.get(a)) for a in accounts))
        print(f"100 transfers done; total balance {total} (expected {100 * len(accounts)})")
        if total != 100 * len(accounts):
            sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:40101",
         sys.argv[2] if len(sys.argv) > 2 else os.environ.get("DTX_CLUSTER_DIR"))
