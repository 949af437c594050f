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


def resign(products: Path) -> Path:
    """Rewrite the checksums of every product under ``products`` (or of the product
    ``products``, a SAFE or STAC item folder) for the files as they are now
    (``manifest.safe`` of SAFE folders, ``file:checksum``/``file:size`` of STAC assets whose file
    exists): a product its producer wrote wrong, rather than one damaged after it was written."""
    import json

    from bigearthnet.errors import ProductNameError
    from bigearthnet.sentinel2.checksums import file_multihash
    from bigearthnet.sentinel2.naming import parse_product_name
    from bigearthnet.synth.writers import safe_manifest_xml

    safes = [products] if products.name.endswith(".SAFE") else sorted(products.rglob("*.SAFE"))
    for safe in safes:
        if (safe / "manifest.safe").exists():
            try:
                name = parse_product_name(safe.name)
            except ProductNameError:
                continue  # renamed: its files are as written
            (safe / "manifest.safe").write_text(safe_manifest_xml(name, safe))
    for item_path in sorted(products.rglob("*.json")):
        item = json.loads(item_path.read_text())
        for asset in item.get("assets", {}).values():
            target = item_path.parent / asset.get("href", "")
            if "file:checksum" in asset and target.is_file():
                asset["file:checksum"] = file_multihash(target)
                asset["file:size"] = target.stat().st_size
        item_path.write_text(json.dumps(item, indent=2) + "\n")
    return products
