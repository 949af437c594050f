"""The BigEarthNet patch grid: 1200 m squares anchored on a tile's upper-left corner."""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from bigearthnet.constants import PATCH_SIZE_M, PATCH_SIZE_PX
from bigearthnet.errors import TileTooSmallError


@dataclass(frozen=True)
class TileOrigin:
    """Where a Sentinel-2 tile sits in its UTM zone."""

    tile_id: str
    epsg: int
    ulx: float
    uly: float


@lru_cache(maxsize=1)
def tile_origin_table() -> dict[str, TileOrigin]:
    """The real origins of the BigEarthNet tiles (package data ``s2_tile_origins.csv``)."""
    text = resources.files("bigearthnet.data").joinpath("s2_tile_origins.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {
        r["tile_id"]: TileOrigin(r["tile_id"], int(r["epsg"]), float(r["ulx"]), float(r["uly"]))
        for r in rows
    }


_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
_COL_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")  # indexed by zone % 3


def mgrs_tile_origin(tile_id: str) -> TileOrigin:
    """Approximate a tile's origin from its MGRS 100 km square.

    Sentinel-2 tiles start at the west edge of the MGRS square and at its north edge; the real
    table differs from this by up to 40 m (e.g. 499980 instead of 500000).

    Args:
        tile_id: ``T29UPU`` or ``29UPU``.
    """
    from pyproj import Transformer

    tid = tile_id.removeprefix("T")
    zone, band, col_letter, row_letter = int(tid[:2]), tid[2], tid[3], tid[4]
    north = band >= "N"
    epsg = (32600 if north else 32700) + zone
    col_set = _COL_SETS[zone % 3]
    easting = (col_set.index(col_letter) + 1) * 100_000
    row_index = _ROW_LETTERS.index(row_letter)
    if zone % 2 == 0:
        row_index = (row_index - 5) % 20
    base = row_index * 100_000
    band_south_lat = -80 + 8 * _LAT_BANDS.index(band)
    central_meridian = -183 + 6 * zone
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    _, band_min_northing = to_utm.transform(central_meridian, band_south_lat)
    northing = float(base)
    while northing + 100_000 <= band_min_northing:
        northing += 2_000_000
    return TileOrigin(f"T{tid}", epsg, float(easting), northing + 100_000)


def tile_origin(tile_id: str) -> TileOrigin:
    """The real origin of a tile when known, else derived from MGRS (with a warning)."""
    table = tile_origin_table()
    if tile_id in table:
        return table[tile_id]
    warnings.warn(
        f"tile {tile_id} is not in s2_tile_origins.csv; deriving its origin from MGRS "
        "(may differ from ESA's grid by up to 40 m)",
        stacklevel=2,
    )
    return mgrs_tile_origin(tile_id)


@dataclass(frozen=True)
class PatchGrid:
    """The patch grid of one tile.

    Args:
        ulx: x of the tile's upper-left corner (metres, tile CRS).
        uly: y of the upper-left corner.
        width_px: tile width in 10 m pixels.
        height_px: tile height in 10 m pixels.
    """

    ulx: float
    uly: float
    width_px: int
    height_px: int

    @property
    def patch_size_px(self) -> int:
        """Patch side in 10 m pixels (120)."""
        return PATCH_SIZE_PX

    @property
    def n_cols(self) -> int:
        """Patches per row; an incomplete last column is dropped."""
        return self.width_px // self.patch_size_px

    @property
    def n_rows(self) -> int:
        """Patch rows; an incomplete last row is dropped."""
        return self.height_px // self.patch_size_px

    @property
    def n_patches(self) -> int:
        """Number of whole patches in the tile (8281 for a full tile)."""
        return self.n_cols * self.n_rows

    def check(self, what: str) -> None:
        """Raise TileTooSmallError if the tile holds no whole patch."""
        if self.n_patches == 0:
            raise TileTooSmallError(
                f"{what}: tile is {self.width_px}x{self.height_px} px at 10 m, smaller than one "
                f"{PATCH_SIZE_M} m patch ({self.patch_size_px}x{self.patch_size_px} px). "
                f"Use full Sentinel-2 tiles or crops of at least {PATCH_SIZE_PX}x{PATCH_SIZE_PX} px."
            )

    def bounds(self, col: np.ndarray | int, row: np.ndarray | int) -> tuple:
        """Patch bounds (left, bottom, right, top) in the tile CRS; vectorised over col/row."""
        left = self.ulx + np.asarray(col) * PATCH_SIZE_M
        top = self.uly - np.asarray(row) * PATCH_SIZE_M
        return left, top - PATCH_SIZE_M, left + PATCH_SIZE_M, top
