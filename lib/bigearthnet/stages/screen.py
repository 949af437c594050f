"""Stage *screen*: SCL snow / cloud / shadow / no-data fractions, flags and drop reasons.

Pure numpy over the patches' SCL tensors and the label rule's decision; the thresholds are
:class:`~bigearthnet.quality.QualityConfig`. A dropped patch gets the first matching reason of
:data:`~bigearthnet.quality.DROP_REASONS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from bigearthnet.quality import (
    QualityConfig,
    drop_reason,
    quality_flags,
    read_name_list,
    scl_fractions,
)

FRACTION_KEYS = ("cloud", "shadow", "snow", "nodata")
"""SCL fractions stored as ``<key>_fraction`` columns."""


@dataclass(frozen=True)
class ExclusionLists:
    """The official headerless lists of v1 names to drop.

    A list whose file name contains ``snow`` also marks its patches as snowy, one whose name
    contains ``cloud`` as cloudy (the import of the v1 archive, which has no SCL, takes its
    flags from them).
    """

    listed: frozenset[str] = frozenset()
    snow: frozenset[str] = frozenset()
    cloud: frozenset[str] = frozenset()

    @classmethod
    def load(cls, paths: Sequence[str]) -> ExclusionLists:
        """Read the lists.

        Raises:
            InputNotFoundError: a list is missing.
        """
        listed: set[str] = set()
        snow: set[str] = set()
        cloud: set[str] = set()
        for path in paths:
            members = set(read_name_list(path))
            listed |= members
            stem = Path(path).name.lower()
            if "snow" in stem:
                snow |= members
            if "cloud" in stem:
                cloud |= members
        return cls(frozenset(listed), frozenset(snow), frozenset(cloud))

    @staticmethod
    def _member(names: Sequence[str], pool: frozenset[str]) -> np.ndarray:
        return np.fromiter((n in pool for n in names), bool, len(names))

    def is_listed(self, names: Sequence[str]) -> np.ndarray:
        """True where a v1 name is in any list."""
        return self._member(names, self.listed)

    def flags(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """``contains_seasonal_snow`` / ``contains_cloud_or_shadow`` from list membership."""
        return {"contains_seasonal_snow": self._member(names, self.snow),
                "contains_cloud_or_shadow": self._member(names, self.cloud)}


@dataclass
class Screening:
    """The screen stage's result for a group of patches.

    Attributes:
        fractions: ``cloud``, ``shadow``, ``cloud_shadow``, ``snow``, ``nodata`` per patch.
        flags: ``contains_seasonal_snow``, ``contains_cloud_or_shadow`` per patch.
        reasons: the first drop reason per patch, or ``None`` (kept).
    """

    fractions: dict[str, np.ndarray]
    flags: dict[str, np.ndarray]
    reasons: np.ndarray


def screen_patches(scl: np.ndarray, band_nodata: np.ndarray, listed: np.ndarray,
                   unlabeled_drop: np.ndarray, quality: QualityConfig,
                   no_labels: np.ndarray | None = None) -> Screening:
    """Fractions, flags and drop reasons of patches.

    Args:
        scl: ``(n, 60, 60)`` SCL patches.
        band_nodata: True where a patch touches a no-data pixel in any band.
        listed: True where the patch's v1 name is in an exclusion list.
        unlabeled_drop: the label rule's ``drop_unlabeled``.
        quality: thresholds.
        no_labels: True where a patch has no 43-class label.
    """
    fractions = scl_fractions(scl)
    reasons = drop_reason(
        quality, snow_fraction=fractions["snow"], cloud_shadow_fraction=fractions["cloud_shadow"],
        nodata_fraction=fractions["nodata"], band_nodata=band_nodata, listed=listed,
        unlabeled_drop=unlabeled_drop, no_labels=no_labels,
    )
    return Screening(fractions, quality_flags(fractions, quality), reasons)


def screen_columns(screening: Screening) -> dict[str, pa.Array]:
    """The patch-table columns of the screen stage."""
    cols = {f"{key}_fraction": pa.array(screening.fractions[key], pa.float32())
            for key in FRACTION_KEYS}
    cols.update({k: pa.array(v) for k, v in screening.flags.items()})
    return cols
