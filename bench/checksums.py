"""Checksum verification benchmark: what verifying a product's checksums costs the build.

One full 10980 px tile per format (the tiling benchmark's cached worlds), in two copies that share
the same files (hard links): one with checksums (a SAFE ``manifest.safe`` with MD5s; a STAC item
with SHA-256 ``file:checksum``), one without. Interleaved repetitions of a real ``run_build``
(``local[1]``, one task, fresh interpreter each) of both copies; the task's CPU and wall seconds
(as its manifest reports them) give the overhead. ``hash_only`` is the digest pass alone.

Usage: python bench/checksums.py [REPS_COG [REPS_JP2]]  ->  bench/results/checksums.json
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from pathlib import Path

from common import CACHE, SPARK_TEARDOWN, cached_world, run_tree, spread, write_result

PRODUCT = "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319"
FULL = 10980

BUILD = SPARK_TEARDOWN + textwrap.dedent("""
    import json, shutil, tempfile
    from bigearthnet.config import BuildConfig, SparkConfig
    from bigearthnet.spark.build import run_build
    out = tempfile.mkdtemp(prefix="bench-checksums-") + "/ds"
    m = run_build(BuildConfig(products={products!r}, out=out, gdal_threads=1, gdal_cache_mb=512,
                              spark=SparkConfig(master="local[1]")))
    p = m["products"][0]
    shutil.rmtree(out)
    _stop_spark_and_reap_jvm()
    print(json.dumps({{"cpu_s": p["cpu_s"], "wall_s": p["wall_s"], "patches": p["n_patches"]}}))
""")

HASH = textwrap.dedent("""
    import json, time
    from bigearthnet.sentinel2.checksums import verify_layers
    from bigearthnet.sentinel2.products import discover_products
    (src,), _ = discover_products({products!r})
    c0, w0 = time.process_time(), time.perf_counter()
    n = verify_layers(src.product_id, src.layers, src.checksums, src.checksums_from)
    print(json.dumps({{"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
                      "files": n, "algorithm": next(iter(src.checksums.values()))["algorithm"]}}))
""")


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link the rasters (the same bytes, the same page cache), copy the small files (they
    are rewritten here, and must not change the cached world)."""

    def place(a: str, b: str) -> None:
        (os.link if a.endswith((".jp2", ".tif")) else shutil.copy2)(a, b)

    shutil.copytree(src, dst, copy_function=place)


def variants(fmt: str) -> dict[str, Path]:
    """``{"with": products dir, "without": products dir}`` of the full tile (hard-linked)."""
    world = cached_world(f"full_{fmt}", [PRODUCT], FULL, fmt)
    root = CACHE / f"checksums_{fmt}"
    marker = root / ".complete"
    out = {"with": root / "with" / "products", "without": root / "without" / "products"}
    if marker.exists():
        return out
    if root.exists():
        shutil.rmtree(root)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from worlds import resign

    for kind, products in out.items():
        _link_tree(world / "products", products)
        for manifest in products.rglob("manifest.safe"):
            manifest.unlink()
        for item_path in products.rglob("*.json"):
            item = json.loads(item_path.read_text())
            for asset in item["assets"].values():
                asset.pop("file:checksum", None), asset.pop("file:size", None)
                if kind == "with":
                    asset["file:checksum"] = ""  # filled by resign
            item_path.write_text(json.dumps(item, indent=2) + "\n")
        if kind == "with":
            for safe in products.glob("*.SAFE"):
                (safe / "manifest.safe").write_text("<x/>")  # filled by resign
            resign(products)
    marker.write_text("")
    return out


def bench_format(fmt: str, reps: int) -> dict:
    """Interleaved builds with and without checksums, plus the hashing pass alone."""
    paths = variants(fmt)
    runs: dict[str, list[dict]] = {"without": [], "with": [], "hash_only": []}
    for rep in range(reps):
        for kind in (("without", "with") if rep % 2 == 0 else ("with", "without")):  # ABBA
            runs[kind].append(run_tree(BUILD.format(products=str(paths[kind]))))
        runs["hash_only"].append(run_tree(HASH.format(products=str(paths["with"]))))
        print(f"checksums {fmt} rep {rep}: task cpu without {runs['without'][-1]['cpu_s']:.1f} s, "
              f"with {runs['with'][-1]['cpu_s']:.1f} s; hashing alone "
              f"{runs['hash_only'][-1]['cpu_s']:.2f} s", flush=True)
    cpu = {k: [r["cpu_s"] for r in v] for k, v in runs.items()}
    wall = {k: [r["wall_s"] for r in v] for k, v in runs.items()}
    size = sum(p.stat().st_size for p in paths["with"].rglob("*") if p.suffix in (".jp2", ".tif"))
    return {
        "reps": reps, "bytes": size, "algorithm": runs["hash_only"][0]["algorithm"],
        "files": runs["hash_only"][0]["files"],
        "task_cpu_s": {k: spread(v, 3) for k, v in cpu.items()},
        "task_wall_s": {k: spread(v, 3) for k, v in wall.items()},
        "cpu_overhead": spread([w / o - 1 for w, o in zip(cpu["with"], cpu["without"])], 4),
        "wall_overhead": spread([w / o - 1 for w, o in zip(wall["with"], wall["without"])], 4),
        "hash_mb_per_s": round(size / 1e6 / spread(wall["hash_only"], 3)["median"], 1),
    }


def main(reps_cog: int = 5, reps_jp2: int = 3) -> dict:
    """Both formats (0 repetitions: keep that format's last result); writes
    bench/results/checksums.json."""
    from common import RESULTS, loadavg

    t0 = time.perf_counter()
    old = json.loads((RESULTS / "checksums.json").read_text()) if (RESULTS / "checksums.json").exists() else {}
    doc = {"tile": PRODUCT, "size_px": FULL, "loadavg_before": loadavg()}
    doc["cog"] = bench_format("cog", reps_cog) if reps_cog else old["cog"]
    write_result("checksums", doc)
    doc["jp2"] = bench_format("jp2", reps_jp2) if reps_jp2 else old["jp2"]
    doc["bench_s"] = round(time.perf_counter() - t0, 1)
    path = write_result("checksums", doc)
    print(json.dumps({f: {"cpu_overhead": doc[f]["cpu_overhead"]["median"],
                          "wall_overhead": doc[f]["wall_overhead"]["median"]}
                      for f in ("cog", "jp2")}))
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
