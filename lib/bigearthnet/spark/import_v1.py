"""``bigearthnet import-v1``: convert the BigEarthNet-S2 v1.0 folder archive to our dataset format.

The driver lists patch folder names only; Spark tasks read chunks of folders and run the build's
own screen, split and write stages on them (:func:`bigearthnet.stages.v1_archive.import_chunk`),
then the driver merges the parts exactly like ``build``. Under ``on_error: skip`` broken patch
folders are left out and named in ``manifest.json`` as import-v2 names its broken patches.
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
from bigearthnet.stages.archive import (
    ARCHIVE_SUMMARY_FIELDS,
    BROKEN_KINDS,
    archive_report,
    failure_counts,
    failures_of,
    job_paths,
)
from bigearthnet.stages.finish import FORMAT, finish_labeled, package_versions, seal_staging
from bigearthnet.stages.v1_archive import import_chunk, list_patch_folders

__all__ = ["ImportConfig", "run_import"]


def run_import(cfg: ImportConfig) -> dict:
    """Convert a v1 archive; return the manifest.

    Raises:
        InputNotFoundError: the archive folder does not exist.
        EmptyInputError: it holds no patch folder, or (``on_error: skip``) every one is broken.
        PatchMissingError, CorruptRasterError, PatchMetadataError, ...: the first broken patch,
            under ``on_error: fail``.
    """
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

        run = run_indexed_tasks(spark, len(chunks), task, ARCHIVE_SUMMARY_FIELDS,
                                failure_dir=DatasetLayout(staging).failures)
        summaries = run.rows
        failed = [s for s in summaries if s["status"] != "ok"]
        if failed:
            raise first_failure(failed, len(chunks), "chunks")
        problems = [p for s in summaries for p in json.loads(s["problems"] or "[]")]
        failures = failures_of(problems)
        n_read = sum(s["n_patches"] for s in summaries)
        if n_read == 0:
            raise EmptyInputError(f"all {len(folders)} patch folder(s) in {archive} are broken; "
                                  f"nothing to import. The first: {problems[0]['message']}")
        manifest = {
            "format": FORMAT, "source": "bigearthnet-v1-import",
            "config": json.loads(cfg.model_dump_json()) | {"split": "official" if cfg.splits_dir else "random",
                                                           "reference_maps": False},
            "versions": package_versions(),
            "counts": {"products": 0, "products_failed": 0, "patches_listed": len(folders),
                       **failure_counts(failures), "patches_cut": n_read,
                       "patches_with_nodata": sum(s["n_nodata"] for s in summaries),
                       "v1_name_collisions": 0, "task_attempts_retried": run.failed_attempts},
            "archive": archive_report("import-v1", problems, len(folders), BROKEN_KINDS),
            "products": [], "failures": failures,
            "timings_s": {"list_s": time.perf_counter() - t0},
        }
        finish_labeled(staging, summaries, manifest, schema=IMPORTED_PATCH_SCHEMA)
        seal_staging(staging, manifest, DatasetLayout(staging).import_config,
                     cfg.model_dump_json(indent=2))
    return manifest
