"""The binding as a package: installed with pip into a fresh venv (offline,
as README.md shows it) it commits a transaction with no PYTHONPATH; and an
application under load says nothing on stderr while a participant restarts
(the binding logs on the logger "dtx" at DEBUG, and Thrift's loggers stay
silent)."""

import os
import pathlib
import shutil
import subprocess
import sys
import time

from conftest import BINDING, REPO

# /usr/bin/python3: the command of the README, for Debian's python3-thrift.
SYSTEM_PYTHON = "/usr/bin/python3"
COMMITS_BEFORE_KILL = 20
COMMITS_AFTER_RESTART = 20
WAIT_S_MAX = 60


def _env_without_pythonpath(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


def test_pip_install_into_a_fresh_venv_commits_without_pythonpath(cluster, tmp_path):
    venv = tmp_path / ".venv"
    # PIP_NO_INDEX: any download pip attempted (a build backend's requirements,
    # a dependency missing from Debian's packages) fails here even on a machine
    # that reaches PyPI.
    env = _env_without_pythonpath(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
                                  PIP_CONFIG_FILE=os.devnull)
    try:
        made = subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(venv)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stdout + made.stderr
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "./bindings/python"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert pip.returncode == 0, pip.stdout + pip.stderr
        assert not (BINDING / "build").exists() and not (BINDING / "dtx.egg-info").exists(), \
            "the build wrote into the source tree"

        # From a directory outside the repository, so that only the venv has dtx.
        script = (
            "import sys, dtx\n"
            "print(dtx.__file__)\n"
            "with dtx.Client.from_cluster_dir(sys.argv[1]) as c:\n"
            "    c.run(lambda tx: tx.put(b'pip-installed', b'yes'))\n"
            "    print(c.run(lambda tx: tx.get(b'pip-installed')).decode())\n")
        run = subprocess.run([str(venv / "bin" / "python"), "-c", script, str(cluster.dir)],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        module_path, value = run.stdout.split()
        assert pathlib.Path(module_path).is_relative_to(venv), module_path
        assert value == "yes"
        assert run.stderr == ""
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def _committed(progress: pathlib.Path) -> int:
    try:
        return int(progress.read_text() or 0)
    except (OSError, ValueError):
        return 0


def _wait_for_commits(load: subprocess.Popen, progress: pathlib.Path, count: int) -> None:
    deadline = time.monotonic() + WAIT_S_MAX
    while _committed(progress) < count:
        assert load.poll() is None, f"the load client exited: {load.communicate()}"
        assert time.monotonic() < deadline, \
            f"{_committed(progress)} of {count} transactions committed in {WAIT_S_MAX} s"
        time.sleep(0.05)


def test_nothing_on_stderr_while_a_participant_restarts_under_load(cluster, tmp_path):
    progress, dtx_log = tmp_path / "progress", tmp_path / "dtx.log"
    load = subprocess.Popen(
        [sys.executable, str(pathlib.Path(__file__).with_name("load_client.py")),
         str(cluster.dir), str(progress), str(dtx_log)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env_without_pythonpath(PYTHONPATH=str(BINDING)))
    try:
        _wait_for_commits(load, progress, COMMITS_BEFORE_KILL)
        old_pid = cluster.pid("participant-1")
        restarted = cluster.ctl("restart", "participant-1")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert cluster.pid("participant-1") != old_pid
        _wait_for_commits(load, progress, _committed(progress) + COMMITS_AFTER_RESTART)
        stdout, stderr = load.communicate(input="", timeout=WAIT_S_MAX)
    finally:
        if load.poll() is None:
            load.kill()
            load.communicate()
    assert load.returncode == 0, stdout + stderr
    assert stderr == ""
    print(stdout.strip())
    # The restart did reach the client: its lost or refused connections to
    # participant-1 are the debug lines on "dtx" (and not on stderr).
    assert cluster.nodes["participant-1"] in dtx_log.read_text()
