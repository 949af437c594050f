"""The cached Petastorm side environment, for bench/loader.py.

Petastorm 0.13.1 needs pyarrow <= 14 and numpy < 2, which cannot live in our environment, so it
runs from its own venv, the one home of its pins and builder: the interop test
(``tests/dataset/test_petastorm_interop.py``) and the loader benchmark both use it, so it is built
once and shared (``BIGEARTHNET_INTEROP_CACHE``, default
``~/.cache/bigearthnet``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PETASTORM = "petastorm==0.13.1"
PINS = (
    "pyarrow==14.0.2", "numpy==1.26.4", "pandas==2.1.4",
    # petastorm's own requirements, minus pyspark
    "dill==0.4.1", "diskcache==5.6.3", "future==1.0.0", "packaging==26.4", "psutil==7.2.2",
    "pyzmq==27.3.0", "six==1.17.0", "fsspec==2026.9.0", "setuptools<70",
)
NETWORK_ERRORS = (
    "NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
    "Name or service not known", "Network is unreachable", "ConnectTimeoutError",
    "ProxyError", "Connection refused",
)


class PetastormUnavailable(RuntimeError):
    """The venv cannot be built here (PyPI unreachable)."""


def venv_dir() -> Path:
    """Where the venv lives (the key covers the pins and this Python)."""
    key = hashlib.sha256("\n".join((PETASTORM, *PINS, sys.version)).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("BIGEARTHNET_INTEROP_CACHE", Path.home() / ".cache" / "bigearthnet"))
    return cache / f"petastorm-0.13.1-{key}"


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                           "--no-input", "--retries", "2", "--timeout", "30", *args],
                          capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        output = proc.stdout[-3000:] + proc.stderr[-3000:]
        if any(marker in output for marker in NETWORK_ERRORS):
            raise PetastormUnavailable(f"PyPI is unreachable: {output[-500:]}")
        raise RuntimeError(f"pip install {' '.join(args)} failed:\n{output}")


def petastorm_python() -> Path:
    """The interpreter of the cached Petastorm venv, built on first use.

    Raises:
        PetastormUnavailable: it is not built and PyPI cannot be reached.
    """
    venv = venv_dir()
    python = venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (the interop test uses it too)
        if (venv / ".complete").is_file():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        _pip(python, *PINS)
        _pip(python, "--no-deps", PETASTORM)
        (venv / ".complete").write_text(json.dumps({"build_s": time.perf_counter() - t0}))
    return python
