"""Stage *write*: the task side of the output, Parquet files per split, metadata rows, summary.

Each task writes its own files into the staging folder (``patches/split=<split>/<name>.parquet``,
one row group per call, and ``_parts/metadata/<name>.parquet``) and returns one small summary
row; the driver merges the parts (:mod:`bigearthnet.stages.finish`). Files are written under an
``.inprogress-<attempt>`` name unique to the attempt and renamed when complete, so a killed task
leaves nothing that looks done, and a retried task never shares a file with an attempt that is
still running (the executor's Python worker can outlive a lost executor for a while); both
write the same bytes, so whichever rename comes last changes nothing.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import Transformer

from bigearthnet.constants import SPLITS
from bigearthnet.dataset.io import DirectFile, parquet_writer
from bigearthnet.dataset.layout import IN_PROGRESS, DatasetLayout
from bigearthnet.dataset.schema import METADATA_SCHEMA
from bigearthnet.dataset.stats import BandHistograms

SUMMARY_FIELDS: tuple[tuple[str, str], ...] = (
    ("task_id", "long"), ("product_id", "string"), ("status", "string"),
    ("error_type", "string"), ("error_message", "string"),
    ("n_patches", "long"), ("n_nodata", "long"), ("n_cols", "int"), ("n_rows", "int"),
    ("epsg", "int"), ("files", "string"), ("counts", "string"), ("clc", "string"),
    ("histograms", "binary"), ("cpu_s", "double"), ("cpu_sys_s", "double"), ("wall_s", "double"),
    ("label_s", "double"), ("peak_rss_mb", "double"),
)
"""(name, Spark DDL type) of the summary row every build or import task returns. ``cpu_s`` is
the task process's user + system CPU, ``cpu_sys_s`` the system (kernel) part of it: page faults
and the file system's work for the task's reads and writes."""

WGS84_SEGMENT_M = 400.0
"""Footprint edges are densified to this length before reprojection to lon/lat."""


def new_summary(task_id: int, name: str) -> dict:
    """An empty summary row for one task."""
    summary: dict = {n: None for n, _ in SUMMARY_FIELDS}
    summary.update(task_id=task_id, product_id=name, n_patches=0, n_nodata=0, label_s=0.0)
    return summary


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
HEAP_KEEP_BYTES = 1 << 30
"""What a task process's malloc keeps of the memory it frees (see :func:`keep_freed_heap`)."""
_heap_kept = False


def keep_freed_heap() -> bool:
    """Let this process's malloc keep the memory a task frees and reuse it (glibc; once).

    A build task allocates and frees about 1 GB per full-size product (raster windows, Arrow
    columns, Parquet pages). glibc hands every block over 128 KB–32 MB back to the kernel when it
    is freed (``mmap``/``munmap``, heap trimming), so the next allocation faults fresh pages in
    again: ~250,000 page faults per product. On VMs with free page reporting (this project's)
    such pages cost a host fault each, so the task's system CPU varied with the host. Raising
    the mmap and trim thresholds to :data:`HEAP_KEEP_BYTES` keeps the freed memory in the heap,
    where the next window reuses it: ~13,000 faults per product. The cost: a Python worker stays
    at its peak heap (~0.6 GB for a full tile) between tasks.

    Returns:
        whether the setting is in force (False off glibc).
    """
    global _heap_kept
    if not _heap_kept:
        try:
            mallopt = ctypes.CDLL(None).mallopt
        except (OSError, AttributeError):
            return False
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        _heap_kept = bool(mallopt(_M_MMAP_THRESHOLD, HEAP_KEEP_BYTES)
                          and mallopt(_M_TRIM_THRESHOLD, HEAP_KEEP_BYTES))
    return _heap_kept


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class SplitWriters:
    """One Parquet file per split value of one task, opened lazily.

    Args:
        layout: the (staging) dataset layout.
        name: the file name stem (product id or import chunk).
        schema: the Arrow schema with the JSON schema in its metadata.
        compression: codec of the scalar columns.
        tensor_compression: codec of the tensor columns.
        direct_io: write the files with ``O_DIRECT`` (:class:`~bigearthnet.dataset.io.DirectFile`,
            bypassing the page cache).
    """

    def __init__(self, layout: DatasetLayout, name: str, schema: pa.Schema, compression: str,
                 tensor_compression: str = "none", direct_io: bool = False):
        self.layout, self.name, self.schema = layout, name, schema
        self.compression, self.tensor_compression = compression, tensor_compression
        self.direct_io = direct_io
        self.stack = ExitStack()
        self.attempt = uuid.uuid4().hex[:12]
        self.paths: dict[str | None, Path] = {}
        self.writers: dict[str | None, pq.ParquetWriter] = {}

    def write(self, split: str | None, batch: pa.RecordBatch) -> None:
        """Append ``batch`` as one row group to the file of ``split`` (None: unpartitioned)."""
        if batch.num_rows == 0:
            return
        if split not in self.writers:
            final = self.layout.patch_file(split, self.name)
            final.parent.mkdir(exist_ok=True)  # never parents: see create_task_folders
            path = final.with_name(f"{final.name}{IN_PROGRESS}-{self.attempt}")
            self.paths[split] = path
            # the stack closes in reverse: the Parquet writer (footer) before its file
            sink = self.stack.enter_context(DirectFile(path)) if self.direct_io else path
            self.writers[split] = self.stack.enter_context(parquet_writer(
                sink, self.schema, self.compression, self.tensor_compression))
        self.writers[split].write_batch(batch, row_group_size=batch.num_rows)

    def write_kept(self, batch: pa.RecordBatch, keep: np.ndarray, split: np.ndarray,
                   counts: Counter, on_train=None, max_rows: int | None = None) -> None:
        """Write the kept rows of ``batch`` to their split files and count them.

        Args:
            batch: the strip's (or chunk's) rows.
            keep: True for the rows to write.
            split: split name per row.
            counts: gets ``kept_<split>`` added.
            on_train: called with the row indices written to ``train`` (for statistics).
            max_rows: split each split's rows into row groups of at most this many rows.
        """
        for s in SPLITS:
            sel = np.nonzero(keep & (split == s))[0]
            counts[f"kept_{s}"] += len(sel)
            step = max_rows or max(len(sel), 1)
            for start in range(0, len(sel), step):
                self.write(s, batch.take(pa.array(sel[start:start + step])))
            if s == "train" and len(sel) and on_train is not None:
                on_train(sel)

    def commit(self) -> list[Path]:
        """Close the files and give them their final names."""
        self.stack.close()
        done = []
        for _, path in sorted(self.paths.items(), key=lambda kv: str(kv[0])):
            final = path.with_name(path.name.split(IN_PROGRESS)[0])
            os.replace(path, final)
            done.append(final)
        return done

    def abort(self) -> None:
        """Close and delete the files (also when closing fails: a full disk cannot flush)."""
        try:
            self.stack.close()
        except OSError:
            pass  # the file is deleted below either way
        finally:
            for path in self.paths.values():
                path.unlink(missing_ok=True)


def wgs84_footprints(boxes: np.ndarray, epsg: int) -> list[bytes]:
    """Patch squares (tile CRS) as WKB in EPSG:4326, edges densified to follow the curvature."""
    to_wgs84 = Transformer.from_crs(epsg, 4326, always_xy=True)
    dense = shapely.segmentize(boxes, WGS84_SEGMENT_M)
    wgs = shapely.transform(dense, lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1])))
    return list(shapely.to_wkb(wgs))


def metadata_rows(cols: dict[str, pa.Array], keep: np.ndarray, split: np.ndarray,
                  flags: dict[str, np.ndarray], country: str | None,
                  footprints_wgs84: list[bytes]) -> pa.Table:
    """``metadata.parquet`` rows of the kept patches.

    Args:
        cols: patch-table columns (``patch_id``, ``patch_id_v1``, ``labels_19``, ``labels_43``,
            ``tile_id``, ``product_id``).
        keep: True for kept rows.
        split: split per row.
        flags: ``contains_seasonal_snow`` / ``contains_cloud_or_shadow`` per row.
        country: the tile's country (one for all rows), or None.
        footprints_wgs84: WKB footprint per kept row, in order.
    """
    idx = np.nonzero(keep)[0]
    take = pa.array(idx)
    n = len(idx)
    return pa.table({
        "patch_id": cols["patch_id"].take(take),
        "labels": cols["labels_19"].take(take),
        "split": pa.array(split[idx].tolist(), pa.string()),
        "country": pa.array([country] * n, pa.string()),
        "s1_name": pa.nulls(n, pa.string()),
        "s2v1_name": cols["patch_id_v1"].take(take),
        "contains_seasonal_snow": pa.array(flags["contains_seasonal_snow"][idx]),
        "contains_cloud_or_shadow": pa.array(flags["contains_cloud_or_shadow"][idx]),
        "labels_43": cols["labels_43"].take(take),
        "tile_id": cols["tile_id"].take(take),
        "product_id": cols["product_id"].take(take),
        "footprint_wgs84": pa.array(footprints_wgs84, pa.binary()),
    }, schema=METADATA_SCHEMA)


def write_metadata_part(layout: DatasetLayout, name: str, tables: list[pa.Table]) -> Path:
    """Write one task's metadata rows to ``_parts/metadata/<name>.parquet``."""
    path = layout.metadata_part(name)
    table = pa.concat_tables(tables) if tables else METADATA_SCHEMA.empty_table()
    tmp = path.with_name(f"{path.name}{IN_PROGRESS}-{uuid.uuid4().hex[:12]}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def finish_summary(summary: dict, layout: DatasetLayout, files: list[Path], counts: Counter,
                   hist: BandHistograms | None) -> None:
    """Mark a summary ``ok`` with its files, counts and train histograms."""
    summary.update(status="ok", files=json.dumps([str(f.relative_to(layout.root)) for f in files]),
                   counts=json.dumps(dict(counts), sort_keys=True))
    if hist is not None:
        summary["histograms"] = hist.to_bytes()
