"""Distributed training on a Spark cluster through ``pyspark.ml.torch.distributor.TorchDistributor``.

Each of the ``nproc`` barrier tasks runs ``torchrun --nnodes=nproc --nproc_per_node=1`` on its
executor and calls :func:`bigearthnet.train.loop.train_worker` (see
:mod:`bigearthnet.train.distributed`). The run folder and the dataset must be on a filesystem
every executor sees at the same path; rank 0 writes the run folder. Use it as the launcher of
:func:`bigearthnet.train.launch.train` (``bigearthnet train --spark`` does).

A lost rank (its process or its executor killed) fails its barrier task; Spark then kills the
other tasks of the stage and, since the stage is a barrier *result* stage, aborts the job instead
of re-running it ("Could not recover from a failed barrier ResultStage"), so no second attempt
ever trains into the run folder. A rank blocked in a collective on a dead peer fails after
``TrainConfig.dist_timeout_s``. The driver raises :class:`DistributedTrainingError` naming the
run folder; ``--resume`` continues from the last checkpoint
(``tests/spark/test_trainer_loss_cluster.py``).

The tasks start torchrun through :mod:`bigearthnet.train.torchrun` (TorchDistributor's
``run_pytorch_file_fn`` hook, the one its DeepSpeed subclass uses), whose agents wait seconds,
not torch's fixed 5 minutes, for each other after the training (see that module).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from bigearthnet.config import SparkConfig
from bigearthnet.errors import BigEarthNetError, DistributedTrainingError
from bigearthnet.spark.session import get_session
from bigearthnet.train.checkpoint import resume_hint
from bigearthnet.train.config import TrainConfig
from bigearthnet.train.distributed import raise_from_marker
from bigearthnet.train.loop import train_worker
from bigearthnet.train.tracking import worker_env


def _first_cause(exc: BaseException) -> str:
    """The line of a (Py4J) Spark failure that says why, without the JVM stack trace."""
    lines = [line.strip(" :") for line in str(exc).splitlines() if line.strip(" :")]
    for line in lines:
        if "Job aborted" in line or "barrier" in line:
            return line[:1000]
    return (lines[0] if lines else type(exc).__name__)[:1000]


def run_torchrun_in_task(input_params: dict[str, Any], train_path: str, *args: Any) -> None:
    """Run the task's training script under :mod:`bigearthnet.train.torchrun` (in the task).

    TorchDistributor calls this in each barrier task instead of its own torchrun launcher; the
    command takes TorchDistributor's torchrun arguments (nodes, rank, rendezvous endpoint).
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    torchrun_args, per_node = TorchDistributor._get_torchrun_args(
        local_mode=input_params["local_mode"], num_processes=input_params["num_processes"])
    cmd = [sys.executable, "-m", "bigearthnet.train.torchrun", *torchrun_args,
           f"--nproc_per_node={per_node}", train_path, *map(str, args)]
    TorchDistributor._execute_command(
        cmd, log_streaming_client=input_params.get("log_streaming_client"))


def run_torch_distributor(cfg: TrainConfig, spark: Any = None) -> dict[str, Any]:
    """Train through ``pyspark.ml.torch.distributor.TorchDistributor`` (``local_mode=False``).

    Args:
        cfg: the run's config (already prepared by :func:`bigearthnet.train.launch.train`).
        spark: a SparkSession; default :func:`~bigearthnet.spark.session.get_session` with
            ``cfg.spark_master`` (or the active / spark-submit master when it is ``None``).

    Returns:
        Rank 0's result of :func:`bigearthnet.train.loop.train_worker`.

    Raises:
        BigEarthNetError: a named error raised in a task (re-raised by name).
        DistributedTrainingError: any other failure of the distributed job.
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    if spark is None:
        spark = get_session(SparkConfig(master=cfg.spark_master), master=cfg.spark_master)
    # device "cuda": GPUs on the executors, whether or not the driver has one (Databricks).
    use_gpu = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    distributor = TorchDistributor(num_processes=cfg.nproc, local_mode=False, use_gpu=use_gpu)
    try:
        # run() with our torchrun launcher: TorchDistributor.run is _run with its own one
        result = distributor._run(train_worker, run_torchrun_in_task, cfg.model_dump_json(),
                                  worker_env(cfg))
    except BigEarthNetError:
        raise
    except Exception as exc:
        raise_from_marker(str(exc), exc)
        todo = resume_hint(cfg.out)
        raise DistributedTrainingError(
            f"TorchDistributor training with {cfg.nproc} processes into {cfg.out} failed: "
            f"{_first_cause(exc)}. Spark does not re-run a failed barrier stage: the job stopped "
            "and the other ranks' tasks were killed (the ranks' output above and the executors' "
            f"logs say why). {todo}"
        ) from exc
    if not isinstance(result, dict):
        raise DistributedTrainingError(
            f"TorchDistributor returned {type(result).__name__}, expected rank 0's result dict"
        )
    return result
