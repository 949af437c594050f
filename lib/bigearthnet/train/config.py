"""Configuration of ``bigearthnet train`` (one pydantic model, unknown keys rejected).

Resolve it like every job config: defaults < YAML file (``conf/paper.yaml``) < command-line
options, with :func:`bigearthnet.config.resolve`::

    cfg = resolve(TrainConfig, "conf/paper.yaml", {"dataset": ..., "out": ..., "model": ...})

The resolved config is saved as ``RUN/config.json`` and ``RUN/config.yaml``.

**Batch size.** ``batch_size`` is the *global* batch: with ``nproc`` processes each rank takes
``batch_size / nproc`` rows per step (it must divide evenly). DDP averages the ranks' gradients,
so one step sees the same number of samples (and, for the same samples, takes the same step)
whatever the number of processes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from bigearthnet.configbase import StrictModel
from bigearthnet.train.metrics import DEFAULT_THRESHOLD
from bigearthnet.train.models import DEFAULT_FC_WIDTH
from bigearthnet.train.registry import MODEL_NAMES, MODELS

__all__ = ["RESUMABLE_CHANGES", "TrackingConfig", "TrainConfig"]

DEFAULT_EXPERIMENT = "bigearthnet"
"""The MLflow experiment of tracked runs when none is named (outside Databricks)."""

RESUMABLE_CHANGES: frozenset[str] = frozenset({"epochs", "resume", "overwrite", "progress",
                                               "tracking", "dist_timeout_s"})
"""Keys that may differ between a run and its ``--resume``; any other change is refused."""


class TrackingConfig(StrictModel):
    """Experiment tracking with MLflow (:mod:`bigearthnet.train.tracking`)."""

    mlflow: bool = Field(False, description="log params, metrics, the model and artifacts to MLflow")
    uri: str | None = Field(
        None, description="tracking URI; default: MLFLOW_TRACKING_URI or the Databricks "
        "workspace when set, else a local SQLite store <parent of the run folder>/mlruns"
    )
    experiment: str | None = Field(
        None, description=f"experiment name; default {DEFAULT_EXPERIMENT!r} (on Databricks: the "
        "notebook's experiment; elsewhere a workspace path such as /Users/<me>/bigearthnet)"
    )
    run_name: str | None = Field(None, description="MLflow run name; default: <model>/<run folder>")


class TrainConfig(StrictModel):
    """Configuration of one training run (one model on one dataset)."""

    S3_FIELDS: ClassVar[frozenset[str]] = frozenset({"dataset"})

    dataset: str = Field(..., description="dataset folder written by `bigearthnet build`")
    out: str = Field(..., description="run folder to create (config, logs, checkpoints, eval)")
    model: Literal[MODEL_NAMES] = Field(
        "s-cnn-all", description=" | ".join(f"{n} ({s.display})" for n, s in MODELS.items())
    )
    label_set: Literal["43", "19"] = Field("43", description="43 (paper) or 19 (reBEN) classes")
    epochs: int = Field(100, ge=1, description="total number of epochs (the paper: 100)")
    batch_size: int = Field(
        64, ge=1, description="global batch size, split evenly over the nproc processes"
    )
    eval_batch_size: int | None = Field(
        None, ge=1, description="per-process batch size for validation/test (default: batch_size)"
    )
    lr: float = Field(0.01, gt=0.0, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(0.0, ge=0.0, description="SGD L2 weight decay")
    seed: int = Field(0, ge=0, description="seeds model init and the loader's shuffling")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank")
    buffer_size: int = Field(1024, ge=0, description="rows in the loader's shuffle buffer")
    nproc: int = Field(1, ge=1, description="DDP processes (local) or TorchDistributor tasks")
    spark: bool = Field(
        False, description="run the nproc processes through pyspark's TorchDistributor"
    )
    spark_master: str | None = Field(
        None, description="Spark master for spark=true (default: the active/spark-submit one)"
    )
    dist_timeout_s: float = Field(
        300.0, gt=0.0, le=86400.0,
        description="seconds a DDP rank waits in a collective (or for the group to form) before "
        "it fails; bounds the wait of the survivors when a rank dies (torch's default: 30 min)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when available, else CPU"
    )
    weights: str | None = Field(
        None,
        description="inception-v3: 'imagenet' (local torch hub cache only) or a state_dict "
        "file; S-CNN: null (random init, the paper) or a state_dict file",
    )
    fc_width: int = Field(DEFAULT_FC_WIDTH, ge=1, description="width of the FC layer")
    threshold: float = Field(
        DEFAULT_THRESHOLD, ge=0.0, le=1.0, description="a class is predicted at p >= threshold"
    )
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="stop each epoch after this many steps (smoke tests, benchmarks)"
    )
    deterministic: bool = Field(
        True, description="torch.use_deterministic_algorithms during the run (warn-only on CUDA)"
    )
    progress: bool = Field(True, description="tqdm progress bar on rank 0 (only on a tty)")
    resume: bool = Field(False, description="continue the run in `out` from checkpoints/last.pt")
    overwrite: bool = Field(False, description="delete an existing run folder `out` first")
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="MLflow tracking (bigearthnet.train.tracking)"
    )

    @field_validator("label_set", mode="before")
    @classmethod
    def _label_set_as_str(cls, value: Any) -> Any:
        # YAML and CLIs give 43/19 as integers
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.batch_size % self.nproc:
            raise ValueError(
                f"batch_size {self.batch_size} is the global batch and must be divisible by "
                f"nproc {self.nproc}"
            )
        if self.weights == "imagenet" and not MODELS[self.model].pretrained:
            raise ValueError(
                f"weights 'imagenet' only applies to inception-v3; {self.model} is trained from "
                "scratch (weights: null)"
            )
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        return self

    @property
    def per_rank_batch_size(self) -> int:
        """Rows per step on each of the ``nproc`` processes."""
        return self.batch_size // self.nproc

    @property
    def per_rank_eval_batch_size(self) -> int:
        """Rows per validation/test batch on each process."""
        return self.eval_batch_size or self.per_rank_batch_size
