"""Export: the patch table to the reBEN (v2.0) or BigEarthNet v1.0 folder layout, one task's part.

Each task reads some row groups of a dataset's ``patches/split=*/`` files and writes, per patch,
real GeoTIFFs with the patch's CRS and transform, every band at its native size
(:mod:`bigearthnet.dataset.archives` names the files):

* ``reben``: ``BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_<band>.tif`` and
  ``Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif``;
* ``v1``: ``BigEarthNet-v1.0/<v1 name>/<v1 name>_<band>.tif`` and
  ``<v1 name>_labels_metadata.json`` (labels, coordinates, projection, tile_source,
  acquisition_date, as the v1 archive has them).

A patch folder is written under a name unique to the task attempt and renamed when complete,
so a killed task leaves no folder that looks done (the driver removes the leftovers); a retried
task writes the same bytes. The driver writes the tables (``metadata.parquet`` or the split
files) and ``export.json`` (:mod:`bigearthnet.spark.export`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.transform import Affine

from bigearthnet.constants import patch_px
from bigearthnet.dataset.archives import RebenLayout, V1Layout, band_file_name, v1_labels_name
from bigearthnet.dataset.layout import IN_PROGRESS
from bigearthnet.dataset.schema import REFERENCE_MAP, tensor_columns_from_metadata
from bigearthnet.errors import BigEarthNetError, DiskFullError, ExportError
from bigearthnet.sentinel2.bands import GROUPS
from bigearthnet.stages.write import peak_rss_mb

FORMATS = ("reben", "v1")

EXPORT_SUMMARY_FIELDS: tuple[tuple[str, str], ...] = (
    ("task_id", "long"), ("status", "string"), ("error_type", "string"),
    ("error_message", "string"), ("n_patches", "long"), ("cpu_s", "double"),
    ("wall_s", "double"), ("peak_rss_mb", "double"),
)
"""(name, Spark DDL type) of the summary row an export task returns."""

BASE_COLUMNS = ("patch_id", "patch_id_v1", "epsg", "footprint", "bands_10m", "bands_20m", "bands_60m")
COLUMNS: dict[str, tuple[str, ...]] = {
    "reben": BASE_COLUMNS + (REFERENCE_MAP.name,),
    "v1": BASE_COLUMNS + ("product_id", "sensing_time", "labels_43"),
}
"""The patch-table columns each format needs."""

V1_DATE = "%Y-%m-%d %H:%M:%S"
"""``acquisition_date`` format of the v1 labels JSON."""


def write_geotiff(path: Path, data: np.ndarray, crs: CRS, bounds: tuple[float, ...]) -> None:
    """One single-band uint16 GeoTIFF covering ``bounds`` (minx, miny, maxx, maxy)."""
    height, width = data.shape
    res = (bounds[2] - bounds[0]) / width
    transform = Affine(res, 0.0, bounds[0], 0.0, -res, bounds[3])
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1,
                       dtype="uint16", crs=crs, transform=transform) as dst:
        dst.write(data, 1)


def _publish(tmp: Path, final: Path) -> None:
    """Rename a finished patch folder; a folder of an earlier attempt holds the same files."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


class PatchWriter:
    """Writes the patches of one task into an export folder.

    Args:
        fmt: ``reben`` or ``v1``.
        root: the (staging) export folder; its top folders (and reBEN's tile folders) exist.
    """

    def __init__(self, fmt: str, root: Path):
        self.fmt, self.root = fmt, root
        self.attempt = uuid.uuid4().hex[:12]
        self.crs: dict[int, CRS] = {}

    def _crs(self, epsg: int) -> CRS:
        if epsg not in self.crs:
            self.crs[epsg] = CRS.from_epsg(epsg)
        return self.crs[epsg]

    def _folder(self, final: Path) -> Path:
        tmp = final.with_name(f".{final.name}{IN_PROGRESS}-{self.attempt}")
        tmp.mkdir()  # never parents: the driver made them
        return tmp

    def _bands(self, folder: Path, patch: str, groups: dict[int, np.ndarray], crs: CRS,
               bounds: tuple[float, ...]) -> None:
        for res, names in GROUPS.items():
            for b, band in enumerate(names):
                write_geotiff(folder / band_file_name(patch, band), groups[res][b], crs, bounds)

    def write(self, table: pa.Table, tensors: dict) -> int:
        """Write every row of ``table`` (the :data:`COLUMNS` of the format); return the count."""
        decoded = {name: spec.decode(table[name]) for name, spec in tensors.items()
                   if name in table.column_names}
        bounds = [shapely.from_wkb(w).bounds for w in table["footprint"].to_pylist()]
        ids = table["patch_id"].to_pylist()
        names_v1 = table["patch_id_v1"].to_pylist()
        epsgs = table["epsg"].to_pylist()
        extra = {c: table[c].to_pylist() for c in ("product_id", "sensing_time", "labels_43")
                 if c in table.column_names}
        for i, pid in enumerate(ids):
            groups = {res: decoded[f"bands_{res}m"][i] for res in GROUPS}
            crs = self._crs(int(epsgs[i]))
            if self.fmt == "reben":
                out = RebenLayout(self.root)
                tmp = self._folder(out.patch_dir(pid))
                self._bands(tmp, pid, groups, crs, bounds[i])
                _publish(tmp, out.patch_dir(pid))
                tmp = self._folder(out.map_dir(pid))
                write_geotiff(tmp / out.reference_map(pid).name, decoded[REFERENCE_MAP.name][i],
                              crs, bounds[i])
                _publish(tmp, out.map_dir(pid))
            else:
                out = V1Layout(self.root)
                name = names_v1[i]
                tmp = self._folder(out.patch_dir(name))
                self._bands(tmp, name, groups, crs, bounds[i])
                doc = v1_labels_json(extra["labels_43"][i], bounds[i], crs,
                                     extra["product_id"][i], extra["sensing_time"][i])
                (tmp / v1_labels_name(name)).write_text(json.dumps(doc))
                _publish(tmp, out.patch_dir(name))
        return len(ids)


def v1_labels_json(labels_43: list[str], bounds: tuple[float, ...], crs: CRS, product_id: str,
                   sensing_time) -> dict:
    """The ``*_labels_metadata.json`` of one patch, as the v1 archive writes it."""
    def num(x: float) -> int | float:
        return int(x) if float(x).is_integer() else float(x)

    return {
        "labels": list(labels_43),
        "coordinates": {"ulx": num(bounds[0]), "uly": num(bounds[3]), "lrx": num(bounds[2]),
                        "lry": num(bounds[1])},
        "projection": crs.to_wkt(),
        "tile_source": f"{product_id}.SAFE",
        "acquisition_date": sensing_time.strftime(V1_DATE),
    }


def _export_units(writer: PatchWriter, units: list[tuple[str, int]], fmt: str, root: Path,
                  summary: dict) -> None:
    """Write the patches of ``units``, counting them in ``summary["n_patches"]``."""
    for path, row_group in units:
        try:
            pf = pq.ParquetFile(path)
            table = pf.read_row_group(row_group, columns=list(COLUMNS[fmt]))
            tensors = tensor_columns_from_metadata(pf.schema_arrow)
        except (OSError, pa.ArrowInvalid, KeyError, ValueError) as exc:
            raise ExportError(f"cannot read row group {row_group} of {path}: {exc}") from exc
        try:
            summary["n_patches"] += writer.write(table, tensors)
        except RasterioError as exc:
            raise ExportError(f"cannot write a GeoTIFF under {root}: {exc}") from exc
        except OSError as exc:
            if exc.errno in (28, 122):  # ENOSPC, EDQUOT
                raise DiskFullError(f"no space left writing the export under {root}: {exc}") from exc
            raise


def export_chunk(task_id: int, units: list[tuple[str, int]], fmt: str, root: Path) -> dict:
    """One export task: write the patches of some row groups (``(file, row group)`` pairs).

    Returns:
        The task's summary row (:data:`EXPORT_SUMMARY_FIELDS`).
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary: dict = {n: None for n, _ in EXPORT_SUMMARY_FIELDS}
    summary.update(task_id=task_id, status="ok", n_patches=0)
    writer = PatchWriter(fmt, root)
    try:
        with rasterio.Env():  # one GDAL environment for the task's 13 files per patch
            _export_units(writer, units, fmt, root, summary)
    except BigEarthNetError as exc:
        summary.update(status="failed", error_type=type(exc).__name__, error_message=str(exc))
    summary.update(cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0,
                   peak_rss_mb=peak_rss_mb())
    return summary


def check_patch_size(tensors: dict) -> None:
    """The stored tensors have the sizes the layouts expect (120/60/20 px).

    Raises:
        ExportError: a dataset of another patch size.
    """
    for res in GROUPS:
        spec = tensors.get(f"bands_{res}m")
        if spec is None or spec.shape[1:] != (patch_px(res), patch_px(res)):
            raise ExportError(f"bands_{res}m is {None if spec is None else spec.shape}, expected "
                              f"{len(GROUPS[res])}x{patch_px(res)}x{patch_px(res)}")
