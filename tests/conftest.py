"""Shared fixtures: the local Spark session and small synthetic worlds."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from worlds import T29UPU, T33UUP, synth_world


@pytest.fixture
def spark():
    """The shared local[2] Spark session (restarted only if a test switched masters)."""
    from bigearthnet.config import SparkConfig
    from bigearthnet.spark.session import get_session

    return get_session(SparkConfig(master="local[2]"))


@pytest.fixture(scope="session")
def world_jp2(tmp_path_factory) -> Path:
    """Two real-named products (T29UPU, T33UUP), 240 px, SAFE/JP2."""
    return synth_world(tmp_path_factory.mktemp("world_jp2"), [T29UPU, T33UUP], 240, "jp2")


@pytest.fixture(scope="session")
def world_cog(tmp_path_factory) -> Path:
    """The same world as ``world_jp2`` as COGs + STAC items."""
    return synth_world(tmp_path_factory.mktemp("world_cog"), [T29UPU, T33UUP], 240, "cog")


@pytest.fixture(scope="session")
def world_zip(tmp_path_factory, world_jp2) -> Path:
    """The JP2 world with each SAFE zipped (as ESA distributes them)."""
    out = tmp_path_factory.mktemp("world_zip") / "products"
    out.mkdir()
    for safe in sorted((world_jp2 / "products").glob("*.SAFE")):
        with zipfile.ZipFile(out / f"{safe.stem}.zip", "w", zipfile.ZIP_STORED) as zf:
            for f in sorted(safe.rglob("*")):
                zf.write(f, f.relative_to(safe.parent).as_posix())
    return out.parent


LABELED_JP2_SPLIT_SEED = 3
"""Seed of the random split that gives the 8 patches of ``world_jp2`` all three splits (4/2/2)."""


@pytest.fixture(scope="session")
def labeled_jp2(world_jp2, tmp_path_factory) -> Path:
    """A real labeled ``bigearthnet build`` of ``world_jp2`` (v1 rule, reference maps, random
    split 4/2/2, two UTM zones), shared by the interop tests (Petastorm, TorchGeo, round trips)."""
    from bigearthnet.config import BuildConfig, SparkConfig
    from bigearthnet.spark.build import run_build

    out = tmp_path_factory.mktemp("labeled_jp2") / "ds"
    run_build(BuildConfig(products=str(world_jp2 / "products"),
                          clc=str(world_jp2 / "clc" / "clc2018.gpkg"), out=str(out),
                          split_seed=LABELED_JP2_SPLIT_SEED, spark=SparkConfig(master="local[2]")))
    return out
