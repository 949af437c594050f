"""What the imports of folder archives share: reading a patch's band files, the patch-table
columns of read patches, and the chunk's screen/split/write tail.

``import-v1`` (:mod:`bigearthnet.stages.v1_archive`) and ``import-v2``
(:mod:`bigearthnet.stages.v2_archive`) differ in where labels, splits and georeferencing come
from; both hand a list of read patches (dicts) to :func:`archive_columns` and
:func:`write_chunk`, which run the build's own *write* stage.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import rasterio
import shapely
from rasterio.errors import RasterioError

from bigearthnet.clc.nomenclature import LABELS_19, NAME_43_TO_NAME_19, multi_hot
from bigearthnet.constants import patch_px
from bigearthnet.dataset.io import check_output
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.schema import BANDS_10M, BANDS_20M, BANDS_60M, encode_tensor
from bigearthnet.dataset.stats import BandHistograms
from bigearthnet.errors import (
    BigEarthNetError,
    CorruptRasterError,
    InputNotFoundError,
    PatchMissingError,
    RasterFormatError,
    UnsupportedStorageError,
)
from bigearthnet.sentinel2.bands import GROUPS
from bigearthnet.stages.write import (
    SUMMARY_FIELDS,
    SplitWriters,
    finish_summary,
    metadata_rows,
    wgs84_footprints,
    write_metadata_part,
)

IMPORT_ROW_GROUP = 128
"""Rows per Parquet row group of an imported split file."""

_ORDER_19 = {n: i for i, n in enumerate(LABELS_19)}

_FIX = "re-download the archive, or restore the file from a good copy"

log = logging.getLogger(__name__)

ARCHIVE_SUMMARY_FIELDS = SUMMARY_FIELDS + (("problems", "string"),)
"""An import task's summary row: the build's, plus the JSON list of the problems it found."""

PROBLEM_KINDS: dict[str, str] = {
    "PatchMissingError": "missing",
    "RasterFormatError": "wrong_size",
    "CorruptRasterError": "unreadable",
    "GeoreferenceMismatchError": "georeference",
    "UnknownClcCodeError": "bad_reference_map",
    "ArchiveMetadataError": "bad_metadata",
    "PatchMetadataError": "bad_metadata",
    "UnknownLabelError": "bad_metadata",
    "ProductNameError": "bad_metadata",
}
"""Error type -> the kind of broken patch it is counted as (``patches_<kind>`` in the manifest)."""

BROKEN_KINDS: tuple[str, ...] = tuple(dict.fromkeys(PROBLEM_KINDS.values()))
"""Broken patches: not imported; an error under ``on_error: fail``."""

SHOWN = 5
"""Names of each kind of problem shown in a log line (the manifest names them all)."""


def problem(patch_id: str, kind: str, message: str, error_type: str | None = None) -> dict:
    """One named problem of an archive (a broken patch, an extra folder or file, an exclusion)."""
    return {"patch_id": patch_id, "kind": kind, "error_type": error_type, "message": message}


def problem_of(patch_id: str, exc: BigEarthNetError) -> dict:
    """The problem record of a broken patch."""
    name = type(exc).__name__
    return problem(patch_id, PROBLEM_KINDS.get(name, "broken"), str(exc), name)


def read_patches(items: list, read: Callable[[Any], Any], patch_id: Callable[[Any], str],
                 on_error: str) -> tuple[list[tuple[Any, Any]], list[dict]]:
    """Read each item of a task's work list, leaving the broken ones out under ``on_error: skip``.

    Args:
        items: the work list (plan rows, patch folders).
        read: reads one item; raises a :class:`~bigearthnet.errors.BigEarthNetError` when the
            patch is broken.
        patch_id: the name of an item's patch in problem records.
        on_error: ``fail`` or ``skip``.

    Returns:
        ``(item, read(item))`` of the sound items in order, and a :func:`problem_of` record per
        broken one.

    Raises:
        BigEarthNetError: the first broken patch's error, under ``on_error: fail``.
    """
    done, problems = [], []
    for item in items:
        try:
            done.append((item, read(item)))
        except BigEarthNetError as exc:
            if on_error == "fail":
                raise
            problems.append(problem_of(patch_id(item), exc))
    return done, problems


def failures_of(problems: list[dict]) -> list[dict]:
    """The manifest's ``failures``: the broken patches among ``problems``, sorted by patch id."""
    return sorted(({k: p[k] for k in ("patch_id", "kind", "error_type", "message")}
                   for p in problems if p["kind"] in BROKEN_KINDS), key=lambda p: p["patch_id"])


def failure_counts(failures: list[dict]) -> dict[str, int]:
    """The manifest's counts of broken patches: ``patches_failed`` and ``patches_<kind>``."""
    kinds = Counter(f["kind"] for f in failures)
    return {"patches_failed": len(failures), **{f"patches_{k}": kinds[k] for k in BROKEN_KINDS}}


def archive_report(job: str, problems: list[dict], n_listed: int, kinds: tuple[str, ...]) -> dict:
    """The manifest's ``archive`` section: counts and names by kind; logs one warning per kind.

    Args:
        job: the command, for the log (``import-v1``).
        problems: :func:`problem` records.
        n_listed: the patches the archive lists.
        kinds: the kinds always counted (0 when none).
    """
    by_kind: dict[str, list[dict]] = {k: [] for k in kinds}
    for p in sorted(problems, key=lambda p: (p["kind"], p["patch_id"])):
        by_kind.setdefault(p["kind"], []).append(p)
    for kind, items in by_kind.items():
        if items:
            names = ", ".join(p["patch_id"] for p in items[:SHOWN])
            more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
            log.warning("%s: %d %s: %s%s (all named in manifest.json)", job, len(items),
                        kind.replace("_", " "), names, more)
    return {
        "patches_listed": n_listed,
        "problem_counts": {k: len(v) for k, v in by_kind.items()},
        "problems": {k: [p["patch_id"] for p in v] for k, v in by_kind.items()},
    }


def local_only(*paths: str) -> None:
    """Folder archives are read and written on a filesystem (a mount of the bucket works).

    Raises:
        UnsupportedStorageError: an ``s3://`` path.
    """
    for path in paths:
        if str(path).startswith("s3://"):
            raise UnsupportedStorageError(
                f"{path}: import-v2 and export read and write folder archives on a filesystem; "
                "copy the archive to a local or mounted folder (or mount the bucket) and pass that")


def job_paths(archive: str, what: str, out: str, overwrite: bool) -> tuple[Path, Path]:
    """An import's archive folder and resolved output, checked before any work.

    Raises:
        UnsupportedStorageError: an ``s3://`` path.
        InputNotFoundError: the archive folder does not exist.
        OutputExistsError: the output exists and ``overwrite`` is not set.
    """
    local_only(archive, out)
    folder = Path(archive)
    if not folder.is_dir():
        raise InputNotFoundError(f"{what} folder {folder} does not exist")
    resolved = Path(out).resolve()
    check_output(resolved, overwrite)
    return folder, resolved


@dataclass(frozen=True)
class Georef:
    """Where a band file says it lies."""

    band: str
    epsg: int | None
    bounds: tuple[float, float, float, float]


def read_band_groups(patch: str, band_paths: dict[str, Path]) -> tuple[dict[int, np.ndarray], list[Georef]]:
    """The 12 bands of one patch as ``{10: (4,120,120), 20: (6,60,60), 60: (2,20,20)}`` uint16.

    Args:
        patch: the patch name (for messages).
        band_paths: band name -> GeoTIFF.

    Returns:
        The groups (in :data:`~bigearthnet.sentinel2.bands.GROUPS` order) and each band's
        georeferencing.

    Raises:
        PatchMissingError: a band file does not exist.
        CorruptRasterError: a band file cannot be decoded.
        RasterFormatError: a band has the wrong size or dtype.
    """
    groups, georefs = {}, []
    for res, names in GROUPS.items():
        px = patch_px(res)
        arr = np.empty((len(names), px, px), dtype=np.uint16)
        for i, band in enumerate(names):
            path = band_paths[band]
            if not path.is_file():
                raise PatchMissingError(f"patch {patch}: band file {path} is missing; {_FIX}")
            try:
                with rasterio.open(path) as src:
                    data = src.read(1)
                    epsg = src.crs.to_epsg() if src.crs else None
                    georefs.append(Georef(band, epsg, tuple(src.bounds)))
            except RasterioError as exc:
                raise CorruptRasterError(
                    f"patch {patch}: cannot read {path}: {exc}. The file is truncated or corrupt; "
                    f"{_FIX}") from exc
            if data.shape != (px, px) or data.dtype != np.uint16:
                raise RasterFormatError(
                    f"patch {patch}: {path} is {data.shape} {data.dtype}, expected ({px}, {px}) "
                    f"uint16 for a {res} m band; {_FIX}"
                )
            arr[i] = data
        groups[res] = arr
    return groups, georefs


def names_19(labels_43: list[str]) -> list[str]:
    """The 19-class names of 43-class names, in official order."""
    names = {NAME_43_TO_NAME_19[lab] for lab in labels_43} - {None}
    return sorted(names, key=_ORDER_19.__getitem__)


def archive_columns(patches: list[dict]) -> dict[str, pa.Array]:
    """The patch-table columns an archive provides, for read patches (same order).

    Every patch dict holds ``patch_id``, ``name`` (v1 name), ``product_id``, ``tile``,
    ``sensing_time``, ``col``, ``row``, ``epsg``, ``bounds`` (tile CRS), ``groups`` (from
    :func:`read_band_groups`), ``labels_43`` (official order) and ``clc_codes``; optionally
    ``labels_19`` (else derived from ``labels_43``). Columns the caller does not add stay null
    (:func:`write_chunk`).
    """
    n = len(patches)
    labels_19 = [p["labels_19"] if p.get("labels_19") is not None else names_19(p["labels_43"])
                 for p in patches]
    tensors = {
        col.name: np.stack([p["groups"][res] for p in patches]) if n else np.empty((0, *col.shape), np.uint16)
        for col, res in ((BANDS_10M, 10), (BANDS_20M, 20), (BANDS_60M, 60))
    }
    has_nodata = np.zeros(n, dtype=bool)
    for arr in tensors.values():
        has_nodata |= (arr == 0).any(axis=(1, 2, 3))  # also for a chunk of no sound patch
    boxes = shapely.box(*np.array([p["bounds"] for p in patches]).T) if n else []
    return {
        "patch_id": pa.array([p["patch_id"] for p in patches], pa.string()),
        "patch_id_v1": pa.array([p["name"] for p in patches], pa.string()),
        "product_id": pa.array([p["product_id"] for p in patches], pa.string()),
        "tile_id": pa.array([p["tile"] for p in patches], pa.string()),
        "sensing_time": pa.array([p["sensing_time"] for p in patches], pa.timestamp("us", tz="UTC")),
        "col": pa.array([p["col"] for p in patches], pa.int16()),
        "row": pa.array([p["row"] for p in patches], pa.int16()),
        "epsg": pa.array([p["epsg"] for p in patches], pa.int32()),
        "footprint": pa.array(list(shapely.to_wkb(boxes)) if n else [], pa.binary()),
        **{name: encode_tensor(arr, col) for (name, arr), col in
           zip(tensors.items(), (BANDS_10M, BANDS_20M, BANDS_60M))},
        "has_nodata": pa.array(has_nodata),
        "labels_43": pa.array([p["labels_43"] for p in patches], pa.list_(pa.string())),
        "labels_19": pa.array(labels_19, pa.list_(pa.string())),
        "multi_hot_43": pa.array([multi_hot(p["labels_43"], 43).tobytes() for p in patches], pa.binary()),
        "multi_hot_19": pa.array([multi_hot(lab, 19).tobytes() for lab in labels_19], pa.binary()),
        "clc_codes": pa.array([p["clc_codes"] for p in patches], pa.list_(pa.string())),
    }


def write_chunk(summary: dict, writers: SplitWriters, layout: DatasetLayout, name: str,
                patches: list[dict], cols: dict[str, pa.Array], split: np.ndarray,
                flags: dict[str, np.ndarray], listed: np.ndarray, counts: Counter,
                metadata_columns: dict[str, pa.Array] | None = None) -> None:
    """Write a chunk of read patches: the kept rows to their split files, train histograms,
    metadata rows with WGS84 footprints; complete ``summary``.

    Args:
        summary: the task's summary row (:func:`bigearthnet.stages.write.new_summary`).
        writers: the task's split writers (their schema decides the columns; the nullable
            columns missing from ``cols`` are written as nulls).
        layout: the staging dataset.
        name: the task's file stem.
        patches: the read patches (dicts as for :func:`archive_columns`).
        cols: their patch-table columns.
        split: split per patch (``None``: in no split, dropped as ``not_in_split``).
        flags: ``contains_seasonal_snow`` / ``contains_cloud_or_shadow`` per patch.
        listed: True where an exclusion list drops the patch (``lists``).
        counts: the task's counts, completed here.
        metadata_columns: ``metadata.parquet`` columns to take per patch instead of the
            defaults (e.g. ``country``, ``s1_name`` from an archive's metadata).
    """
    schema = writers.schema
    for f in schema:  # what the archive cannot provide is null (IMPORTED_PATCH_SCHEMA)
        if f.name not in cols and f.nullable:
            cols[f.name] = pa.nulls(len(patches), f.type)
    batch = pa.RecordBatch.from_arrays([cols[c] for c in schema.names], schema=schema)
    keep = ~listed & np.array([s is not None for s in split], dtype=bool)
    counts["dropped_lists"] += int(listed.sum())
    counts["dropped_not_in_split"] += int((~listed & ~keep).sum())
    hist = BandHistograms()

    def add_train(sel: np.ndarray) -> None:
        for res in (10, 20, 60):
            hist.add_group(res, np.stack([patches[i]["groups"][res] for i in sel]))

    writers.write_kept(batch, keep, split, counts, on_train=add_train, max_rows=IMPORT_ROW_GROUP)
    idx = np.nonzero(keep)[0]
    footprints: list[bytes] = [b""] * len(idx)
    epsgs = np.array([patches[i]["epsg"] for i in idx], dtype=np.int64)
    for epsg in np.unique(epsgs):
        at = np.nonzero(epsgs == epsg)[0]
        boxes = shapely.box(*np.array([patches[idx[k]]["bounds"] for k in at]).T)
        for k, wkb in zip(at, wgs84_footprints(boxes, int(epsg))):
            footprints[k] = wkb
    files = writers.commit()
    meta = metadata_rows(cols, keep, split, flags, None, footprints)
    for column, values in (metadata_columns or {}).items():
        meta = meta.set_column(meta.schema.get_field_index(column), column,
                               values.take(pa.array(idx, pa.int64())))
    write_metadata_part(layout, name, [meta])
    finish_summary(summary, layout, files, counts, hist)
    summary.update(n_patches=len(patches), n_nodata=int(cols["has_nodata"].true_count),
                   n_cols=0, n_rows=0, clc="{}")
