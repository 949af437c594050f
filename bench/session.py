"""Fixed cost of a local Spark job: the driver JVM with the default JIT against C1-only.

Each repetition runs, in fresh interpreters and interleaved, (a) a session start + one tiny job +
teardown and (b) a labelled build of one small product, once with ``quick_jvm: false`` (the
JVM's default tiered JIT) and once with ``quick_jvm: true`` (``-XX:TieredStopAtLevel=1``, our
default for local masters). The whole process tree's CPU is measured (driver Python, JVM,
PySpark workers; :func:`common.run_tree`). Writes bench/results/session.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SPARK_TEARDOWN, cached_world, loadavg, run_tree, spread, write_result

REPS = 5
PRODUCT = "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319"
VARIANTS = {"default_jit": False, "quick_jvm": True}

_SESSION = SPARK_TEARDOWN + """
import json
from bigearthnet.config import SparkConfig
from bigearthnet.spark.session import get_session
spark = get_session(SparkConfig(master="local[2]", quick_jvm={quick}))
assert spark.sparkContext.parallelize(range(4), 2).map(lambda x: x * x).sum() == 14
opts = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions", "")
_stop_spark_and_reap_jvm()
print(json.dumps({{"java_options": opts}}))
"""

_BUILD = SPARK_TEARDOWN + """
import json, shutil, tempfile
from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.spark.build import run_build
out = tempfile.mkdtemp() + "/ds"
m = run_build(BuildConfig(products={products!r}, clc={clc!r}, out=out,
                          spark=SparkConfig(master="local[2]", quick_jvm={quick})))
shutil.rmtree(out)
_stop_spark_and_reap_jvm()
print(json.dumps({{"patches": m["counts"]["patches_cut"]}}))
"""


def main() -> None:
    """Measure and write bench/results/session.json."""
    world = cached_world("session_1x1200_cog", [PRODUCT], 1200, "cog")
    products, clc = str(world / "products"), str(world / "clc" / "clc2018.gpkg")
    raw: dict[str, dict[str, list]] = {k: {v: [] for v in VARIANTS} for k in ("session", "build")}
    loads = []
    for rep in range(REPS):
        for kind, template in (("session", _SESSION), ("build", _BUILD)):
            order = list(VARIANTS) if rep % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                loads.append(loadavg())
                code = template.format(quick=VARIANTS[name], products=products, clc=clc)
                raw[kind][name].append(run_tree(code))
                r = raw[kind][name][-1]
                print(f"rep {rep} {kind} {name}: tree CPU {r['tree_cpu_s']:.2f} s, "
                      f"wall {r['tree_wall_s']:.1f} s", flush=True)
    doc: dict = {"reps": REPS, "master": "local[2]", "loadavg_1m_before": spread(loads, 2),
                 "product": PRODUCT, "size_px": 1200, "variants": {}, "ratios": {}}
    for kind, by_variant in raw.items():
        doc["variants"][kind] = {}
        for name, runs in by_variant.items():
            jvm = [r["tree_cpu_polled_by_process"].get("jvm", 0.0) for r in runs]
            doc["variants"][kind][name] = {
                "tree_cpu_s": spread([r["tree_cpu_s"] for r in runs], 3),
                "jvm_cpu_s": spread(jvm, 3),
                "wall_s": spread([r["tree_wall_s"] for r in runs], 3),
            }
        a, b = by_variant["default_jit"], by_variant["quick_jvm"]
        per_rep = [x["tree_cpu_s"] / y["tree_cpu_s"] for x, y in zip(a, b)]
        doc["ratios"][f"{kind}_tree_cpu_default_over_quick"] = spread(per_rep, 3)
        per_rep_wall = [x["tree_wall_s"] / y["tree_wall_s"] for x, y in zip(a, b)]
        doc["ratios"][f"{kind}_wall_default_over_quick"] = spread(per_rep_wall, 3)
    doc["java_options"] = {n: raw["session"][n][0]["java_options"] for n in VARIANTS}
    path = write_result("session", doc)
    print(json.dumps(doc["ratios"], indent=1))
    print(f"wrote {path}")


def render(doc: dict) -> list[str]:
    """The BENCHMARKS.md section of bench/results/session.json."""
    lines = ["## Fixed cost of a local job (`bench/results/session.json`)", ""]
    if not doc.get("variants"):
        return lines + ["Not measured yet (`python bench/run.py session`)."]
    load = doc["loadavg_1m_before"]
    base = set(doc["java_options"]["default_jit"].split())
    added = " ".join(t for t in doc["java_options"]["quick_jvm"].split() if t not in base)
    lines += [
        (f"Fresh interpreters on `{doc['master']}`, {doc['reps']} interleaved repetitions, median "
         f"(min–max); tree CPU counts every process (driver Python, JVM, PySpark workers). "
         f"`default_jit`: the JVM's tiered JIT; `quick_jvm`: driver JVM options "
         f"`{added}` added (the default of `spark.quick_jvm` on local "
         f"masters, not used with the sedona-spark engine). *session*: start, one tiny job, stop; "
         f"*build*: a labelled build of one {doc['size_px']} px COG product. 1-minute load "
         f"average before the runs {load['min']}–{load['max']}."),
        "",
        "| run | variant | tree CPU s | JVM CPU s | wall s |",
        "|---|---|---:|---:|---:|",
    ]
    for kind, by_variant in doc["variants"].items():
        for name, v in by_variant.items():
            t, j, w = v["tree_cpu_s"], v["jvm_cpu_s"], v["wall_s"]
            lines.append(f"| {kind} | `{name}` | **{t['median']:.2f}** ({t['min']:.2f}–{t['max']:.2f}) | "
                         f"{j['median']:.2f} | {w['median']:.1f} ({w['min']:.1f}–{w['max']:.1f}) |")
    lines += ["", "| ratio (default ÷ quick, per repetition) | median | min–max |", "|---|---:|---:|"]
    for name, r in doc["ratios"].items():
        lines.append(f"| `{name}` | **{r['median']:.2f}** | {r['min']:.2f}–{r['max']:.2f} |")
    return lines


if __name__ == "__main__":
    main()
