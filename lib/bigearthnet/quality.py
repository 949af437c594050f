"""Patch quality: SCL snow/cloud/shadow/nodata fractions, official lists and drop decisions.

Fractions are computed from the 20 m Sentinel-2 scene classification layer (SCL, 60 x 60 px per
patch):

* ``cloud``: SCL 8 (cloud medium probability), 9 (cloud high probability), 10 (thin cirrus);
* ``shadow``: SCL 3 (cloud shadow);
* ``cloud_shadow``: SCL 3, 8, 9, 10 together (counted once per pixel);
* ``snow``: SCL 11 (snow/ice);
* ``nodata``: SCL 0 (no data).

Defaults reproduce BigEarthNet v1, which removed patches "fully covered by seasonal snow, cloud
or cloud shadow": a patch is dropped for snow when **all** its 3600 SCL pixels are snow
(``snow >= 1.0``) and for cloud/shadow when all are cloud or shadow (``cloud_shadow >= 1.0``).
It is *flagged* (``contains_seasonal_snow`` / ``contains_cloud_or_shadow``) as soon as one pixel
is (``fraction > 0.0``).

Float rounding: fractions are exact ratios ``count / n_pixels`` stored as float32. One pixel is
1/3600 ≈ 2.8e-4 of a patch while float32 rounding is below 1e-7, so every comparison uses a
tolerance :data:`FRACTION_TOLERANCE` = 1e-6: ``drop`` when ``fraction >= threshold - 1e-6`` and
``flag`` when ``fraction > threshold + 1e-6``. The tolerance only absorbs rounding; it never
moves a decision by a pixel. 3600/3600 is exactly 1.0 and 3599/3600 stays below 1 - 1e-6.

A dropped patch is counted once, under the first matching reason of :data:`DROP_REASONS`.
"""

from __future__ import annotations

import bz2
import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import ConfigDict, Field

from bigearthnet.configbase import StrictModel
from bigearthnet.errors import InputNotFoundError, LabelingInputError
from bigearthnet.sentinel2.bands import (
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MEDIUM,
    SCL_CLOUD_SHADOW,
    SCL_NO_DATA,
    SCL_SNOW,
    SCL_THIN_CIRRUS,
)

CLOUD_CLASSES: tuple[int, ...] = (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_THIN_CIRRUS)
SHADOW_CLASSES: tuple[int, ...] = (SCL_CLOUD_SHADOW,)
SNOW_CLASSES: tuple[int, ...] = (SCL_SNOW,)
NODATA_CLASSES: tuple[int, ...] = (SCL_NO_DATA,)

FRACTION_TOLERANCE = 1e-6
"""Absolute tolerance of fraction comparisons (far below one pixel, 1/3600)."""

DROP_REASONS: tuple[str, ...] = ("nodata", "snow", "cloud_shadow", "lists", "unlabeled",
                                 "no_labels")
"""Drop reasons in priority order; a dropped patch is counted under the first that matches.

* ``nodata``: the patch touches a no-data pixel (any band, or SCL 0 above the threshold);
* ``snow``: SCL snow fraction >= ``drop_snow_fraction``;
* ``cloud_shadow``: SCL cloud + shadow fraction >= ``drop_cloud_shadow_fraction``;
* ``lists``: the patch's v1 name is in an official snow or cloud/shadow list;
* ``unlabeled``: the label rule dropped it (reBEN: >= 25 % unlabeled pixels);
* ``no_labels``: the patch has none of the 43 classes (in the paper every image carries 1 to 12
  labels; under the v1 rule a patch covered only by code 335 or 999, or by no CLC at all, has
  none). Under the reBEN rule such a patch is 100 % unlabeled and dropped as ``unlabeled`` first.
"""


class QualityConfig(StrictModel):
    """Thresholds of the quality flags and drop decisions (fractions of a patch, 0..1).

    Defaults reproduce the paper (drop only fully covered patches) plus reBEN's nodata rule.
    Set a ``drop_*`` threshold to ``None`` to never drop for that reason.
    """

    model_config = ConfigDict(frozen=True)

    flag_snow_above: float = Field(0.0, ge=0.0, le=1.0)
    """``contains_seasonal_snow`` when the snow fraction is > this."""
    flag_cloud_shadow_above: float = Field(0.0, ge=0.0, le=1.0)
    """``contains_cloud_or_shadow`` when the cloud + shadow fraction is > this."""
    drop_snow_fraction: float | None = Field(1.0, ge=0.0, le=1.0)
    """Drop when the snow fraction is >= this (1.0: fully covered, as in v1)."""
    drop_cloud_shadow_fraction: float | None = Field(1.0, ge=0.0, le=1.0)
    """Drop when the cloud + shadow fraction is >= this (1.0: fully covered, as in v1)."""
    drop_nodata_fraction: float | None = Field(0.0, ge=0.0, le=1.0)
    """Drop when the nodata fraction is > this (0.0: any nodata pixel, as in reBEN)."""
    drop_listed: bool = True
    """Drop patches named in the official snow / cloud-and-shadow lists (when given)."""
    drop_unlabeled: bool = True
    """Honour the label rule's ``drop_unlabeled`` decision."""
    drop_no_labels: bool = True
    """Drop patches without any of the 43 classes (the paper: 1-12 labels per image)."""


def scl_fractions(scl: np.ndarray) -> dict[str, np.ndarray]:
    """Per-patch fractions of SCL classes.

    Args:
        scl: ``(n, h, w)`` SCL patches (60 x 60 for BigEarthNet), integer.

    Returns:
        ``{"cloud", "shadow", "cloud_shadow", "snow", "nodata"}`` -> ``float32`` arrays of
        length ``n`` (pixel count / pixels per patch).

    Raises:
        LabelingInputError: ``scl`` is not a 3-D integer array.
    """
    scl = np.asarray(scl)
    if scl.ndim != 3 or scl.dtype.kind not in "iu":
        raise LabelingInputError(
            f"scl_fractions: expected (n, h, w) integer SCL patches, got {scl.dtype} {scl.shape}"
        )
    n_px = scl.shape[1] * scl.shape[2]
    flat = scl.reshape(scl.shape[0], -1)

    def frac(classes: tuple[int, ...]) -> np.ndarray:
        if n_px == 0:
            return np.zeros(scl.shape[0], dtype=np.float32)
        count = np.isin(flat, classes).sum(axis=1)
        return (count / n_px).astype(np.float32)

    return {
        "cloud": frac(CLOUD_CLASSES),
        "shadow": frac(SHADOW_CLASSES),
        "cloud_shadow": frac(CLOUD_CLASSES + SHADOW_CLASSES),
        "snow": frac(SNOW_CLASSES),
        "nodata": frac(NODATA_CLASSES),
    }


def _at_least(values: np.ndarray, threshold: float | None) -> np.ndarray:
    if threshold is None:
        return np.zeros(values.shape, dtype=bool)
    return values.astype(np.float64) >= threshold - FRACTION_TOLERANCE


def _above(values: np.ndarray, threshold: float | None) -> np.ndarray:
    if threshold is None:
        return np.zeros(values.shape, dtype=bool)
    return values.astype(np.float64) > threshold + FRACTION_TOLERANCE


def quality_flags(fractions: dict[str, np.ndarray], config: QualityConfig) -> dict[str, np.ndarray]:
    """Boolean per-patch flags from SCL fractions.

    Args:
        fractions: output of :func:`scl_fractions` (at least ``snow`` and ``cloud_shadow``).
        config: thresholds.

    Returns:
        ``{"contains_seasonal_snow", "contains_cloud_or_shadow"}`` -> bool arrays.
    """
    return {
        "contains_seasonal_snow": _above(np.asarray(fractions["snow"]), config.flag_snow_above),
        "contains_cloud_or_shadow": _above(
            np.asarray(fractions["cloud_shadow"]), config.flag_cloud_shadow_above
        ),
    }


def drop_reason(
    config: QualityConfig,
    *,
    snow_fraction: np.ndarray,
    cloud_shadow_fraction: np.ndarray,
    nodata_fraction: np.ndarray | None = None,
    band_nodata: np.ndarray | None = None,
    listed: np.ndarray | None = None,
    unlabeled_drop: np.ndarray | None = None,
    no_labels: np.ndarray | None = None,
) -> np.ndarray:
    """The first matching drop reason per patch (see :data:`DROP_REASONS`), or ``None``.

    Args:
        config: thresholds and switches.
        snow_fraction: SCL snow fraction per patch.
        cloud_shadow_fraction: SCL cloud + shadow fraction per patch.
        nodata_fraction: SCL no-data fraction per patch (optional).
        band_nodata: True where a patch touches a no-data pixel in any band (optional); it
            counts as ``nodata`` whenever ``config.drop_nodata_fraction`` is not ``None``.
        listed: True where the patch's v1 name is in an official snow/cloud list (optional).
        unlabeled_drop: the label rule's ``drop_unlabeled`` column (optional).
        no_labels: True where a patch has no 43-class label (optional).

    Returns:
        ``object`` array of reason strings or ``None`` (kept), one per patch.

    Raises:
        LabelingInputError: the arrays disagree in length.
    """
    snow = np.asarray(snow_fraction).reshape(-1)
    n = len(snow)
    arrays = {
        "cloud_shadow_fraction": cloud_shadow_fraction,
        "nodata_fraction": nodata_fraction,
        "band_nodata": band_nodata,
        "listed": listed,
        "unlabeled_drop": unlabeled_drop,
        "no_labels": no_labels,
    }
    for name, arr in arrays.items():
        if arr is not None and np.asarray(arr).reshape(-1).shape != (n,):
            raise LabelingInputError(
                f"drop_reason: {name} has {np.asarray(arr).size} values, expected {n}"
            )

    def vec(arr: np.ndarray | None) -> np.ndarray:
        if arr is None:
            return np.zeros(n, dtype=bool)
        return np.asarray(arr).reshape(-1).astype(bool)

    nodata = np.zeros(n, dtype=bool)
    if config.drop_nodata_fraction is not None:
        if nodata_fraction is not None:
            nodata |= _above(np.asarray(nodata_fraction).reshape(-1), config.drop_nodata_fraction)
        nodata |= vec(band_nodata)
    conditions = {
        "nodata": nodata,
        "snow": _at_least(snow, config.drop_snow_fraction),
        "cloud_shadow": _at_least(
            np.asarray(cloud_shadow_fraction).reshape(-1), config.drop_cloud_shadow_fraction
        ),
        "lists": vec(listed) if config.drop_listed else np.zeros(n, dtype=bool),
        "unlabeled": vec(unlabeled_drop) if config.drop_unlabeled else np.zeros(n, dtype=bool),
        "no_labels": vec(no_labels) if config.drop_no_labels else np.zeros(n, dtype=bool),
    }
    out = np.full(n, None, dtype=object)
    undecided = np.ones(n, dtype=bool)
    for reason in DROP_REASONS:
        hit = conditions[reason] & undecided
        out[hit] = reason
        undecided &= ~hit
    return out


def drop_counts(reasons: np.ndarray) -> dict[str, int]:
    """Count dropped patches per reason (each patch once), in :data:`DROP_REASONS` order.

    Args:
        reasons: output of :func:`drop_reason`.
    """
    reasons = np.asarray(reasons, dtype=object)
    return {r: int((reasons == r).sum()) for r in DROP_REASONS}


def read_name_list(path: str | os.PathLike[str]) -> list[str]:
    """Read an official headerless list of patch names (one v1 name per line).

    Handles ``patches_with_seasonal_snow.csv``, ``patches_with_cloud_and_shadow.csv`` and the
    split files ``train.csv`` / ``val.csv`` / ``test.csv``, plain or ``.bz2`` / ``.gz``
    compressed. Blank lines are skipped; when a line has several comma-separated fields (the S1
    variants pair S2 and S1 names) the first one is taken.

    Args:
        path: the CSV file.

    Returns:
        Names in file order.

    Raises:
        InputNotFoundError: the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise InputNotFoundError(f"patch name list {p} does not exist")
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(p.suffix, open)
    with opener(p, "rt", encoding="utf-8-sig") as fh:
        text = fh.read()
    names = []
    for line in text.splitlines():
        name = line.split(",", 1)[0].strip()
        if name:
            names.append(name)
    return names


def in_name_lists(names: Sequence[str] | np.ndarray, *lists: Sequence[str]) -> np.ndarray:
    """True where a patch name appears in any of the given lists.

    Args:
        names: v1 names of the patches.
        *lists: name lists, e.g. from :func:`read_name_list`.

    Returns:
        ``bool`` array, one per name.
    """
    pool: set[str] = set()
    for names_list in lists:
        pool.update(names_list)
    return np.fromiter((str(n) in pool for n in names), dtype=bool, count=len(names))
