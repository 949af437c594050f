"""Tiling benchmark: the build's tiling stage against decode-only, on one full tile.

Decode-only is rasterio reading all 12 bands and SCL of the product whole, with the same GDAL
thread count and cache as the build. The build is a real ``run_build`` on local Spark with one
task. Each run is a fresh interpreter (``common.run_tree``) and is measured two ways:

* the task's own figures (``cpu_s``, ``wall_s``, ``peak_rss_mb`` of the Python worker that
  decodes and writes), as the build's manifest reports them; ``ratio_cpu`` (the target) is
  build task CPU ÷ decode-only CPU (the reads alone, timed inside the decode process);
* the whole process tree (``getrusage(RUSAGE_CHILDREN)`` after the child stopped Spark and
  waited for the JVM): driver Python, the JVM (driver + executor threads in local mode), the
  PySpark daemon and workers. ``ratio_tree_cpu`` = build tree CPU ÷ decode-only tree CPU (both
  including interpreter start and imports).

Repetitions are interleaved (decode, build, labeled build, then the next repetition); each
figure is reported as median, min and max, and the ratios per repetition. The labeled build
(v1 rule, reference maps, the ``sedonadb`` engine) gives the label-stage share: the task's
``label_s`` (CLC read, SedonaDB join, reference maps, rule: the whole label stage of this
engine) ÷ the build's wall time (``timings_s.total_s``), and ÷ the task's wall time.
"""

from __future__ import annotations

import json
import textwrap

from common import SPARK_TEARDOWN, cached_world, loadavg, run_tree, spread, write_result

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

BUILD = SPARK_TEARDOWN + textwrap.dedent("""
    import json, tempfile
    from bigearthnet.config import BuildConfig, SparkConfig
    from bigearthnet.spark.build import run_build
    out = tempfile.mkdtemp(prefix="bench-tiling-") + "/ds"
    m = run_build(BuildConfig(products={products!r}, clc={clc!r}, out=out, gdal_threads={threads},
                              gdal_cache_mb={cache}, spark=SparkConfig(master="local[1]")))
    p = m["products"][0]
    import shutil; shutil.rmtree(out)
    jvm_rc = _stop_spark_and_reap_jvm()
    print(json.dumps({{"cpu_s": p["cpu_s"], "wall_s": p["wall_s"], "peak_rss_mb": p["peak_rss_mb"],
                      "label_s": p["label_s"], "clc_polygons": m.get("clc", {{}}).get("kept"),
                      "clc": p.get("clc"), "patches": p["n_patches"],
                      "tasks_wall_s": m["timings_s"]["tasks_wall_s"],
                      "build_wall_s": m["timings_s"]["total_s"], "jvm_rc": jvm_rc}}))
""")


def _polys(r: dict):
    if r.get("clc_polygons") is not None:
        return r["clc_polygons"]
    return json.loads(r["clc"]).get("kept") if r.get("clc") else None


def bench_format(fmt: str, reps: int, labeled_reps: int, threads: int = 1, cache: int = 512,
                 progress=None) -> dict:
    """Interleave decode-only, build and labeled-build runs on the cached full tile of one format.

    ``progress(doc)``, when given, receives the summary of the repetitions done so far after
    each repetition (so partial results can be written).
    """
    world = cached_world(f"full_{fmt}", [PRODUCT], FULL, fmt)
    products = str(world / "products")
    clc = str(world / "clc" / "clc2018.gpkg")
    decode, build, labeled, loads = [], [], [], []
    for rep in range(reps):
        loads.append(loadavg())
        decode.append(run_tree(DECODE.format(products=products, threads=threads, cache=cache)))
        build.append(run_tree(BUILD.format(products=products, clc=None, threads=threads, cache=cache)))
        if rep < labeled_reps:
            labeled.append(run_tree(BUILD.format(products=products, clc=clc, threads=threads,
                                                 cache=cache)))
        print(f"tiling {fmt} rep {rep}: decode {decode[-1]['cpu_s']:.1f} s, build task "
              f"{build[-1]['cpu_s']:.1f} s / tree {build[-1]['tree_cpu_s']:.1f} s", flush=True)
        if progress is not None:
            progress(format_doc(decode, build, labeled, loads, threads))
    return format_doc(decode, build, labeled, loads, threads)


def format_doc(decode: list[dict], build: list[dict], labeled: list[dict], loads: list[float],
               threads: int) -> dict:
    """Summaries (median, min, max, each) of one format's runs."""
    ratios = [b["cpu_s"] / d["cpu_s"] for d, b in zip(decode, build)]
    tree_ratios = [b["tree_cpu_s"] / d["tree_cpu_s"] for d, b in zip(decode, build)]
    b_wall = spread([b["wall_s"] for b in build], 3)
    return {
        "reps": len(build), "gdal_threads": threads, "loadavg_before": loads,
        "decode_only": {"cpu_s": spread([d["cpu_s"] for d in decode], 3),
                        "wall_s": spread([d["wall_s"] for d in decode], 3),
                        "tree_cpu_s": spread([d["tree_cpu_s"] for d in decode], 3),
                        "peak_rss_mb": spread([d["peak_rss_mb"] for d in decode], 1)},
        "build": {"cpu_s": spread([b["cpu_s"] for b in build], 3),
                  "wall_s": b_wall,
                  "tree_cpu_s": spread([b["tree_cpu_s"] for b in build], 3),
                  "tree_cpu_polled_s": spread([b["tree_cpu_polled_s"] for b in build], 3),
                  "tree_minus_task_cpu_s": spread([b["tree_cpu_s"] - b["cpu_s"] for b in build], 3),
                  "build_wall_s": spread([b["build_wall_s"] for b in build], 3),
                  "tree_wall_s": spread([b["tree_wall_s"] for b in build], 3),
                  "patches": build[0]["patches"],
                  "patches_per_s": round(build[0]["patches"] / b_wall["median"], 2),
                  "peak_rss_mb": spread([b["peak_rss_mb"] for b in build], 1),
                  "tree_peak_rss_mb": spread([b["tree_peak_rss_mb"] for b in build], 1),
                  "cpu_by_process_first_run": build[0].get("tree_cpu_polled_by_process"),
                  "jvm_exit_codes": [b["jvm_rc"] for b in build]},
        "ratio_cpu": spread(ratios, 4),
        "ratio_tree_cpu": spread(tree_ratios, 4),
        "labeled_build": {
            "reps": len(labeled), "label_engine": "sedonadb", "label_rule": "v1",
            "clc_polygons": _polys(labeled[0]),
            "label_s": spread([x["label_s"] for x in labeled], 3),
            "task_wall_s": spread([x["wall_s"] for x in labeled], 3),
            "build_wall_s": spread([x["build_wall_s"] for x in labeled], 3),
            "cpu_s": spread([x["cpu_s"] for x in labeled], 3),
            "tree_cpu_s": spread([x["tree_cpu_s"] for x in labeled], 3),
            "label_share": spread([x["label_s"] / x["build_wall_s"] for x in labeled], 4),
            "label_share_of_task": spread([x["label_s"] / x["wall_s"] for x in labeled], 4),
            "peak_rss_mb": spread([x["peak_rss_mb"] for x in labeled], 1),
            "tree_peak_rss_mb": spread([x["tree_peak_rss_mb"] for x in labeled], 1),
        } if labeled else None,
    }


TARGETS = {"ratio_cpu_jp2": 1.15, "ratio_cpu_cog": 2.0, "peak_rss_mb": 3072, "label_share": 0.05}


def summarize(jp2: dict | None, cog: dict | None, raster_peer: dict | None = None) -> dict:
    """The result document (targets checked on medians and on every repetition)."""
    doc: dict = {"tile": PRODUCT, "size_px": FULL, "targets": TARGETS}
    holds = {}
    for fmt, d in (("jp2", jp2), ("cog", cog)):
        if d is None:
            continue
        doc[fmt] = d
        t = TARGETS[f"ratio_cpu_{fmt}"]
        doc[f"ratio_cpu_{fmt}"] = d["ratio_cpu"]["median"]
        holds[f"ratio_cpu_{fmt}"] = {"median": d["ratio_cpu"]["median"] <= t,
                                     "every_rep": all(r <= t for r in d["ratio_cpu"]["each"])}
        if d["labeled_build"]:
            doc[f"label_share_{fmt}"] = d["labeled_build"]["label_share"]["median"]
            holds[f"label_share_{fmt}"] = {
                "median": d["labeled_build"]["label_share"]["median"] <= TARGETS["label_share"],
                "every_rep": all(r <= TARGETS["label_share"]
                                 for r in d["labeled_build"]["label_share"]["each"])}
    peaks = [d[k]["peak_rss_mb"]["max"] for d in (jp2, cog) if d
             for k in ("build", "labeled_build") if d.get(k)]
    if peaks:
        doc["peak_rss_mb"] = max(peaks)
        holds["peak_rss_mb"] = {"median": doc["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
                                "every_rep": doc["peak_rss_mb"] <= TARGETS["peak_rss_mb"]}
    doc["holds"] = holds
    if raster_peer:
        doc["raster_peer"] = raster_peer
    return doc


def main(reps_jp2: int = 5, reps_cog: int = 5, labeled_jp2: int = 2, labeled_cog: int = 5) -> dict:
    """Run both formats and write bench/results/tiling.json (COG first: it is quick)."""
    from labels import load as load_labels

    peer = load_labels().get("raster_peer")
    cog = bench_format("cog", reps_cog, labeled_cog)
    write_result("tiling", summarize(None, cog, peer))
    jp2 = bench_format("jp2", reps_jp2, labeled_jp2)
    doc = summarize(jp2, cog, peer)
    path = write_result("tiling", doc)
    print(json.dumps(doc["holds"]))
    print(f"wrote {path}")
    return doc


def _s(d: dict, fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}–{fmt.format(d['max'])})"


def render(doc: dict) -> list[str]:
    """The BENCHMARKS.md tiling section of bench/results/tiling.json (numbers from ``doc``)."""
    lines = ["## Tiling (`bench/results/tiling.json`) — issue: archive build part 1", ""]
    if "cog" not in doc and "jp2" not in doc:
        return lines + ["Not measured yet (`python bench/run.py tiling`)."]
    any_fmt = doc.get("cog") or doc.get("jp2")
    lines += [
        (f"One full {doc['size_px']} px tile ({doc['tile']}, synthetic, 12 bands + SCL), "
         f"`gdal_threads={any_fmt['gdal_threads']}`, `local[1]`. *Decode-only* = rasterio reading "
         "all 13 layers whole. *Build* = a real `run_build`, one Spark task. Each run is a fresh "
         "interpreter; repetitions interleaved; median (min–max). *Task CPU* = the build "
         "task's Python worker (what `ratio_cpu` uses); *tree CPU* = every process of the run "
         "(driver Python, JVM with the executor threads, PySpark daemon and workers): the larger "
         "of `getrusage(RUSAGE_CHILDREN)` after the child stopped Spark and reaped the JVM and a "
         "/proc poll of the tree every 0.1 s (rusage alone misses the PySpark worker's CPU); "
         "decode-only's tree CPU likewise includes interpreter start and imports."),
        "",
        ("| format | reps | decode-only CPU s | build task CPU s | build tree CPU s | "
         "**ratio_cpu** (target) | ratio_cpu per rep | ratio of tree CPU | patches/s | "
         "task peak RSS MB | tree peak RSS MB |"),
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for fmt, label in (("jp2", "JP2 (SAFE)"), ("cog", "COG (STAC)")):
        d = doc.get(fmt)
        if not d:
            continue
        t, b = doc["targets"][f"ratio_cpu_{fmt}"], d["build"]
        h = doc["holds"][f"ratio_cpu_{fmt}"]
        lines.append(
            f"| {label} | {d['reps']} | {_s(d['decode_only']['cpu_s'])} | {_s(b['cpu_s'])} | "
            f"{_s(b['tree_cpu_s'])} | **{d['ratio_cpu']['median']:.3f}** (≤ {t}; "
            f"{'holds' if h['median'] else 'fails'}, every rep: {'yes' if h['every_rep'] else 'no'}) | "
            f"{', '.join(f'{r:.3f}' for r in d['ratio_cpu']['each'])} | "
            f"{_s(d['ratio_tree_cpu'], '{:.3f}')} | {b['patches_per_s']:,.0f} | "
            f"{b['peak_rss_mb']['max']:,.0f} | {b['tree_peak_rss_mb']['max']:,.0f} |")
    for fmt in ("jp2", "cog"):
        if doc.get(fmt, {}).get("tree_cpu_note"):
            lines += ["", f"{fmt.upper()} tree CPU: {doc[fmt]['tree_cpu_note']}."]
    if "peak_rss_mb" in doc:
        lines += ["", (f"Peak RSS of a task for a full tile: **{doc['peak_rss_mb']:,.0f} MB** "
                       f"(target ≤ {doc['targets']['peak_rss_mb']:,} MB).")]
    lab = [(f, doc[f]["labeled_build"]) for f in ("jp2", "cog") if doc.get(f, {}).get("labeled_build")]
    if lab:
        lines += ["", "### Label stage share — issue: archive build part 2", "",
                  (f"The same tile with the v1 rule (`sedonadb` engine, reference maps) on "
                   f"{lab[0][1]['clc_polygons']:,} CLC polygons. Label stage = the task's "
                   "`label_s` (CLC bbox read, repair and reprojection, SedonaDB join, 10 m "
                   "reference maps, the rule); share = ÷ the build's wall time (and ÷ the "
                   "task's wall time)."), "",
                  "| format | reps | label stage s | build wall s | **share** (target ≤ 5 %) | share of task | tree CPU s |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for fmt, x in lab:
            lines.append(f"| {fmt.upper()} | {x['reps']} | {_s(x['label_s'], '{:.2f}')} | "
                         f"{_s(x['build_wall_s'])} | **{_s(x['label_share'], '{:.1%}')}** | "
                         f"{_s(x['label_share_of_task'], '{:.1%}')} | "
                         f"{_s(x['tree_cpu_s']) if 'tree_cpu_s' in x else 'n/a'} |")
    rp = doc.get("raster_peer")
    if rp:
        s, o = rp["sedona"], rp["ours"]
        lines += ["", (f"**Peer: Sedona raster tiling.** {rp['measured']}. Process-tree CPU: "
                       f"Sedona {_s(s['tree_cpu_s'])} s vs ours {_s(o['tree_cpu_s'])} s "
                       f"(our task alone {_s(o['task_cpu_s'])} s); {s['tiles_checked']} Sedona "
                       f"tiles checked against rasterio windows, {s['tiles_mismatched']} differ "
                       "(see `labels.json`).")]
    return lines


if __name__ == "__main__":
    main()
