"""The cached Airflow side environment, for the DAG tests (tests/airflow/).

Airflow 3 with the Spark provider brings ~140 packages of its own (SQLAlchemy, FastAPI, grpc,
pyspark-client...) that have no place in the project's venv, so it lives in its own venv, built
from ``scripts/airflow-constraints.txt`` (every package pinned) on first use and cached under
``BIGEARTHNET_AIRFLOW_CACHE`` (default ``~/.cache/bigearthnet``), keyed by the pins and the
Python version. An flock serialises builders, so parallel test processes build it once.

    python scripts/airflow_env.py     # build it (if needed) and print its airflow command
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

CONSTRAINTS = Path(__file__).with_name("airflow-constraints.txt")
BASE_PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
"""The venv is made from the base interpreter (a venv made from a venv's python would still
work, but pins the project venv's path into it)."""
NETWORK_ERRORS = (
    "NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
    "Name or service not known", "Network is unreachable", "ConnectTimeoutError",
    "ProxyError", "Connection refused",
)


class AirflowUnavailable(RuntimeError):
    """The venv cannot be built here (PyPI unreachable)."""


def venv_dir() -> Path:
    """Where the venv lives (the key covers the pins and the Python version)."""
    key = hashlib.sha256(CONSTRAINTS.read_bytes() + sys.version.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("BIGEARTHNET_AIRFLOW_CACHE",
                                Path.home() / ".cache" / "bigearthnet"))
    return cache / f"airflow-venv-{key}"


def airflow_bin() -> Path:
    """The ``airflow`` command of the cached venv, built on first use.

    Raises:
        AirflowUnavailable: it is not built and PyPI cannot be reached.
        RuntimeError: pip failed for another reason (its output is in the message).
    """
    venv = venv_dir()
    airflow = venv / "bin" / "airflow"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time, the others wait and reuse it
        if (venv / ".complete").is_file():
            return airflow
        shutil.rmtree(venv, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True)
        proc = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input", "--retries", "2", "--timeout", "60", "-r", str(CONSTRAINTS)],
            capture_output=True, text=True, timeout=1800, check=False)
        if proc.returncode != 0:
            output = proc.stdout[-3000:] + proc.stderr[-3000:]
            shutil.rmtree(venv, ignore_errors=True)
            if any(marker in output for marker in NETWORK_ERRORS):
                raise AirflowUnavailable(f"PyPI is unreachable: {output[-500:]}")
            raise RuntimeError(f"pip install -r {CONSTRAINTS} failed:\n{output}")
        (venv / ".complete").write_text(json.dumps({"build_s": time.perf_counter() - t0}))
    return airflow


if __name__ == "__main__":
    print(airflow_bin())
