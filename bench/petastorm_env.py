"""The cached Petastorm side environment, for bench/loader.py.

Petastorm 0.13.1 needs pyarrow <= 14 and numpy < 2, which cannot live in our environment, so it
runs from its own venv (:mod:`side_env`), the one home of its pins: the interop test
(``tests/dataset/test_petastorm_interop.py``) and the loader benchmark both use it, so it is built
once and shared (``BIGEARTHNET_INTEROP_CACHE``, default ``~/.cache/bigearthnet``).
"""

from __future__ import annotations

from pathlib import Path

from side_env import SideEnv, SideEnvUnavailable

PETASTORM = "petastorm==0.13.1"
PINS = (
    "pyarrow==14.0.2", "numpy==1.26.4", "pandas==2.1.4",
    # petastorm's own requirements, minus pyspark
    "dill==0.4.1", "diskcache==5.6.3", "future==1.0.0", "packaging==26.4", "psutil==7.2.2",
    "pyzmq==27.3.0", "six==1.17.0", "fsspec==2026.9.0", "setuptools<70",
)
ENV = SideEnv("petastorm-0.13.1", PETASTORM, PINS)
PetastormUnavailable = SideEnvUnavailable
"""The venv cannot be built here (PyPI unreachable)."""


def venv_dir() -> Path:
    """Where the venv lives (the key covers the pins and this Python)."""
    return ENV.venv_dir()


def petastorm_python() -> Path:
    """The interpreter of the cached Petastorm venv, built on first use.

    Raises:
        PetastormUnavailable: it is not built and PyPI cannot be reached.
    """
    return ENV.python()
