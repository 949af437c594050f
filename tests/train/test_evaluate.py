"""Evaluation of a finished run (best checkpoint, test split) and the report built from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from bigearthnet.errors import DatasetSchemaError, RunNotFoundError
from bigearthnet.report import write_report
from bigearthnet.report.evaluation import evaluate_run as evaluate
from bigearthnet.train.evaluate import EVAL_FILES
from bigearthnet.train.models import build_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluated(trained_run) -> dict:
    return evaluate(trained_run["run_dir"])


def own_sample_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Sample-based P/R/F1/F2 written from the definitions, every 0/0 taken as 0."""
    t, p = y_true.astype(bool), y_pred.astype(bool)
    out = {"precision": [], "recall": [], "f1": [], "f2": []}
    for ti, pi in zip(t, p):
        tp = int((ti & pi).sum())
        n_t, n_p = int(ti.sum()), int(pi.sum())
        prec = tp / n_p if n_p else 0.0
        rec = tp / n_t if n_t else 0.0
        out["precision"].append(prec)
        out["recall"].append(rec)
        for beta, key in ((1.0, "f1"), (2.0, "f2")):
            den = beta**2 * prec + rec
            out[key].append((1 + beta**2) * prec * rec / den if den else 0.0)
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_outputs_exist(evaluated, trained_run):
    out = Path(trained_run["run_dir"]) / "eval"
    assert evaluated["eval_dir"] == str(out)
    for name in EVAL_FILES:
        assert (out / name).is_file(), name
    for name in ("per_class_f1.png", "training_curves.png", "examples.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".eval")]


def test_metrics_json(evaluated, trained_run, learnable):
    doc = json.loads((Path(evaluated["eval_dir"]) / "metrics.json").read_text())
    names = json.loads((learnable.root / "manifest.json").read_text())["class_orders"]["labels_19"]
    assert doc["class_names"] == names and list(doc["per_class"]) == names
    assert doc["model"] == "s-cnn-rgb" and doc["split"] == "test" and doc["label_set"] == "19"
    assert doc["checkpoint"] == "best.pt"
    assert doc["checkpoint_epoch"] == trained_run["best_epoch"]
    assert doc["weights_source"] == "random"
    assert doc["n_samples"] == len(learnable.ids["test"]) and doc["threshold"] == 0.5
    assert set(doc["samples"]) == {"precision", "recall", "f1", "f2"}


def test_predictions_and_recomputed_sample_metrics(evaluated, learnable):
    out = Path(evaluated["eval_dir"])
    table = pq.read_table(out / "predictions.parquet")
    assert table.schema.field("patch_id").type == pa.string()
    assert table.schema.field("y_true").type == pa.list_(pa.uint8())
    assert table.schema.field("y_score").type == pa.list_(pa.float32())
    assert table.schema.field("y_pred").type == pa.list_(pa.uint8())
    ids = table.column("patch_id").to_pylist()
    assert ids == sorted(learnable.ids["test"])
    y_true = np.array(table.column("y_true").to_pylist(), dtype=np.uint8)
    y_score = np.array(table.column("y_score").to_pylist(), dtype=np.float32)
    y_pred = np.array(table.column("y_pred").to_pylist(), dtype=np.uint8)
    assert y_true.shape == y_score.shape == y_pred.shape == (len(ids), 19)
    # ground truth is the dataset's
    truth = dict(zip(learnable.ids["test"], learnable.labels["test"][:, :19]))
    assert np.array_equal(y_true, np.stack([truth[i] for i in ids]))
    assert np.array_equal(y_pred, (y_score >= 0.5).astype(np.uint8))
    assert ((y_score >= 0) & (y_score <= 1)).all()
    doc = json.loads((out / "metrics.json").read_text())
    mine = own_sample_scores(y_true, y_pred)
    for key in ("precision", "recall", "f1", "f2"):
        assert doc["samples"][key] == pytest.approx(mine[key], abs=1e-12), key
    assert evaluated["samples"] == doc["samples"]


def test_scores_come_from_the_best_checkpoint(evaluated, trained_run, learnable):
    """Recompute the scores of 4 test patches with best.pt by hand (RGB = B04, B03, B02)."""
    import pyarrow.dataset as pads

    ckpt = torch.load(Path(trained_run["run_dir"]) / "checkpoints/best.pt", weights_only=True)
    model = build_model("s-cnn-rgb", 19, fc_width=16)
    model.load_state_dict(ckpt["model"])
    model.eval()
    stats = json.loads((learnable.root / "stats.json").read_text())["bands"]
    rows = pads.dataset(learnable.root / "patches" / "split=test").to_table(
        columns=["patch_id", "bands_10m"]).slice(0, 4)
    raw = np.stack([np.frombuffer(b, "<u2").reshape(4, 120, 120)
                    for b in rows.column("bands_10m").to_pylist()]).astype(np.float32)
    x = np.stack([(raw[:, i] - stats[b]["mean"]) / stats[b]["std"]
                  for i, b in ((2, "B04"), (1, "B03"), (0, "B02"))], axis=1)
    with torch.no_grad():
        mine = torch.sigmoid(model(torch.from_numpy(x))).numpy()
    table = pq.read_table(Path(evaluated["eval_dir"]) / "predictions.parquet")
    scores = dict(zip(table.column("patch_id").to_pylist(), table.column("y_score").to_pylist()))
    theirs = np.array([scores[i] for i in rows.column("patch_id").to_pylist()])
    np.testing.assert_allclose(theirs, mine, atol=1e-5)


def test_evaluate_errors(trained_run, tmp_path):
    with pytest.raises(RunNotFoundError, match="config.json"):
        evaluate(tmp_path)
    run = tmp_path / "unfinished"
    run.mkdir()
    shutil.copy(Path(trained_run["run_dir"]) / "config.json", run / "config.json")
    with pytest.raises(RunNotFoundError, match="best.pt"):
        evaluate(run)


def test_evaluate_refuses_other_class_order(trained_run, learnable, make_dataset, tmp_path):
    other = make_dataset(tmp_path / "other", layout={"test": [[4]]})
    manifest = json.loads((other.root / "manifest.json").read_text())
    manifest["class_orders"]["labels_19"] = manifest["class_orders"]["labels_19"][::-1]
    (other.root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetSchemaError, match="differently"):
        evaluate(trained_run["run_dir"], dataset=other.root)


def test_report_from_evaluated_run(evaluated, trained_run, tmp_path):
    path = write_report(tmp_path / "W", {"s-cnn-rgb": trained_run["run_dir"]})
    assert path == tmp_path / "W" / "report" / "report.md"
    summary = json.loads((path.parent / "summary.json").read_text())
    assert summary == {"models": {"s-cnn-rgb": evaluated["samples"]}, "split": "test"}
    text = path.read_text()
    s = evaluated["samples"]
    assert (f"| S-CNN-RGB | {100 * s['precision']:.2f} | {100 * s['recall']:.2f} "
            f"| {s['f1']:.4f} | {s['f2']:.4f} |") in text
    assert "65.06" in text and "0.7139" in text and "`random`" in text
    for name in ("training_curves.png", "per_class_f1.png", "examples.png"):
        assert f"](s-cnn-rgb/{name})" in text
        assert (path.parent / "s-cnn-rgb" / name).read_bytes().startswith(PNG_MAGIC)
    # The settings each model was trained with (tiny_config: 3 epochs, batch 4, lr 0.03).
    cfg = json.loads((Path(trained_run["run_dir"]) / "config.json").read_text())
    assert (cfg["epochs"], cfg["batch_size"], cfg["lr"]) == (3, 4, 0.03)
    assert "| S-CNN-RGB | `random` | 3 | 4 | 0.03 | 0.9 |" in text


def test_report_names_the_evaluate_command(trained_run, tmp_path):
    run = tmp_path / "unevaluated"
    shutil.copytree(trained_run["run_dir"], run, ignore=shutil.ignore_patterns("eval*"))
    with pytest.raises(RunNotFoundError, match=f"bigearthnet evaluate --run {run} --split test"):
        write_report(tmp_path / "W", {"s-cnn-rgb": run})


def test_report_command_from_run_folders(evaluated, trained_run, tmp_path):
    from bigearthnet.cli import main

    assert main(["report", str(trained_run["run_dir"]), "--workdir", str(tmp_path / "W")]) == 0
    text = (tmp_path / "W" / "report" / "report.md").read_text()
    assert "| S-CNN-RGB |" in text
    assert main(["report", str(tmp_path), "--workdir", str(tmp_path / "W2")]) == 2  # not a run
