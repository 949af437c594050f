"""Label-stage benchmark: the two label engines side by side, and Sedona's raster tiling as a peer.

* ``full_tile``: a real labeled ``run_build`` (v1 rule, reference maps, ``--clc``) of the cached
  full COG tile T29UPU, once per engine, interleaved. The *label stage* is, per engine:

  - ``sedonadb``: the sum over products of the task's ``label_s``. ``stages/product.py`` times
    (a) ``read_tile_clc`` (GeoPackage R-tree bbox read, repair, reprojection) and (b)
    ``TileLabels``: the SedonaDB join (``SedonaDBEngine.code_areas``) in its constructor plus,
    per strip, the 10 m reference-map rasterization and the v1 rule. Screening, splitting and
    writing are not in it.
  - ``sedona-spark``: ``timings_s.labels_plan_wall_s`` (the driver's plan stage plus the whole
    Sedona plan: GeoPackage read, tile-window join, per-tile preparation, patch join, writes)
    plus the per-task ``label_s`` (reading the staged partitions, rasterization and the rule).

  Its share is label stage / the build's wall time (``timings_s.total_s``). CPU and peak memory
  are those of the whole process tree of a fresh interpreter running the build (driver Python,
  JVM with its executor threads, Python workers): see ``common.run_tree``.
* ``continental``: a synthetic CLC GeoPackage of >= 1 M polygons in EPSG:3035 (jittered quads
  over the box around 16 real tiles) against the footprints of 1, 4 and 16 tiles (``TilePlan``
  from ``s2_tile_origins.csv``, no pixels). ``sedonadb``: ``read_tile_clc`` +
  ``SedonaDBEngine().code_areas`` per tile, summed (what the pixel tasks do). ``sedona-spark``:
  ``sedona_spark_labels(spark, plans, cfg, staging)`` on ``local[2]`` (session start apart).
* ``raster_peer``: Sedona's own raster tiling (``binaryFile`` + ``RS_FromGeoTiff`` +
  ``RS_TileExplode``) of the same COG tile, checked pixel for pixel against rasterio windows,
  with the process-tree CPU next to our tiling build's.
"""

from __future__ import annotations

import csv
import json
import statistics
import textwrap
import time
from pathlib import Path

from common import (
    CACHE,
    SPARK_TEARDOWN,
    cached_world,
    loadavg,
    run_tree,
    spread,
    write_result,
)

PRODUCT = "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319"
FULL = 10980
ENGINES = ("sedonadb", "sedona-spark")

# 1 tile, a 2x2 block, then 16 tiles (central Europe + Ireland): nested sets.
TILES_16 = ("T33UWP", "T33UXP", "T33UWQ", "T33UXQ", "T33TWM", "T33TWN", "T33TXN", "T33UUP",
            "T32TMT", "T31UGR", "T31UGS", "T31UER", "T29UPU", "T29UPV", "T29UPA", "T29UPB")
SIZES = (1, 4, 16)
CONTINENTAL_POLYGONS = 1_050_000

# --- full tile ---------------------------------------------------------------------------------

FULL_BUILD = SPARK_TEARDOWN + textwrap.dedent("""
    import json, shutil, tempfile, time
    from bigearthnet.config import BuildConfig, SparkConfig
    from bigearthnet.spark.build import run_build
    out = tempfile.mkdtemp(prefix="bench-labels-") + "/ds"
    t0 = time.perf_counter()
    m = run_build(BuildConfig(products={products!r}, clc={clc!r}, out=out, label_engine={engine!r},
                              label_rule="v1", reference_maps=True,
                              spark=SparkConfig(master={master!r})))
    wall = time.perf_counter() - t0
    shutil.rmtree(out)
    ps = m["products"]
    t = m["timings_s"]
    jvm_rc = _stop_spark_and_reap_jvm()
    print(json.dumps({{"timings_s": t, "build_wall_s": wall, "jvm_rc": jvm_rc,
                      "label_s": sum(p["label_s"] for p in ps),
                      "task_cpu_s": sum(p["cpu_s"] for p in ps),
                      "task_wall_s": sum(p["wall_s"] for p in ps),
                      "task_peak_rss_mb": max(p["peak_rss_mb"] for p in ps),
                      "clc": m.get("clc"), "patches": sum(p["n_patches"] for p in ps),
                      "kept": m.get("counts", {{}})}}))
""")


def _label_stage(r: dict) -> float:
    return r["label_s"] + r["timings_s"].get("labels_plan_wall_s", 0.0)


def bench_full_tile(reps: int = 3, master: str = "local[2]") -> dict:
    """Both engines on the full COG tile, interleaved, ``reps`` times each."""
    world = cached_world("full_cog", [PRODUCT], FULL, "cog")
    products, clc = str(world / "products"), str(world / "clc" / "clc2018.gpkg")
    runs: dict[str, list[dict]] = {e: [] for e in ENGINES}
    for rep in range(reps):
        order = ENGINES if rep % 2 == 0 else ENGINES[::-1]
        for engine in order:
            load = loadavg()
            r = run_tree(FULL_BUILD.format(products=products, clc=clc, engine=engine, master=master))
            r["loadavg_before"] = load
            runs[engine].append(r)
            print(f"full_tile {engine} rep {rep}: label stage {_label_stage(r):.2f} s of "
                  f"{r['timings_s']['total_s']:.1f} s; tree CPU {r['tree_cpu_s']:.1f} s, "
                  f"peak {r['tree_peak_rss_mb']:.0f} MB", flush=True)
    out = {"tile": PRODUCT, "master": master, "reps": reps, "label_rule": "v1",
           "reference_maps": True, "clc_polygons_kept": runs["sedonadb"][0]["clc"].get("kept"),
           "engines": {}}
    for engine, rs in runs.items():
        stage = [_label_stage(r) for r in rs]
        total = [r["timings_s"]["total_s"] for r in rs]
        out["engines"][engine] = {
            "label_stage_s": spread(stage, 3),
            "labels_plan_wall_s": spread([r["timings_s"].get("labels_plan_wall_s", 0.0) for r in rs], 3),
            "task_label_s": spread([r["label_s"] for r in rs], 3),
            "build_wall_s": spread(total, 3),
            "label_share": spread([s / t for s, t in zip(stage, total)], 4),
            "tree_cpu_s": spread([r["tree_cpu_s"] for r in rs], 2),
            "tree_cpu_polled_s": spread([r["tree_cpu_polled_s"] for r in rs], 2),
            "tree_peak_rss_mb": spread([r["tree_peak_rss_mb"] for r in rs], 1),
            "task_peak_rss_mb": spread([r["task_peak_rss_mb"] for r in rs], 1),
            "clc_stats": rs[0]["clc"],
            "loadavg_before": [r["loadavg_before"] for r in rs],
            "jvm_exit_codes": [r["jvm_rc"] for r in rs],
        }
    e = out["engines"]
    out["ratio_label_stage_spark_over_sedonadb"] = round(
        e["sedona-spark"]["label_stage_s"]["median"] / e["sedonadb"]["label_stage_s"]["median"], 3)
    return out


# --- continental CLC ---------------------------------------------------------------------------

def _origins() -> dict[str, tuple[int, float, float]]:
    from importlib import resources

    text = resources.files("bigearthnet.data").joinpath("s2_tile_origins.csv").read_text()
    return {r["tile_id"]: (int(r["epsg"]), float(r["ulx"]), float(r["uly"]))
            for r in csv.DictReader(text.splitlines())}


def continental_clc() -> tuple[Path, dict]:
    """Write (once) bench/cache/clc_continental/clc2018.gpkg: >= 1 M jittered quads in EPSG:3035.

    The quads tile the box (plus 20 km) around the 16 tiles' regions with a constant spacing
    chosen for ``CONTINENTAL_POLYGONS`` cells; every quad is a valid simple polygon (corner
    jitter +-0.3 spacing) and gets a random CLC code of the synthetic world's 44 codes.
    """
    out = CACHE / "clc_continental"
    path, meta_path = out / "clc2018.gpkg", out / "meta.json"
    if meta_path.exists():
        return path, json.loads(meta_path.read_text())
    import numpy as np
    import shapely

    from bigearthnet.synth import landcover

    t0 = time.perf_counter()
    origins = _origins()
    regions = [landcover.tile_region_3035(*origins[t], FULL * 10.0) for t in TILES_16]
    minx, miny, maxx, maxy = shapely.union_all(regions).bounds
    minx, miny, maxx, maxy = minx - 20e3, miny - 20e3, maxx + 20e3, maxy + 20e3
    spacing = float(np.sqrt((maxx - minx) * (maxy - miny) / CONTINENTAL_POLYGONS))
    nx, ny = int(np.ceil((maxx - minx) / spacing)), int(np.ceil((maxy - miny) / spacing))
    rng = np.random.default_rng(2018)
    gx = minx + spacing * (np.arange(nx + 1)[None, :] + rng.uniform(-0.3, 0.3, (ny + 1, nx + 1)))
    gy = miny + spacing * (np.arange(ny + 1)[:, None] + rng.uniform(-0.3, 0.3, (ny + 1, nx + 1)))
    # Keep the outer boundary straight so the partition covers its box exactly.
    gx[:, 0], gx[:, -1], gy[0, :], gy[-1, :] = minx, minx + nx * spacing, miny, miny + ny * spacing
    corners = [(slice(0, -1), slice(0, -1)), (slice(0, -1), slice(1, None)),
               (slice(1, None), slice(1, None)), (slice(1, None), slice(0, -1)),
               (slice(0, -1), slice(0, -1))]
    coords = np.stack([np.stack([gx[a, b].ravel(), gy[a, b].ravel()], axis=-1) for a, b in corners],
                      axis=1)
    geoms = shapely.polygons(coords)
    codes = np.array(landcover.CODES)[rng.integers(0, len(landcover.CODES), len(geoms))]
    valid = bool(shapely.is_valid(geoms).all())
    out.mkdir(parents=True, exist_ok=True)
    landcover.write_clc_gpkg(path, geoms, codes)
    meta = {"polygons": len(geoms), "spacing_m": round(spacing, 1), "grid": [nx, ny],
            "bounds_3035": [minx, miny, maxx, maxy], "all_valid": valid,
            "vertices_per_polygon": 5, "gpkg_mb": round(path.stat().st_size / 2**20, 1),
            "generate_s": round(time.perf_counter() - t0, 1), "tiles": list(TILES_16)}
    meta_path.write_text(json.dumps(meta, indent=2))
    return path, meta


PLANS = textwrap.dedent("""
    import csv
    from importlib import resources
    from bigearthnet.sentinel2.grid import PatchGrid
    from bigearthnet.sentinel2.naming import parse_product_name
    from bigearthnet.stages.plan import TilePlan
    text = resources.files("bigearthnet.data").joinpath("s2_tile_origins.csv").read_text()
    origins = {{r["tile_id"]: r for r in csv.DictReader(text.splitlines())}}
    plans = {{}}
    for i, tile in enumerate({tiles!r}):
        o = origins[tile]
        name = parse_product_name(f"S2A_MSIL2A_20170613T101031_N0205_R022_{{tile}}_20170613T101031")
        plans[i] = TilePlan(name, PatchGrid(float(o["ulx"]), float(o["uly"]), 10980, 10980), int(o["epsg"]))
""")

CONT_SEDONADB = PLANS + textwrap.dedent("""
    import json, time
    from bigearthnet.stages.labels import SedonaDBEngine, read_tile_clc
    read_s = join_s = 0.0
    per_tile, pieces, kept = [], 0, 0
    for i, plan in plans.items():
        t0 = time.perf_counter()
        clc = read_tile_clc({clc!r}, plan)
        t1 = time.perf_counter()
        areas = SedonaDBEngine().code_areas(plan, clc)
        t2 = time.perf_counter()
        read_s += t1 - t0
        join_s += t2 - t1
        per_tile.append(t2 - t0)
        pieces += areas.num_rows
        kept += clc.stats["kept"]
    print(json.dumps({{"seconds": read_s + join_s, "read_s": read_s, "join_s": join_s,
                      "per_tile_s": per_tile, "area_rows": pieces, "polygons_kept": kept}}))
""")

CONT_SPARK = SPARK_TEARDOWN + PLANS + textwrap.dedent("""
    import json, tempfile, time
    from pathlib import Path
    import pyarrow.parquet as pq
    from bigearthnet.config import BuildConfig, SparkConfig
    from bigearthnet.dataset.layout import DatasetLayout
    from bigearthnet.spark.session import get_session
    from bigearthnet.spark.sedona_labels import sedona_spark_labels
    t0 = time.perf_counter()
    spark = get_session(SparkConfig(master="local[2]"), require_sedona=True)
    session_s = time.perf_counter() - t0
    staging = Path(tempfile.mkdtemp(prefix="bench-sedona-"))
    DatasetLayout(staging).create_task_folders()
    cfg = BuildConfig(products=str(staging), clc={clc!r}, out=str(staging / "unused"),
                      label_engine="sedona-spark", spark=SparkConfig(master="local[2]"))
    t0 = time.perf_counter()
    stats = sedona_spark_labels(spark, plans, cfg, staging)
    seconds = time.perf_counter() - t0
    folder = DatasetLayout(staging).label_parts("areas")
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in folder.rglob("*.parquet"))
    import shutil; shutil.rmtree(staging)
    jvm_rc = _stop_spark_and_reap_jvm()
    print(json.dumps({{"seconds": seconds, "session_s": session_s, "piece_rows": rows,
                      "polygons_kept": sum(s["kept"] for s in stats.values()), "jvm_rc": jvm_rc}}))
""")


def bench_continental(sizes: tuple[int, ...] = SIZES, reps: int = 1,
                      budget_s: float = 900.0) -> dict:
    """Both engines on the continental layer for 1, 4, 16 tiles (interleaved per size)."""
    path, meta = continental_clc()
    out: dict = {"clc": meta, "tiles": list(TILES_16), "reps": reps, "sizes": {},
                 "budget_s_per_run": budget_s, "not_measured": {}}
    for n in sizes:
        tiles = TILES_16[:n]
        res: dict[str, list[dict]] = {e: [] for e in ENGINES}
        for rep in range(reps):
            for engine in (ENGINES if rep % 2 == 0 else ENGINES[::-1]):
                code = (CONT_SEDONADB if engine == "sedonadb" else CONT_SPARK).format(
                    tiles=tiles, clc=str(path))
                load = loadavg()
                r = run_tree(code)
                r["loadavg_before"] = load
                res[engine].append(r)
                print(f"continental {n} tiles {engine}: {r['seconds']:.1f} s, tree CPU "
                      f"{r['tree_cpu_s']:.1f} s, peak {r['tree_peak_rss_mb']:.0f} MB", flush=True)
        entry = {"tiles": list(tiles)}
        for engine, rs in res.items():
            secs = [r["seconds"] for r in rs]
            e = {"seconds": spread(secs, 2), "per_tile_s": round(min(secs) / n, 3),
                 "tree_cpu_s": spread([r["tree_cpu_s"] for r in rs], 2),
                 "tree_wall_s": spread([r["tree_wall_s"] for r in rs], 2),
                 "tree_peak_rss_mb": spread([r["tree_peak_rss_mb"] for r in rs], 1),
                 "polygons_kept": rs[0]["polygons_kept"],
                 "loadavg_before": [r["loadavg_before"] for r in rs]}
            if engine == "sedonadb":
                e.update(read_s=round(rs[0]["read_s"], 2), join_s=round(rs[0]["join_s"], 2),
                         area_rows=rs[0]["area_rows"])
            else:
                e.update(session_start_s=round(rs[0]["session_s"], 2),
                         piece_rows=rs[0]["piece_rows"])
            entry[engine] = e
        entry["ratio_spark_over_sedonadb"] = round(
            entry["sedona-spark"]["seconds"]["median"] / entry["sedonadb"]["seconds"]["median"], 2)
        out["sizes"][str(n)] = entry
        if max(r["tree_wall_s"] for rs in res.values() for r in rs) > budget_s:
            out["not_measured"]["larger_sizes"] = f"a run at {n} tiles took > {budget_s:.0f} s"
            break
    return add_growth(out)


def _fit(ns: list[int], ys: list[float]) -> dict:
    """Least-squares line y = fixed + per_tile * n."""
    mx, my = sum(ns) / len(ns), sum(ys) / len(ys)
    den = sum((n - mx) ** 2 for n in ns)
    b = sum((n - mx) * (y - my) for n, y in zip(ns, ys)) / den if den else 0.0
    return {"fixed": round(my - b * mx, 2), "per_tile": round(b, 3)}


def add_growth(out: dict) -> dict:
    """Per-tile seconds / CPU at each size and a line fit (fixed + per tile) per engine."""
    sizes = sorted(out["sizes"], key=int)
    ns = [int(k) for k in sizes]
    out["per_tile_s"], out["growth"] = {}, {}
    for engine in ENGINES:
        v = [out["sizes"][k][engine] for k in sizes]
        out["per_tile_s"][engine] = {k: x["per_tile_s"] for k, x in zip(sizes, v)}
        out["growth"][engine] = {
            "seconds_fit": _fit(ns, [x["seconds"]["median"] for x in v]),
            "tree_cpu_fit": _fit(ns, [x["tree_cpu_s"]["median"] for x in v]),
            "tree_cpu_per_tile_s": {k: round(x["tree_cpu_s"]["median"] / int(k), 3)
                                    for k, x in zip(sizes, v)},
        } if len(ns) >= 2 else {}
    return out


# --- Sedona raster tiling as a peer -------------------------------------------------------------

RASTER_PEER = SPARK_TEARDOWN + textwrap.dedent("""
    import json, time
    import numpy as np
    import rasterio
    from rasterio.windows import Window
    from bigearthnet.config import SparkConfig
    from bigearthnet.spark.session import get_session
    files, check = {files!r}, {check!r}
    t0 = time.perf_counter()
    spark = get_session(SparkConfig(master={master!r}, driver_memory={memory!r}), require_sedona=True)
    session_s = time.perf_counter() - t0
    per_file = {{}}
    t_all = time.perf_counter()
    for path, px in files:
        t1 = time.perf_counter()
        df = (spark.read.format("binaryFile").load(path)
              .selectExpr("RS_FromGeoTiff(content) AS rast")
              .selectExpr(f"RS_TileExplode(rast, {{px}}, {{px}}, false) AS (x, y, tile)"))
        entry = {{}}
        if not check:
            # Cut every tile (the generator runs for every row counted); nothing is written.
            entry["tiles"] = df.count()
        else:
            # A second, unmeasured kind of run: pull sampled tiles back, compare with rasterio.
            rows = (df.where(f"(x * 7 + y * 13) % {{check}} = 0")
                      .selectExpr("x", "y", "RS_BandAsArray(tile, 1) AS a", "RS_Width(tile) AS w",
                                  "RS_Height(tile) AS h").collect())
            bad = 0
            with rasterio.open(path) as ds:
                for r in rows:
                    want = ds.read(1, window=Window(r.x * px, r.y * px, r.w, r.h))
                    got = np.asarray(r.a, dtype=np.float64).reshape(r.h, r.w)
                    bad += int(not np.array_equal(got, want.astype(np.float64)))
                    entry["dtype"] = str(want.dtype)
            entry.update(checked=len(rows), mismatched=bad,
                         edge_tiles_checked=sum(1 for r in rows if r.w != px or r.h != px))
        entry["seconds"] = time.perf_counter() - t1
        per_file[path] = entry
    seconds = time.perf_counter() - t_all
    jvm_rc = _stop_spark_and_reap_jvm()
    print(json.dumps({{"seconds": seconds, "session_s": session_s, "files": per_file,
                      "jvm_rc": jvm_rc}}))
""")

OUR_TILING = SPARK_TEARDOWN + textwrap.dedent("""
    import json, shutil, tempfile
    from bigearthnet.config import BuildConfig, SparkConfig
    from bigearthnet.spark.build import run_build
    out = tempfile.mkdtemp(prefix="bench-tiling-") + "/ds"
    m = run_build(BuildConfig(products={products!r}, out=out, spark=SparkConfig(master={master!r})))
    p = m["products"][0]
    shutil.rmtree(out)
    jvm_rc = _stop_spark_and_reap_jvm()
    print(json.dumps({{"task_cpu_s": p["cpu_s"], "build_wall_s": m["timings_s"]["total_s"],
                      "patches": p["n_patches"], "jvm_rc": jvm_rc}}))
""")

PEER_LAYERS = {"B01": 20, "B02": 120, "B03": 120, "B04": 120, "B05": 60, "B06": 60, "B07": 60,
               "B08": 120, "B8A": 60, "B09": 20, "B11": 60, "B12": 60, "SCL": 60}
"""Layer -> tile side in px: all 12 bands + SCL, cut as our patches are (120/60/20 px)."""
CHECK_LAYERS = {"B02": 120, "B05": 60, "B01": 20, "SCL": 60}


def _layer_paths(products: str) -> dict[str, str]:
    from bigearthnet.sentinel2.products import discover_products

    (src,), _ = discover_products(products)
    return {k: str(v) for k, v in src.layers.items()}


def bench_raster_peer(reps: int = 2, master: str = "local[2]",
                      layers: dict[str, int] | None = None, check_modulus: int = 97,
                      memory: str = "8g") -> dict:
    """Sedona RS_TileExplode on the COG tile's layers vs our tiling build, process-tree CPU.

    Measured runs only cut (``count()``); one further run pulls every tile with
    ``(7x + 13y) % check_modulus == 0`` of ``CHECK_LAYERS`` back and compares it with rasterio.
    ``memory``: the Spark driver memory of the Sedona runs (with the default 2g, Sedona runs out
    of Java heap serializing one 10980 px band).
    """
    layers = layers or PEER_LAYERS
    world = cached_world("full_cog", [PRODUCT], FULL, "cog")
    products = str(world / "products")
    paths = _layer_paths(products)
    files = [(paths[k], px) for k, px in layers.items()]
    peer, ours = [], []
    for rep in range(reps):
        for which in (("peer", "ours") if rep % 2 == 0 else ("ours", "peer")):
            if which == "peer":
                r = run_tree(RASTER_PEER.format(files=files, master=master, check=0, memory=memory))
                peer.append(r)
            else:
                r = run_tree(OUR_TILING.format(products=products, master=master))
                ours.append(r)
            print(f"raster_peer {which} rep {rep}: tree CPU {r['tree_cpu_s']:.1f} s", flush=True)
    check = run_tree(RASTER_PEER.format(files=[(paths[k], px) for k, px in CHECK_LAYERS.items()],
                                        master=master, check=check_modulus, memory=memory))
    cf = {Path(k).name: v for k, v in check["files"].items()}
    return {
        "master": master, "reps": reps, "sedona_driver_memory": memory,
        "default_memory_failure": ("with spark.driver.memory=2g (the build's default) the "
                                   "Sedona run fails: java.lang.OutOfMemoryError: Java heap "
                                   "space in Sedona's raster Kryo serializer"),
        "measured": (f"Sedona: binaryFile + RS_FromGeoTiff + RS_TileExplode (no padding) of all "
                     f"{len(files)} COG layers (12 bands + SCL at 120/60/20 px), every tile cut "
                     "and counted, nothing written; ours: a tiling build of the same product "
                     "(same 13 layers, patches written to Parquet). Both: fresh interpreter, "
                     "session start included"),
        "layers": layers,
        "sedona": {"tree_cpu_s": spread([r["tree_cpu_s"] for r in peer], 2),
                   "tree_wall_s": spread([r["tree_wall_s"] for r in peer], 2),
                   "tile_seconds": spread([r["seconds"] for r in peer], 2),
                   "session_start_s": spread([r["session_s"] for r in peer], 2),
                   "tree_peak_rss_mb": spread([r["tree_peak_rss_mb"] for r in peer], 1),
                   "cpu_by_process_first_run": peer[0].get("tree_cpu_polled_by_process"),
                   "tiles": {Path(k).name: v["tiles"] for k, v in peer[0]["files"].items()},
                   "tiles_checked": sum(v["checked"] for v in cf.values()),
                   "edge_tiles_checked": sum(v["edge_tiles_checked"] for v in cf.values()),
                   "tiles_mismatched": sum(v["mismatched"] for v in cf.values()),
                   "check": {"layers": CHECK_LAYERS, "modulus": check_modulus, "files": cf}},
        "ours": {"tree_cpu_s": spread([r["tree_cpu_s"] for r in ours], 2),
                 "task_cpu_s": spread([r["task_cpu_s"] for r in ours], 2),
                 "tree_wall_s": spread([r["tree_wall_s"] for r in ours], 2),
                 "tree_peak_rss_mb": spread([r["tree_peak_rss_mb"] for r in ours], 1),
                 "cpu_by_process_first_run": ours[0].get("tree_cpu_polled_by_process"),
                 "patches": ours[0]["patches"]},
        "ratio_tree_cpu_sedona_over_ours": round(
            statistics.median([r["tree_cpu_s"] for r in peer])
            / statistics.median([r["tree_cpu_s"] for r in ours]), 3),
    }


# --- main / render -----------------------------------------------------------------------------

def _path() -> Path:
    from common import RESULTS

    return RESULTS / "labels.json"


def _save(doc: dict) -> None:
    doc = {k: v for k, v in doc.items() if k != "machine"}
    write_result("labels", doc)


def load() -> dict:
    """The current bench/results/labels.json (empty when absent)."""
    p = _path()
    return json.loads(p.read_text()) if p.exists() else {}


def main(parts: tuple[str, ...] = ("full_tile", "continental", "raster_peer")) -> dict:
    """Run the parts and (re)write bench/results/labels.json after each one."""
    doc = load()
    if "full_tile" in parts:
        doc["full_tile"] = bench_full_tile()
        _save(doc)
    if "continental" in parts:
        doc["continental"] = bench_continental()
        _save(doc)
    if "raster_peer" in parts:
        doc["raster_peer"] = bench_raster_peer()
        _save(doc)
    return doc


def _s(d: dict, fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}–{fmt.format(d['max'])})"


def render(doc: dict) -> list[str]:
    """The BENCHMARKS.md section of bench/results/labels.json (every number from ``doc``)."""
    lines = ["## Label engines (`bench/results/labels.json`)", ""]
    ft = doc.get("full_tile")
    if ft:
        e = ft["engines"]
        lines += [
            (f"**Full tile.** A labeled `run_build` of {ft['tile']} (COG, v1 rule, reference maps, "
             f"{ft['clc_polygons_kept']:,} CLC polygons around the tile) on `{ft['master']}`, "
             f"{ft['reps']} interleaved repetitions per engine, median (min–max). Label stage: "
             "`sedonadb` = the task's `label_s` (CLC bbox read, repair and reprojection, the "
             "SedonaDB join, 10 m reference maps, the v1 rule); `sedona-spark` = the driver's "
             "`labels_plan_wall_s` (the whole Sedona plan) + the task's `label_s` (reading its "
             "staged partitions, maps, rule). Share = label stage ÷ build wall time. CPU and "
             "peak memory: the whole process tree (driver Python, JVM, Python workers)."),
            "",
            "| engine | label stage s | share of build | build wall s | tree CPU s | tree peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in ENGINES:
            if name in e:
                x = e[name]
                lines.append(f"| `{name}` | {_s(x['label_stage_s'], '{:.2f}')} | "
                             f"{_s(x['label_share'], '{:.1%}')} | {_s(x['build_wall_s'])} | "
                             f"{_s(x['tree_cpu_s'])} | {_s(x['tree_peak_rss_mb'], '{:,.0f}')} |")
        lines += ["", (f"`sedona-spark` ÷ `sedonadb` label stage: "
                       f"**{ft['ratio_label_stage_spark_over_sedonadb']:.1f}×**.")]
        if "tree_cpu_note" in ft:
            lines += ["", f"Tree CPU: {ft['tree_cpu_note']}."]
        lines.append("")
    ct = doc.get("continental")
    if ct:
        m = ct["clc"]
        lines += [
            (f"**Continental CLC.** A synthetic GeoPackage of {m['polygons']:,} polygons in "
             f"EPSG:3035 (jittered quads, {m['spacing_m']:,.0f} m spacing, {m['gpkg_mb']} MB, "
             f"{m['vertices_per_polygon']} vertices each) joined with the footprints of 1, 4 and "
             "16 real tiles (plans without pixels). `sedonadb`: `read_tile_clc` + "
             "`SedonaDBEngine.code_areas` per tile, summed; `sedona-spark`: "
             f"`sedona_spark_labels` on `local[2]`. {ct['reps']} run per engine and size (a "
             "16-tile `sedona-spark` run takes minutes). *seconds*: wall time of the label "
             "work inside the child (Spark session start not included); *tree CPU* and *peak "
             "RSS*: the child's whole process tree, interpreter (and JVM) start included."),
            "",
            "| tiles | engine | seconds | s per tile | tree CPU s | tree peak RSS MB | polygons kept |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for n, v in sorted(ct["sizes"].items(), key=lambda kv: int(kv[0])):
            for name in ENGINES:
                x = v[name]
                lines.append(f"| {n} | `{name}` | {_s(x['seconds'])} | {x['per_tile_s']:.2f} | "
                             f"{_s(x['tree_cpu_s'])} | {_s(x['tree_peak_rss_mb'], '{:,.0f}')} | "
                             f"{x['polygons_kept']:,} |")
        for name, g in ct.get("growth", {}).items():
            if g:
                lines.append(
                    f"\nGrowth, `{name}`: seconds ≈ {g['seconds_fit']['fixed']:.1f} + "
                    f"{g['seconds_fit']['per_tile']:.2f} × tiles; tree CPU ≈ "
                    f"{g['tree_cpu_fit']['fixed']:.1f} + {g['tree_cpu_fit']['per_tile']:.2f} × "
                    "tiles (least squares over the sizes).")
        if "tree_cpu_note" in ct:
            lines.append(f"\nTree CPU: {ct['tree_cpu_note']}.")
        rc = ct.get("sedona_spark_1_tile_recheck")
        if rc:
            lines.append(
                f"\nA later 1-tile `sedona-spark` rerun with both measures: rusage "
                f"{rc['tree_cpu_rusage_s']:.1f} s, /proc poll {rc['tree_cpu_polled_s']:.1f} s "
                f"(Python workers {rc['tree_cpu_polled_by_process'].get('python_daemon_or_worker', 0):.1f} s, "
                f"JVM {rc['tree_cpu_polled_by_process'].get('jvm', 0):.1f} s), "
                f"{rc['seconds']:.1f} s of label work at load {rc['loadavg_before']}.")
        for k, why in ct.get("not_measured", {}).items():
            lines.append(f"\nNot measured ({k}): {why}.")
        lines.append("")
    rp = doc.get("raster_peer")
    if rp:
        s, o = rp["sedona"], rp["ours"]
        lines += [
            (f"**Sedona raster tiling as a peer.** {rp['measured']}; `{rp['master']}`, "
             f"{rp['reps']} interleaved repetitions. {s['tiles_checked']} Sedona tiles checked "
             f"against rasterio windows ({s['edge_tiles_checked']} of them partial edge tiles): "
             f"{s['tiles_mismatched']} differ. Sedona cuts "
             f"{next(iter(s['tiles'].values())):,} tiles per layer (the partial last row and "
             f"column too), we keep {o['patches']:,} patches. Sedona ran with "
             f"`spark.driver.memory={rp['sedona_driver_memory']}`: "
             f"{rp['default_memory_failure']}."),
            "",
            "| | process-tree CPU s | wall s | peak RSS MB |",
            "|---|---:|---:|---:|",
            (f"| Sedona `RS_TileExplode` | {_s(s['tree_cpu_s'])} | {_s(s['tree_wall_s'])} | "
             f"{_s(s['tree_peak_rss_mb'], '{:,.0f}')} |"),
            (f"| ours (tiling build) | {_s(o['tree_cpu_s'])} | {_s(o['tree_wall_s'])} | "
             f"{_s(o['tree_peak_rss_mb'], '{:,.0f}')} |"),
            "",
        ]
    if len(lines) == 2:
        lines.append("Not measured yet (`python bench/run.py labels`).")
    return lines


if __name__ == "__main__":
    import sys

    main(tuple(sys.argv[1:]) or ("full_tile", "continental", "raster_peer"))
