"""The body of one Spark build task: one product in, Parquet files and a summary out.

No pixel leaves the task. It reads strips of patch rows, cuts patches, and, when a CLC layer
is given, labels them (SedonaDB join / rasterized reference maps), screens snow, cloud, shadow
and no data, assigns splits and accumulates train statistics, then writes the kept patches as
Parquet row groups into the staging folder (``patches/split=<split>/<product>.parquet``) and
their metadata into ``_parts/``. It returns one small summary row to the driver.

Named errors are caught and returned as data, so the driver can re-raise them by name
(``on_error: fail``) or list them (``on_error: skip``).
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
import rasterio
import shapely
from pyproj import Transformer

from bigearthnet.config import BuildConfig
from bigearthnet.dataset.io import parquet_writer
from bigearthnet.dataset.schema import (
    LABEL_COLUMNS,
    PATCH_SCHEMA,
    REFERENCE_MAP,
    TILING_COLUMNS,
    PatchSchema,
    encode_tensor,
)
from bigearthnet.dataset.stats import BandHistograms
from bigearthnet.dataset.tiling import strip_patches, tiling_columns
from bigearthnet.errors import BigEarthNetError
from bigearthnet.sentinel2.grid import PatchGrid
from bigearthnet.sentinel2.naming import ProductName, parse_product_name
from bigearthnet.sentinel2.products import ProductSource
from bigearthnet.sentinel2.reader import OpenProduct

SUMMARY_FIELDS: tuple[tuple[str, str], ...] = (
    ("task_id", "long"), ("product_id", "string"), ("status", "string"),
    ("error_type", "string"), ("error_message", "string"),
    ("n_patches", "long"), ("n_nodata", "long"), ("n_cols", "int"), ("n_rows", "int"),
    ("epsg", "int"), ("files", "string"), ("counts", "string"), ("clc", "string"),
    ("histograms", "binary"), ("cpu_s", "double"), ("wall_s", "double"),
    ("label_s", "double"), ("peak_rss_mb", "double"),
)
SUMMARY_DDL = ", ".join(f"{n} {t}" for n, t in SUMMARY_FIELDS)
SPLITS = ("train", "validation", "test")

METADATA_SCHEMA = pa.schema([
    ("patch_id", pa.string()), ("labels", pa.list_(pa.string())), ("split", pa.string()),
    ("country", pa.string()), ("s1_name", pa.string()), ("s2v1_name", pa.string()),
    ("contains_seasonal_snow", pa.bool_()), ("contains_cloud_or_shadow", pa.bool_()),
    ("labels_43", pa.list_(pa.string())), ("tile_id", pa.string()), ("product_id", pa.string()),
    ("footprint_wgs84", pa.binary()),
])
"""``metadata.parquet``: the reBEN columns, then ours (footprint as WKB in EPSG:4326)."""


def labeled_schema(reference_maps: bool) -> PatchSchema:
    """The patch table schema of a labeled build."""
    extra = (REFERENCE_MAP,) if reference_maps else ()
    return PatchSchema(TILING_COLUMNS + LABEL_COLUMNS + extra)


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _SplitWriters:
    """One Parquet file per split value, opened lazily."""

    def __init__(self, root: Path, product_id: str, schema: pa.Schema, compression: str,
                 tensor_compression: str = "none"):
        self.root, self.product_id, self.schema = root, product_id, schema
        self.compression, self.tensor_compression = compression, tensor_compression
        self.stack = ExitStack()
        self.paths: dict[str, Path] = {}
        self.writers: dict[str, object] = {}

    def write(self, split: str | None, batch: pa.RecordBatch) -> None:
        """Append ``batch`` as one row group to the file of ``split`` (None: unpartitioned)."""
        if batch.num_rows == 0:
            return
        if split not in self.writers:
            folder = self.root if split is None else self.root / f"split={split}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{self.product_id}.parquet.inprogress"
            self.paths[split] = path
            self.writers[split] = self.stack.enter_context(parquet_writer(path, self.schema, self.compression, self.tensor_compression))
        self.writers[split].write_batch(batch, row_group_size=batch.num_rows)

    def commit(self) -> list[str]:
        self.stack.close()
        done = []
        for _, path in sorted(self.paths.items(), key=lambda kv: str(kv[0])):
            final = path.with_name(path.name.removesuffix(".inprogress"))
            os.replace(path, final)
            done.append(final)
        return done

    def abort(self) -> None:
        self.stack.close()
        for path in self.paths.values():
            path.unlink(missing_ok=True)


class TileLabeler:
    """Labels, quality flags, drop reasons and splits for the patches of one tile."""

    def __init__(self, cfg: BuildConfig, source: ProductSource, name: ProductName,
                 grid: PatchGrid, crs, epsg: int):
        from bigearthnet.clc.reader import read_clc_bbox
        from bigearthnet.labeling.sedona import code_areas
        from bigearthnet.quality import read_name_list

        self.cfg, self.name, self.grid = cfg, name, grid
        t0 = time.perf_counter()
        extent = (grid.ulx, grid.uly - grid.n_rows * 1200, grid.ulx + grid.n_cols * 1200, grid.uly)
        self.codes, self.geoms, self.clc_stats = read_clc_bbox(cfg.clc, extent, f"EPSG:{epsg}")
        self.areas = None
        if cfg.label_rule == "v1":
            rows, cols = np.divmod(np.arange(grid.n_patches), grid.n_cols)
            left, bottom, right, top = grid.bounds(cols, rows)
            footprints = shapely.box(left, bottom, right, top)
            areas = code_areas(footprints, np.arange(grid.n_patches), self.geoms, self.codes)
            self.area_index = np.asarray(areas["patch_index"])
            self.areas = areas
        self.seconds = time.perf_counter() - t0
        self.exclude: set[str] = set()
        for path in cfg.exclude_lists:
            self.exclude.update(read_name_list(path))
        self.official = None
        if cfg.split == "official":
            self.official = _official_lookup(cfg.official_splits)
        self.to_wgs84 = Transformer.from_crs(epsg, 4326, always_xy=True)
        self.country = _country(cfg, name)

    def label_strip(self, row0: int, n_rows: int) -> pa.Table:
        """The label table (``LABEL_SCHEMA`` of ``labeling.rules``) for a strip."""
        from bigearthnet.labeling.rules import labels_reben, labels_v1, reference_maps

        t0 = time.perf_counter()
        n_cols = self.grid.n_cols
        maps = None
        if self.cfg.reference_maps or self.cfg.label_rule == "reben":
            maps = reference_maps(self.geoms, self.codes, self.grid.ulx,
                                  self.grid.uly - row0 * 1200, n_rows, n_cols)
        if self.cfg.label_rule == "v1":
            lo, hi = row0 * n_cols, (row0 + n_rows) * n_cols
            a, b = np.searchsorted(self.area_index, [lo, hi])
            part = self.areas.slice(a, b - a)
            part = part.set_column(0, "patch_index",
                                   pa.array(np.asarray(part["patch_index"]) - lo, pa.int32()))
            table = labels_v1(part, n_rows * n_cols, self.cfg.min_area_m2)
        else:
            table = labels_reben(maps, self.cfg.max_unlabeled_fraction)
        self.seconds += time.perf_counter() - t0
        return table, maps

    def decide(self, cols: dict[str, pa.Array], labels: pa.Table, scl: np.ndarray):
        """Quality fractions, flags, first drop reason and split for each patch of a strip."""
        from bigearthnet.quality import drop_reason, quality_flags, scl_fractions
        from bigearthnet.splits import random_split, reben_split

        q = self.cfg.quality
        fractions = scl_fractions(scl)
        flags = quality_flags(fractions, q)
        v1 = np.asarray(cols["patch_id_v1"].to_pylist(), dtype=object)
        listed = np.fromiter((n in self.exclude for n in v1), bool, len(v1))
        reasons = drop_reason(
            q, snow_fraction=fractions["snow"], cloud_shadow_fraction=fractions["cloud_shadow"],
            nodata_fraction=fractions["nodata"], band_nodata=np.asarray(cols["has_nodata"]),
            listed=listed, unlabeled_drop=np.asarray(labels["drop_unlabeled"]),
        )
        if self.cfg.split == "random":
            split = random_split(cols["patch_id"].to_pylist(), self.cfg.split_seed, self.cfg.split_fractions)
        elif self.cfg.split == "reben":
            split = reben_split(np.asarray(cols["col"]), np.asarray(cols["row"]),
                                self.grid.n_cols, self.grid.n_rows)
        else:
            split = np.array([self.official.get(n) for n in v1], dtype=object)
            missing = np.array([r is None and s is None for r, s in zip(reasons, split)], dtype=bool)
            reasons = reasons.copy()
            reasons[missing] = "not_in_split"
        return fractions, flags, reasons, split

    def metadata(self, cols: dict[str, pa.Array], labels: pa.Table, flags, split, keep) -> pa.Table:
        """``metadata.parquet`` rows of the kept patches of a strip."""
        idx = np.nonzero(keep)[0]
        foot = shapely.from_wkb(np.asarray(cols["footprint"].take(pa.array(idx)).to_pylist(), dtype=object))
        foot = shapely.segmentize(foot, 400.0)  # follow the UTM->lon/lat curvature
        wgs = shapely.transform(foot, lambda xy: np.column_stack(self.to_wgs84.transform(xy[:, 0], xy[:, 1])))
        take = pa.array(idx)
        n = len(idx)
        return pa.table({
            "patch_id": cols["patch_id"].take(take),
            "labels": labels["labels_19"].take(take),
            "split": pa.array(split[idx].tolist(), pa.string()),
            "country": pa.array([self.country] * n, pa.string()),
            "s1_name": pa.nulls(n, pa.string()),
            "s2v1_name": cols["patch_id_v1"].take(take),
            "contains_seasonal_snow": pa.array(flags["contains_seasonal_snow"][idx]),
            "contains_cloud_or_shadow": pa.array(flags["contains_cloud_or_shadow"][idx]),
            "labels_43": labels["labels_43"].take(take),
            "tile_id": cols["tile_id"].take(take),
            "product_id": cols["product_id"].take(take),
            "footprint_wgs84": pa.array(list(shapely.to_wkb(wgs)), pa.binary()),
        }, schema=METADATA_SCHEMA)


def _official_lookup(folder: str | None) -> dict[str, str]:
    from bigearthnet.errors import ConfigError
    from bigearthnet.quality import read_name_list

    if not folder:
        raise ConfigError("split: official needs official_splits: a folder with train/val/test CSVs")
    lookup: dict[str, str] = {}
    for split, stem in zip(SPLITS, ("train", "val", "test")):
        candidates = [Path(folder) / f"{stem}{ext}" for ext in (".csv", ".csv.bz2", ".csv.gz")]
        path = next((c for c in candidates if c.exists()), candidates[0])
        for patch in read_name_list(path):
            lookup.setdefault(patch, split)
    return lookup


def _country(cfg: BuildConfig, name: ProductName) -> str | None:
    for key in (name.name, name.tile):
        if key in cfg.countries:
            return cfg.countries[key]
    from bigearthnet.sentinel2.catalog import product_countries

    found = product_countries().get((name.mission, name.datatake, name.orbit, name.tile), set())
    return next(iter(found)) if len(found) == 1 else None


def build_product(task_id: int, source: ProductSource, staging: Path, cfg: BuildConfig) -> dict:
    """Tile (and label) one product into the staging folder; return its summary."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary: dict = {name: None for name, _ in SUMMARY_FIELDS}
    summary.update(task_id=task_id, product_id=source.product_id, n_patches=0, n_nodata=0,
                   label_s=0.0)
    labeled = cfg.clc is not None
    schema = (labeled_schema(cfg.reference_maps) if labeled else PATCH_SCHEMA)
    arrow_schema = schema.to_arrow()
    writers = _SplitWriters(staging / "patches", source.product_id, arrow_schema, cfg.compression,
                            cfg.tensor_compression)
    meta_path = staging / "_parts" / "metadata" / f"{source.product_id}.parquet"
    meta_tables: list[pa.Table] = []
    counts: Counter = Counter()
    hist = BandHistograms()
    try:
        name = parse_product_name(source.product_id, source=source.path)
        env = {"GDAL_NUM_THREADS": str(cfg.gdal_threads), "GDAL_CACHEMAX": int(cfg.gdal_cache_mb)}
        with rasterio.Env(**env), OpenProduct(source) as product:
            grid = product.grid
            summary.update(n_cols=grid.n_cols, n_rows=grid.n_rows, epsg=product.epsg)
            labeler = TileLabeler(cfg, source, name, grid, product.crs, product.epsg) if labeled else None
            patches = None
            for strip in product.strips(cfg.strip_rows):
                # The previous strip is fully written (Parquet copies into its pages): reuse.
                patches = strip_patches(strip, grid.n_cols, reuse=patches)
                cols = tiling_columns(name, grid, product.epsg, strip.row0, strip.n_rows, patches)
                n = len(cols["patch_id"])
                summary["n_patches"] += n
                summary["n_nodata"] += int(cols["has_nodata"].true_count)
                if labeler is None:
                    writers.write(None, pa.RecordBatch.from_arrays(
                        [cols[c] for c in arrow_schema.names], schema=arrow_schema))
                    continue
                labels, maps = labeler.label_strip(strip.row0, strip.n_rows)
                fractions, flags, reasons, split = labeler.decide(cols, labels, patches["scl"])
                for c in ("labels_43", "labels_19", "clc_codes", "clc_area_fractions",
                          "unlabeled_fraction"):
                    cols[c] = labels[c].combine_chunks()
                for c in ("multi_hot_43", "multi_hot_19"):
                    cols[c] = labels[c].combine_chunks().cast(pa.binary())
                for key in ("cloud", "shadow", "snow", "nodata"):
                    cols[f"{key}_fraction"] = pa.array(fractions[key], pa.float32())
                cols.update({k: pa.array(v) for k, v in flags.items()})
                if cfg.reference_maps:
                    cols[REFERENCE_MAP.name] = encode_tensor(maps, REFERENCE_MAP)
                batch = pa.RecordBatch.from_arrays([cols[c] for c in arrow_schema.names],
                                                   schema=arrow_schema)
                keep = np.array([r is None for r in reasons], dtype=bool)
                counts.update(f"dropped_{r}" for r in reasons[~keep])
                for s in SPLITS:
                    sel = np.nonzero(keep & (split == s))[0]
                    counts[f"kept_{s}"] += len(sel)
                    writers.write(s, batch.take(pa.array(sel)))
                    if s == "train" and len(sel):
                        for res in (10, 20, 60):
                            hist.add_group(res, patches[f"bands_{res}m"][sel])
                meta_tables.append(labeler.metadata(cols, labels, flags, split, keep))
            if labeler is not None:
                summary["label_s"] = labeler.seconds
                summary["clc"] = json.dumps(labeler.clc_stats, sort_keys=True)
        files = writers.commit()
        if labeled:
            import pyarrow.parquet as pq

            meta_path.parent.mkdir(parents=True, exist_ok=True)
            table = pa.concat_tables(meta_tables) if meta_tables else METADATA_SCHEMA.empty_table()
            pq.write_table(table, meta_path)
            summary["histograms"] = hist.to_bytes()
        summary.update(status="ok", files=json.dumps([str(f.relative_to(staging)) for f in files]),
                       counts=json.dumps(dict(counts), sort_keys=True))
    except BigEarthNetError as exc:
        writers.abort()
        meta_path.unlink(missing_ok=True)
        summary.update(status="failed", error_type=type(exc).__name__, error_message=str(exc),
                       n_patches=0, n_nodata=0)
    summary.update(
        cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0,
        peak_rss_mb=peak_rss_mb(),
    )
    return summary
