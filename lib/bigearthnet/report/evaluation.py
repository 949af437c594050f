"""``bigearthnet evaluate``: score a run and draw its figures (the paper's Table 3 analogue).

Training (:func:`bigearthnet.train.evaluate.evaluate`) computes metrics and predictions; this
module adds the three figures to the same atomically written ``RUN/eval/`` folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bigearthnet.report.plots import plot_examples, plot_per_class_f1, plot_training_curves
from bigearthnet.train.evaluate import EvalView, evaluate, load_run_config


def write_eval_figures(folder: Path, view: EvalView) -> None:
    """``per_class_f1.png``, ``training_curves.png`` and ``examples.png`` of an evaluation."""
    label = f"{view.model}, {view.split} split, epoch {view.epoch}"
    plot_per_class_f1(view.per_class, folder / "per_class_f1.png", f"Per-class F1: {label}")
    plot_training_curves(view.history, folder / "training_curves.png",
                         f"Training curves: {view.model}")
    plot_examples(view.examples, folder / "examples.png", f"{view.model}: {view.split} patches")


def evaluate_run(run_dir: str | os.PathLike[str], split: str = "test", *,
                 mlflow: bool | None = None, **kwargs: Any) -> dict[str, Any]:
    """Evaluate a run (see :func:`bigearthnet.train.evaluate.evaluate`) with its figures.

    Args:
        run_dir: the training run folder.
        split: the split to score.
        mlflow: log the metrics, per-class F1 and figures to the run's MLflow run
            (:func:`bigearthnet.train.tracking.log_evaluation`); ``None`` (default): when the
            run was trained with ``tracking.mlflow``.
        **kwargs: passed to :func:`~bigearthnet.train.evaluate.evaluate`.
    """
    doc = evaluate(run_dir, split, figures=write_eval_figures, **kwargs)
    if mlflow or (mlflow is None and load_run_config(run_dir).tracking.mlflow):
        from bigearthnet.train.tracking import log_evaluation

        doc["mlflow"] = log_evaluation(run_dir, load_run_config(run_dir), doc)
    return doc
