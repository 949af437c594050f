"""Torch loader over one split of a built dataset: row-group sharding, seeded shuffling, batches.

Layout read (written by ``bigearthnet build``)::

    DATASET/_SUCCESS
    DATASET/patches/split=<split>/<product_id>.parquet      (LABELED_PATCH_SCHEMA)

**Units.** The unit of work is one Parquet row group of one file. Units are enumerated in a
fixed order (file name, then row-group index), so every process computes the same list from
the footers alone.

**Sharding.** There are ``world_size × W`` shards, one per (DDP rank, worker) pair, where
``W = max(num_workers, 1)``; every rank must use the same ``num_workers`` (as torchrun does).
A worker is a reader thread or a DataLoader worker process (see **Workers**); both kinds read
the same shards. Each epoch, the unit order is permuted with
``np.random.default_rng((seed, epoch))`` (identity when ``shuffle=False``) and the units are
dealt, in that order, to the shard that has the fewest rows so far (ties: the lowest shard
index, shard ``s = worker × world_size + rank``). Every unit goes to exactly one shard, so the
union of all shards is the split, without duplicates; shard row counts differ by at most the
largest row group. So with ``equalize="none"`` every worker count reads the same rows per
epoch, each once; the order (and, with ``"drop"``/``"pad"``, the rows dropped or repeated)
depends on the worker count, as it does with any DataLoader.

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
``patch_id``. Each batch is made of new tensors that the consumer owns (slot batches of
worker processes excepted, see **Workers**, which are never overwritten while referenced).
Large tensor columns (``DIRECT_READ_MIN_BYTES`` or more per row: ``bands_10m``,
``bands_20m``) stored the way the build stores them (plain, uncompressed, required) are not
decoded by pyarrow: the page headers of their column chunks give every value's position in the
file (checked against the page sizes, cached per dataset), and the drawn rows are read with
``os.preadv`` straight into the batch tensor, one copy from the page cache, every value's
4-byte length prefix checked. Other columns, and column chunks stored otherwise (compressed,
dictionary-encoded, nullable), are read with ``ParquetFile.read_row_group(i, columns=...)``,
viewed as numpy arrays on the Arrow buffers (no per-row Python) and gathered with one
``np.take`` per column and row group into the batch. Both paths give the same bytes in the
same order. The shuffle buffer holds the positions of directly read columns, not their bytes.

**Workers.** :func:`make_loader` returns a :class:`PatchLoader` (a DataLoader):

- ``num_workers=0``: the consuming thread reads.
- ``num_workers=N``, ``worker_type="process"`` (the default): DataLoader worker processes
  (persistent by default). They write each batch into a slot of a per-worker ring of
  shared-memory batches that the main process keeps mapped, and a slot is reused only once
  nothing in the main process references the batch that was handed out from it (see
  ``_SlotTable``). A new shared-memory segment per batch, what DataLoader does otherwise,
  halved a worker's throughput on this workload: segment creation and zeroing, page faults on
  both sides, a file descriptor sent over a new socket connection per batch.
- ``num_workers=N``, ``worker_type="thread"``: ``N`` reader threads of this process, one per
  worker shard, each with its own shuffle buffer, yield batches through a queue of
  ``prefetch_factor`` (default ``THREAD_PREFETCH``) batches each; the consumer takes them
  round robin over the shards that still have batches. Nothing is pickled or mapped; with
  ``pin_memory`` (and CUDA) the readers write page-locked batches directly; an abandoned
  iteration stops its threads; an error in a reader is raised in the consumer.

Both kinds read the same shards and yield the same batches in the same order (DataLoader's
round robin over its workers). Threads spend less CPU per batch, but share one GIL with each
other and with the training loop: each reader takes and drops it around every ``preadv`` and
numpy call, and on a busy machine (other jobs, or the training step itself) a thread waiting
for the GIL waits for the scheduler too. bench/loader.py measured, on the shared 2-core VM,
one reader thread as fast as one worker process, but two reader threads far below two worker
processes; hence the default.

**Epochs.** Call :meth:`PatchDataset.set_epoch` before iterating each epoch. The epoch lives
in a one-element shared-memory tensor, so it also reaches persistent DataLoader workers (which
:func:`make_loader` uses: they keep their warmed-up memory and open nothing anew per epoch).
"""

from __future__ import annotations

import atexit
import functools
import heapq
import itertools
import os
import queue
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.objectstore import local_dataset
from bigearthnet.dataset.schema import (
    TensorColumn,
    labeled_schema,
    tensor_columns_from_metadata,
)
from bigearthnet.errors import (
    BigEarthNetError,
    ConfigError,
    CorruptDatasetError,
    DatasetSchemaError,
    IncompleteDatasetError,
    InputNotFoundError,
    SplitNotFoundError,
    error_from_name,
)

DEFAULT_COLUMNS: tuple[str, ...] = ("bands_10m", "bands_20m", "bands_60m", "multi_hot_43")
"""The tensors S-CNN-All needs with the 43-class labels."""

Equalize = Literal["none", "drop", "pad"]

_REBUILD = "rebuild the dataset (bigearthnet build --overwrite), or restore the file from a good copy"


def _damaged(path: str | Path, what: str, exc: BaseException) -> CorruptDatasetError:
    """The named error for a dataset file that cannot be read as its footer promises."""
    return CorruptDatasetError(f"{path}: {what} ({type(exc).__name__}: {exc}); the file is "
                               f"truncated or damaged: {_REBUILD}")
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
    """The folder of one split of a complete dataset (an ``s3://`` dataset is read from its
    local copy, :func:`bigearthnet.dataset.objectstore.local_dataset`).

    Raises:
        InputNotFoundError: ``dataset_dir`` does not exist.
        IncompleteDatasetError: it has no ``_SUCCESS`` marker.
        SplitNotFoundError: it has no ``patches/split=<split>`` folder.
    """
    root = local_dataset(dataset_dir)
    layout = DatasetLayout(root)
    if not root.is_dir():
        raise InputNotFoundError(f"dataset folder {root} does not exist")
    if not layout.success.is_file():
        raise IncompleteDatasetError(
            f"dataset {root} has no {layout.success.name} marker: its build did not finish; "
            "rebuild it (bigearthnet build --overwrite)"
        )
    path = layout.split_dir(split)
    if not path.is_dir():
        found = layout.splits_present()
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
        try:
            meta = pq.read_metadata(f)
            schema = meta.schema.to_arrow_schema()
        except (pa.ArrowException, OSError) as exc:
            raise _damaged(f, "not a readable Parquet file", exc) from None
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
        col = labeled_schema(reference_maps=True)[name]  # reference maps: builds, import-v2
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


DIRECT_READ_MIN_BYTES = 8192
"""Tensor columns with at least this many bytes per row are read with ``os.preadv`` straight
into the batch when their column chunks are plain (see :meth:`PatchDataset._read`)."""

# Parquet page types and the PLAIN encoding (parquet.thrift)
_DATA_PAGE, _DATA_PAGE_V2, _PLAIN = 0, 3, 0


class _NotPlain(Exception):
    """A column chunk that the direct reader does not handle (pyarrow reads it)."""


class _CompactThrift:
    """Just enough of Thrift's compact protocol to read a Parquet PageHeader."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise EOFError
        b = self.data[self.pos]
        self.pos += 1
        return b

    def _varint(self) -> int:
        out = shift = 0
        while True:
            b = self._byte()
            out |= (b & 0x7F) << shift
            if b < 0x80:
                return out
            shift += 7

    def _zigzag(self) -> int:
        n = self._varint()
        return (n >> 1) ^ -(n & 1)

    def struct(self) -> dict[int, object]:
        """The fields of a struct: id -> int, bool, bytes, list or dict (nested struct)."""
        fields: dict[int, object] = {}
        last = 0
        while True:
            head = self._byte()
            if head == 0:
                return fields
            delta, kind = head >> 4, head & 0x0F
            last = last + delta if delta else self._zigzag()
            fields[last] = self._value(kind)

    def _value(self, kind: int, in_list: bool = False) -> object:
        if kind in (1, 2):  # bool: in the field header, or one byte in a list
            return self._byte() == 1 if in_list else kind == 1
        if kind == 3:
            return self._byte()
        if kind in (4, 5, 6):
            return self._zigzag()
        if kind == 7:
            self.pos += 8
            return None
        if kind == 8:
            n = self._varint()
            self.pos += n
            if self.pos > len(self.data):
                raise EOFError
            return self.data[self.pos - n:self.pos]
        if kind in (9, 10):
            head = self._byte()
            n = head >> 4
            if n == 15:
                n = self._varint()
            return [self._value(head & 0x0F, in_list=True) for _ in range(n)]
        if kind == 11:
            n = self._varint()
            if not n:
                return []
            types = self._byte()
            return [(self._value(types >> 4, True), self._value(types & 0x0F, True)) for _ in range(n)]
        if kind == 12:
            return self.struct()
        raise _NotPlain(f"unknown thrift type {kind}")


def _page_header(fd: int, pos: int, limit: int) -> tuple[dict[int, object], int]:
    """The PageHeader at byte ``pos`` and its length (reads more while it is cut short)."""
    size = 256
    while True:
        data = os.pread(fd, min(size, limit - pos), pos)
        try:
            reader = _CompactThrift(data)
            return reader.struct(), reader.pos
        except EOFError:
            if size >= limit - pos:
                raise _NotPlain("page header runs past the column chunk") from None
            size *= 16


def _plain_value_offsets(meta: pq.FileMetaData, row_group: int, name: str, nbytes: int,
                         fd: int) -> np.ndarray | None:
    """Offsets of the 4-byte length prefixes of a column chunk's values, if it is a required
    BYTE_ARRAY column stored uncompressed with PLAIN data pages whose values are all
    ``nbytes`` long (checked against the page sizes here, and value by value when read);
    ``None`` otherwise. Walks the chunk's page headers; no value is read.
    """
    leaf = next((i for i in range(len(meta.schema)) if meta.schema.column(i).path == name), None)
    if leaf is None:
        return None
    desc, cc = meta.schema.column(leaf), meta.row_group(row_group).column(leaf)
    if (desc.physical_type != "BYTE_ARRAY" or desc.max_definition_level
            or desc.max_repetition_level or cc.compression != "UNCOMPRESSED"
            or cc.has_dictionary_page or cc.file_path
            or any("DICTIONARY" in e for e in cc.encodings)):
        return None
    stride = 4 + nbytes
    pos, end, left, parts = cc.data_page_offset, cc.data_page_offset + cc.total_compressed_size, cc.num_values, []
    try:
        while left > 0:
            if pos >= end:
                raise _NotPlain("column chunk ends before its values")
            header, length = _page_header(fd, pos, end)
            kind, size = header.get(1), header.get(3)
            if kind == _DATA_PAGE:
                page = header.get(5)
                levels = 0
            elif kind == _DATA_PAGE_V2:
                page = header.get(8)
                if not isinstance(page, dict) or page.get(2, 0):
                    raise _NotPlain("nulls")
                levels = int(page.get(5, 0)) + int(page.get(6, 0))
            else:
                raise _NotPlain(f"page type {kind}")
            if not isinstance(page, dict) or page.get(2 if kind == _DATA_PAGE else 4) != _PLAIN:
                raise _NotPlain("not PLAIN")
            n = int(page.get(1, -1))
            if (not isinstance(size, int) or size != header.get(2)
                    or n < 0 or size != levels + n * stride):
                raise _NotPlain("page size is not its values' size")
            start = pos + length + levels
            parts.append(start + stride * np.arange(n, dtype=np.int64))
            left -= n
            pos += length + size
    except (_NotPlain, ValueError, TypeError):  # unexpected pages, or not page headers at all
        return None
    if left != 0 or cc.num_values != meta.row_group(row_group).num_rows:
        return None
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _preadv_full(fd: int, views: list[memoryview], offset: int, total: int) -> bool:
    """``os.preadv`` until the ``total`` bytes of ``views`` are filled (a read may return
    less); False if the file ends first."""
    done = os.preadv(fd, views, offset)
    while done < total:
        skip, rest = done, []
        for view in views:
            if skip >= len(view):
                skip -= len(view)
            else:
                rest.append(view[skip:])
                skip = 0
        views, offset, total = rest, offset + done, total - done
        done = os.preadv(fd, views, offset)
        if done <= 0:
            return False
    return True


class _OpenFiles:
    """The files one reader has open: ParquetFile objects (the 8 last used) and raw file
    descriptors (the 64 last used) for the direct reads."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._parquet: OrderedDict[str, pq.ParquetFile] = OrderedDict()
        self._fds: OrderedDict[int, int] = OrderedDict()

    def parquet(self, path: str) -> pq.ParquetFile:
        pf = self._parquet.pop(path, None)
        if pf is None:
            pf = pq.ParquetFile(path, memory_map=True)
        self._parquet[path] = pf
        while len(self._parquet) > 8:
            self._parquet.popitem(last=False)
        return pf

    def fd(self, index: int) -> int:
        fd = self._fds.pop(index, None)
        if fd is None:
            fd = os.open(self.paths[index], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._fds[index] = fd
        while len(self._fds) > 64:
            os.close(self._fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])
        self._parquet.clear()

    def read_located(self, at: np.ndarray, dst: np.ndarray) -> None:
        """Read the values at ``at`` (file index, prefix offset) into the rows of ``dst``, one
        ``preadv`` per run of consecutive values, and check every length prefix."""
        m = len(dst)
        if m == 0:
            return
        if not dst.flags.c_contiguous:
            tmp = np.empty_like(dst, order="C")
            self.read_located(at, tmp)
            dst[...] = tmp
            return
        nbytes = dst.nbytes // m
        stride = nbytes + 4
        rows = memoryview(dst.reshape(-1).view(np.uint8))
        prefix = np.empty(m, dtype="<i4")
        prefixes = memoryview(prefix.view(np.uint8))
        # runs of values stored one after the other take one call each (at most 500 values:
        # IOV_MAX is 1024); shuffled rows are mostly runs of one
        cut = np.flatnonzero((np.diff(at[:, 1]) != stride) | (np.diff(at[:, 0]) != 0)) + 1
        bounds = [0, *cut.tolist(), m]
        files, offsets = at[:, 0].tolist(), at[:, 1].tolist()
        last, fd = -1, -1
        for j, k in itertools.pairwise(bounds):
            if files[j] != last:
                last, fd = files[j], self.fd(files[j])
            while j < k:
                e = min(k, j + 500)
                iov = [view for t in range(j, e)
                       for view in (prefixes[4 * t:4 * t + 4], rows[t * nbytes:(t + 1) * nbytes])]
                try:
                    full = _preadv_full(fd, iov, offsets[j], (e - j) * stride)
                except OSError as exc:
                    raise _damaged(self.paths[last], "reading tensor values failed", exc) from None
                if not full:
                    raise CorruptDatasetError(
                        f"{self.paths[last]}: the file is shorter than its footer says: it was "
                        f"truncated; {_REBUILD}")
                j = e
        if not np.all(prefix == nbytes):
            bad = int(np.flatnonzero(prefix != nbytes)[0])
            raise DatasetSchemaError(
                f"{self.paths[files[bad]]}: a tensor value at byte {offsets[bad]} holds "
                f"{int(prefix[bad])} bytes, not {nbytes}: the file is damaged; {_REBUILD}")


class _Located:
    """Rows of a tensor column left in their file: ``at[i] = (file index, byte offset of the
    value's 4-byte length prefix)``; read straight into the batch when drawn."""

    __slots__ = ("at",)

    def __init__(self, at: np.ndarray) -> None:
        self.at = at

    def __getitem__(self, index: slice) -> _Located:
        return _Located(self.at[index])


class _RowBuffer:
    """Rows of several decoded row groups, drawn from in batches without per-row Python.

    Chunks are dicts of column arrays (numpy views on Arrow buffers, or object arrays of str)
    or of :class:`_Located` rows, which ``read_located`` reads into the output when drawn (a
    compaction merely moves their positions). ``live`` lists (chunk, row) pairs not yet
    drawn, in arrival order.
    """

    def __init__(self, columns: dict[str, tuple[np.dtype, tuple[int, ...]] | None],
                 read_located: Callable[[np.ndarray, np.ndarray], None] | None = None) -> None:
        self.columns = columns  # name -> (dtype, shape) for tensors, None for strings
        self.read_located = read_located  # fills rows from _Located file positions
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
                out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray | _Located]:
        # ci is non-decreasing (live is kept in arrival order and positions are sorted),
        # so each chunk contributes one contiguous slice of the output.
        k = len(ci)
        out = dict(out or {})
        bounds = np.flatnonzero(np.diff(ci)) + 1
        starts, stops = np.r_[0, bounds], np.r_[bounds, k]
        located = set()  # columns gathered as file positions (compaction of located rows)
        for name, spec in self.columns.items():
            if name in out:
                continue
            if all(isinstance(self.chunks[int(ci[a])][name], _Located) for a in starts):
                located.add(name)
                out[name] = np.empty((k, 2), dtype=np.int64)
            else:
                out[name] = (np.empty(k, dtype=object) if spec is None
                             else np.empty((k, *spec[1]), dtype=spec[0]))
        to_read: dict[str, list[tuple[int, int, np.ndarray]]] = {}  # located rows to read
        for a, b in zip(starts.tolist(), stops.tolist()):
            chunk = self.chunks[int(ci[a])]
            rows = ri[a:b]
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            contiguous = hi - lo == b - a
            for name in self.columns:
                src = chunk[name]
                if isinstance(src, _Located) and name not in located:
                    to_read.setdefault(name, []).append(
                        (a, b, src.at[lo:hi] if contiguous else src.at[rows]))
                    continue
                if isinstance(src, _Located):
                    src = src.at
                if contiguous:
                    out[name][a:b] = src[lo:hi]
                else:
                    np.take(src, rows, axis=0, out=out[name][a:b], mode="clip")
        for name, parts in to_read.items():
            if len(parts) > 1 and sum(b - a for a, b, _ in parts) == k:  # every row: one call
                self.read_located(np.concatenate([at for _, _, at in parts]), out[name])
            else:
                for a, b, at in parts:
                    self.read_located(at, out[name][a:b])
        for name in located:
            out[name] = _Located(out[name])
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
        direct_read: read the large tensor columns (``DIRECT_READ_MIN_BYTES`` or more per row)
            of files that store them plain and uncompressed straight into the batch with
            ``os.preadv`` (one copy) instead of through ``read_row_group`` (two); same bytes.

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
                 use_threads: bool = False, direct_read: bool = True) -> None:
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
        self.dataset_dir = local_dataset(dataset_dir)
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
        self._slots: _SlotTable | None = None  # set in PatchLoader's worker processes
        self.path = split_dir(self.dataset_dir, split)
        self.units, self.specs = list_units(self.path, self.columns)
        if not self.units:
            raise SplitNotFoundError(f"split folder {self.path} holds no rows")
        self._paths = sorted({u.path for u in self.units})
        self._path_index = {path: i for i, path in enumerate(self._paths)}
        # large tensor columns are read straight from the files into the batch when the files
        # store them plain (see _read); per (unit, column): value offsets, or None
        self._direct = ([name for name in self.columns if name in self.specs
                         and self.specs[name].nbytes >= DIRECT_READ_MIN_BYTES]
                        if direct_read and hasattr(os, "preadv") else [])
        self._locations: dict[tuple[int, str], np.ndarray | None] = {}

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
        if info is None:
            return self.iter_shard(0, 0)
        # a DataLoader worker process: batches go into shared memory (recycled slots when the
        # loader set up a slot table, see PatchLoader), so they reach the main process uncopied
        alloc: _Alloc = "shared"
        if self._slots is not None:
            ring = getattr(self, "_ring", None)
            if ring is None or ring.worker != info.id:
                ring = self._ring = _SlotRing(self._slots, info.id, self._batch_layout())
            ring.new_iteration()
            alloc = ring
        return _carry_errors(self.iter_shard(info.id, info.num_workers, _alloc=alloc))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_ring", None)  # worker-local
        return state

    def iter_shard(self, worker: int, num_workers: int, epoch: int | None = None, *,
                   _alloc: _Alloc = "plain") -> Iterator[Batch]:
        """Batches of shard ``(rank, worker)`` of ``max(num_workers, 1)`` worker shards.

        This is what DataLoader worker ``worker`` of ``num_workers`` yields in ``epoch``
        (default: the current one); the reader threads of :class:`PatchLoader` call it. The
        batches are fresh tensors that the consumer owns.
        """
        if not 0 <= worker < max(num_workers, 1):
            raise ConfigError(f"worker {worker} is not in [0, {max(num_workers, 1)})")
        epoch = self.epoch if epoch is None else epoch
        segments = self.plan(epoch, num_workers)[self.rank][worker]
        rng = (np.random.default_rng((self.seed, epoch, self.rank, worker))
               if self.shuffle else None)
        return self._iter_segments(segments, rng, _alloc)

    def _iter_segments(self, segments: list[Segment], rng: np.random.Generator | None,
                       alloc: _Alloc) -> Iterator[Batch]:
        layout = {name: ((np.dtype(self.specs[name].dtype), self.specs[name].shape)
                         if name in self.specs else None) for name in self.columns}
        files = _OpenFiles(self._paths)
        buffer = _RowBuffer(layout, files.read_located)
        threshold = max(self.buffer_size, self.batch_size) if rng is not None else self.batch_size
        try:
            for seg in segments:
                chunk = self._read(seg, files)
                buffer.add(chunk, seg.num_rows)
                while len(buffer) >= threshold:
                    yield self._take(buffer, self.batch_size, rng, alloc)
            while len(buffer) >= self.batch_size or (len(buffer) and not self.drop_last):
                yield self._take(buffer, min(self.batch_size, len(buffer)), rng, alloc)
        finally:
            files.close()

    def _batch_layout(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape and dtype of every tensor column of a full batch."""
        return {name: ((self.batch_size, *spec.shape), np.dtype(spec.dtype))
                for name, spec in self.specs.items()}

    def _take(self, buffer: _RowBuffer, k: int, rng: np.random.Generator | None,
              alloc: _Alloc) -> Batch | _SlotBatch:
        """Gather ``k`` rows straight into the batch's tensors: new ones (pinned, or in shared
        memory inside a worker, so handing the batch to the main process copies nothing), or
        a free slot of the worker's ring."""
        slot = alloc.acquire(k) if isinstance(alloc, _SlotRing) and self.specs else None
        if slot is not None:
            tensors = slot[1]
        else:
            kind = alloc if isinstance(alloc, str) else "shared"
            tensors = _empty_tensors({name: ((k, *shape[1:]), dt)
                                      for name, (shape, dt) in self._batch_layout().items()}, kind)
        arrays = buffer.take(k, rng, {name: t.numpy() for name, t in tensors.items()})
        batch = {name: tensors[name] if name in tensors else arrays[name].tolist()
                 for name in self.columns}
        if slot is not None:
            return _SlotBatch(alloc.table.token, alloc.worker, slot[0], batch)
        return batch

    def _read(self, seg: Segment, files: _OpenFiles) -> dict[str, np.ndarray | _Located]:
        """The segment's rows: large plain tensor columns as file positions (see _locate),
        the other columns read with ``read_row_group`` and viewed as numpy arrays."""
        try:
            return self._read_unchecked(seg, files)
        except BigEarthNetError:
            raise
        except (pa.ArrowException, OSError, EOFError) as exc:
            unit = self.units[seg.unit]
            raise _damaged(unit.path, f"reading row group {unit.row_group} failed", exc) from None

    def _read_unchecked(self, seg: Segment, files: _OpenFiles) -> dict[str, np.ndarray | _Located]:
        unit = self.units[seg.unit]
        pf = files.parquet(unit.path)
        chunk: dict[str, np.ndarray | _Located] = {}
        for name in self._direct:
            offsets = self._locate(seg.unit, name, pf, files)
            if offsets is not None:
                at = np.empty((seg.num_rows, 2), dtype=np.int64)
                at[:, 0] = self._path_index[unit.path]
                at[:, 1] = offsets[seg.start:seg.stop]
                chunk[name] = _Located(at)
        rest = [name for name in self.columns if name not in chunk]
        if not rest:
            return chunk
        table = pf.read_row_group(unit.row_group, columns=rest, use_threads=self.use_threads)
        if table.num_rows != unit.num_rows:
            raise DatasetSchemaError(
                f"{unit.path} row group {unit.row_group}: read {table.num_rows} rows, footer says "
                f"{unit.num_rows}"
            )
        for name in rest:
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

    def _locate(self, u: int, name: str, pf: pq.ParquetFile, files: _OpenFiles) -> np.ndarray | None:
        """Byte offsets of every value of column ``name`` in unit ``u`` (at its 4-byte length
        prefix), or ``None`` when the column chunk is not plain, uncompressed and required
        (then it is read with pyarrow). Cached: the files of a complete dataset do not change.
        """
        key = (u, name)
        if key not in self._locations:
            unit = self.units[u]
            self._locations[key] = _plain_value_offsets(
                pf.metadata, unit.row_group, name, self.specs[name].nbytes,
                files.fd(self._path_index[unit.path]))
        return self._locations[key]

_TORCH_DTYPES: dict[np.dtype, torch.dtype] = {
    np.dtype("<u2"): torch.uint16, np.dtype("|u1"): torch.uint8, np.dtype("<i2"): torch.int16,
    np.dtype("<f4"): torch.float32,
}

def _packed_offsets(layout: dict[str, tuple[tuple[int, ...], np.dtype]]) -> tuple[dict[str, int], int]:
    """Byte offsets of the columns packed in one buffer (widest dtypes first, so every view is
    aligned to its item size) and the total size."""
    offsets, total = {}, 0
    for name in sorted(layout, key=lambda n: -layout[n][1].itemsize):
        shape, dt = layout[name]
        offsets[name] = total
        total += int(np.prod(shape)) * dt.itemsize
    return offsets, total


def _views(storage: torch.UntypedStorage, layout: dict[str, tuple[tuple[int, ...], np.dtype]],
           offsets: dict[str, int]) -> dict[str, torch.Tensor]:
    """C-contiguous tensors of ``layout`` on ``storage`` at byte ``offsets``."""
    out = {}
    for name, (shape, dt) in layout.items():
        stride = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
        out[name] = torch.empty(0, dtype=_TORCH_DTYPES[dt]).set_(
            storage, offsets[name] // dt.itemsize, shape, stride)
    return out


def _empty_tensors(layout: dict[str, tuple[tuple[int, ...], np.dtype]],
                   kind: str = "plain") -> dict[str, torch.Tensor]:
    """Uninitialised tensors: ``plain``, ``pinned`` (page-locked, for fast copies to the GPU), or
    ``shared``: views of ONE new shared-memory storage.

    Inside a DataLoader worker a shared batch crosses to the main process without a copy (as
    ``default_collate`` does), and one shared segment per batch instead of one per column
    saves the segment set-up per column. (A new segment per batch still costs its page
    zeroing, faults and mapping on both sides; the slot rings of :class:`PatchLoader` avoid it.)
    """
    if kind != "shared":
        pin = kind == "pinned"
        return {name: torch.empty(shape, dtype=_TORCH_DTYPES[dt], pin_memory=pin)
                for name, (shape, dt) in layout.items()}
    offsets, total = _packed_offsets(layout)
    return _views(torch.UntypedStorage._new_shared(max(total, 1)), layout, offsets)


# --------------------------------------------------------------------------------------------
# Recycled shared-memory slots for DataLoader worker processes.
#
# A worker that allocates a new shared-memory segment per batch pays, per batch: the segment's
# creation (shm_open, ftruncate, fallocate: the kernel zeroes every page), a page fault per
# 4 KiB page when the batch is written (~40 per 160 KB row), a file descriptor passed to the
# main process over a new Unix socket connection, its mapping there and the unmapping on both
# sides. That halves a worker's throughput on this workload (bench/loader.py). So
# PatchLoader gives every worker process a ring of slots (one shared storage holding a full
# batch each), created on demand up to ``prefetch_factor * num_workers + 3`` per worker, and
# recycles them safely:
#
# - each (worker, slot) has a state in a shared tensor made by the main process: FREE, BUSY
#   (written by the worker, not yet handed to the consumer) or HANDED (to the consumer), and
#   the loader iteration that wrote it;
# - the worker writes a batch only into a FREE slot, marks it BUSY and yields a _SlotBatch
#   whose tensors are views of the slot (pickled as the slot's file descriptor; the main
#   process keeps every slot mapped, so torch maps it once and later finds it in its cache);
# - the main process (_SlotBatches) marks the slot HANDED when it hands the batch to the
#   consumer, and FREE again, at a later ``next()``, once nothing but the slot table
#   references the slot's storage (torch's use count of the storage): a batch the consumer
#   still holds, whole or any view of it, is never overwritten, however long it is held;
# - with ``pin_memory``, DataLoader's pin-memory thread copies the batch into page-locked
#   memory (_SlotBatch.pin_memory) and frees the slot right after the copy;
# - batches that DataLoader discards without handing them out (the rest of an epoch left
#   early: persistent workers drain it when the next one starts) stay BUSY; when the next
#   iteration has started (DataLoader has then received everything the workers sent before),
#   the main process frees the BUSY slots written by earlier iterations;
# - with no FREE slot and the ring full, the worker falls back to a new shared segment, so a
#   consumer that holds many batches slows the loader down but never blocks or corrupts it.
#
# Only the main process changes a slot from BUSY or HANDED to FREE, and only the worker
# changes it from FREE to BUSY; so no state is ever written by both sides at once.

_FREE, _BUSY, _HANDED = 0, 1, 2
_SLOT_TABLES: weakref.WeakValueDictionary[int, _SlotTable] = weakref.WeakValueDictionary()


class _SlotTable:
    """Slot states of one loader's worker processes, and the main process's side of them."""

    def __init__(self, num_workers: int, slots_per_worker: int) -> None:
        self.token = int.from_bytes(os.urandom(8), "little") >> 1
        shape = (num_workers, slots_per_worker)
        self.shared = {"state": torch.zeros(shape, dtype=torch.uint8).share_memory_(),
                       "iteration": torch.zeros(shape, dtype=torch.int64).share_memory_(),
                       "current": torch.zeros((), dtype=torch.int64).share_memory_()}
        self._main_side()
        _SLOT_TABLES[self.token] = self

    def _main_side(self) -> None:
        self.state = self.shared["state"].numpy()
        self.iteration = self.shared["iteration"].numpy()
        self.storages: dict[tuple[int, int], torch.UntypedStorage] = {}
        self.held: list[tuple[int, int]] = []
        self.lock = threading.Lock()  # the pin-memory thread frees slots too
        self.handed_out = self.fresh = 0  # batches handed out from slots / from new segments

    def __getstate__(self) -> dict:
        return {"token": self.token, "shared": self.shared}  # what the workers need

    def __setstate__(self, state: dict) -> None:
        self.token, self.shared = state["token"], state["shared"]
        self._main_side()

    def start_iteration(self) -> None:
        """Before the loader's next iteration starts: the workers tag their slots with it."""
        self.shared["current"] += 1

    def reclaim(self) -> None:
        """After the iteration started (DataLoader drained the previous one): free the slots
        written by earlier iterations and never handed out."""
        with self.lock:
            stale = (self.state == _BUSY) & (self.iteration < int(self.shared["current"]))
            self.state[stale] = _FREE

    def _keep(self, item: _SlotBatch) -> torch.UntypedStorage:
        """Keep the slot mapped in this process (torch then finds it in its cache next time)."""
        storage = _storage_of(item.batch)
        key = (item.worker, item.slot)
        known = self.storages.get(key)
        if known is None or known.data_ptr() != storage.data_ptr():
            self.storages[key] = known = storage
        return known

    def hand_out(self, item: _SlotBatch) -> Batch:
        """The consumer's batch: views of the slot, which stays HANDED until it is released."""
        with self.lock:
            self._keep(item)
            self.state[item.worker, item.slot] = _HANDED
            self.held.append((item.worker, item.slot))
            self.handed_out += 1
        return item.batch

    def release(self) -> None:
        """Free every HANDED slot that only this table still references."""
        with self.lock:
            keep = []
            for key in self.held:
                storage = self.storages[key]
                # one C++ reference (this Python object) and no Python reference but the
                # dict's, `storage` and getrefcount's argument
                if torch._C._storage_Use_Count(storage._cdata) == 1 and sys.getrefcount(storage) <= 3:
                    self.state[key] = _FREE
                else:
                    keep.append(key)
            self.held = keep

    def pinned(self, item: _SlotBatch) -> Batch:
        """Copy the batch into page-locked memory and free its slot (pin-memory thread)."""
        out = {name: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
               for name, v in item.batch.items()}
        with self.lock:
            self._keep(item)
            item.batch = {}
            self.state[item.worker, item.slot] = _FREE
            self.handed_out += 1
        return out


class _SlotRing:
    """Worker-process side: the slots of one worker (see the comment above _SlotTable)."""

    def __init__(self, table: _SlotTable, worker: int,
                 layout: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        self.table, self.worker, self.layout = table, worker, layout
        self.offsets, self.nbytes = _packed_offsets(layout)
        self.state = table.state[worker]
        self.iteration_of = table.iteration[worker]
        self.slots: list[dict[str, torch.Tensor]] = []
        self.current = 0

    def new_iteration(self) -> None:
        """Called when the worker starts an iteration: its slots are tagged with it."""
        self.current = int(self.table.shared["current"])

    def acquire(self, k: int) -> tuple[int, dict[str, torch.Tensor]] | None:
        """A FREE slot (created if the ring is not full) marked BUSY, as ``k``-row views."""
        free = np.flatnonzero(self.state[:len(self.slots)] == _FREE)
        if len(free):
            s = int(free[0])
        elif len(self.slots) < len(self.state):
            s = len(self.slots)
            storage = torch.UntypedStorage._new_shared(max(self.nbytes, 1))
            self.slots.append(_views(storage, self.layout, self.offsets))
        else:
            return None
        self.iteration_of[s] = self.current  # before BUSY: reclaim() reads them in that order
        self.state[s] = _BUSY
        return s, {name: t[:k] for name, t in self.slots[s].items()}


_Alloc = Literal["plain", "shared", "pinned"] | _SlotRing


def _storage_of(batch: Batch) -> torch.UntypedStorage:
    """The storage of a slot batch (every slot batch has a tensor column)."""
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            return value.untyped_storage()
    raise AssertionError("a slot batch without tensors")


@dataclass
class _SlotBatch:
    """A batch written into slot ``slot`` of worker ``worker`` (what a worker yields)."""

    token: int
    worker: int
    slot: int
    batch: Batch

    def pin_memory(self, device: object = None) -> Batch:
        """Called by DataLoader's pin-memory thread: a page-locked copy; frees the slot."""
        table = _SLOT_TABLES.get(self.token)
        if table is None:  # the loader is gone
            return {name: (v.pin_memory() if isinstance(v, torch.Tensor) else v)
                    for name, v in self.batch.items()}
        return table.pinned(self)


@dataclass(frozen=True)
class _WorkerError:
    """A named error raised in a DataLoader worker process, sent to the main process as a
    batch (its name and message), so that the consumer raises the same error with the same
    message instead of DataLoader's re-raise that embeds the worker's traceback text."""

    name: str
    message: str


def _carry_errors(batches: Iterator[Batch]) -> Iterator[Batch | _WorkerError]:
    """A worker's batches; a named error ends them with a :class:`_WorkerError`."""
    try:
        yield from batches
    except BigEarthNetError as exc:
        yield _WorkerError(type(exc).__name__, str(exc))


class _SlotBatches:
    """Main-process iterator over a worker-process DataLoader using slot rings."""

    def __init__(self, batches: Iterator, table: _SlotTable, n_batches: int) -> None:
        self._batches, self._table, self._len = batches, table, n_batches

    def __iter__(self) -> _SlotBatches:
        return self

    def __len__(self) -> int:
        return self._len

    def __next__(self) -> Batch:
        self._table.release()
        item = next(self._batches)
        if isinstance(item, _WorkerError):
            raise error_from_name(item.name, item.message)
        if isinstance(item, _SlotBatch):
            return self._table.hand_out(item)
        if isinstance(item, dict) and any(isinstance(v, torch.Tensor) for v in item.values()):
            self._table.fresh += 1
        return item


def _use_slots(table: _SlotTable, worker_id: int) -> None:
    """``worker_init_fn`` of PatchLoader's worker processes: write batches into slots."""
    info = get_worker_info()
    if info is not None:
        info.dataset._slots = table


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


WorkerType = Literal["thread", "process"]

THREAD_PREFETCH = 4
"""Batches each reader thread may hold ready by default (DataLoader's default for worker
processes is 2): a row group yields several batches at once, and a deeper queue lets one
reader go on with its next row group while the consumer takes the other readers' batches."""


class _Failure:
    """An exception raised in a reader thread, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def _read_shard(batches: Iterator[Batch], out: queue.Queue, stop: threading.Event) -> None:
    """Body of one reader thread: put the shard's batches into ``out``, then ``_END``."""
    try:
        for batch in batches:
            while True:
                if stop.is_set():
                    return
                try:
                    out.put(batch, timeout=0.05)
                    break
                except queue.Full:
                    pass
            del batch  # the consumer owns it now
        item: object = _END
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
        item = _Failure(exc)
    finally:
        batches.close()  # closes the shard's files now, in this thread
    while not stop.is_set():
        try:
            out.put(item, timeout=0.05)
            return
        except queue.Full:
            pass


_READERS: dict[threading.Thread, threading.Event] = {}
"""Reader threads not known to have finished, and their stop events."""


@atexit.register
def _stop_readers() -> None:
    """Stop and join the reader threads before the interpreter finalizes: a daemon thread
    still running then (say, freeing a tensor) is killed inside C++ code, which aborts."""
    for stop in list(_READERS.values()):
        stop.set()
    for thread in list(_READERS):
        thread.join(timeout=10)


def _start_reader(batches: Iterator[Batch], out: queue.Queue, stop: threading.Event,
                  name: str) -> threading.Thread:
    def run() -> None:
        try:
            _read_shard(batches, out, stop)
        finally:
            _READERS.pop(threading.current_thread(), None)

    thread = threading.Thread(target=run, daemon=True, name=name)
    _READERS[thread] = stop
    thread.start()
    return thread


class _ThreadedBatches:
    """One epoch of a thread-mode :class:`PatchLoader`: one reader thread per worker shard,
    each filling a queue of ``prefetch`` batches; batches are taken round robin over the
    shards that still have some, the order in which DataLoader takes them from its workers.
    """

    def __init__(self, dataset: PatchDataset, num_workers: int, prefetch: int,
                 alloc: _Alloc) -> None:
        epoch = dataset.epoch
        self._stop = threading.Event()
        self._queues: list[queue.Queue] = [queue.Queue(prefetch) for _ in range(num_workers)]
        self._active = list(range(num_workers))
        self._next = 0
        self._len = dataset.num_batches(num_workers, epoch)
        # The threads hold no reference to self: an abandoned iterator is collected, which
        # stops them (each exits within 50 ms, at its next queue operation).
        self._finalizer = weakref.finalize(self, self._stop.set)
        self._threads = [_start_reader(dataset.iter_shard(w, num_workers, epoch, _alloc=alloc),
                                       self._queues[w], self._stop, f"patch-reader-{w}")
                         for w in range(num_workers)]

    def __iter__(self) -> _ThreadedBatches:
        return self

    def __len__(self) -> int:
        return self._len

    def __next__(self) -> Batch:
        while self._active:
            w = self._active[self._next]
            item = self._queues[w].get()
            if item is _END:
                self._threads[w].join()  # it is returning: no reader outlives its epoch
                del self._active[self._next]
                self._next = self._next % len(self._active) if self._active else 0
                continue
            if isinstance(item, _Failure):
                self.close()
                raise item.exc
            self._next = (self._next + 1) % len(self._active)
            return item
        raise StopIteration

    def close(self) -> None:
        """Stop the reader threads and wait for them."""
        self._active = []
        self._finalizer()
        for thread in self._threads:
            thread.join(timeout=10)


class PatchLoader(DataLoader):
    """The DataLoader that :func:`make_loader` returns: its ``num_workers`` readers are
    DataLoader worker processes writing into recycled shared-memory slots
    (``worker_type="process"``, the default) or threads of this process
    (``worker_type="thread"``). See the module docstring, **Workers**.

    ``loader.workers`` and ``loader.worker_type`` say which; ``loader.num_workers`` is
    DataLoader's own count of worker processes (0 with threads).
    """

    def __init__(self, dataset: PatchDataset, num_workers: int = 0, *,
                 worker_type: WorkerType = "process", pin_memory: bool = False,
                 prefetch_factor: int | None = None, persistent_workers: bool = True) -> None:
        if worker_type not in ("thread", "process"):
            raise ConfigError(f"worker_type must be 'thread' or 'process', not {worker_type!r}")
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, not {num_workers}")
        if prefetch_factor is not None and prefetch_factor < 1:
            raise ConfigError(f"prefetch_factor must be >= 1, not {prefetch_factor}")
        processes = num_workers if worker_type == "process" else 0
        extra = {"prefetch_factor": prefetch_factor} if processes and prefetch_factor else {}
        super().__init__(dataset, batch_size=None, num_workers=processes, pin_memory=pin_memory,
                         persistent_workers=persistent_workers and processes > 0, **extra)
        dataset.num_workers = num_workers  # the shard count len() assumes
        self.workers = num_workers
        self.worker_type: WorkerType = worker_type
        self.reader_prefetch = THREAD_PREFETCH if prefetch_factor is None else prefetch_factor
        self._slot_table: _SlotTable | None = None

    def __iter__(self) -> Iterator[Batch]:
        dataset: PatchDataset = self.dataset
        if self.num_workers > 0:  # worker processes
            if self._slot_table is None or not self.persistent_workers:
                # before the workers start (persistent ones start at the first iteration)
                self._slot_table = _SlotTable(self.num_workers,
                                              self.prefetch_factor * self.num_workers + 3)
                self.worker_init_fn = functools.partial(_use_slots, self._slot_table)
            self._slot_table.start_iteration()
            batches = super().__iter__()  # persistent workers: drains the last iteration
            self._slot_table.reclaim()
            n_batches = len(dataset)
            if hasattr(batches, "_IterableDataset_len_called"):
                # DataLoader checks the count against len() of the epoch its persistent
                # iterator was made in; shards, hence counts, change with the epoch
                batches._IterableDataset_len_called = n_batches
            return _SlotBatches(batches, self._slot_table, n_batches)
        alloc: _Alloc = "pinned" if self.pin_memory and torch.cuda.is_available() else "plain"
        if self.workers == 0:
            return dataset.iter_shard(0, 0, _alloc=alloc)
        return _ThreadedBatches(dataset, self.workers, self.reader_prefetch, alloc)


def make_loader(dataset_dir: str | Path, split: str, batch_size: int, num_workers: int = 0, *,
                columns: Sequence[str] = DEFAULT_COLUMNS, shuffle: bool | None = None,
                seed: int = 0, buffer_size: int = 1024, drop_last: bool = False,
                equalize: Equalize | None = None, rank: int | None = None,
                world_size: int | None = None, pin_memory: bool = False,
                prefetch_factor: int | None = None, persistent_workers: bool = True,
                worker_type: WorkerType = "process") -> PatchLoader:
    """A DataLoader over :class:`PatchDataset` batches (``batch_size=None`` on the loader).

    ``shuffle`` defaults to ``True`` for the train split and ``False`` otherwise. Call
    ``loader.dataset.set_epoch(epoch)`` before each epoch; ``len(loader)`` is the number of
    batches this rank yields.

    ``num_workers`` readers are DataLoader worker processes (``worker_type="process"``, the
    default), which write into recycled shared-memory slots, or threads of this process
    (``worker_type="thread"``); both read the same shards and yield the same batches in the
    same order (module docstring, **Workers**). ``prefetch_factor`` is the number of batches
    each reader may hold ready (default: DataLoader's 2 for processes, ``THREAD_PREFETCH`` for
    threads). Worker processes are persistent by default (``persistent_workers``); the epoch
    set on ``loader.dataset`` reaches them through shared memory. Threads need no
    persistence: they start per epoch in microseconds and share the dataset's cached layout.

    Which to use: processes keep their throughput when the machine is busy (the training
    step, other jobs) and scale with their number; threads cost no extra process memory and
    less CPU per batch, and with ``pin_memory`` they write page-locked batches directly, while
    processes' batches are copied once more into page-locked memory by DataLoader's
    pin-memory thread.
    """
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, not {num_workers}")
    dataset = PatchDataset(
        dataset_dir, split, columns, batch_size=batch_size,
        shuffle=(split == "train") if shuffle is None else shuffle, seed=seed,
        buffer_size=buffer_size, drop_last=drop_last, equalize=equalize, rank=rank,
        world_size=world_size, num_workers=num_workers,
    )
    return PatchLoader(dataset, num_workers, worker_type=worker_type, pin_memory=pin_memory,
                       prefetch_factor=prefetch_factor, persistent_workers=persistent_workers)
