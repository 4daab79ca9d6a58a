"""Fixture: a real local dtx cluster started with `dtxctl cluster up` in a
temporary directory (TLS on, its default: clients pass ``tls=cluster.tls``),
stopped (and every pid it recorded killed) afterwards."""

import contextlib
import datetime
import itertools
import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
BUILD = pathlib.Path(os.environ.get("DTX_BUILD_DIR", REPO / "build"))
# The package from the source tree; the build generated its dtx/_gen
# (idl/CMakeLists.txt). test_package.py installs it with pip instead.
BINDING = REPO / "bindings" / "python"
sys.path.insert(0, str(BINDING))


def built_binary(name: str, folder: str) -> pathlib.Path:
    """A binary of the build: BUILD/FOLDER/NAME (the build tree) or
    BUILD/bin/NAME (an installed layout)."""
    for p in (BUILD / folder / name, BUILD / "bin" / name):
        if p.exists():
            return p
    pytest.fail(f"{name} not found under {BUILD}: build the project first (./scripts/build)")


def dtxctl_path() -> pathlib.Path:
    return built_binary("dtxctl", "tools")


def bench_path() -> pathlib.Path:
    return built_binary("dtx-bench", "bench")


class Cluster:
    def __init__(self, directory: pathlib.Path, dtxctl: pathlib.Path) -> None:
        self.dir = directory
        self.dtxctl = dtxctl
        import dtx
        from dtx.cluster_dir import load_cluster_conf
        # Node name -> client address, as the binding reads cluster.conf.
        self.nodes = {n.name: n.address for n in load_cluster_conf(directory)}
        self.coordinator = self.nodes["coordinator-0"]
        # The client certificate `dtxctl cluster up` made (None: --insecure).
        self.tls = dtx.TLS.from_cluster_dir(directory)

    def pid(self, node: str) -> int:
        return int((self.dir / node / "pid").read_text().split()[0])

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.dtxctl), *args, "--dir", str(self.dir)],
                              capture_output=True, text=True, timeout=timeout)

    def all_pids(self):
        pids = []
        for f in list(self.dir.glob("*/pid")) + [self.dir / "supervisor.pid"]:
            try:
                pids.append(int(f.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        return pids


class BenchRun:
    """A dtx-bench process started by ``running_bench``."""
    _numbers = itertools.count()

    def __init__(self, cluster: "Cluster", args, timeout: float) -> None:
        self.report = cluster.dir / f"bench-{next(BenchRun._numbers)}.json"
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [str(bench_path()), "--cluster", str(cluster.dir), "--no-progress", "--json",
             str(self.report), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> dict:
        """Waits for the bench to end; its JSON report (the bench must have
        succeeded)."""
        out, err = self.proc.communicate(timeout=self.timeout)
        assert self.proc.returncode == 0, f"dtx-bench failed:\n{out}\n{err}"
        return json.loads(self.report.read_text())


@contextlib.contextmanager
def running_bench(cluster: "Cluster", *args: str, timeout: float = 120):
    """Runs `dtx-bench --cluster DIR --no-progress --json REPORT ARGS...` in
    the background while the block runs (faults, failpoints, a full disk);
    ``.result()`` waits for it. Killed if the block leaves early."""
    run = BenchRun(cluster, args, timeout)
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def run_cluster(tmp_path_factory, name, *extra_args):
    """Starts `dtxctl cluster up --participants 3 [extra_args]` in a fresh temporary
    directory, yields a Cluster, then stops it and kills every node it started
    (SIGCONT first, in case a test left one stopped)."""
    dtxctl = dtxctl_path()
    d = tmp_path_factory.mktemp(name)
    up = subprocess.run([str(dtxctl), "cluster", "up", "--dir", str(d), "--participants", "3",
                         *extra_args], capture_output=True, text=True, timeout=90)
    c = None
    try:
        assert up.returncode == 0, f"cluster up failed:\n{up.stdout}\n{up.stderr}"
        c = Cluster(d, dtxctl)
        yield c
    finally:
        subprocess.run([str(dtxctl), "cluster", "down", "--dir", str(d)],
                       capture_output=True, timeout=60)
        for pid in (c.all_pids() if c else []):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    yield from run_cluster(tmp_path_factory, "cluster")


@pytest.fixture
def client(cluster):
    import dtx
    c = dtx.Client(cluster.coordinator, timeout=5.0, tls=cluster.tls)
    yield c
    c.close()


def make_expired_cert(ca_dir: pathlib.Path, out_dir: pathlib.Path, name: str, kind: str) -> None:
    """Writes out_dir/NAME.crt and NAME.key: a certificate for NAME (OU kind)
    signed by ca_dir/ca.{crt,key} that expired yesterday (`dtxctl certs`
    makes only valid ones). Needs Debian's python3-cryptography."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                                     x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=10))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (out_dir / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out_dir / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
