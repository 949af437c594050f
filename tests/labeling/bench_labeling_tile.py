"""Benchmark the labeling path on one full synthetic tile (not collected by pytest).

Run: ``.venv/bin/python tests/labeling/bench_labeling_tile.py [n_polygons]``.

Writes a CLC-like GeoPackage in EPSG:3035 (a Voronoi partition of the tile plus margin, edges
densified to 40 m, i.e. ~160 vertices per polygon), then times each step on tile T29UPU.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import shapely
from pyproj import Transformer

from bigearthnet.clc.nomenclature import CODES_44
from bigearthnet.clc.reader import read_clc_bbox
from bigearthnet.labeling.raster import reference_maps
from bigearthnet.labeling.sedona import code_areas
from bigearthnet.stages.labels import labels_reben, labels_v1

ULX, ULY, EPSG, N = 600000.0, 5900040.0, 32629, 91


def main(n_polygons: int = 12000) -> None:
    import geopandas as gpd

    rng = np.random.default_rng(0)
    margin = 3000.0
    extent = N * 1200.0
    pts = shapely.points(
        rng.uniform(ULX - margin, ULX + extent + margin, n_polygons),
        rng.uniform(ULY - extent - margin, ULY + margin, n_polygons),
    )
    vor = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts)))
    vor = shapely.intersection(
        vor, shapely.box(ULX - margin, ULY - extent - margin, ULX + extent + margin, ULY + margin)
    )
    vor = shapely.segmentize(vor, 40.0)
    tr = Transformer.from_crs(EPSG, 3035, always_xy=True)
    g3035 = shapely.transform(vor, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    codes = np.array([str(c) for c in rng.choice(CODES_44, len(vor))], dtype=object)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clc.gpkg"
        gpd.GeoDataFrame({"Code_18": codes}, geometry=g3035, crs=3035).to_file(path, layer="clc")
        print(f"polygons: {len(vor)}, mean vertices {shapely.get_num_coordinates(vor).mean():.0f}")

        bounds = (ULX, ULY - extent, ULX + extent, ULY)
        t0 = time.perf_counter()
        c, geoms, stats = read_clc_bbox(path, bounds, EPSG)
        t_read = time.perf_counter() - t0
        print(f"read_clc_bbox: {t_read:.2f} s  {stats}")

        row, col = np.divmod(np.arange(N * N), N)
        fps = shapely.box(
            ULX + col * 1200.0,
            ULY - (row + 1) * 1200.0,
            ULX + (col + 1) * 1200.0,
            ULY - row * 1200.0,
        )
        code_areas(fps[:10], np.arange(10), geoms[:10], c[:10])  # warm the context
        t0 = time.perf_counter()
        areas = code_areas(fps, np.arange(N * N), geoms, c)
        t_join = time.perf_counter() - t0
        print(
            f"code_areas (SedonaDB join {N * N} boxes x {len(geoms)} polygons): {t_join:.2f} s,"
            f" {areas.num_rows} rows"
        )
        t0 = time.perf_counter()
        v1 = labels_v1(areas, N * N)
        print(f"labels_v1: {time.perf_counter() - t0:.2f} s")

        t0 = time.perf_counter()
        maps = reference_maps(geoms, c, ULX, ULY, N, N)
        t_maps = time.perf_counter() - t0
        print(f"reference_maps full tile: {t_maps:.2f} s, {maps.nbytes / 2**20:.0f} MiB")
        t0 = time.perf_counter()
        rb = labels_reben(maps)
        print(f"labels_reben: {time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        for r0 in range(0, N, 7):
            reference_maps(geoms, c, ULX, ULY - r0 * 1200.0, min(7, N - r0), N)
        print(f"reference_maps in 13 strips of 7 rows: {time.perf_counter() - t0:.2f} s")
        same = np.mean(
            [
                a == b
                for a, b in zip(
                    v1["labels_43"].to_pylist(), rb["labels_43"].to_pylist(), strict=True
                )
            ]
        )
        print(f"v1 and reBEN labels_43 identical for {same:.1%} of patches")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12000)
