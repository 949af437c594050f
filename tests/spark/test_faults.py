"""Executor loss during a build: one worker's executor is SIGKILLed while tasks run on the
2-worker standalone cluster; Spark retries its tasks and the output is byte-identical to an
undisturbed build, with the retried attempts counted in the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.spark.build import run_build
from bigearthnet.spark.cluster import spark_home, standalone_cluster
from worlds import synth_world

pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
PRODUCTS = [
    "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319",
    "S2A_MSIL2A_20170613T101031_N0205_R022_T33UUP_20170613T101608",
    "S2A_MSIL2A_20170818T103021_N0205_R108_T32TMT_20170818T103407",
    "S2A_MSIL2A_20170717T113321_N0205_R080_T29UPV_20170717T113319",
]


def _digests(ds: Path) -> dict[str, str]:
    files = [p for p in sorted(ds.rglob("*")) if p.is_file() and p.name not in
             ("manifest.json", "build_config.json")]
    return {str(p.relative_to(ds)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _executor_pids(logs: Path) -> list[int]:
    """Executor JVMs of this cluster: their working folder is under the workers' folders."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if b"CoarseGrainedExecutorBackend" in cmdline and cwd.startswith(str(logs)):
            pids.append(int(proc.name))
    return sorted(pids)


def _busy_executors(logs: Path) -> list[int]:
    """Executors of this cluster with a Python worker (pyspark.daemon) child: running a task."""
    executors = set(_executor_pids(logs))
    busy = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid in executors and b"pyspark.daemon" in cmdline:
            busy.add(ppid)
    return sorted(busy)


def _diagnose(logs: Path) -> str:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True,
                        check=False).stdout
    lines = [line[:200] for line in ps.splitlines() if "java" in line]
    return f"no executor seen under {logs}; java processes: {lines}"


def test_build_survives_a_killed_executor(tmp_path_factory, tmp_path):
    world = synth_world(tmp_path_factory.mktemp("faults"), PRODUCTS, 2400, "cog", seed=9)
    clc = str(world / "clc" / "clc2018.gpkg")
    logs = tmp_path / "cluster"
    out = tmp_path / "ds"
    with standalone_cluster(workers=2, cores_per_worker=1, memory_per_worker="2g",
                            log_dir=logs) as url:
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
               "PYSPARK_DRIVER_PYTHON": sys.executable}
        proc = subprocess.Popen(
            [str(spark_home() / "bin" / "spark-submit"), "--master", url,
             "--conf", "spark.executor.memory=1g",
             str(REPO / "jobs" / "build_dataset.py"),
             "--products", str(world / "products"), "--clc", clc, "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
            start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            # An executor runs a Python task (its JVM has a pyspark.daemon child); each of the
            # 4 products keeps an executor busy for several seconds.
            while not (busy := _busy_executors(logs)):
                assert proc.poll() is None, _diagnose(logs)
                assert time.monotonic() < deadline, "no executor ever ran a task"
                time.sleep(0.05)
            time.sleep(1.0)
            assert proc.poll() is None, "the build ended before an executor could be killed"
            victim = busy[0]
            os.kill(victim, signal.SIGKILL)
            output, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 0, output[-4000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["task_attempts_retried"] >= 1
    assert manifest["counts"]["products"] == 4
    assert not list(out.rglob("*.inprogress*"))
    # Byte-identical to an undisturbed build: no duplicate, no missing patch, no leftover.
    calm = tmp_path / "calm"
    undisturbed = run_build(BuildConfig(products=str(world / "products"), clc=clc,
                                        out=str(calm), spark=SparkConfig(master="local[2]")))
    assert undisturbed["counts"]["task_attempts_retried"] == 0
    assert _digests(out) == _digests(calm)
    assert manifest["counts"]["patches_kept"] == undisturbed["counts"]["patches_kept"]
