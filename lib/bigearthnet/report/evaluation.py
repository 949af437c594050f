"""``bigearthnet evaluate``: score a run and draw its figures (the paper's Table 3 analogue).

Training (:func:`bigearthnet.train.evaluate.evaluate`) computes metrics and predictions; this
module adds the three figures to the same atomically written ``RUN/eval/`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bigearthnet.report.plots import plot_examples, plot_per_class_f1, plot_training_curves
from bigearthnet.train.evaluate import EvalView, evaluate


def write_eval_figures(folder: Path, view: EvalView) -> None:
    """``per_class_f1.png``, ``training_curves.png`` and ``examples.png`` of an evaluation."""
    label = f"{view.model}, {view.split} split, epoch {view.epoch}"
    plot_per_class_f1(view.per_class, folder / "per_class_f1.png", f"Per-class F1: {label}")
    plot_training_curves(view.history, folder / "training_curves.png",
                         f"Training curves: {view.model}")
    plot_examples(view.examples, folder / "examples.png", f"{view.model}: {view.split} patches")


def evaluate_run(run_dir: str | os.PathLike[str], split: str = "test",
                 **kwargs: Any) -> dict[str, Any]:
    """Evaluate a run (see :func:`bigearthnet.train.evaluate.evaluate`) with its figures."""
    return evaluate(run_dir, split, figures=write_eval_figures, **kwargs)
