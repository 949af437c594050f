"""Render one product's bands and SCL from the CLC class map and the condition fields.

The 10 m class map (rasterized CLC polygons, pixel-centre rule) drives everything:

* surface reflectance = class mean spectrum x per-polygon brightness (+/-8 %) x a smooth
  texture field (+/-6 %, shared by all bands), computed at 10 m and block-averaged to 20 and
  60 m, then per-pixel noise at the native resolution (class-specific relative std);
* then snow is blended in, shadows darken, clouds are blended on top;
* values are clipped to >= 1; the nodata wedge is 0 in every band and SCL.

Work is done in row strips of :data:`STRIP_PX` 10 m rows, band by band, to bound memory
(a full 10980 px tile stays well under 3 GB). Per-pixel noise comes from a generator seeded
by (product key, band, strip), so the output does not depend on the output format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bigearthnet.sentinel2.bands import (
    BAND_BY_NAME,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MEDIUM,
    SCL_CLOUD_SHADOW,
    SCL_NO_DATA,
    SCL_SNOW,
    SCL_THIN_CIRRUS,
)
from bigearthnet.synth.conditions import (
    SCL_CIRRUS_BELOW,
    SCL_MEDIUM_BELOW,
    SHADOW_DARKENING,
    SHADOW_SCL_MIN,
    ConditionFields,
)
from bigearthnet.synth.noise import LatticeNoise
from bigearthnet.synth.spectra import (
    CLOUD,
    SNOW,
    band_index,
    scl_surface_table,
    spectra_table,
    texture_table,
)

STRIP_PX = 1200
"""Rows (10 m) per processing strip; a multiple of 6 so 20 and 60 m strips align."""
POLYGON_BRIGHTNESS = 0.08
TEXTURE_AMPLITUDE = 0.06


def block_mean(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks (shape must be divisible)."""
    if factor == 1:
        return a
    h, w = a.shape
    return a.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3), dtype=np.float32)


def centres(n: int, res: int, start: int = 0) -> np.ndarray:
    """Pixel-centre offsets in metres for pixels ``start .. start+n-1`` at ``res`` metres."""
    return (np.arange(start, start + n) + 0.5) * float(res)


@dataclass
class _ResCache:
    res: int
    cloud: np.ndarray  # uint8, opacity * 255
    shadow: np.ndarray  # uint8
    snow: np.ndarray  # uint8
    wedge: np.ndarray  # bool


def _q(a: np.ndarray) -> np.ndarray:
    return np.rint(a * 255.0).astype(np.uint8)


@dataclass
class Scene:
    """Everything needed to render the bands of one product.

    Args:
        class_idx: uint8 ``(size, size)`` class index at 10 m (see ``CLASS_INDEX_CODES``).
        brightness: float16 ``(size, size)`` per-pixel brightness factor at 10 m.
        fields: the condition fields.
        noise_key: non-negative integer seeding the per-strip noise generators.
    """

    class_idx: np.ndarray
    brightness: np.ndarray
    fields: ConditionFields
    noise_key: int
    _cache: _ResCache | None = field(default=None, repr=False)
    _spectra: np.ndarray = field(default_factory=spectra_table, repr=False)
    _texture: np.ndarray = field(default_factory=texture_table, repr=False)

    @property
    def size_px(self) -> int:
        """Tile side in 10 m pixels."""
        return self.class_idx.shape[0]

    def _conditions(self, res: int) -> _ResCache:
        if self._cache is not None and self._cache.res == res:
            return self._cache
        self._cache = None
        f = res // 10
        n = self.size_px // f
        u = centres(n, res)
        parts: dict[str, list[np.ndarray]] = {"cloud": [], "shadow": [], "snow": [], "wedge": []}
        for r0, r1 in _strips(self.size_px):
            v = centres((r1 - r0) // f, res, r0 // f)
            parts["cloud"].append(_q(self.fields.cloud_alpha(u, v)))
            parts["shadow"].append(_q(self.fields.shadow_alpha(u, v)))
            parts["snow"].append(_q(self.fields.snow_alpha(u, v)))
            parts["wedge"].append(self.fields.wedge_mask(u, v))
        self._cache = _ResCache(res, *(np.concatenate(parts[k]) for k in ("cloud", "shadow", "snow", "wedge")))
        return self._cache

    def render_band(self, band: str) -> np.ndarray:
        """One band at its native resolution, uint16 (0 only in the nodata wedge)."""
        res = BAND_BY_NAME[band].resolution_m
        f = res // 10
        b = band_index(band)
        spec = self._spectra[:, b]
        snow_v, cloud_v = np.float32(SNOW[b]), np.float32(CLOUD[b])
        cache = self._conditions(res)
        n = self.size_px // f
        out = np.empty((n, n), dtype=np.uint16)
        for k, (r0, r1) in enumerate(_strips(self.size_px)):
            cls = self.class_idx[r0:r1]
            surf = block_mean(spec[cls] * self.brightness[r0:r1].astype(np.float32), f)
            std = block_mean(self._texture[cls], f)
            rng = np.random.default_rng([self.noise_key, b, k])
            noise = rng.standard_normal(surf.shape, dtype=np.float32)
            val = surf * (1.0 + std * noise)
            s0, s1 = r0 // f, r1 // f
            a_snow = cache.snow[s0:s1].astype(np.float32) / 255.0
            val += (snow_v * (1.0 + 0.03 * noise) - val) * a_snow
            val *= 1.0 - SHADOW_DARKENING * (cache.shadow[s0:s1].astype(np.float32) / 255.0)
            a_cloud = cache.cloud[s0:s1].astype(np.float32) / 255.0
            val += (cloud_v * (1.0 + 0.02 * noise) - val) * a_cloud
            strip = np.clip(np.rint(val), 1, 65535).astype(np.uint16)
            strip[cache.wedge[s0:s1]] = 0
            out[s0:s1] = strip
        return out

    def render_scl(self) -> np.ndarray:
        """The 20 m scene classification layer, uint8."""
        cache = self._conditions(20)
        scl = scl_surface_table()[self.class_idx[::2, ::2]]
        scl[cache.snow >= 128] = SCL_SNOW
        cloudy = cache.cloud > 0
        scl[(cache.shadow >= round(SHADOW_SCL_MIN * 255)) & ~cloudy] = SCL_CLOUD_SHADOW
        a = cache.cloud
        scl[cloudy & (a < round(SCL_CIRRUS_BELOW * 255))] = SCL_THIN_CIRRUS
        scl[(a >= round(SCL_CIRRUS_BELOW * 255)) & (a < round(SCL_MEDIUM_BELOW * 255))] = SCL_CLOUD_MEDIUM
        scl[a >= round(SCL_MEDIUM_BELOW * 255)] = SCL_CLOUD_HIGH
        scl[cache.wedge] = SCL_NO_DATA
        return scl

    def release(self) -> None:
        """Drop the cached condition rasters."""
        self._cache = None


def _strips(size_px: int) -> list[tuple[int, int]]:
    return [(r0, min(r0 + STRIP_PX, size_px)) for r0 in range(0, size_px, STRIP_PX)]


def brightness_map(
    poly_local: np.ndarray, poly_factor: np.ndarray, texture: LatticeNoise
) -> np.ndarray:
    """Per-pixel brightness at 10 m: per-polygon factor x smooth texture, float16.

    Args:
        poly_local: uint16/uint32 ``(size, size)`` polygon index (0 = none) from rasterization.
        poly_factor: float32 factor per polygon index (index 0 = none).
        texture: smooth noise field in [0, 1].
    """
    size = poly_local.shape[0]
    out = np.empty(poly_local.shape, dtype=np.float16)
    u = centres(size, 10)
    for r0, r1 in _strips(size):
        tex = 1.0 + TEXTURE_AMPLITUDE * (2.0 * texture.grid(u, centres(r1 - r0, 10, r0)) - 1.0)
        out[r0:r1] = (poly_factor[poly_local[r0:r1]] * tex).astype(np.float16)
    return out
