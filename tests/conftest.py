"""Shared fixtures: one local Spark session per test session and small synthetic worlds."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

T29UPU = "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319"
T33UUP = "S2A_MSIL2A_20170613T101031_N0205_R022_T33UUP_20170613T101608"
# Same datatake, two tiles: their v1 names collide.
T29UPV = "S2A_MSIL2A_20170717T113321_N0205_R080_T29UPV_20170717T113319"
T29UPA = "S2A_MSIL2A_20170717T113321_N0205_R080_T29UPA_20170717T113319"


@pytest.fixture
def spark():
    """The shared local[2] Spark session (restarted only if a test switched masters)."""
    from bigearthnet.config import SparkConfig
    from bigearthnet.spark.session import get_session

    return get_session(SparkConfig(master="local[2]"))


def synth_world(out: Path, products: list[str], size_px: int, fmt: str = "jp2", seed: int = 0,
                conditions: dict | None = None) -> Path:
    """Write a synthetic world with the package's own generator."""
    from bigearthnet.synth import SynthConfig, synthesize

    synthesize(SynthConfig(products=products, size_px=size_px, format=fmt, seed=seed,
                           conditions=conditions or {}), out)
    return out


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


def copy_products(world: Path, dest: Path) -> Path:
    """A writable copy of a world's products folder (for corrupting inputs)."""
    shutil.copytree(world / "products", dest)
    return dest
