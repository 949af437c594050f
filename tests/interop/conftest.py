"""Shared fixtures of the interop tests: the labeled build of ``world_jp2`` (two UTM zones, all
three splits), its reBEN and v1 exports, and the cached TorchGeo venv."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import torchgeo_env
from interop_helpers import export


@pytest.fixture(scope="session")
def torchgeo_python() -> Path:
    """The interpreter of the cached venv holding TorchGeo 0.8.1 (built on first use)."""
    try:
        return torchgeo_env.torchgeo_python()
    except torchgeo_env.TorchGeoUnavailable as exc:
        pytest.skip(f"cannot build the TorchGeo venv: {exc}")


@pytest.fixture(scope="session")
def built(labeled_jp2) -> Path:
    """The labeled build of ``world_jp2`` (tests/conftest.py) the interop tests export."""
    return labeled_jp2


@pytest.fixture(scope="session")
def reben_export(built, tmp_path_factory) -> Path:
    """The build in the reBEN layout (3 patches per task: several tasks)."""
    return export(built, "reben", tmp_path_factory.mktemp("reben") / "export")


@pytest.fixture(scope="session")
def v1_export(built, tmp_path_factory) -> Path:
    """The build in the v1 layout."""
    return export(built, "v1", tmp_path_factory.mktemp("v1") / "export")
