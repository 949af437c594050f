"""The same build on a real 2-worker standalone Spark cluster on localhost, via spark-submit."""

from __future__ import annotations

import hashlib
import json
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
    """Labelled builds under both label engines, submitted to 2 workers with the Sedona jars."""
    from bigearthnet.spark.sedona import sedona_jar_paths

    logs = tmp_path / "cluster"
    clc = str(world_jp2 / "clc" / "clc2018.gpkg")
    outs = {e: tmp_path / f"ds_{e}" for e in ("sedonadb", "sedona-spark")}
    jars = ",".join(str(p) for p in sedona_jar_paths())
    with standalone_cluster(workers=2, cores_per_worker=1, memory_per_worker="2g", log_dir=logs) as url:
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
        for engine, out in outs.items():
            proc = subprocess.run(
                [str(spark_home() / "bin" / "spark-submit"), "--master", url,
                 "--jars", jars,
                 "--conf", "spark.sql.extensions=org.apache.sedona.sql.SedonaSqlExtensions",
                 "--conf", "spark.serializer=org.apache.spark.serializer.KryoSerializer",
                 "--conf", "spark.kryo.registrator=org.apache.sedona.core.serde.SedonaKryoRegistrator",
                 "--conf", "spark.executor.memory=1g",
                 str(REPO / "jobs" / "build_dataset.py"),
                 "--products", str(world_jp2 / "products"), "--clc", clc, "--out", str(out),
                 "--label-engine", engine],
                capture_output=True, text=True, env=env, timeout=400, check=False)
            assert proc.returncode == 0, proc.stderr[-4000:]
            assert "dataset written to" in proc.stdout
            assert "Starting executor ID driver" not in proc.stderr
            manifest = json.loads((out / "manifest.json").read_text())
            assert manifest["label_engine"] == engine and manifest["counts"]["patches_kept"] > 0
    # Both workers ran executors for the applications, and the tasks ran there, not in a
    # local-mode driver.
    for i in (0, 1):
        apps = list((logs / f"work-{i}").glob("app-*/*/stderr"))
        assert len(apps) >= 2, f"worker {i} did not run executors for both builds"
    # Daemons are gone after the context manager.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
    assert str(logs) not in ps and "deploy.worker.Worker" not in ps
    # Same bytes as the embedded local build, under both engines.
    local = tmp_path / "ds_local"
    run_build(BuildConfig(products=str(world_jp2 / "products"), clc=clc, out=str(local),
                          spark=SparkConfig(master="local[2]")))
    for out in outs.values():
        assert digests(out) == digests(local) and digests(out)
