"""The spark-submit entry points in jobs/ are thin wrappers over the CLI, one per stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.mark.parametrize(("job", "command"), [
    ("build_dataset.py", "build"), ("import_v1.py", "import-v1"), ("train.py", "train"),
    ("evaluate.py", "evaluate"), ("report.py", "report"), ("import_v2.py", "import-v2"),
    ("export.py", "export"),
])
def test_job_is_the_cli_command(job, command):
    proc = subprocess.run([sys.executable, str(JOBS / job), "--help"], capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"usage: bigearthnet {command}" in proc.stdout


def test_every_job_file_is_tested():
    assert {p.name for p in JOBS.glob("*.py")} == {
        "build_dataset.py", "import_v1.py", "train.py", "evaluate.py", "report.py",
        "import_v2.py", "export.py"}


def test_train_job_runs_through_torch_distributor(monkeypatch):
    import runpy

    import bigearthnet.cli

    seen = {}
    monkeypatch.setattr(bigearthnet.cli, "main", lambda argv: seen.setdefault("argv", argv) and 0)
    monkeypatch.setattr(sys, "argv", ["train.py", "--dataset", "d", "--out", "o"])
    with pytest.raises(SystemExit):
        runpy.run_path(str(JOBS / "train.py"), run_name="__main__")
    assert seen["argv"][:2] == ["train", "--spark"]
