"""Per-product acquisition conditions: clouds, cloud shadows, seasonal snow, nodata wedge.

All four are continuous functions of the position in metres from the tile's upper-left corner,
evaluated at pixel centres, so the 10, 20 and 60 m rasters and the 20 m SCL agree:

* **clouds**: fractal lattice noise thresholded at the quantile that gives the requested
  cloud fraction; opacity grows from 0.2 at the edge to 0.97 in the core. SCL 10 (thin cirrus)
  at the thin edge, 8 (medium) and 9 (high probability) further in.
* **shadows**: the cloud opacity field shifted away from the sun (north-north-west in the
  northern hemisphere) by 0.8-2.5 km; darkens the ground; SCL 3 where the casting cloud is at
  least medium-thick and the pixel itself is not cloudy.
* **snow**: another, smoother noise field at the requested snow fraction (lying on sea ice
  too); SCL 11.
* **nodata wedge**: the swath edge, a diagonal band at the east or west edge where every band
  and SCL are 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from bigearthnet.configbase import StrictModel
from bigearthnet.synth.noise import LatticeNoise

CLOUD_EDGE_ALPHA = 0.2
CLOUD_MAX_ALPHA = 0.97
CLOUD_RAMP = 0.08
"""Noise units over which cloud opacity rises from the edge to the core."""
SNOW_RAMP = 0.03
SHADOW_DARKENING = 0.7
SCL_CIRRUS_BELOW = 0.4
"""Cloud opacity below which SCL says thin cirrus (10)."""
SCL_MEDIUM_BELOW = 0.7
"""Cloud opacity below which SCL says medium probability (8); above it, high (9)."""
SHADOW_SCL_MIN = 0.4
"""Opacity of the casting cloud from which SCL flags the shadow (3)."""
FIELD_MARGIN_M = 3000.0


class ProductConditions(StrictModel):
    """Conditions of one product. ``None`` fields are drawn from the seed.

    Args:
        cloud_fraction: share of the tile under cloud (SCL 8, 9, 10), 0-1.
        shadow: whether clouds cast shadows (SCL 3).
        snow_fraction: share of the tile under seasonal snow (SCL 11), 0-1.
        nodata_wedge: whether a swath-edge wedge of no data (all bands and SCL 0) is present.
    """

    cloud_fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    shadow: bool | None = None
    snow_fraction: float | None = Field(default=None, ge=0.0, le=1.0)
    nodata_wedge: bool | None = None


WINTER_MONTHS = frozenset({11, 12, 1, 2, 3})
SHOULDER_MONTHS = frozenset({4, 10})


def draw_conditions(rng: np.random.Generator, month: int) -> ProductConditions:
    """Draw a product's conditions; winter products are more likely snowy.

    About 40 % of products are cloud-free, 1 in 3 has a nodata wedge.
    A fixed number of values is drawn, whatever the outcome.

    Args:
        rng: random generator (consumed).
        month: sensing month, 1-12.
    """
    u = rng.random(6)
    cloud = 0.0 if u[0] < 0.4 else round(0.05 + 0.55 * u[1], 3)
    p_snow = 0.6 if month in WINTER_MONTHS else 0.2 if month in SHOULDER_MONTHS else 0.05
    snow = round(0.1 + 0.6 * u[3], 3) if u[2] < p_snow else 0.0
    return ProductConditions(
        cloud_fraction=cloud,
        shadow=bool(cloud > 0 and u[4] < 0.85),
        snow_fraction=snow,
        nodata_wedge=bool(u[5] < 1 / 3),
    )


def merge_conditions(drawn: ProductConditions, override: ProductConditions | None) -> ProductConditions:
    """Override the drawn conditions with the fields given explicitly."""
    if override is None:
        return drawn
    values = drawn.model_dump()
    values.update({k: v for k, v in override.model_dump().items() if v is not None})
    return ProductConditions(**values)


@dataclass(frozen=True)
class ConditionFields:
    """The continuous condition fields of one product (see the module docstring).

    Build with :meth:`create`, then evaluate with :meth:`evaluate` at any resolution.
    """

    size_m: float
    cloud: LatticeNoise
    snow: LatticeNoise
    cloud_threshold: float
    snow_threshold: float
    shadow: bool
    shadow_shift: tuple[float, float]
    wedge: tuple[str, float, float] | None
    """(side "east"/"west", width fraction at the top, at the bottom)."""

    @classmethod
    def create(
        cls, rng: np.random.Generator, size_px: int, conditions: ProductConditions, north: bool
    ) -> ConditionFields:
        """Draw the fields and calibrate their thresholds to the requested fractions.

        Args:
            rng: random generator (consumed; the same number of draws whatever the conditions).
            size_px: tile side in 10 m pixels.
            conditions: fully resolved conditions (no ``None``).
            north: northern hemisphere (sets the shadow direction).
        """
        size_m = size_px * 10.0
        cloud = LatticeNoise.create(rng, size_m, 6000.0, octaves=4, margin_m=FIELD_MARGIN_M)
        snow = LatticeNoise.create(rng, size_m, 12000.0, octaves=4, margin_m=FIELD_MARGIN_M)
        dist = 800.0 + 1700.0 * rng.random()
        azimuth = math.radians((325.0 + 20.0 * rng.random()) if north else (145.0 + 20.0 * rng.random()))
        side = "east" if rng.random() < 0.5 else "west"
        w_a, w_b = 0.1 * rng.random(), 0.15 + 0.3 * rng.random()
        if rng.random() < 0.5:
            w_a, w_b = w_b, w_a
        grid60 = (np.arange(size_px // 6) + 0.5) * 60.0
        cloud_thr = _threshold(cloud.grid(grid60, grid60), conditions.cloud_fraction)
        snow_thr = _threshold(snow.grid(grid60, grid60), conditions.snow_fraction)
        return cls(
            size_m=size_m, cloud=cloud, snow=snow, cloud_threshold=cloud_thr,
            snow_threshold=snow_thr, shadow=bool(conditions.shadow),
            shadow_shift=(dist * math.sin(azimuth), -dist * math.cos(azimuth)),
            wedge=(side, w_a, w_b) if conditions.nodata_wedge else None,
        )

    def cloud_alpha(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Cloud opacity (0 = clear) on the grid ``v`` x ``u`` (metres from the corner)."""
        if not math.isfinite(self.cloud_threshold):
            value = 0.0 if self.cloud_threshold > 0 else CLOUD_MAX_ALPHA
            return np.full((len(v), len(u)), value, np.float32)
        d = self.cloud.grid(u, v) - np.float32(self.cloud_threshold)
        ramp = np.clip(d / CLOUD_RAMP, 0.0, 1.0)
        alpha = CLOUD_EDGE_ALPHA + (CLOUD_MAX_ALPHA - CLOUD_EDGE_ALPHA) * ramp
        return np.where(d >= 0, alpha, 0.0).astype(np.float32)

    def snow_alpha(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Snow cover (0-1; SCL says snow from 0.5) on the grid ``v`` x ``u``."""
        if not math.isfinite(self.snow_threshold):
            value = 0.0 if self.snow_threshold > 0 else 1.0
            return np.full((len(v), len(u)), value, np.float32)
        d = self.snow.grid(u, v) - np.float32(self.snow_threshold)
        return np.clip(0.5 + d / (2 * SNOW_RAMP), 0.0, 1.0).astype(np.float32)

    def shadow_alpha(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Opacity of the cloud casting a shadow onto each pixel (0 = lit)."""
        if not self.shadow:
            return np.zeros((len(v), len(u)), np.float32)
        du, dv = self.shadow_shift
        return self.cloud_alpha(np.asarray(u) - du, np.asarray(v) - dv)

    def wedge_mask(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """True where the swath-edge wedge has no data."""
        if self.wedge is None:
            return np.zeros((len(v), len(u)), bool)
        side, w_top, w_bottom = self.wedge
        frac = w_top + (w_bottom - w_top) * (np.asarray(v) / self.size_m)
        if side == "east":
            edge = self.size_m * (1.0 - frac)
            return np.asarray(u)[None, :] > edge[:, None]
        edge = self.size_m * frac
        return np.asarray(u)[None, :] < edge[:, None]


def _threshold(field: np.ndarray, fraction: float | None) -> float:
    """Field value above which ``fraction`` of the samples lie (+inf: none, -inf: all)."""
    if not fraction:
        return math.inf
    if fraction >= 1.0:
        return -math.inf
    return float(np.quantile(field, 1.0 - fraction))
