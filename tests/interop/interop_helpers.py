"""Helpers of the interop tests (imported by them and their conftest)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as pads

from bigearthnet.config import ExportConfig, SparkConfig
from bigearthnet.dataset.schema import labeled_schema

SPARK = SparkConfig(master="local[2]")


def export(dataset: Path, fmt: str, out: Path) -> Path:
    """``bigearthnet export DATASET --format FMT --out OUT``."""
    from bigearthnet.spark.export import run_export

    run_export(ExportConfig(dataset=str(dataset), format=fmt, out=str(out), patches_per_task=3,
                            spark=SPARK))
    return out


def patch_rows(dataset: Path) -> dict[str, dict]:
    """Every patch of a dataset by ``patch_id``: its columns (tensors decoded) and ``split``,
    read with pyarrow straight from the files."""
    table = pads.dataset(dataset / "patches", format="parquet", partitioning="hive").to_table()
    specs = {c.name: c for c in labeled_schema(True).tensors}
    rows = {}
    for i, rec in enumerate(table.to_pylist()):
        for name, spec in specs.items():
            if name in table.column_names and rec[name] is not None:
                rec[name] = spec.decode(table[name].slice(i, 1))[0]
        rows[rec["patch_id"]] = rec
    return rows
