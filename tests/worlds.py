"""Shared test helpers: real product names and small synthetic worlds (imported by tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

T29UPU = "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319"
T33UUP = "S2A_MSIL2A_20170613T101031_N0205_R022_T33UUP_20170613T101608"
# Same datatake, two tiles: their v1 names collide.
T29UPV = "S2A_MSIL2A_20170717T113321_N0205_R080_T29UPV_20170717T113319"
T29UPA = "S2A_MSIL2A_20170717T113321_N0205_R080_T29UPA_20170717T113319"


def synth_world(out: Path, products: list[str], size_px: int, fmt: str = "jp2", seed: int = 0,
                conditions: dict | None = None) -> Path:
    """Write a synthetic world with the package's own generator."""
    from bigearthnet.synth import SynthConfig, synthesize

    synthesize(SynthConfig(products=products, size_px=size_px, format=fmt, seed=seed,
                           conditions=conditions or {}), out)
    return out


def copy_products(world: Path, dest: Path) -> Path:
    """A writable copy of a world's products folder (for corrupting inputs)."""
    shutil.copytree(world / "products", dest)
    return dest
