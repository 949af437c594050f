"""Shared fixtures of the interop tests: one labeled build of ``world_jp2`` (two UTM zones,
all three splits), its reBEN and v1 exports, and the cached TorchGeo venv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import torchgeo_env
from interop_helpers import SPARK, export

from bigearthnet.config import BuildConfig

SPLIT_SEED = 3
"""Seed of the random split that gives the 8 patches of ``world_jp2`` all three splits (4/2/2)."""


@pytest.fixture(scope="session")
def torchgeo_python() -> Path:
    """The interpreter of the cached venv holding TorchGeo 0.8.1 (built on first use)."""
    try:
        return torchgeo_env.torchgeo_python()
    except torchgeo_env.TorchGeoUnavailable as exc:
        pytest.skip(f"cannot build the TorchGeo venv: {exc}")


@pytest.fixture(scope="session")
def built(world_jp2, tmp_path_factory) -> Path:
    """A real labeled ``bigearthnet build`` (v1 rule, reference maps, random split 4/2/2)."""
    from bigearthnet.spark.build import run_build

    out = tmp_path_factory.mktemp("interop") / "ds"
    run_build(BuildConfig(products=str(world_jp2 / "products"),
                          clc=str(world_jp2 / "clc" / "clc2018.gpkg"), out=str(out),
                          split_seed=SPLIT_SEED, spark=SPARK))
    return out


@pytest.fixture(scope="session")
def reben_export(built, tmp_path_factory) -> Path:
    """The build in the reBEN layout (3 patches per task: several tasks)."""
    return export(built, "reben", tmp_path_factory.mktemp("reben") / "export")


@pytest.fixture(scope="session")
def v1_export(built, tmp_path_factory) -> Path:
    """The build in the v1 layout."""
    return export(built, "v1", tmp_path_factory.mktemp("v1") / "export")
