"""Tiling benchmark: the build's tiling stage against decode-only, on one full tile.

Decode-only is rasterio reading all 12 bands and SCL of the product whole, with the same GDAL
thread count and cache as the build. The build is a real ``run_build`` on local Spark with one
task; its CPU/wall/peak RSS are the task's own (the Python worker that decodes and writes).
Ratios are build ÷ decode-only CPU seconds, medians over interleaved repetitions.
"""

from __future__ import annotations

import json
import textwrap

from common import cached_world, median, run_measured, write_result

PRODUCT = "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319"
FULL = 10980

DECODE = textwrap.dedent("""
    import json, resource, time, rasterio
    from bigearthnet.sentinel2.products import discover_products
    (src,), _ = discover_products({products!r})
    c0, w0 = time.process_time(), time.perf_counter()
    with rasterio.Env(GDAL_NUM_THREADS="{threads}", GDAL_CACHEMAX={cache}):
        for layer, path in src.layers.items():
            with rasterio.open(path) as ds:
                ds.read(1)
    print(json.dumps({{"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""")

BUILD = textwrap.dedent("""
    import json, tempfile
    from bigearthnet.config import BuildConfig, SparkConfig
    from bigearthnet.spark.build import run_build
    out = tempfile.mkdtemp(prefix="bench-tiling-") + "/ds"
    m = run_build(BuildConfig(products={products!r}, clc={clc!r}, out=out, gdal_threads={threads},
                              gdal_cache_mb={cache}, spark=SparkConfig(master="local[1]")))
    p = m["products"][0]
    import shutil; shutil.rmtree(out)
    print(json.dumps({{"cpu_s": p["cpu_s"], "wall_s": p["wall_s"], "peak_rss_mb": p["peak_rss_mb"],
                      "label_s": p["label_s"], "clc_polygons": m.get("clc", {{}}).get("kept"),
                      "patches": p["n_patches"], "stage_wall_s": m["timings_s"]["tasks_wall_s"]}}))
""")


def bench_format(fmt: str, reps: int, threads: int = 1, cache: int = 512) -> dict:
    """Interleave decode-only and build runs on the cached full tile of one format."""
    world = cached_world(f"full_{fmt}", [PRODUCT], FULL, fmt)
    products = str(world / "products")
    decode, build = [], []
    for _ in range(reps):
        decode.append(run_measured(DECODE.format(products=products, threads=threads, cache=cache)))
        build.append(run_measured(BUILD.format(products=products, clc=None, threads=threads, cache=cache)))
    # One labeled build (v1 rule + reference maps, screening, splits, stats): the label share.
    clc = str(world / "clc" / "clc2018.gpkg")
    labeled = run_measured(BUILD.format(products=products, clc=clc, threads=threads, cache=cache))
    ratios = [b["cpu_s"] / d["cpu_s"] for d, b in zip(decode, build)]
    return {
        "reps": reps, "gdal_threads": threads,
        "decode_only": {"cpu_s": median([d["cpu_s"] for d in decode]),
                        "wall_s": median([d["wall_s"] for d in decode]),
                        "peak_rss_mb": median([d["peak_rss_mb"] for d in decode])},
        "build": {"cpu_s": median([b["cpu_s"] for b in build]),
                  "wall_s": median([b["wall_s"] for b in build]),
                  "patches": build[0]["patches"],
                  "patches_per_s": round(build[0]["patches"] / median([b["wall_s"] for b in build]), 2),
                  "peak_rss_mb": max(b["peak_rss_mb"] for b in build)},
        "ratio_cpu": median(ratios),
        "ratios_each": [round(r, 4) for r in ratios],
        "labeled_build": {
            "wall_s": round(labeled["wall_s"], 3), "cpu_s": round(labeled["cpu_s"], 3),
            "label_s": round(labeled["label_s"], 3), "clc_polygons": labeled["clc_polygons"],
            "label_share": round(labeled["label_s"] / labeled["wall_s"], 4),
            "peak_rss_mb": labeled["peak_rss_mb"],
        },
    }


def main(reps_jp2: int = 2, reps_cog: int = 3) -> dict:
    """Run both formats and write bench/results/tiling.json."""
    jp2 = bench_format("jp2", reps_jp2)
    cog = bench_format("cog", reps_cog)
    doc = {
        "tile": PRODUCT, "size_px": FULL,
        "jp2": jp2, "cog": cog,
        "ratio_cpu_jp2": jp2["ratio_cpu"], "ratio_cpu_cog": cog["ratio_cpu"],
        "peak_rss_mb": max(jp2["build"]["peak_rss_mb"], cog["build"]["peak_rss_mb"],
                           jp2["labeled_build"]["peak_rss_mb"], cog["labeled_build"]["peak_rss_mb"]),
        "label_share_jp2": jp2["labeled_build"]["label_share"],
        "label_share_cog": cog["labeled_build"]["label_share"],
        "targets": {"ratio_cpu_jp2": 1.15, "ratio_cpu_cog": 2.0, "peak_rss_mb": 3072,
                    "label_share": 0.05},
    }
    path = write_result("tiling", doc)
    print(json.dumps({k: doc[k] for k in ("ratio_cpu_jp2", "ratio_cpu_cog", "peak_rss_mb",
                                          "label_share_jp2", "label_share_cog")}))
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
