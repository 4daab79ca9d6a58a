"""The binding as a package: installed with pip into a fresh venv (offline,
as README.md shows it) it commits a transaction with no PYTHONPATH."""

import os
import pathlib
import shutil
import subprocess

from conftest import BINDING, REPO

# /usr/bin/python3: the command of the README, for Debian's python3-thrift.
SYSTEM_PYTHON = "/usr/bin/python3"


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
