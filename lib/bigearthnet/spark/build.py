"""``bigearthnet build``: the distributed archive build, driven from the Spark driver.

The driver only lists products and collects small summary rows; each Spark task runs the build
stages on one product (:func:`bigearthnet.stages.product.build_product`) and writes its Parquet
files itself. The driver then merges the parts (:mod:`bigearthnet.stages.finish`) and commits
the folder atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

from bigearthnet.config import BuildConfig
from bigearthnet.dataset.delta import commit_delta_tables, has_delta_tables
from bigearthnet.dataset.io import check_output, staged_output
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.objectstore import S3Build, s3_build
from bigearthnet.errors import BigEarthNetError, BuildFailedError, error_from_name
from bigearthnet.sentinel2.products import ProductSource, discover_products
from bigearthnet.spark.sedona_labels import read_tile_labels, sedona_spark_labels
from bigearthnet.spark.session import get_session
from bigearthnet.spark.tasks import TaskRun, first_failure, run_indexed_tasks
from bigearthnet.stages.append import ExistingDataset, new_version
from bigearthnet.stages.finish import (
    check_duplicate_patch_ids,
    finish_labeled,
    make_manifest,
    seal_staging,
)
from bigearthnet.stages.plan import TilePlan, plan_product
from bigearthnet.stages.product import build_product
from bigearthnet.stages.write import SUMMARY_FIELDS, new_summary

PLAN_ENGINES = {"sedona-spark": sedona_spark_labels}
"""Label engines that run before the pixel tasks, over all tiles at once, by config name. Each
writes its tiles' polygons and areas into the staging folder (see
:mod:`bigearthnet.spark.sedona_labels`) and returns the tiles' CLC read statistics."""


def _plan_all(sources: list[ProductSource]) -> tuple[dict[int, TilePlan], dict[int, dict]]:
    """The plan stage of every product, on the driver (file metadata only, no pixel)."""
    plans, failed = {}, {}
    for task_id, source in enumerate(sources):
        try:
            plans[task_id] = plan_product(source)
        except BigEarthNetError as exc:
            row = new_summary(task_id, source.product_id)
            row.update(status="failed", error_type=type(exc).__name__, error_message=str(exc),
                       cpu_s=0.0, wall_s=0.0, peak_rss_mb=0.0)
            failed[task_id] = row
    return plans, failed


def _run_tasks(spark, sources: list[ProductSource], staging: Path, cfg: BuildConfig,
               label_stats: dict[int, dict] | None = None,
               failed: dict[int, dict] | None = None, remote: S3Build | None = None) -> TaskRun:
    payload = [s.to_json() for s in sources]
    task_io = remote.task if remote is not None else None  # S3 settings (and run) for tasks
    cfg_json, staging_str = cfg.model_dump_json(), str(staging)
    failed = failed or {}

    def task(task_id: int) -> dict:
        if task_id in failed:  # failed in the plan stage, on the driver
            return failed[task_id]
        labels = None
        if label_stats is not None:  # the sedona-spark engine ran before the pixel tasks
            def labels(stats: dict = label_stats[task_id]):
                return read_tile_labels(Path(staging_str), task_id, stats)

        def run(folder: Path) -> dict:
            return build_product(task_id, ProductSource.from_json(payload[task_id]), folder,
                                 BuildConfig.model_validate_json(cfg_json), labels)

        return run(Path(staging_str)) if task_io is None else task_io.run(run, Path(staging_str))

    # on_error: fail ends the job at the first failure (the other tasks are cancelled).
    failures = None
    if cfg.on_error == "fail":
        failures = (remote.failure_board() if remote is not None and remote.out is not None
                    else DatasetLayout(staging).failures)
    return run_indexed_tasks(spark, len(sources), task, SUMMARY_FIELDS, failure_dir=failures)


def run_build(cfg: BuildConfig) -> dict:
    """Build the dataset described by ``cfg``; return the manifest.

    With ``cfg.append`` the products already in the dataset at ``cfg.out`` are skipped and the
    new ones are added to it (:mod:`bigearthnet.stages.append`); a run that finds nothing new
    leaves the dataset untouched, and where there is no dataset yet the run is a first build
    (so a scheduled job can always pass ``--append``).

    Raises:
        BigEarthNetError: a named error for bad input (``on_error: fail``), or
            BuildFailedError when every product failed.
    """
    t0 = time.perf_counter()
    remote = s3_build(cfg)  # None unless an s3:// URI is involved; checks an s3:// output
    out = None if remote is not None and remote.out is not None else Path(cfg.out).resolve()
    if out is not None and not cfg.append:
        check_output(out, cfg.overwrite)
    sources, discovery_failures = discover_products(cfg.products)
    if discovery_failures and cfg.on_error == "fail":
        first = discovery_failures[0]
        raise error_from_name(first.error_type, first.message)
    check_duplicate_patch_ids(sources)
    t_discover = time.perf_counter() - t0

    try:
        with (staged_output(out, overwrite=cfg.overwrite or cfg.append) if out is not None
              else remote.staged()) as staging:
            existing, skipped = None, []
            if cfg.append and out is not None and out.exists():  # under the output lock
                existing = ExistingDataset.load(out, cfg)
                sources, skipped = existing.partition(sources)
                if not sources and not discovery_failures:
                    raise _NothingNew(existing.manifest, skipped)
            manifest = _build_into(staging, cfg, sources, discovery_failures, existing, skipped,
                                   t_discover, remote)
    except _NothingNew as nothing:  # the dataset is left as it was
        manifest = {**nothing.manifest, "unchanged": True}
        manifest["counts"] = {**manifest["counts"], "products_added": 0,
                              "products_skipped_existing": len(nothing.skipped)}
        manifest["failures"] = []
    manifest["timings_s"]["total_s"] = time.perf_counter() - t0
    return manifest


class _NothingNew(Exception):
    """Internal: an append found no new product (the staging folder is dropped)."""

    def __init__(self, manifest: dict, skipped: list[str]):
        super().__init__("nothing new")
        self.manifest, self.skipped = manifest, skipped


def _build_into(staging: Path, cfg: BuildConfig, sources: list[ProductSource],
                discovery_failures: list, existing: ExistingDataset | None, skipped: list[str],
                t_discover: float, remote: S3Build | None = None) -> dict:
    """Run the stages of ``sources`` into ``staging`` and write everything but ``_SUCCESS``.

    With an ``s3://`` output (``remote``), ``staging`` is the driver's local folder: the tasks
    upload their files under the run prefix, and the metadata parts are pulled back to merge.
    """
    engine_first = cfg.clc is not None and cfg.label_engine in PLAN_ENGINES
    DatasetLayout(staging).create_task_folders()
    spark = get_session(cfg.spark, master=None, require_sedona=engine_first)
    label_stats, plan_failed, t_labels = None, {}, 0.0
    if engine_first and sources:
        t1 = time.perf_counter()
        plans, plan_failed = _plan_all(sources)
        if plan_failed and cfg.on_error == "fail":
            raise first_failure(list(plan_failed.values()), len(sources), "products")
        engine = PLAN_ENGINES[cfg.label_engine]
        label_stats = engine(spark, plans, cfg, staging) if plans else {}
        t_labels = time.perf_counter() - t1
    t1 = time.perf_counter()
    run = (_run_tasks(spark, sources, staging, cfg, label_stats, plan_failed, remote)
           if sources else TaskRun())
    summaries = run.rows
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
    timings = {"discover_s": t_discover, "tasks_wall_s": t_tiling}
    if engine_first:
        timings["labels_plan_wall_s"] = t_labels
    added = [s["product_id"] for s in ok]
    if existing is not None:
        existing.link_into(staging)
        ok = existing.summaries() + ok
    manifest = make_manifest(cfg, ok, failed, discovery_failures, timings)
    manifest["history"] = new_version(
        cfg, existing.history if existing else [], added, skipped,
        [s["product_id"] for s in failed], sum(s["n_patches"] for s in ok if s["product_id"] in added))
    counts = manifest["counts"]
    counts["task_attempts_retried"] = run.failed_attempts
    counts["products_added"] = len(added)
    counts["products_skipped_existing"] = len(skipped)
    if cfg.clc is not None:
        t2 = time.perf_counter()
        if remote is not None:
            remote.pull_parts(staging)
        finish_labeled(staging, ok, manifest)
        manifest["timings_s"]["merge_s"] = time.perf_counter() - t2
    if cfg.delta or (existing is not None and has_delta_tables(existing.root)):  # --delta
        t2 = time.perf_counter()
        manifest["delta"] = commit_delta_tables(staging, len(manifest["history"]),
                                                existing.root if existing is not None else None)
        manifest["timings_s"]["delta_s"] = time.perf_counter() - t2
    seal_staging(staging, manifest, DatasetLayout(staging).build_config, cfg.model_dump_json(indent=2))
    return manifest
