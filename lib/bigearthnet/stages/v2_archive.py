"""The reBEN (BigEarthNet v2.0) archive as a build input: its folder reader replaces the *pixels*
stage, ``metadata.parquet`` and the reference maps the *labels* stage, the metadata's ``split``
column the *split* stage; write is the build's own (:func:`bigearthnet.stages.archive.write_chunk`).

Where each column comes from:

* pixels: the 12 band GeoTIFFs of ``BigEarthNet-S2/<tile>/<patch_id>/``, each at its native size;
  ``epsg`` and ``footprint`` from their CRS and bounds (all 12 must agree);
* ``labels_19``: the metadata's ``labels``; ``labels_43``: the metadata's ``labels_43`` where
  the archive has it (our exports do), else the 43-class names of the codes in the reference
  map; ``clc_codes``, ``clc_area_fractions``, ``unlabeled_fraction`` and ``reference_map``: the
  reference map (:func:`bigearthnet.stages.labels.labels_reben`);
* splits, ``country``, ``s1_name``, ``s2v1_name`` and the snow/cloud flags: the metadata;
  ``product_id``: the metadata's where present, else the patch's tile folder (reBEN ids carry
  no full product name).

What real archives hold is tolerated, counted and named (:func:`plan_import`, the driver side,
and :func:`import_chunk`, one task): patches the metadata lists but the disk lacks, folders and
files the metadata does not know, band files of the wrong size, unreadable or mis-georeferenced
files, bad metadata rows, and the patches reBEN excluded for snow or cloud
(``metadata_for_patches_with_snow_cloud_or_shadow.parquet``).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from rasterio.errors import RasterioError

from bigearthnet.clc.nomenclature import LABELS_19, LABELS_43
from bigearthnet.config import ImportV2Config
from bigearthnet.constants import PATCH_SIZE_PX, SPLITS
from bigearthnet.dataset.archives import RebenLayout, reben_tile_folder
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.schema import IMPORTED_V2_PATCH_SCHEMA, REFERENCE_MAP, encode_tensor
from bigearthnet.errors import (
    ArchiveMetadataError,
    BigEarthNetError,
    CorruptRasterError,
    GeoreferenceMismatchError,
    InputNotFoundError,
    PatchMissingError,
    RasterFormatError,
)
from bigearthnet.sentinel2.bands import BAND_NAMES
from bigearthnet.sentinel2.naming import parse_patch_name_v2
from bigearthnet.stages.archive import (
    BROKEN_KINDS,
    archive_columns,
    problem,
    read_band_groups,
    read_patches,
    write_chunk,
)
from bigearthnet.stages.labels import labels_reben
from bigearthnet.stages.write import SplitWriters, new_summary, peak_rss_mb

REQUIRED_COLUMNS: tuple[str, ...] = ("patch_id", "labels", "split")
"""The metadata columns an import cannot do without."""

PLAN_SCHEMA = pa.schema([
    ("patch_id", pa.string()), ("labels", pa.list_(pa.string())), ("split", pa.string()),
    ("country", pa.string()), ("s1_name", pa.string()), ("s2v1_name", pa.string()),
    ("contains_seasonal_snow", pa.bool_()), ("contains_cloud_or_shadow", pa.bool_()),
    ("labels_43", pa.list_(pa.string())), ("product_id", pa.string()),
])
"""The work list the driver hands the tasks (one row group per task): the metadata's columns,
null where the archive lacks an optional one."""

WARNING_KINDS: tuple[str, ...] = ("extra_on_disk", "extra_file", "excluded_snow_cloud")
"""Not errors: folders and files the metadata does not list (not imported, or ignored), and the
patches reBEN excluded (not imported)."""

COUNT_KEYS: dict[str, str] = {
    **{k: f"patches_{k}" for k in BROKEN_KINDS},
    "extra_on_disk": "patches_extra_on_disk", "extra_file": "files_extra",
    "excluded_snow_cloud": "patches_excluded_snow_cloud",
}
"""Kind -> its count in the manifest's ``counts``."""

_INDEX_19 = {n: i for i, n in enumerate(LABELS_19)}
_INDEX_43 = {n: i for i, n in enumerate(LABELS_43)}


def read_metadata(path: Path) -> pa.Table:
    """``metadata.parquet`` as :data:`PLAN_SCHEMA` (missing optional columns null).

    Raises:
        InputNotFoundError: the file does not exist.
        ArchiveMetadataError: it cannot be read, lacks a required column, or repeats a patch id.
    """
    if not path.is_file():
        raise InputNotFoundError(f"{path} does not exist; a reBEN archive needs its metadata.parquet")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ArchiveMetadataError(f"{path} cannot be read as Parquet: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ArchiveMetadataError(f"{path} lacks the column(s) {missing}; a reBEN metadata.parquet "
                                   f"has {list(REQUIRED_COLUMNS)} and more")
    cols = []
    for f in PLAN_SCHEMA:
        if f.name not in table.column_names:
            cols.append(pa.nulls(table.num_rows, f.type))
            continue
        try:
            cols.append(table[f.name].cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ArchiveMetadataError(f"{path}: column {f.name} is {table.schema.field(f.name).type}, "
                                       f"expected {f.type}") from exc
    plan = pa.table(cols, schema=PLAN_SCHEMA)
    ids = plan["patch_id"].to_numpy(zero_copy_only=False)
    unique, counts = np.unique(ids.astype(str), return_counts=True)
    if (counts > 1).any():
        dup = unique[counts > 1][:5].tolist()
        raise ArchiveMetadataError(f"{path} lists patch id(s) {dup} more than once")
    return plan


def row_problem(row: dict) -> str | None:
    """What is wrong with one metadata row, or None."""
    pid = row["patch_id"]
    try:
        parse_patch_name_v2(pid or "")
    except BigEarthNetError as exc:
        return str(exc)
    if row["split"] not in SPLITS:
        return f"split {row['split']!r} is not one of {list(SPLITS)}"
    if row["labels"] is None:
        return "labels is null"
    bad = [n for n in row["labels"] if n not in _INDEX_19]
    if bad:
        return f"label(s) {bad} are not reBEN's 19 class names"
    bad = [n for n in (row["labels_43"] or []) if n not in _INDEX_43]
    if bad:
        return f"labels_43 {bad} are not BigEarthNet's 43 class names"
    return None


@dataclass
class ImportPlan:
    """What the driver found before any pixel is read.

    Attributes:
        table: the patches to read (:data:`PLAN_SCHEMA`), sorted by patch id.
        n_listed: rows of ``metadata.parquet``.
        problems: broken patches found already (missing folders, bad rows), extra folders and
            the excluded patches, as :func:`problem` records.
    """

    table: pa.Table
    n_listed: int
    problems: list[dict] = field(default_factory=list)


def _excluded_ids(layout: RebenLayout) -> set[str]:
    if not layout.excluded.is_file():
        return set()
    try:
        table = pq.read_table(layout.excluded, columns=["patch_id"])
    except (OSError, pa.ArrowInvalid, KeyError) as exc:
        raise ArchiveMetadataError(f"{layout.excluded} cannot be read or lacks patch_id: {exc}") from exc
    return {p for p in table["patch_id"].to_pylist() if p}


def _folders_on_disk(layout: RebenLayout) -> tuple[dict[str, str], list[str]]:
    """Patch folders under ``BigEarthNet-S2/<tile>/`` (name -> tile folder) and stray entries."""
    found: dict[str, str] = {}
    stray: list[str] = []
    with os.scandir(layout.s2) as entries:
        tiles = sorted(entries, key=lambda e: e.name)
    for tile in tiles:
        if not tile.is_dir():
            stray.append(tile.name)
            continue
        with os.scandir(tile.path) as entries:
            for entry in entries:
                rel = f"{tile.name}/{entry.name}"
                if not entry.is_dir() or entry.name in found:
                    stray.append(rel)
                else:
                    found[entry.name] = tile.name
    return found, stray


def plan_import(layout: RebenLayout) -> ImportPlan:
    """Compare the metadata with the disk: which patches to read, which are broken or extra.

    Raises:
        InputNotFoundError: ``metadata.parquet``, ``BigEarthNet-S2/`` or ``Reference_Maps/`` is
            missing.
        ArchiveMetadataError: the metadata cannot be used at all (see :func:`read_metadata`).
    """
    meta = read_metadata(layout.metadata)
    for folder, what in ((layout.s2, "the Sentinel-2 patch folders"),
                         (layout.maps, "the reference maps (Reference_Maps.tar.*)")):
        if not folder.is_dir():
            raise InputNotFoundError(f"{folder} does not exist; a reBEN archive needs {what} there")
    excluded = _excluded_ids(layout)
    on_disk, stray = _folders_on_disk(layout)
    problems: list[dict] = []
    keep = np.zeros(meta.num_rows, dtype=bool)
    listed: set[str] = set()
    for i, row in enumerate(meta.to_pylist()):
        pid = row["patch_id"] or f"<row {i} of {layout.metadata.name}: no patch_id>"
        listed.add(pid)
        if pid in excluded:
            problems.append(problem(pid, "excluded_snow_cloud",
                                    f"patch {pid} is in {layout.excluded.name}; not imported"))
            continue
        bad = row_problem(row)
        if bad is not None:
            problems.append(problem(pid, "bad_metadata", f"patch {pid}: {layout.metadata}: {bad}",
                                    ArchiveMetadataError.__name__))
            continue
        if on_disk.get(pid) != reben_tile_folder(pid):
            where = (f" (a folder of that name is in {on_disk[pid]}/)" if pid in on_disk else "")
            problems.append(problem(pid, "missing", f"patch {pid} is listed in {layout.metadata} "
                                    f"but {layout.patch_dir(pid)} does not exist{where}",
                                    PatchMissingError.__name__))
            continue
        keep[i] = True
    for pid in sorted(excluded - listed):
        problems.append(problem(pid, "excluded_snow_cloud",
                                f"patch {pid} is in {layout.excluded.name}; not imported"))
    expected = {pid: reben_tile_folder(pid) for pid in listed | excluded}
    for name, tile in sorted(on_disk.items()):
        if expected.get(name) != tile:
            problems.append(problem(name, "extra_on_disk", f"{layout.s2 / tile / name} is not in "
                                    f"{layout.metadata.name}; not imported"))
    for rel in stray:
        problems.append(problem(rel, "extra_on_disk", f"{layout.s2 / rel} is not a patch folder "
                                f"listed in {layout.metadata.name}; ignored"))
    table = meta.filter(pa.array(keep)).sort_by("patch_id")
    return ImportPlan(table, meta.num_rows, problems)


GEOREF_TOLERANCE_M = 1e-3
"""Band files of one patch must agree on their bounds to 1 mm (float rounding of transforms)."""


def _same_place(georef, epsg: int | None, bounds: tuple[float, ...]) -> bool:
    return georef.epsg == epsg and bool(np.allclose(georef.bounds, bounds, rtol=0.0,
                                                    atol=GEOREF_TOLERANCE_M))


def _read_reference_map(layout: RebenLayout, pid: str, georef) -> np.ndarray:
    path = layout.reference_map(pid)
    if not path.is_file():
        raise PatchMissingError(f"patch {pid}: reference map {path} is missing")
    try:
        with rasterio.open(path) as src:
            data = src.read(1)
            bounds, epsg = tuple(src.bounds), (src.crs.to_epsg() if src.crs else None)
    except RasterioError as exc:
        raise CorruptRasterError(f"patch {pid}: cannot read {path}: {exc}") from exc
    if data.shape != (PATCH_SIZE_PX, PATCH_SIZE_PX) or data.dtype.kind not in "iu":
        raise RasterFormatError(f"patch {pid}: {path} is {data.shape} {data.dtype}, expected "
                                f"({PATCH_SIZE_PX}, {PATCH_SIZE_PX}) integer CLC codes")
    if not _same_place(georef, epsg, bounds):
        raise GeoreferenceMismatchError(f"patch {pid}: {path} lies at EPSG:{epsg} {bounds}, its "
                                        f"bands at EPSG:{georef.epsg} {georef.bounds}")
    return data.astype(np.uint16)


def read_patch(layout: RebenLayout, row: dict) -> tuple[dict, list[str]]:
    """One reBEN patch: bands, reference map, georeferencing; and the extra files of its folder.

    Args:
        layout: the archive.
        row: its :data:`PLAN_SCHEMA` row.

    Returns:
        The patch dict for :func:`~bigearthnet.stages.archive.archive_columns` (plus
        ``reference_map``), and the names of files in its folder that are not its bands.

    Raises:
        PatchMissingError, CorruptRasterError, RasterFormatError, GeoreferenceMismatchError,
        UnknownClcCodeError (a reference map value that is not a CLC code).
    """
    pid = row["patch_id"]
    name = parse_patch_name_v2(pid)
    groups, georefs = read_band_groups(pid, {b: layout.band_file(pid, b) for b in BAND_NAMES})
    first = georefs[0]
    for g in georefs[1:]:
        if not _same_place(g, first.epsg, first.bounds):
            raise GeoreferenceMismatchError(
                f"patch {pid}: band {g.band} lies at EPSG:{g.epsg} {g.bounds}, band {first.band} "
                f"at EPSG:{first.epsg} {first.bounds}; {layout.patch_dir(pid)} mixes patches")
    if first.epsg is None:
        raise GeoreferenceMismatchError(f"patch {pid}: {layout.band_file(pid, first.band)} has no "
                                        "EPSG-coded CRS")
    ref = _read_reference_map(layout, pid, first)
    from_map = labels_reben(ref[None]).to_pylist()[0]  # codes, fractions, 43-class names
    extra = sorted(set(os.listdir(layout.patch_dir(pid))) - layout.band_files(pid, BAND_NAMES))
    patch = {
        "patch_id": pid, "name": row["s2v1_name"] or name.name_v1,
        "product_id": row["product_id"] or reben_tile_folder(pid), "tile": name.tile,
        "sensing_time": name.sensing_time, "col": name.col, "row": name.row,
        "epsg": first.epsg, "bounds": first.bounds, "groups": groups, "reference_map": ref,
        "labels_19": sorted(row["labels"], key=_INDEX_19.__getitem__),
        "labels_43": (from_map["labels_43"] if row["labels_43"] is None
                      else sorted(row["labels_43"], key=_INDEX_43.__getitem__)),
        "clc_codes": from_map["clc_codes"], "clc_area_fractions": from_map["clc_area_fractions"],
        "unlabeled_fraction": from_map["unlabeled_fraction"],
    }
    return patch, extra


def _read_rows(layout: RebenLayout, rows: list[dict], on_error: str) -> tuple[list, list, list]:
    """Read the patches of plan rows: (patches, their rows, problems). A broken patch raises
    under ``on_error: fail``, else it becomes a problem record."""
    with rasterio.Env():  # one GDAL environment for the ~13 opens per patch
        done, problems = read_patches(rows, lambda row: read_patch(layout, row),
                                      lambda row: row["patch_id"], on_error)
    for row, (_, extra) in done:
        problems.extend(problem(row["patch_id"], "extra_file",
                                f"{layout.patch_dir(row['patch_id']) / f} is not a band file "
                                "of the patch; ignored") for f in extra)
    return [patch for _, (patch, _) in done], [row for row, _ in done], problems


def import_chunk(task_id: int, archive: str, plan_path: str, staging: Path,
                 cfg: ImportV2Config) -> dict:
    """One import-v2 task: read row group ``task_id`` of the plan's patches, write them.

    A broken patch fails the task under ``on_error: fail``; under ``skip`` it is left out and
    named in the summary's ``problems``, like the extra files found in patch folders.

    Returns:
        The task's summary row (:data:`~bigearthnet.stages.archive.ARCHIVE_SUMMARY_FIELDS`).
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    name = f"part-{task_id:05d}"
    summary = new_summary(task_id, f"chunk-{task_id:05d}")
    layout, archive_layout = DatasetLayout(staging), RebenLayout(Path(archive))
    writers = SplitWriters(layout, name, IMPORTED_V2_PATCH_SCHEMA.to_arrow(), cfg.compression,
                           direct_io=cfg.direct_io)
    problems: list[dict] = []
    try:
        rows = pq.ParquetFile(plan_path).read_row_group(task_id).to_pylist()
        patches, kept_rows, found = _read_rows(archive_layout, rows, cfg.on_error)
        problems.extend(found)
        maps = np.stack([p["reference_map"] for p in patches]) if patches else \
            np.empty((0, *REFERENCE_MAP.shape), np.uint16)
        cols = archive_columns(patches)
        cols["clc_area_fractions"] = pa.array([p["clc_area_fractions"] for p in patches],
                                              pa.list_(pa.float32()))
        cols["unlabeled_fraction"] = pa.array([p["unlabeled_fraction"] for p in patches],
                                              pa.float32())
        cols["reference_map"] = encode_tensor(maps, REFERENCE_MAP)
        flags = {k: np.array([bool(r[k]) for r in kept_rows], dtype=bool)
                 for k in ("contains_seasonal_snow", "contains_cloud_or_shadow")}
        cols.update({k: pa.array(v) for k, v in flags.items()})
        split = np.array([r["split"] for r in kept_rows], dtype=object)
        meta = {k: pa.array([r[k] for r in kept_rows], pa.string()) for k in ("country", "s1_name")}
        write_chunk(summary, writers, layout, name, patches, cols, split, flags,
                    np.zeros(len(patches), dtype=bool), Counter(), metadata_columns=meta)
    except BigEarthNetError as exc:
        writers.abort()
        summary.update(status="failed", error_type=type(exc).__name__, error_message=str(exc))
    summary.update(cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0,
                   peak_rss_mb=peak_rss_mb(), problems=json.dumps(problems))
    return summary
