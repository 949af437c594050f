"""The library side of the Databricks notebooks in ``notebooks/`` (Databricks source format).

The notebooks hold no logic: each cell calls one function here with the runtime's
``dbutils.widgets`` (and ``display``). Widgets are declared from the config models (dropdown
choices come from their ``Literal`` types), read as strings and resolved like command-line
options: defaults < the YAML file named by the ``config`` widget < the other widgets. So a
notebook run by hand, a job task's ``base_parameters`` (``databricks.yml``) and the CLI build the
same configs.

==================  ====================================================================
notebook            calls
==================  ====================================================================
01_build_dataset    :func:`declare`, :func:`build_dataset`, :func:`counts_table`,
                    :func:`split_counts` (the Delta table, read with Spark SQL)
02_train            :func:`declare`, :func:`train`, :func:`history_table`
03_evaluate_report  :func:`declare`, :func:`evaluate_and_report`, :func:`show_report`
==================  ====================================================================
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigearthnet.config import BuildConfig, resolve
from bigearthnet.errors import ConfigError
from bigearthnet.train.config import TrainConfig
from bigearthnet.train.registry import MODEL_NAMES

__all__ = ["NOTEBOOKS", "Widget", "build_dataset", "counts_table", "declare",
           "evaluate_and_report", "history_table", "show_report", "split_counts", "train"]

BOOL = ("true", "false")


def _choices(model: type, key: str) -> tuple[str, ...]:
    return tuple(typing.get_args(model.model_fields[key].annotation))


@dataclass(frozen=True)
class Widget:
    """One notebook widget.

    Attributes:
        name: the widget (and job parameter) name.
        default: its default value.
        label: what the notebook shows.
        choices: a dropdown's values (``None``: a text box).
    """

    name: str
    default: str
    label: str
    choices: tuple[str, ...] | None = None


NOTEBOOKS: dict[str, tuple[Widget, ...]] = {
    "01_build_dataset": (
        Widget("products", "", "Sentinel-2 L2A products (folder of SAFE dirs/zips, STAC items)"),
        Widget("clc", "", "CORINE Land Cover 2018 GeoPackage"),
        Widget("output", "", "Dataset folder to write"),
        Widget("label_rule", "v1", "Label rule", _choices(BuildConfig, "label_rule")),
        Widget("engine", "sedonadb", "Label engine", _choices(BuildConfig, "label_engine")),
        Widget("split", "random", "Split", _choices(BuildConfig, "split")),
        Widget("mode", "create", "If the dataset exists", ("create", "overwrite", "append")),
        Widget("delta", "true", "Also as Delta tables", BOOL),
        Widget("config", "", "YAML with BuildConfig keys (optional)"),
    ),
    "02_train": (
        Widget("dataset", "", "Dataset folder (from 01_build_dataset)"),
        Widget("run_dir", "", "Run folder to write"),
        Widget("model", "s-cnn-all", "Model", MODEL_NAMES),
        Widget("epochs", "100", "Epochs"),
        Widget("batch_size", "64", "Global batch size"),
        Widget("num_processes", "1", "TorchDistributor processes (one per GPU)"),
        Widget("use_gpu", "true", "Train on GPUs", BOOL),
        Widget("mlflow", "true", "Track in MLflow", BOOL),
        Widget("config", "", "YAML with TrainConfig keys (e.g. conf/paper.yaml; optional)"),
    ),
    "03_evaluate_report": (
        Widget("run_dirs", "", "Run folders to evaluate (comma-separated, one per model)"),
        Widget("split", "test", "Split", ("test", "validation", "train")),
        Widget("report_dir", "", "Work folder: the report goes to <report_dir>/report"),
    ),
}
"""The widgets of each notebook, in display order."""


def declare(widgets: Any, notebook: str) -> None:
    """Create a notebook's widgets (``dbutils.widgets.text`` / ``dropdown``).

    Args:
        widgets: ``dbutils.widgets``.
        notebook: a key of :data:`NOTEBOOKS`.
    """
    for w in NOTEBOOKS[notebook]:
        if w.choices is None:
            widgets.text(w.name, w.default, w.label)
        else:
            widgets.dropdown(w.name, w.default, list(w.choices), w.label)


def _values(widgets: Any, notebook: str, required: tuple[str, ...] = ()) -> dict[str, str]:
    values = {w.name: str(widgets.get(w.name)).strip() for w in NOTEBOOKS[notebook]}
    for w in NOTEBOOKS[notebook]:
        if w.choices is not None and values[w.name] not in w.choices:
            raise ConfigError(f"widget {w.name!r} of {notebook} is {values[w.name]!r}; "
                              f"choose one of {list(w.choices)}")
    empty = [name for name in required if not values[name]]
    if empty:
        raise ConfigError(f"{notebook}: fill in the widget(s) {empty} (or pass them as the job "
                          "task's parameters)")
    return values


# --------------------------------------------------------------------------------------------
# 01_build_dataset


def build_config(widgets: Any) -> BuildConfig:
    """The :class:`~bigearthnet.config.BuildConfig` of the ``01_build_dataset`` widgets."""
    v = _values(widgets, "01_build_dataset", required=("products", "output"))
    return resolve(BuildConfig, v["config"] or None, {
        "products": v["products"], "clc": v["clc"] or None, "out": v["output"],
        "label_rule": v["label_rule"], "label_engine": v["engine"], "split": v["split"],
        "overwrite": True if v["mode"] == "overwrite" else None,
        "append": True if v["mode"] == "append" else None,
        "delta": v["delta"] == "true",
    })


def build_dataset(widgets: Any) -> dict[str, Any]:
    """Build the dataset the widgets describe (:func:`bigearthnet.spark.build.run_build`, on the
    notebook's Spark session); return its manifest."""
    from bigearthnet.spark.build import run_build

    return run_build(build_config(widgets))


def counts_table(manifest: dict[str, Any]):
    """The manifest's counts as a two-column pandas DataFrame (``count``, ``value``)."""
    import pandas as pd

    return pd.DataFrame(sorted(manifest["counts"].items()), columns=["count", "value"])


def split_counts(widgets: Any):
    """Patches per split, from the dataset's Delta patch table with Spark SQL (a Spark
    DataFrame); without Delta tables, from ``metadata.parquet``."""
    from bigearthnet.dataset.delta import delta_tables
    from bigearthnet.spark.delta import read_delta
    from bigearthnet.spark.session import get_session

    cfg = build_config(widgets)
    spark = get_session(cfg.spark)
    tables = delta_tables(cfg.out)
    if "patches" in tables:
        read_delta(spark, tables["patches"]).createOrReplaceTempView("bigearthnet_patches")
        return spark.sql("SELECT split, count(*) AS patches FROM bigearthnet_patches "
                         "GROUP BY split ORDER BY split")
    return (spark.read.parquet(str(Path(cfg.out) / "metadata.parquet"))
            .groupBy("split").count().withColumnRenamed("count", "patches").orderBy("split"))


# --------------------------------------------------------------------------------------------
# 02_train


def train_config(widgets: Any) -> TrainConfig:
    """The :class:`~bigearthnet.train.config.TrainConfig` of the ``02_train`` widgets: training
    through TorchDistributor (``spark: true``) with ``num_processes`` processes, on GPUs when
    ``use_gpu``."""
    v = _values(widgets, "02_train", required=("dataset", "run_dir"))
    return resolve(TrainConfig, v["config"] or None, {
        "dataset": v["dataset"], "out": v["run_dir"], "model": v["model"],
        "epochs": v["epochs"], "batch_size": v["batch_size"], "nproc": v["num_processes"],
        "spark": True, "device": "cuda" if v["use_gpu"] == "true" else "cpu",
        "tracking": {"mlflow": v["mlflow"] == "true"}, "overwrite": True,
    })


def train(widgets: Any) -> dict[str, Any]:
    """Train as the widgets say (:func:`bigearthnet.pipeline.train_model`); return the result."""
    from bigearthnet.pipeline import train_model

    return train_model(train_config(widgets))


def history_table(result: dict[str, Any]):
    """Per-epoch training loss and validation scores of a training result (pandas)."""
    import pandas as pd

    rows = [{"epoch": r["epoch"], "train_loss": r["train_loss"], "best": r["best"],
             **{f"val_{k}": r["val"]["samples"][k] for k in ("precision", "recall", "f1", "f2")},
             "img_per_s": r["img_per_s"]} for r in result["history"]]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# 03_evaluate_report


@dataclass
class Report:
    """What ``03_evaluate_report`` shows.

    Attributes:
        report: ``report.md``.
        table: Table 4 as a pandas DataFrame (ours and the paper's, per model).
        metrics: per-model evaluation documents (``metrics.json``).
        plots: PNG files to show, in order.
    """

    report: Path
    table: Any
    metrics: dict[str, dict[str, Any]]
    plots: list[Path] = field(default_factory=list)


def evaluate_and_report(widgets: Any) -> Report:
    """Evaluate every run of the ``run_dirs`` widget (logging to MLflow when the run was
    tracked), write the Table-4 report and attach it to the tracked runs."""
    import pandas as pd

    from bigearthnet.report.evaluation import evaluate_run
    from bigearthnet.report.markdown import PAPER_TABLE4, report_from_runs
    from bigearthnet.train.tracking import log_report

    v = _values(widgets, "03_evaluate_report", required=("run_dirs", "report_dir"))
    run_dirs = [Path(p.strip()) for p in v["run_dirs"].split(",") if p.strip()]
    metrics = {}
    for run_dir in run_dirs:
        doc = evaluate_run(run_dir, split=v["split"])
        metrics[doc["model"]] = doc
    report = report_from_runs(v["report_dir"], run_dirs, split=v["split"])
    log_report({m: Path(d) for m, d in zip(metrics, run_dirs, strict=True)}, report)
    summary = json.loads((report.parent / "summary.json").read_text())["models"]
    rows = [{"model": m, **{k: s[k] for k in ("precision", "recall", "f1", "f2")},
             **{f"paper_{k}": PAPER_TABLE4[m][k] for k in ("precision", "recall", "f1", "f2")}}
            for m, s in summary.items()]
    plots = [Path(doc["files"][name]) for doc in metrics.values()
             for name in ("per_class_f1.png", "training_curves.png", "examples.png")
             if name in doc["files"]]
    return Report(report=report, table=pd.DataFrame(rows), metrics=metrics, plots=plots)


def show_report(report: Report, display: Callable[[Any], Any]) -> None:
    """Show a report with the notebook's ``display``: Table 4, then every plot as a figure."""
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    display(report.table)
    for path in report.plots:
        image = mpimg.imread(path)
        fig, ax = plt.subplots(figsize=(image.shape[1] / 100, image.shape[0] / 100), dpi=100)
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(path.name)
        display(fig)
        plt.close(fig)
