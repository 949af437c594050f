"""The body of one Spark build task: one product in, Parquet files and a summary out.

No pixel leaves the task: it reads strips, cuts patches, writes them as Parquet row groups
into the staging folder and returns a small summary row to the driver. Named errors are caught
and returned as data, so the driver can re-raise them by name (``on_error: fail``) or list them
(``on_error: skip``).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pyarrow as pa
import rasterio

from bigearthnet.config import BuildConfig
from bigearthnet.dataset.io import parquet_writer
from bigearthnet.dataset.schema import PATCH_SCHEMA
from bigearthnet.dataset.tiling import strip_patches, tiling_columns
from bigearthnet.errors import BigEarthNetError
from bigearthnet.sentinel2.naming import parse_product_name
from bigearthnet.sentinel2.products import ProductSource
from bigearthnet.sentinel2.reader import OpenProduct

SUMMARY_FIELDS: tuple[tuple[str, str], ...] = (
    ("task_id", "long"), ("product_id", "string"), ("status", "string"),
    ("error_type", "string"), ("error_message", "string"),
    ("n_patches", "long"), ("n_nodata", "long"), ("n_cols", "int"), ("n_rows", "int"),
    ("epsg", "int"), ("files", "string"), ("cpu_s", "double"), ("wall_s", "double"),
    ("peak_rss_mb", "double"),
)
SUMMARY_DDL = ", ".join(f"{n} {t}" for n, t in SUMMARY_FIELDS)


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_product(task_id: int, source: ProductSource, staging: Path, cfg: BuildConfig) -> dict:
    """Tile one product into ``staging/patches/<product>.parquet``; return its summary."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary: dict = {name: None for name, _ in SUMMARY_FIELDS}
    summary.update(task_id=task_id, product_id=source.product_id, n_patches=0, n_nodata=0)
    out_dir = staging / "patches"
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{source.product_id}.parquet"
    tmp = final.with_name(final.name + ".inprogress")
    arrow_schema = PATCH_SCHEMA.to_arrow()
    try:
        name = parse_product_name(source.product_id, source=source.path)
        env = {"GDAL_NUM_THREADS": str(cfg.gdal_threads), "GDAL_CACHEMAX": int(cfg.gdal_cache_mb)}
        with rasterio.Env(**env), OpenProduct(source) as product:
            grid = product.grid
            summary.update(n_cols=grid.n_cols, n_rows=grid.n_rows, epsg=product.epsg)
            with parquet_writer(tmp, arrow_schema, cfg.compression) as writer:
                for strip in product.strips(cfg.strip_rows):
                    patches = strip_patches(strip, grid.n_cols)
                    cols = tiling_columns(name, grid, product.epsg, strip.row0, strip.n_rows, patches)
                    batch = pa.RecordBatch.from_arrays(
                        [cols[n] for n in arrow_schema.names], schema=arrow_schema
                    )
                    writer.write_batch(batch, row_group_size=batch.num_rows)
                    summary["n_patches"] += batch.num_rows
                    summary["n_nodata"] += int(cols["has_nodata"].true_count)
        os.replace(tmp, final)
        summary.update(status="ok", files=str(final.relative_to(staging)))
    except BigEarthNetError as exc:
        tmp.unlink(missing_ok=True)
        summary.update(status="failed", error_type=type(exc).__name__, error_message=str(exc),
                       n_patches=0, n_nodata=0)
    summary.update(
        cpu_s=time.process_time() - cpu0, wall_s=time.perf_counter() - wall0,
        peak_rss_mb=peak_rss_mb(),
    )
    return summary
