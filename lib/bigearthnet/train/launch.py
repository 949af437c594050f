"""Launch training on this machine: one process, or ``nproc`` DDP processes torchrun-style.

:func:`train` is the library entry point of ``bigearthnet train``: it prepares the run folder
(:mod:`bigearthnet.train.rundir`) and hands :func:`bigearthnet.train.loop.train_worker` to a
launcher: in-process, :func:`run_local_ddp`, or one passed in by the caller (the Spark
launcher :func:`bigearthnet.spark.torch_distributor.run_torch_distributor`, which lives with the
other Spark code so that training never imports Spark).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bigearthnet.errors import ERROR_TYPES, ConfigError, DistributedTrainingError
from bigearthnet.train.checkpoint import resume_hint
from bigearthnet.train.config import TrainConfig
from bigearthnet.train.distributed import free_port, select_device
from bigearthnet.train.loop import train_worker
from bigearthnet.train.rundir import prepare_run
from bigearthnet.train.tracking import end_training_run, start_training_run

Launcher = Callable[[TrainConfig], dict[str, Any]]
"""Runs :func:`~bigearthnet.train.loop.train_worker` for a prepared config; returns rank 0's
result."""


STOP_GRACE_S = 5.0
"""When a rank fails, how long the others get to exit before SIGTERM, and then before SIGKILL (a
hung or stopped rank ignores SIGTERM; torch's own default waits 30 s for it)."""


def _entry(local_rank: int, fn: Callable[..., Any], args: tuple, nproc: int, port: int,
           result_dir: str, threads: int | None) -> None:
    """Body of one spawned process: torchrun's environment, then ``fn(*args)``."""
    os.environ.update({
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(local_rank),
        "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(nproc),
        "LOCAL_WORLD_SIZE": str(nproc), "GROUP_RANK": "0", "ROLE_RANK": str(local_rank),
    })
    if threads:
        torch.set_num_threads(threads)
    path = Path(result_dir) / f"rank-{local_rank}.pkl"
    try:
        result = fn(*args)
    except BaseException as exc:
        record = ("error", type(exc).__name__, str(exc), traceback.format_exc())
        path.write_bytes(pickle.dumps(record))
        raise
    path.write_bytes(pickle.dumps(("ok", result)))


def launch_local(fn: Callable[..., Any], nproc: int, args: tuple = (), *,
                 threads_per_proc: int | None = None) -> list[Any]:
    """Run ``fn(*args)`` in ``nproc`` spawned processes set up like torchrun on one node.

    Each process gets ``RANK = LOCAL_RANK = i``, ``WORLD_SIZE = LOCAL_WORLD_SIZE = nproc``,
    ``MASTER_ADDR=127.0.0.1`` and a free ``MASTER_PORT``; ``fn`` joins the group itself (e.g.
    with :func:`init_distributed`). ``fn`` and ``args`` must be picklable (a module-level
    function). If one process fails the others are terminated: SIGTERM after
    :data:`STOP_GRACE_S`, SIGKILL after as long again.

    Args:
        fn: the per-process function.
        nproc: number of processes (>= 1).
        args: positional arguments for ``fn``.
        threads_per_proc: ``torch.set_num_threads`` in each process (default: unchanged).

    Returns:
        The return values of ranks ``0 … nproc-1``.

    Raises:
        BigEarthNetError: the (registered) error a rank raised, re-raised by name.
        DistributedTrainingError: any other failure, with the failing rank's traceback.
    """
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    if nproc < 1:
        raise ConfigError(f"nproc must be >= 1, not {nproc}")
    result_dir = tempfile.mkdtemp(prefix="bigearthnet-ddp-")
    try:
        try:
            context = mp.start_processes(
                _entry, args=(fn, tuple(args), nproc, free_port(), result_dir, threads_per_proc),
                nprocs=nproc, join=False, start_method="spawn")
            while not context.join(grace_period=STOP_GRACE_S):
                pass
        except ProcessException as exc:
            records = _read_records(result_dir, nproc)
            for rank, rec in enumerate(records):
                if rec is not None and rec[0] == "error":
                    cls = ERROR_TYPES.get(rec[1])
                    if cls is not None:
                        raise cls(rec[2]) from exc
                    raise DistributedTrainingError(
                        f"rank {rank} of {nproc} failed with {rec[1]}: {rec[2]}\n{rec[3]}"
                    ) from exc
            raise DistributedTrainingError(f"a DDP process failed: {exc}") from exc
        records = _read_records(result_dir, nproc)
        if any(rec is None or rec[0] != "ok" for rec in records):
            raise DistributedTrainingError("a DDP process exited without a result")
        return [rec[1] for rec in records]
    finally:
        shutil.rmtree(result_dir, ignore_errors=True)


def _read_records(result_dir: str, nproc: int) -> list[tuple | None]:
    out: list[tuple | None] = []
    for rank in range(nproc):
        path = Path(result_dir) / f"rank-{rank}.pkl"
        out.append(pickle.loads(path.read_bytes()) if path.is_file() else None)
    return out


def run_local_ddp(cfg: TrainConfig) -> dict[str, Any]:
    """Train with ``cfg.nproc`` DDP processes on this machine (torchrun-style).

    Args:
        cfg: the run's config (already prepared by :func:`train`).

    Returns:
        Rank 0's result of :func:`bigearthnet.train.loop.train_worker`.

    Raises:
        ConfigError: CUDA training with more processes than GPUs.
        BigEarthNetError, DistributedTrainingError: a rank failed.
    """
    device = select_device(cfg.device)
    threads = None
    if device.type == "cuda":
        if cfg.nproc > torch.cuda.device_count():
            raise ConfigError(
                f"nproc {cfg.nproc} > {torch.cuda.device_count()} visible GPUs; NCCL needs one "
                "GPU per process"
            )
    else:
        threads = max(1, (os.cpu_count() or 1) // cfg.nproc)
    try:
        results = launch_local(train_worker, cfg.nproc, (cfg.model_dump_json(),),
                               threads_per_proc=threads)
    except DistributedTrainingError as exc:
        first, _, trace = str(exc).partition("\n")
        raise DistributedTrainingError(
            f"DDP training with {cfg.nproc} processes into {cfg.out} failed: {first}. The other "
            f"ranks were stopped. {resume_hint(cfg.out)}" + (f"\n{trace}" if trace else "")
        ) from exc
    return results[0]


def run_in_process(cfg: TrainConfig) -> dict[str, Any]:
    """Train in this process (``nproc == 1``)."""
    return train_worker(cfg.model_dump_json())


def train(cfg: TrainConfig | dict[str, Any], launcher: Launcher | None = None) -> dict[str, Any]:
    """Train one model as configured; single process or local DDP, or through ``launcher``.

    Args:
        cfg: a :class:`TrainConfig` (or a dict validated into one).
        launcher: runs the prepared config elsewhere (e.g.
            :func:`bigearthnet.spark.torch_distributor.run_torch_distributor`); required when
            ``cfg.spark`` is set, since this package layer does not import Spark.

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
        ConfigError: invalid or resume-incompatible settings, or ``spark`` without a launcher.
        WeightsUnavailableError: ``weights="imagenet"`` without the local cache file.
        DistributedTrainingError: a DDP process or Spark task failed otherwise.
    """
    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.model_validate(cfg)
    if cfg.spark and launcher is None:
        raise ConfigError(
            "spark: true trains through TorchDistributor; call bigearthnet.pipeline.train_model "
            "(or pass bigearthnet.spark.torch_distributor.run_torch_distributor as launcher)"
        )
    prepare_run(cfg)
    tracked = start_training_run(cfg)  # MLflow (tracking.mlflow): the run, params and tags
    try:
        if launcher is not None:
            result = launcher(cfg)
        elif cfg.nproc > 1:
            result = run_local_ddp(cfg)
        else:
            result = run_in_process(cfg)
    except BaseException:
        if tracked is not None:
            end_training_run(tracked, None, failed=True)
        raise
    end_training_run(tracked, result)
    return result
