"""Rasterized CLC reference maps on the 10 m patch grid (the reBEN pixel-centre rule).

Pure geometry to pixels: polygons and codes in, ``(n_patches, 120, 120)`` uint16 maps out. The
label rules that read these maps live in :mod:`bigearthnet.stages.labels`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely

from bigearthnet.constants import BASE_RESOLUTION_M, PATCH_SIZE_PX
from bigearthnet.errors import LabelingInputError

RESOLUTION_M = float(BASE_RESOLUTION_M)
"""Pixel size of the reference maps."""


def reference_maps(
    geoms: np.ndarray | Sequence[shapely.Geometry],
    codes: np.ndarray | Sequence[int],
    ulx: float,
    uly: float,
    n_rows: int,
    n_cols: int,
    *,
    resolution_m: float = RESOLUTION_M,
    patch_size_px: int = PATCH_SIZE_PX,
    strip_rows: int = 8,
) -> np.ndarray:
    """Rasterize CLC polygons on the 10 m patch grid and cut the raster into patches.

    A pixel takes the code of the polygon containing its centre (GDAL rasterize,
    ``all_touched=False``); pixels whose centre lies in no polygon are 0. Where polygons overlap
    the **largest code wins** (shapes are burnt in ascending code order), so the result does not
    depend on the input order.

    The window is rasterized in strips of ``strip_rows`` patch rows written straight into the
    output, so memory is the output (~227 MiB for a full 91 x 91 tile) plus one strip buffer
    (~21 MiB). To bound memory further, call it per strip of patch rows (``uly - first_row *
    1200``, ``n_rows=k``): only polygons intersecting the window are converted and burnt.

    Args:
        geoms: CLC polygons in the tile CRS (shapely).
        codes: one CLC code per polygon.
        ulx: x of the window's upper-left corner (tile CRS, metres).
        uly: y of the window's upper-left corner.
        n_rows: patch rows in the window.
        n_cols: patch columns in the window.
        resolution_m: pixel size (10 m).
        patch_size_px: patch side in pixels (120).
        strip_rows: patch rows rasterized per GDAL call (speed/memory trade-off only; the
            result does not depend on it).

    Returns:
        ``np.uint16`` array ``(n_rows * n_cols, patch_size_px, patch_size_px)``; patch
        ``row * n_cols + col`` at index ``row * n_cols + col`` (row-major).

    Raises:
        LabelingInputError: lengths disagree or the window is empty.
    """
    from affine import Affine
    from rasterio.features import rasterize

    if n_rows <= 0 or n_cols <= 0:
        raise LabelingInputError(f"reference_maps: empty window {n_rows}x{n_cols} patches")
    geoms = np.asarray(geoms, dtype=object).reshape(-1)
    codes = np.asarray(codes).reshape(-1)
    if len(geoms) != len(codes):
        raise LabelingInputError(f"reference_maps: {len(geoms)} geometries but {len(codes)} codes")
    if codes.size and (codes.dtype.kind not in "iu" or codes.min() < 1 or codes.max() > 65535):
        raise LabelingInputError("reference_maps: codes must be integers in 1..65535")
    width = n_cols * patch_size_px
    step = patch_size_px * resolution_m
    window = shapely.box(ulx, uly - n_rows * step, ulx + n_cols * step, uly)
    sel = np.zeros(len(geoms), dtype=bool)
    if len(geoms):
        present = ~shapely.is_missing(geoms)
        sel[present] = shapely.intersects(geoms[present], window)
    order = np.flatnonzero(sel)
    order = order[np.argsort(codes[order], kind="stable")]
    # Convert each polygon to GeoJSON once; strips below reuse the conversions.
    shapes = [geoms[i].__geo_interface__ for i in order]
    values = [int(v) for v in codes[order]]
    bounds = shapely.bounds(geoms[order]).reshape(-1, 4)
    ymin, ymax = bounds[:, 1], bounds[:, 3]

    out = np.empty((n_rows * n_cols, patch_size_px, patch_size_px), dtype=np.uint16)
    rows_per_strip = max(1, int(strip_rows))
    for r0 in range(0, n_rows, rows_per_strip):
        nr = min(rows_per_strip, n_rows - r0)
        top = uly - r0 * step
        bottom = top - nr * step
        buf = np.zeros((nr * patch_size_px, width), dtype=np.uint16)
        hit = np.flatnonzero((ymin < top) & (ymax > bottom))
        if len(hit):
            rasterize(
                ((shapes[j], values[j]) for j in hit),
                out=buf,
                transform=Affine(resolution_m, 0.0, ulx, 0.0, -resolution_m, top),
                all_touched=False,
            )
        out[r0 * n_cols : (r0 + nr) * n_cols] = (
            buf.reshape(nr, patch_size_px, n_cols, patch_size_px)
            .transpose(0, 2, 1, 3)
            .reshape(nr * n_cols, patch_size_px, patch_size_px)
        )
    return out
