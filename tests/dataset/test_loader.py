"""Tests for the torch loader (sharding, shuffling, bytes) and the batch transforms."""

from __future__ import annotations

import gc
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from bigearthnet.dataset import loader as L
from bigearthnet.dataset.loader import PatchDataset, Segment, make_loader, plan_shards
from bigearthnet.dataset.schema import LABELED_PATCH_SCHEMA
from bigearthnet.dataset.transforms import BatchTransform, band_mean_std
from bigearthnet.errors import (
    BigEarthNetError,
    ConfigError,
    DatasetSchemaError,
    IncompleteDatasetError,
    InputNotFoundError,
    SplitNotFoundError,
    StatsError,
)
from bigearthnet.sentinel2.bands import BAND_NAMES, GROUPS

# a layout with many small, uneven row groups so shards get unequal row counts
MANY_UNITS = {"train": [[5, 1, 9, 2], [7], [3, 3, 8, 1, 6], [4, 11]], "validation": [[2, 3]]}


@pytest.fixture(scope="module")
def many(fake_dataset_factory):
    return fake_dataset_factory("many", layout=MANY_UNITS, seed=3)


def _fake_worker(monkeypatch: pytest.MonkeyPatch, worker: int, num_workers: int) -> None:
    info = None if num_workers == 0 else SimpleNamespace(id=worker, num_workers=num_workers)
    monkeypatch.setattr(L, "get_worker_info", lambda: info)


def _shard_ids(ds: PatchDataset, monkeypatch, num_workers: int) -> list[list[str]]:
    """patch_ids of every worker shard of ``ds`` (its rank), driving __iter__ as a worker would."""
    out = []
    for w in range(max(num_workers, 1)):
        _fake_worker(monkeypatch, w, num_workers)
        out.append([pid for batch in ds for pid in batch["patch_id"]])
    monkeypatch.setattr(L, "get_worker_info", lambda: None)
    return out


# --------------------------------------------------------------------------------------------
# sharding


@pytest.mark.parametrize(("world", "workers"), list(itertools.product([1, 2, 3], [0, 1, 2])))
@pytest.mark.parametrize("epoch", [0, 1])
def test_shards_partition_the_split(many, monkeypatch, world: int, workers: int, epoch: int) -> None:
    seen: list[str] = []
    for rank in range(world):
        ds = PatchDataset(many.root, "train", ("patch_id",), batch_size=4, buffer_size=6,
                          rank=rank, world_size=world, equalize="none", seed=7)
        ds.set_epoch(epoch)
        for ids in _shard_ids(ds, monkeypatch, workers):
            seen.extend(ids)
    assert len(seen) == len(set(seen)), "a patch was read by two shards"
    assert sorted(seen) == sorted(many.ids["train"])


@pytest.mark.parametrize(("world", "workers"), list(itertools.product([1, 2, 3], [1, 2])))
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_shards_partition_with_real_dataloader_workers(many, world: int, workers: int,
                                                       worker_type: str) -> None:
    seen: list[str] = []
    for rank in range(world):
        loader = make_loader(many.root, "train", batch_size=5, num_workers=workers,
                             columns=("patch_id", "multi_hot_43"), rank=rank, world_size=world,
                             equalize="none", buffer_size=8, worker_type=worker_type)
        loader.dataset.set_epoch(2)
        n_batches = 0
        for batch in loader:
            n_batches += 1
            assert batch["multi_hot_43"].dtype == torch.uint8
            assert batch["multi_hot_43"].shape == (len(batch["patch_id"]), 43)
            seen.extend(batch["patch_id"])
        assert n_batches == len(loader)
    assert len(seen) == len(set(seen))
    assert sorted(seen) == sorted(many.ids["train"])


def test_worker_count_changes_the_shards(many, monkeypatch) -> None:
    one = _shard_ids(PatchDataset(many.root, "train", ("patch_id",), shuffle=False), monkeypatch, 0)
    two = _shard_ids(PatchDataset(many.root, "train", ("patch_id",), shuffle=False), monkeypatch, 2)
    assert len(one) == 1 and len(two) == 2
    assert one[0] == many.ids["train"], "unshuffled single shard reads the files in order"
    assert two[0] and two[1] and not set(two[0]) & set(two[1])


@pytest.mark.parametrize(("world", "workers"), list(itertools.product([2, 3], [0, 1, 2])))
@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_drop_equalizes_batches_per_rank_without_duplicates(many, monkeypatch, world, workers,
                                                            batch_size) -> None:
    per_rank_batches, seen = [], []
    for rank in range(world):
        ds = PatchDataset(many.root, "train", ("patch_id",), batch_size=batch_size, rank=rank,
                          world_size=world, num_workers=workers, seed=1)  # default: drop
        assert ds.equalize == "drop"
        shards = _shard_ids(ds, monkeypatch, workers)
        per_rank_batches.append(sum(-(-len(s) // batch_size) for s in shards))
        assert per_rank_batches[-1] == len(ds)
        seen.extend(i for s in shards for i in s)
    assert len(set(per_rank_batches)) == 1, per_rank_batches
    assert len(seen) == len(set(seen))
    assert set(seen) <= set(many.ids["train"])


@pytest.mark.parametrize(("world", "workers"), list(itertools.product([2, 3], [0, 2])))
def test_pad_equalizes_and_covers_everything(many, monkeypatch, world, workers) -> None:
    rows_per_slot: dict[int, set[int]] = {}
    seen: list[str] = []
    for rank in range(world):
        ds = PatchDataset(many.root, "train", ("patch_id",), batch_size=3, rank=rank,
                          world_size=world, equalize="pad", seed=2)
        for w, ids in enumerate(_shard_ids(ds, monkeypatch, workers)):
            rows_per_slot.setdefault(w, set()).add(len(ids))
            seen.extend(ids)
    assert all(len(v) == 1 for v in rows_per_slot.values()), rows_per_slot
    assert set(seen) == set(many.ids["train"])
    assert len(seen) >= len(many.ids["train"])


@pytest.mark.parametrize("shuffle", [True, False])
def test_drop_last_and_batch_sizes(many, monkeypatch, shuffle: bool) -> None:
    full = PatchDataset(many.root, "train", ("patch_id", "bands_60m"), batch_size=8, shuffle=shuffle,
                        drop_last=True, buffer_size=12)
    sizes = [len(b["patch_id"]) for b in full]
    assert sizes and set(sizes) == {8} and len(sizes) == len(many.ids["train"]) // 8 == len(full)
    keep = PatchDataset(many.root, "train", ("patch_id", "bands_60m"), batch_size=8, shuffle=shuffle)
    batches = list(keep)
    assert [len(b["patch_id"]) for b in batches[:-1]] == [8] * (len(batches) - 1)
    assert sum(len(b["patch_id"]) for b in batches) == len(many.ids["train"])
    assert all(b["bands_60m"].shape[0] == len(b["patch_id"]) for b in batches)


def test_plan_more_shards_than_units() -> None:
    counts = [5, 2, 9]
    none = plan_shards(counts, [2, 0, 1], world_size=2, num_workers=2, equalize="none")
    segs = [s for rank in none for shard in rank for s in shard]
    assert sorted(s.unit for s in segs) == [0, 1, 2]
    assert none[1][1] == []  # fourth shard has nothing
    drop = plan_shards(counts, [2, 0, 1], world_size=2, num_workers=2, equalize="drop")
    assert drop[0][1] == [] and drop[1][1] == []  # slot 1 truncated to the empty shard
    assert drop[0][0] == [Segment(2, 0, 5)] and drop[1][0] == [Segment(0, 0, 5)]
    pad = plan_shards(counts, [2, 0, 1], world_size=2, num_workers=2, equalize="pad")
    assert [sum(s.num_rows for s in pad[r][1]) for r in range(2)] == [2, 2]
    with pytest.raises(ConfigError):
        plan_shards(counts, [0, 1, 2], 2, 0, "evenly")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# shuffling


def _epoch_ids(ds: PatchDataset, epoch: int) -> list[list[str]]:
    ds.set_epoch(epoch)
    return [b["patch_id"] for b in ds]


def test_shuffle_is_deterministic_per_seed_and_epoch(many) -> None:
    def fresh(seed: int) -> PatchDataset:
        return PatchDataset(many.root, "train", ("patch_id",), batch_size=4, buffer_size=10, seed=seed)

    a0, a1 = _epoch_ids(fresh(5), 0), _epoch_ids(fresh(5), 1)
    assert _epoch_ids(fresh(5), 0) == a0
    assert _epoch_ids(fresh(5), 1) == a1
    assert a0 != a1
    assert _epoch_ids(fresh(6), 0) != a0
    flat = [i for b in a0 for i in b]
    assert sorted(flat) == sorted(many.ids["train"])
    assert flat != many.ids["train"]


def test_unit_order_depends_on_seed_and_epoch(many) -> None:
    base = L.unit_order(50, 3, 0, True)
    assert sorted(base) == list(range(50))
    np.testing.assert_array_equal(L.unit_order(50, 3, 0, True), base)
    assert list(L.unit_order(50, 3, 1, True)) != list(base)
    assert list(L.unit_order(50, 4, 0, True)) != list(base)
    assert list(L.unit_order(50, 3, 1, False)) == list(range(50))
    ds = PatchDataset(many.root, "train", ("patch_id",), seed=3)
    assert ds.plan(0) != ds.plan(1)


def test_buffer_shuffle_depends_on_seed_and_epoch(fake_dataset_factory) -> None:
    """One row group: the unit order cannot vary, so any variation is the row buffer's."""
    one = fake_dataset_factory("one_unit", layout={"train": [[30]]})

    def order(seed: int, epoch: int) -> list[str]:
        ds = PatchDataset(one.root, "train", ("patch_id",), batch_size=5, buffer_size=30, seed=seed)
        return [i for b in _epoch_ids(ds, epoch) for i in b]

    a = order(0, 0)
    assert sorted(a) == sorted(one.ids["train"]) and a != one.ids["train"]
    assert order(0, 0) == a
    assert order(0, 1) != a
    assert order(1, 0) != a


def test_persistent_workers_follow_set_epoch(many) -> None:
    """The epoch reaches persistent workers: their epochs equal fresh loaders' epochs."""
    kwargs = {"batch_size": 4, "num_workers": 2, "columns": ("patch_id",), "buffer_size": 6, "seed": 9}
    persistent = make_loader(many.root, "train", worker_type="process", **kwargs)
    assert persistent.persistent_workers
    got = []
    for epoch in (0, 1, 0):
        persistent.dataset.set_epoch(epoch)
        got.append([b["patch_id"] for b in persistent])
    fresh = []
    for epoch in (0, 1):
        loader = make_loader(many.root, "train", persistent_workers=False, worker_type="process",
                             **kwargs)
        loader.dataset.set_epoch(epoch)
        fresh.append([b["patch_id"] for b in loader])
    assert got == [fresh[0], fresh[1], fresh[0]]
    assert fresh[0] != fresh[1]
    threads = make_loader(many.root, "train", worker_type="thread", **kwargs)  # the same epochs
    assert threads.worker_type == "thread" and threads.workers == 2 and threads.num_workers == 0
    assert make_loader(many.root, "train", **kwargs).worker_type == "process"  # the default
    for epoch in (0, 1):
        threads.dataset.set_epoch(epoch)
        assert [b["patch_id"] for b in threads] == fresh[epoch]


def test_shuffle_buffer_mixes_row_groups(many) -> None:
    """With a buffer, a batch holds rows of several row groups, not one row group's run."""
    ds = PatchDataset(many.root, "train", ("patch_id",), batch_size=8, buffer_size=30, seed=0)
    groups = {pid: i for i, pid in enumerate(many.ids["train"])}
    batches = _epoch_ids(ds, 0)
    mixed = 0
    for b in batches[:-1]:
        pos = sorted(groups[p] for p in b)
        mixed += pos[-1] - pos[0] >= len(b) * 2
    assert mixed >= len(batches) // 2
    unbuffered = PatchDataset(many.root, "train", ("patch_id",), batch_size=8, shuffle=False)
    assert [i for b in _epoch_ids(unbuffered, 3) for i in b] == many.ids["train"]


def test_row_buffer_draws_every_row_once_in_bounded_memory() -> None:
    rng = np.random.default_rng(0)
    buf = L._RowBuffer({"v": (np.dtype(np.int64), ()), "s": None})
    out, start, peak = [], 0, 0
    sizes = rng.integers(1, 60, size=80)
    for n in sizes:
        vals = np.arange(start, start + n)
        buf.add({"v": vals, "s": vals.astype(str).astype(object)}, int(n))
        start += n
        while len(buf) >= 100:
            got = buf.take(16, rng)
            assert list(got["s"]) == [str(v) for v in got["v"]]
            out.extend(got["v"].tolist())
            peak = max(peak, buf.held)
    while len(buf):
        out.extend(buf.take(min(16, len(buf)), rng)["v"].tolist())
    assert sorted(out) == list(range(start))
    assert peak <= 4 * 100 + 60, peak


# --------------------------------------------------------------------------------------------
# tensors are the Parquet bytes


def test_tensors_equal_parquet_bytes(fake_dataset) -> None:
    tensor_cols = [c.name for c in LABELED_PATCH_SCHEMA.tensors]
    truth: dict[str, dict[str, bytes]] = {}
    for f in fake_dataset.files["validation"]:
        table = pq.read_table(f, columns=["patch_id", *tensor_cols])
        for row in table.to_pylist():
            truth[row["patch_id"]] = row
    ds = PatchDataset(fake_dataset.root, "validation", ("patch_id", *tensor_cols), batch_size=4,
                      buffer_size=5, seed=11)
    n = 0
    for batch in ds:
        for name in tensor_cols:
            col = LABELED_PATCH_SCHEMA[name]
            t = batch[name]
            assert t.dtype == (torch.uint16 if col.dtype == "<u2" else torch.uint8)
            assert tuple(t.shape[1:]) == col.shape
        for i, pid in enumerate(batch["patch_id"]):
            for name in tensor_cols:
                col = LABELED_PATCH_SCHEMA[name]
                expected = np.frombuffer(truth[pid][name], dtype=np.dtype(col.dtype)).reshape(col.shape)
                np.testing.assert_array_equal(batch[name][i].numpy(), expected, err_msg=f"{pid} {name}")
            n += 1
    assert n == len(truth) == len(fake_dataset.ids["validation"])


# --------------------------------------------------------------------------------------------
# num_workers as reader threads (default) or worker processes with recycled shared-memory slots

TENSORS = ("bands_10m", "bands_60m", "multi_hot_43", "scl")  # bands_10m: read directly if plain


@pytest.fixture(scope="module")
def truth(many) -> dict[str, dict[str, np.ndarray]]:
    """patch_id -> column -> the tensor as stored in the Parquet files of ``many``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for split in many.files:
        for f in many.files[split]:
            for row in pq.read_table(f, columns=["patch_id", *TENSORS]).to_pylist():
                out[row["patch_id"]] = {
                    c: np.frombuffer(row[c], dtype=np.dtype(LABELED_PATCH_SCHEMA[c].dtype)).reshape(
                        LABELED_PATCH_SCHEMA[c].shape) for c in TENSORS}
    return out


def _rewrite_split(src: Path, dest: Path, split: str = "train", **writer) -> Path:
    """A copy of dataset ``src`` whose ``split`` files are rewritten, row group by row group."""
    shutil.copytree(src, dest)
    for f in (dest / "patches" / f"split={split}").glob("*.parquet"):
        pf = pq.ParquetFile(f)
        tables = [pf.read_row_group(i) for i in range(pf.num_row_groups)]
        with pq.ParquetWriter(f, pf.schema_arrow, **writer) as w:
            for t in tables:
                w.write_table(t, row_group_size=t.num_rows)
    return dest


@pytest.fixture(scope="module", params=["pyarrow", "direct"])
def source(request, many, tmp_path_factory) -> Path:
    """``many`` as written (zstd: every column goes through read_row_group), or rewritten in
    the build's layout (plain, uncompressed tensors: the large ones are read directly)."""
    if request.param == "pyarrow":
        return many.root
    return _rewrite_split(many.root, tmp_path_factory.mktemp("plain") / "dataset",
                          compression="none", use_dictionary=False)


def _assert_true_rows(batch, truth) -> None:
    for i, pid in enumerate(batch["patch_id"]):
        for c in TENSORS:
            np.testing.assert_array_equal(batch[c][i].numpy(), truth[pid][c], err_msg=f"{pid} {c}")


def _epoch_batches(loader, epoch: int) -> list[dict]:
    """Every batch of an epoch, copied (so recycled memory cannot change them afterwards)."""
    loader.dataset.set_epoch(epoch)
    return [{k: v.clone() if isinstance(v, torch.Tensor) else list(v) for k, v in b.items()}
            for b in loader]


def _assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert [x["patch_id"] for x in a] == [y["patch_id"] for y in b]
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in TENSORS:
            assert torch.equal(x[k], y[k]), k


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize(("rank", "world"), [(0, 1), (1, 2)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_threads_yield_the_batches_of_worker_processes(source, workers, rank, world, shuffle) -> None:
    """Reader threads give DataLoader's batches, in DataLoader's order (round robin over the
    worker shards that still have batches), whatever the worker count and rank."""
    kwargs = {"batch_size": 4, "columns": ("patch_id", *TENSORS), "buffer_size": 9, "seed": 4,
              "shuffle": shuffle, "rank": rank, "world_size": world}
    threads = make_loader(source, "train", num_workers=workers, worker_type="thread", **kwargs)
    processes = make_loader(source, "train", num_workers=workers, worker_type="process", **kwargs)
    for epoch in (0, 1):
        got = _epoch_batches(threads, epoch)
        _assert_same_batches(got, _epoch_batches(processes, epoch))
        assert len(got) == len(threads) == threads.dataset.num_batches(workers, epoch)
        # the reference: DataLoader's order over the shards, built by hand
        shards = [list(threads.dataset.iter_shard(w, workers, epoch)) for w in range(workers)]
        expected = [b for rnd in itertools.zip_longest(*shards) for b in rnd if b is not None]
        _assert_same_batches(got, expected)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_workers_read_the_rows_of_num_workers_0(source, many, truth, workers, worker_type) -> None:
    """Every epoch: the same rows as num_workers=0, each once, with their stored bytes."""
    kwargs = {"batch_size": 3, "columns": ("patch_id", *TENSORS), "buffer_size": 7, "seed": 8}
    single = make_loader(source, "train", num_workers=0, **kwargs)
    multi = make_loader(source, "train", num_workers=workers, worker_type=worker_type, **kwargs)
    for epoch in (0, 3):
        ids0 = [i for b in _epoch_batches(single, epoch) for i in b["patch_id"]]
        batches = _epoch_batches(multi, epoch)
        ids = [i for b in batches for i in b["patch_id"]]
        assert len(ids) == len(set(ids)), "a row was read twice"
        assert sorted(ids) == sorted(ids0) == sorted(many.ids["train"])
        for b in batches:
            _assert_true_rows(b, truth)


@pytest.mark.parametrize(("world", "workers"), [(2, 1), (2, 2), (3, 2)])
@pytest.mark.parametrize("equalize", ["none", "drop", "pad"])
@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_workers_keep_the_ddp_shard_guarantees(source, many, world, workers, equalize,
                                                worker_type) -> None:
    """Across ranks: none reads every row once; drop reads none twice and gives every rank the
    same number of batches; pad reads every row and gives every rank the same number."""
    per_rank, seen = [], []
    for rank in range(world):
        loader = make_loader(source, "train", batch_size=3, num_workers=workers,
                             columns=("patch_id", "bands_10m"), rank=rank, world_size=world,
                             equalize=equalize, seed=5, worker_type=worker_type)
        batches = _epoch_batches(loader, 1)
        assert len(batches) == len(loader)
        per_rank.append(len(batches))
        seen.extend(i for b in batches for i in b["patch_id"])
    everything = sorted(many.ids["train"])
    if equalize == "none":
        assert sorted(seen) == everything
    if equalize == "drop":
        assert len(seen) == len(set(seen)) and set(seen) <= set(everything)
    if equalize == "pad":
        assert set(seen) == set(everything)
    if equalize != "none":
        assert len(set(per_rank)) == 1, per_rank


def test_reader_thread_errors_reach_the_consumer(tmp_path, many) -> None:
    root = tmp_path / "copy"
    shutil.copytree(many.root, root)
    loader = make_loader(root, "train", batch_size=4, num_workers=2, worker_type="thread",
                         columns=("patch_id", "bands_60m"))
    victim = min((root / "patches" / "split=train").glob("*.parquet"))
    victim.write_bytes(victim.read_bytes()[:200])  # truncated after the footers were read
    with pytest.raises(Exception) as info:  # whatever pyarrow raises, unchanged
        for _ in loader:
            pass
    assert not isinstance(info.value, StopIteration)
    _wait_for_no_reader_threads()


def _wait_for_no_reader_threads(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while any(t.name.startswith("patch-reader") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "reader threads still running"
        time.sleep(0.02)


def test_abandoned_thread_iterator_stops_its_readers(many) -> None:
    loader = make_loader(many.root, "train", batch_size=2, num_workers=3, prefetch_factor=1,
                         worker_type="thread", columns=("patch_id", "bands_60m"))
    it = iter(loader)
    next(it)
    assert any(t.name.startswith("patch-reader") for t in threading.enumerate())
    del it
    gc.collect()
    _wait_for_no_reader_threads()
    for _ in loader:  # the loader still works
        pass


EXIT_CHILD = """
import sys
from bigearthnet.dataset.loader import make_loader
loader = make_loader(sys.argv[1], "train", batch_size=2, num_workers=3, prefetch_factor=1,
                     worker_type="thread", columns=("patch_id", "bands_10m", "bands_60m"))
for epoch in range(2):
    loader.dataset.set_epoch(epoch)
    for batch in loader:
        pass
it = iter(loader)
next(it)  # exit with an iteration left midway: its readers are still at work
"""


def test_interpreter_exit_with_reader_threads_alive(many) -> None:
    """Exiting while reader threads are alive (an abandoned epoch, or readers freeing their
    last tensors) must not abort: a daemon thread killed inside C++ code calls terminate."""
    for _ in range(4):
        proc = subprocess.run([sys.executable, "-c", EXIT_CHILD, str(many.root)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]


def _slot_loader(root, **kwargs):
    return make_loader(root, "train", batch_size=4, num_workers=2, worker_type="process",
                       columns=("patch_id", *TENSORS), buffer_size=9, seed=6, **kwargs)


def test_worker_slots_are_recycled(source, truth) -> None:
    """A consumer that drops each batch gets every batch from a recycled slot: no new
    shared-memory segment, at most prefetch_factor * workers + 3 storages per worker."""
    loader = _slot_loader(source)
    storages, n_batches = set(), 0
    for epoch in (0, 1, 2):
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            _assert_true_rows(batch, truth)
            storages.add(batch["bands_60m"].untyped_storage().data_ptr())
            n_batches += 1
    table = loader._slot_table
    assert table.fresh == 0 and table.handed_out == n_batches
    assert len(storages) <= 2 * (2 * 2 + 3)


def test_worker_slots_never_overwrite_a_held_batch(source, truth) -> None:
    """Batches (or views of them) the consumer still holds keep their rows while the workers
    go on: their slots are not reused; the workers write into new segments meanwhile."""
    loader = _slot_loader(source)
    for epoch in (0, 1):
        held = _hold_all(loader, epoch)
        for batch in held:
            _assert_true_rows(batch, truth)
    assert loader._slot_table.fresh > 0  # the ring ran out while everything was held
    # views only: a slice of each batch, and a numpy view of another column
    loader.dataset.set_epoch(2)
    views = [(b["patch_id"][:2], b["bands_60m"][:2], b["scl"].numpy()[:2]) for b in loader]
    for ids, b60, scl in views:
        for i, pid in enumerate(ids):
            np.testing.assert_array_equal(b60[i].numpy(), truth[pid]["bands_60m"])
            np.testing.assert_array_equal(scl[i], truth[pid]["scl"])


def _hold_all(loader, epoch: int) -> list[dict]:
    loader.dataset.set_epoch(epoch)
    return list(loader)


def test_worker_slots_survive_epochs_left_early(source, many, truth) -> None:
    """Leaving epochs early (max_steps_per_epoch) does not leak slots: the next epochs still
    recycle them, and read the right rows."""
    loader = _slot_loader(source)
    for epoch in range(6):
        loader.dataset.set_epoch(epoch)
        for k, batch in enumerate(loader):
            _assert_true_rows(batch, truth)
            if k == 2:
                break
    table = loader._slot_table
    fresh = table.fresh
    loader.dataset.set_epoch(7)
    ids = []
    for batch in loader:
        _assert_true_rows(batch, truth)
        ids.extend(batch["patch_id"])
    assert sorted(ids) == sorted(many.ids["train"])
    assert table.fresh == fresh == 0


def _ring(workers: int = 1, slots: int = 3):
    table = L._SlotTable(workers, slots)
    layout = {"bands_60m": ((4, 2, 20, 20), np.dtype("<u2")), "multi_hot_43": ((4, 43), np.dtype("u1"))}
    return table, L._SlotRing(table, 0, layout)


def _fill(ring, k: int, value: int) -> L._SlotBatch:
    """The worker writes a batch into a slot; what the main process receives is another
    mapping of the slot: here, tensors on a storage of their own (the ring holds the worker's)."""
    slot, tensors = ring.acquire(k)
    storage = torch.UntypedStorage(sum(t.nbytes for t in tensors.values()))
    received, offset = {}, 0
    for name, t in tensors.items():
        t.fill_(value)
        view = torch.empty(0, dtype=t.dtype).set_(storage, offset // t.element_size(), t.shape)
        view.copy_(t)
        received[name], offset = view, offset + t.nbytes
    return L._SlotBatch(ring.table.token, 0, slot, {**received, "patch_id": [str(value)] * k})


def test_slot_states_follow_the_protocol() -> None:
    """FREE -> BUSY (worker writes) -> HANDED (consumer holds) -> FREE (nothing holds it);
    a full ring gives no slot (the worker then makes a new segment)."""
    table, ring = _ring()
    table.start_iteration()
    ring.new_iteration()
    a, b, c = (_fill(ring, 4, v) for v in (1, 2, 3))
    assert list(table.state[0]) == [L._BUSY] * 3 and ring.acquire(4) is None
    held = table.hand_out(a)
    assert table.state[0, a.slot] == L._HANDED
    view = held["bands_60m"][1:2]  # a view keeps the slot, even without the batch
    del held, a
    table.release()
    assert table.state[0, 0] == L._HANDED
    del view
    table.release()
    assert table.state[0, 0] == L._FREE
    d = _fill(ring, 2, 4)  # partial batch, in the freed slot
    assert d.slot == 0 and d.batch["bands_60m"].shape == (2, 2, 20, 20)
    assert bool((table.hand_out(b)["bands_60m"] == 2).all())  # untouched by the later writes
    del b, c, d


def test_slots_left_busy_by_an_abandoned_epoch_are_reclaimed() -> None:
    """BUSY slots of an earlier iteration (drained by DataLoader, never handed out) are
    freed when the next iteration starts; HANDED ones and the new iteration's are kept."""
    table, ring = _ring(slots=4)
    table.start_iteration()
    ring.new_iteration()
    kept = table.hand_out(_fill(ring, 4, 1))
    drained = [_fill(ring, 4, v) for v in (2, 3)]
    table.start_iteration()
    ring.new_iteration()
    fresh = _fill(ring, 4, 9)
    table.reclaim()
    assert table.state[0, 0] == L._HANDED and table.state[0, fresh.slot] == L._BUSY
    assert [table.state[0, d.slot] for d in drained] == [L._FREE, L._FREE]
    assert bool((kept["bands_60m"] == 1).all())


def test_pinned_copy_frees_the_slot(monkeypatch) -> None:
    """DataLoader's pin-memory thread copies a slot batch and frees the slot at once."""
    table, ring = _ring()
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, device=None: self.clone())
    item = _fill(ring, 3, 7)
    out = item.pin_memory()
    assert table.state[0, item.slot] == L._FREE and item.batch == {}
    assert out["patch_id"] == ["7"] * 3 and bool((out["bands_60m"] == 7).all())
    assert out["bands_60m"].untyped_storage().data_ptr() != table.storages[(0, item.slot)].data_ptr()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
@pytest.mark.parametrize(("workers", "worker_type"), [(0, "thread"), (2, "thread"), (2, "process")])
def test_pin_memory_batches_are_pinned_and_right(many, truth, workers, worker_type) -> None:
    loader = make_loader(many.root, "train", batch_size=4, num_workers=workers,
                         worker_type=worker_type, columns=("patch_id", *TENSORS), pin_memory=True)
    held = list(loader)
    assert sum(len(b["patch_id"]) for b in held) == len(many.ids["train"])
    for b in held:
        assert all(b[c].is_pinned() for c in TENSORS)
        _assert_true_rows(b, truth)


def test_worker_type_is_checked(many) -> None:
    with pytest.raises(ConfigError):
        make_loader(many.root, "train", 4, 1, worker_type="fiber")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        make_loader(many.root, "train", 4, 1, prefetch_factor=0)


# --------------------------------------------------------------------------------------------
# direct reads of plain, uncompressed tensor columns (os.preadv into the batch)

BIG = ("bands_10m", "bands_20m")  # >= DIRECT_READ_MIN_BYTES per row
LAYOUTS = {
    # name: ParquetWriter keywords; plain=True if the big tensor columns are read directly
    "build": ({"compression": {"bands_10m": "none", "bands_20m": "none", "bands_60m": "none"},
               "use_dictionary": False, "write_statistics": False}, True),
    "small_pages_v2_stats": ({"compression": "none", "use_dictionary": False,
                              "data_page_size": 50_000, "data_page_version": "2.0",
                              "write_statistics": True}, True),
    "small_pages_v1": ({"compression": "none", "use_dictionary": False,
                        "data_page_size": 100_000}, True),
    "dictionary": ({"compression": "none", "use_dictionary": True}, False),
    "zstd": ({"compression": "zstd", "use_dictionary": False}, False),
}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def rewritten(request, many, tmp_path_factory):
    """``many``'s train split rewritten row group by row group with other writer settings."""
    kwargs, plain = LAYOUTS[request.param]
    return _rewrite_split(many.root, tmp_path_factory.mktemp(request.param) / "dataset", **kwargs), plain


@pytest.mark.parametrize("shuffle", [True, False])
def test_direct_reads_give_the_arrow_batches(rewritten, many, truth, shuffle) -> None:
    """Same batches, same order, same bytes as through read_row_group, whatever the layout;
    the direct path is taken exactly when the columns are plain and uncompressed."""
    root, plain = rewritten
    cols = ("patch_id", *dict.fromkeys((*BIG, *TENSORS)))
    kwargs = {"batch_size": 5, "buffer_size": 11, "seed": 2, "shuffle": shuffle}
    direct = PatchDataset(root, "train", cols, **kwargs)
    arrow = PatchDataset(root, "train", cols, direct_read=False, **kwargs)
    assert direct._direct == list(BIG) and arrow._direct == []
    for epoch in (0, 1):
        direct.set_epoch(epoch)
        arrow.set_epoch(epoch)
        n = 0
        for a, b in zip(direct, arrow, strict=True):
            assert a["patch_id"] == b["patch_id"]
            for c in cols[1:]:
                assert torch.equal(a[c], b[c]), c
            _assert_true_rows(a, truth)
            n += len(a["patch_id"])
        assert n == len(many.ids["train"])
    located = {k: v is not None for k, v in direct._locations.items()}
    assert located and all(v == plain for v in located.values()), located


def test_direct_reads_check_every_value(many, tmp_path) -> None:
    """A value whose length prefix is not the tensor size is an error, not a wrong tensor."""
    root = _rewrite_split(many.root, tmp_path / "copy", compression="none", use_dictionary=False)
    ds = PatchDataset(root, "train", ("bands_10m",), batch_size=4)
    for batch in ds:  # fine as written
        assert batch["bands_10m"].shape[1:] == (4, 120, 120)
    # shift every located value by two bytes: the prefixes no longer read 115200
    ds._locations = {k: None if v is None else v + 2 for k, v in ds._locations.items()}
    with pytest.raises(DatasetSchemaError, match="holds .* bytes, not 115200"):
        for _ in ds:
            pass


def test_direct_reads_resume_short_reads(many, tmp_path, monkeypatch) -> None:
    """preadv may read less than asked: the rest is read, the batches do not change."""
    root = _rewrite_split(many.root, tmp_path / "copy", compression="none", use_dictionary=False)
    kwargs = {"columns": ("patch_id", "bands_10m", "bands_20m"), "batch_size": 6, "seed": 1}
    expected = list(PatchDataset(root, "train", direct_read=False, **kwargs))
    real, calls = os.preadv, []

    def stingy(fd, views, offset):  # at most 1000 bytes per call, cut inside a view
        calls.append(offset)
        room, cut = 1000, []
        for v in views:
            if room <= 0:
                break
            cut.append(v[:room])
            room -= len(cut[-1])
        return real(fd, cut, offset)

    monkeypatch.setattr(L.os, "preadv", stingy)
    got = list(PatchDataset(root, "train", **kwargs))
    assert len(calls) > 10 * len(got)
    for a, b in zip(got, expected, strict=True):
        assert a["patch_id"] == b["patch_id"]
        assert torch.equal(a["bands_10m"], b["bands_10m"]) and torch.equal(a["bands_20m"], b["bands_20m"])


def test_thrift_reader_skips_what_it_does_not_need() -> None:
    """A compact-protocol struct with every field type; the header fields come out."""
    # field 1 i32=3 (zigzag 6), 2 binary b"ab", 3 list<i32>[1,2], 4 bool true, 5 struct{1: i64=-1},
    # 6 double, 7 map<i32,i32>{1: 2}, stop
    data = bytes([0x15, 6, 0x18, 2]) + b"ab" + bytes([0x19, 0x25, 2, 4, 0x11, 0x1C, 0x16, 1, 0,
                                                      0x17]) + bytes(8) + bytes([0x1B, 1, 0x55, 2, 4, 0])
    fields = L._CompactThrift(data).struct()
    assert fields[1] == 3 and fields[2] == b"ab" and fields[3] == [1, 2] and fields[4] is True
    assert fields[5] == {1: -1} and fields[6] is None and fields[7] == [(1, 2)]
    with pytest.raises(EOFError):
        L._CompactThrift(data[:5]).struct()


# --------------------------------------------------------------------------------------------
# errors


def test_incomplete_dataset_is_named(fake_dataset_factory) -> None:
    ds = fake_dataset_factory("incomplete", success=False, layout={"train": [[3]]})
    with pytest.raises(IncompleteDatasetError, match=str(ds.root)) as info:
        PatchDataset(ds.root, "train")
    assert isinstance(info.value, FileNotFoundError)


def test_missing_split_is_named(fake_dataset) -> None:
    with pytest.raises(SplitNotFoundError, match=r"split=holdout") as info:
        PatchDataset(fake_dataset.root, "holdout")
    assert "train" in str(info.value) and str(fake_dataset.root) in str(info.value)


def test_missing_dataset_and_empty_split(tmp_path, fake_dataset) -> None:
    with pytest.raises(InputNotFoundError, match="nowhere"):
        PatchDataset(tmp_path / "nowhere", "train")
    root = tmp_path / "copy"
    shutil.copytree(fake_dataset.root, root)
    for f in (root / "patches" / "split=test").glob("*.parquet"):
        f.unlink()
    with pytest.raises(SplitNotFoundError, match="split=test"):
        PatchDataset(root, "test")


def test_bad_columns_and_arguments(fake_dataset) -> None:
    with pytest.raises(DatasetSchemaError, match="reference_map"):
        PatchDataset(fake_dataset.root, "train", ("reference_map",))
    with pytest.raises(DatasetSchemaError, match="epsg"):
        PatchDataset(fake_dataset.root, "train", ("epsg",))
    for kwargs in ({"batch_size": 0}, {"rank": 2, "world_size": 2}, {"seed": -1},
                   {"equalize": "evenly"}, {"buffer_size": -1}):
        with pytest.raises(ConfigError):
            PatchDataset(fake_dataset.root, "train", **kwargs)
    with pytest.raises(ConfigError):
        PatchDataset(fake_dataset.root, "train").set_epoch(-1)


def test_declared_tensor_shape_is_checked(tmp_path, fake_dataset) -> None:
    import json

    root = tmp_path / "bad"
    shutil.copytree(fake_dataset.root, root)
    f = min((root / "patches" / "split=test").glob("*.parquet"))
    table = pq.read_table(f)
    doc = json.loads(table.schema.metadata[b"bigearthnet.schema"])
    for c in doc["columns"]:
        if c["name"] == "bands_60m":
            c["shape"] = [2, 10, 40]
    pq.write_table(table.replace_schema_metadata({b"bigearthnet.schema": json.dumps(doc).encode()}), f)
    with pytest.raises(DatasetSchemaError, match="bands_60m"):
        PatchDataset(root, "test", ("bands_60m",))


# --------------------------------------------------------------------------------------------
# transforms


def _constant_batch(b: int = 2) -> dict[str, torch.Tensor]:
    """Band k of BAND_NAMES holds the constant 100 * (k + 1)."""
    value = {band: 100 * (k + 1) for k, band in enumerate(BAND_NAMES)}
    batch = {}
    for res, col, px in ((10, "bands_10m", 120), (20, "bands_20m", 60), (60, "bands_60m", 20)):
        arr = np.stack([np.full((px, px), value[band], np.uint16) for band in GROUPS[res]])
        batch[col] = torch.from_numpy(np.repeat(arr[None], b, axis=0))
    batch["multi_hot_43"] = torch.zeros(b, 43, dtype=torch.uint8)
    batch["multi_hot_19"] = torch.ones(b, 19, dtype=torch.uint8)
    return batch, value


def test_rgb_channel_order_and_normalisation(fake_dataset) -> None:
    batch, value = _constant_batch()
    t = BatchTransform(fake_dataset.root, bands="rgb", label_set="19")
    x, y = t(batch)
    assert x.shape == (2, 3, 120, 120) and x.dtype == torch.float32
    assert y.shape == (2, 19) and y.dtype == torch.float32 and bool((y == 1).all())
    assert t.columns == ("bands_10m", "multi_hot_19")
    for c, band in enumerate(("B04", "B03", "B02")):
        s = fake_dataset.stats["bands"][band]
        expected = (value[band] - s["mean"]) / s["std"]
        assert torch.allclose(x[:, c], torch.full((2, 120, 120), expected), atol=1e-5), band


def test_all_bands_order_and_normalisation(fake_dataset) -> None:
    batch, value = _constant_batch(3)
    x, y = BatchTransform(fake_dataset.stats, bands="all")(batch)
    assert x.shape == (3, 12, 120, 120) and x.dtype == torch.float32 and x.is_contiguous()
    assert y.shape == (3, 43) and y.dtype == torch.float32
    for c, band in enumerate(BAND_NAMES):  # constants survive bicubic upsampling exactly
        s = fake_dataset.stats["bands"][band]
        expected = (value[band] - s["mean"]) / s["std"]
        assert torch.allclose(x[:, c], torch.full((3, 120, 120), expected), atol=1e-4), band


def test_normalisation_and_bicubic_on_real_batch(fake_dataset) -> None:
    ds = PatchDataset(fake_dataset.root, "train", batch_size=6, seed=0)
    batch = next(iter(ds))
    x, y = BatchTransform(fake_dataset.stats, bands="all")(batch)
    stats = fake_dataset.stats["bands"]
    raw10, raw20, raw60 = (batch[c].numpy().astype(np.float64) for c in ("bands_10m", "bands_20m", "bands_60m"))
    # 10 m: plain per-band normalisation, computed by hand in float64
    for j, band in enumerate(GROUPS[10]):
        manual = (raw10[:, j] - stats[band]["mean"]) / stats[band]["std"]
        np.testing.assert_allclose(x[:, BAND_NAMES.index(band)].numpy(), manual, rtol=0, atol=1e-5)
    # 20 m / 60 m: normalised, then F.interpolate(bicubic, align_corners=False) to 120 x 120
    for raw, res in ((raw20, 20), (raw60, 60)):
        mean, std = band_mean_std(fake_dataset.stats, GROUPS[res])
        norm = (torch.from_numpy(raw).float() - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
        up = F.interpolate(norm, size=(120, 120), mode="bicubic", align_corners=False)
        for j, band in enumerate(GROUPS[res]):
            got = x[:, BAND_NAMES.index(band)]
            assert torch.allclose(got, up[:, j], atol=1e-5), band
            nearest = F.interpolate(norm, size=(120, 120), mode="nearest")[:, j]
            assert not torch.allclose(got, nearest, atol=1e-3)
    np.testing.assert_array_equal(y.numpy(), batch["multi_hot_43"].numpy().astype(np.float32))


def _keys_cubic_row(row: np.ndarray, out_len: int, a: float = -0.75) -> np.ndarray:
    """Reference 1-D cubic convolution (Keys, a=-0.75), half-pixel centres, clamped borders."""

    def w(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        if x < 2:
            return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
        return 0.0

    scale = len(row) / out_len
    out = np.empty(out_len)
    for j in range(out_len):
        src = (j + 0.5) * scale - 0.5
        i0 = int(np.floor(src))
        t = src - i0
        out[j] = sum(w(t - k) * row[min(max(i0 + k, 0), len(row) - 1)] for k in (-1, 0, 1, 2))
    return out


def test_bicubic_matches_a_reference_cubic_convolution(fake_dataset) -> None:
    """Independent of F.interpolate: a numpy cubic convolution on data varying along x only."""
    batch, _ = _constant_batch(1)
    rng = np.random.default_rng(4)
    row20 = rng.integers(0, 9000, size=60).astype(np.float64)
    row60 = rng.integers(0, 9000, size=20).astype(np.float64)
    batch["bands_20m"] = torch.from_numpy(np.broadcast_to(row20, (1, 6, 60, 60)).astype(np.uint16))
    batch["bands_60m"] = torch.from_numpy(np.broadcast_to(row60, (1, 2, 20, 20)).astype(np.uint16))
    x, _ = BatchTransform(fake_dataset.stats, bands="all")(batch)
    for band, row in (("B05", row20), ("B12", row20), ("B01", row60), ("B09", row60)):
        s = fake_dataset.stats["bands"][band]
        expected = _keys_cubic_row((row - s["mean"]) / s["std"], 120)
        got = x[0, BAND_NAMES.index(band)].numpy()
        np.testing.assert_allclose(got, np.broadcast_to(expected, (120, 120)), atol=1e-4, err_msg=band)


def test_transform_errors(fake_dataset) -> None:
    stats = {"bands": {b: v for b, v in fake_dataset.stats["bands"].items() if b != "B09"}}
    BatchTransform(stats, bands="rgb")  # rgb does not need B09
    with pytest.raises(StatsError, match="B09"):
        BatchTransform(stats, bands="all")
    bad = {"bands": {**fake_dataset.stats["bands"], "B02": {"mean": 1.0, "std": 0.0}}}
    with pytest.raises(StatsError, match="B02"):
        BatchTransform(bad, bands="rgb")
    with pytest.raises(ConfigError):
        BatchTransform(fake_dataset.stats, bands="nir")
    with pytest.raises(ConfigError):
        BatchTransform(fake_dataset.stats, label_set="44")
    with pytest.raises(InputNotFoundError):
        BatchTransform(Path("/nonexistent/stats.json"))
    batch, _ = _constant_batch()
    del batch["bands_60m"]
    with pytest.raises(DatasetSchemaError, match="bands_60m"):
        BatchTransform(fake_dataset.stats, bands="all")(batch)
    assert issubclass(StatsError, BigEarthNetError)


def test_loader_and_transform_end_to_end(fake_dataset) -> None:
    t = BatchTransform(fake_dataset.root, bands="all", label_set="19")
    loader = make_loader(fake_dataset.root, "test", batch_size=4, columns=t.columns)
    assert loader.dataset.shuffle is False  # not the train split
    sizes = Counter()
    for batch in loader:
        x, y = t(batch)
        assert x.shape[1:] == (12, 120, 120) and y.shape[1:] == (19,)
        assert torch.isfinite(x).all()
        sizes[x.shape[0]] += 1
    assert sum(k * v for k, v in sizes.items()) == len(fake_dataset.ids["test"])


def test_uint16_widening_path_keeps_large_values() -> None:
    """The int16-bytes path used off the CPU gives the same floats, including values > 32767."""
    from bigearthnet.dataset.transforms import to_float32

    raw = torch.tensor([0, 1, 32767, 32768, 40000, 65535], dtype=torch.uint16)
    direct = to_float32(raw, torch.device("cpu"))
    assert direct.tolist() == [0.0, 1.0, 32767.0, 32768.0, 40000.0, 65535.0]
    assert torch.equal(to_float32(raw, torch.device("cpu"), widen=True), direct)
    meta = to_float32(raw, torch.device("meta"))  # a non-CPU device takes the int16 path
    assert meta.dtype == torch.float32 and meta.shape == raw.shape


def test_rank_and_world_from_torch_distributed(many, monkeypatch) -> None:
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 3)
    ds = PatchDataset(many.root, "train", ("patch_id",))
    assert (ds.rank, ds.world_size, ds.equalize) == (1, 3, "drop")
    explicit = PatchDataset(many.root, "train", ("patch_id",), rank=0, world_size=1)
    assert (explicit.rank, explicit.world_size, explicit.equalize) == (0, 1, "none")
