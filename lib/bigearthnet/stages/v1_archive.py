"""The v1 archive as a build input: its folder reader replaces the *pixels* stage, its JSON the
*labels* stage; screen (from the exclusion lists), split and write are the build's own stages.

A BigEarthNet-S2 v1.0 patch folder holds 12 GeoTIFFs and ``*_labels_metadata.json``.
:func:`import_chunk` is one task of ``bigearthnet import-v1`` (run by
:mod:`bigearthnet.spark.import_v1`).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import shapely
from pyproj import CRS
from rasterio.errors import RasterioError

from bigearthnet.clc.nomenclature import (
    CLC_CLASSES,
    LABELS_19,
    LABELS_43,
    NAME_43_TO_NAME_19,
    multi_hot,
)
from bigearthnet.config import ImportConfig
from bigearthnet.constants import patch_px
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.schema import (
    BANDS_10M,
    BANDS_20M,
    BANDS_60M,
    IMPORTED_PATCH_SCHEMA,
    encode_tensor,
)
from bigearthnet.dataset.stats import BandHistograms
from bigearthnet.errors import (
    BigEarthNetError,
    CorruptRasterError,
    PatchMetadataError,
    RasterFormatError,
    UnknownLabelError,
)
from bigearthnet.sentinel2.bands import GROUPS
from bigearthnet.stages.screen import ExclusionLists
from bigearthnet.stages.split import SplitRule
from bigearthnet.stages.write import (
    SplitWriters,
    finish_summary,
    metadata_rows,
    new_summary,
    peak_rss_mb,
    wgs84_footprints,
    write_metadata_part,
)

V1_NAME = re.compile(r"^(S2[AB])_MSIL2A_(\d{8}T\d{5,6})_(\d+)_(\d+)$")
_CODE_BY_NAME = {c.name: f"{c.code:03d}" for c in CLC_CLASSES}
_ORDER_43 = {n: i for i, n in enumerate(LABELS_43)}
_ORDER_19 = {n: i for i, n in enumerate(LABELS_19)}


def is_patch_folder(path: Path) -> bool:
    """A v1 patch folder is named like ``S2A_MSIL2A_20170613T101031_87_48``."""
    return path.is_dir() and V1_NAME.match(path.name) is not None


def list_patch_folders(archive: Path) -> list[str]:
    """Patch folders under ``archive`` (directly or one level down), sorted by name."""
    found = [p for p in archive.iterdir() if is_patch_folder(p)]
    if not found:
        for sub in sorted(p for p in archive.iterdir() if p.is_dir()):
            found.extend(p for p in sub.iterdir() if is_patch_folder(p))
    return sorted(str(p) for p in found)


def read_patch(folder: Path) -> dict:
    """One v1 patch: pixel groups, labels and georeferencing.

    Raises:
        PatchMetadataError: the JSON is missing or unreadable.
        CorruptRasterError: a band TIFF is missing or cannot be decoded.
        RasterFormatError: a band has the wrong shape or dtype.
        UnknownLabelError: a label is not one of the 43 CLC class names.
    """
    name = folder.name
    meta_path = folder / f"{name}_labels_metadata.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as exc:
        raise PatchMetadataError(f"patch {name}: {meta_path} is missing; the v1 archive is incomplete") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise PatchMetadataError(f"patch {name}: {meta_path} cannot be read: {exc}") from exc
    groups = {}
    for res, names in GROUPS.items():
        px = patch_px(res)
        arr = np.empty((len(names), px, px), dtype=np.uint16)
        for i, band in enumerate(names):
            path = folder / f"{name}_{band}.tif"
            try:
                with rasterio.open(path) as src:
                    data = src.read(1)
            except RasterioError as exc:
                raise CorruptRasterError(f"patch {name}: cannot read {path}: {exc}") from exc
            if data.shape != (px, px) or data.dtype != np.uint16:
                raise RasterFormatError(
                    f"patch {name}: {path} is {data.shape} {data.dtype}, expected ({px}, {px}) uint16"
                )
            arr[i] = data
        groups[res] = arr
    labels = list(meta.get("labels") or [])
    unknown = [lab for lab in labels if lab not in _ORDER_43]
    if unknown:
        raise UnknownLabelError(
            f"patch {name}: {meta_path} has label(s) {unknown} that are not BigEarthNet's 43 "
            "CLC class names"
        )
    try:
        c = meta["coordinates"]
        bounds = (float(c["ulx"]), float(c["lry"]), float(c["lrx"]), float(c["uly"]))
        epsg = CRS.from_wkt(meta["projection"]).to_epsg()
        source = str(meta["tile_source"])
        when = datetime.strptime(meta["acquisition_date"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except (KeyError, TypeError, ValueError) as exc:
        raise PatchMetadataError(f"patch {name}: {meta_path} lacks or garbles {exc}") from exc
    parts = source.removesuffix(".SAFE").split("_")
    if len(parts) < 6:
        raise PatchMetadataError(f"patch {name}: {meta_path} tile_source {source!r} is not a product name")
    orbit, tile = parts[4], parts[5]
    mission, datatake, col, row = V1_NAME.match(name).groups()
    return {
        "name": name, "groups": groups, "labels_43": sorted(labels, key=_ORDER_43.__getitem__),
        "bounds": bounds, "epsg": int(epsg or 0), "orbit": orbit, "tile": tile,
        "mission": mission, "datatake": datatake, "col": int(col), "row": int(row),
        "sensing_time": when, "product_id": source.removesuffix(".SAFE"),
    }


def patch_columns(patches: list[dict]) -> dict[str, pa.Array]:
    """The columns of ``IMPORTED_PATCH_SCHEMA`` a v1 archive provides, for read patches (same
    order); the nullable rest (SCL, SCL fractions, areas) is null, the flags come from lists."""
    n = len(patches)
    labels_19 = []
    for p in patches:
        names = {NAME_43_TO_NAME_19[lab] for lab in p["labels_43"]} - {None}
        labels_19.append(sorted(names, key=_ORDER_19.__getitem__))
    tensors = {
        col.name: np.stack([p["groups"][res] for p in patches]) if n else np.empty((0, *col.shape), np.uint16)
        for col, res in ((BANDS_10M, 10), (BANDS_20M, 20), (BANDS_60M, 60))
    }
    has_nodata = np.zeros(n, dtype=bool)
    for arr in tensors.values():
        has_nodata |= (arr.reshape(n, -1) == 0).any(axis=1)
    boxes = shapely.box(*np.array([p["bounds"] for p in patches]).T) if n else []
    return {
        "patch_id": pa.array([f"{p['mission']}_MSIL2A_{p['datatake']}_N9999_{p['orbit']}_{p['tile']}_"
                              f"{p['col']}_{p['row']}" for p in patches], pa.string()),
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
        "clc_codes": pa.array([sorted(_CODE_BY_NAME[lab] for lab in p["labels_43"]) for p in patches],
                              pa.list_(pa.string())),
    }


IMPORT_ROW_GROUP = 128
"""Rows per Parquet row group of an imported split file."""


def import_chunk(task_id: int, folders: list[str], staging: Path, cfg: ImportConfig) -> dict:
    """One import task: read a chunk of patch folders, screen, split and write them.

    Returns:
        The task's summary row (``SUMMARY_FIELDS`` of :mod:`bigearthnet.stages.write`).
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    name = f"part-{task_id:05d}"
    summary = new_summary(task_id, f"chunk-{task_id:05d}")
    layout = DatasetLayout(staging)
    schema = IMPORTED_PATCH_SCHEMA.to_arrow()
    writers = SplitWriters(layout, name, schema, cfg.compression)
    try:
        patches = [read_patch(Path(f)) for f in folders]
        cols = patch_columns(patches)
        names = cols["patch_id_v1"].to_pylist()
        exclusions = ExclusionLists.load(cfg.exclude_lists)
        listed = exclusions.is_listed(names)
        flags = exclusions.flags(names)
        cols["contains_seasonal_snow"] = pa.array(flags["contains_seasonal_snow"])
        cols["contains_cloud_or_shadow"] = pa.array(flags["contains_cloud_or_shadow"])
        rule = SplitRule.create("official" if cfg.splits_dir else "random", cfg.split_seed,
                                cfg.split_fractions, cfg.splits_dir)
        split = rule.assign(cols["patch_id"].to_pylist(), names, cols["col"], cols["row"], 0, 0)
        for f in schema:  # what the v1 archive cannot provide is null (IMPORTED_PATCH_SCHEMA)
            if f.name not in cols and f.nullable:
                cols[f.name] = pa.nulls(len(patches), f.type)
        batch = pa.RecordBatch.from_arrays([cols[c] for c in schema.names], schema=schema)
        keep = ~listed & np.array([s is not None for s in split])
        counts: Counter = Counter()
        counts["dropped_lists"] = int(listed.sum())
        counts["dropped_not_in_split"] = int((~listed & ~keep).sum())
        hist = BandHistograms()

        def add_train(sel: np.ndarray) -> None:
            for res in (10, 20, 60):
                hist.add_group(res, np.stack([patches[i]["groups"][res] for i in sel]))

        writers.write_kept(batch, keep, split, counts, on_train=add_train,
                           max_rows=IMPORT_ROW_GROUP)
        idx = np.nonzero(keep)[0]
        footprints: list[bytes] = [b""] * len(idx)
        epsgs = np.array([patches[i]["epsg"] for i in idx], dtype=np.int64)
        for epsg in np.unique(epsgs):
            at = np.nonzero(epsgs == epsg)[0]
            boxes = shapely.box(*np.array([patches[idx[k]]["bounds"] for k in at]).T)
            for k, wkb in zip(at, wgs84_footprints(boxes, int(epsg))):
                footprints[k] = wkb
        files = writers.commit()
        write_metadata_part(layout, name, [metadata_rows(cols, keep, split, flags, None, footprints)])
        finish_summary(summary, layout, files, counts, hist)
        summary.update(n_patches=len(patches), n_nodata=int(cols["has_nodata"].true_count),
                       n_cols=0, n_rows=0, clc="{}")
    except BigEarthNetError as exc:
        writers.abort()
        summary.update(status="failed", error_type=type(exc).__name__, error_message=str(exc))
    summary.update(cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0,
                   peak_rss_mb=peak_rss_mb())
    return summary
