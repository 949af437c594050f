"""Per-band statistics over the train split, exact and mergeable across Spark tasks.

Each task adds its train patches to a 65,536-bin histogram per band (values are uint16); the
driver sums the histograms and derives mean, std, min, max and percentiles exactly.
"""

from __future__ import annotations

import zlib

import numpy as np

from bigearthnet.sentinel2.bands import BAND_NAMES, GROUPS

N_BINS = 1 << 16


class BandHistograms:
    """Histograms of uint16 values, one per band in ``BAND_NAMES`` order (B01 … B12)."""

    def __init__(self) -> None:
        self.counts = np.zeros((len(BAND_NAMES), N_BINS), dtype=np.int64)

    def add_group(self, resolution_m: int, patches: np.ndarray) -> None:
        """Add ``(n, bands, px, px)`` uint16 patches of one resolution group."""
        for i, name in enumerate(GROUPS[resolution_m]):
            band = BAND_NAMES.index(name)
            self.counts[band] += np.bincount(patches[:, i].ravel(), minlength=N_BINS)

    def to_bytes(self) -> bytes:
        """Compact serialisation (zlib-compressed little-endian int64)."""
        return zlib.compress(self.counts.astype("<i8").tobytes(), 1)

    @classmethod
    def from_bytes(cls, data: bytes) -> BandHistograms:
        """Inverse of ``to_bytes``."""
        h = cls()
        h.counts = np.frombuffer(zlib.decompress(data), dtype="<i8").reshape(len(BAND_NAMES), N_BINS).copy()
        return h

    def merge(self, other: BandHistograms) -> None:
        """Add another task's histograms."""
        self.counts += other.counts

    def summary(self, percentiles: tuple[float, ...] = (1.0, 99.0)) -> dict[str, dict[str, float]]:
        """Per band: n_pixels, mean, std (population), min, max and the given percentiles.

        A percentile ``q`` is the smallest value whose cumulative share reaches ``q`` %
        (the "lower" / inverted-CDF definition, ``numpy.percentile(method="inverted_cdf")``).
        """
        values = np.arange(N_BINS, dtype=np.float64)
        out: dict[str, dict[str, float]] = {}
        for i, name in enumerate(BAND_NAMES):
            c = self.counts[i]
            n = int(c.sum())
            if n == 0:
                out[name] = {"n_pixels": 0}
                continue
            mean = float((values * c).sum() / n)
            var = float(((values - mean) ** 2 * c).sum() / n)
            nz = np.nonzero(c)[0]
            cdf = np.cumsum(c)
            entry = {"n_pixels": n, "mean": mean, "std": var ** 0.5,
                     "min": float(nz[0]), "max": float(nz[-1])}
            for q in percentiles:
                entry[f"p{q:02.0f}"] = float(np.searchsorted(cdf, q / 100.0 * n, side="left"))
            out[name] = entry
        return out
