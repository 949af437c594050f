"""Shared helpers for the benchmarks: cached synthetic inputs, subprocess measurements, output."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / "cache"
RESULTS = ROOT / "results"


def machine() -> dict:
    """Where the numbers were measured."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": time.strftime("%Y-%m-%d")}


def cached_world(name: str, products: list[str], size_px: int, fmt: str, seed: int = 0) -> Path:
    """Synthesise (once) a world into bench/cache/<name>; reuse it when complete."""
    out = CACHE / name
    marker = out / ".complete"
    if marker.exists():
        return out
    from bigearthnet.synth import SynthConfig, synthesize

    if out.exists():
        import shutil

        shutil.rmtree(out)
    t0 = time.perf_counter()
    synthesize(SynthConfig(products=products, size_px=size_px, format=fmt, seed=seed), out)
    marker.write_text(json.dumps({"synth_s": time.perf_counter() - t0}))
    return out


def run_measured(code: str, env: dict | None = None) -> dict:
    """Run python ``code`` in a fresh interpreter; it must print one JSON line last.

    Adds the child's CPU seconds (user+sys, all threads) and peak RSS from rusage.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.setdefault("process_cpu_s", (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    result.setdefault("process_wall_s", wall)
    return result


def median(values: list[float]) -> float:
    """Median, rounded for reporting."""
    return round(statistics.median(values), 4)


def write_result(name: str, doc: dict) -> Path:
    """Write bench/results/<name>.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"machine": machine(), **doc}
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path


# --- Process-tree measurements (added for labels / tiling / scaling) -------------------------

SPARK_TEARDOWN = """
def _stop_spark_and_reap_jvm():
    # Stop the session, then close the gateway's stdin and wait for the JVM, so that the JVM
    # (and the Python workers it reaped) is counted in this process's RUSAGE_CHILDREN.
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    s = SparkSession.getActiveSession()
    if s is not None:
        s.stop()
    gw = SparkContext._gateway
    if gw is None or getattr(gw, "proc", None) is None:
        return None
    try:
        gw.shutdown()
    except Exception:
        pass
    try:
        gw.proc.stdin.close()
    except Exception:
        pass
    return gw.proc.wait(timeout=120)
"""
"""Child-side helper: define ``_stop_spark_and_reap_jvm()``; returns the JVM's exit code."""


def _tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _comm(pid: int) -> str:
    """A short name for a process: java, python (driver / worker / daemon) or its comm."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    exe = os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else "?"
    if "java" in exe:
        return "jvm"
    if "python" in exe:
        joined = b" ".join(argv)
        if b"pyspark.daemon" in joined:
            return "python_daemon_or_worker"
        if b"pyspark.worker" in joined:
            return "python_worker"
        return "python"
    return exe


def _proc_sample(pid: int) -> tuple[float, float] | None:
    """(rss MB, user+sys CPU s of the process itself) from /proc, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2:].split()
    tick = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / tick
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return rss, cpu


def _become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``),
    so processes that outlive their parent (e.g. PySpark daemon workers) are still counted."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)


def _reap_orphans(timeout_s: float = 60.0) -> int:
    """Wait for descendants re-parented to this process; return how many were reaped."""
    n, deadline = 0, time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return n
        if pid:
            n += 1
        else:
            time.sleep(0.05)
    return n


def run_tree(code: str, env: dict | None = None, poll_s: float = 0.1) -> dict:
    """Run python ``code`` in a fresh interpreter and measure its whole process tree.

    The child must print one JSON line last. Adds:

    * ``tree_cpu_rusage_s``: user+sys of the child and every descendant reaped into it, from
      ``getrusage(RUSAGE_CHILDREN)`` around the run (this process is made a child subreaper so
      orphans count too). A Spark child must stop its session and wait for the JVM
      (``SPARK_TEARDOWN``) so the JVM's CPU is in it. It still misses the CPU of PySpark's
      worker processes (their time never reaches us through wait accounting).
    * ``tree_cpu_polled_s``: the sum over every process seen in the tree (``/proc`` every
      ``poll_s``) of its last user+sys (misses at most the last interval of each process).
    * ``tree_cpu_s``: the larger of the two (the figure to use).
    * ``tree_cpu_polled_by_process``: the polled CPU by kind of process (jvm, python, ...).
    * ``tree_peak_rss_mb``: the peak over polls of the summed RSS of the tree (driver Python,
      JVM, Python workers), sampled every ``poll_s``.
    * ``tree_wall_s``: wall seconds of the child.
    """
    import threading

    _become_subreaper()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    peak = {"rss": 0.0, "procs": 0}
    last_cpu: dict[int, float] = {}
    names: dict[int, str] = {}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            total = 0.0
            pids = _tree_pids(proc.pid)
            for pid in pids:
                s = _proc_sample(pid)
                if s is not None:
                    total += s[0]
                    last_cpu[pid] = s[1]
                    name = _comm(pid)  # again each time: spark-class's bash execs java
                    if name != "?" or pid not in names:
                        names[pid] = name
            peak["rss"] = max(peak["rss"], total)
            peak["procs"] = max(peak["procs"], len(pids))
            done.wait(poll_s)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    done.set()
    thread.join()
    orphans = _reap_orphans()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    rusage_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    polled_cpu = sum(last_cpu.values())
    result["tree_cpu_rusage_s"] = round(rusage_cpu, 3)
    result["tree_cpu_polled_s"] = round(polled_cpu, 3)
    # rusage misses PySpark worker processes that nobody in the tree reaps with accounting
    # (measured: a build task's whole worker CPU can be missing), the poll misses at most the
    # last poll interval of each process: report the larger of the two.
    result["tree_cpu_s"] = round(max(rusage_cpu, polled_cpu), 3)
    result["tree_peak_rss_mb"] = round(peak["rss"], 1)
    result["tree_max_procs"] = peak["procs"]
    result["tree_wall_s"] = round(wall, 3)
    result["tree_orphans_reaped"] = orphans
    by_kind: dict[str, float] = {}
    for pid, cpu in last_cpu.items():
        by_kind[names.get(pid, "?")] = round(by_kind.get(names.get(pid, "?"), 0.0) + cpu, 3)
    result["tree_cpu_polled_by_process"] = by_kind
    return result


def spread(values: list[float], digits: int = 4) -> dict:
    """Median, min and max of repeated measurements (and the values, in run order)."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values),
            "each": [round(v, digits) for v in values]}


def loadavg() -> float:
    """1-minute load average now (the machine is shared)."""
    return round(os.getloadavg()[0], 2)
