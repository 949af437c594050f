"""The ``sedona-spark`` label engine: the labels stage as one Apache Sedona plan over all tiles.

It runs on the driver's session before the pixel tasks, from the plan stage's footprints only:

1. **CLC as a DataFrame**: Sedona's GeoPackage reader, codes validated with the same named
   errors as the SedonaDB engine (:func:`bigearthnet.spark.sedona.clc_dataframe`, ``as_read``).
2. **Tile windows**, a Sedona spatial join: every CLC polygon that intersects a tile's query box
   in EPSG:3035 (the box :func:`bigearthnet.clc.reader.query_bbox` computes, the one the
   SedonaDB engine asks its GeoPackage R-tree for).
3. **Per-tile preparation** (``groupBy(task).applyInArrow``): repair, reprojection to the tile's
   UTM zone and the exact bounds filter, by the same function the SedonaDB engine runs
   (:func:`bigearthnet.clc.reader.prepare_clc`), so both engines see identical polygons and
   count repairs the same way.
4. **The patch join**, a Sedona spatial join in each tile's UTM zone::

       SELECT task, patch_index, polygon, code, ST_Area(ST_Intersection(footprint, polygon))
       FROM footprints JOIN polygons ON ST_Intersects(footprint, polygon) AND same task

   and each task sums its pieces per (patch, code) exactly (``math.fsum``), as the SedonaDB
   engine does, so the sums do not depend on either engine's scheduling

Both results are written into the staging folder, partitioned by task (``_parts/clc``,
``_parts/areas``); each pixel task reads its own partition and applies the label rule, so no
pixel ever crosses a shuffle. The reBEN rule rasterizes the tile's prepared polygons, i.e. the
union of the per-patch intersections, into the reference maps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from bigearthnet.clc.reader import prepare_clc, query_bbox
from bigearthnet.config import BuildConfig
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.labeling.sedona import AREA_SCHEMA, sum_code_areas
from bigearthnet.spark.sedona import CLC_EPSG, clc_dataframe
from bigearthnet.stages.labels import TileClc
from bigearthnet.stages.plan import TilePlan

ENGINE = "sedona-spark"

_PREPARED = ("task_id long, ord long, code int, geom binary, stats string")


def _prepare_tile(table: pa.Table) -> pa.Table:
    """``applyInArrow`` body: one tile's candidate polygons -> its prepared polygons + stats."""
    task_id = int(table["task_id"][0].as_py())
    epsg = int(table["epsg"][0].as_py())
    bounds = tuple(float(table[k][0].as_py()) for k in ("minx", "miny", "maxx", "maxy"))
    table = table.sort_by("fid")
    codes = table["code"].to_numpy().astype(np.uint16)
    wkb = table["wkb"].combine_chunks()
    codes, geoms, stats = prepare_clc(codes, wkb, f"EPSG:{CLC_EPSG}", f"EPSG:{epsg}", bounds)
    n = len(codes)
    return pa.table({
        "task_id": pa.array([task_id] * (n + 1), pa.int64()),
        "ord": pa.array(list(range(n)) + [-1], pa.int64()),
        "code": pa.array([int(c) for c in codes] + [0], pa.int32()),
        "geom": pa.array(list(shapely.to_wkb(geoms)) + [None], pa.binary()),
        "stats": pa.array([None] * n + [json.dumps(stats, sort_keys=True)], pa.string()),
    })


def _box_wkt(box: tuple[float, float, float, float]) -> str:
    x0, y0, x1, y1 = box
    return f"POLYGON(({x0!r} {y0!r}, {x1!r} {y0!r}, {x1!r} {y1!r}, {x0!r} {y1!r}, {x0!r} {y0!r}))"


def sedona_spark_labels(spark: Any, plans: dict[int, TilePlan], cfg: BuildConfig,
                        staging: Path) -> dict[int, dict[str, int]]:
    """Run the labels stage of every planned tile as one Sedona-Spark plan.

    Args:
        spark: a session with Sedona (:func:`bigearthnet.spark.session.get_session`
            ``require_sedona=True``).
        plans: task id -> the tile's plan.
        cfg: the build config (``clc``, ``label_rule``).
        staging: the staging dataset folder; ``_parts/clc`` and ``_parts/areas`` are written.

    Returns:
        Task id -> the CLC read statistics of that tile (as the SedonaDB engine counts them).

    Raises:
        InputNotFoundError, ClcReadError, ClcSchemaError, UnknownClcCodeError: bad CLC input.
    """
    from pyspark.sql import functions as F

    layout = DatasetLayout(staging)
    tiles, boxes = [], []
    for task_id, plan in sorted(plans.items()):
        minx, miny, maxx, maxy = plan.extent
        qbox = query_bbox(plan.extent, f"EPSG:{plan.epsg}", f"EPSG:{CLC_EPSG}")
        boxes.append(qbox)
        tiles.append((task_id, plan.epsg, minx, miny, maxx, maxy, _box_wkt(qbox)))
    # 1. CLC as a DataFrame, filtered to the products' extent (the union of the query boxes).
    extent = (min(b[0] for b in boxes), min(b[1] for b in boxes),
              max(b[2] for b in boxes), max(b[3] for b in boxes))
    clc = clc_dataframe(spark, cfg.clc, extent, as_read=True).df
    tiles_df = spark.createDataFrame(
        tiles, "task_id long, epsg int, minx double, miny double, maxx double, maxy double, "
               "qbox string").selectExpr("*", "ST_GeomFromWKT(qbox) AS qgeom").drop("qbox")
    # 2. Tile windows: a Sedona spatial join of the CLC polygons with the tiles' query boxes.
    candidates = clc.alias("c").join(F.broadcast(tiles_df).alias("t"),
                                     F.expr("ST_Intersects(c.geom, t.qgeom)"))
    candidates = candidates.selectExpr("t.task_id", "t.epsg", "t.minx", "t.miny", "t.maxx",
                                       "t.maxy", "c.fid", "c.code", "ST_AsBinary(c.geom) AS wkb")
    # 3. Per-tile preparation with the SedonaDB engine's own code.
    prepared = candidates.groupBy("task_id").applyInArrow(_prepare_tile, _PREPARED).persist()
    try:
        polygons = prepared.where("ord >= 0").select("task_id", "ord", "code", "geom")
        polygons.write.partitionBy("task_id").parquet(str(layout.label_parts("clc")))
        stats = {int(r["task_id"]): json.loads(r["stats"])
                 for r in prepared.where("ord < 0").select("task_id", "stats").collect()}
        # 4. The patch join, in each tile's UTM zone.
        rows = []
        for task_id, plan in sorted(plans.items()):
            wkb = shapely.to_wkb(plan.footprints())
            rows.extend((task_id, i, bytes(w)) for i, w in enumerate(wkb))
        footprints = spark.createDataFrame(rows, "task_id long, patch_index int, footprint binary")
        f = footprints.selectExpr("task_id AS f_task", "patch_index",
                                  "ST_GeomFromWKB(footprint) AS fgeom")
        p = polygons.selectExpr("task_id AS p_task", "ord", "code",
                                "ST_GeomFromWKB(geom) AS pgeom")
        pairs = f.join(p, F.expr("ST_Intersects(fgeom, pgeom)")).where("f_task = p_task")
        pieces = pairs.selectExpr("f_task AS task_id", "patch_index", "ord AS polygon", "code",
                                  "ST_Area(ST_Intersection(fgeom, pgeom)) AS area_m2")
        # The per (patch, code) sums are taken in the task, in a fixed order, by the same
        # function as the SedonaDB engine's (labeling.sedona.sum_code_areas).
        pieces.write.partitionBy("task_id").parquet(str(layout.label_parts("areas")))
    finally:
        prepared.unpersist()
    return {task_id: stats.get(task_id, {"read": 0, "invalid_repaired": 0, "dropped_empty": 0,
                                         "outside": 0, "kept": 0})
            for task_id in plans}


def _read_partition(folder: Path, columns: list[str]) -> pa.Table | None:
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def read_tile_labels(staging: Path, task_id: int,
                     stats: dict[str, int]) -> tuple[TileClc, pa.Table]:
    """A pixel task's share of the Sedona-Spark labels: its tile's polygons and areas.

    Returns:
        ``(clc, areas)``: the prepared polygons (in the SedonaDB engine's order) and the
        per (patch, code) areas (``AREA_SCHEMA``, sorted by patch and code).
    """
    layout = DatasetLayout(staging)
    polys = _read_partition(layout.label_parts("clc") / f"task_id={task_id}", ["ord", "code", "geom"])
    if polys is None:
        clc = TileClc(np.zeros(0, np.uint16), np.zeros(0, dtype=object), dict(stats))
    else:
        polys = polys.sort_by("ord")
        clc = TileClc(polys["code"].to_numpy().astype(np.uint16),
                      shapely.from_wkb(polys["geom"].to_numpy(zero_copy_only=False)), dict(stats))
    part = _read_partition(layout.label_parts("areas") / f"task_id={task_id}",
                           ["patch_index", "polygon", "code", "area_m2"])
    areas = AREA_SCHEMA.empty_table() if part is None else sum_code_areas(part)
    return clc, areas
