"""The Databricks notebooks in notebooks/, run top to bottom and in order on local Spark.

The only stand-ins are the runtime's ``dbutils.widgets`` (text, dropdown, get) and ``display``;
Spark (with Sedona and Delta), TorchDistributor, torch, MLflow and the files are real.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bigearthnet.notebooks import NOTEBOOKS
from worlds import T29UPU, T33UUP, synth_world

pytestmark = [pytest.mark.slow, pytest.mark.spark]

ROOT = Path(__file__).resolve().parents[2]
HEADER = "# Databricks notebook source"
SEPARATOR = "# COMMAND ----------"


class Widgets:
    """``dbutils.widgets``: values given as job parameters win over the declared defaults."""

    def __init__(self, parameters: dict[str, str]) -> None:
        self.parameters = dict(parameters)
        self.declared: dict[str, str] = {}

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self.declared[name] = self.parameters.get(name, default)

    def dropdown(self, name: str, default: str, choices: list[str], label: str | None = None) -> None:
        assert default in choices, (name, default, choices)
        value = self.parameters.get(name, default)
        assert value in choices, (name, value, choices)
        self.declared[name] = value

    def get(self, name: str) -> str:
        return self.declared[name]  # KeyError, as the runtime fails, for an undeclared widget


class DBUtils:
    def __init__(self, parameters: dict[str, str]) -> None:
        self.widgets = Widgets(parameters)


def cells(path: Path) -> list[str]:
    """The code cells of a Databricks source notebook (``# MAGIC`` cells are markdown)."""
    text = path.read_text()
    assert text.startswith(HEADER + "\n"), f"{path} is not in Databricks source format"
    out = []
    for cell in text.removeprefix(HEADER).split(SEPARATOR):
        lines = [ln for ln in cell.strip().splitlines()]
        if lines and not all(ln.startswith("# MAGIC") for ln in lines):
            out.append("\n".join(lines))
    return out


def run_notebook(name: str, parameters: dict[str, str]) -> list:
    """Run every cell of ``notebooks/<name>.py`` in one namespace; return what was displayed."""
    shown: list = []
    namespace = {"dbutils": DBUtils(parameters), "display": shown.append,
                 "__name__": "__main__"}
    for i, code in enumerate(cells(ROOT / "notebooks" / f"{name}.py")):
        exec(compile(code, f"notebooks/{name}.py[cell {i}]", "exec"), namespace)  # noqa: S102
    return shown


def test_notebooks_hold_no_logic():
    """Cells only import the library and call it: no loops, branches, functions or classes."""
    assert sorted(p.stem for p in (ROOT / "notebooks").glob("*.py")) == sorted(NOTEBOOKS)
    allowed = (ast.Import, ast.ImportFrom, ast.Expr, ast.Assign)
    for name in NOTEBOOKS:
        for code in cells(ROOT / "notebooks" / f"{name}.py"):
            for node in ast.parse(code).body:
                assert isinstance(node, allowed), (name, ast.dump(node)[:80])
                if isinstance(node, (ast.Expr, ast.Assign)):
                    assert isinstance(node.value, ast.Call), (name, ast.unparse(node))
            for node in ast.walk(ast.parse(code)):
                assert not isinstance(node, (ast.Lambda, ast.comprehension, ast.IfExp)), name


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    # 480 px: 16 patches per product, enough for every split of the random 60/20/20.
    return synth_world(tmp_path_factory.mktemp("nb_world"), [T29UPU, T33UUP], 480, "jp2", seed=5)


def test_notebooks_in_order(world, tmp_path):
    import mlflow

    dataset, run_dir, work = tmp_path / "dataset", tmp_path / "runs" / "s-cnn-rgb", tmp_path
    shown = run_notebook("01_build_dataset", {
        "products": str(world / "products"), "clc": str(world / "clc" / "clc2018.gpkg"),
        "output": str(dataset), "engine": "sedona-spark", "delta": "true"})
    counts, splits = shown
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert dict(zip(counts["count"], counts["value"], strict=True)) == manifest["counts"]
    assert manifest["label_engine"] == "sedona-spark" and manifest["delta"]["patches"]["files"] > 0
    by_split = {r.split: r.patches for r in splits.collect()}  # Spark SQL over the Delta table
    expected = pq.read_table(dataset / "metadata.parquet")["split"].value_counts().to_pylist()
    assert by_split == {e["values"]: e["counts"] for e in expected}
    assert set(by_split) == {"train", "validation", "test"}

    (work / "tiny.yaml").write_text("fc_width: 16\nlr: 0.05\nlabel_set: 19\nprogress: false\n"
                                    "buffer_size: 16\n")
    shown = run_notebook("02_train", {
        "dataset": str(dataset), "run_dir": str(run_dir), "model": "s-cnn-rgb", "epochs": "1",
        "batch_size": "4", "num_processes": "2", "use_gpu": "false", "mlflow": "true",
        "config": str(work / "tiny.yaml")})
    (history,) = shown
    assert list(history["epoch"]) == [1]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and len(result["ranks"]) == 2  # two TorchDistributor tasks
    assert history["val_f1"][0] == pytest.approx(result["history"][0]["val"]["samples"]["f1"])

    shown = run_notebook("03_evaluate_report", {"run_dirs": str(run_dir), "report_dir": str(work)})
    table, *figures = shown
    assert list(table["model"]) == ["s-cnn-rgb"]
    summary = json.loads((work / "report" / "summary.json").read_text())
    assert table["f1"][0] == pytest.approx(summary["models"]["s-cnn-rgb"]["f1"])
    assert [f.axes[0].get_title() for f in figures] == \
        ["per_class_f1.png", "training_curves.png", "examples.png"]
    # The run went to MLflow (local store next to the runs): training, evaluation and report.
    ref = json.loads((run_dir / "mlflow.json").read_text())
    run = mlflow.MlflowClient(ref["tracking_uri"]).get_run(ref["run_id"])
    assert run.data.metrics["test_f1"] == pytest.approx(summary["models"]["s-cnn-rgb"]["f1"])
    assert run.data.params["spark"] == "True" and run.data.params["nproc"] == "2"
    arts = {a.path for a in mlflow.MlflowClient(ref["tracking_uri"]).list_artifacts(
        ref["run_id"], "report")}
    assert "report/report.md" in arts


def test_empty_required_widget_is_a_named_error(tmp_path):
    from bigearthnet.errors import ConfigError

    with pytest.raises(ConfigError, match="products"):
        run_notebook("01_build_dataset", {"output": str(tmp_path / "ds")})
