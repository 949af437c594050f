"""Stage *pixels*: cut strips of decoded bands into patch tensors and flag no data.

Pure functions over numpy arrays; the reader (:mod:`bigearthnet.sentinel2.reader`) feeds them
strips of whole patch rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from bigearthnet.dataset.schema import BANDS_10M, BANDS_20M, BANDS_60M, SCL_COLUMN, encode_tensor
from bigearthnet.sentinel2.bands import NODATA_VALUE
from bigearthnet.sentinel2.reader import Strip

TENSOR_COLUMNS = (BANDS_10M, BANDS_20M, BANDS_60M, SCL_COLUMN)
"""The pixel columns of the patch table, in schema order."""


def cut_patches(pixels: np.ndarray, n_rows: int, n_cols: int) -> np.ndarray:
    """Cut ``(bands, n_rows*px, n_cols*px)`` into ``(n_rows*n_cols, bands, px, px)``.

    Patches come in row-major order (row 0 col 0, row 0 col 1, …).

    Args:
        pixels: a strip of whole patch rows; a 2-D array is treated as one band.
        n_rows: patch rows in the strip.
        n_cols: patch columns in the strip.
    """
    squeeze = pixels.ndim == 2
    if squeeze:
        pixels = pixels[None]
    bands, height, width = pixels.shape
    px = height // n_rows
    if height != n_rows * px or width != n_cols * px:
        raise ValueError(f"strip {pixels.shape} is not {n_rows}x{n_cols} whole patches")
    out = (
        pixels.reshape(bands, n_rows, px, n_cols, px)
        .transpose(1, 3, 0, 2, 4)
        .reshape(n_rows * n_cols, bands, px, px)
    )
    out = np.ascontiguousarray(out)
    return out[:, 0] if squeeze else out


def nodata_flags(*patch_arrays: np.ndarray) -> np.ndarray:
    """True for each patch (axis 0) with a no-data (0) value in any of the arrays."""
    if NODATA_VALUE != 0:
        raise ValueError("nodata_flags relies on 0 being the smallest unsigned value")
    flags = np.zeros(patch_arrays[0].shape[0], dtype=bool)
    for arr in patch_arrays:
        flags |= arr.reshape(arr.shape[0], -1).min(axis=1) == 0  # no boolean temporary
    return flags


def cut_group(bands: list[np.ndarray], n_rows: int, n_cols: int,
              out: np.ndarray | None = None) -> np.ndarray:
    """Cut same-resolution band strips straight into ``(n_patches, n_bands, px, px)``.

    One copy per band, without stacking the strips first; ``out`` may be a reused buffer of
    the right shape.
    """
    px = bands[0].shape[0] // n_rows
    shape = (n_rows * n_cols, len(bands), px, px)
    if out is None or out.shape != shape:
        out = np.empty(shape, dtype=bands[0].dtype)
    for i, band in enumerate(bands):
        # One strided copy, no temporary: (rows, px, cols, px) -> (rows, cols, px, px) in place.
        target = np.reshape(out[:, i], (n_rows, n_cols, px, px), copy=False)  # raises if not a view
        target[...] = band.reshape(n_rows, px, n_cols, px).transpose(0, 2, 1, 3)
    return out


def strip_patches(strip: Strip, n_cols: int,
                  reuse: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The patch tensors of a strip: ``bands_10m``, ``bands_20m``, ``bands_60m``, ``scl``.

    With ``reuse`` (the previous strip's result), same-shaped band arrays are overwritten in
    place instead of allocating; the caller must be done with them.
    """
    reuse = reuse or {}
    out = {
        col.name: cut_group([strip.bands[b] for b in col.bands], strip.n_rows, n_cols,
                            reuse.get(col.name))
        for col in (BANDS_10M, BANDS_20M, BANDS_60M)
    }
    out[SCL_COLUMN.name] = cut_patches(strip.scl, strip.n_rows, n_cols)
    return out


def pixel_columns(patches: dict[str, np.ndarray]) -> dict[str, pa.Array]:
    """The tensor columns and ``has_nodata`` of the patch table for one strip's patches."""
    cols = {c.name: encode_tensor(patches[c.name], c) for c in TENSOR_COLUMNS}
    cols["has_nodata"] = pa.array(nodata_flags(*patches.values()))
    return cols
