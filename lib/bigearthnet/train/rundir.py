"""The run folder of one training: config, checkpoints, logs and result.

::

    RUN/config.json, RUN/config.yaml   the resolved TrainConfig
    RUN/train_log.jsonl                one JSON line per finished epoch
    RUN/checkpoints/last.pt            after every epoch (resume point)
    RUN/checkpoints/best.pt            the epoch with the best validation sample F1
    RUN/result.json                    written when the run has finished all its epochs
    RUN/eval/                          ``bigearthnet evaluate`` (metrics, predictions, plots)

Only rank 0 writes here. Every write is atomic (temporary sibling + rename).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.loader import split_dir
from bigearthnet.dataset.objectstore import local_dataset
from bigearthnet.dataset.transforms import load_stats
from bigearthnet.errors import (
    CheckpointError,
    ConfigError,
    DatasetSchemaError,
    InputNotFoundError,
    OutputExistsError,
)
from bigearthnet.train.checkpoint import BEST, LAST, checkpoint_path, save_checkpoint
from bigearthnet.train.config import RESUMABLE_CHANGES, TrainConfig

CONFIG_JSON = "config.json"
CONFIG_YAML = "config.yaml"
TRAIN_LOG = "train_log.jsonl"
RESULT_JSON = "result.json"
TRAIN_SPLITS = ("train", "validation")


def check_dataset(dataset: str | os.PathLike[str], splits: tuple[str, ...] = TRAIN_SPLITS) -> None:
    """Fail early, with a named error, on a dataset that cannot be trained on.

    Args:
        dataset: the dataset folder.
        splits: splits that must exist.

    Raises:
        InputNotFoundError: the folder, ``stats.json`` or ``manifest.json`` is missing.
        IncompleteDatasetError: no ``_SUCCESS`` marker (the build did not finish).
        SplitNotFoundError: a split folder is missing or empty.
        DatasetSchemaError: the manifest has no class orders.
        StatsError: ``stats.json`` is not valid.
    """
    for split in splits:
        split_dir(dataset, split)
    load_stats(dataset)
    dataset_class_names(dataset, "43")


def dataset_class_names(dataset: str | os.PathLike[str], label_set: str) -> list[str]:
    """The ordered class names of ``manifest.json``'s ``class_orders.labels_<label_set>``.

    Args:
        dataset: the dataset folder.
        label_set: ``"43"`` or ``"19"``.

    Returns:
        The class names in multi-hot column order.

    Raises:
        InputNotFoundError: no ``manifest.json``.
        DatasetSchemaError: the manifest lacks the class order or it has the wrong length.
    """
    path = DatasetLayout(local_dataset(dataset)).manifest
    if not path.is_file():
        raise InputNotFoundError(f"dataset manifest {path} does not exist; was the dataset built?")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetSchemaError(f"{path} is not valid JSON: {exc}") from None
    key = f"labels_{label_set}"
    names = (manifest.get("class_orders") or {}).get(key) if isinstance(manifest, dict) else None
    if not isinstance(names, list) or len(names) != int(label_set):
        raise DatasetSchemaError(
            f"{path} has no class_orders.{key} list of {label_set} class names"
        )
    return [str(n) for n in names]


def config_doc(cfg: TrainConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a small text file atomically (temporary sibling + rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare_run(cfg: TrainConfig) -> Path:
    """Check the dataset, create (or check, for ``resume``) the run folder, save the config.

    Args:
        cfg: the run's config.

    Returns:
        The run folder.

    Raises:
        InputNotFoundError, IncompleteDatasetError, SplitNotFoundError, DatasetSchemaError,
            StatsError: the dataset is missing or incomplete.
        OutputExistsError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is set.
        CheckpointError: ``resume`` without ``checkpoints/last.pt``.
        ConfigError: ``resume`` with settings that differ from the saved run's.
    """
    check_dataset(cfg.dataset)
    out = Path(cfg.out)
    if cfg.resume:
        last = checkpoint_path(out, LAST)
        if not last.is_file():
            raise CheckpointError(
                f"cannot resume: {last} does not exist (start the run without --resume)"
            )
        saved_path = out / CONFIG_JSON
        if saved_path.is_file():
            saved = json.loads(saved_path.read_text())
            now = config_doc(cfg)
            changed = sorted(k for k in set(saved) | set(now)
                             if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
            if changed:
                raise ConfigError(
                    f"cannot resume {out}: the settings {changed} differ from the saved run's "
                    f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)}); only "
                    f"{sorted(RESUMABLE_CHANGES)} may change"
                )
    elif out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise OutputExistsError(
                f"run folder {out} exists already; pass --resume to continue it, --overwrite to "
                "replace it, or choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = config_doc(cfg)
    write_text_atomic(out / CONFIG_JSON, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    write_text_atomic(out / CONFIG_YAML, yaml.safe_dump(doc, sort_keys=True))
    return out


def rewrite_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Replace ``train_log.jsonl`` with ``history`` (on resume: drop epochs never checkpointed)."""
    write_text_atomic(run_dir / TRAIN_LOG,
                      "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's line to ``train_log.jsonl``."""
    with open(run_dir / TRAIN_LOG, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def save_epoch(run_dir: Path, payload: dict[str, Any], improved: bool) -> None:
    """Checkpoint an epoch: ``best.pt`` first when it improved, then ``last.pt``.

    Best first: a kill between the two writes re-runs this epoch on resume.
    """
    if improved:
        save_checkpoint(checkpoint_path(run_dir, BEST), payload)
    save_checkpoint(checkpoint_path(run_dir, LAST), payload)


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    """Write ``result.json``, the mark of a finished run."""
    write_text_atomic(run_dir / RESULT_JSON, json.dumps(result, indent=2, sort_keys=True) + "\n")
