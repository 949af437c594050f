"""What the trainer-loss tests compare: two finished run folders must hold bit-identical
checkpoints (weights and SGD momentum of ``last.pt`` and ``best.pt``) and the same metrics."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bigearthnet.train.checkpoint import load_checkpoint


def assert_bit_identical_runs(ref: Path, run: Path, world_size: int) -> None:
    """Assert that run folder ``run`` ended exactly as ``ref`` did."""
    for which in ("last.pt", "best.pt"):
        a = load_checkpoint(ref / "checkpoints" / which)
        b = load_checkpoint(run / "checkpoints" / which)
        assert a["epoch"] == b["epoch"], which
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (which, key)
        momentum_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
        momentum_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
        assert len(momentum_a) == len(momentum_b) > 0
        assert all(torch.equal(x, y) for x, y in zip(momentum_a, momentum_b, strict=True))
    expected = json.loads((ref / "result.json").read_text())
    got = json.loads((run / "result.json").read_text())
    assert [h["val"] for h in got["history"]] == [h["val"] for h in expected["history"]]
    assert [h["train_loss"] for h in got["history"]] == [
        h["train_loss"] for h in expected["history"]]
    assert got["best_epoch"] == expected["best_epoch"]
    assert got["best_val_f1"] == expected["best_val_f1"]
    assert got["world_size"] == world_size
