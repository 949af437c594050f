"""MLflow tracking with a real MLflow and its local store: what ``mlflow.search_runs`` returns
after ``train --mlflow`` (2 DDP processes), ``evaluate`` and a report."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bigearthnet.cli import main
from bigearthnet.report.markdown import write_report
from bigearthnet.train.checkpoint import load_checkpoint
from bigearthnet.train.models import build_model
from bigearthnet.train.tracking import log_report, read_run_ref

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tracked(learnable, make_config, tmp_path_factory):
    """A 2-epoch S-CNN-RGB run with 2 DDP ranks, evaluated, reported, all tracked."""
    work = tmp_path_factory.mktemp("tracked")
    run_dir = work / "runs" / "s-cnn-rgb"
    cfg = make_config(learnable.root, run_dir, epochs=2, nproc=2, max_steps_per_epoch=6)
    (work / "train.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))  # YAML ⊃ JSON
    assert main(["train", "--config", str(work / "train.yaml"), "--mlflow"]) == 0
    assert main(["evaluate", "--run", str(run_dir)]) == 0  # follows the run's tracking.mlflow
    report = write_report(work, {"s-cnn-rgb": run_dir}, split="test")
    log_report({"s-cnn-rgb": run_dir}, report)
    return work, run_dir


def test_search_runs_returns_the_run(tracked, learnable):
    import mlflow

    work, run_dir = tracked
    ref = read_run_ref(run_dir)
    # The default local store: next to the run folders.
    assert ref["tracking_uri"] == f"sqlite:///{work / 'runs' / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(ref["tracking_uri"])
    runs = mlflow.search_runs(experiment_names=["bigearthnet"])
    assert len(runs) == 1  # one MLflow run, not one per DDP rank
    run = runs.iloc[0]
    assert run["run_id"] == ref["run_id"] and run["status"] == "FINISHED"
    # The resolved config as params.
    saved = json.loads((run_dir / "config.json").read_text())
    assert run["params.model"] == "s-cnn-rgb" and run["params.nproc"] == "2"
    assert run["params.lr"] == str(saved["lr"]) and run["params.tracking.mlflow"] == "True"
    # The dataset's manifest digest as a tag.
    digest = hashlib.sha256((learnable.root / "manifest.json").read_bytes()).hexdigest()
    assert run["tags.dataset_manifest_sha256"] == digest
    # Final test P/R/F1/F2 and per-class F1, as evaluate computed them.
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    for k in ("precision", "recall", "f1", "f2"):
        assert run[f"metrics.test_{k}"] == pytest.approx(metrics["samples"][k])
    per_class = {k: v for k, v in run.items() if k.startswith("metrics.test_class_f1/")}
    assert len(per_class) == 19
    assert run["metrics.test_class_f1/class 00"] == pytest.approx(metrics["per_class"]["class 00"]["f1"])
    result = json.loads((run_dir / "result.json").read_text())
    assert run["metrics.best_val_f1"] == pytest.approx(result["best_val_f1"])


def test_per_epoch_metrics_logged_once(tracked):
    import mlflow

    _, run_dir = tracked
    ref = read_run_ref(run_dir)
    client = mlflow.MlflowClient(ref["tracking_uri"])
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    for key, pick in (("train_loss", lambda r: r["train_loss"]),
                      ("val_f1", lambda r: r["val"]["samples"]["f1"])):
        history = client.get_metric_history(ref["run_id"], key)
        # Exactly one point per epoch: rank 1 logged nothing.
        assert sorted((m.step, m.value) for m in history) == \
            [(r["epoch"], pytest.approx(pick(r))) for r in log]


def test_model_with_signature_and_artifacts(tracked, learnable):
    import mlflow

    _, run_dir = tracked
    ref = read_run_ref(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    mlflow.set_tracking_uri(ref["tracking_uri"])
    info = mlflow.models.get_model_info(result["mlflow"]["model_uri"])
    inputs = info.signature.inputs.to_dict()[0]
    assert list(inputs["tensor-spec"]["shape"]) == [-1, 3, 120, 120]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 19]
    # The logged model is the best checkpoint, returning probabilities.
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert result["mlflow"]["model_epoch"] == ckpt["epoch"] == result["best_epoch"]
    net = build_model("s-cnn-rgb", 19, weights=None, fc_width=16)
    net.load_state_dict(ckpt["model"])
    x = torch.randn(5, 3, 120, 120, generator=torch.Generator().manual_seed(0))
    loaded = mlflow.pytorch.load_model(result["mlflow"]["model_uri"])
    with torch.inference_mode():
        np.testing.assert_allclose(loaded(x).numpy(), torch.sigmoid(net.eval()(x)).numpy(),
                                   rtol=1e-5, atol=1e-6)
    # Every artifact is in the store's artifact root, none under the working directory.
    artifacts = ref["tracking_uri"].removeprefix("sqlite:///").replace("mlflow.db", "artifacts")
    assert info.artifact_path is not None and not list(Path.cwd().glob("mlruns"))
    assert list(Path(artifacts).rglob("model.pt2"))
    names = {a.path for a in mlflow.MlflowClient(ref["tracking_uri"]).list_artifacts(
        ref["run_id"], "eval/test")}
    assert {"eval/test/metrics.json", "eval/test/per_class_f1.png",
            "eval/test/training_curves.png", "eval/test/examples.png"} <= names
    report = {a.path for a in mlflow.MlflowClient(ref["tracking_uri"]).list_artifacts(
        ref["run_id"], "report")}
    assert report == {"report/report.md", "report/summary.json"}
