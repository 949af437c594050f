"""Trainer loss on the cluster: ``bigearthnet train --spark`` (TorchDistributor, 2 barrier tasks
on the 2-worker standalone cluster, CPU, gloo) loses, after the first checkpoint, either one
training process or the whole executor of one worker (the JVM that runs the barrier task, its
Python worker and torchrun), each by SIGKILL of its pid. The job fails promptly with
``DistributedTrainingError`` naming the run folder (no hang, no silent re-run of the barrier
stage into the run folder, no rank left running), and ``--resume`` through TorchDistributor
reaches bit-identical final weights, momentum and metrics to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bigearthnet.dataset.fakes import write_fake_dataset
from bigearthnet.spark.cluster import spark_home, standalone_cluster
from bigearthnet.train.checkpoint import load_checkpoint
from training_runs import assert_bit_identical_runs

pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    """The training tests' small learnable dataset (tests/train/conftest.py's recipe)."""
    return write_fake_dataset(tmp_path_factory.mktemp("learnable") / "dataset",
                              recipe="learnable", compression="none")


def _config(tmp_path: Path) -> Path:
    doc = {"model": "s-cnn-rgb", "epochs": EPOCHS, "label_set": "19", "batch_size": 4,
           "lr": 0.03, "momentum": 0.9, "fc_width": 16, "seed": 7, "num_workers": 0,
           "buffer_size": 32, "device": "cpu", "progress": False, "nproc": 2,
           "dist_timeout_s": 20}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _submit(url: str, dataset: Path, out: Path, config: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [str(spark_home() / "bin" / "spark-submit"), "--master", url,
         "--conf", "spark.executor.memory=1g", str(REPO / "jobs" / "train.py"),
         "--dataset", str(dataset), "--out", str(out), "--config", str(config), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
        start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return output


def _ranks(logs: Path) -> dict[int, int]:
    """{RANK: pid} of the training processes of this cluster (the children of torchrun, which
    ``bigearthnet.train.torchrun`` runs, started in an executor's working folder under ``logs``)."""
    ranks = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes()
            cwd = os.readlink(proc / "cwd")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if b"bigearthnet.train.torchrun" in parent and cwd.startswith(str(logs)):
            rank = [e for e in environ if e.startswith(b"RANK=")]
            if rank:
                ranks[int(rank[0][5:])] = int(proc.name)
    return ranks


def _epochs_logged(run: Path) -> int:
    log = run / "train_log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def _executor_of(pid: int) -> int:
    """The pid of the executor JVM (``CoarseGrainedExecutorBackend``) above process ``pid``."""
    while pid > 1:
        if b"CoarseGrainedExecutorBackend" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    raise AssertionError("no executor JVM above the training process")


@pytest.fixture(scope="module")
def cluster_with_reference(learnable, tmp_path_factory):
    """The 2-worker cluster and an uninterrupted reference run on it."""
    tmp = tmp_path_factory.mktemp("trainer-loss")
    config, logs, ref = _config(tmp), tmp / "cluster", tmp / "ref"
    with standalone_cluster(workers=2, cores_per_worker=1, memory_per_worker="2g",
                            log_dir=logs) as url:
        output = _finish(_submit(url, learnable.root, ref, config), 400)
        assert (ref / "result.json").is_file(), output[-4000:]
        yield url, logs, config, ref


@pytest.mark.parametrize("victim_kind", ["rank", "executor"])
def test_killed_torch_distributor_rank_fails_by_name_then_resume_is_bit_identical(
        learnable, cluster_with_reference, tmp_path, victim_kind):
    url, logs, config, ref = cluster_with_reference
    run = tmp_path / "run"
    victim = _submit(url, learnable.root, run, config)
    try:
        deadline = time.monotonic() + 300
        while _epochs_logged(run) < 1:  # epoch 1 checkpointed
            assert victim.poll() is None, victim.stdout.read()[-4000:]
            assert time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.05)
        time.sleep(0.3)  # into epoch 2
        ranks = _ranks(logs)
        assert sorted(ranks) == [0, 1], ranks
        assert victim.poll() is None, "the run ended before it could be killed"
        target = ranks[1] if victim_kind == "rank" else _executor_of(ranks[1])
        os.kill(target, signal.SIGKILL)
        killed = time.monotonic()
        output = _finish(victim, 180)
        failed_after_s = time.monotonic() - killed
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    # a named error through the job: the run folder and what to do; no hang
    assert victim.returncode != 0, output[-4000:]
    # the driver's last word is the named error (the lines before are the ranks' output,
    # streamed by TorchDistributor, with their tracebacks)
    named = [line for line in output.splitlines() if line.strip()][-1]
    assert named.startswith("error: DistributedTrainingError: "), output[-4000:]
    assert str(run) in named and "--resume" in named, named
    assert failed_after_s < 60, f"the driver took {failed_after_s:.0f} s to fail"
    # the surviving rank does not keep running (and writing into the run folder)
    deadline = time.monotonic() + 30
    while _ranks(logs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _ranks(logs), f"training processes still alive: {_ranks(logs)}"
    # the barrier stage was not re-run: the run folder holds epoch 1 .. k of this attempt
    killed_at = _epochs_logged(run)
    assert 1 <= killed_at < EPOCHS
    assert not (run / "result.json").exists()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == killed_at

    t0 = time.monotonic()
    output = _finish(_submit(url, learnable.root, run, config, "--resume"), 400)
    assert (run / "result.json").is_file(), output[-4000:]
    resume_s = time.monotonic() - t0

    assert_bit_identical_runs(ref, run, world_size=2)
    got = json.loads((run / "result.json").read_text())
    assert len({r["pid"] for r in got["ranks"]}) == 2
    print(named)
    print(f"{victim_kind} killed: failed {failed_after_s:.1f} s after the kill, "
          f"resume {resume_s:.0f} s")
