"""Builds to and from a real S3-compatible server (versitygw on 127.0.0.1): the same dataset as
a local build, read back by the loader, refused without ``_SUCCESS``, and a build whose driver
is SIGKILLed leaves nothing readers accept while the rerun completes and removes its debris."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.objectstore import RUNS, committed_run, local_dataset
from bigearthnet.errors import IncompleteDatasetError
from bigearthnet.spark.build import run_build
from bigearthnet.storage import ObjectStore, S3Uri
from s3.conftest import upload_tree
from worlds import synth_world

pytestmark = pytest.mark.spark

LOCAL2 = SparkConfig(master="local[2]")


@pytest.fixture(scope="module")
def built(world_jp2, s3_server, tmp_path_factory):
    """The world_jp2 inputs built locally and from S3 to S3 (the same config otherwise).

    The Spark session starts before the AWS variables are set, so its Python workers never see
    them: the tasks reach the store only through the settings their closure carries, as
    executors on other machines do.
    """
    from bigearthnet.spark.session import get_session

    get_session(LOCAL2)
    saved = dict(os.environ)
    os.environ.update(s3_server.env())
    try:
        local = tmp_path_factory.mktemp("local") / "ds"
        run_build(BuildConfig(products=str(world_jp2 / "products"),
                              clc=str(world_jp2 / "clc" / "clc2018.gpkg"), out=str(local),
                              spark=LOCAL2))
        products = upload_tree(s3_server, world_jp2 / "products", "build/products")
        clc = upload_tree(s3_server, world_jp2 / "clc", "build/clc") + "/clc2018.gpkg"
        out = f"s3://{s3_server.bucket}/build/ds"
        manifest = run_build(BuildConfig(products=products, clc=clc, out=out, spark=LOCAL2))
        return local, out, manifest
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _tables(root: Path) -> dict[str, object]:
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    return {f: pq.read_table(root / f) for f in files}


def test_s3_build_equals_the_local_build(built, s3_env):
    local, out, manifest = built
    store = ObjectStore()
    run, run_id = committed_run(out)
    top = store.list(S3Uri.parse(out))
    assert set(top) == {"_SUCCESS"} | {f"{RUNS}/{run_id}/{k}" for k in store.list(run)}
    assert not any("_parts" in k or ".inprogress" in k for k in top)
    copy = local_dataset(out)
    assert copy.name == run_id and (copy / "_SUCCESS").is_file()
    mine, theirs = _tables(copy), _tables(local)
    assert list(mine) == list(theirs) and any("split=train" in f for f in mine)
    for name, table in theirs.items():
        assert mine[name].equals(table), name  # ids, labels, splits, tensors: every column
    ref = json.loads(DatasetLayout(local).manifest.read_text())
    assert manifest["counts"] == ref["counts"] and manifest["counts"]["patches_kept"] > 0
    assert json.loads(DatasetLayout(copy).stats.read_text()) == json.loads(
        DatasetLayout(local).stats.read_text())


def test_loader_reads_the_s3_dataset(built, s3_env):
    from bigearthnet.dataset.loader import make_loader
    from bigearthnet.train.rundir import check_dataset, dataset_class_names

    local, out, _ = built
    check_dataset(out)  # what `bigearthnet train --dataset s3://…` checks first
    assert dataset_class_names(out, "19") == dataset_class_names(local, "19")
    cols = ("patch_id", "bands_10m", "bands_20m", "bands_60m", "multi_hot_43")
    for split in ("train", "validation"):
        a = list(make_loader(out, split, 4, 0, columns=cols, shuffle=True, seed=3))
        b = list(make_loader(local, split, 4, 0, columns=cols, shuffle=True, seed=3))
        assert len(a) == len(b) > 0
        for x, y in zip(a, b, strict=True):
            assert x["patch_id"] == y["patch_id"]
            for col in ("bands_10m", "bands_20m", "bands_60m", "multi_hot_43"):
                np.testing.assert_array_equal(x[col].numpy(), y[col].numpy())


def test_train_and_evaluate_on_the_s3_dataset(built, s3_env, tmp_path):
    from bigearthnet.train.config import TrainConfig
    from bigearthnet.train.evaluate import evaluate
    from bigearthnet.train.launch import train

    _, out, _ = built
    cfg = TrainConfig(dataset=out, out=str(tmp_path / "run"), model="s-cnn-rgb", epochs=1,
                      label_set="19", batch_size=4, fc_width=8, num_workers=0, device="cpu",
                      progress=False)
    result = train(cfg)
    assert result and (tmp_path / "run" / "config.json").is_file()
    metrics = evaluate(tmp_path / "run", split="validation")  # the tiny world has no test
    assert metrics and (tmp_path / "run" / "eval_validation" / "metrics.json").is_file()


def test_a_prefix_without_success_is_refused(built, s3_env):
    from bigearthnet.dataset.loader import make_loader, split_dir
    from bigearthnet.dataset.transforms import load_stats

    local, _, _ = built
    uri = upload_tree(s3_env, local, "uncommitted/_runs/r1")  # every file, but no commit
    prefix = uri.removesuffix("/_runs/r1")
    for read in (lambda: split_dir(prefix, "train"), lambda: load_stats(prefix),
                 lambda: make_loader(prefix, "train", 4, 0)):
        with pytest.raises(IncompleteDatasetError, match=f"{prefix} has no _SUCCESS"):
            read()


def test_overwrite_replaces_the_committed_run(built, world_jp2, s3_env):
    """Runs after the tests that read ``built``'s dataset (it replaces it)."""
    from bigearthnet.errors import OutputExistsError

    _, out, _ = built
    store = ObjectStore()
    old_root, old_run = committed_run(out)
    old_copy = local_dataset(out)
    # A tiling-only build (cheaper) replaces the labeled one.
    products = f"s3://{s3_env.bucket}/build/products"
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_build(BuildConfig(products=products, out=out, spark=LOCAL2))
    run_build(BuildConfig(products=products, out=out, overwrite=True, spark=LOCAL2))
    _, new_run = committed_run(out)
    assert new_run != old_run and not store.list(old_root)  # the old run is gone
    runs = {k.split("/", 1)[0] for k in store.list(S3Uri.parse(out).join(RUNS))}
    assert runs == {new_run}
    copy = local_dataset(out)
    assert copy != old_copy and not list(copy.glob("patches/split=*"))
    assert len(list(copy.glob("patches/*.parquet"))) == 2


def test_first_failure_on_s3_commits_nothing(world_jp2, s3_env):
    """on_error: fail with an S3 output: the failing task reports through the object store, the
    named error names the /vsis3/ file, nothing is committed and the run's objects are gone."""
    from bigearthnet.errors import CorruptRasterError

    products = upload_tree(s3_env, world_jp2 / "products", "fail/products")
    store = ObjectStore()
    victim = next(k for k in store.list(S3Uri.parse(products)) if k.endswith("_B04_10m.jp2"))
    store.write_bytes(S3Uri.parse(products).join(victim), b"this is not a JPEG 2000 file" * 10)
    out = S3Uri(s3_env.bucket, "fail/ds")
    with pytest.raises(CorruptRasterError, match=victim.rsplit("/", 1)[-1]):
        run_build(BuildConfig(products=products, out=str(out), spark=LOCAL2))
    # Only the run's abort marker stays. The other product's task may still be running in its
    # Python worker (a cancelled job does not stop it); it removes what it uploads late.
    deadline = time.monotonic() + 120
    while (left := store.list(out)) and time.monotonic() < deadline and len(left) > 1:
        time.sleep(1)
    assert len(left) == 1 and next(iter(left)).endswith(".aborted"), left
    with pytest.raises(IncompleteDatasetError):
        committed_run(str(out))
    skipped = run_build(BuildConfig(products=products, out=str(out), on_error="skip",
                                    spark=LOCAL2))
    assert skipped["counts"]["products"] == 1 and skipped["counts"]["products_failed"] == 1
    _, run_id = committed_run(str(out))
    assert all(k == "_SUCCESS" or k.startswith(f"{RUNS}/{run_id}/") for k in store.list(out))


KILL_PRODUCTS = [
    "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319",
    "S2A_MSIL2A_20170613T101031_N0205_R022_T33UUP_20170613T101608",
    "S2A_MSIL2A_20170818T103021_N0205_R108_T32TMT_20170818T103407",
    "S2A_MSIL2A_20170717T113321_N0205_R080_T29UPV_20170717T113319",
]


@pytest.mark.slow
def test_killed_s3_build_leaves_nothing_readers_accept_and_the_rerun_completes(
        s3_env, tmp_path):
    from bigearthnet.dataset.loader import split_dir

    world = synth_world(tmp_path / "world", KILL_PRODUCTS, 1200, "jp2", seed=5)
    products = upload_tree(s3_env, world / "products", "kill/products")
    clc = upload_tree(s3_env, world / "clc", "kill/clc") + "/clc2018.gpkg"
    out = S3Uri(s3_env.bucket, "kill/ds")
    store = ObjectStore()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigearthnet.cli", "build", "--products", products, "--clc", clc,
         "--out", str(out), "--master", "local[2]"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any("/patches/" in k for k in store.list(out.join(RUNS))):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no task file appeared"
            time.sleep(0.1)
    finally:
        # The driver node dies: the driver, its JVM and the executors' Python workers.
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
        proc.wait()
    dead = store.list(out.join(RUNS))
    assert dead and not store.exists(out.join("_SUCCESS"))
    for read in (lambda: committed_run(str(out)), lambda: local_dataset(str(out)),
                 lambda: split_dir(str(out), "train")):
        with pytest.raises(IncompleteDatasetError, match=f"{out} has no _SUCCESS"):
            read()
    dead_runs = {k.split("/", 1)[0] for k in dead}
    manifest = run_build(BuildConfig(products=products, clc=clc, out=str(out), spark=LOCAL2))
    _, run_id = committed_run(str(out))
    left = {k.split("/", 1)[0] for k in store.list(out.join(RUNS))}
    assert left == {run_id} and run_id not in dead_runs  # the dead run's files are gone
    assert manifest["counts"]["products"] == 4
    assert split_dir(str(out), "train").is_dir()
