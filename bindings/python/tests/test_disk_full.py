"""A node whose filesystem fills up (docs/design.md "Full disk"): the node's
directory (participant-0's, or coordinator-0's) is a 512 MiB tmpfs the test
mounts, and a filler file leaves less than the default 256 MiB watermark free.
New writes through that node are refused with a retryable error that says
why (an abort for the participant, UNAVAILABLE for the coordinator), reads go
on, nothing committed is lost, the node is not restarted, and once the filler
is gone the node takes writes again by itself - also with the bank workload
running while the disk fills.

Needs root (mount); skipped otherwise."""

import os
import pathlib
import signal
import subprocess
import time

import pytest

from conftest import Cluster, dtxctl_path, running_bench

TMPFS_MIB = 512
# Leaves 200 MiB free: below the 256 MiB watermark (--disk-free-min-mb),
# and still below it with the 64 MiB ballast released.
FREE_WHEN_FULL_MIB = 200
KEYS = [f"disk-{i:02d}".encode() for i in range(40)]  # on every participant


def _mount_tmpfs(path: pathlib.Path) -> None:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")


@pytest.fixture(params=["participant-0", "coordinator-0"])
def small_disk_cluster(request, tmp_path):
    d = tmp_path / "cluster"
    node_dir = d / request.param
    node_dir.mkdir(parents=True)
    _mount_tmpfs(node_dir)
    dtxctl = dtxctl_path()
    c = None
    try:
        up = subprocess.run([str(dtxctl), "cluster", "up", "--dir", str(d), "--participants", "3"],
                            capture_output=True, text=True, timeout=90)
        assert up.returncode == 0, f"cluster up failed:\n{up.stdout}\n{up.stderr}"
        c = Cluster(d, dtxctl)
        yield c, request.param
    finally:
        subprocess.run([str(dtxctl), "cluster", "down", "--dir", str(d)], capture_output=True,
                       timeout=60)
        for pid in (c.all_pids() if c else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        subprocess.run(["umount", "-l", str(node_dir)], capture_output=True)


def _wait_log(cluster, node: str, text: str, timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = (cluster.dir / node / "node.log").read_text(errors="replace")
        if text in log:
            return True
        time.sleep(0.2)
    return False


def _write_all(tx, value: bytes) -> None:
    for k in KEYS:
        tx.put(k, value)


def test_a_full_disk_refuses_new_writes_with_a_clear_error_and_recovers_by_itself(
        small_disk_cluster):
    import dtx
    cluster, node = small_disk_cluster
    node_dir = cluster.dir / node
    client = dtx.Client(cluster.coordinator, timeout=5.0, tls=cluster.tls)
    try:
        client.run(lambda tx: _write_all(tx, b"before"))
        pid = cluster.pid(node)
        assert (node_dir / "ballast").stat().st_size == 64 << 20

        st = os.statvfs(node_dir)
        filler_bytes = st.f_bavail * st.f_frsize - (FREE_WHEN_FULL_MIB << 20)
        assert filler_bytes > 0
        with open(node_dir / "filler", "wb") as f:
            f.truncate(0)
            os.posix_fallocate(f.fileno(), 0, filler_bytes)
        assert _wait_log(cluster, node, "disk space low"), "the node did not notice"
        assert _wait_log(cluster, node, "deleted the ballast file")
        metrics = cluster.ctl("metrics", node).stdout
        assert "dtx_disk_low 1" in metrics, metrics
        status = cluster.ctl("status").stdout
        row = next(line for line in status.splitlines() if line.startswith(node))
        assert row.endswith("disk-low"), status
        assert "new writes refused until space returns" in status, status

        with pytest.raises(dtx.Error) as refused:
            client.run(lambda tx: _write_all(tx, b"while-full"), retries=2)
        assert f"{node}: disk space low" in str(refused.value), str(refused.value)
        if node.startswith("participant"):
            assert isinstance(refused.value, dtx.Aborted), repr(refused.value)
            assert refused.value.reason == "participant_unavailable"
        else:
            assert isinstance(refused.value, dtx.Unavailable), repr(refused.value)
        # Reads go on, and see what was committed before.
        values = client.run(lambda tx: [tx.get(k) for k in KEYS])
        assert values == [b"before"] * len(KEYS)
        assert cluster.pid(node) == pid, "the node was restarted"

        os.unlink(node_dir / "filler")
        assert _wait_log(cluster, node, "new writes accepted again")
        assert "dtx_disk_low 0" in cluster.ctl("metrics", node).stdout
        row = next(line for line in cluster.ctl("status").stdout.splitlines()
                   if line.startswith(node))
        assert row.endswith(" up"), row
        client.run(lambda tx: _write_all(tx, b"after"))
        assert client.run(lambda tx: [tx.get(k) for k in KEYS]) == [b"after"] * len(KEYS)
        assert (node_dir / "ballast").stat().st_size == 64 << 20, "the ballast was not remade"
        assert cluster.pid(node) == pid, "the node was restarted"
    finally:
        client.close()


def test_a_disk_filled_under_the_bank_workload_loses_nothing_and_resumes(small_disk_cluster):
    """The same, with the bank workload running (dtx-bench, 8 clients): the
    disk fills to 32 MiB free in the middle of it and is freed 4 s later. The
    transactions through the node are refused with retryable errors
    meanwhile, the others commit, the invariant holds (nothing acknowledged
    is lost), commits through the node resume, and the node is not
    restarted."""
    cluster, node = small_disk_cluster
    node_dir = cluster.dir / node
    pid = cluster.pid(node)
    with running_bench(cluster, "--workload", "bank", "--clients", "8", "--duration",
                       "12") as bench:
        time.sleep(3)
        st = os.statvfs(node_dir)
        filler_bytes = st.f_bavail * st.f_frsize - (32 << 20)
        assert filler_bytes > 0
        with open(node_dir / "filler", "wb") as f:
            os.posix_fallocate(f.fileno(), 0, filler_bytes)
        assert _wait_log(cluster, node, "disk space low"), "the node did not notice"
        time.sleep(4)
        os.unlink(node_dir / "filler")
        assert _wait_log(cluster, node, "new writes accepted again")
        r = bench.result()
    assert r["invariant_ok"], r
    assert r["not_committed"] > 0, "nothing was refused while the disk was full"
    # Commits went on after the disk was freed (the last full seconds).
    tail = [s for s in r["timeline"] if not s["warmup"] and s["span_s"] >= 1.0][-2:]
    assert tail and all(s["committed"] > 0 for s in tail), r["timeline"]
    assert cluster.pid(node) == pid, "the node was restarted"
