"""Report: Table-4 Markdown, summary.json shape, plots, refusals (fake evaluated runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bigearthnet.errors import ConfigError, RunNotFoundError
from bigearthnet.report import PAPER_TABLE4, write_report
from bigearthnet.report.plots import plot_training_curves, rgb_stretch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(root: Path, model: str, p: float, r: float, f1: float, f2: float,
             weights: str = "random", plots: bool = True) -> Path:
    """A run folder holding only what the report reads: eval/metrics.json (+ plots)."""
    ev = root / model / "eval"
    ev.mkdir(parents=True)
    scores = {"precision": p, "recall": r, "f1": f1, "f2": f2}
    doc = {"model": model, "split": "test", "label_set": "43", "dataset": "/data/ds",
           "checkpoint": "best.pt", "checkpoint_epoch": 7, "weights_source": weights,
           "threshold": 0.5, "n_samples": 123, "samples": scores, "micro": scores,
           "macro": scores, "map_macro": 0.5, "map_micro": None, "per_class": {}}
    (ev / "metrics.json").write_text(json.dumps(doc))
    if plots:
        history = [{"epoch": e, "train_loss": 1.0 / e, "best": e == 2,
                    "val": {"samples": scores}} for e in (1, 2, 3)]
        plot_training_curves(history, ev / "training_curves.png")
    return root / model


def test_table_and_summary(tmp_path):
    runs = {
        "s-cnn-all": fake_run(tmp_path, "s-cnn-all", 0.7, 0.8, 0.72, 0.76),
        "inception-v3": fake_run(tmp_path, "inception-v3", 0.5, 0.6, 0.51, 0.55,
                                 weights="imagenet:/cache/inception_v3_google-0cc3c7bd.pth",
                                 plots=False),
        "s-cnn-rgb": fake_run(tmp_path, "s-cnn-rgb", 0.65, 0.75, 0.67, 0.71),
    }
    path = write_report(tmp_path / "W", runs)
    summary = json.loads((path.parent / "summary.json").read_text())
    assert summary == {
        "models": {
            "inception-v3": {"precision": 0.5, "recall": 0.6, "f1": 0.51, "f2": 0.55},
            "s-cnn-rgb": {"precision": 0.65, "recall": 0.75, "f1": 0.67, "f2": 0.71},
            "s-cnn-all": {"precision": 0.7, "recall": 0.8, "f1": 0.72, "f2": 0.76},
        },
        "split": "test",
    }
    text = path.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "paper" not in line
            and "---" not in line and ("S-CNN" in line or "Inception" in line)][:3]
    # the paper's row order, P and R in %, F in [0, 1], the paper's numbers alongside
    assert rows[0].startswith("| Inception-v3") and "| 50.00 | 60.00 | 0.5100 | 0.5500 |" in rows[0]
    assert "Inception-v2 | 48.23 | 56.79 | 0.4988 | 0.5301 |" in rows[0]
    assert rows[1].startswith("| S-CNN-RGB") and "| 65.00 | 75.00 | 0.6700 | 0.7100 |" in rows[1]
    assert rows[2].startswith("| S-CNN-All") and "| 69.93 | 77.10 | 0.7098 | 0.7384 |" in rows[2]
    assert "`imagenet:/cache/inception_v3_google-0cc3c7bd.pth`" in text
    assert "](s-cnn-all/training_curves.png)" in text
    assert (path.parent / "s-cnn-all/training_curves.png").read_bytes().startswith(PNG_MAGIC)
    assert "](inception-v3/" not in text  # no plots, no broken links
    # written again: replaced whole, no staging folders left
    write_report(tmp_path / "W", {"s-cnn-rgb": runs["s-cnn-rgb"]})
    again = json.loads((path.parent / "summary.json").read_text())
    assert list(again["models"]) == ["s-cnn-rgb"]
    assert not (path.parent / "s-cnn-all").exists()
    assert [p.name for p in (tmp_path / "W").iterdir()] == ["report"]


def test_refusals(tmp_path):
    run = fake_run(tmp_path, "s-cnn-rgb", 0.6, 0.7, 0.6, 0.65, plots=False)
    with pytest.raises(ConfigError, match="at least one"):
        write_report(tmp_path / "W", {})
    with pytest.raises(ConfigError, match="unknown model"):
        write_report(tmp_path / "W", {"resnet": run})
    with pytest.raises(ConfigError, match="trained s-cnn-rgb"):
        write_report(tmp_path / "W", {"s-cnn-all": run})
    with pytest.raises(RunNotFoundError, match="evaluate"):
        write_report(tmp_path / "W", {"s-cnn-rgb": tmp_path / "missing"})
    assert not (tmp_path / "W" / "report").exists()


def test_paper_table4_numbers():
    assert PAPER_TABLE4["s-cnn-all"]["f1"] == 0.7098 and PAPER_TABLE4["s-cnn-rgb"]["recall"] == 75.57
    assert PAPER_TABLE4["inception-v3"]["name"] == "Inception-v2"


def test_rgb_stretch_order_and_range():
    bands = np.zeros((4, 120, 120), dtype=np.uint16)  # stored order B02, B03, B04, B08
    ramp = np.arange(120, dtype=np.uint16)[None, :] * np.ones((120, 1), dtype=np.uint16)
    bands[0] = 100 + ramp          # B02 -> blue
    bands[1] = 5000                # B03 -> green (constant)
    bands[2] = 2000 + 10 * ramp    # B04 -> red
    rgb = rgb_stretch(bands)
    assert rgb.shape == (120, 120, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert rgb[0, 0, 0] == 0.0 and rgb[0, -1, 0] == 1.0  # red ramps left to right
    assert rgb[0, 0, 2] == 0.0 and rgb[0, -1, 2] == 1.0
    assert np.all(rgb[..., 1] == 0.0)  # constant band: no division by zero
