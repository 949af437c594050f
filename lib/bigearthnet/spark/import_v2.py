"""``bigearthnet import-v2``: convert the reBEN (BigEarthNet v2.0) folder archive to our format.

The driver reads ``metadata.parquet``, lists the patch folders (names only) and writes the work
list into the staging folder, one Parquet row group per task
(:func:`bigearthnet.stages.v2_archive.plan_import`); Spark tasks read their patches' GeoTIFFs
and run the build's write stage (:func:`bigearthnet.stages.v2_archive.import_chunk`); the
driver merges the parts like ``build`` and names every broken, extra and excluded patch in
``manifest.json``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from bigearthnet.config import ImportV2Config
from bigearthnet.dataset.archives import RebenLayout
from bigearthnet.dataset.io import staged_output
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.schema import IMPORTED_V2_PATCH_SCHEMA
from bigearthnet.errors import EmptyInputError, error_from_name
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
from bigearthnet.stages.v2_archive import COUNT_KEYS, WARNING_KINDS, import_chunk, plan_import

__all__ = ["ImportV2Config", "run_import_v2"]

def run_import_v2(cfg: ImportV2Config) -> dict:
    """Convert a reBEN archive; return the manifest.

    Raises:
        InputNotFoundError: the archive, its metadata or its folders are missing.
        ArchiveMetadataError: ``metadata.parquet`` is unusable.
        EmptyInputError: no patch can be imported.
        PatchMissingError, RasterFormatError, CorruptRasterError, ...: the first broken patch,
            under ``on_error: fail``.
    """
    t0 = time.perf_counter()
    archive, out = job_paths(cfg.archive, "reBEN archive", cfg.out, cfg.overwrite)
    layout = RebenLayout(archive)
    plan = plan_import(layout)
    broken = [p for p in plan.problems if p["kind"] in BROKEN_KINDS]
    if broken and cfg.on_error == "fail":
        first = broken[0]
        more = f" ({len(broken) - 1} more broken patch(es); --on-error skip imports the rest)"
        raise error_from_name(first["error_type"], first["message"] + more)
    n_read = plan.table.num_rows
    if n_read == 0:
        raise EmptyInputError(f"{layout.metadata} lists {plan.n_listed} patch(es), none of which "
                              f"can be imported ({len(broken)} broken); nothing to import")
    list_s = time.perf_counter() - t0
    with staged_output(out, cfg.overwrite) as staging:
        staged = DatasetLayout(staging)
        staged.create_task_folders()
        pq.write_table(plan.table, staged.import_plan, row_group_size=cfg.patches_per_task)
        n_tasks = pq.ParquetFile(staged.import_plan).num_row_groups  # task i reads row group i
        spark = get_session(cfg.spark)
        cfg_json, staging_str, archive_str = cfg.model_dump_json(), str(staging), str(archive)
        plan_str = str(staged.import_plan)

        def task(task_id: int) -> dict:
            return import_chunk(task_id, archive_str, plan_str, Path(staging_str),
                                ImportV2Config.model_validate_json(cfg_json))

        run = run_indexed_tasks(spark, n_tasks, task, ARCHIVE_SUMMARY_FIELDS,
                                failure_dir=staged.failures)
        summaries = run.rows
        failed = [s for s in summaries if s["status"] != "ok"]
        if failed:
            raise first_failure(failed, n_tasks, "chunks")
        problems = plan.problems + [p for s in summaries for p in json.loads(s["problems"] or "[]")]
        if sum(s["n_patches"] for s in summaries) == 0:
            broken = [p for p in problems if p["kind"] in BROKEN_KINDS]
            first = f" The first: {broken[0]['message']}" if broken else ""
            raise EmptyInputError(f"{layout.metadata} lists {plan.n_listed} patch(es), none of "
                                  f"which could be imported ({len(broken)} broken); nothing to "
                                  f"import.{first}")
        report = archive_report("import-v2", problems, plan.n_listed, (*BROKEN_KINDS, *WARNING_KINDS))
        report["excluded_list"] = layout.excluded.name
        kinds = Counter(p["kind"] for p in problems)
        failures = failures_of(problems)
        manifest = {
            "format": FORMAT, "source": "reben-import",
            "config": json.loads(cfg.model_dump_json()) | {"split": "metadata", "reference_maps": True},
            "versions": package_versions(),
            "counts": {
                "products": 0, "products_failed": 0,
                "patches_listed": plan.n_listed,
                **failure_counts(failures),
                **{COUNT_KEYS[k]: kinds.get(k, 0) for k in WARNING_KINDS},
                "patches_cut": sum(s["n_patches"] for s in summaries),
                "patches_with_nodata": sum(s["n_nodata"] for s in summaries),
                "v1_name_collisions": 0, "task_attempts_retried": run.failed_attempts,
            },
            "archive": report,
            "products": [], "failures": failures,
            "timings_s": {"list_s": list_s},
        }
        finish_labeled(staging, summaries, manifest, schema=IMPORTED_V2_PATCH_SCHEMA)
        seal_staging(staging, manifest, staged.import_config, cfg.model_dump_json(indent=2))
    return manifest
