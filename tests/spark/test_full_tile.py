"""A full 10980 px tile: 91 x 91 = 8,281 patches, the last 60 px column and row dropped."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.spark.build import run_build
from worlds import T29UPU, synth_world

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def test_full_size_tile_gives_8281_patches(spark, tmp_path):
    world = synth_world(tmp_path / "w", [T29UPU], 10980, fmt="cog", seed=1)
    manifest = run_build(BuildConfig(products=str(world / "products"), out=str(tmp_path / "ds"),
                                     strip_rows=8, spark=SparkConfig(master="local[2]")))
    assert manifest["counts"]["patches_cut"] == 8281
    (product,) = manifest["products"]
    assert (product["n_cols"], product["n_rows"]) == (91, 91)
    pf = pq.ParquetFile(tmp_path / "ds" / "patches" / f"{T29UPU}.parquet")
    assert pf.metadata.num_rows == 8281
    assert pf.metadata.num_row_groups == 12  # ceil(91 / 8) strips
    rows = pq.read_table(tmp_path / "ds" / "patches" / f"{T29UPU}.parquet",
                         columns=["col", "row"])
    assert max(rows["col"].to_pylist()) == 90 and max(rows["row"].to_pylist()) == 90
