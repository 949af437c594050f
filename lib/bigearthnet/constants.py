"""The BigEarthNet grid and split constants, defined once.

Every other module takes the patch size, the pixel sizes and the split names from here, so a
literal ``1200`` or ``120`` appears nowhere else.
"""

from __future__ import annotations

PATCH_SIZE_M = 1200
"""Side of one BigEarthNet patch in metres."""

BASE_RESOLUTION_M = 10
"""Pixel size of the finest Sentinel-2 bands (and of the reference maps)."""

PATCH_SIZE_PX = PATCH_SIZE_M // BASE_RESOLUTION_M
"""Patch side in 10 m pixels: 120."""

PATCH_AREA_M2 = float(PATCH_SIZE_M) * float(PATCH_SIZE_M)
"""Area of one patch: 1.44e6 m²."""

FULL_TILE_PX = 10980
"""A full Sentinel-2 tile at 10 m: 109.8 km (91 x 91 whole patches, the last 60 px dropped)."""

SPLITS: tuple[str, str, str] = ("train", "validation", "test")
"""Split names, in this order everywhere (files, manifests, counts)."""


def patch_px(resolution_m: int) -> int:
    """Pixels per patch side at a band resolution: 120 (10 m), 60 (20 m) or 20 (60 m).

    Args:
        resolution_m: the band's ground sampling distance in metres; must divide 1200.

    Raises:
        ValueError: the resolution does not divide the patch size.
    """
    if resolution_m <= 0 or PATCH_SIZE_M % resolution_m:
        raise ValueError(f"{resolution_m} m pixels do not tile a {PATCH_SIZE_M} m patch")
    return PATCH_SIZE_M // resolution_m

REBEN_MAX_UNLABELED_FRACTION = 0.25
"""reBEN: a patch is dropped when at least this share of its pixels has no 19-class label."""
