"""Distributed training: DDP gradient averaging, local nproc=2 runs, errors, TorchDistributor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from bigearthnet.errors import (
    DistributedTrainingError,
    IncompleteDatasetError,
    WeightsUnavailableError,
)
from bigearthnet.train.config import TrainConfig
from bigearthnet.train.distributed import (
    ERROR_MARK,
    context_from_env,
    init_distributed,
    raise_from_marker,
)
from bigearthnet.train.launch import launch_local, train
from bigearthnet.train.loop import make_optimizer, train_step
from bigearthnet.train.models import build_model

SGD = TrainConfig(dataset="unused", out="unused", lr=0.05, momentum=0.9, weight_decay=1e-4)


def sgd_steps(k: int, b: int, take: int | None = None) -> dict[str, torch.Tensor]:
    """``k`` SGD steps over a fixed, unshuffled sequence of global batches of ``b`` samples.

    Rank ``r`` of ``W`` takes rows ``[r*b/W, (r+1)*b/W)`` of each global batch (``take`` rows
    instead, for a deliberately wrong single-process run). Same model, optimizer, loss and step
    function as the training loop; DDP when launched with ``WORLD_SIZE > 1``.
    """
    ctx = context_from_env()
    device = torch.device("cpu")
    created = init_distributed(ctx, device)
    try:
        torch.manual_seed(0)
        model = build_model("s-cnn-rgb", 19, fc_width=8)
        net = nn.parallel.DistributedDataParallel(model) if ctx.distributed else model
        optimizer = make_optimizer(model, SGD)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(k * b, 3, 120, 120, generator=g)
        y = (torch.rand(k * b, 19, generator=g) < 0.3).float()
        part = take or b // ctx.world_size
        for step in range(k):
            lo = step * b + ctx.rank * part
            train_step(net, optimizer, nn.BCEWithLogitsLoss(), x[lo:lo + part], y[lo:lo + part])
        return {name: t.detach().clone() for name, t in model.state_dict().items()}
    finally:
        if created:
            dist.destroy_process_group()


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_ranks_half_batches_equal_one_rank_full_batch():
    k, b = 3, 4
    ranks = launch_local(sgd_steps, 2, (k, b), threads_per_proc=1)
    single = sgd_steps(k, b)
    assert max_diff(ranks[0], ranks[1]) == 0.0  # DDP keeps the replicas identical
    assert max_diff(ranks[0], single) < 1e-6
    # the comparison is sensitive: training on rank 0's halves alone ends elsewhere
    assert max_diff(sgd_steps(k, b, take=b // 2), single) > 1e-4


def test_local_ddp_training_two_ranks(learnable, make_config, tmp_path):
    cfg = make_config(learnable.root, tmp_path / "ddp", nproc=2, epochs=1,
                      max_steps_per_epoch=2)
    result = train(cfg)
    ranks = result["ranks"]
    assert result["world_size"] == 2 and [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
    pids = {r["pid"] for r in ranks}
    assert len(pids) == 2 and os.getpid() not in pids
    # each rank took 2 steps of batch_size / nproc = 2 patches
    assert [r["train_rows"] for r in ranks] == [4, 4]
    assert result["history"][0]["train_samples"] == 8
    # validation: every patch exactly once, spread over both ranks
    n_val = len(learnable.ids["validation"])
    assert sum(r["val_rows"] for r in ranks) == n_val and all(r["val_rows"] for r in ranks)
    assert result["history"][0]["val"]["n_samples"] == n_val
    run = tmp_path / "ddp"
    assert (run / "checkpoints/last.pt").is_file() and (run / "checkpoints/best.pt").is_file()
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 1


def test_named_errors_cross_process_boundaries(learnable, make_config, tmp_path):
    cfg = make_config(learnable.root, tmp_path / "bad", nproc=2,
                      weights=str(tmp_path / "missing.pt"))
    with pytest.raises(WeightsUnavailableError, match="missing.pt"):
        train(cfg)
    # TorchDistributor reports a task failure as text holding the task's last output lines
    text = ("TorchDistributor failed during training. The last 100 lines of the task output "
            "are included below: [rank0]: Traceback ...\n"
            + ERROR_MARK + json.dumps({"type": "IncompleteDatasetError", "message": "no _SUCCESS"})
            + "\n")
    with pytest.raises(IncompleteDatasetError, match="no _SUCCESS"):
        raise_from_marker(text, RuntimeError(text))
    raise_from_marker("no marker here", RuntimeError())  # nothing to re-raise


def _fail_on_rank_1() -> int:
    if context_from_env().rank == 1:
        raise ZeroDivisionError("rank 1 broke")
    return 0


def test_unnamed_error_becomes_distributed_training_error():
    with pytest.raises(DistributedTrainingError, match="rank 1 of 2 failed with ZeroDivisionError"):
        launch_local(_fail_on_rank_1, 2, threads_per_proc=1)


def test_the_task_launcher_shortens_torchruns_exit_barrier():
    """The agents of bigearthnet.train.torchrun wait 30 s for each other, torch's wait 300 s."""
    probe = textwrap.dedent("""
        from torch.distributed.elastic.agent.server.api import WorkerSpec
        from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
        from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
        from bigearthnet.train.torchrun import short_exit_barrier
        spec = WorkerSpec(role="t", local_world_size=1, rdzv_handler=None, entrypoint="python")
        before = LocalElasticAgent(spec, DefaultLogsSpecs())._exit_barrier_timeout
        short_exit_barrier()
        short_exit_barrier()  # idempotent
        after = LocalElasticAgent(spec, DefaultLogsSpecs())._exit_barrier_timeout
        print(before, after)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.split()
    assert [float(x) for x in out] == [300.0, 30.0]


DRIVER = textwrap.dedent("""
    import json, sys
    from bigearthnet.train.config import TrainConfig
    from bigearthnet.pipeline import train_model
    result = train_model(TrainConfig.model_validate_json(sys.argv[1]))
    print("RESULT " + json.dumps({k: result[k] for k in ("ranks", "world_size", "history")}))
""")


@pytest.mark.cluster
@pytest.mark.spark
def test_torch_distributor_on_standalone_cluster(learnable, make_config, tmp_path):
    """TorchDistributor(local_mode=False) runs the training as 2 barrier tasks on 2 workers."""
    from bigearthnet.spark.cluster import standalone_cluster

    logs = tmp_path / "cluster"
    with standalone_cluster(workers=2, cores_per_worker=1, memory_per_worker="2g",
                            log_dir=logs) as url:
        cfg = make_config(learnable.root, tmp_path / "spark_run", nproc=2, spark=True,
                          spark_master=url, epochs=1, max_steps_per_epoch=2)
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
               "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
        proc = subprocess.run([sys.executable, "-c", DRIVER, cfg.model_dump_json()], check=False,
                              capture_output=True, text=True, env=env, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    result = json.loads(line.removeprefix("RESULT "))
    ranks = result["ranks"]
    assert result["world_size"] == 2 and [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["backend"] == "gloo" for r in ranks)
    assert len({r["pid"] for r in ranks}) == 2
    assert [r["train_rows"] for r in ranks] == [4, 4]
    n_val = len(learnable.ids["validation"])
    assert sum(r["val_rows"] for r in ranks) == n_val
    assert result["history"][0]["val"]["n_samples"] == n_val
    # each rank ran inside an executor (its working folder) of a different worker
    workers = sorted(Path(r["cwd"]).relative_to(logs).parts[0] for r in ranks)
    assert workers == ["work-0", "work-1"], [r["cwd"] for r in ranks]
    run = tmp_path / "spark_run"
    assert (run / "checkpoints/last.pt").is_file()
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 1
    # the training ran in the executors' processes, not in the driver
    assert "Starting executor ID driver" not in proc.stderr
    # both tasks started torchrun through our launcher (30 s exit barrier, not torch's 300 s)
    launched = proc.stdout + proc.stderr
    assert launched.count("bigearthnet.train.torchrun: torch.distributed.run (exit barrier 30 s)") == 2
    assert Path(run / "result.json").is_file()
