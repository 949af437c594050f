"""One build task: a product in, Parquet files and a summary row out, by composing the stages.

plan -> labels -> pixels -> screen -> split -> write, strip by strip; no pixel leaves the task.
The executor (:mod:`bigearthnet.spark.build`) only calls :func:`build_product` once per product.
Named errors are caught and returned as data, so the driver can re-raise them by name
(``on_error: fail``) or list them (``on_error: skip``).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import shapely

from bigearthnet.config import BuildConfig
from bigearthnet.dataset.io import disk_full, is_disk_full, output_of
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.schema import PATCH_SCHEMA, REFERENCE_MAP, encode_tensor, labeled_schema
from bigearthnet.dataset.stats import BandHistograms
from bigearthnet.errors import BigEarthNetError, NoDataTileError
from bigearthnet.sentinel2.naming import ProductName, parse_product_name
from bigearthnet.sentinel2.products import ProductSource
from bigearthnet.sentinel2.reader import OpenProduct
from bigearthnet.stages.labels import (
    TileClc,
    TileLabels,
    no_43_labels,
    read_tile_clc,
    rule_columns,
)
from bigearthnet.stages.pixels import pixel_columns, strip_patches
from bigearthnet.stages.plan import TilePlan, id_columns, plan_from_product
from bigearthnet.stages.screen import ExclusionLists, screen_columns, screen_patches
from bigearthnet.stages.split import SplitRule, mark_unsplit
from bigearthnet.stages.write import (
    SplitWriters,
    finish_summary,
    keep_freed_heap,
    metadata_rows,
    new_summary,
    peak_rss_mb,
    wgs84_footprints,
    write_metadata_part,
)


def tile_country(cfg: BuildConfig, name: ProductName) -> str | None:
    """The tile's country: the config's override, else the products table when unambiguous."""
    for key in (name.name, name.tile):
        if key in cfg.countries:
            return cfg.countries[key]
    from bigearthnet.sentinel2.catalog import product_countries

    found = product_countries().get((name.mission, name.datatake, name.orbit, name.tile), set())
    return next(iter(found)) if len(found) == 1 else None


class _LabeledStrips:
    """The label, screen and split stages of one tile, applied strip by strip."""

    def __init__(self, cfg: BuildConfig, plan: TilePlan,
                 given: tuple[TileClc, pa.Table] | None):
        t0 = time.perf_counter()
        self.cfg, self.plan = cfg, plan
        areas = None
        if given is None:
            self.clc = read_tile_clc(cfg.clc, plan)
        else:
            self.clc, areas = given
        self.read_s = time.perf_counter() - t0
        self.labels = TileLabels(plan, self.clc, cfg, areas)
        self.exclusions = ExclusionLists.load(cfg.exclude_lists)
        self.split_rule = SplitRule.create(cfg.split, cfg.split_seed, cfg.split_fractions,
                                           cfg.official_splits)
        self.country = tile_country(cfg, plan.name)

    @property
    def seconds(self) -> float:
        """Time spent in the label stage."""
        return self.read_s + self.labels.seconds

    def apply(self, cols: dict[str, pa.Array], patches: dict[str, np.ndarray], row0: int,
              n_rows: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Add label and screen columns to ``cols``; return (reasons, split, flags)."""
        labels, maps = self.labels.strip(row0, n_rows)
        names_v1 = cols["patch_id_v1"].to_pylist()
        screening = screen_patches(
            patches["scl"], np.asarray(cols["has_nodata"]),
            self.exclusions.is_listed(names_v1), np.asarray(labels["drop_unlabeled"]),
            self.cfg.quality, no_labels=no_43_labels(labels))
        split = self.split_rule.assign(cols["patch_id"].to_pylist(), names_v1,
                                       np.asarray(cols["col"]), np.asarray(cols["row"]),
                                       self.plan.grid.n_cols, self.plan.grid.n_rows,
                                       self.plan.extent_patches)
        reasons = screening.reasons
        if self.split_rule.kind == "official":
            reasons = mark_unsplit(reasons, split)
        cols.update(rule_columns(labels))
        cols.update(screen_columns(screening))
        if self.cfg.reference_maps:
            cols[REFERENCE_MAP.name] = encode_tensor(maps, REFERENCE_MAP)
        return reasons, split, screening.flags


def build_product(task_id: int, source: ProductSource, staging: Path, cfg: BuildConfig,
                  labels: Callable[[], tuple[TileClc, pa.Table]] | None = None) -> dict:
    """Tile (and label) one product into the staging folder; return its summary row.

    Args:
        task_id: the task's index (summary key).
        source: the product's layers.
        staging: the staging dataset folder.
        cfg: the build config.
        labels: loads this tile's CLC polygons and per (patch, code) areas computed by an
            engine that ran before the task (``sedona-spark``); ``None``: the task reads its
            CLC window and runs the in-task engine (``sedonadb``).
    """
    keep_freed_heap()
    wall0, cpu0, sys0 = time.perf_counter(), time.process_time(), os.times().system
    summary = new_summary(task_id, source.product_id)
    layout = DatasetLayout(staging)
    labeled = cfg.clc is not None
    arrow_schema = (labeled_schema(cfg.reference_maps) if labeled else PATCH_SCHEMA).to_arrow()
    writers = SplitWriters(layout, source.product_id, arrow_schema, cfg.compression,
                           cfg.tensor_compression, cfg.direct_io)
    meta_tables: list[pa.Table] = []
    counts: Counter = Counter()
    hist = BandHistograms()
    try:
        name = parse_product_name(source.product_id, source=source.path)
        env = {"GDAL_NUM_THREADS": str(cfg.gdal_threads), "GDAL_CACHEMAX": int(cfg.gdal_cache_mb)}
        with rasterio.Env(**env), OpenProduct(source) as product:
            plan = plan_from_product(product, name)
            summary.update(n_cols=plan.grid.n_cols, n_rows=plan.grid.n_rows, epsg=plan.epsg)
            stages = _LabeledStrips(cfg, plan, labels() if labels else None) if labeled else None
            patches = None
            seen_data = False
            for strip in product.strips(cfg.strip_rows):
                # The previous strip is fully written (Parquet copies into its pages): reuse.
                patches = strip_patches(strip, plan.grid.n_cols, reuse=patches)
                seen_data = seen_data or any(bool(a.any()) for a in patches.values())
                cols = id_columns(plan, strip.row0, strip.n_rows) | pixel_columns(patches)
                summary["n_patches"] += len(cols["patch_id"])
                summary["n_nodata"] += int(cols["has_nodata"].true_count)
                if stages is None:
                    writers.write(None, pa.RecordBatch.from_arrays(
                        [cols[c] for c in arrow_schema.names], schema=arrow_schema))
                    continue
                reasons, split, flags = stages.apply(cols, patches, strip.row0, strip.n_rows)
                batch = pa.RecordBatch.from_arrays([cols[c] for c in arrow_schema.names],
                                                   schema=arrow_schema)
                keep = np.array([r is None for r in reasons], dtype=bool)
                counts.update(f"dropped_{r}" for r in reasons[~keep])

                def add_train(sel: np.ndarray, patches: dict = patches) -> None:
                    for res in (10, 20, 60):
                        hist.add_group(res, patches[f"bands_{res}m"][sel])

                writers.write_kept(batch, keep, split, counts, on_train=add_train)
                boxes = shapely.from_wkb(np.asarray(
                    cols["footprint"].take(pa.array(np.nonzero(keep)[0])).to_pylist(), dtype=object))
                meta_tables.append(metadata_rows(cols, keep, split, flags, stages.country,
                                                 wgs84_footprints(boxes, plan.epsg)))
            if not seen_data:
                raise NoDataTileError(
                    f"product {source.product_id}: every pixel of its 12 bands and SCL is 0 (no "
                    f"data) in {source.path}; the product holds no image. Re-download it, or "
                    "remove it from the input (on_error: skip builds the others)."
                )
            if stages is not None:
                summary["label_s"] = stages.seconds
                summary["clc"] = json.dumps(stages.clc.stats, sort_keys=True)
        files = writers.commit()
        if labeled:
            write_metadata_part(layout, source.product_id, meta_tables)
        finish_summary(summary, layout, files, counts, hist if labeled else None)
    except (BigEarthNetError, OSError) as exc:
        if not isinstance(exc, BigEarthNetError):
            if not is_disk_full(exc):
                raise
            exc = disk_full(output_of(staging), exc)
        writers.abort()
        layout.metadata_part(source.product_id).unlink(missing_ok=True)
        summary.update(status="failed", error_type=type(exc).__name__, error_message=str(exc),
                       n_patches=0, n_nodata=0)
    summary.update(cpu_s=time.process_time() - cpu0, cpu_sys_s=os.times().system - sys0,
                   wall_s=time.perf_counter() - wall0, peak_rss_mb=peak_rss_mb())
    return summary
