"""``make lint`` as a test: the pinned ruff finds nothing in the code we ship and test with."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed in this environment (make setup installs it)")
    paths = [p for p in ("lib", "tests", "bench", "jobs", "dags") if (REPO / p).is_dir()]
    proc = subprocess.run([ruff, "check", "--output-format", "concise", *paths], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
