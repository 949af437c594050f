"""The same build on a real 2-worker standalone Spark cluster on localhost, via spark-submit."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.spark.build import run_build
from bigearthnet.spark.cluster import spark_home, standalone_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.spark]
REPO = Path(__file__).resolve().parents[2]


def digests(ds: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ds / "patches").rglob("*.parquet"))}


def test_spark_submit_on_standalone_cluster(world_jp2, tmp_path):
    logs = tmp_path / "cluster"
    out = tmp_path / "ds_cluster"
    with standalone_cluster(workers=2, cores_per_worker=1, memory_per_worker="2g", log_dir=logs) as url:
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        proc = subprocess.run(
            [str(spark_home() / "bin" / "spark-submit"), "--master", url,
             "--conf", "spark.executor.memory=1g",
             str(REPO / "jobs" / "build_dataset.py"),
             "--products", str(world_jp2 / "products"), "--out", str(out)],
            capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert "dataset written to" in proc.stdout
    # Both workers ran executors for the application, and the tasks ran there, not in a
    # local-mode driver.
    for i in (0, 1):
        apps = list((logs / f"work-{i}").glob("app-*/*/stderr"))
        assert apps, f"worker {i} ran no executor"
    assert "Starting executor ID driver" not in proc.stderr
    # Daemons are gone after the context manager.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(logs) not in ps and "deploy.worker.Worker" not in ps
    # Same bytes as the embedded local build.
    local = tmp_path / "ds_local"
    run_build(BuildConfig(products=str(world_jp2 / "products"), out=str(local),
                          spark=SparkConfig(master="local[2]")))
    assert digests(out) == digests(local) and digests(out)
