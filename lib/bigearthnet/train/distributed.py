"""Process-group helpers for DDP training: where a process sits, joining, collectives, errors.

Horovod does not build against current torch (DESIGN §3), so training uses plain
``torch.distributed`` DDP; every process runs the same function,
:func:`bigearthnet.train.loop.train_worker`, which reads its place from the environment
variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group with ``init_method="env://"``.
The launchers that start those processes are :mod:`bigearthnet.train.launch` (one machine) and
:mod:`bigearthnet.spark.torch_distributor` (a Spark cluster).

* **Local** (``nproc > 1``): :func:`bigearthnet.train.launch.launch_local` spawns ``nproc`` processes with
  ``torch.multiprocessing`` (start method ``spawn``), sets those variables itself
  (``MASTER_ADDR=127.0.0.1`` and a free port) and collects every rank's return value. Backend:
  gloo on CPU, NCCL on CUDA (one GPU per process). On CPU the cores are divided between the
  processes (``torch.set_num_threads(cpu_count // nproc)``).
* **Spark** (``spark=True``): :func:`bigearthnet.spark.torch_distributor.run_torch_distributor` calls
  ``TorchDistributor(num_processes=nproc, local_mode=False, use_gpu=<CUDA available>).run(
  train_worker, cfg_json)`` on the current Spark session.
  Each of the ``nproc`` barrier tasks runs ``torchrun --nnodes=nproc --nproc_per_node=1`` on its
  executor, so every process is a separate Spark task. The run folder (``out``) and the dataset
  must be on a filesystem every executor sees at the same path (local disk on one machine, a
  shared mount or DBFS ``/dbfs/...`` on a cluster); rank 0 writes the run folder.

What the ranks share: the loader shards row groups by rank
(:class:`bigearthnet.dataset.loader.PatchDataset`, ``equalize="drop"`` for training so every
rank takes the same number of steps); DDP averages the gradients; rank 0 alone writes
checkpoints and logs; validation predictions are all-gathered so the metrics cover the whole
split exactly once (see :func:`all_gather_objects`).

Errors: a rank that raises a :class:`~bigearthnet.errors.BigEarthNetError` reports its class
name and message; the launcher re-raises the same class in the caller. Anything else becomes a
:class:`~bigearthnet.errors.DistributedTrainingError` carrying the failing rank's traceback.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from bigearthnet.errors import (
    ERROR_TYPES,
    BigEarthNetError,
    ConfigError,
)

__all__ = [
    "ERROR_MARK",
    "DistContext",
    "all_gather_objects",
    "all_reduce_sums",
    "backend_for",
    "barrier",
    "context_from_env",
    "free_port",
    "init_distributed",
    "print_error_marker",
    "raise_from_marker",
    "select_device",
]

ERROR_MARK = "BIGEARTHNET_ERROR "
"""Prefix of the one stdout line a failing rank prints: ``ERROR_MARK + {"type", "message"}``."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 … world_size - 1.
        world_size: number of processes.
        local_rank: rank on this machine (picks the GPU).
        local_world_size: processes on this machine.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def context_from_env() -> DistContext:
    """Read the torchrun variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...).

    Without them this is a single process: rank 0 of 1.

    Returns:
        The process's :class:`DistContext`.

    Raises:
        ConfigError: the variables are inconsistent.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", 1 if world == 1 else world)
    if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(local_world, 1):
        raise ConfigError(
            f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} "
            f"LOCAL_RANK={local_rank} LOCAL_WORLD_SIZE={local_world}"
        )
    return DistContext(rank, world, local_rank, local_world)


def select_device(spec: str, local_rank: int = 0) -> torch.device:
    """The training device of this process.

    Args:
        spec: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``.
        local_rank: picks ``cuda:<local_rank % device_count>``.

    Returns:
        The device.

    Raises:
        ConfigError: ``"cuda"`` asked for but not available.
    """
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but torch sees no CUDA device")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def backend_for(device: torch.device) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` for CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(ctx: DistContext, device: torch.device, timeout_s: float = 300.0) -> bool:
    """Join the process group (``env://``) unless single-process or already joined.

    Args:
        ctx: this process's place.
        device: its training device (selects the backend; CUDA devices are made current).
        timeout_s: how long a rank waits for the group to form, or in a collective for a peer
            (``TrainConfig.dist_timeout_s``); when a peer dies the survivors fail after at most
            this long instead of torch's default 30 minutes.

    Returns:
        ``True`` when this call created the group (the caller then destroys it).
    """
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not ctx.distributed or dist.is_initialized():
        return False
    dist.init_process_group(backend=backend_for(device), init_method="env://",
                            rank=ctx.rank, world_size=ctx.world_size,
                            timeout=timedelta(seconds=timeout_s))
    return True


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` on a single process).

    Args:
        obj: a picklable object.
        ctx: this process's place.

    Returns:
        A list of ``world_size`` objects.
    """
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sums(values: Sequence[float], ctx: DistContext,
                    device: torch.device) -> list[float]:
    """Sum a few numbers over all ranks (float64).

    Args:
        values: this rank's numbers.
        ctx: this process's place.
        device: where the reduction tensor lives (CUDA for NCCL).

    Returns:
        The sums, the same on every rank.
    """
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu().tolist()]


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op on a single process)."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------------
# error transport


def print_error_marker(exc: BaseException) -> None:
    """Print the :data:`ERROR_MARK` line for a named error (TorchDistributor keeps the tail
    of a task's output in the driver's exception)."""
    if isinstance(exc, BigEarthNetError):
        print(ERROR_MARK + json.dumps({"type": type(exc).__name__, "message": str(exc)}),
              flush=True)


def raise_from_marker(text: str, cause: BaseException) -> None:
    """Re-raise the named error whose :data:`ERROR_MARK` line appears in ``text``, if any.

    Args:
        text: output (e.g. a TorchDistributor exception message).
        cause: the exception to chain.

    Raises:
        BigEarthNetError: the registered class named by the marker.
    """
    for match in re.finditer(re.escape(ERROR_MARK) + r"(\{.*?\})\s*$", text, flags=re.MULTILINE):
        try:
            doc = json.loads(match.group(1))
        except json.JSONDecodeError:
            continue
        cls = ERROR_TYPES.get(str(doc.get("type")))
        if cls is not None:
            raise cls(str(doc.get("message", ""))) from cause
