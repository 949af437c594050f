"""``bigearthnet discover``: the products a scheduled run has to add (the DAG's first task)."""

from __future__ import annotations

import json
import shutil

import pytest

from bigearthnet.cli import main
from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.errors import IncompleteDatasetError
from bigearthnet.spark.build import run_build
from bigearthnet.stages.discover import new_products
from worlds import T29UPU, T33UUP

pytestmark = pytest.mark.spark


def test_new_products_against_a_dataset(world_jp2, tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copytree(world_jp2 / "products" / f"{T29UPU}.SAFE", one / f"{T29UPU}.SAFE")
    ds = tmp_path / "ds"
    products = str(world_jp2 / "products")
    # no dataset yet: everything is new
    first = new_products(products, ds)
    assert first["dataset_exists"] is False
    assert sorted(first["new"]) == sorted([T29UPU, T33UUP]) and first["present"] == []
    run_build(BuildConfig(products=str(one), clc=str(world_jp2 / "clc" / "clc2018.gpkg"),
                          out=str(ds), spark=SparkConfig(master="local[2]")))
    assert main(["discover", "--products", products, "--dataset", str(ds)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dataset_exists"] is True
    assert doc["new"] == [T33UUP] and doc["present"] == [T29UPU] and doc["unresolved"] == []
    # a folder that is not a complete dataset is named, not taken for "no dataset"
    (ds / "_SUCCESS").unlink()
    with pytest.raises(IncompleteDatasetError, match="_SUCCESS"):
        new_products(products, ds)
    assert main(["discover", "--products", products, "--dataset", str(ds)]) == 2
    assert "IncompleteDatasetError" in capsys.readouterr().err
