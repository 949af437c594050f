"""Cut strips of pixels into patches and build the Arrow record batches of the patch table.

Pure functions over numpy arrays; the reader (``sentinel2.reader``) feeds them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import shapely

from bigearthnet.dataset.schema import (
    BANDS_10M,
    BANDS_20M,
    BANDS_60M,
    PATCH_SCHEMA,
    SCL_COLUMN,
    encode_tensor,
)
from bigearthnet.sentinel2.bands import NODATA_VALUE
from bigearthnet.sentinel2.grid import PatchGrid
from bigearthnet.sentinel2.naming import ProductName
from bigearthnet.sentinel2.reader import Strip


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


def tiling_columns(
    name: ProductName, grid: PatchGrid, epsg: int, row0: int, n_rows: int,
    patches: dict[str, np.ndarray],
) -> dict[str, pa.Array]:
    """All tiling columns of the patch table for one strip, as Arrow arrays."""
    rows, cols = np.divmod(np.arange(n_rows * grid.n_cols), grid.n_cols)
    rows = rows + row0
    n = rows.size
    left, bottom, right, top = grid.bounds(cols, rows)
    footprints = shapely.to_wkb(shapely.box(left, bottom, right, top))
    v2 = [name.patch_name_v2(int(c), int(r)) for c, r in zip(cols, rows)]
    v1 = [name.patch_name_v1(int(c), int(r)) for c, r in zip(cols, rows)]
    tensors = {c.name: encode_tensor(patches[c.name], c) for c in PATCH_SCHEMA.tensors}
    has_nodata = nodata_flags(*patches.values())
    return {
        "patch_id": pa.array(v2, pa.string()),
        "patch_id_v1": pa.array(v1, pa.string()),
        "product_id": pa.array([name.name] * n, pa.string()),
        "tile_id": pa.array([name.tile] * n, pa.string()),
        "sensing_time": pa.array([name.sensing_time] * n, pa.timestamp("us", tz="UTC")),
        "col": pa.array(cols.astype(np.int16)),
        "row": pa.array(rows.astype(np.int16)),
        "epsg": pa.array(np.full(n, epsg, dtype=np.int32)),
        "footprint": pa.array(list(footprints), pa.binary()),
        **tensors,
        "has_nodata": pa.array(has_nodata),
    }
