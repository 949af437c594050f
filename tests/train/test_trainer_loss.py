"""Trainer loss: ``bigearthnet train --nproc 2`` (DDP, one DataLoader worker per rank) is
SIGKILLed in the middle of an epoch, with every process of the job; ``--resume`` then reaches
bit-identical final weights and metrics to a run that was never interrupted (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from training_runs import assert_bit_identical_runs

pytestmark = pytest.mark.slow


def _config(tmp_path: Path) -> Path:
    doc = {"model": "s-cnn-rgb", "epochs": 4, "label_set": "19", "batch_size": 4, "lr": 0.03,
           "momentum": 0.9, "fc_width": 16, "seed": 7, "num_workers": 1, "buffer_size": 32,
           "device": "cpu", "progress": False, "nproc": 2}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _train(dataset: Path, out: Path, config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bigearthnet.cli", "train", "--dataset", str(dataset),
         "--out", str(out), "--config", str(config), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONHASHSEED": "0"})


def _epochs_logged(run: Path) -> int:
    log = run / "train_log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def test_sigkill_mid_epoch_then_resume_is_bit_identical(learnable, tmp_path):
    config = _config(tmp_path)
    reference = _train(learnable.root, tmp_path / "ref", config)
    assert reference.wait(timeout=900) == 0, reference.stdout.read()[-3000:]

    victim = _train(learnable.root, tmp_path / "run", config)
    try:
        deadline = time.monotonic() + 600
        while _epochs_logged(tmp_path / "run") < 2:  # epochs 1 and 2 checkpointed
            assert victim.poll() is None, victim.stdout.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)  # into epoch 3
        assert victim.poll() is None, "the run ended before it could be killed"
    finally:
        # The whole job dies at once: launcher, both DDP ranks, their loader workers.
        subprocess.run(["pkill", "-KILL", "-s", str(victim.pid)], check=False)
        victim.wait()
    killed_at = _epochs_logged(tmp_path / "run")
    assert 2 <= killed_at < 4
    assert not (tmp_path / "run" / "result.json").exists()

    resumed = _train(learnable.root, tmp_path / "run", config, "--resume")
    assert resumed.wait(timeout=900) == 0, resumed.stdout.read()[-3000:]

    assert_bit_identical_runs(tmp_path / "ref", tmp_path / "run", world_size=2)


def _ranks_of(launcher_pid: int) -> list[int]:
    """The DDP processes the ``train`` launcher spawned, in rank order (spawn order)."""
    ranks = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            ppid, started = int(fields[1]), int(fields[19])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == launcher_pid and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            ranks.append((started, int(proc.name)))
    return [pid for _, pid in sorted(ranks)]


def test_a_hung_rank_fails_the_job_after_dist_timeout_s(learnable, tmp_path):
    """A rank that stops answering without dying (SIGSTOP: its sockets stay open, as with a hung
    GPU or a stalled filesystem) leaves its peer waiting in DDP's gradient all-reduce. The peer
    gives up after ``dist_timeout_s``, not torch's default 30 minutes; the launcher then ends
    the hung rank and the job fails with a named error."""
    timeout_s = 8
    config = _config(tmp_path)
    doc = yaml.safe_load(config.read_text()) | {"dist_timeout_s": timeout_s, "num_workers": 0}
    config.write_text(yaml.safe_dump(doc))
    run = tmp_path / "run"
    victim = _train(learnable.root, run, config)
    try:
        deadline = time.monotonic() + 600
        while _epochs_logged(run) < 1:
            assert victim.poll() is None, victim.stdout.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # into epoch 2
        ranks = _ranks_of(victim.pid)
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGSTOP)
        stopped = time.monotonic()
        output, _ = victim.communicate(timeout=timeout_s + 120)
        failed_after_s = time.monotonic() - stopped
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(victim.pid)], check=False)
        victim.wait()
    assert victim.returncode != 0
    named = [line for line in output.splitlines() if line.startswith("error: ")]
    assert named and named[0].startswith(
        f"error: DistributedTrainingError: DDP training with 2 processes into {run} failed: "
        "rank 0 of 2 failed with RuntimeError"), output[-3000:]
    assert f"Timed out waiting {timeout_s * 1000}ms" in named[0], named[0]
    assert f"{run} keeps the checkpoint of every finished epoch" in named[0]
    assert "--resume" in named[0]
    # It was the timeout that ended the wait: not earlier, and not much later (plus the
    # launcher's SIGTERM and SIGKILL grace for the stopped rank).
    assert timeout_s * 0.9 <= failed_after_s <= timeout_s + 30, failed_after_s
    assert not Path(f"/proc/{ranks[1]}").exists() or b"Z" in Path(
        f"/proc/{ranks[1]}/stat").read_bytes().split(b")")[1][:3], "the hung rank is alive"
    assert not (run / "result.json").exists()
