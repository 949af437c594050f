"""Torch loader over one split of a built dataset: row-group sharding, seeded shuffling, batches.

Layout read (written by ``bigearthnet build``)::

    DATASET/_SUCCESS
    DATASET/patches/split=<split>/<product_id>.parquet      (LABELED_PATCH_SCHEMA)

**Units.** The unit of work is one Parquet row group of one file. Units are enumerated in a
fixed order (file name, then row-group index), so every process computes the same list from
the footers alone.

**Sharding.** There are ``world_size × W`` shards, one per (DDP rank, DataLoader worker) pair,
where ``W = max(num_workers, 1)``; every rank must use the same ``num_workers`` (as torchrun
does). Each epoch, the unit order is permuted with ``np.random.default_rng((seed, epoch))``
(identity when ``shuffle=False``) and the units are dealt, in that order, to the shard that has
the fewest rows so far (ties: the lowest shard index, shard ``s = worker × world_size + rank``).
Every unit goes to exactly one shard, so the union of all shards is the split, without
duplicates; shard row counts differ by at most the largest row group.

**Uneven shards and DDP.** ``equalize`` decides what happens to those differences:

- ``"none"``: nothing; every row is read exactly once per epoch. Ranks may then yield
  different numbers of batches, which makes DDP training hang in its gradient all-reduce; use
  it on one process, or for evaluation gathered without per-batch collectives.
- ``"drop"``: for every worker slot ``w``, each shard ``(rank, w)`` stops after the smallest
  row count among the ranks' shards of slot ``w`` (the tail of its last row group is skipped;
  which rows are skipped changes every epoch with the unit order). No row is read twice.
- ``"pad"``: each shard ``(rank, w)`` is topped up to the largest row count of slot ``w`` with
  rows taken from the start of the epoch's unit order (cycled), like ``DistributedSampler``.
  Every row is read at least once; a few are read twice.

Both equalizing modes give every shard of one worker slot the same row count, so every rank
yields the same number of batches, whatever ``batch_size`` and ``drop_last``. The default
(``equalize=None``) is ``"drop"`` when ``world_size > 1`` and ``"none"`` otherwise.

**Shuffling.** With ``shuffle=True``, rows pass through a bounded buffer: row groups are
added until it holds ``max(buffer_size, batch_size)`` rows, then each batch is
``batch_size`` rows drawn uniformly without replacement from the buffer with
``np.random.default_rng((seed, epoch, rank, worker))``; rows inside one batch keep their file
order. The buffer holds about 2-3 × ``buffer_size`` rows (at most 4 × plus one row group):
row groups stay as read, and the few live rows of mostly drawn row groups are copied together
so that they do not pin whole row groups. With ``shuffle=False`` rows come in file order.

**Batches.** The loader yields whole batches (use ``DataLoader(batch_size=None)``, as
:func:`make_loader` does): a dict of ``torch.uint16``/``torch.uint8`` tensors of shape
``(B, *shape)`` for the tensor columns, and a ``list[str]`` for string columns such as
``patch_id``. A row group is read with ``ParquetFile.read_row_group(i, columns=...)``, its
tensor columns are viewed as numpy arrays on the Arrow buffers (no per-row Python), the
batch's rows are gathered with one ``np.take`` per column into a fresh array, and that array
becomes a tensor with ``torch.from_numpy`` (no further copy).

**Epochs.** Call :meth:`PatchDataset.set_epoch` before iterating each epoch. The epoch lives
in a one-element shared-memory tensor, so it also reaches persistent DataLoader workers (which
:func:`make_loader` uses: they keep their warmed-up memory and open nothing anew per epoch).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from bigearthnet.dataset.io import SUCCESS_MARKER
from bigearthnet.dataset.schema import (
    LABELED_PATCH_SCHEMA,
    TensorColumn,
    tensor_columns_from_metadata,
)
from bigearthnet.errors import (
    ConfigError,
    DatasetSchemaError,
    IncompleteDatasetError,
    InputNotFoundError,
    SplitNotFoundError,
)

DEFAULT_COLUMNS: tuple[str, ...] = ("bands_10m", "bands_20m", "bands_60m", "multi_hot_43")
"""The tensors S-CNN-All needs with the 43-class labels."""

Equalize = Literal["none", "drop", "pad"]
Batch = dict[str, "torch.Tensor | list[str]"]


@dataclass(frozen=True)
class Unit:
    """One row group of one Parquet file: the unit of sharding."""

    path: str
    row_group: int
    num_rows: int


@dataclass(frozen=True)
class Segment:
    """Rows ``[start, stop)`` of unit ``unit`` (an index into the unit list)."""

    unit: int
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        """Rows in the segment."""
        return self.stop - self.start


def split_dir(dataset_dir: str | Path, split: str) -> Path:
    """The folder of one split of a complete dataset.

    Raises:
        InputNotFoundError: ``dataset_dir`` does not exist.
        IncompleteDatasetError: it has no ``_SUCCESS`` marker.
        SplitNotFoundError: it has no ``patches/split=<split>`` folder.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise InputNotFoundError(f"dataset folder {root} does not exist")
    if not (root / SUCCESS_MARKER).is_file():
        raise IncompleteDatasetError(
            f"dataset {root} has no {SUCCESS_MARKER} marker: its build did not finish; "
            "rebuild it (bigearthnet build --overwrite)"
        )
    path = root / "patches" / f"split={split}"
    if not path.is_dir():
        found = sorted(p.name.removeprefix("split=") for p in (root / "patches").glob("split=*"))
        raise SplitNotFoundError(
            f"dataset {root} has no split '{split}' (no folder {path}); splits found: {found or 'none'}"
        )
    return path


def list_units(path: Path, columns: Sequence[str]) -> tuple[list[Unit], dict[str, TensorColumn]]:
    """Enumerate the row groups of every Parquet file in ``path``, sorted, and check the schema.

    Returns:
        The units, and the tensor column specs (from the files' metadata) of ``columns``.

    Raises:
        SplitNotFoundError: no ``*.parquet`` file in ``path``.
        DatasetSchemaError: a file lacks a column or declares another shape/dtype.
    """
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise SplitNotFoundError(f"split folder {path} holds no Parquet file")
    units: list[Unit] = []
    specs: dict[str, TensorColumn] = {}
    for f in files:
        meta = pq.read_metadata(f)
        schema = meta.schema.to_arrow_schema()
        try:
            file_specs = tensor_columns_from_metadata(schema)
        except ValueError as exc:
            raise DatasetSchemaError(f"{f}: {exc}") from None
        for name in columns:
            if name not in schema.names:
                raise DatasetSchemaError(f"{f} has no column '{name}'; it has {schema.names}")
            expected = _expected_spec(name)
            if expected is not None:
                got = file_specs.get(name)
                if got is None or (got.dtype, got.shape) != (expected.dtype, expected.shape):
                    have = None if got is None else (got.dtype, got.shape)
                    raise DatasetSchemaError(
                        f"{f}: column '{name}' is declared {have}, expected "
                        f"{(expected.dtype, expected.shape)}"
                    )
                specs[name] = got
            elif not pa.types.is_string(schema.field(name).type):
                raise DatasetSchemaError(
                    f"column '{name}' is neither a tensor nor a string column; the loader "
                    "yields tensor columns and string columns (e.g. patch_id) only"
                )
        units.extend(Unit(str(f), i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups))
    return [u for u in units if u.num_rows > 0], specs


def _expected_spec(name: str) -> TensorColumn | None:
    try:
        col = LABELED_PATCH_SCHEMA[name]
    except KeyError:
        return None
    return col if isinstance(col, TensorColumn) else None


def unit_order(num_units: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The epoch's unit order: ``default_rng((seed, epoch)).permutation`` or the identity."""
    if not shuffle:
        return np.arange(num_units)
    return np.random.default_rng((seed, epoch)).permutation(num_units)


def plan_shards(row_counts: Sequence[int], order: Sequence[int], world_size: int,
                num_workers: int, equalize: Equalize) -> list[list[list[Segment]]]:
    """Assign units to (rank, worker) shards; see the module docstring for the rules.

    Args:
        row_counts: rows of each unit.
        order: the epoch's unit order (a permutation of ``range(len(row_counts))``).
        world_size: DDP ranks.
        num_workers: DataLoader workers per rank (0 counts as 1).
        equalize: ``"none"``, ``"drop"`` or ``"pad"``.

    Returns:
        ``plan[rank][worker]``: the segments that shard reads, in order.
    """
    W = max(num_workers, 1)
    n_shards = world_size * W
    plan: list[list[list[Segment]]] = [[[] for _ in range(W)] for _ in range(world_size)]
    load = [0] * n_shards
    heap = [(0, s) for s in range(n_shards)]
    for u in order:
        rows, s = heapq.heappop(heap)
        w, r = divmod(s, world_size)
        plan[r][w].append(Segment(int(u), 0, int(row_counts[u])))
        load[s] = rows + int(row_counts[u])
        heapq.heappush(heap, (load[s], s))
    if equalize == "none" or world_size == 1:
        return plan
    for w in range(W):
        counts = [load[w * world_size + r] for r in range(world_size)]
        if equalize == "drop":
            target = min(counts)
            for r in range(world_size):
                plan[r][w] = _truncate(plan[r][w], target)
        elif equalize == "pad":
            target = max(counts)
            for r in range(world_size):
                need = target - counts[r]
                k = w * world_size + r
                while need > 0:
                    u = int(order[k % len(order)])
                    take = min(need, int(row_counts[u]))
                    plan[r][w].append(Segment(u, 0, take))
                    need -= take
                    k += 1
        else:
            raise ConfigError(f"equalize must be 'none', 'drop' or 'pad', not {equalize!r}")
    return plan


def _truncate(segments: list[Segment], rows: int) -> list[Segment]:
    out: list[Segment] = []
    for seg in segments:
        if rows <= 0:
            break
        take = min(rows, seg.num_rows)
        out.append(Segment(seg.unit, seg.start, seg.start + take))
        rows -= take
    return out


class _RowBuffer:
    """Rows of several decoded row groups, drawn from in batches without per-row Python.

    Chunks are dicts of column arrays (numpy views on Arrow buffers, or object arrays of str).
    ``live`` lists (chunk, row) pairs not yet drawn, in arrival order.
    """

    def __init__(self, columns: dict[str, tuple[np.dtype, tuple[int, ...]] | None]) -> None:
        self.columns = columns  # name -> (dtype, shape) for tensors, None for strings
        self.chunks: dict[int, dict[str, np.ndarray]] = {}
        self.remaining: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live_chunk = np.empty(0, dtype=np.int64)
        self.live_row = np.empty(0, dtype=np.int64)
        self.next_id = 0
        self.held = 0

    def __len__(self) -> int:
        return len(self.live_chunk)

    def add(self, chunk: dict[str, np.ndarray], n: int) -> None:
        cid = self.next_id
        self.next_id += 1
        self.chunks[cid], self.remaining[cid], self.sizes[cid] = chunk, n, n
        self.held += n
        self.live_chunk = np.concatenate([self.live_chunk, np.full(n, cid, dtype=np.int64)])
        self.live_row = np.concatenate([self.live_row, np.arange(n, dtype=np.int64)])

    def take(self, k: int, rng: np.random.Generator | None,
             out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Remove ``k`` rows (random ones with ``rng``, else the oldest) and gather them.

        ``out`` may hold preallocated ``(k, *shape)`` arrays for (some of) the tensor columns.
        """
        n = len(self.live_chunk)
        pos = np.arange(k) if rng is None else np.sort(rng.choice(n, size=k, replace=False))
        ci, ri = self.live_chunk[pos], self.live_row[pos]
        keep = np.ones(n, dtype=bool)
        keep[pos] = False
        self.live_chunk, self.live_row = self.live_chunk[keep], self.live_row[keep]
        out = self._gather(ci, ri, out)
        for cid, cnt in zip(*np.unique(ci, return_counts=True)):
            cid = int(cid)
            self.remaining[cid] -= int(cnt)
            if self.remaining[cid] == 0:
                self.held -= self.sizes.pop(cid)
                del self.chunks[cid], self.remaining[cid]
        if rng is not None and self.held > 2 * len(self.live_chunk) > 0:
            self._compact()  # FIFO draws (no rng) never pin old chunks
        return out

    def _gather(self, ci: np.ndarray, ri: np.ndarray,
                out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        # ci is non-decreasing (live is kept in arrival order and positions are sorted),
        # so each chunk contributes one contiguous slice of the output.
        k = len(ci)
        out = dict(out or {})
        for name, spec in self.columns.items():
            if name not in out:
                out[name] = (np.empty(k, dtype=object) if spec is None
                             else np.empty((k, *spec[1]), dtype=spec[0]))
        bounds = np.flatnonzero(np.diff(ci)) + 1
        for a, b in zip(np.r_[0, bounds], np.r_[bounds, k]):
            chunk = self.chunks[int(ci[a])]
            rows = ri[a:b]
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            contiguous = hi - lo == b - a
            for name in self.columns:
                if contiguous:
                    out[name][a:b] = chunk[name][lo:hi]
                else:
                    np.take(chunk[name], rows, axis=0, out=out[name][a:b], mode="clip")
        return out

    def _compact(self) -> None:
        """Copy the live rows of mostly drawn chunks (< 1/4 live) into one new chunk.

        Drawing at random leaves a few live rows pinning each old row group; without this the
        buffer would hold about ``buffer × ln(row group size)`` rows. With it, every kept chunk
        is at least 1/4 live, so at most ``4 ×`` the live rows are held, and about 0.3 extra
        row copies are made per row drawn.
        """
        sel = [c for c, left in self.remaining.items() if 4 * left < self.sizes[c]]
        if not sel:
            return
        mask = np.isin(self.live_chunk, sel)
        n = int(mask.sum())
        merged = self._gather(self.live_chunk[mask], self.live_row[mask])
        for c in sel:
            self.held -= self.sizes.pop(c)
            del self.chunks[c], self.remaining[c]
        self.live_chunk, self.live_row = self.live_chunk[~mask], self.live_row[~mask]
        self.add(merged, n)


class PatchDataset(IterableDataset):
    """Batches of one split of a BigEarthNet Parquet dataset, sharded by rank and worker.

    See the module docstring for the sharding, equalizing and shuffling rules.

    Args:
        dataset_dir: the dataset folder (holding ``_SUCCESS`` and ``patches/``).
        split: ``train``, ``validation``, ``test`` or any ``split=<name>`` folder present.
        columns: tensor columns to yield (e.g. ``bands_10m``, ``multi_hot_19``, ``scl``) and
            optionally string columns such as ``patch_id`` (yielded as ``list[str]``).
        batch_size: rows per batch.
        shuffle: permute the units per epoch and draw rows through the shuffle buffer.
        seed: non-negative seed; with the epoch it fixes the whole order.
        buffer_size: rows held by the shuffle buffer (at least ``batch_size`` are used).
        drop_last: drop each shard's last, partial batch.
        equalize: ``"none"``, ``"drop"``, ``"pad"``, or ``None`` for ``"drop"`` when
            ``world_size > 1`` else ``"none"``.
        rank: this process's DDP rank; default: ``torch.distributed`` if initialized, else 0.
        world_size: DDP world size; default: ``torch.distributed`` if initialized, else 1.
        num_workers: the DataLoader's ``num_workers``; only used by ``len()`` (the worker
            count seen when iterating decides the sharding).
        use_threads: let pyarrow decompress columns with its thread pool.

    Raises:
        InputNotFoundError, IncompleteDatasetError, SplitNotFoundError, DatasetSchemaError:
            the dataset cannot be read as asked.
        ConfigError: an argument is out of range.
    """

    def __init__(self, dataset_dir: str | Path, split: str = "train",
                 columns: Sequence[str] = DEFAULT_COLUMNS, *, batch_size: int = 64,
                 shuffle: bool = True, seed: int = 0, buffer_size: int = 1024,
                 drop_last: bool = False, equalize: Equalize | None = None,
                 rank: int | None = None, world_size: int | None = None, num_workers: int = 0,
                 use_threads: bool = False) -> None:
        super().__init__()
        if isinstance(columns, str):
            columns = (columns,)
        if not columns:
            raise ConfigError("columns must name at least one column")
        if len(set(columns)) != len(columns):
            raise ConfigError(f"columns has duplicates: {list(columns)}")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, not {batch_size}")
        if buffer_size < 0:
            raise ConfigError(f"buffer_size must be >= 0, not {buffer_size}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, not {seed}")
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, not {num_workers}")
        dist_rank, dist_world = _dist_rank_world()
        self.rank = dist_rank if rank is None else int(rank)
        self.world_size = dist_world if world_size is None else int(world_size)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is not in [0, world_size={self.world_size})")
        if equalize is None:
            equalize = "drop" if self.world_size > 1 else "none"
        if equalize not in ("none", "drop", "pad"):
            raise ConfigError(f"equalize must be 'none', 'drop' or 'pad', not {equalize!r}")
        self.dataset_dir = Path(dataset_dir)
        self.split = split
        self.columns = tuple(columns)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.buffer_size = int(buffer_size)
        self.drop_last = bool(drop_last)
        self.equalize: Equalize = equalize
        self.num_workers = int(num_workers)
        self.use_threads = bool(use_threads)
        # shared memory: persistent DataLoader workers see set_epoch() of the main process
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.path = split_dir(self.dataset_dir, split)
        self.units, self.specs = list_units(self.path, self.columns)
        if not self.units:
            raise SplitNotFoundError(f"split folder {self.path} holds no rows")

    @property
    def num_rows(self) -> int:
        """Rows in the split (all ranks together, before equalizing)."""
        return sum(u.num_rows for u in self.units)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, not {epoch}")
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        """The epoch the next iteration follows."""
        return int(self._epoch)

    def plan(self, epoch: int | None = None, num_workers: int | None = None) -> list[list[list[Segment]]]:
        """``plan[rank][worker]``: the row segments every shard reads in ``epoch``."""
        epoch = self.epoch if epoch is None else epoch
        num_workers = self.num_workers if num_workers is None else num_workers
        order = unit_order(len(self.units), self.seed, epoch, self.shuffle)
        return plan_shards([u.num_rows for u in self.units], order, self.world_size,
                           num_workers, self.equalize)

    def num_batches(self, num_workers: int | None = None, epoch: int | None = None) -> int:
        """Batches this rank yields in ``epoch`` (default: the current one).

        Shards get other units every epoch, so the count may differ between epochs; when
        equalizing it is the same on every rank.
        """
        total = 0
        for segments in self.plan(epoch, num_workers)[self.rank]:
            rows = sum(s.num_rows for s in segments)
            total += rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)
        return total

    def __len__(self) -> int:
        return self.num_batches()

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 0)
        epoch = self.epoch
        segments = self.plan(epoch, num_workers)[self.rank][worker]
        rng = (np.random.default_rng((self.seed, epoch, self.rank, worker))
               if self.shuffle else None)
        yield from self._iter_segments(segments, rng)

    def _iter_segments(self, segments: list[Segment],
                       rng: np.random.Generator | None) -> Iterator[Batch]:
        layout = {name: ((np.dtype(self.specs[name].dtype), self.specs[name].shape)
                         if name in self.specs else None) for name in self.columns}
        buffer = _RowBuffer(layout)
        threshold = max(self.buffer_size, self.batch_size) if rng is not None else self.batch_size
        files: OrderedDict[str, pq.ParquetFile] = OrderedDict()
        shared = get_worker_info() is not None
        for seg in segments:
            chunk = self._read(seg, files)
            buffer.add(chunk, seg.num_rows)
            while len(buffer) >= threshold:
                yield self._take(buffer, self.batch_size, rng, shared)
        while len(buffer) >= self.batch_size or (len(buffer) and not self.drop_last):
            yield self._take(buffer, min(self.batch_size, len(buffer)), rng, shared)

    def _take(self, buffer: _RowBuffer, k: int, rng: np.random.Generator | None,
              shared: bool) -> Batch:
        """Gather ``k`` rows straight into new tensors (in shared memory inside a worker, so
        handing the batch to the main process copies nothing)."""
        tensors = _empty_tensors({name: ((k, *spec.shape), np.dtype(spec.dtype))
                                  for name, spec in self.specs.items()}, shared)
        arrays = buffer.take(k, rng, {name: t.numpy() for name, t in tensors.items()})
        return {name: tensors[name] if name in tensors else arrays[name].tolist()
                for name in self.columns}

    def _read(self, seg: Segment, files: OrderedDict[str, pq.ParquetFile]) -> dict[str, np.ndarray]:
        unit = self.units[seg.unit]
        pf = files.pop(unit.path, None)
        if pf is None:
            pf = pq.ParquetFile(unit.path, memory_map=True)
        files[unit.path] = pf
        while len(files) > 8:
            files.popitem(last=False)
        table = pf.read_row_group(unit.row_group, columns=list(self.columns),
                                  use_threads=self.use_threads)
        if table.num_rows != unit.num_rows:
            raise DatasetSchemaError(
                f"{unit.path} row group {unit.row_group}: read {table.num_rows} rows, footer says "
                f"{unit.num_rows}"
            )
        chunk: dict[str, np.ndarray] = {}
        for name in self.columns:
            column = table.column(name)
            if column.num_chunks == 1:
                column = column.chunk(0)  # combine_chunks would copy even a single chunk
            if name in self.specs:
                try:
                    values = self.specs[name].decode(column)
                except ValueError as exc:
                    raise DatasetSchemaError(f"{unit.path} row group {unit.row_group}: {exc}") from None
            else:
                values = column.to_numpy(zero_copy_only=False)
            chunk[name] = values[seg.start:seg.stop]
        return chunk


_TORCH_DTYPES: dict[np.dtype, torch.dtype] = {
    np.dtype("<u2"): torch.uint16, np.dtype("|u1"): torch.uint8, np.dtype("<i2"): torch.int16,
    np.dtype("<f4"): torch.float32,
}


def _empty_tensors(layout: dict[str, tuple[tuple[int, ...], np.dtype]],
                   shared: bool) -> dict[str, torch.Tensor]:
    """Uninitialised tensors; with ``shared``, views of ONE new shared-memory storage.

    Inside a DataLoader worker the batch then crosses to the main process without a copy (as
    ``default_collate`` does), and one shared segment per batch instead of one per column
    saves the segment set-up per column.
    """
    if not shared:
        return {name: torch.empty(shape, dtype=_TORCH_DTYPES[dt]) for name, (shape, dt) in layout.items()}
    # widest dtypes first keeps every view aligned to its item size
    order = sorted(layout, key=lambda n: -layout[n][1].itemsize)
    offsets, total = {}, 0
    for name in order:
        shape, dt = layout[name]
        offsets[name] = total
        total += int(np.prod(shape)) * dt.itemsize
    storage = torch.UntypedStorage._new_shared(max(total, 1))
    out = {}
    for name, (shape, dt) in layout.items():
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))  # C order
        out[name] = torch.empty(0, dtype=_TORCH_DTYPES[dt]).set_(
            storage, offsets[name] // dt.itemsize, shape, stride)
    return out


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def make_loader(dataset_dir: str | Path, split: str, batch_size: int, num_workers: int = 0, *,
                columns: Sequence[str] = DEFAULT_COLUMNS, shuffle: bool | None = None,
                seed: int = 0, buffer_size: int = 1024, drop_last: bool = False,
                equalize: Equalize | None = None, rank: int | None = None,
                world_size: int | None = None, pin_memory: bool = False,
                prefetch_factor: int | None = None, persistent_workers: bool = True) -> DataLoader:
    """A DataLoader over :class:`PatchDataset` batches (``batch_size=None`` on the loader).

    ``shuffle`` defaults to ``True`` for the train split and ``False`` otherwise. Call
    ``loader.dataset.set_epoch(epoch)`` before each epoch; ``len(loader)`` is the number of
    batches this rank yields. Workers are persistent by default (``persistent_workers``); the
    epoch set on ``loader.dataset`` reaches them through shared memory.
    """
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, not {num_workers}")
    dataset = PatchDataset(
        dataset_dir, split, columns, batch_size=batch_size,
        shuffle=(split == "train") if shuffle is None else shuffle, seed=seed,
        buffer_size=buffer_size, drop_last=drop_last, equalize=equalize, rank=rank,
        world_size=world_size, num_workers=num_workers,
    )
    extra = {} if num_workers == 0 or prefetch_factor is None else {"prefetch_factor": prefetch_factor}
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=persistent_workers and num_workers > 0, **extra)
