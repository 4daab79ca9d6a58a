"""A client under load, as an application runs it, for test_package.py:
transfers between keys on every participant from a few threads until its
stdin closes, with Python's logging left unconfigured (so anything logged at
WARNING or above, by dtx or by Thrift, would reach stderr through logging's
last-resort handler). Errors a node restart causes are counted, not printed.

    python3 load_client.py CLUSTER_DIR PROGRESS_FILE DTX_LOG_FILE

PROGRESS_FILE: the number of committed transactions so far (replaced as it
grows). DTX_LOG_FILE: the records of the logger "dtx" at DEBUG, and nothing
else (a handler on "dtx" only). At the end prints "committed N failed M".
"""

import logging
import os
import random
import sys
import threading

import dtx

THREADS = 4
KEYS = 32


def main() -> None:
    cluster_dir, progress_path, log_path = sys.argv[1:4]
    dtx_log = logging.getLogger("dtx")
    dtx_log.setLevel(logging.DEBUG)
    dtx_log.addHandler(logging.FileHandler(log_path))
    dtx_log.propagate = False

    stop = threading.Event()
    lock = threading.Lock()
    counts = {"committed": 0, "failed": 0}

    def write_progress() -> None:
        tmp = progress_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(counts["committed"]))
        os.replace(tmp, progress_path)

    def transfer(tx, a: bytes, b: bytes) -> None:
        va = int(tx.get(a) or b"0")
        vb = int(tx.get(b) or b"0")
        tx.put(a, str(va - 1).encode())
        tx.put(b, str(vb + 1).encode())

    def worker(client: dtx.Client, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            a, b = rng.sample(range(KEYS), 2)
            try:
                client.run(lambda tx: transfer(tx, b"acct-%d" % a, b"acct-%d" % b), retries=3)
            except (dtx.Aborted, dtx.Unavailable, dtx.UnknownOutcome):
                with lock:
                    counts["failed"] += 1
                stop.wait(0.05)
                continue
            with lock:
                counts["committed"] += 1
                write_progress()

    with dtx.Client.from_cluster_dir(cluster_dir, timeout=2.0) as client:
        threads = [threading.Thread(target=worker, args=(client, n)) for n in range(THREADS)]
        for t in threads:
            t.start()
        sys.stdin.read()  # until the test closes our stdin
        stop.set()
        for t in threads:
            t.join()
    print(f"committed {counts['committed']} failed {counts['failed']}")


if __name__ == "__main__":
    main()
