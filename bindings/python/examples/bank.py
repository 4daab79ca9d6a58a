#!/usr/bin/python3
"""Bank transfers with the dtx Python binding.

Run against a local cluster (see the README):
    build/tools/dtxctl cluster up --dir /tmp/c --participants 3
    .venv/bin/python bindings/python/examples/bank.py /tmp/c   # pip-installed dtx
    PYTHONPATH=bindings/python /usr/bin/python3 bindings/python/examples/bank.py /tmp/c
The argument (default $DTX_CLUSTER_DIR, else ./dtx-cluster) is the `dtxctl
cluster up --dir` directory: dtx.Client.from_cluster_dir reads the
coordinators' addresses from its cluster.conf and, when the cluster runs TLS,
uses the client certificate `cluster up` made (security.conf).
"""

import os
import random
import sys

import dtx


def main(cluster_dir: str) -> None:
    accounts = [f"acct-{i}".encode() for i in range(10)]
    with dtx.Client.from_cluster_dir(cluster_dir) as c:
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
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DTX_CLUSTER_DIR", "dtx-cluster"))
