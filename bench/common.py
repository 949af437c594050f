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
                          env={**os.environ, **(env or {})})
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
