"""Ways to damage real files written by the synth module (tests/faults only).

Each function changes one file in place; none touches anything else. ``resign`` (tests/worlds.py)
then decides whether the damage happened after the product was written (checksums stale) or
whether the producer wrote it so (checksums rewritten for the damaged bytes).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import rasterio


def truncate(path: Path, keep_fraction: float) -> None:
    """Keep the first ``keep_fraction`` of the file (at least 1 byte)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep_fraction))])


def flip(path: Path, offset: int, n: int) -> None:
    """Invert ``n`` bytes from ``offset`` (the size stays the same)."""
    data = bytearray(path.read_bytes())
    end = min(offset + n, len(data))
    data[offset:end] = bytes(b ^ 0xFF for b in data[offset:end])
    path.write_bytes(bytes(data))


def zero_header(path: Path, n: int = 64) -> None:
    """Overwrite the first ``n`` bytes with zeros (the format's magic and header)."""
    data = path.read_bytes()
    path.write_bytes(b"\x00" * n + data[n:])


def empty(path: Path) -> None:
    """Make a zero-byte file."""
    path.write_bytes(b"")


def rewrite_raster(path: Path, crs: str | None = None, shift_px: int = 0,
                   zeros: bool = False) -> None:
    """Rewrite a raster with another CRS, a shifted origin or only no data (0), keeping its
    driver and creation options as far as GDAL lets us."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read(1)
    if crs is not None:
        profile["crs"] = crs
    if shift_px:
        profile["transform"] = profile["transform"] @ rasterio.Affine.translation(shift_px, 0)
    if zeros:
        data = np.zeros_like(data)
    if profile["driver"] == "COG":
        profile["driver"] = "GTiff"
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data, 1)
    os.replace(tmp, path)


def non_utf8_rename(path: Path) -> Path:
    """Rename a file so its name holds a byte that is not UTF-8 (``\\xff``) before its own name;
    returns the new path (its ``str`` holds a surrogate escape)."""
    new = os.fsencode(path.parent) + b"/\xff" + os.fsencode(path.name)
    os.rename(os.fsencode(path), new)
    return Path(os.fsdecode(new))


def rename_product(src: Path, dest_root: Path, new_name: str) -> Path:
    """Copy a product (SAFE folder or STAC item folder) under a new product name."""
    old = src.name.removesuffix(".SAFE")
    if src.name.endswith(".SAFE"):
        dest = dest_root / f"{new_name}.SAFE"
        shutil.copytree(src, dest)
        return dest
    dest = dest_root / new_name
    shutil.copytree(src, dest)
    item_path = dest / f"{old}.json"
    item = json.loads(item_path.read_text())
    item["id"] = new_name
    item["properties"]["s2:product_uri"] = f"{new_name}.SAFE"
    item_path.unlink()
    (dest / f"{new_name}.json").write_text(json.dumps(item, indent=2) + "\n")
    return dest


def zip_safe(safe: Path, dest: Path) -> Path:
    """Zip a SAFE folder as ESA distributes it (stored, paths under ``<name>.SAFE/``)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, f.relative_to(safe.parent).as_posix())
    return dest


def zip_member_offset(path: Path, suffix: str) -> tuple[int, int]:
    """(offset, size) of the stored data of the member whose name ends with ``suffix``."""
    with zipfile.ZipFile(path) as zf:
        (info,) = [i for i in zf.infolist() if i.filename.endswith(suffix)]
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
    return info.header_offset + 30 + int(name_len) + int(extra_len), info.compress_size
