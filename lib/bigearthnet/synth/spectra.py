"""Class spectra of the synthetic world (uint16 BOA reflectance x 10000, bands B01 ... B12).

Every CLC class is a linear mix of a few *materials* (broad-leaved and coniferous canopy,
crop, grass, soil, water, urban, sand, rock, shrub, wetland, burnt). The materials are chosen so
that some classes are **identical in the visible bands** (B01, B02, B03, B04) and differ only in
red-edge, NIR and SWIR; a 12-band classifier can separate them, an RGB classifier cannot:

* ``311`` broad-leaved forest, ``312`` coniferous forest and ``313`` mixed forest
  (conifers: lower red-edge plateau, NIR and SWIR);
* ``211`` non-irrigated arable land, ``212`` permanently irrigated land and ``231`` pastures
  (pastures: higher NIR, lower SWIR than the soil-rich arable mix).

The paired classes also share their texture (:data:`TEXTURE_STD`), so RGB texture does not
separate them either. :data:`RGB_IDENTICAL_GROUPS` lists the groups; the tests check them on
generated pixels.

Snow is bright in the visible and dark in SWIR (B11, B12); clouds are bright everywhere,
including SWIR, which is how Sen2Cor tells them apart.
"""

from __future__ import annotations

import numpy as np

from bigearthnet.sentinel2.bands import (
    BAND_NAMES,
    SCL_NOT_VEGETATED,
    SCL_VEGETATION,
    SCL_WATER,
)
from bigearthnet.synth.landcover import CODES

#                 B01   B02   B03   B04   B05   B06   B07   B08   B8A   B09   B11   B12
MATERIALS: dict[str, tuple[int, ...]] = {
    "broadleaf": (250, 300, 550, 330, 900, 2600, 3300, 3600, 3700, 3650, 1800, 800),
    "conifer": (250, 300, 550, 330, 650, 1600, 2000, 2200, 2300, 2250, 1000, 450),
    "crop": (450, 550, 800, 850, 1250, 2000, 2400, 2600, 2700, 2650, 2600, 1750),
    "grass": (450, 550, 800, 850, 1050, 2700, 3300, 3500, 3600, 3500, 2000, 950),
    "soil": (900, 1000, 1300, 1600, 1800, 2000, 2100, 2200, 2300, 2250, 3000, 2500),
    "water": (550, 450, 420, 250, 220, 180, 170, 150, 140, 100, 60, 40),
    "sea": (600, 500, 450, 200, 180, 150, 140, 120, 110, 80, 50, 30),
    "urban": (1100, 1100, 1200, 1300, 1450, 1600, 1700, 1800, 1850, 1750, 2200, 1900),
    "sand": (1800, 2000, 2400, 2800, 3000, 3100, 3200, 3300, 3350, 3300, 3900, 3300),
    "rock": (1300, 1400, 1600, 1800, 1900, 2000, 2050, 2100, 2150, 2100, 2500, 2200),
    "shrub": (350, 400, 650, 600, 1100, 1900, 2300, 2500, 2600, 2550, 2000, 1100),
    "wetland": (350, 380, 520, 450, 800, 1500, 1800, 1950, 2000, 1950, 1300, 700),
    "burnt": (300, 320, 380, 400, 550, 750, 850, 900, 950, 900, 1600, 1500),
}
SNOW: tuple[int, ...] = (8600, 8800, 8700, 8500, 8300, 8000, 7800, 7600, 7400, 6000, 800, 500)
CLOUD: tuple[int, ...] = (7000, 7200, 7100, 7000, 7100, 7200, 7300, 7300, 7300, 5500, 5200, 3800)

CLASS_MIX: dict[str, dict[str, float]] = {
    "111": {"urban": 0.9, "grass": 0.1},
    "112": {"urban": 0.6, "grass": 0.3, "broadleaf": 0.1},
    "121": {"urban": 0.95, "soil": 0.05},
    "122": {"urban": 0.7, "grass": 0.3},
    "123": {"urban": 0.7, "water": 0.3},
    "124": {"urban": 0.5, "grass": 0.5},
    "131": {"rock": 0.6, "soil": 0.4},
    "132": {"soil": 0.6, "urban": 0.4},
    "133": {"soil": 0.8, "urban": 0.2},
    "141": {"grass": 0.6, "broadleaf": 0.4},
    "142": {"grass": 0.7, "urban": 0.3},
    "211": {"crop": 1.0},
    "212": {"crop": 0.6, "grass": 0.4},
    "213": {"crop": 0.4, "water": 0.3, "grass": 0.3},
    "221": {"soil": 0.5, "shrub": 0.5},
    "222": {"broadleaf": 0.5, "grass": 0.3, "soil": 0.2},
    "223": {"shrub": 0.4, "soil": 0.5, "broadleaf": 0.1},
    "231": {"grass": 1.0},
    "241": {"crop": 0.6, "shrub": 0.4},
    "242": {"crop": 0.5, "grass": 0.3, "broadleaf": 0.2},
    "243": {"crop": 0.4, "grass": 0.2, "broadleaf": 0.2, "shrub": 0.2},
    "244": {"grass": 0.5, "broadleaf": 0.3, "soil": 0.2},
    "311": {"broadleaf": 1.0},
    "312": {"conifer": 1.0},
    "313": {"broadleaf": 0.5, "conifer": 0.5},
    "321": {"grass": 0.7, "soil": 0.3},
    "322": {"shrub": 0.7, "wetland": 0.3},
    "323": {"shrub": 0.6, "soil": 0.4},
    "324": {"shrub": 0.6, "broadleaf": 0.2, "conifer": 0.2},
    "331": {"sand": 1.0},
    "332": {"rock": 1.0},
    "333": {"rock": 0.5, "grass": 0.5},
    "334": {"burnt": 1.0},
    "411": {"wetland": 0.6, "water": 0.2, "grass": 0.2},
    "412": {"wetland": 0.85, "water": 0.15},
    "421": {"wetland": 0.6, "water": 0.4},
    "422": {"sand": 0.5, "water": 0.5},
    "423": {"soil": 0.4, "water": 0.6},
    "511": {"water": 0.8, "grass": 0.2},
    "512": {"water": 1.0},
    "521": {"water": 0.9, "sand": 0.1},
    "522": {"water": 0.85, "soil": 0.15},
    "523": {"sea": 1.0},
}

RGB_IDENTICAL_GROUPS: tuple[tuple[str, ...], ...] = (("311", "312", "313"), ("211", "212", "231"))
"""Classes with identical B01-B04 spectra and texture that differ in red-edge/NIR/SWIR."""

VISIBLE_BANDS: tuple[str, ...] = ("B01", "B02", "B03", "B04")

_TEXTURE_BY_GROUP = {"1": 0.10, "2": 0.05, "3": 0.06, "4": 0.05, "5": 0.02}
TEXTURE_STD: dict[str, float] = {c: _TEXTURE_BY_GROUP[c[0]] for c in CLASS_MIX}
"""Relative per-pixel noise by class (by CLC level 1, so RGB-identical groups share it)."""
TEXTURE_STD.update({"331": 0.04, "332": 0.08, "333": 0.07, "334": 0.08})

CLASS_INDEX_CODES: tuple[str, ...] = ("",) + CODES
"""Index -> code of the class-index rasters; index 0 is "no CLC polygon"."""


def _mix(parts: dict[str, float]) -> np.ndarray:
    return sum(w * np.asarray(MATERIALS[m], dtype=np.float64) for m, w in parts.items())


def spectra_table() -> np.ndarray:
    """Mean spectrum of every class index, float32 ``(44, 12)`` in B01 ... B12 order.

    Row 0 (no CLC polygon) is bare soil.
    """
    rows = [np.asarray(MATERIALS["soil"], dtype=np.float64)]
    rows += [_mix(CLASS_MIX[c]) for c in CODES]
    return np.array(rows, dtype=np.float32)


def texture_table() -> np.ndarray:
    """Relative per-pixel noise std of every class index, float32 ``(44,)``."""
    return np.array([0.06] + [TEXTURE_STD[c] for c in CODES], dtype=np.float32)


def scl_surface_table() -> np.ndarray:
    """Cloud-free SCL class of every class index, uint8 ``(44,)``: 4 vegetation, 5 not
    vegetated, 6 water."""
    vegetated = {"141", "333", "411", "412", "421"}
    out = [SCL_NOT_VEGETATED]
    for c in CODES:
        if c[0] == "5":
            out.append(SCL_WATER)
        elif c[0] in "23" and c not in {"331", "332", "334"} or c in vegetated:
            out.append(SCL_VEGETATION)
        else:
            out.append(SCL_NOT_VEGETATED)
    return np.array(out, dtype=np.uint8)


def band_index(band: str) -> int:
    """Column of ``band`` in :func:`spectra_table`."""
    return BAND_NAMES.index(band)
