"""Label rules: CLC polygons -> per-patch 43/19-class multi-labels.

Two rules, one output format (:data:`LABEL_SCHEMA`, one row per patch):

* **v1 rule** (:func:`labels_v1`, BigEarthNet v1 / the paper): a patch carries every CLC class
  whose polygons intersect its footprint with a positive area (optionally above a minimum area),
  from the per-(patch, code) areas of :func:`bigearthnet.labeling.sedona.code_areas`.
* **reBEN rule** (:func:`labels_reben`, Clasen et al. 2024): the CLC polygons, reprojected to the
  tile's UTM zone, are rasterized at 10 m with the pixel-centre rule (:func:`reference_maps`);
  a patch carries the classes present in at least one pixel, and is dropped when at least 25 %
  of its pixels are unlabeled (no CLC, or a code without a 19-class name).

Both rules fill the same columns (:data:`LABEL_SCHEMA`, one row per patch). Names and types
match ``bigearthnet.dataset.schema.LABEL_COLUMNS`` except ``patch_index`` and
``drop_unlabeled``, which are for joining and filtering and are not dataset columns:

* ``patch_index`` int32: 0..n-1, row-major (``row * n_cols + col``);
* ``labels_43`` list<string>: 43-class names in official order (``LABELS_43``);
* ``labels_19`` list<string>: 19-class names in official order (``LABELS_19``);
* ``multi_hot_43`` binary: 43 raw uint8 bytes per patch, ``LABELS_43`` order (the dataset's
  tensor-column layout; :func:`multi_hot_array` gives the dense ``(n, 43)`` matrix);
* ``multi_hot_19`` binary: 19 raw uint8 bytes per patch, ``LABELS_19`` order;
* ``clc_codes`` list<string>: CLC codes present, ascending (``"335"`` and ``"999"`` included,
  though they have no 43/19 names);
* ``clc_area_fractions`` list<float32>: fraction of the patch per entry of ``clc_codes``;
* ``unlabeled_fraction`` float32: share of the patch without a 19-class label;
* ``drop_unlabeled`` bool: the rule's drop decision (computed in float64 before rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import shapely

from bigearthnet.clc.nomenclature import (
    CODES_44,
    LABELS_19,
    LABELS_43,
    NO_CLC_CODE,
    UNLABELED_CODE,
    code_lookup_tables,
)
from bigearthnet.errors import LabelingInputError, UnknownClcCodeError

RESOLUTION_M = 10.0
"""Pixel size of the reference maps."""

PATCH_SIZE_PX = 120
"""Patch side in 10 m pixels."""

PATCH_AREA_M2 = 1200.0 * 1200.0
"""Area of one 1200 m patch: 1.44e6 m²."""

MAX_UNLABELED_FRACTION = 0.25
"""reBEN: a patch is dropped when ``unlabeled_fraction >= 0.25``."""

LABEL_SCHEMA = pa.schema(
    [
        pa.field("patch_index", pa.int32(), nullable=False),
        pa.field("labels_43", pa.list_(pa.string()), nullable=False),
        pa.field("labels_19", pa.list_(pa.string()), nullable=False),
        pa.field("multi_hot_43", pa.binary(), nullable=False),
        pa.field("multi_hot_19", pa.binary(), nullable=False),
        pa.field("clc_codes", pa.list_(pa.string()), nullable=False),
        pa.field("clc_area_fractions", pa.list_(pa.float32()), nullable=False),
        pa.field("unlabeled_fraction", pa.float32(), nullable=False),
        pa.field("drop_unlabeled", pa.bool_(), nullable=False),
    ]
)
"""Columns returned by both label rules (one row per patch, ``patch_index`` ascending)."""

# Dense code axis used internally: 0 (no CLC), the 44 Level-3 codes, 999.
_CODE_AXIS = np.array((NO_CLC_CODE, *CODES_44, UNLABELED_CODE), dtype=np.uint16)
_IDX43, _IDX19, _ = code_lookup_tables()
_AXIS_IDX43 = _IDX43[_CODE_AXIS]
_AXIS_IDX19 = _IDX19[_CODE_AXIS]
_AXIS_HAS_19 = _AXIS_IDX19 >= 0
_CODE_STR = np.array([str(c) for c in _CODE_AXIS], dtype=object)
_CODE_TO_AXIS = np.full(65536, -1, dtype=np.int16)
_CODE_TO_AXIS[_CODE_AXIS] = np.arange(len(_CODE_AXIS), dtype=np.int16)


def _axis_positions(codes: np.ndarray, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.size and (codes.dtype.kind not in "iu" or codes.min() < 0 or codes.max() > 65535):
        raise LabelingInputError(f"{what}: CLC codes must be integers in 0..65535")
    pos = _CODE_TO_AXIS[codes.astype(np.int64)] if codes.size else codes.astype(np.int16)
    if codes.size and (pos < 0).any():
        bad = np.unique(codes[pos < 0])[:10].tolist()
        raise UnknownClcCodeError(f"{what}: unknown CLC code(s) {bad}")
    return pos.astype(np.int64)


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


def _build_table(
    patch_index: np.ndarray,
    present: np.ndarray,
    fractions: np.ndarray,
    unlabeled: np.ndarray,
    drop: np.ndarray,
) -> pa.Table:
    """Assemble :data:`LABEL_SCHEMA` from dense (n_patches, len(_CODE_AXIS)) matrices."""
    n = len(patch_index)
    # 0 (no CLC) is never a "code present".
    present = present.copy()
    present[:, 0] = False

    mh43 = np.zeros((n, len(LABELS_43)), dtype=np.uint8)
    mh19 = np.zeros((n, len(LABELS_19)), dtype=np.uint8)
    for k in np.flatnonzero(present.any(axis=0)):
        if _AXIS_IDX43[k] >= 0:
            mh43[present[:, k], _AXIS_IDX43[k]] = 1
        if _AXIS_IDX19[k] >= 0:
            mh19[present[:, k], _AXIS_IDX19[k]] = 1

    def name_lists(mh: np.ndarray, names: tuple[str, ...]) -> pa.Array:
        rows, cols = np.nonzero(mh)  # row-major: per patch in official order
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
        values = pa.array(np.asarray(names, dtype=object)[cols], pa.string())
        return pa.ListArray.from_arrays(pa.array(offsets), values)

    rows, ks = np.nonzero(present)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    codes_col = pa.ListArray.from_arrays(pa.array(offsets), pa.array(_CODE_STR[ks], pa.string()))
    frac_col = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(fractions[rows, ks].astype(np.float32), pa.float32())
    )

    def fixed(mh: np.ndarray) -> pa.Array:
        # Raw bytes, one fixed-width value per patch (the dataset's tensor-column layout).
        width_offsets = np.arange(n + 1, dtype=np.int32) * mh.shape[1]
        return pa.Array.from_buffers(
            pa.binary(),
            n,
            [None, pa.py_buffer(width_offsets), pa.py_buffer(np.ascontiguousarray(mh).tobytes())],
        )

    return pa.Table.from_arrays(
        [
            pa.array(patch_index.astype(np.int32)),
            name_lists(mh43, LABELS_43),
            name_lists(mh19, LABELS_19),
            fixed(mh43),
            fixed(mh19),
            codes_col,
            frac_col,
            pa.array(unlabeled.astype(np.float32)),
            pa.array(drop.astype(bool)),
        ],
        schema=LABEL_SCHEMA,
    )


def labels_v1(
    areas: pa.Table,
    n_patches: int,
    min_area_m2: float = 0.0,
    *,
    patch_area_m2: float = PATCH_AREA_M2,
    max_unlabeled_fraction: float | None = None,
) -> pa.Table:
    """The BigEarthNet v1 rule: every CLC class intersecting the patch with enough area.

    A code is present when its summed intersection area is ``> min_area_m2`` (``0`` = any
    positive area, the natural reading of the unpublished v1 code).

    ``clc_area_fractions`` = area / ``patch_area_m2`` per present code (codes 335 and 999 included;
    they have no 43/19 names). ``unlabeled_fraction`` = 1 - (area of present codes that have a
    19-class name) / ``patch_area_m2``, clipped to [0, 1] (overlapping polygons could otherwise
    push it below 0); areas below ``min_area_m2`` therefore count as unlabeled.

    Args:
        areas: table with ``patch_index`` (0..n_patches-1), ``code`` and ``area_m2`` columns,
            e.g. from :func:`bigearthnet.labeling.sedona.code_areas`; rows for the same
            (patch, code) are summed.
        n_patches: number of patches (rows of the result); patches absent from ``areas`` get no
            labels and ``unlabeled_fraction`` 1.
        min_area_m2: area a code must exceed in a patch to count.
        patch_area_m2: patch area (1.44e6 m²).
        max_unlabeled_fraction: when given, ``drop_unlabeled = unlabeled_fraction >=`` this
            value; ``None`` (v1 behaviour) never drops.

    Returns:
        Arrow table with :data:`LABEL_SCHEMA`, ``n_patches`` rows, ``patch_index`` 0..n-1.

    Raises:
        LabelingInputError: missing columns, or patch indices outside ``[0, n_patches)``.
        UnknownClcCodeError: a code is not a CLC 2018 code (or 999).
    """
    for col in ("patch_index", "code", "area_m2"):
        if col not in areas.column_names:
            raise LabelingInputError(f"labels_v1: areas table lacks column {col!r}")
    if n_patches < 0:
        raise LabelingInputError(f"labels_v1: n_patches must be >= 0, got {n_patches}")
    pidx = areas["patch_index"].to_numpy().astype(np.int64)
    area = areas["area_m2"].to_numpy().astype(np.float64)
    if pidx.size and (pidx.min() < 0 or pidx.max() >= n_patches):
        raise LabelingInputError(
            f"labels_v1: patch_index values must lie in [0, {n_patches}), got "
            f"{pidx.min()}..{pidx.max()}"
        )
    codes = areas["code"].to_numpy()
    if codes.size and (codes == NO_CLC_CODE).any():
        raise UnknownClcCodeError("labels_v1: code 0 is not a CLC code")
    axis = _axis_positions(codes, "labels_v1")
    total = np.zeros((n_patches, len(_CODE_AXIS)), dtype=np.float64)
    np.add.at(total, (pidx, axis), area)
    present = total > min_area_m2
    fractions = total / patch_area_m2
    labeled = (fractions * (present & _AXIS_HAS_19[None, :])).sum(axis=1)
    unlabeled = np.clip(1.0 - labeled, 0.0, 1.0)
    if max_unlabeled_fraction is None:
        drop = np.zeros(n_patches, dtype=bool)
    else:
        drop = unlabeled >= max_unlabeled_fraction
    return _build_table(np.arange(n_patches), present, fractions, unlabeled, drop)


def labels_reben(
    maps: np.ndarray,
    max_unlabeled_fraction: float = MAX_UNLABELED_FRACTION,
) -> pa.Table:
    """The reBEN rule on rasterized reference maps.

    A code is present when it occupies at least one pixel of the patch. ``clc_area_fractions`` =
    pixels / pixels per patch. ``unlabeled_fraction`` = pixels with no CLC (0) or with a code
    that has no 19-class name (e.g. 122, 335, 999), over pixels per patch; it is an exact ratio
    of integers, so ``drop_unlabeled = unlabeled_fraction >= max_unlabeled_fraction`` is exact
    at pixel counts such as 3600/14400 = 0.25 (dropped) vs 3599/14400 (kept).

    Args:
        maps: ``(n, h, w)`` integer reference maps from :func:`reference_maps`.
        max_unlabeled_fraction: drop threshold (0.25 in reBEN).

    Returns:
        Arrow table with :data:`LABEL_SCHEMA`, ``n`` rows, ``patch_index`` 0..n-1.

    Raises:
        LabelingInputError: ``maps`` is not a 3-D integer array.
        UnknownClcCodeError: a map holds a value that is neither 0 nor a CLC code.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.dtype.kind not in "iu":
        raise LabelingInputError(
            f"labels_reben: expected (n, h, w) integer maps, got {maps.dtype} {maps.shape}"
        )
    n, h, w = maps.shape
    n_px = h * w
    if maps.size and (int(maps.min()) < 0 or int(maps.max()) >= 1000):
        bad = np.unique(maps[(maps < 0) | (maps >= 1000)])[:10].tolist()
        raise UnknownClcCodeError(f"labels_reben: unknown CLC code(s) {bad} in reference maps")
    counts = np.zeros((n, len(_CODE_AXIS)), dtype=np.int64)
    for i in range(n):  # one small bincount per patch is faster than one huge one
        full = np.bincount(maps[i].reshape(-1), minlength=1000)
        counts[i] = full[_CODE_AXIS]
        if counts[i].sum() != n_px:
            unknown = np.setdiff1d(np.flatnonzero(full), _CODE_AXIS)[:10].tolist()
            raise UnknownClcCodeError(
                f"labels_reben: unknown CLC code(s) {unknown} in reference map {i}"
            )
    present = counts > 0
    fractions = counts / n_px
    labeled_px = counts[:, _AXIS_HAS_19].sum(axis=1)
    unlabeled = (n_px - labeled_px) / n_px
    drop = unlabeled >= max_unlabeled_fraction
    return _build_table(np.arange(n), present, fractions, unlabeled, drop)


def multi_hot_array(table: pa.Table, column: str = "multi_hot_43") -> np.ndarray:
    """Dense ``(n, K)`` uint8 matrix from a ``multi_hot_*`` column of a label table.

    Args:
        table: a table with :data:`LABEL_SCHEMA` columns.
        column: ``"multi_hot_43"`` or ``"multi_hot_19"``.

    Raises:
        LabelingInputError: the column's values do not all have the same width.
    """
    size = len(LABELS_43) if column.endswith("43") else len(LABELS_19)
    values = table[column].combine_chunks()
    n = len(values)
    if n == 0:
        return np.zeros((0, size), dtype=np.uint8)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[
        values.offset : values.offset + n + 1
    ]
    if (np.diff(offsets) != size).any():
        raise LabelingInputError(f"multi_hot_array: {column} values are not all {size} bytes")
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(n, size)
