"""The training loop of the paper: SGD on the sigmoid cross-entropy, best epoch by validation F1.

:func:`train_worker` is what every training process runs; the launchers
(:mod:`bigearthnet.train.launch`, :mod:`bigearthnet.spark.torch_distributor`) start it and
:mod:`bigearthnet.train.rundir` holds the run folder it writes.

**One epoch** (every process): ``loader.dataset.set_epoch(epoch)``; for each batch, the
:class:`~bigearthnet.dataset.transforms.BatchTransform` builds ``(x, y)`` on the training
device, then one SGD step on ``BCEWithLogitsLoss`` (the paper's sigmoid cross-entropy; mean
over samples and classes) — see :func:`train_step`. Then the whole validation split is
predicted (``sigmoid(logits)``), gathered on rank 0 and scored with
:func:`~bigearthnet.train.metrics.compute_metrics`; the epoch with the highest sample-based F1
is kept as ``best.pt`` (the first one wins a tie).

**Log line** (``train_log.jsonl``): ``epoch`` (1-based), ``train_loss`` (mean over the epoch's
samples, all ranks), ``train_samples``, ``steps`` (per rank), ``img_per_s`` (training samples
of all ranks per second of the training phase, loader included), ``img_per_s_steady`` (the
same without the epoch's first batch, which waits for the loader to fill its shuffle buffer;
0 for a one-step epoch), ``train_seconds``,
``val_seconds``, ``seconds`` (whole epoch), ``lr``, ``val_f1`` (sample F1) and ``val`` (sample,
micro and macro P/R/F1/F2, mAP, ``n_samples``), ``best`` (this epoch became best.pt).

**Determinism.** The model is initialised after ``torch.manual_seed(seed)``, the loader's order
is a function of ``(seed, epoch, rank, worker)`` only, and ``torch.use_deterministic_algorithms``
is on during the run (warn-only on CUDA). On the CPU two runs with the same config and thread
count give identical weights, and a run resumed from ``last.pt`` (model, optimizer momentum,
epoch, RNG states, best metric, history) finishes with the same weights and metrics as one that
was never interrupted. A killed run loses at most the epoch in progress.

**Distributed.** ``nproc > 1`` runs :func:`train_worker` in ``nproc`` DDP processes (see
:mod:`bigearthnet.train.distributed`); ``batch_size`` is the global batch. Only rank 0 writes
into ``RUN``.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn

from bigearthnet.dataset.loader import make_loader
from bigearthnet.dataset.transforms import BatchTransform
from bigearthnet.errors import BigEarthNetError, CheckpointError, DatasetSchemaError
from bigearthnet.train.checkpoint import (
    BEST,
    CHECKPOINT_FORMAT,
    LAST,
    checkpoint_path,
    get_rng_state,
    load_checkpoint,
    set_rng_state,
)
from bigearthnet.train.config import TrainConfig
from bigearthnet.train.distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_sums,
    barrier,
    context_from_env,
    init_distributed,
    print_error_marker,
    select_device,
)
from bigearthnet.train.metrics import compute_metrics
from bigearthnet.train.models import build_model
from bigearthnet.train.registry import MODEL_INPUTS
from bigearthnet.train.rundir import (
    append_log,
    dataset_class_names,
    rewrite_log,
    save_epoch,
    write_result,
)
from bigearthnet.train.tracking import EpochTracker

__all__ = [
    "Determinism",
    "make_optimizer",
    "predict_split",
    "train_step",
    "train_worker",
]

# --------------------------------------------------------------------------------------------
# pieces shared with the tests and benchmarks


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    """SGD over the trainable parameters (the Inception backbone is frozen).

    Args:
        model: the (unwrapped) model.
        cfg: learning rate, momentum and weight decay.

    Returns:
        The optimizer.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
               x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One SGD step; under DDP the backward pass averages the gradients of all ranks.

    Args:
        model: the model (or its DDP wrapper), in training mode.
        optimizer: its optimizer.
        loss_fn: ``nn.BCEWithLogitsLoss()``.
        x: ``(B, C, H, W)`` inputs on the model's device.
        y: ``(B, K)`` float multi-hot targets.

    Returns:
        The batch loss (detached, on the device).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.inference_mode()
def predict_split(model: nn.Module, loader: Any, transform: BatchTransform,
                  keep: tuple[str, ...] = (), keep_first: int = 0) -> dict[str, Any]:
    """Predict every batch of a loader with ``sigmoid(model(x))``.

    Args:
        model: the unwrapped model (put in eval mode here).
        loader: yields batches with ``patch_id`` and the transform's columns.
        transform: builds ``(x, y)``.
        keep: extra batch columns to return for the first ``keep_first`` rows (e.g. the
            ``bands_10m`` of a few example patches).
        keep_first: how many rows of the ``keep`` columns to return.

    Returns:
        ``{"patch_id": list[str], "y_true": uint8 (n, K), "y_score": float32 (n, K), **keep}``
        as numpy arrays on the CPU, in loader order.
    """
    import numpy as np

    model.eval()
    ids: list[str] = []
    trues, scores = [], []
    kept: dict[str, list] = {k: [] for k in keep}
    n_kept = 0
    for batch in loader:
        x, y = transform(batch)
        scores.append(torch.sigmoid(model(x).float()).cpu())
        trues.append(y.to(torch.uint8).cpu())
        ids.extend(batch["patch_id"])
        if n_kept < keep_first:
            take = min(keep_first - n_kept, len(batch["patch_id"]))
            for k in keep:
                kept[k].append(batch[k][:take].clone())
            n_kept += take
    k_classes = int(transform.label_set)
    out: dict[str, Any] = {
        "patch_id": ids,
        "y_true": (torch.cat(trues).numpy() if trues
                   else np.zeros((0, k_classes), dtype=np.uint8)),
        "y_score": (torch.cat(scores).numpy().astype(np.float32) if scores
                    else np.zeros((0, k_classes), dtype=np.float32)),
    }
    for k, parts in kept.items():
        out[k] = torch.cat(parts).numpy() if parts else None
    return out


def _metrics_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The log-sized part of compute_metrics (no per-class table)."""
    return {k: metrics[k] for k in ("samples", "micro", "macro", "map_macro", "map_micro",
                                    "n_samples")}


# --------------------------------------------------------------------------------------------
# one process


class Determinism:
    """Context manager: deterministic algorithms during a run, previous settings restored after.

    Args:
        enabled: turn ``torch.use_deterministic_algorithms`` on (warn-only on CUDA, with
            ``CUBLAS_WORKSPACE_CONFIG`` set and cuDNN benchmarking off); when off, cuDNN
            benchmarking is allowed on CUDA.
        device: the training device.
    """

    def __init__(self, enabled: bool, device: torch.device) -> None:
        self.enabled = enabled
        self.device = device
        self.previous = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
        self.previous_cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)

    def __enter__(self) -> Self:
        if self.enabled:
            if self.device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        return self

    def __exit__(self, *exc: object) -> None:
        torch.use_deterministic_algorithms(self.previous[0], warn_only=self.previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = self.previous_cudnn


def train_worker(cfg_json: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Train in this process: single process, a local DDP rank or a TorchDistributor task.

    Reads its rank from the torchrun environment variables and joins the process group when
    ``WORLD_SIZE > 1``. The run folder must have been prepared by :func:`prepare_run`.

    Args:
        cfg_json: the :class:`TrainConfig` as JSON (a plain string crosses process and Spark
            boundaries without pickling the model class).
        env: environment variables to set first (the tracking server's, for rank 0 on a
            Spark executor; see :func:`bigearthnet.train.tracking.worker_env`).

    Returns:
        The run result on rank 0 (see :func:`train`); a short per-rank summary elsewhere.

    Raises:
        BigEarthNetError: named errors (also printed as an ``ERROR_MARK`` line so a Spark
            driver can re-raise them).
    """
    try:
        os.environ.update(env or {})
        cfg = TrainConfig.model_validate_json(cfg_json)
        ctx = context_from_env()
        device = select_device(cfg.device, ctx.local_rank)
        created = init_distributed(ctx, device, cfg.dist_timeout_s)
        try:
            with Determinism(cfg.deterministic, device):
                return _train_process(cfg, ctx, device)
        finally:
            if created:
                torch.distributed.destroy_process_group()
    except BigEarthNetError as exc:
        print_error_marker(exc)
        raise


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=not (enabled and sys.stderr.isatty()))


@dataclass
class _State:
    """What one training process carries from epoch to epoch (and into checkpoints)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    weights_source: str
    class_names: list[str]
    start_epoch: int = 0
    best_metric: float = -math.inf
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    rank_rows: dict[str, int] = field(default_factory=lambda: {"train_rows": 0, "val_rows": 0})
    tracker: EpochTracker | None = None  # rank 0 of an MLflow-tracked run


def _init_state(cfg: TrainConfig, ctx: DistContext, device: torch.device) -> _State:
    """Seeded model and optimizer; the checkpointed state on ``resume``."""
    run_dir = Path(cfg.out)
    class_names = dataset_class_names(cfg.dataset, cfg.label_set)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, len(class_names), weights=cfg.weights, fc_width=cfg.fc_width)
    weights_source = str(getattr(model, "weights_source", "random"))
    model.to(device)
    state = _State(model, make_optimizer(model, cfg), weights_source, class_names)
    if not cfg.resume:
        return state
    ckpt = load_checkpoint(checkpoint_path(run_dir, LAST), map_location=device)
    if ckpt["model_name"] != cfg.model:
        raise CheckpointError(
            f"{checkpoint_path(run_dir, LAST)} holds a {ckpt['model_name']} model, not {cfg.model}"
        )
    model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    set_rng_state(ckpt["rng"])
    state.start_epoch = int(ckpt["epoch"])
    state.best_metric = -math.inf if ckpt["best_metric"] is None else float(ckpt["best_metric"])
    state.best_epoch = ckpt["best_epoch"]
    state.history = list(ckpt["history"])
    state.weights_source = str(ckpt.get("weights_source", weights_source))
    if ctx.is_main:  # the log may hold an epoch whose checkpoint was never written
        rewrite_log(run_dir, state.history)
    return state


def _train_epoch(cfg: TrainConfig, ctx: DistContext, device: torch.device, net: nn.Module,
                 state: _State, loader: Any, transform: BatchTransform, loss_fn: nn.Module,
                 epoch: int) -> dict[str, float]:
    """One pass over the training split; the sums are over all ranks."""
    t_epoch = time.perf_counter()
    loader.dataset.set_epoch(epoch)
    n_steps = len(loader)
    if cfg.max_steps_per_epoch is not None:
        n_steps = min(n_steps, cfg.max_steps_per_epoch)
    net.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_seen, steps, n_first, t_first = 0, 0, 0, t_epoch
    bar = _progress(n_steps, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and ctx.is_main)
    for batch in loader:
        x, y = transform(batch)
        loss = train_step(net, state.optimizer, loss_fn, x, y)
        loss_sum += loss.double() * x.shape[0]
        n_seen += int(x.shape[0])
        steps += 1
        if steps == 1:  # the first batch carries the loader's start-up (buffer fill)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_first, n_first = time.perf_counter(), n_seen
        if not bar.disable:
            bar.update(1)
            if steps % 10 == 0 or steps == n_steps:
                bar.set_postfix(loss=f"{float(loss):.4f}")
        if steps >= n_steps:
            break
    bar.close()
    loss_value = float(loss_sum)  # waits for the device
    t_end = time.perf_counter()
    steady = (n_seen - n_first) / (t_end - t_first) if steps > 1 else 0.0
    total_loss, total_seen, total_steady = all_reduce_sums(
        [loss_value, float(n_seen), steady], ctx, device)
    state.rank_rows["train_rows"] += n_seen
    return {"loss": total_loss, "seen": total_seen, "steady": total_steady, "steps": steps,
            "seconds": time.perf_counter() - t_epoch}


def _validate(cfg: TrainConfig, ctx: DistContext, state: _State, loader: Any,
              transform: BatchTransform) -> dict[str, Any] | None:
    """Predict the validation split on every rank; score it on rank 0 (None elsewhere)."""
    pred = predict_split(state.model, loader, transform)
    state.rank_rows["val_rows"] += len(pred["patch_id"])
    gathered = all_gather_objects((pred["patch_id"], pred["y_true"], pred["y_score"]), ctx)
    if not ctx.is_main:
        return None
    return _score_gathered(gathered, state.class_names, cfg.threshold)


def _record_epoch(cfg: TrainConfig, state: _State, epoch: int, train: dict[str, float],
                  val_summary: dict[str, Any], val_seconds: float, t_epoch: float) -> None:
    """Rank 0: log line, best tracking and checkpoints of a finished epoch."""
    run_dir = Path(cfg.out)
    f1 = float(val_summary["samples"]["f1"])
    improved = f1 > state.best_metric
    if improved:
        state.best_metric, state.best_epoch = f1, epoch + 1
    record = {
        "epoch": epoch + 1,
        "train_loss": train["loss"] / train["seen"] if train["seen"] else float("nan"),
        "train_samples": int(train["seen"]),
        "steps": train["steps"],
        "img_per_s": train["seen"] / train["seconds"] if train["seconds"] > 0 else 0.0,
        "img_per_s_steady": train["steady"],
        "train_seconds": train["seconds"],
        "val_seconds": val_seconds,
        "seconds": time.perf_counter() - t_epoch,
        "lr": cfg.lr,
        "val_f1": f1,
        "val": val_summary,
        "best": improved,
    }
    state.history.append(record)
    payload = {
        "format": CHECKPOINT_FORMAT, "epoch": epoch + 1,
        "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
        "rng": get_rng_state(), "best_metric": state.best_metric, "best_epoch": state.best_epoch,
        "history": state.history, "config": cfg.model_dump_json(), "model_name": cfg.model,
        "weights_source": state.weights_source, "class_names": state.class_names,
        "label_set": cfg.label_set,
    }
    save_epoch(run_dir, payload, improved)
    append_log(run_dir, record)
    if state.tracker is not None:
        state.tracker.log_epoch(record)


def _train_process(cfg: TrainConfig, ctx: DistContext, device: torch.device) -> dict[str, Any]:
    t_start = time.perf_counter()
    run_dir = Path(cfg.out)
    state = _init_state(cfg, ctx, device)
    state.tracker = EpochTracker.open(cfg, ctx.is_main)
    net: nn.Module = state.model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            state.model, device_ids=[device.index] if device.type == "cuda" else None)

    transform = BatchTransform(cfg.dataset, bands=MODEL_INPUTS[cfg.model],
                               label_set=cfg.label_set, device=device)
    pin = device.type == "cuda"
    train_loader = make_loader(
        cfg.dataset, "train", cfg.per_rank_batch_size, cfg.num_workers,
        columns=transform.columns, shuffle=True, seed=cfg.seed, buffer_size=cfg.buffer_size,
        rank=ctx.rank, world_size=ctx.world_size, pin_memory=pin)
    val_loader = make_loader(
        cfg.dataset, "validation", cfg.per_rank_eval_batch_size, cfg.num_workers,
        columns=(*transform.columns, "patch_id"), shuffle=False, equalize="none",
        rank=ctx.rank, world_size=ctx.world_size, pin_memory=pin)
    loss_fn = nn.BCEWithLogitsLoss()

    for epoch in range(state.start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        train_sums = _train_epoch(cfg, ctx, device, net, state, train_loader, transform,
                                  loss_fn, epoch)
        t_val = time.perf_counter()
        val_summary = _validate(cfg, ctx, state, val_loader, transform)
        val_seconds = time.perf_counter() - t_val
        if ctx.is_main:
            _record_epoch(cfg, state, epoch, train_sums, val_summary, val_seconds, t_epoch)

    ranks = all_gather_objects({
        "rank": ctx.rank, "world_size": ctx.world_size, "local_rank": ctx.local_rank,
        "pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd(),
        "device": str(device),
        "backend": (torch.distributed.get_backend() if ctx.distributed else None),
        **state.rank_rows,
    }, ctx)
    barrier(ctx)
    if not ctx.is_main:
        return {"rank": ctx.rank, "world_size": ctx.world_size}
    result = {
        "run_dir": str(run_dir),
        "model": cfg.model,
        "label_set": cfg.label_set,
        "epochs": cfg.epochs,
        "best_epoch": state.best_epoch,
        "best_val_f1": None if state.best_epoch is None else state.best_metric,
        "final_val": state.history[-1]["val"] if state.history else None,
        "weights_source": state.weights_source,
        "world_size": ctx.world_size,
        "ranks": ranks,
        "history": state.history,
        "checkpoints": {"last": str(checkpoint_path(run_dir, LAST)),
                        "best": str(checkpoint_path(run_dir, BEST))},
        "wall_s": time.perf_counter() - t_start,
    }
    if state.tracker is not None and state.best_epoch is not None:
        result["mlflow"] = _log_best_model(cfg, state, val_loader, transform)
    write_result(run_dir, result)
    return result


def _log_best_model(cfg: TrainConfig, state: _State, loader: Any,
                    transform: BatchTransform) -> dict[str, Any]:
    """Rank 0: the best checkpoint as the MLflow model, with a validation batch as example."""
    ckpt = load_checkpoint(checkpoint_path(Path(cfg.out), BEST), map_location="cpu")
    best = build_model(cfg.model, len(state.class_names), weights=None, fc_width=cfg.fc_width)
    best.load_state_dict(ckpt["model"])
    x, _ = transform(next(iter(loader)))
    uri = state.tracker.log_model(best, x, cfg.model, state.class_names)
    return {**state.tracker.ref, "model_uri": uri, "model_epoch": int(ckpt["epoch"])}


def _score_gathered(gathered: list[tuple], class_names: list[str],
                    threshold: float) -> dict[str, Any]:
    """Concatenate the ranks' predictions, check each patch came once, score them."""
    import numpy as np

    ids = [i for part in gathered for i in part[0]]
    if len(set(ids)) != len(ids):
        raise DatasetSchemaError("validation patches were predicted more than once across ranks")
    if not ids:
        raise DatasetSchemaError("the validation split yielded no patch")
    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    y_true = np.concatenate([part[1] for part in gathered])[order]
    y_score = np.concatenate([part[2] for part in gathered])[order]
    return _metrics_summary(compute_metrics(y_true, y_score, class_names, threshold))
