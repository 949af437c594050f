"""``bigearthnet run`` end to end on a fixed seed: all three models, report, and the physics of
the synthetic world (some classes differ only outside RGB, so S-CNN-All must beat S-CNN-RGB)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from bigearthnet.pipeline import RunConfig, run

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def sample_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Independent sample-based P/R/F1/F2 (0/0 = 0), straight from the definitions."""
    tp = (y_true & y_pred).sum(1).astype(float)
    p = np.divide(tp, y_pred.sum(1), out=np.zeros_like(tp), where=y_pred.sum(1) > 0)
    r = np.divide(tp, y_true.sum(1), out=np.zeros_like(tp), where=y_true.sum(1) > 0)

    def f(beta: float) -> np.ndarray:
        den = beta**2 * p + r
        return np.divide((1 + beta**2) * p * r, den, out=np.zeros_like(den), where=den > 0)

    return {"precision": p.mean(), "recall": r.mean(), "f1": f(1).mean(), "f2": f(2).mean()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    # The demo's settings, with one Inception epoch to save time.
    report = run(RunConfig(workdir=str(work), seed=0,
                           epochs={"s-cnn-rgb": 15, "s-cnn-all": 15, "inception-v3": 1}))
    assert report == work / "report" / "report.md" and report.exists()
    return work


def test_summary_shape_and_independent_recomputation(workdir):
    summary = json.loads((workdir / "report" / "summary.json").read_text())
    assert summary["split"] == "test"
    assert set(summary["models"]) == {"s-cnn-rgb", "s-cnn-all", "inception-v3"}
    for model, scores in summary["models"].items():
        assert set(scores) == {"precision", "recall", "f1", "f2"}
        pred = pq.read_table(workdir / "runs" / model / "eval" / "predictions.parquet")
        y_true = np.array(pred["y_true"].to_pylist(), dtype=bool)
        y_pred = np.array(pred["y_pred"].to_pylist(), dtype=bool)
        y_score = np.array(pred["y_score"].to_pylist())
        assert np.array_equal(y_pred, y_score >= 0.5)
        for k, v in sample_scores(y_true, y_pred).items():
            assert scores[k] == pytest.approx(v, abs=1e-9), (model, k)
    text = (workdir / "report" / "report.md").read_text()
    assert "S-CNN-All" in text and "random" in text  # the weights used are stated
    for model in summary["models"]:
        assert (workdir / "runs" / model / "eval" / "examples.png").stat().st_size > 0


def test_scnn_all_beats_scnn_rgb(workdir):
    summary = json.loads((workdir / "report" / "summary.json").read_text())
    assert summary["models"]["s-cnn-all"]["f1"] > summary["models"]["s-cnn-rgb"]["f1"]
