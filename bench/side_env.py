"""Cached side environments: venvs for tools whose pins cannot live in ours (Petastorm) or whose
dependencies we do not want in it (TorchGeo), built once and shared by tests and benchmarks.

A side venv lives under ``BIGEARTHNET_INTEROP_CACHE`` (default ``~/.cache/bigearthnet``), named
after its packages, pins and this Python (a new pin is a new venv). It is built under a file
lock, so parallel test processes build it once; ``.complete`` marks a finished build. An
``inherit`` venv sees our venv's site-packages through a ``.pth`` file, so the 3 GB of torch are
not downloaded again: pip counts what is there as installed and adds only the rest.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

NETWORK_ERRORS = (
    "NewConnectionError", "Max retries exceeded", "Temporary failure in name resolution",
    "Name or service not known", "Network is unreachable", "ConnectTimeoutError",
    "ProxyError", "Connection refused",
)
INHERIT_PTH = "_bigearthnet_main_venv.pth"


class SideEnvUnavailable(RuntimeError):
    """The venv is not built and cannot be built here (PyPI unreachable)."""


def cache_dir() -> Path:
    """Where side venvs live."""
    return Path(os.environ.get("BIGEARTHNET_INTEROP_CACHE", Path.home() / ".cache" / "bigearthnet"))


def _pip(python: Path, *args: str) -> None:
    proc = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                           "--no-input", "--retries", "2", "--timeout", "30", *args],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        output = proc.stdout[-3000:] + proc.stderr[-3000:]
        if any(marker in output for marker in NETWORK_ERRORS):
            raise SideEnvUnavailable(f"PyPI is unreachable: {output[-500:]}")
        raise RuntimeError(f"pip install {' '.join(args)} failed:\n{output}")


@dataclass(frozen=True)
class SideEnv:
    """One side venv.

    Args:
        name: folder name prefix, e.g. ``petastorm-0.13.1``.
        tool: the tool's requirement, installed last with ``--no-deps`` (its declared
            dependencies are not all needed, or not installable beside the pins).
        pins: exact requirements installed first (with their dependencies).
        inherit: see our venv's site-packages (pins then only add what it lacks).
    """

    name: str
    tool: str
    pins: tuple[str, ...]
    inherit: bool = False

    def _main_site(self) -> str:
        return site.getsitepackages()[0]

    def venv_dir(self) -> Path:
        """The venv's folder (the key covers the tool, the pins, this Python and, for an
        ``inherit`` venv, the path of our site-packages)."""
        parts = (self.tool, *self.pins, sys.version, *((self._main_site(),) if self.inherit else ()))
        key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
        return cache_dir() / f"{self.name}-{key}"

    def python(self) -> Path:
        """The venv's interpreter, built on first use.

        Raises:
            SideEnvUnavailable: it is not built and PyPI cannot be reached.
        """
        venv = self.venv_dir()
        python = venv / "bin" / "python"
        venv.parent.mkdir(parents=True, exist_ok=True)
        with open(venv.parent / f".{venv.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (tests and benchmarks share it)
            if (venv / ".complete").is_file():
                return python
            shutil.rmtree(venv, ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
            if self.inherit:
                own = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                     check=True, capture_output=True, text=True).stdout.strip()
                Path(own, INHERIT_PTH).write_text(self._main_site() + "\n")
            if self.pins:
                _pip(python, *self.pins)
            _pip(python, "--no-deps", self.tool)
            (venv / ".complete").write_text(json.dumps({"build_s": time.perf_counter() - t0}))
        return python
