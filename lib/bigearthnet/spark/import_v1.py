"""``bigearthnet import-v1``: convert the BigEarthNet-S2 v1.0 folder archive to our dataset format.

The driver lists patch folder names only; Spark tasks read chunks of folders (12 GeoTIFFs and
the JSON each) and write Parquet row groups and metadata parts, exactly like ``build``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import Field

from bigearthnet.config import SparkConfig, StrictModel
from bigearthnet.errors import (
    BigEarthNetError,
    EmptyInputError,
    InputNotFoundError,
    error_from_name,
)

CHUNK_FIELDS = (
    ("task_id", "long"), ("product_id", "string"), ("status", "string"), ("error_type", "string"),
    ("error_message", "string"), ("n_patches", "long"), ("n_nodata", "long"), ("n_cols", "int"),
    ("n_rows", "int"), ("epsg", "int"), ("files", "string"), ("counts", "string"), ("clc", "string"),
    ("histograms", "binary"), ("cpu_s", "double"), ("wall_s", "double"), ("label_s", "double"),
    ("peak_rss_mb", "double"),
)


class ImportConfig(StrictModel):
    """Configuration of ``bigearthnet import-v1``."""

    archive: str = Field(..., description="BigEarthNet-S2 v1.0 folder (one sub-folder per patch)")
    out: str = Field(..., description="dataset folder to create")
    overwrite: bool = False
    splits_dir: str | None = Field(None, description="folder with official train/val/test CSVs")
    exclude_lists: list[str] = Field(
        default_factory=list,
        description="headerless CSVs of v1 names to drop; a file whose name contains 'snow' also "
        "sets contains_seasonal_snow, 'cloud' sets contains_cloud_or_shadow",
    )
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    patches_per_task: int = Field(512, ge=1)
    compression: str = "zstd"
    spark: SparkConfig = Field(default_factory=SparkConfig)


def import_chunk(task_id: int, folders: list[str], staging: Path, cfg: ImportConfig) -> dict:
    """Read one chunk of patch folders and write its Parquet files; return a summary row."""
    import resource

    import pyarrow.parquet as pq

    from bigearthnet.dataset.build_task import METADATA_SCHEMA, SPLITS, _SplitWriters
    from bigearthnet.dataset.import_v1 import patch_columns, read_patch
    from bigearthnet.dataset.schema import IMPORTED_PATCH_SCHEMA
    from bigearthnet.dataset.stats import BandHistograms
    from bigearthnet.quality import read_name_list
    from bigearthnet.splits import official_split, random_split

    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = {n: None for n, _ in CHUNK_FIELDS}
    summary.update(task_id=task_id, product_id=f"chunk-{task_id:05d}", n_patches=0, n_nodata=0, label_s=0.0)
    schema = IMPORTED_PATCH_SCHEMA.to_arrow()
    writers = _SplitWriters(staging / "patches", f"part-{task_id:05d}", schema, cfg.compression)
    try:
        patches = [read_patch(Path(f)) for f in folders]
        cols = patch_columns(patches)
        names = np.array(cols["patch_id_v1"].to_pylist(), dtype=object)
        snow = np.zeros(len(names), bool)
        cloud = np.zeros(len(names), bool)
        listed = np.zeros(len(names), bool)
        for path in cfg.exclude_lists:
            members = set(read_name_list(path))
            hit = np.fromiter((n in members for n in names), bool, len(names))
            listed |= hit
            stem = Path(path).name.lower()
            snow |= hit if "snow" in stem else False
            cloud |= hit if "cloud" in stem else False
        cols["contains_seasonal_snow"] = pa.array(snow)
        cols["contains_cloud_or_shadow"] = pa.array(cloud)
        if cfg.splits_dir:
            d = Path(cfg.splits_dir)
            pick = lambda stem: next((p for p in (d / f"{stem}.csv", d / f"{stem}.csv.bz2") if p.exists()), d / f"{stem}.csv")
            split = official_split(names, pick("train"), pick("val"), pick("test"))
        else:
            split = random_split(cols["patch_id"].to_pylist(), cfg.split_seed, cfg.split_fractions)
        batch = pa.RecordBatch.from_arrays([cols[c] for c in schema.names], schema=schema)
        counts = Counter()
        hist = BandHistograms()
        keep = ~listed & np.array([s is not None for s in split])
        counts["dropped_lists"] = int(listed.sum())
        counts["dropped_not_in_split"] = int((~listed & ~keep).sum())
        meta_rows = []
        for s in SPLITS:
            sel = np.nonzero(keep & (split == s))[0]
            counts[f"kept_{s}"] = len(sel)
            for start in range(0, len(sel), 128):
                writers.write(s, batch.take(pa.array(sel[start:start + 128])))
            if s == "train" and len(sel):
                for res in (10, 20, 60):
                    hist.add_group(res, np.stack([patches[i]["groups"][res] for i in sel]))
        idx = np.nonzero(keep)[0]
        import shapely
        from pyproj import Transformer

        for i in idx:
            p = patches[i]
            to_wgs = Transformer.from_crs(p["epsg"], 4326, always_xy=True)
            box = shapely.segmentize(shapely.box(*p["bounds"]), 400.0)
            wgs = shapely.transform(box, lambda xy, t=to_wgs: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
            meta_rows.append({
                "patch_id": cols["patch_id"][i].as_py(), "labels": cols["labels_19"][i].as_py(),
                "split": split[i], "country": None, "s1_name": None, "s2v1_name": names[i],
                "contains_seasonal_snow": bool(snow[i]), "contains_cloud_or_shadow": bool(cloud[i]),
                "labels_43": p["labels_43"], "tile_id": p["tile"], "product_id": p["product_id"],
                "footprint_wgs84": shapely.to_wkb(wgs),
            })
        files = writers.commit()
        meta_dir = staging / "_parts" / "metadata"
        meta_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(meta_rows, schema=METADATA_SCHEMA), meta_dir / f"part-{task_id:05d}.parquet")
        summary.update(status="ok", n_patches=len(patches), n_nodata=int(cols["has_nodata"].true_count),
                       n_cols=0, n_rows=0, files=json.dumps([str(f.relative_to(staging)) for f in files]),
                       counts=json.dumps(dict(counts), sort_keys=True), histograms=hist.to_bytes(), clc="{}")
    except BigEarthNetError as exc:
        writers.abort()
        summary.update(status="failed", error_type=type(exc).__name__, error_message=str(exc))
    summary.update(cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0,
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    return summary


def run_import(cfg: ImportConfig) -> dict:
    """Convert a v1 archive; return the manifest. Any bad patch fails the whole import."""
    from bigearthnet.dataset.import_v1 import list_patch_folders
    from bigearthnet.dataset.io import check_output, commit_dir, staging_dir, write_json
    from bigearthnet.dataset.schema import IMPORTED_PATCH_SCHEMA
    from bigearthnet.spark.build import MANIFEST, finish_labeled, package_versions
    from bigearthnet.spark.session import get_session
    from bigearthnet.spark.tasks import run_indexed_tasks

    t0 = time.perf_counter()
    archive = Path(cfg.archive)
    if not archive.is_dir():
        raise InputNotFoundError(f"v1 archive folder {archive} does not exist")
    out = Path(cfg.out).resolve()
    check_output(out, cfg.overwrite)
    folders = list_patch_folders(archive)
    if not folders:
        raise EmptyInputError(f"no BigEarthNet v1 patch folder (e.g. S2A_MSIL2A_20170613T101031_87_48/) in {archive}")
    chunks = [folders[i:i + cfg.patches_per_task] for i in range(0, len(folders), cfg.patches_per_task)]
    staging = staging_dir(out)
    staging.mkdir(parents=True)
    try:
        spark = get_session(cfg.spark)
        cfg_json, staging_str = cfg.model_dump_json(), str(staging)

        def task(task_id: int) -> dict:
            return import_chunk(task_id, chunks[task_id], Path(staging_str),
                                ImportConfig.model_validate_json(cfg_json))

        summaries = run_indexed_tasks(spark, len(chunks), task, CHUNK_FIELDS)
        failed = [s for s in summaries if s["status"] != "ok"]
        if failed:
            raise error_from_name(failed[0]["error_type"], failed[0]["error_message"])
        manifest = {
            "format": "bigearthnet-patches", "source": "bigearthnet-v1-import",
            "config": json.loads(cfg.model_dump_json()) | {"split": "official" if cfg.splits_dir else "random",
                                                           "reference_maps": False},
            "versions": package_versions(),
            "counts": {"products": 0, "products_failed": 0, "patches_cut": len(folders),
                       "patches_with_nodata": sum(s["n_nodata"] for s in summaries),
                       "v1_name_collisions": 0},
            "products": [], "failures": [],
            "timings_s": {"list_s": time.perf_counter() - t0},
        }
        finish_labeled(staging, summaries, manifest)
        manifest["schema"] = IMPORTED_PATCH_SCHEMA.to_json()
        write_json(staging / MANIFEST, manifest)
        (staging / "import_config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
        commit_dir(staging, out, cfg.overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
