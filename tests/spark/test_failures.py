"""Failures that behave: the first bad product stops the job, killed builds leave nothing that
looks complete and their debris is cleaned by the next build, concurrent builds of one output
are refused, and ``--overwrite`` never leaves readers without a dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.dataset import io as dio
from bigearthnet.errors import CorruptRasterError, OutputLockedError
from bigearthnet.spark.build import run_build
from worlds import synth_world

pytestmark = pytest.mark.spark

PRODUCTS = [
    "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319",
    "S2A_MSIL2A_20170613T101031_N0205_R022_T33UUP_20170613T101608",
    "S2A_MSIL2A_20170818T103021_N0205_R108_T32TMT_20170818T103407",
    "S2A_MSIL2A_20170717T113321_N0205_R080_T29UPV_20170717T113319",
]


@pytest.fixture(scope="module")
def big_world(tmp_path_factory) -> Path:
    """Four products of 2400 px: a build takes long enough to be interrupted."""
    return synth_world(tmp_path_factory.mktemp("big"), PRODUCTS, 2400, "jp2", seed=5)


def _cli_build(world: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.Popen(
        [sys.executable, "-m", "bigearthnet.cli", "build", "--products", str(world / "products"),
         "--clc", str(world / "clc" / "clc2018.gpkg"), "--out", str(out), "--master", "local[2]"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(predicate, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"build ended early: {proc.stdout.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the build")
        time.sleep(0.1)


def _task_files(out: Path) -> list[Path]:
    return [p for d in dio.debris(out) for p in d.rglob("*.parquet*")]


def test_first_failure_cancels_the_remaining_products(spark, big_world, tmp_path):
    products = tmp_path / "products"
    subprocess.run(["cp", "-r", str(big_world / "products"), str(products)], check=True)
    first = min(products.iterdir())  # task 0
    (victim,) = first.rglob("*_B04_10m.jp2")
    victim.write_bytes(b"this is not a JPEG 2000 file" * 10)
    cfg = BuildConfig(products=str(products), clc=str(big_world / "clc" / "clc2018.gpkg"),
                      out=str(tmp_path / "ds"), spark=SparkConfig(master="local[2]"))
    with pytest.raises(CorruptRasterError) as info:
        run_build(cfg)
    message = str(info.value)
    assert str(victim) in message
    # Spark's own accounting: at most the failed task finished; the 3 others were cancelled.
    assert "3 of 4 products were cancelled" in message
    assert not (tmp_path / "ds").exists() and not dio.debris(tmp_path / "ds")
    # The same products with on_error: skip build the 3 good ones (the cancellation above was
    # the failure's doing, not the products').
    skipped = run_build(cfg.model_copy(update={"on_error": "skip", "out": str(tmp_path / "ds2")}))
    assert skipped["counts"]["products"] == 3 and skipped["counts"]["products_failed"] == 1


def test_killed_build_leaves_no_dataset_and_the_next_build_cleans_up(spark, big_world, tmp_path):
    out = tmp_path / "ds"
    proc = _cli_build(big_world, out)
    try:
        _wait_for(lambda: bool(_task_files(out)), 240, proc)  # tasks are writing
    finally:
        # The driver node dies: the driver, its JVM, the executor's Python workers.
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        proc.wait()
    assert not out.exists()
    left = dio.debris(out)
    assert left, "the killed build should have left its staging folder"
    manifest = run_build(BuildConfig(products=str(big_world / "products"),
                                     clc=str(big_world / "clc" / "clc2018.gpkg"), out=str(out)))
    assert not dio.debris(out) and not any(p.exists() for p in left)
    assert (out / "_SUCCESS").is_file() and manifest["counts"]["products"] == 4


def test_a_second_build_of_the_same_output_fails_at_once(spark, big_world, tmp_path):
    out = tmp_path / "ds"
    proc = _cli_build(big_world, out)
    try:
        _wait_for(lambda: bool(dio.debris(out)), 240, proc)  # the first build holds the lock
        t0 = time.monotonic()
        with pytest.raises(OutputLockedError, match="another job is writing"):
            run_build(BuildConfig(products=str(big_world / "products"),
                                  clc=str(big_world / "clc" / "clc2018.gpkg"), out=str(out)))
        refused_s = time.monotonic() - t0
        assert proc.wait(timeout=600) == 0, proc.stdout.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert refused_s < 30  # refused before any Spark work; the build takes minutes here
    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "_SUCCESS").is_file() and manifest["counts"]["products"] == 4
    assert not dio.debris(out)


READER = """
import os, sys
target, stop = sys.argv[1], sys.argv[2]
reads = misses = 0
while not os.path.exists(stop):
    reads += 1
    if not os.path.exists(target):
        misses += 1
print(reads, misses)
"""


def test_overwrite_never_leaves_readers_without_a_dataset(tmp_path):
    """A reader in another process polls the dataset's marker while it is replaced 300 times."""
    out = tmp_path / "ds"
    with dio.staged_output(out, overwrite=True) as stage:
        (stage / "v").write_text("0")
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(out / "_SUCCESS"), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        for i in range(1, 300):
            with dio.staged_output(out, overwrite=True) as stage:
                (stage / "v").write_text(str(i))
    finally:
        stop.write_text("")
        reads, misses = map(int, reader.communicate(timeout=60)[0].split())
    assert reads > 1000
    assert misses == 0
    assert (out / "v").read_text() == "299" and not dio.debris(out)
