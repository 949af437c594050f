"""``bigearthnet build``: the distributed archive build, driven from the Spark driver.

The driver only lists products and collects small summary rows; each Spark task runs the build
stages on one product (:func:`bigearthnet.stages.product.build_product`) and writes its Parquet
files itself. The driver then merges the parts (:mod:`bigearthnet.stages.finish`) and commits
the folder atomically.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from bigearthnet.config import BuildConfig
from bigearthnet.dataset.io import check_output, staged_output, write_json
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.errors import BuildFailedError, error_from_name
from bigearthnet.sentinel2.products import ProductSource, discover_products
from bigearthnet.spark.session import get_session
from bigearthnet.spark.tasks import first_failure, run_indexed_tasks
from bigearthnet.stages.finish import check_duplicate_patch_ids, finish_labeled, make_manifest
from bigearthnet.stages.product import build_product
from bigearthnet.stages.write import SUMMARY_FIELDS


def _run_tasks(spark, sources: list[ProductSource], staging: Path, cfg: BuildConfig) -> list[dict]:
    payload = [s.to_json() for s in sources]
    cfg_json, staging_str = cfg.model_dump_json(), str(staging)

    def task(task_id: int) -> dict:
        return build_product(task_id, ProductSource.from_json(payload[task_id]), Path(staging_str),
                             BuildConfig.model_validate_json(cfg_json))

    # on_error: fail ends the job at the first failure (the other tasks are cancelled).
    failures = DatasetLayout(staging).failures if cfg.on_error == "fail" else None
    return run_indexed_tasks(spark, len(sources), task, SUMMARY_FIELDS, failure_dir=failures)


def run_build(cfg: BuildConfig) -> dict:
    """Build the dataset described by ``cfg``; return the manifest.

    Raises:
        BigEarthNetError: a named error for bad input (``on_error: fail``), or
            BuildFailedError when every product failed.
    """
    t0 = time.perf_counter()
    out = Path(cfg.out).resolve()
    check_output(out, cfg.overwrite)
    sources, discovery_failures = discover_products(cfg.products)
    if discovery_failures and cfg.on_error == "fail":
        first = discovery_failures[0]
        raise error_from_name(first.error_type, first.message)
    check_duplicate_patch_ids(sources)
    t_discover = time.perf_counter() - t0

    with staged_output(out, cfg.overwrite) as staging:
        DatasetLayout(staging).create_task_folders()
        spark = get_session(cfg.spark, master=None)
        t1 = time.perf_counter()
        summaries = _run_tasks(spark, sources, staging, cfg) if sources else []
        t_tiling = time.perf_counter() - t1
        failed = [s for s in summaries if s["status"] != "ok"]
        if failed and cfg.on_error == "fail":
            raise first_failure(failed, len(sources), "products")
        ok = [s for s in summaries if s["status"] == "ok"]
        if not ok:
            raise BuildFailedError(
                "no product could be built: "
                + "; ".join(f"{f.path}: {f.message}" for f in discovery_failures)
                + "; ".join(f"{s['product_id']}: {s['error_message']}" for s in failed)
            )
        manifest = make_manifest(cfg, ok, failed, discovery_failures,
                                 {"discover_s": t_discover, "tasks_wall_s": t_tiling})
        if cfg.clc is not None:
            t2 = time.perf_counter()
            finish_labeled(staging, ok, manifest)
            manifest["timings_s"]["merge_s"] = time.perf_counter() - t2
        layout = DatasetLayout(staging)
        shutil.rmtree(layout.parts, ignore_errors=True)  # task parts, merged above
        write_json(layout.manifest, manifest)
        layout.build_config.write_text(cfg.model_dump_json(indent=2) + "\n")
    manifest["timings_s"]["total_s"] = time.perf_counter() - t0
    return manifest
