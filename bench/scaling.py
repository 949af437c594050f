"""Scaling benchmark: CPU-seconds per product when a build holds 1, 2, 4 and 8 full COG products.

Products: the cached full-size synthetic COG product of T29UPU (12 bands + SCL, 10980 px) and
copies of it as further real-style acquisitions of the same tile (other S2A sensing dates on
orbit R080: the STAC item's name fields are rewritten and every COG file is copied, so each
product has its own files on disk). Identical pixels make the per-product work identical, so
any change in CPU per product comes from the build, not the data.

Cold: each build is a tiling ``run_build`` (no CLC) on ``local[2]`` in a fresh interpreter, measured
with ``common.run_tree``: process-tree CPU (driver Python, JVM, PySpark daemon and workers;
the JVM is stopped and reaped before rusage is read), wall, and process-tree peak RSS. Sizes
are interleaved (1, 2, 4, 8, then 8, 4, 2, 1, ...). Target: tree CPU-seconds per product
constant within 10 % across 1..8 (max ÷ min of the medians ≤ 1.10); the fixed per-build cost
(JVM start, session, driver) is reported too, from a least-squares line CPU = a + b·n.

Warm: the same sizes built again in one session that already ran a build, with the process
tree's CPU taken around each build: the per-product cost without the job's start-up. Two machine
figures frame the spreads: the noise floor (one fixed workload, repeated) and the contention
factor (that workload alone vs. two copies at once: a 1-product build runs one task alone, larger
builds two at once). A third, first touch, is the system CPU of filling fresh memory whose pages
were freed a moment before vs. seconds before (this VM hands free pages back to its host), the
cause of the tasks' varying system CPU (``python scaling.py --first-touch`` measures only it). A
fourth, the write path, compares writing a product's worth of bytes through the page cache and
past it (``DirectFile``), as the tasks now do (``--write-path``).
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from common import (
    CACHE,
    RESULTS,
    SPARK_TEARDOWN,
    cached_world,
    loadavg,
    run_tree,
    spread,
    write_result,
)

BASE = "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319"
DATES = ("20170617", "20170627", "20170707", "20170717", "20170727", "20170806", "20170816",
         "20170826")
FULL = 10980
SIZES = (1, 2, 4, 8)
TARGET = 0.10


def product_name(date: str) -> str:
    """An S2A L2A name of T29UPU on orbit R080 sensed on ``date``."""
    return BASE.replace("20170617", date)


def scaling_products(n_max: int = 8) -> Path:
    """bench/cache/scaling_cog/<n>/ folders holding the first n products (hard links between the
    size folders; each product's files are a real copy of the base product's)."""
    world = cached_world("full_cog", [BASE], FULL, "cog")
    src = world / "products" / BASE
    root = CACHE / "scaling_cog"
    store = root / "store"
    for date in DATES[:n_max]:
        name = product_name(date)
        dst = store / name
        if (dst / ".complete").exists():
            continue
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for f in src.iterdir():
            if f.suffix == ".json":
                (dst / f.name.replace(BASE, name)).write_text(
                    f.read_text().replace(BASE, name).replace("20170617", date))
            else:
                shutil.copyfile(f, dst / f.name)
        (dst / ".complete").write_text("")
    for n in SIZES:
        if n > n_max:
            continue
        folder = root / str(n)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for date in DATES[:n]:
            (folder / product_name(date)).symlink_to(store / product_name(date),
                                                     target_is_directory=True)
    return root


BUILD = SPARK_TEARDOWN + textwrap.dedent("""
    import json, shutil, tempfile
    from bigearthnet.config import BuildConfig, SparkConfig
    from bigearthnet.spark.build import run_build
    tmp = tempfile.mkdtemp(prefix="bench-scaling-")
    m = run_build(BuildConfig(products={products!r}, out=tmp + "/ds", spark=SparkConfig(master="local[2]")))
    ps = m["products"]
    shutil.rmtree(tmp)
    jvm_rc = _stop_spark_and_reap_jvm()
    print(json.dumps({{"n": len(ps), "task_cpu_s": sum(p["cpu_s"] for p in ps),
                      "task_cpu_each_s": [round(p["cpu_s"], 3) for p in ps],
                      "task_sys_each_s": [round(p["cpu_sys_s"], 3) for p in ps],
                      "task_wall_s": [p["wall_s"] for p in ps],
                      "task_peak_rss_mb": max(p["peak_rss_mb"] for p in ps),
                      "patches": sum(p["n_patches"] for p in ps),
                      "tasks_wall_s": m["timings_s"]["tasks_wall_s"],
                      "build_wall_s": m["timings_s"]["total_s"], "jvm_rc": jvm_rc}}))
""")


WARM = textwrap.dedent("""
    import json, os, shutil, tempfile
    from bigearthnet.config import BuildConfig, SparkConfig
    from bigearthnet.spark.build import run_build
    from bigearthnet.spark.session import get_session

    def tree_cpu():
        # user+sys of this interpreter and every live descendant (JVM, PySpark daemon and its
        # reused workers), from /proc
        tick, me, total = os.sysconf("SC_CLK_TCK"), os.getpid(), 0.0
        parent, cpu = {{}}, {{}}
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    stat = open(f"/proc/{{name}}/stat").read()
                except OSError:
                    continue
                fields = stat[stat.rindex(")") + 2:].split()
                parent[int(name)] = int(fields[1])
                cpu[int(name)] = (int(fields[11]) + int(fields[12])) / tick
        for pid, c in cpu.items():
            q = pid
            while q > 1 and q != me:
                q = parent.get(q, 0)
            total += c if q == me else 0.0
        return total

    spark = SparkConfig(master="local[2]")
    get_session(spark)
    root = {root!r}
    warm_up = tempfile.mkdtemp(prefix="bench-scaling-warm-")
    run_build(BuildConfig(products=root + "/1", out=warm_up + "/w", spark=spark))
    shutil.rmtree(warm_up)
    runs = []
    for rep in range({reps}):
        for n in ({sizes!r} if rep % 2 == 0 else {sizes!r}[::-1]):
            tmp = tempfile.mkdtemp(prefix="bench-scaling-warm-")
            out = tmp + "/ds"
            before = tree_cpu()
            m = run_build(BuildConfig(products=f"{{root}}/{{n}}", out=out, spark=spark))
            runs.append({{"n": n, "rep": rep, "tree_cpu_s": tree_cpu() - before,
                         "task_cpu_each_s": [round(p["cpu_s"], 3) for p in m["products"]],
                         "task_sys_each_s": [round(p["cpu_sys_s"], 3) for p in m["products"]],
                         "build_wall_s": m["timings_s"]["total_s"]}})
            shutil.rmtree(tmp)
    _stop_spark_and_reap_jvm()
    print(json.dumps({{"runs": runs}}))
""")


def _user_sys(runs: list[dict]) -> dict:
    """User and system (kernel) CPU over every task of ``runs`` (median, min, max)."""
    if not runs:
        return {}
    cpu = [x for r in runs for x in r["task_cpu_each_s"]]
    sys_ = [x for r in runs for x in r["task_sys_each_s"]]
    return {"task_user_all_tasks_s": spread([c - s for c, s in zip(cpu, sys_, strict=True)], 3),
            "task_sys_all_tasks_s": spread(sys_, 3)}


def warm_session(root: Path, reps: int, sizes: tuple[int, ...]) -> dict:
    """The sizes built again and again in one warm ``local[2]`` session (JVM, session and Python
    workers started and used by a first 1-product build that is not counted), interleaved:
    per-product CPU without the fixed cost of starting a job (``session.json`` has that)."""
    out = run_tree(SPARK_TEARDOWN + WARM.format(root=str(root), reps=reps, sizes=tuple(sizes)))
    per: dict[str, dict] = {}
    for n in sizes:
        rs = [r for r in out["runs"] if r["n"] == n]
        per[str(n)] = {
            "tree_cpu_per_product_s": spread([r["tree_cpu_s"] / n for r in rs], 3),
            "task_cpu_all_tasks_s": spread([x for r in rs for x in r["task_cpu_each_s"]], 3),
            **_user_sys(rs),
            "build_wall_s": spread([r["build_wall_s"] for r in rs], 2),
            "task_cpu_each_s": [r["task_cpu_each_s"] for r in rs],
        }
    doc: dict = {"reps": reps, "sizes": per}
    for key in ("tree_cpu_per_product_s", "task_cpu_all_tasks_s", "task_user_all_tasks_s"):
        meds = {n: v[key]["median"] for n, v in per.items()}
        full = [m for n, m in meds.items() if int(n) >= 2]
        doc[f"spread_{key}"] = {"all": round(max(meds.values()) / min(meds.values()) - 1, 4),
                                "n_ge_2": round(max(full) / min(full) - 1, 4)}
    return add_warm_holds(doc)


def add_warm_holds(warm: dict) -> dict:
    """The target check of the warm session: CPU per product over all sizes (1–8) within
    :data:`TARGET`, for the session's tree CPU and for the tasks' CPU."""
    warm["holds"] = {"tree": warm["spread_tree_cpu_per_product_s"]["all"] <= TARGET,
                     "task": warm["spread_task_cpu_all_tasks_s"]["all"] <= TARGET}
    return warm


DECODE = textwrap.dedent("""
    import json, sys, time
    import numpy as np, rasterio
    cpu0 = time.process_time()
    for band in sys.argv[2:]:
        with rasterio.open(f"{sys.argv[1]}/{band}.tif") as src:
            float(src.read(1).astype(np.float32).sum())
    print(json.dumps({"cpu_s": time.process_time() - cpu0}))
""")
"""A fixed single-threaded workload: decode the named COG bands of a product folder and sum them;
prints its CPU seconds."""


def _decode_cmd(bands: tuple[str, ...]) -> list[str]:
    """The :data:`DECODE` command on the base product, run once to fill the page cache."""
    import subprocess
    import sys

    folder = scaling_products(1) / "1" / product_name(DATES[0])
    cmd = [sys.executable, "-c", DECODE, str(folder), *bands]
    subprocess.run(cmd, check=True, capture_output=True)
    return cmd


def _decode_cpu(cmd: list[str]) -> float:
    import subprocess

    return json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                     text=True).stdout)["cpu_s"]


def contention(reps: int = 6) -> dict:
    """CPU time of one fixed single-threaded workload (decode six COG bands) run alone, and of
    each of two copies run at once on the two cores, alternating: how much a busy neighbour core
    inflates CPU time."""
    import subprocess

    cmd = _decode_cmd(("B02", "B03", "B04", "B08", "B05", "B06"))
    alone, paired = [], []
    for _ in range(reps):
        alone.append(_decode_cpu(cmd))
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        paired += [json.loads(p.communicate()[0])["cpu_s"] for p in procs]
    doc = {"alone_cpu_s": spread(alone, 3), "paired_cpu_s": spread(paired, 3)}
    doc["paired_over_alone"] = round(doc["paired_cpu_s"]["median"] / doc["alone_cpu_s"]["median"], 3)
    return doc


def noise_floor(reps: int = 8) -> dict:
    """The CPU time of one fixed single-threaded workload (decode four 10 m COG bands of the base
    product and sum them), ``reps`` times, each in a fresh interpreter: how much this machine's
    CPU-time figures vary for identical work (the floor under any spread the sizes show)."""
    cmd = _decode_cmd(("B02", "B03", "B04", "B08"))
    doc = spread([_decode_cpu(cmd) for _ in range(reps)], 3)
    doc["spread"] = round(doc["max"] / doc["min"] - 1, 4)
    return doc


FIRST_TOUCH = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    gib, reps, pause = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

    def touch():  # system CPU of writing gib GiB of fresh anonymous memory once
        t0 = os.times().system
        a = np.empty(int(gib * 2**30), np.uint8)
        a.fill(1)
        t = os.times().system - t0
        del a  # munmap: back to the kernel's free lists
        return round(t, 3)

    touch()
    hot, returned = [], []
    for _ in range(reps):
        hot.append(touch())  # the pages the previous touch freed a moment ago
        time.sleep(pause)
        returned.append(touch())  # pages freed pause s ago
    print(json.dumps({"hot": hot, "returned": returned}))
""")


def first_touch(gib: float = 2.0, reps: int = 5, pause_s: float = 6.0) -> dict:
    """System CPU of first touching ``gib`` GiB of memory: pages freed a moment before vs pages
    freed ``pause_s`` s before. This VM hands free pages back to its host (virtio-balloon free
    page reporting, a few seconds after they are freed); touching such a page again costs a host
    fault, which the guest counts as system CPU of whatever touched it (a task writing into the
    page cache, a numpy array being filled)."""
    import datetime
    import subprocess
    import sys

    out = json.loads(subprocess.run([sys.executable, "-c", FIRST_TOUCH, str(gib), str(reps),
                                     str(pause_s)], check=True, capture_output=True,
                                    text=True).stdout)
    params = Path("/sys/module/page_reporting/parameters")
    doc = {"gib": gib, "pause_s": pause_s, "hot_sys_s": spread(out["hot"], 3),
           "returned_sys_s": spread(out["returned"], 3),
           "page_reporting": params.is_dir(),
           "measured": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    if params.is_dir():
        doc["page_reporting_order"] = int((params / "page_reporting_order").read_text())
    doc["returned_over_hot"] = round(doc["returned_sys_s"]["median"]
                                     / max(doc["hot_sys_s"]["median"], 1e-3), 1)
    return doc


WRITE_PATH = textwrap.dedent("""
    import json, os, sys, tempfile, time
    from bigearthnet.dataset.io import DirectFile
    mib, reps, pause, folder = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    block = os.urandom(1 << 20) * 8  # 8 MiB of incompressible bytes, written mib // 8 times

    def write(direct):
        path = os.path.join(folder, "write-path.bin")
        time.sleep(pause)  # the pages freed by the last round are back with the host
        t0 = os.times()
        with (DirectFile(path) if direct else open(path, "wb")) as f:
            for _ in range(mib // 8):
                f.write(block)
        t1 = os.times()
        os.unlink(path)
        return {"sys_s": round(t1.system - t0.system, 3), "user_s": round(t1.user - t0.user, 3),
                "wall_s": round(t1.elapsed - t0.elapsed, 3),
                "direct": getattr(f, "direct", False)}

    runs = {"buffered": [], "direct": []}
    for _ in range(reps):
        for kind in ("buffered", "direct"):
            runs[kind].append(write(kind == "direct"))
    print(json.dumps(runs))
""")


def write_path(mib: int = 1280, reps: int = 5, pause_s: float = 6.0) -> dict:
    """System CPU and wall time of writing ``mib`` MiB (a full-size product's Parquet) to a
    file through the page cache (``open``) and past it (:class:`~bigearthnet.dataset.io.DirectFile`,
    what the build tasks use), interleaved, each after a pause of ``pause_s`` s: the reason the
    tasks write with ``O_DIRECT`` on this VM (see :func:`first_touch`)."""
    import datetime
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-write-path-", dir=CACHE) as folder:
        out = json.loads(subprocess.run([sys.executable, "-c", WRITE_PATH, str(mib), str(reps),
                                         str(pause_s), folder], check=True, capture_output=True,
                                        text=True).stdout)
    doc: dict = {"mib": mib, "pause_s": pause_s,
                 "measured": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                 "direct_taken": all(r["direct"] for r in out["direct"])}
    for kind, rs in out.items():
        doc[kind] = {k: spread([r[k] for r in rs], 3) for k in ("sys_s", "user_s", "wall_s")}
    doc["buffered_over_direct"] = {
        k: round(doc["buffered"][k]["median"] / max(doc["direct"][k]["median"], 1e-3), 1)
        for k in ("sys_s", "wall_s")}
    return doc


FIRST_TASK = textwrap.dedent("""
    import json, os, resource, shutil, sys, tempfile
    from pathlib import Path
    from bigearthnet.config import BuildConfig
    from bigearthnet.dataset.layout import DatasetLayout
    from bigearthnet.sentinel2.products import discover_products
    from bigearthnet.stages.product import build_product
    root, tasks = sys.argv[1], int(sys.argv[2])
    sources = sorted(discover_products(root)[0], key=lambda s: s.product_id)[:tasks]
    staging = Path(tempfile.mkdtemp(prefix="bench-first-task-", dir=sys.argv[3]))
    DatasetLayout(staging).create_task_folders()
    cfg = BuildConfig(products=root, out=str(staging / "unused"))
    out = []
    for i, source in enumerate(sources):  # what one Python worker does with its tasks
        s = build_product(i, source, staging, cfg)
        assert s["status"] == "ok", s
        out.append({"cpu_s": round(s["cpu_s"], 3), "sys_s": round(s["cpu_sys_s"], 3),
                    "peak_rss_mb": round(s["peak_rss_mb"], 1)})
    shutil.rmtree(staging)
    print(json.dumps(out))
""")


def worker_first_task(root: Path, procs: int = 3, tasks: int = 3) -> dict:
    """A Python worker's first task against its later ones: ``procs`` fresh interpreters each run
    ``build_product`` on ``tasks`` products in a row (what a reused PySpark worker does), no
    Spark. The first task faults the worker's working set in; the later ones reuse it."""
    import subprocess
    import sys

    runs = [json.loads(subprocess.run(
        [sys.executable, "-c", FIRST_TASK, str(root / str(max(SIZES))), str(tasks), str(CACHE)],
        check=True, capture_output=True, text=True).stdout) for _ in range(procs)]
    first, later = [r[0] for r in runs], [t for r in runs for t in r[1:]]
    doc = {"procs": procs, "tasks_per_proc": tasks}
    for name, ts in (("first", first), ("later", later)):
        doc[name] = {"cpu_s": spread([t["cpu_s"] for t in ts], 3),
                     "sys_s": spread([t["sys_s"] for t in ts], 3),
                     "user_s": spread([t["cpu_s"] - t["sys_s"] for t in ts], 3)}
    doc["first_minus_later_cpu_s"] = round(doc["first"]["cpu_s"]["median"]
                                           - doc["later"]["cpu_s"]["median"], 3)
    doc["peak_rss_mb"] = max(t["peak_rss_mb"] for r in runs for t in r)
    return doc


def main(reps: int = 5, sizes: tuple[int, ...] = SIZES) -> dict:
    """Build each size ``reps`` times (interleaved) and write bench/results/scaling.json."""
    root = scaling_products(max(sizes))
    runs: dict[int, list[dict]] = {n: [] for n in sizes}
    for rep in range(reps):
        for n in (sizes if rep % 2 == 0 else sizes[::-1]):
            load = loadavg()
            r = run_tree(BUILD.format(products=str(root / str(n))))
            assert r["n"] == n, r
            r["loadavg_before"] = load
            runs[n].append(r)
            print(f"scaling {n} products rep {rep}: tree CPU {r['tree_cpu_s']:.1f} s "
                  f"({r['tree_cpu_s'] / n:.1f} s/product), wall {r['tree_wall_s']:.1f} s", flush=True)
            write_result("scaling", summarize(runs, reps))
    doc = summarize(runs, reps)
    doc["noise_floor_cpu_s"] = noise_floor()
    doc["contention"] = contention()
    doc["first_touch"] = first_touch()
    doc["write_path"] = write_path()
    doc["worker_first_task"] = worker_first_task(root)
    write_result("scaling", doc)
    doc["warm_session"] = warm_session(root, reps, sizes)
    write_result("scaling", doc)
    print(json.dumps({k: doc[k] for k in ("per_product_spread", "holds")}))
    return doc


def summarize(runs: dict[int, list[dict]], reps: int) -> dict:
    """Per size: tree CPU per product, task CPU per product, wall; the target check."""
    sizes = {}
    for n, rs in runs.items():
        if not rs:
            continue
        sizes[str(n)] = {
            "runs": len(rs),
            "tree_cpu_s": spread([r["tree_cpu_s"] for r in rs], 2),
            "tree_cpu_per_product_s": spread([r["tree_cpu_s"] / n for r in rs], 3),
            "task_cpu_per_product_s": spread([r["task_cpu_s"] / n for r in rs], 3),
            "task_cpu_each_s": [r.get("task_cpu_each_s") for r in rs],
            "task_cpu_all_tasks_s": spread([x for r in rs for x in r.get("task_cpu_each_s") or []]
                                           or [0.0], 3),
            **_user_sys([r for r in rs if "task_sys_each_s" in r]),
            "non_task_cpu_s": spread([r["tree_cpu_s"] - r["task_cpu_s"] for r in rs], 2),
            "wall_s": spread([r["tree_wall_s"] for r in rs], 2),
            "tasks_wall_s": spread([r["tasks_wall_s"] for r in rs], 2),
            "wall_per_product_s": spread([r["tree_wall_s"] / n for r in rs], 3),
            "tree_peak_rss_mb": spread([r["tree_peak_rss_mb"] for r in rs], 1),
            "task_peak_rss_mb": max(r["task_peak_rss_mb"] for r in rs),
            "patches": rs[0]["patches"],
            "loadavg_before": [r["loadavg_before"] for r in rs],
            "cpu_by_process_first_run": rs[0].get("tree_cpu_polled_by_process"),
            "tree_cpu_rusage_s": spread([r.get("tree_cpu_rusage_s", r["tree_cpu_s"]) for r in rs], 2),
        }
    doc: dict = {"products": [product_name(d) for d in DATES], "master": "local[2]",
                 "reps": reps, "sizes": sizes, "target_spread": TARGET}
    if len(sizes) >= 2:
        sizes = dict(sorted(sizes.items(), key=lambda kv: int(kv[0])))
        doc["sizes"] = sizes
        tree = [v["tree_cpu_per_product_s"]["median"] for v in sizes.values()]
        task = [v["task_cpu_per_product_s"]["median"] for v in sizes.values()]
        ns = [int(k) for k in sizes]
        xs = [sizes[str(n)]["tree_cpu_s"]["median"] for n in ns]
        mx, my = sum(ns) / len(ns), sum(xs) / len(xs)
        b = sum((n - mx) * (x - my) for n, x in zip(ns, xs)) / sum((n - mx) ** 2 for n in ns)
        doc["per_product_spread"] = {"tree": round(max(tree) / min(tree) - 1, 4),
                                     "task": round(max(task) / min(task) - 1, 4)}
        doc["fit_tree_cpu"] = {"fixed_s": round(my - b * mx, 2), "per_product_s": round(b, 3)}
        doc["holds"] = {"tree": doc["per_product_spread"]["tree"] <= TARGET,
                        "task": doc["per_product_spread"]["task"] <= TARGET}
    return add_marginal(doc)


def add_marginal(doc: dict) -> dict:
    """Marginal tree CPU per product beyond the first, (tree(n) − tree(1)) ÷ (n − 1), per size,
    and its spread: the per-product cost once the fixed per-build cost is taken out."""
    sizes = doc.get("sizes", {})
    if "1" not in sizes or len(sizes) < 3:
        return doc
    one = sizes["1"]["tree_cpu_s"]["median"]
    marg = {n: round((v["tree_cpu_s"]["median"] - one) / (int(n) - 1), 3)
            for n, v in sizes.items() if int(n) > 1}
    doc["marginal_tree_cpu_per_product_s"] = marg
    doc["marginal_spread"] = round(max(marg.values()) / min(marg.values()) - 1, 4)
    doc["holds"]["marginal"] = doc["marginal_spread"] <= TARGET
    return doc


def _s(d: dict, fmt: str = "{:.1f}") -> str:
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}–{fmt.format(d['max'])})"


def _first_task_note(ft: dict) -> str:
    f, later = ft["first"], ft["later"]
    return (f". Measured apart (`worker_first_task`: {ft['procs']} fresh interpreters, each "
            f"building {ft['tasks_per_proc']} products in a row without Spark): a worker's first "
            f"task used {_s(f['cpu_s'], '{:.2f}')} s of CPU (system {_s(f['sys_s'], '{:.2f}')} s), "
            f"its later tasks {_s(later['cpu_s'], '{:.2f}')} s (system "
            f"{_s(later['sys_s'], '{:.2f}')} s): {ft['first_minus_later_cpu_s']:.2f} s more, "
            "once per worker.")


def render(doc: dict) -> list[str]:
    """The BENCHMARKS.md section of bench/results/scaling.json (numbers from ``doc``)."""
    lines = ["## Scaling (`bench/results/scaling.json`)", ""]
    if not doc.get("sizes"):
        return lines + ["Not measured yet (`python bench/run.py scaling`)."]
    lines += [
        (f"Tiling builds of 1–{max(int(k) for k in doc['sizes'])} full-size COG products "
         f"(10980 px, 12 bands + SCL; copies of one synthetic T29UPU product under other "
         f"sensing dates, each with its own files) on `{doc['master']}`, {doc['reps']} "
         "interleaved repetitions, median (min–max). Tree CPU = every process of the run "
         "(driver Python, JVM, PySpark workers); task CPU = the build tasks' own Python CPU."),
        "",
        "| products | tree CPU s / product | task CPU s / product | non-task CPU s (whole build) | wall s | wall s / product | tree peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, v in sorted(doc["sizes"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {n} | {_s(v['tree_cpu_per_product_s'], '{:.2f}')} | "
                     f"{_s(v['task_cpu_per_product_s'], '{:.2f}')} | {_s(v['non_task_cpu_s'])} | "
                     f"{_s(v['wall_s'])} | {_s(v['wall_per_product_s'], '{:.2f}')} | "
                     f"{_s(v['tree_peak_rss_mb'], '{:,.0f}')} |")
    if "holds" in doc:
        sp, fit = doc["per_product_spread"], doc["fit_tree_cpu"]
        lines += ["", (f"Spread of CPU per product (max ÷ min of the medians − 1): tree "
                       f"**{sp['tree']:.1%}**, task **{sp['task']:.1%}** (target ≤ "
                       f"{doc['target_spread']:.0%}: tree {'holds' if doc['holds']['tree'] else 'fails'}, "
                       f"task {'holds' if doc['holds']['task'] else 'fails'}). Line fit of tree "
                       f"CPU: {fit['fixed_s']:.1f} s per build + {fit['per_product_s']:.2f} s "
                       "per product.")]
    if all("task_cpu_all_tasks_s" in v for v in doc["sizes"].values()):
        per = {n: v["task_cpu_all_tasks_s"] for n, v in doc["sizes"].items()}
        meds = [v["median"] for v in per.values()]
        lines += ["", ("CPU of single tasks, over every task of every repetition, median (min–max): "
                       + "; ".join(f"n = {n}: {_s(v, '{:.2f}')} s ({v['n']} tasks)" for n, v in
                                   sorted(per.items(), key=lambda kv: int(kv[0])))
                       + f"; spread of the medians {max(meds) / min(meds) - 1:.1%}.")]
    if all("task_user_all_tasks_s" in v for v in doc["sizes"].values()):
        user = {n: v["task_user_all_tasks_s"] for n, v in doc["sizes"].items()}
        sys_ = {n: v["task_sys_all_tasks_s"] for n, v in doc["sizes"].items()}
        um = [v["median"] for v in user.values()]
        peaks = [v["task_peak_rss_mb"] for v in doc["sizes"].values()]
        lines += ["", ("The same tasks split into user CPU (the build's own computation) and "
                       "system CPU (the kernel: page faults, page cache and file system work for "
                       "the task's reads and writes), medians: "
                       + "; ".join(f"n = {n}: user {user[n]['median']:.2f} s, system "
                                   f"{sys_[n]['median']:.2f} s" for n in
                                   sorted(user, key=int))
                       + f". Spread of the user medians **{max(um) / min(um) - 1:.1%}**. "
                       "A task that is the first of its Python worker faults in the worker's "
                       f"working set (peak {min(peaks):,.0f}–{max(peaks):,.0f} MB) once; "
                       "`local[2]` runs two workers, so every task of a 1- or "
                       "2-product build is a first task, and later tasks of larger builds reuse "
                       "the worker's memory" + (_first_task_note(doc["worker_first_task"])
                                                if "worker_first_task" in doc else "."))]
    if "noise_floor_cpu_s" in doc:
        nf = doc["noise_floor_cpu_s"]
        lines += ["", (f"Noise floor of this machine: one fixed single-threaded workload (decode "
                       f"four 10 m COG bands and sum them), {nf['n']} times in fresh "
                       f"interpreters, used {_s(nf, '{:.2f}')} s of CPU: max ÷ min − 1 = "
                       f"**{nf['spread']:.0%}** for identical work, median ÷ min − 1 = "
                       f"{nf['median'] / nf['min'] - 1:.1%}. Single CPU-time samples here can be "
                       "off by that much; medians are steadier, but the 10 % criterion sits "
                       "close to what this machine resolves.")]
    if "contention" in doc:
        c = doc["contention"]
        lines += ["", (f"Contention on this machine: the same single-threaded workload (decode six "
                       f"COG bands) used {_s(c['alone_cpu_s'], '{:.2f}')} s of CPU alone and "
                       f"{_s(c['paired_cpu_s'], '{:.2f}')} s per copy with a second copy on the "
                       f"other core (median ratio **×{c['paired_over_alone']:.2f}**, "
                       f"{c['alone_cpu_s']['n']} reps). A build of 1 product runs one task alone; "
                       "larger builds run two at once.")]
    if "first_touch" in doc:
        ft = doc["first_touch"]
        reporting = (f"free page reporting on, order {ft['page_reporting_order']}"
                     if ft["page_reporting"] else "no free page reporting found")
        lines += ["", (f"First touch of memory on this VM ({reporting}; measured "
                       f"{ft['measured']}): writing {ft['gib']:g} GiB of fresh memory cost "
                       f"{_s(ft['hot_sys_s'], '{:.2f}')} s of system CPU when its pages had been "
                       f"freed a moment before, and {_s(ft['returned_sys_s'], '{:.2f}')} s when "
                       f"they had been freed {ft['pause_s']:g} s before and handed back to the "
                       f"host (median ×{ft['returned_over_hot']:g}). A task that wrote its "
                       "~1.3 GB of Parquet into the page cache, or freed and re-allocated its "
                       "buffers, paid system CPU that depended on how recently the kernel had "
                       "freed the pages it got, not on the build; so the tasks write past the "
                       "page cache (`DirectFile`, `O_DIRECT`) and keep their freed heap for "
                       "reuse.")]
    if "write_path" in doc:
        wp = doc["write_path"]
        b, d = wp["buffered"], wp["direct"]
        lines += ["", (f"Write path ({wp['measured']}, {wp['mib']:,} MiB, about one full-size "
                       f"product's Parquet, {b['sys_s']['n']} interleaved reps, each after "
                       f"{wp['pause_s']:g} s idle): through the page cache {_s(b['sys_s'], '{:.2f}')} "
                       f"s of system CPU and {_s(b['wall_s'], '{:.2f}')} s wall; with "
                       f"`DirectFile` {_s(d['sys_s'], '{:.2f}')} s and {_s(d['wall_s'], '{:.2f}')} s "
                       f"(system CPU ×{wp['buffered_over_direct']['sys_s']:g}, wall "
                       f"×{wp['buffered_over_direct']['wall_s']:g} in favour of `DirectFile`"
                       + ("" if wp["direct_taken"] else "; O_DIRECT was refused, so both "
                          "were buffered") + ").")]
    if "warm_session" in doc:
        w = doc["warm_session"]
        sp_tree, sp_task = w["spread_tree_cpu_per_product_s"], w["spread_task_cpu_all_tasks_s"]
        lines += ["", (f"**Warm session.** The same builds again, {w['reps']} interleaved "
                       "repetitions in one `local[2]` session that has already run a build (JVM, "
                       "session and Python workers up): the build's own CPU per product, without "
                       "the fixed cost of starting a job (`session.json`). Tree CPU = the "
                       "session's processes' CPU during the build."),
                  "",
                  ("| products | tree CPU s / product | task CPU s (every task) | task user s | "
                   "task system s | build wall s |"),
                  "|---:|---:|---:|---:|---:|---:|"]
        for n, v in sorted(w["sizes"].items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {n} | {_s(v['tree_cpu_per_product_s'], '{:.2f}')} | "
                         f"{_s(v['task_cpu_all_tasks_s'], '{:.2f}')} | "
                         f"{_s(v['task_user_all_tasks_s'], '{:.2f}') if 'task_user_all_tasks_s' in v else '–'} | "
                         f"{_s(v['task_sys_all_tasks_s'], '{:.2f}') if 'task_sys_all_tasks_s' in v else '–'} | "
                         f"{_s(v['build_wall_s'])} |")
        lines += ["", (f"Spread of the medians: tree CPU per product **{sp_tree['all']:.1%}** over "
                       f"1–8 products, **{sp_tree['n_ge_2']:.1%}** over 2–8 (both cores busy); "
                       f"task CPU {sp_task['all']:.1%} and {sp_task['n_ge_2']:.1%}"
                       + (f"; task user CPU **{sp_user['all']:.1%}** and {sp_user['n_ge_2']:.1%}"
                          if (sp_user := w.get("spread_task_user_all_tasks_s")) else "")
                       + f" (target ≤ {doc['target_spread']:.0%} over 1–8: tree "
                       + ("holds" if w["holds"]["tree"] else "fails") + ", task "
                       + ("holds" if w["holds"]["task"] else "fails") + ").")]
    if "marginal_tree_cpu_per_product_s" in doc:
        m = doc["marginal_tree_cpu_per_product_s"]
        lines += ["", ("Marginal tree CPU per product beyond the first, (CPU(n) − CPU(1)) ÷ "
                       "(n − 1): " + ", ".join(f"n = {n}: {v:.2f} s" for n, v in
                                              sorted(m.items(), key=lambda kv: int(kv[0])))
                       + f"; spread **{doc['marginal_spread']:.1%}** (≤ "
                       f"{doc['target_spread']:.0%}: "
                       f"{'holds' if doc['holds']['marginal'] else 'fails'}).")]
    return lines


if __name__ == "__main__":
    import sys

    figures = {"--first-touch": ("first_touch", first_touch),
               "--write-path": ("write_path", write_path),
               "--first-task": ("worker_first_task", lambda: worker_first_task(scaling_products()))}
    if sys.argv[1:2] and sys.argv[1] in figures:
        # only these machine figures (each carries its own date), into the last results as they are
        path = RESULTS / "scaling.json"
        doc = json.loads(path.read_text())
        for arg in sys.argv[1:]:
            key, measure = figures[arg]
            doc[key] = measure()
            print(json.dumps(doc[key]))
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        main()
