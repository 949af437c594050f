"""Training loop: learning, logs, determinism, checkpoints, resume, config and dataset errors."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bigearthnet.config import resolve
from bigearthnet.errors import (
    CheckpointError,
    ConfigError,
    IncompleteDatasetError,
    InputNotFoundError,
    OutputExistsError,
    SplitNotFoundError,
)
from bigearthnet.train import loop
from bigearthnet.train.checkpoint import load_checkpoint, save_checkpoint
from bigearthnet.train.config import TrainConfig
from bigearthnet.train.launch import train

REPO = Path(__file__).resolve().parents[2]
LOG_KEYS = {"epoch", "train_loss", "train_samples", "steps", "img_per_s", "img_per_s_steady",
            "train_seconds",
            "val_seconds", "seconds", "lr", "val_f1", "val", "best"}


def sample_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    tp = (y_true & y_pred).sum(1)
    den = y_true.sum(1) + y_pred.sum(1)
    return float(np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0).mean())


def best_constant_f1(y_true: np.ndarray, classes: int = 4) -> float:
    """The best sample F1 of predicting one fixed label set for every patch."""
    best = 0.0
    for r in range(1, classes + 1):
        for subset in itertools.combinations(range(classes), r):
            pred = np.zeros_like(y_true)
            pred[:, list(subset)] = 1
            best = max(best, sample_f1(y_true, pred))
    return best


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_learns_and_logs(trained_run, learnable, make_config):
    run = Path(trained_run["run_dir"])
    hist = trained_run["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    f1 = [h["val_f1"] for h in hist]
    baseline = best_constant_f1(learnable.labels["validation"][:, :19])
    assert max(f1) > baseline + 0.1, (f1, baseline)
    assert f1[-1] > f1[0]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # the best epoch is the argmax of validation sample F1 (first wins ties)
    assert trained_run["best_epoch"] == int(np.argmax(f1)) + 1
    assert trained_run["best_val_f1"] == max(f1)
    # one JSON line per epoch, the same records as the result
    lines = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert lines == json.loads(json.dumps(hist))
    for rec in lines:
        assert LOG_KEYS <= set(rec)
        assert rec["train_samples"] == 64 and rec["steps"] == 16
        assert rec["val"]["n_samples"] == len(learnable.ids["validation"])
        assert rec["img_per_s"] > 0 and rec["seconds"] >= rec["train_seconds"]
    assert [r["best"] for r in lines] == [f > max(f1[:i], default=-1.0) for i, f in enumerate(f1)]
    # resolved config saved as JSON and YAML
    saved = json.loads((run / "config.json").read_text())
    assert saved == make_config(learnable.root, run).model_dump(mode="json")
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text()) == saved
    assert json.loads((run / "result.json").read_text())["best_epoch"] == trained_run["best_epoch"]


def test_checkpoints_load_weights_only(trained_run):
    run = Path(trained_run["run_dir"])
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert ckpt["model_name"] == "s-cnn-rgb" and ckpt["format"] == 1
        assert isinstance(ckpt["rng"]["torch"], torch.Tensor)
        assert len(ckpt["class_names"]) == 19
        assert ckpt["optimizer"]["state"], "momentum buffers are saved"
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert last["epoch"] == 3 and best["epoch"] == trained_run["best_epoch"]
    assert len(last["history"]) == 3 and last["best_metric"] == trained_run["best_val_f1"]
    # the model's weights are those of the epoch that was best
    if best["epoch"] == 3:
        assert all(torch.equal(last["model"][k], v) for k, v in best["model"].items())


class Evil:
    """Not on torch's weights_only allow-list: loading it would need arbitrary unpickling."""


def test_checkpoint_rejects_unsafe_and_incomplete(tmp_path):
    torch.save({"format": 1, "model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"format": 1, "model": {}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "x.pt", {"model": {}})
    assert not list(tmp_path.glob(".*tmp*"))


def test_same_seed_same_weights(learnable, make_config, tmp_path):
    kw = {"epochs": 1, "max_steps_per_epoch": 3}
    a = train(make_config(learnable.root, tmp_path / "a", **kw))
    b = train(make_config(learnable.root, tmp_path / "b", **kw))
    wa, wb = state(tmp_path / "a/checkpoints/last.pt"), state(tmp_path / "b/checkpoints/last.pt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    assert a["history"][0]["val"] == b["history"][0]["val"]
    assert a["history"][0]["steps"] == 3 and a["history"][0]["train_samples"] == 12
    # and the weights did move away from the seeded initialisation
    torch.manual_seed(7)
    from bigearthnet.train.models import build_model

    init = build_model("s-cnn-rgb", 19, fc_width=16).state_dict()
    assert not all(torch.equal(init[k], wa[k]) for k in wa)


def test_resume_after_kill_matches_uninterrupted(learnable, make_config, tmp_path, monkeypatch):
    """Kill a run in the middle of epoch 3, resume it: same weights and metrics as never killed."""
    kw = {"max_steps_per_epoch": 3}
    reference = train(make_config(learnable.root, tmp_path / "reference", **kw))
    cfg = make_config(learnable.root, tmp_path / "run", **kw)
    real_step, calls = loop.train_step, {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * 3 + 2:  # 2nd step of epoch 3
            raise KeyboardInterrupt("killed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    monkeypatch.setattr(loop, "train_step", real_step)
    run = tmp_path / "run"
    assert load_checkpoint(run / "checkpoints/last.pt")["epoch"] == 2
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 2
    # a stray line (an epoch logged but never checkpointed) is dropped on resume
    with open(run / "train_log.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 3, "stray": True}) + "\n")
    with pytest.raises(OutputExistsError):
        train(cfg)
    resumed = train(cfg.model_copy(update={"resume": True}))

    ref = tmp_path / "reference"
    w_ref, w_res = state(ref / "checkpoints/last.pt"), state(run / "checkpoints/last.pt")
    diff = max(float((w_ref[k] - w_res[k]).abs().max()) for k in w_ref)
    assert diff <= 1e-6, diff
    assert [h["val"] for h in resumed["history"]] == [h["val"] for h in reference["history"]]
    assert [h["train_loss"] for h in resumed["history"]] == pytest.approx(
        [h["train_loss"] for h in reference["history"]], abs=1e-7)
    assert resumed["best_epoch"] == reference["best_epoch"]
    assert resumed["best_val_f1"] == reference["best_val_f1"]
    w_best_ref, w_best_res = state(ref / "checkpoints/best.pt"), state(run / "checkpoints/best.pt")
    assert max(float((w_best_ref[k] - w_best_res[k]).abs().max()) for k in w_ref) <= 1e-6
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and not any("stray" in r for r in log)


def test_resume_refusals(trained_run, learnable, make_config, tmp_path):
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(make_config(learnable.root, tmp_path / "nothing", resume=True))
    copy = tmp_path / "copy"
    shutil.copytree(trained_run["run_dir"], copy)
    cfg = TrainConfig.model_validate_json((copy / "config.json").read_text())
    with pytest.raises(ConfigError, match="lr"):
        train(cfg.model_copy(update={"resume": True, "lr": 0.5}))
    # nothing left to do: resuming a finished run returns its result without training
    done = train(cfg.model_copy(update={"resume": True}))
    assert done["best_epoch"] == trained_run["best_epoch"] and len(done["history"]) == 3


def test_dataset_errors(learnable, make_config, make_dataset, tmp_path):
    with pytest.raises(InputNotFoundError):
        train(make_config(tmp_path / "nope", tmp_path / "r1"))
    assert not (tmp_path / "r1").exists()
    tiny = {"train": [[4]], "validation": [[4]]}
    unfinished = make_dataset(tmp_path / "unfinished", layout=tiny, success=False)
    with pytest.raises(IncompleteDatasetError, match="_SUCCESS"):
        train(make_config(unfinished.root, tmp_path / "r2"))
    no_val = make_dataset(tmp_path / "noval", layout={"train": [[4]]})
    with pytest.raises(SplitNotFoundError, match="validation"):
        train(make_config(no_val.root, tmp_path / "r3"))
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_config_validation(tmp_path):
    cfg = resolve(TrainConfig, REPO / "conf" / "paper.yaml",
                  {"dataset": "d", "out": "o", "model": "s-cnn-rgb", "label_set": 19})
    assert cfg.epochs == 100 and cfg.threshold == 0.5 and cfg.label_set == "19"
    assert cfg.model == "s-cnn-rgb" and cfg.lr > 0
    with pytest.raises(ConfigError, match="unknown config key 'learning_rate'"):
        resolve(TrainConfig, None, {"dataset": "d", "out": "o", "learning_rate": 1})
    with pytest.raises(ConfigError, match="divisible"):
        resolve(TrainConfig, None, {"dataset": "d", "out": "o", "batch_size": 9, "nproc": 2})
    with pytest.raises(ConfigError, match="imagenet"):
        resolve(TrainConfig, None, {"dataset": "d", "out": "o", "weights": "imagenet"})
    assert TrainConfig(dataset="d", out="o", batch_size=64, nproc=4).per_rank_batch_size == 16
