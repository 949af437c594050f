"""Evaluate a finished run on a split with its best checkpoint; write metrics, predictions, plots.

``evaluate(RUN)`` writes ``RUN/eval/`` (``RUN/eval_<split>/`` for a split other than test)::

    metrics.json          compute_metrics(...) with the manifest's class names, plus
                          model, split, label_set, checkpoint, checkpoint_epoch, weights_source
    predictions.parquet   one row per patch, sorted by patch_id: patch_id (string),
                          y_true list<uint8> (multi-hot), y_score list<float32> (sigmoid),
                          y_pred list<uint8> (y_score >= threshold); class order = manifest's
    per_class_f1.png      per-class F1 (support annotated)
    training_curves.png   training loss and validation P/R/F1/F2 per epoch (train_log.jsonl)
    examples.png          RGB (B04, B03, B02, 2-98 % stretch) of the split's first patches with
                          their true and predicted label names: the paper's Table 3

The figures are drawn by a :data:`FigureWriter` the caller passes
(:func:`bigearthnet.report.evaluation.evaluate_run`); training does not depend on the report.
The folder is written to a temporary sibling and renamed into place, replacing an older one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bigearthnet.dataset.io import staged_output
from bigearthnet.dataset.loader import make_loader, split_dir
from bigearthnet.dataset.objectstore import local_dataset
from bigearthnet.dataset.transforms import BatchTransform
from bigearthnet.errors import DatasetSchemaError, RunNotFoundError
from bigearthnet.train.checkpoint import checkpoint_path, load_checkpoint
from bigearthnet.train.config import TrainConfig
from bigearthnet.train.distributed import select_device
from bigearthnet.train.loop import predict_split
from bigearthnet.train.metrics import binarize, compute_metrics
from bigearthnet.train.models import build_model
from bigearthnet.train.registry import MODEL_INPUTS
from bigearthnet.train.rundir import CONFIG_JSON, TRAIN_LOG, dataset_class_names

__all__ = ["EVAL_FILES", "EvalView", "FigureWriter", "eval_dir", "evaluate", "load_run_config",
           "read_train_log"]

EVAL_FILES = ("metrics.json", "predictions.parquet", "per_class_f1.png", "training_curves.png",
              "examples.png")
"""What ``RUN/eval/`` holds (the three figures only when a figure writer is given)."""


@dataclass(frozen=True)
class EvalView:
    """What the figures of an evaluation are drawn from.

    Attributes:
        model: the model name.
        split: the evaluated split.
        epoch: the checkpoint's epoch.
        per_class: ``compute_metrics(...)["per_class"]``.
        history: the run's ``train_log.jsonl`` records.
        examples: ``{"patch_id", "bands_10m" (4, 120, 120) uint16, "true", "pred"}`` of the
            split's first patches.
    """

    model: str
    split: str
    epoch: int
    per_class: dict[str, Any]
    history: list[dict[str, Any]]
    examples: list[dict[str, Any]]


FigureWriter = Callable[[Path, EvalView], None]
"""Draws an evaluation's figures into a folder."""


def eval_dir(run_dir: str | os.PathLike[str], split: str = "test") -> Path:
    """``RUN/eval`` for the test split, ``RUN/eval_<split>`` for any other."""
    return Path(run_dir) / ("eval" if split == "test" else f"eval_{split}")


def load_run_config(run_dir: str | os.PathLike[str]) -> TrainConfig:
    """The run's saved :class:`TrainConfig`.

    Raises:
        RunNotFoundError: no ``RUN/config.json``.
    """
    path = Path(run_dir) / CONFIG_JSON
    if not path.is_file():
        raise RunNotFoundError(f"{run_dir} is not a training run folder (no {CONFIG_JSON})")
    return TrainConfig.model_validate_json(path.read_text())


def read_train_log(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of ``RUN/train_log.jsonl`` (empty when it does not exist)."""
    path = Path(run_dir) / TRAIN_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _list_array(values: np.ndarray, value_type: pa.DataType) -> pa.Array:
    n, k = values.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=value_type))


def evaluate(run_dir: str | os.PathLike[str], split: str = "test", *,
             dataset: str | os.PathLike[str] | None = None, checkpoint: str = "best",
             batch_size: int | None = None, device: str = "auto", num_workers: int = 0,
             n_examples: int = 6, figures: FigureWriter | None = None) -> dict[str, Any]:
    """Predict ``split`` with the run's best checkpoint and write ``RUN/eval/``.

    Args:
        run_dir: the run folder written by :func:`bigearthnet.train.launch.train`.
        split: ``test`` (default), ``validation`` or ``train``.
        dataset: dataset folder (default: the run's).
        checkpoint: ``"best"`` (default) or ``"last"``.
        batch_size: rows per batch (default: the run's evaluation batch size).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        num_workers: DataLoader workers.
        n_examples: patches handed to ``figures`` as examples.
        figures: draws the figures into the staged folder (``bigearthnet.report.evaluation``
            passes its plotter); ``None`` writes metrics and predictions only.

    Returns:
        The ``metrics.json`` document plus ``"eval_dir"`` and ``"files"`` (name -> path).

    Raises:
        RunNotFoundError: not a run folder, or it has no such checkpoint yet.
        CheckpointError: the checkpoint cannot be read.
        InputNotFoundError, IncompleteDatasetError, SplitNotFoundError: the dataset is
            missing or incomplete.
        DatasetSchemaError: the dataset's class order differs from the one trained on.
    """
    run = Path(run_dir)
    cfg = load_run_config(run)
    ckpt_file = checkpoint_path(run, checkpoint)
    if not ckpt_file.is_file():
        raise RunNotFoundError(
            f"{ckpt_file} does not exist: the run has not finished an epoch yet"
        )
    ckpt = load_checkpoint(ckpt_file)
    data = local_dataset(dataset if dataset is not None else cfg.dataset)  # s3://: a local copy
    split_dir(data, split)
    class_names = dataset_class_names(data, cfg.label_set)
    trained_on = list(ckpt.get("class_names") or class_names)
    if trained_on != class_names:
        raise DatasetSchemaError(
            f"{data} orders its {cfg.label_set} classes differently from the dataset "
            f"{cfg.model} was trained on; the predictions would be mislabelled"
        )

    dev = select_device(device)
    model = build_model(cfg.model, len(class_names), weights=None, fc_width=cfg.fc_width)
    model.load_state_dict(ckpt["model"])
    model.to(dev)
    transform = BatchTransform(data, bands=MODEL_INPUTS[cfg.model], label_set=cfg.label_set,
                               device=dev)
    columns = tuple(dict.fromkeys((*transform.columns, "bands_10m", "patch_id")))
    loader = make_loader(data, split, batch_size or cfg.per_rank_eval_batch_size, num_workers,
                         columns=columns, shuffle=False, equalize="none", rank=0, world_size=1,
                         pin_memory=dev.type == "cuda")
    pred = predict_split(model, loader, transform, keep=("bands_10m",), keep_first=n_examples)
    ids = pred["patch_id"]
    if not ids:
        raise DatasetSchemaError(f"split {split} of {data} yielded no patch")
    if len(set(ids)) != len(ids):
        raise DatasetSchemaError(f"split {split} of {data} holds duplicate patch_ids")

    y_true, y_score = pred["y_true"], pred["y_score"]
    metrics = compute_metrics(y_true, y_score, class_names, cfg.threshold)
    doc: dict[str, Any] = {
        "model": cfg.model, "split": split, "label_set": cfg.label_set,
        "dataset": str(data), "checkpoint": ckpt_file.name,
        "checkpoint_epoch": int(ckpt["epoch"]),
        "weights_source": str(ckpt.get("weights_source", "random")),
        "class_names": class_names, **metrics,
    }
    y_pred = binarize(y_score, cfg.threshold).astype(np.uint8)

    final = eval_dir(run, split)
    with staged_output(final, overwrite=True, marker=False) as stage:
        (stage / "metrics.json").write_text(
            json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n")
        order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
        table = pa.table({
            "patch_id": pa.array([ids[i] for i in order], pa.string()),
            "y_true": _list_array(y_true[order].astype(np.uint8), pa.uint8()),
            "y_score": _list_array(y_score[order].astype(np.float32), pa.float32()),
            "y_pred": _list_array(y_pred[order], pa.uint8()),
        }, metadata={b"bigearthnet.class_names": json.dumps(class_names).encode(),
                     b"bigearthnet.threshold": str(cfg.threshold).encode()})
        pq.write_table(table, stage / "predictions.parquet", compression="zstd")
        if figures is not None:
            examples = []
            bands = pred.get("bands_10m")
            for i in range(0 if bands is None else len(bands)):
                examples.append({
                    "patch_id": ids[i],
                    "bands_10m": bands[i].numpy() if isinstance(bands[i], torch.Tensor) else bands[i],
                    "true": [class_names[j] for j in np.flatnonzero(y_true[i])],
                    "pred": [class_names[j] for j in np.flatnonzero(y_pred[i])],
                })
            figures(stage, EvalView(model=cfg.model, split=split,
                                    epoch=int(doc["checkpoint_epoch"]),
                                    per_class=metrics["per_class"],
                                    history=read_train_log(run), examples=examples))
    files = [name for name in EVAL_FILES if (final / name).is_file()]
    return {**doc, "eval_dir": str(final), "files": {name: str(final / name) for name in files}}
