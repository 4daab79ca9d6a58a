"""The PEP 517 build backend of the dtx package (pyproject.toml names it).

``/usr/bin/python3 -m venv --system-site-packages .venv && .venv/bin/pip install
./bindings/python`` must work offline on Debian 12. pip's build isolation runs
this backend in an environment that holds only what ``requires`` names,
downloaded from an index, and hides the interpreter's own site-packages; a
stock ``setuptools.build_meta`` with ``requires = ["setuptools", "wheel"]``
therefore fails without PyPI. So ``requires`` is empty, this module is the
backend (``backend-path``), and it:

1. stages the package in a temporary directory (the source tree gets no
   ``build/`` or ``*.egg-info``) with the Thrift-generated modules as
   ``dtx._gen.dtx_thrift``: ``thrift`` run on ``idl/dtx.thrift`` when both are
   there, else the copy the CMake build made in ``dtx/_gen`` (idl/CMakeLists.txt),
   else a clear error;
2. hands the build to setuptools (``setuptools.build_meta``), imported from the
   interpreter's site-packages where Debian's python3-setuptools and
   python3-wheel put it when isolation hides it.

Only wheels are built (``build_wheel``): no sdist, no editable install.
"""

import contextlib
import os
import shutil
import site
import subprocess
import sys
import tempfile

# bindings/python -> the repository's IDL (absent when this folder was copied alone).
_IDL = os.path.join("..", "..", "idl", "dtx.thrift")
_GEN = os.path.join("dtx", "_gen")
# As idl/CMakeLists.txt runs it: the package an included IDL file would be imported from.
_THRIFT_GENERATOR = "py:package_prefix=dtx._gen."
_GEN_MARKER = os.path.join(_GEN, "dtx_thrift", "ttypes.py")
_STAGED_FILES = ("pyproject.toml", "README.md")


def _fail(message):
    """Stops the build with ``message`` (pip shows it as the hook's output)."""
    sys.exit(f"dtx build: {message}")


def _setuptools_build_meta():
    try:
        from setuptools import build_meta
        import wheel  # noqa: F401  (setuptools' bdist_wheel comes from it)
    except ImportError:
        # pip's build isolation hides the site-packages of the interpreter;
        # with the venv made --system-site-packages, those are Debian's.
        for directory in site.getsitepackages([sys.base_prefix]):
            if os.path.isdir(directory) and directory not in sys.path:
                sys.path.append(directory)
        try:
            from setuptools import build_meta
            import wheel  # noqa: F401,F811
        except ImportError as e:
            _fail(f"needs setuptools and wheel in {sys.base_prefix}'s site-packages "
                  f"(Debian: apt-get install python3-setuptools python3-wheel): {e}")
    return build_meta


def _generate(stage):
    """Writes the Thrift-generated modules into ``stage``/dtx/_gen."""
    thrift = shutil.which("thrift")
    if thrift and os.path.exists(_IDL):
        out = os.path.join(stage, _GEN)
        os.makedirs(out)
        result = subprocess.run([thrift, "--gen", _THRIFT_GENERATOR, "-out", out, _IDL],
                                capture_output=True, text=True)
        if result.returncode != 0:
            _fail(f"{thrift} --gen {_THRIFT_GENERATOR} {_IDL} failed:\n{result.stderr}")
    elif os.path.exists(_GEN_MARKER):
        shutil.copytree(_GEN, os.path.join(stage, _GEN),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        why = ("no thrift compiler on PATH (Debian: thrift-compiler)" if not thrift
               else f"{_IDL} is not there")
        _fail(f"no Thrift code for dtx._gen: {_GEN} was not made by the CMake build "
              f"(scripts/build) and cannot be generated here: {why}")


@contextlib.contextmanager
def _staged_tree():
    """A copy of the package with its generated code, as the working directory."""
    source = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="dtx-build-") as stage:
        for name in _STAGED_FILES:
            shutil.copy2(name, stage)
        shutil.copytree("dtx", os.path.join(stage, "dtx"),
                        ignore=shutil.ignore_patterns("_gen", "__pycache__", "*.pyc"))
        _generate(stage)
        os.chdir(stage)
        try:
            yield
        finally:
            os.chdir(source)


def get_requires_for_build_wheel(config_settings=None):
    return []  # nothing to fetch: see the module comment


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    build_meta = _setuptools_build_meta()
    wheel_directory = os.path.abspath(wheel_directory)
    with _staged_tree():
        return build_meta.build_wheel(wheel_directory, config_settings)
