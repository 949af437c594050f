"""Trainer loss: ``bigearthnet train --nproc 2`` (DDP, one DataLoader worker per rank) is
SIGKILLed in the middle of an epoch, with every process of the job; ``--resume`` then reaches
bit-identical final weights and metrics to a run that was never interrupted (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bigearthnet.train.checkpoint import load_checkpoint

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

    for which in ("last.pt", "best.pt"):
        a = load_checkpoint(tmp_path / "ref" / "checkpoints" / which)
        b = load_checkpoint(tmp_path / "run" / "checkpoints" / which)
        assert a["epoch"] == b["epoch"]
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (which, key)
        momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
        momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
        assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b, strict=True))
    ref = json.loads((tmp_path / "ref" / "result.json").read_text())
    got = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [h["val"] for h in got["history"]] == [h["val"] for h in ref["history"]]
    assert [h["train_loss"] for h in got["history"]] == [h["train_loss"] for h in ref["history"]]
    assert got["best_epoch"] == ref["best_epoch"] and got["best_val_f1"] == ref["best_val_f1"]
    assert got["world_size"] == 2

