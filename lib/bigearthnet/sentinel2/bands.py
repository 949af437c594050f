"""The Sentinel-2 L2A band table used by BigEarthNet (12 bands, B10 excluded, plus SCL)."""

from __future__ import annotations

from dataclasses import dataclass

from bigearthnet.constants import patch_px


@dataclass(frozen=True)
class Band:
    """One Sentinel-2 band.

    Args:
        name: ESA band name, e.g. ``B8A``.
        resolution_m: native ground sampling distance in metres (10, 20 or 60).
        wavelength_nm: central wavelength (Sentinel-2A), for documentation and STAC.
        common_name: STAC ``eo:common_name``.
    """

    name: str
    resolution_m: int
    wavelength_nm: float
    common_name: str

    @property
    def patch_size_px(self) -> int:
        """Pixels per patch side at the native resolution (120, 60 or 20)."""
        return patch_px(self.resolution_m)


# Ordered B01 ... B12 as in the BigEarthNet v1 reference code and its normalisation table.
BANDS: tuple[Band, ...] = (
    Band("B01", 60, 442.7, "coastal"),
    Band("B02", 10, 492.4, "blue"),
    Band("B03", 10, 559.8, "green"),
    Band("B04", 10, 664.6, "red"),
    Band("B05", 20, 704.1, "rededge"),
    Band("B06", 20, 740.5, "rededge"),
    Band("B07", 20, 782.8, "rededge"),
    Band("B08", 10, 832.8, "nir"),
    Band("B8A", 20, 864.7, "nir08"),
    Band("B09", 60, 945.1, "nir09"),
    Band("B11", 20, 1613.7, "swir16"),
    Band("B12", 20, 2202.4, "swir22"),
)
BAND_BY_NAME: dict[str, Band] = {b.name: b for b in BANDS}
BAND_NAMES: tuple[str, ...] = tuple(b.name for b in BANDS)

SCL = Band("SCL", 20, 0.0, "scl")
"""Scene classification layer (20 m, uint8)."""

# Band groups as stored in the dataset: one tensor column per native resolution.
GROUPS: dict[int, tuple[str, ...]] = {
    10: ("B02", "B03", "B04", "B08"),
    20: ("B05", "B06", "B07", "B8A", "B11", "B12"),
    60: ("B01", "B09"),
}
RGB: tuple[str, str, str] = ("B04", "B03", "B02")

NODATA_VALUE = 0
"""L2A reflectance and SCL use 0 for no data."""

# SCL classes (ESA Sen2Cor).
SCL_NO_DATA = 0
SCL_SATURATED = 1
SCL_DARK_AREA = 2
SCL_CLOUD_SHADOW = 3
SCL_VEGETATION = 4
SCL_NOT_VEGETATED = 5
SCL_WATER = 6
SCL_UNCLASSIFIED = 7
SCL_CLOUD_MEDIUM = 8
SCL_CLOUD_HIGH = 9
SCL_THIN_CIRRUS = 10
SCL_SNOW = 11

# Aliases used for band assets by STAC catalogues (Earth Search v1 names and ESA names).
STAC_ASSET_ALIASES: dict[str, tuple[str, ...]] = {
    "B01": ("B01", "coastal"),
    "B02": ("B02", "blue"),
    "B03": ("B03", "green"),
    "B04": ("B04", "red"),
    "B05": ("B05", "rededge1"),
    "B06": ("B06", "rededge2"),
    "B07": ("B07", "rededge3"),
    "B08": ("B08", "nir"),
    "B8A": ("B8A", "nir08"),
    "B09": ("B09", "nir09"),
    "B11": ("B11", "swir16"),
    "B12": ("B12", "swir22"),
    "SCL": ("SCL", "scl"),
}
