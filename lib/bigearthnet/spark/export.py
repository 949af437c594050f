"""``bigearthnet export``: a dataset to the reBEN (v2.0) or BigEarthNet v1.0 folder layout.

The driver checks the dataset (complete, labeled; reference maps for reBEN; unique v1 names for
v1), creates the top folders, and deals the patch files' row groups out to Spark tasks
(:func:`bigearthnet.stages.export.export_chunk`), which write the GeoTIFFs and label files.
The driver then writes ``metadata.parquet`` (reBEN) or the split files (v1) and
``export.json``. Like a build, the export is written under a hidden staging name, under the
output's lock, and appears under its name only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bigearthnet.clc.nomenclature import class_orders
from bigearthnet.config import ExportConfig
from bigearthnet.constants import SPLITS
from bigearthnet.dataset.archives import EXPORT_MANIFEST, RebenLayout, V1Layout, reben_tile_folder
from bigearthnet.dataset.io import check_output, staged_output, write_json
from bigearthnet.dataset.layout import IN_PROGRESS, DatasetLayout
from bigearthnet.dataset.schema import band_order, tensor_columns_from_metadata
from bigearthnet.errors import ExportError, IncompleteDatasetError, InputNotFoundError
from bigearthnet.spark.session import get_session
from bigearthnet.spark.tasks import first_failure, run_indexed_tasks
from bigearthnet.stages.archive import local_only
from bigearthnet.stages.export import (
    COLUMNS,
    EXPORT_SUMMARY_FIELDS,
    check_patch_size,
    export_chunk,
)
from bigearthnet.stages.finish import package_versions

__all__ = ["ExportConfig", "run_export"]

FORMAT = "bigearthnet-export"
"""The ``format`` field of ``export.json``."""

READERS = {
    "reben": "torchgeo.datasets.BigEarthNetV2(root, split='train'|'val'|'test', bands='s2')",
    "v1": "torchgeo.datasets.BigEarthNet(root, split='train'|'val'|'test', bands='s2', "
          "num_classes=19|43); bigearthnet import-v1 ROOT --splits-dir ROOT",
}


NOTES = {
    "reben": "band files at native size (120/60/20 px), uint16, with the patch's CRS and transform; "
             "metadata.parquet: the reBEN columns first, then ours (labels_43, tile_id, "
             "product_id, footprint_wgs84); BigEarthNet-S1/ is empty (no Sentinel-1 patches)",
    "v1": "band files at native size (120/60/20 px), uint16, with the patch's CRS and transform; "
          "train/val/test.csv: the official v1 split lists; bigearthnet-*.csv: TorchGeo's "
          "(s2_name,s1_name lines; no Sentinel-1 here, so s1_name is empty)",
}


def _units(ds: DatasetLayout, fmt: str) -> list[tuple[str, int, int]]:
    """``(file, row group, rows)`` of every split file, checking the columns ``fmt`` needs."""
    units = []
    for split in ds.splits_present():
        for path in sorted(ds.split_dir(split).glob("*.parquet")):
            pf = pq.ParquetFile(path)
            names = pf.schema_arrow.names
            missing = [c for c in COLUMNS[fmt] if c not in names]
            if "reference_map" in missing:
                raise ExportError(f"{path} has no reference maps (built with reference_maps: "
                                  "false, or imported from v1), which the reBEN layout needs; "
                                  "export it with --format v1, or rebuild with reference maps")
            if missing:
                raise ExportError(f"{path} lacks the column(s) {missing} the {fmt} layout needs")
            check_patch_size(tensor_columns_from_metadata(pf.schema_arrow))
            units.extend((str(path), rg, pf.metadata.row_group(rg).num_rows)
                         for rg in range(pf.num_row_groups))
    return units


def _deal(units: list[tuple[str, int, int]], per_task: int) -> list[list[tuple[str, int]]]:
    """Consecutive row groups per task, up to ``per_task`` rows (one row group at least)."""
    tasks: list[list[tuple[str, int]]] = []
    rows = 0
    for path, rg, n in units:
        if not tasks or rows + n > per_task:
            tasks.append([])
            rows = 0
        tasks[-1].append((path, rg))
        rows += n
    return tasks


def _check_dataset(ds: DatasetLayout, fmt: str) -> pa.Table:
    """The dataset's metadata, after checking the dataset can be exported as ``fmt``."""
    if not ds.root.is_dir():
        raise InputNotFoundError(f"dataset folder {ds.root} does not exist")
    if not ds.success.is_file():
        raise IncompleteDatasetError(f"{ds.root} has no {ds.success.name}: the job that wrote it "
                                     "did not finish; rebuild it before exporting")
    if not ds.splits_present():
        raise ExportError(f"{ds.root} has no patches/split=*/ folders: a tiling-only build has no "
                          "labels or splits to export; build it with --clc")
    meta = pq.read_table(ds.metadata)
    if fmt == "v1":
        names = meta["s2v1_name"]
        counts = pc.value_counts(names)
        shared = [v["values"].as_py() for v in counts if v["counts"].as_py() > 1]
        if shared:
            raise ExportError(
                f"{len(shared)} v1 name(s) are shared by patches of several tiles of one datatake "
                f"(e.g. {sorted(shared)[:3]}), which the v1 layout (one folder per v1 name) "
                "cannot hold; export with --format reben, whose ids are unique")
    return meta


def _remove_unfinished(parents: list[Path]) -> int:
    """Remove patch folders of task attempts that never finished (lost executors)."""
    n = 0
    for parent in parents:
        with os.scandir(parent) as entries:
            leftovers = [e.path for e in entries if e.name.startswith(".") and IN_PROGRESS in e.name]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
            n += 1
    return n


def _write_tables(fmt: str, staging: Path, meta: pa.Table) -> None:
    if fmt == "reben":
        pq.write_table(meta.sort_by("patch_id"), RebenLayout(staging).metadata)
        return
    layout = V1Layout(staging)
    for split in SPLITS:
        rows = meta.filter(pc.equal(meta["split"], split)).sort_by("s2v1_name").to_pylist()
        layout.split_csv(split).write_text("".join(f"{r['s2v1_name']}\n" for r in rows))
        layout.torchgeo_split_csv(split).write_text(
            "".join(f"{r['s2v1_name']},{r['s1_name'] or ''}\n" for r in rows))


def run_export(cfg: ExportConfig) -> dict:
    """Export a dataset; return the content of ``export.json``.

    Raises:
        InputNotFoundError, IncompleteDatasetError: no complete dataset at ``cfg.dataset``.
        ExportError: the dataset cannot be written in ``cfg.format`` (says what can).
        OutputExistsError, OutputLockedError: as for builds.
    """
    t0 = time.perf_counter()
    local_only(cfg.dataset, cfg.out)
    ds = DatasetLayout.of(cfg.dataset)
    meta = _check_dataset(ds, cfg.format)
    units = _units(ds, cfg.format)
    n_rows = sum(n for _, _, n in units)
    if n_rows != meta.num_rows:
        raise ExportError(f"{ds.root}: the patch files hold {n_rows} rows, metadata.parquet "
                          f"{meta.num_rows}; the dataset is inconsistent, rebuild it")
    out = Path(cfg.out).resolve()
    check_output(out, cfg.overwrite)
    tasks = _deal(units, cfg.patches_per_task)
    with staged_output(out, cfg.overwrite, marker=False) as staging:
        parts = DatasetLayout(staging)
        parts.failures.mkdir(parents=True)
        if cfg.format == "reben":
            layout = RebenLayout(staging)
            tiles = sorted({reben_tile_folder(p) for p in meta["patch_id"].to_pylist()})
            for top in (layout.s2, layout.maps):
                for tile in tiles:
                    (top / tile).mkdir(parents=True)
            layout.s1.mkdir()  # TorchGeo checks that it exists; we have no Sentinel-1 patches
            parents = [layout.s2 / t for t in tiles] + [layout.maps / t for t in tiles]
        else:
            V1Layout(staging).patches.mkdir()
            parents = [V1Layout(staging).patches]
        spark = get_session(cfg.spark)
        fmt, root = cfg.format, str(staging)

        def task(task_id: int) -> dict:
            return export_chunk(task_id, tasks[task_id], fmt, Path(root))

        run = run_indexed_tasks(spark, len(tasks), task, EXPORT_SUMMARY_FIELDS,
                                failure_dir=parts.failures)
        failed = [s for s in run.rows if s["status"] != "ok"]
        if failed:
            raise first_failure(failed, len(tasks), "export tasks")
        written = sum(s["n_patches"] for s in run.rows)
        if written != meta.num_rows:
            raise ExportError(f"internal count mismatch: wrote {written} patches of "
                              f"{meta.num_rows}; please report this")
        shutil.rmtree(parts.parts)
        unfinished = _remove_unfinished(parents)
        _write_tables(cfg.format, staging, meta)
        source = json.loads(ds.manifest.read_text()) if ds.manifest.is_file() else {}
        doc = {
            "format": FORMAT, "layout": cfg.format, "reader": READERS[cfg.format],
            "dataset": str(ds.root.resolve()), "dataset_source": source.get("source", "build"),
            "band_order": band_order(), "class_orders": class_orders(),
            "counts": {"patches": written,
                       **{f"patches_{s}": int(pc.sum(pc.equal(meta["split"], s)).as_py() or 0)
                          for s in SPLITS},
                       "task_attempts_retried": run.failed_attempts,
                       "unfinished_attempts_removed": unfinished},
            "notes": NOTES[cfg.format],
            "versions": package_versions(),
            "timings_s": {"total_s": time.perf_counter() - t0,
                          "tasks_cpu_s": sum(s["cpu_s"] for s in run.rows)},
        }
        write_json(staging / EXPORT_MANIFEST, doc)
    return doc
