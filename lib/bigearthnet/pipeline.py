"""``bigearthnet run``: the main job on the embedded default.

synth a world of ≥ 4 products → build the dataset → train S-CNN-RGB, S-CNN-All and the frozen
Inception baseline for a few epochs → evaluate each on the test split → ``W/report/``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from pydantic import Field

from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.configbase import StrictModel
from bigearthnet.train.config import TrackingConfig, TrainConfig
from bigearthnet.train.registry import MODEL_NAMES, MODELS

log = logging.getLogger(__name__)

DEFAULT_PRODUCTS = [
    "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319",  # Ireland, June
    "S2A_MSIL2A_20170613T101031_N0205_R022_T33UUP_20170613T101608",  # Austria, June
    "S2A_MSIL2A_20170818T103021_N0205_R108_T32TMT_20170818T103407",  # Switzerland, August
    "S2B_MSIL2A_20180204T094159_N0206_R036_T35VNJ_20180204T114851",  # Finland, February
]


class RunConfig(StrictModel):
    """Configuration of ``bigearthnet run``."""

    workdir: str = "demo"
    products: list[str] = Field(default_factory=lambda: list(DEFAULT_PRODUCTS), min_length=4)
    size_px: int = Field(1440, description="tile side of the synthetic products (10 m pixels)")
    format: str = "jp2"
    seed: int = 0
    label_rule: str = "v1"
    label_set: str = "43"
    models: list[str] = Field(default_factory=lambda: list(MODEL_NAMES))
    epochs: dict[str, int] = Field(
        default_factory=lambda: {name: spec.demo_epochs for name, spec in MODELS.items()})
    # A few hundred training patches and a few minutes of CPU: small batches and a larger
    # step than conf/paper.yaml's 0.01, which stays on the class-frequency plateau this short.
    batch_size: int = 16
    lr: float = 0.1
    weights: str | None = Field(None, description="Inception weights: None, 'imagenet' or a file")
    overwrite: bool = True
    spark: SparkConfig = Field(default_factory=SparkConfig)
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig,
        description="MLflow: one run per model (default local store: WORKDIR/mlruns)")
    delta: bool = Field(False, description="build the dataset with Delta tables too")


def train_model(cfg: TrainConfig | dict) -> dict:
    """Train one model: in this process, with local DDP, or through TorchDistributor (``spark``).

    The one place that picks the launcher, so training itself never imports Spark.
    """
    from bigearthnet.train.launch import train

    if not isinstance(cfg, TrainConfig):
        cfg = TrainConfig.model_validate(cfg)
    if cfg.spark:
        from bigearthnet.spark.torch_distributor import run_torch_distributor

        return train(cfg, launcher=run_torch_distributor)
    return train(cfg)


def run(cfg: RunConfig) -> Path:
    """Run the whole job; return the path of ``report.md``."""
    from bigearthnet.report.evaluation import evaluate_run
    from bigearthnet.report.markdown import write_report
    from bigearthnet.spark.build import run_build
    from bigearthnet.synth import SynthConfig, synthesize

    work = Path(cfg.workdir).resolve()
    if work.exists() and cfg.overwrite:
        for sub in ("world", "dataset", "runs", "report"):
            shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "run_config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
    timings: dict[str, float] = {}

    t = time.perf_counter()
    synthesize(SynthConfig(products=cfg.products, size_px=cfg.size_px, format=cfg.format,
                           seed=cfg.seed), work / "world")
    timings["synth_s"] = time.perf_counter() - t
    log.info("synthetic world in %s (%.1f s)", work / "world", timings["synth_s"])

    t = time.perf_counter()
    manifest = run_build(BuildConfig(
        products=str(work / "world" / "products"), clc=str(work / "world" / "clc" / "clc2018.gpkg"),
        out=str(work / "dataset"), overwrite=True, label_rule=cfg.label_rule, split_seed=cfg.seed,
        spark=cfg.spark, delta=cfg.delta))
    timings["build_s"] = time.perf_counter() - t
    log.info("dataset in %s: %s", work / "dataset", manifest["counts"])

    tracking = cfg.tracking
    if tracking.mlflow and tracking.uri is None:  # the local store in WORKDIR/mlruns
        from bigearthnet.train.tracking import resolve_uri

        tracking = tracking.model_copy(update={"uri": resolve_uri(tracking, work / "runs")})
    runs: dict[str, Path] = {}
    for model in cfg.models:
        t = time.perf_counter()
        run_dir = work / "runs" / model
        train_model(TrainConfig(
            dataset=str(work / "dataset"), out=str(run_dir), model=model, label_set=cfg.label_set,
            epochs=cfg.epochs.get(model, 3), batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
            weights=cfg.weights if MODELS[model].pretrained else None, overwrite=True,
            tracking=tracking,
        ))
        evaluate_run(run_dir, split="test")
        runs[model] = run_dir
        timings[f"{model}_s"] = time.perf_counter() - t
        log.info("%s trained and evaluated (%.1f s)", model, timings[f"{model}_s"])
    report = write_report(work, runs, split="test")
    if tracking.mlflow:
        from bigearthnet.train.tracking import log_report

        log_report(runs, report)
    (work / "report" / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return report
