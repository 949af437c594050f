"""``bigearthnet import-v1``: convert the BigEarthNet-S2 v1.0 folder archive to our dataset format.

The driver lists patch folder names only; Spark tasks read chunks of folders and run the build's
own screen, split and write stages on them (:func:`bigearthnet.stages.v1_archive.import_chunk`),
then the driver merges the parts exactly like ``build``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bigearthnet.config import ImportConfig
from bigearthnet.dataset.io import staged_output
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.schema import IMPORTED_PATCH_SCHEMA
from bigearthnet.errors import EmptyInputError
from bigearthnet.spark.session import get_session
from bigearthnet.spark.tasks import first_failure, run_indexed_tasks
from bigearthnet.stages.archive import job_paths
from bigearthnet.stages.finish import FORMAT, finish_labeled, package_versions, seal_staging
from bigearthnet.stages.v1_archive import import_chunk, list_patch_folders
from bigearthnet.stages.write import SUMMARY_FIELDS

__all__ = ["ImportConfig", "run_import"]


def run_import(cfg: ImportConfig) -> dict:
    """Convert a v1 archive; return the manifest. Any bad patch fails the whole import."""
    t0 = time.perf_counter()
    archive, out = job_paths(cfg.archive, "v1 archive", cfg.out, cfg.overwrite)
    folders = list_patch_folders(archive)
    if not folders:
        raise EmptyInputError(f"no BigEarthNet v1 patch folder (e.g. S2A_MSIL2A_20170613T101031_87_48/) in {archive}")
    chunks = [folders[i:i + cfg.patches_per_task] for i in range(0, len(folders), cfg.patches_per_task)]
    with staged_output(out, cfg.overwrite) as staging:
        DatasetLayout(staging).create_task_folders()
        spark = get_session(cfg.spark)
        cfg_json, staging_str = cfg.model_dump_json(), str(staging)

        def task(task_id: int) -> dict:
            return import_chunk(task_id, chunks[task_id], Path(staging_str),
                                ImportConfig.model_validate_json(cfg_json))

        run = run_indexed_tasks(spark, len(chunks), task, SUMMARY_FIELDS,
                                failure_dir=DatasetLayout(staging).failures)
        summaries = run.rows
        failed = [s for s in summaries if s["status"] != "ok"]
        if failed:
            raise first_failure(failed, len(chunks), "chunks")
        manifest = {
            "format": FORMAT, "source": "bigearthnet-v1-import",
            "config": json.loads(cfg.model_dump_json()) | {"split": "official" if cfg.splits_dir else "random",
                                                           "reference_maps": False},
            "versions": package_versions(),
            "counts": {"products": 0, "products_failed": 0, "patches_cut": len(folders),
                       "patches_with_nodata": sum(s["n_nodata"] for s in summaries),
                       "v1_name_collisions": 0, "task_attempts_retried": run.failed_attempts},
            "products": [], "failures": [],
            "timings_s": {"list_s": time.perf_counter() - t0},
        }
        finish_labeled(staging, summaries, manifest, schema=IMPORTED_PATCH_SCHEMA)
        seal_staging(staging, manifest, DatasetLayout(staging).import_config,
                     cfg.model_dump_json(indent=2))
    return manifest
