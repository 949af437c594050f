"""Training checkpoints: atomic writes, ``weights_only`` reads, RNG states as plain tensors.

A run keeps two files::

    RUN/checkpoints/last.pt   after every epoch (what ``--resume`` continues from)
    RUN/checkpoints/best.pt   the epoch with the best validation sample F1 (what evaluate uses)

Each is a ``torch.save`` of a dict holding only tensors, numbers, strings, lists, tuples, dicts
and ``None``, so that it loads with ``torch.load(weights_only=True)`` (no arbitrary unpickling):

``format``
    :data:`CHECKPOINT_FORMAT`.
``epoch``
    completed epochs (the next epoch to run, 0-based).
``model`` / ``optimizer``
    the model's ``state_dict`` (unwrapped from DDP) and the SGD optimizer's ``state_dict``.
``rng``
    ``{"torch": ByteTensor, "cuda": [ByteTensor, ...], "python": random.getstate(),
    "numpy": {"name", "keys" (int64 tensor), "pos", "has_gauss", "cached_gaussian"}}``.
``best_metric`` / ``best_epoch``
    best validation sample F1 so far and its 1-based epoch (``None`` before the first epoch).
``history``
    the per-epoch records of ``train_log.jsonl``.
``config``
    the run's resolved :class:`~bigearthnet.train.config.TrainConfig` as a JSON string.
``model_name``, ``weights_source``, ``class_names``
    what the weights are.

A write goes to a hidden temporary sibling, is flushed to disk, then ``os.replace``-d over the
target: a killed process leaves either the old or the new complete file.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bigearthnet.errors import CheckpointError

__all__ = [
    "BEST",
    "CHECKPOINT_DIR",
    "CHECKPOINT_FORMAT",
    "LAST",
    "checkpoint_path",
    "get_rng_state",
    "load_checkpoint",
    "resume_hint",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = 1
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
REQUIRED_KEYS = ("format", "epoch", "model", "optimizer", "rng", "best_metric", "best_epoch",
                 "history", "config", "model_name")


def checkpoint_path(run_dir: str | os.PathLike[str], which: str = LAST) -> Path:
    """``RUN/checkpoints/<which>``.

    Args:
        run_dir: the run folder.
        which: ``"last.pt"`` or ``"best.pt"`` (or ``"last"`` / ``"best"``).

    Returns:
        The checkpoint path (which may not exist).
    """
    name = which if which.endswith(".pt") else f"{which}.pt"
    return Path(run_dir) / CHECKPOINT_DIR / name


def resume_hint(run_dir: str | os.PathLike[str]) -> str:
    """What to do after a failed training run: resume from its last checkpoint, or start over."""
    if checkpoint_path(run_dir, LAST).is_file():
        return (f"{run_dir} keeps the checkpoint of every finished epoch: run the same command "
                "with --resume to continue it")
    return (f"no epoch finished, so {run_dir} holds no checkpoint: run the same command again "
            "with --overwrite")


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain Python values.

    Returns:
        ``{"torch", "cuda", "python", "numpy"}`` (see the module docstring).
    """
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`get_rng_state`.

    CUDA states are restored only when as many devices are visible as were saved.

    Args:
        state: the ``rng`` entry of a checkpoint.

    Raises:
        CheckpointError: the entry is malformed.
    """
    try:
        torch.set_rng_state(state["torch"].cpu())
        cuda = state.get("cuda") or []
        if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]),
                             int(n["has_gauss"]), float(n["cached_gaussian"])))
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint RNG state is malformed: {exc}") from exc


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary sibling, fsync, ``os.replace``).

    Args:
        path: target file; its folder is created.
        payload: the checkpoint dict (tensors and plain values only).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        CheckpointError: a key of :data:`REQUIRED_KEYS` is missing.
    """
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint payload lacks {missing}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def load_checkpoint(path: str | os.PathLike[str],
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and check its keys.

    Args:
        path: the ``.pt`` file.
        map_location: where tensors are loaded.

    Returns:
        The checkpoint dict.

    Raises:
        CheckpointError: the file does not exist, cannot be read safely, or is not a checkpoint
            of this format.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"checkpoint {p} cannot be read with weights_only=True ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(payload, dict):
        raise CheckpointError(f"{p} does not hold a checkpoint dict")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{p} is not a bigearthnet checkpoint: it lacks {missing}")
    if payload["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{p} has checkpoint format {payload['format']}, this version reads {CHECKPOINT_FORMAT}"
        )
    return payload
