"""The training loop of the paper: SGD on the sigmoid cross-entropy, best epoch by validation F1.

Entry point: :func:`train` (``bigearthnet train``). A run folder looks like::

    RUN/config.json, RUN/config.yaml   the resolved TrainConfig
    RUN/train_log.jsonl                one JSON line per finished epoch (see below)
    RUN/checkpoints/last.pt            after every epoch (resume point)
    RUN/checkpoints/best.pt            the epoch with the best validation sample F1
    RUN/result.json                    written when the run has finished all its epochs

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

import json
import math
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Self

import torch
import yaml
from torch import nn

from bigearthnet.dataset.loader import make_loader, split_dir
from bigearthnet.dataset.transforms import BatchTransform, load_stats
from bigearthnet.errors import (
    BigEarthNetError,
    CheckpointError,
    ConfigError,
    DatasetSchemaError,
    InputNotFoundError,
    OutputExistsError,
)
from bigearthnet.train.checkpoint import (
    BEST,
    CHECKPOINT_FORMAT,
    LAST,
    checkpoint_path,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from bigearthnet.train.config import RESUMABLE_CHANGES, TrainConfig
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
from bigearthnet.train.models import MODEL_INPUTS, build_model

__all__ = [
    "CONFIG_JSON",
    "CONFIG_YAML",
    "RESULT_JSON",
    "TRAIN_LOG",
    "Determinism",
    "check_dataset",
    "dataset_class_names",
    "make_optimizer",
    "predict_split",
    "prepare_run",
    "train",
    "train_step",
    "train_worker",
]

CONFIG_JSON = "config.json"
CONFIG_YAML = "config.yaml"
TRAIN_LOG = "train_log.jsonl"
RESULT_JSON = "result.json"
TRAIN_SPLITS = ("train", "validation")


# --------------------------------------------------------------------------------------------
# dataset and run folder


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
    path = Path(dataset) / "manifest.json"
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


def _config_docs(cfg: TrainConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def _write_text_atomic(path: Path, text: str) -> None:
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
            now = _config_docs(cfg)
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
    doc = _config_docs(cfg)
    _write_text_atomic(out / CONFIG_JSON, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    _write_text_atomic(out / CONFIG_YAML, yaml.safe_dump(doc, sort_keys=True))
    return out


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


def train_worker(cfg_json: str) -> dict[str, Any]:
    """Train in this process: single process, a local DDP rank or a TorchDistributor task.

    Reads its rank from the torchrun environment variables and joins the process group when
    ``WORLD_SIZE > 1``. The run folder must have been prepared by :func:`prepare_run`.

    Args:
        cfg_json: the :class:`TrainConfig` as JSON (a plain string crosses process and Spark
            boundaries without pickling the model class).

    Returns:
        The run result on rank 0 (see :func:`train`); a short per-rank summary elsewhere.

    Raises:
        BigEarthNetError: named errors (also printed as an ``ERROR_MARK`` line so a Spark
            driver can re-raise them).
    """
    try:
        cfg = TrainConfig.model_validate_json(cfg_json)
        ctx = context_from_env()
        device = select_device(cfg.device, ctx.local_rank)
        created = init_distributed(ctx, device)
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


def _train_process(cfg: TrainConfig, ctx: DistContext, device: torch.device) -> dict[str, Any]:
    t_start = time.perf_counter()
    run_dir = Path(cfg.out)
    class_names = dataset_class_names(cfg.dataset, cfg.label_set)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, len(class_names), weights=cfg.weights, fc_width=cfg.fc_width)
    weights_source = str(getattr(model, "weights_source", "random"))
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    loss_fn = nn.BCEWithLogitsLoss()

    start_epoch, best_metric, best_epoch = 0, -math.inf, None
    history: list[dict[str, Any]] = []
    if cfg.resume:
        ckpt = load_checkpoint(checkpoint_path(run_dir, LAST), map_location=device)
        if ckpt["model_name"] != cfg.model:
            raise CheckpointError(
                f"{checkpoint_path(run_dir, LAST)} holds a {ckpt['model_name']} model, not "
                f"{cfg.model}"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"])
        best_metric = -math.inf if ckpt["best_metric"] is None else float(ckpt["best_metric"])
        best_epoch = ckpt["best_epoch"]
        history = list(ckpt["history"])
        weights_source = str(ckpt.get("weights_source", weights_source))
        if ctx.is_main:  # the log may hold an epoch whose checkpoint was never written
            _write_text_atomic(run_dir / TRAIN_LOG,
                               "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))

    net: nn.Module = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

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

    rank_rows = {"train_rows": 0, "val_rows": 0}
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        train_loader.dataset.set_epoch(epoch)
        n_steps = len(train_loader)
        if cfg.max_steps_per_epoch is not None:
            n_steps = min(n_steps, cfg.max_steps_per_epoch)
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        n_seen, steps, n_first, t_first = 0, 0, 0, t_epoch
        bar = _progress(n_steps, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and ctx.is_main)
        for batch in train_loader:
            x, y = transform(batch)
            loss = train_step(net, optimizer, loss_fn, x, y)
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
        t_train = time.perf_counter() - t_epoch
        rank_rows["train_rows"] += n_seen

        t_val = time.perf_counter()
        pred = predict_split(model, val_loader, transform)
        rank_rows["val_rows"] += len(pred["patch_id"])
        gathered = all_gather_objects(
            (pred["patch_id"], pred["y_true"], pred["y_score"]), ctx)
        val_summary = None
        if ctx.is_main:
            val_summary = _score_gathered(gathered, class_names, cfg.threshold)
        val_seconds = time.perf_counter() - t_val

        if ctx.is_main:
            f1 = float(val_summary["samples"]["f1"])
            improved = f1 > best_metric
            if improved:
                best_metric, best_epoch = f1, epoch + 1
            record = {
                "epoch": epoch + 1,
                "train_loss": total_loss / total_seen if total_seen else float("nan"),
                "train_samples": int(total_seen),
                "steps": steps,
                "img_per_s": total_seen / t_train if t_train > 0 else 0.0,
                "img_per_s_steady": total_steady,
                "train_seconds": t_train,
                "val_seconds": val_seconds,
                "seconds": time.perf_counter() - t_epoch,
                "lr": cfg.lr,
                "val_f1": f1,
                "val": val_summary,
                "best": improved,
            }
            history.append(record)
            payload = {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": get_rng_state(), "best_metric": best_metric, "best_epoch": best_epoch,
                "history": history, "config": cfg.model_dump_json(), "model_name": cfg.model,
                "weights_source": weights_source, "class_names": class_names,
                "label_set": cfg.label_set,
            }
            # best first: a kill between the two writes re-runs this epoch on resume
            if improved:
                save_checkpoint(checkpoint_path(run_dir, BEST), payload)
            save_checkpoint(checkpoint_path(run_dir, LAST), payload)
            with open(run_dir / TRAIN_LOG, "a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")

    ranks = all_gather_objects({
        "rank": ctx.rank, "world_size": ctx.world_size, "local_rank": ctx.local_rank,
        "pid": os.getpid(), "host": socket.gethostname(), "cwd": os.getcwd(),
        "device": str(device),
        "backend": (torch.distributed.get_backend() if ctx.distributed else None),
        **rank_rows,
    }, ctx)
    barrier(ctx)
    if not ctx.is_main:
        return {"rank": ctx.rank, "world_size": ctx.world_size}
    result = {
        "run_dir": str(run_dir),
        "model": cfg.model,
        "label_set": cfg.label_set,
        "epochs": cfg.epochs,
        "best_epoch": best_epoch,
        "best_val_f1": None if best_epoch is None else best_metric,
        "final_val": history[-1]["val"] if history else None,
        "weights_source": weights_source,
        "world_size": ctx.world_size,
        "ranks": ranks,
        "history": history,
        "checkpoints": {"last": str(checkpoint_path(run_dir, LAST)),
                        "best": str(checkpoint_path(run_dir, BEST))},
        "wall_s": time.perf_counter() - t_start,
    }
    _write_text_atomic(run_dir / RESULT_JSON, json.dumps(result, indent=2, sort_keys=True) + "\n")
    return result


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


# --------------------------------------------------------------------------------------------
# entry point


def train(cfg: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Train one model as configured; single process, local DDP, or TorchDistributor.

    Args:
        cfg: a :class:`TrainConfig` (or a dict validated into one).

    Returns:
        ``{"run_dir", "model", "label_set", "epochs", "best_epoch", "best_val_f1",
        "final_val", "weights_source", "world_size", "ranks", "history", "checkpoints",
        "wall_s"}`` (also saved as ``RUN/result.json``). ``ranks`` lists every process that
        trained (rank, world_size, local_rank, pid, host, cwd, device, backend, train_rows,
        val_rows).

    Raises:
        InputNotFoundError, IncompleteDatasetError, SplitNotFoundError, DatasetSchemaError,
            StatsError: the dataset is missing or incomplete.
        OutputExistsError: the run folder exists (use ``resume`` or ``overwrite``).
        CheckpointError: nothing to resume, or a corrupt checkpoint.
        ConfigError: invalid or resume-incompatible settings.
        WeightsUnavailableError: ``weights="imagenet"`` without the local cache file.
        DistributedTrainingError: a DDP process or Spark task failed otherwise.
    """
    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.model_validate(cfg)
    prepare_run(cfg)
    if cfg.spark:
        from bigearthnet.train.distributed import run_torch_distributor

        return run_torch_distributor(cfg)
    if cfg.nproc > 1:
        from bigearthnet.train.distributed import run_local_ddp

        return run_local_ddp(cfg)
    return train_worker(cfg.model_dump_json())
