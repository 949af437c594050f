"""Corrupt datasets on read: the loader and ``evaluate`` meet a truncated Parquet file, a schema
mismatch or a missing ``stats.json``.

Each gives a named error naming the file; nothing hangs (every read is bounded by a timeout
and runs with no worker, reader threads and worker processes: a failing worker surfaces its error
in the consumer) and nothing is skipped silently (a damaged file is never left out of a split).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.dataset.loader import make_loader
from bigearthnet.dataset.transforms import BatchTransform
from bigearthnet.errors import (
    BigEarthNetError,
    CorruptDatasetError,
    DatasetSchemaError,
    InputNotFoundError,
)
from bigearthnet.spark.build import run_build

TIMEOUT_S = 90
WORKERS = [(0, "thread"), (2, "thread"), (2, "process")]


def bounded(fn, timeout_s: float = TIMEOUT_S) -> BaseException | None:
    """Run ``fn`` in a thread; fail the test if it has not returned within ``timeout_s``."""
    box: dict = {}

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["exc"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"hung: no result within {timeout_s} s"
    return box.get("exc")


def assert_named(exc: BaseException | None, kinds: tuple[type, ...], path: Path) -> BaseException:
    assert exc is not None, f"no error: the damaged {path} was read silently"
    assert isinstance(exc, BigEarthNetError), f"raw {type(exc).__name__}: {exc!r}"
    assert isinstance(exc, kinds), f"{type(exc).__name__}: {exc}"
    assert str(path) in str(exc), f"the message does not name {path}: {exc}"
    assert "Traceback" not in str(exc), f"a traceback in the message: {exc}"
    return exc


@pytest.fixture(scope="module")
def built(world_jp2, tmp_path_factory) -> Path:
    """A real labeled build of the small synthetic world."""
    out = tmp_path_factory.mktemp("corrupt-ds") / "ds"
    run_build(BuildConfig(products=str(world_jp2 / "products"),
                          clc=str(world_jp2 / "clc" / "clc2018.gpkg"), out=str(out),
                          spark=SparkConfig(master="local[2]")))  # the spark fixture's session
    return out


@pytest.fixture
def dataset(built, tmp_path) -> Path:
    """A writable copy of the build."""
    copy = tmp_path / "ds"
    shutil.copytree(built, copy)
    return copy


def split_files(root: Path, split: str = "train") -> list[Path]:
    files = sorted((root / "patches" / f"split={split}").glob("*.parquet"))
    assert files, f"no {split} file in {root}"
    return files


def _consume(loader) -> int:
    n = 0
    for batch in loader:
        n += len(batch["bands_10m"])
    return n


@pytest.mark.parametrize("keep", [0.0, 0.6])
def test_truncated_parquet_is_named_when_the_loader_opens_the_split(dataset, keep, fault_log):
    victim = split_files(dataset)[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: int(len(data) * keep)])  # the footer is gone (or the whole file)
    exc = bounded(lambda: make_loader(dataset, "train", 2, 0))
    assert_named(exc, (CorruptDatasetError,), victim)
    assert "rebuild the dataset" in str(exc)
    fault_log(f"truncated-{keep}", "loader", type(exc).__name__)


@pytest.mark.parametrize(("num_workers", "worker_type"), WORKERS)
def test_a_file_truncated_under_a_running_loader_fails_in_the_consumer(
        dataset, num_workers, worker_type, fault_log):
    files = split_files(dataset)
    loader = make_loader(dataset, "train", 2, num_workers, worker_type=worker_type,
                         persistent_workers=False)
    expected = sum(pq.read_metadata(f).num_rows for f in files)
    assert bounded(lambda: None) is None
    victim = files[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # after the footers were read: workers meet it
    box: dict = {}
    exc = bounded(lambda: box.setdefault("n", _consume(loader)))
    assert "n" not in box, f"read {box.get('n')} of {expected} rows and no error: silent skip"
    assert_named(exc, (CorruptDatasetError, DatasetSchemaError), victim)
    fault_log(f"truncated-under-{worker_type}-{num_workers}", "loader", type(exc).__name__)


def test_a_zero_byte_file_in_a_split_is_not_skipped(dataset, fault_log):
    victim = dataset / "patches" / "split=train" / "S2A_MSIL2A_20170101T000000_N0205_R001_T29UPU_20170101T000000.parquet"
    victim.write_bytes(b"")
    exc = bounded(lambda: make_loader(dataset, "train", 2, 0))
    assert_named(exc, (CorruptDatasetError,), victim)
    fault_log("zero-byte", "loader", type(exc).__name__)


def _rewrite(path: Path, fn) -> None:
    table = pq.read_table(path)
    table = fn(table)
    pq.write_table(table, path)


def test_schema_mismatch_missing_column(dataset, fault_log):
    victim = split_files(dataset)[0]
    _rewrite(victim, lambda t: t.drop_columns(["multi_hot_43"]))
    exc = bounded(lambda: make_loader(dataset, "train", 2, 0))
    assert_named(exc, (DatasetSchemaError,), victim)
    assert "multi_hot_43" in str(exc)
    fault_log("schema-missing-column", "loader", type(exc).__name__)


def test_schema_mismatch_other_tensor_shape(dataset, fault_log):
    victim = split_files(dataset)[0]

    def reshape(table):
        meta = dict(table.schema.metadata)
        doc = json.loads(meta[b"bigearthnet.schema"])
        for col in doc["columns"]:
            if col["name"] == "bands_10m":
                col["shape"] = [4, 60, 60]
        meta[b"bigearthnet.schema"] = json.dumps(doc).encode()
        return table.replace_schema_metadata(meta)

    _rewrite(victim, reshape)
    exc = bounded(lambda: make_loader(dataset, "train", 2, 0))
    assert_named(exc, (DatasetSchemaError,), victim)
    assert "bands_10m" in str(exc)
    fault_log("schema-other-shape", "loader", type(exc).__name__)


def test_missing_or_damaged_stats_json(dataset, fault_log):
    stats = dataset / "stats.json"
    text = stats.read_text()
    stats.write_text(text[: len(text) // 2])
    exc = bounded(lambda: BatchTransform(dataset))
    assert_named(exc, (BigEarthNetError,), stats)
    stats.unlink()
    exc = bounded(lambda: BatchTransform(dataset))
    assert_named(exc, (InputNotFoundError,), stats)
    fault_log("stats-json", "loader", type(exc).__name__)


# --- evaluate ----------------------------------------------------------------------------------


def make_config(dataset: Path, out: Path):
    """One epoch of a tiny S-CNN-RGB (seconds), as tests/train/conftest.py's tiny_config."""
    from bigearthnet.train.config import TrainConfig

    return TrainConfig(dataset=str(dataset), out=str(out), model="s-cnn-rgb", epochs=1,
                       label_set="19", batch_size=4, lr=0.03, momentum=0.9, fc_width=16, seed=7,
                       num_workers=0, buffer_size=32, device="cpu", progress=False)


@pytest.fixture(scope="module")
def run_on_copy(tmp_path_factory):
    """A one-epoch run trained on the learnable fake dataset (its copies are damaged per test)."""
    from bigearthnet.dataset.fakes import write_fake_dataset
    from bigearthnet.train.launch import train

    root = tmp_path_factory.mktemp("eval-fault")
    clean = write_fake_dataset(root / "clean", recipe="learnable", compression="none").root
    train(make_config(clean, root / "run"))
    return root / "run", clean


@pytest.fixture
def damaged_eval(run_on_copy, tmp_path):
    run, clean = run_on_copy
    copy = tmp_path / "dataset"
    shutil.copytree(clean, copy)
    return run, copy


@pytest.mark.parametrize("fault", ["truncated", "schema", "stats", "zero_byte"])
def test_evaluate_names_the_damaged_file(damaged_eval, fault, fault_log):
    from bigearthnet.train.evaluate import evaluate

    run, data = damaged_eval
    victim = split_files(data, "test")[0]
    if fault == "truncated":
        victim.write_bytes(victim.read_bytes()[:-100])
        kinds: tuple[type, ...] = (CorruptDatasetError,)
    elif fault == "zero_byte":
        victim.write_bytes(b"")
        kinds = (CorruptDatasetError,)
    elif fault == "schema":
        _rewrite(victim, lambda t: t.drop_columns([c for c in t.column_names if c.startswith("multi_hot")]))
        kinds = (DatasetSchemaError,)
    else:
        victim = data / "stats.json"
        victim.unlink()
        kinds = (InputNotFoundError,)
    for workers in (0, 2):
        exc = bounded(lambda w=workers: evaluate(run, "test", dataset=data, num_workers=w))
        assert_named(exc, kinds, victim)
    assert not (run / "eval").exists() and not list(run.glob(".eval.tmp-*"))
    fault_log(f"evaluate-{fault}", "evaluate", type(exc).__name__)


def test_cli_evaluate_exit_status(run_on_copy, tmp_path, fault_log):
    """Through the real CLI: a run whose own dataset was damaged after training."""
    from bigearthnet.train.launch import train

    _, clean = run_on_copy
    data = tmp_path / "dataset"
    shutil.copytree(clean, data)
    run = tmp_path / "run"
    train(make_config(data, run))
    victim = split_files(data, "test")[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, "-m", "bigearthnet.cli", "evaluate", "--run", str(run)],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "error: CorruptDatasetError:" in proc.stderr and str(victim) in proc.stderr
    assert not (run / "eval").exists()
    fault_log("cli-evaluate", "evaluate", "CorruptDatasetError")
