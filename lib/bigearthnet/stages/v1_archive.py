"""The v1 archive as a build input: its folder reader replaces the *pixels* stage, its JSON the
*labels* stage; screen (from the exclusion lists), split and write are the build's own stages.

A BigEarthNet-S2 v1.0 patch folder holds 12 GeoTIFFs and ``*_labels_metadata.json``.
:func:`import_chunk` is one task of ``bigearthnet import-v1`` (run by
:mod:`bigearthnet.spark.import_v1`); under ``on_error: skip`` it leaves broken patch folders out
and names them, like import-v2 (:func:`bigearthnet.stages.archive.read_patches`).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from pyproj import CRS
from pyproj.exceptions import CRSError

from bigearthnet.clc.nomenclature import CLC_CLASSES, LABELS_43
from bigearthnet.config import ImportConfig
from bigearthnet.dataset.archives import V1Layout
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.schema import IMPORTED_PATCH_SCHEMA
from bigearthnet.errors import BigEarthNetError, PatchMetadataError, UnknownLabelError
from bigearthnet.sentinel2.bands import BAND_NAMES
from bigearthnet.stages.archive import archive_columns, read_band_groups, read_patches, write_chunk
from bigearthnet.stages.screen import ExclusionLists
from bigearthnet.stages.split import SplitRule
from bigearthnet.stages.write import SplitWriters, new_summary, peak_rss_mb

V1_NAME = re.compile(r"^(S2[AB])_MSIL2A_(\d{8}T\d{5,6})_(\d+)_(\d+)$")
_CODE_BY_NAME = {c.name: f"{c.code:03d}" for c in CLC_CLASSES}
_ORDER_43 = {n: i for i, n in enumerate(LABELS_43)}


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
        PatchMissingError: a band TIFF is missing.
        CorruptRasterError: a band TIFF cannot be decoded.
        RasterFormatError: a band has the wrong shape or dtype.
        UnknownLabelError: a label is not one of the 43 CLC class names.
    """
    name = folder.name
    meta_path = V1Layout.labels_path(folder)
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as exc:
        raise PatchMetadataError(f"patch {name}: {meta_path} is missing; the v1 archive is "
                                 "incomplete: re-download it, or restore the file") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise PatchMetadataError(f"patch {name}: {meta_path} cannot be read ({exc}); re-download "
                                 "the archive, or restore the file") from exc
    if not isinstance(meta, dict):
        raise PatchMetadataError(f"patch {name}: {meta_path} holds no JSON object; re-download "
                                 "the archive, or restore the file")
    groups, _ = read_band_groups(name, {b: V1Layout.band_path(folder, b) for b in BAND_NAMES})
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
    except (KeyError, TypeError, ValueError, CRSError) as exc:
        raise PatchMetadataError(f"patch {name}: {meta_path} lacks or garbles {exc}; re-download "
                                 "the archive, or restore the file") from exc
    parts = source.removesuffix(".SAFE").split("_")
    if len(parts) < 6:
        raise PatchMetadataError(f"patch {name}: {meta_path} tile_source {source!r} is not a product "
                                 "name; re-download the archive, or restore the file")
    orbit, tile = parts[4], parts[5]
    mission, datatake, col, row = V1_NAME.match(name).groups()
    labels_43 = sorted(labels, key=_ORDER_43.__getitem__)
    return {
        "patch_id": f"{mission}_MSIL2A_{datatake}_N9999_{orbit}_{tile}_{col}_{row}",
        "name": name, "groups": groups, "labels_43": labels_43,
        "clc_codes": sorted(_CODE_BY_NAME[lab] for lab in labels_43),
        "bounds": bounds, "epsg": int(epsg or 0), "tile": tile, "col": int(col), "row": int(row),
        "sensing_time": when, "product_id": source.removesuffix(".SAFE"),
    }


def import_chunk(task_id: int, folders: list[str], staging: Path, cfg: ImportConfig) -> dict:
    """One import task: read a chunk of patch folders, screen, split and write them.

    A broken patch fails the task under ``on_error: fail``; under ``skip`` it is left out and
    named (by its folder name) in the summary's ``problems``.

    Returns:
        The task's summary row (:data:`~bigearthnet.stages.archive.ARCHIVE_SUMMARY_FIELDS`).
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    name = f"part-{task_id:05d}"
    summary = new_summary(task_id, f"chunk-{task_id:05d}")
    layout = DatasetLayout(staging)
    writers = SplitWriters(layout, name, IMPORTED_PATCH_SCHEMA.to_arrow(), cfg.compression,
                           direct_io=cfg.direct_io)
    problems: list[dict] = []
    try:
        done, problems = read_patches(folders, lambda f: read_patch(Path(f)), lambda f: Path(f).name,
                                      cfg.on_error)
        patches = [patch for _, patch in done]
        cols = archive_columns(patches)
        names = cols["patch_id_v1"].to_pylist()
        exclusions = ExclusionLists.load(cfg.exclude_lists)
        flags = exclusions.flags(names)
        cols["contains_seasonal_snow"] = pa.array(flags["contains_seasonal_snow"])
        cols["contains_cloud_or_shadow"] = pa.array(flags["contains_cloud_or_shadow"])
        rule = SplitRule.create("official" if cfg.splits_dir else "random", cfg.split_seed,
                                cfg.split_fractions, cfg.splits_dir)
        split = rule.assign(cols["patch_id"].to_pylist(), names, cols["col"], cols["row"], 0, 0)
        write_chunk(summary, writers, layout, name, patches, cols, split, flags,
                    exclusions.is_listed(names), Counter())
    except BigEarthNetError as exc:
        writers.abort()
        summary.update(status="failed", error_type=type(exc).__name__, error_message=str(exc))
    summary.update(cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0,
                   peak_rss_mb=peak_rss_mb(), problems=json.dumps(problems))
    return summary
