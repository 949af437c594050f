"""Stage *labels*: footprints x CLC -> one label row per patch, under the v1 or reBEN rule.

The stage has three replaceable parts:

* **CLC window** (:func:`read_tile_clc`): the CLC polygons around a tile, reprojected to its UTM
  zone (:func:`bigearthnet.clc.reader.read_clc_bbox`);
* **join engine** (:class:`LabelEngine`): per (patch, code) intersection areas, the input of
  the v1 rule. :class:`SedonaDBEngine` runs the SedonaDB SQL join inside the task; an engine
  that runs elsewhere (e.g. a Spark plan) hands its areas to :class:`TileLabels` instead;
* **rules**, one output format (:data:`~bigearthnet.dataset.schema.LABEL_SCHEMA`):

  * **v1 rule** (:func:`labels_v1`, BigEarthNet v1 / the paper): a patch carries every CLC
    class whose polygons intersect its footprint with a positive area (optionally above a
    minimum area);
  * **reBEN rule** (:func:`labels_reben`, Clasen et al. 2024): the polygons are rasterized at
    10 m with the pixel-centre rule (:func:`bigearthnet.labeling.raster.reference_maps`); a
    patch carries the classes present in at least one pixel, and is dropped when at least 25 %
    of its pixels are unlabeled (no CLC, or a code without a 19-class name).

Label table columns (``LABEL_SCHEMA``): ``patch_index`` int32 0..n-1 row-major; ``labels_43`` and
``labels_19`` (names in official order); ``multi_hot_43``/``multi_hot_19`` (raw uint8 bytes, the
dataset's tensor layout; :func:`multi_hot_array` gives the dense matrix); ``clc_codes`` (present
codes ascending, ``"335"`` and ``"999"`` included though they have no 43/19 names);
``clc_area_fractions``; ``unlabeled_fraction`` (share without a 19-class label);
``drop_unlabeled`` (the rule's decision, computed in float64 before rounding).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa

from bigearthnet.clc.nomenclature import (
    CODES_44,
    LABELS_19,
    LABELS_43,
    NO_CLC_CODE,
    UNLABELED_CODE,
    code_lookup_tables,
)
from bigearthnet.config import BuildConfig
from bigearthnet.constants import PATCH_AREA_M2, PATCH_SIZE_M, REBEN_MAX_UNLABELED_FRACTION
from bigearthnet.dataset.schema import LABEL_SCHEMA
from bigearthnet.errors import ConfigError, LabelingInputError, UnknownClcCodeError
from bigearthnet.labeling.raster import reference_maps
from bigearthnet.stages.plan import TilePlan

MAX_UNLABELED_FRACTION = REBEN_MAX_UNLABELED_FRACTION

FRACTION_RESIDUE = 1e-9
"""v1 rule: an unlabeled share within this of 0 or 1 is taken as exactly 0 or 1 (1e-9 of a patch
is 1.4e-3 m², far below any CLC polygon; float64 area sums leave ~1e-16)."""
"""reBEN: a patch is dropped when ``unlabeled_fraction >= 0.25``."""

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
    # Float64 residue of summing areas (~1e-16) is not a real share of the patch: snap it, so
    # the result does not depend on the summation order of the join engine.
    unlabeled[unlabeled < FRACTION_RESIDUE] = 0.0
    unlabeled[unlabeled > 1.0 - FRACTION_RESIDUE] = 1.0
    if max_unlabeled_fraction is None:
        drop = np.zeros(n_patches, dtype=bool)
    else:
        drop = unlabeled >= max_unlabeled_fraction
    return _build_table(np.arange(n_patches), present, fractions, unlabeled, drop)


def labels_reben(
    maps: np.ndarray,
    max_unlabeled_fraction: float = REBEN_MAX_UNLABELED_FRACTION,
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


# --------------------------------------------------------------------------------------------
# CLC window, join engines and the per-tile composition


@dataclass
class TileClc:
    """The CLC polygons around one tile, in the tile's UTM CRS.

    Args:
        codes: ``uint16`` CLC code per polygon.
        geoms: shapely polygons, same length.
        stats: the reader's counts (``read``, ``invalid_repaired``, ``dropped_empty``, ...).
    """

    codes: np.ndarray
    geoms: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)


def read_tile_clc(clc_path: str, plan: TilePlan) -> TileClc:
    """Read the CLC polygons covering a tile's patches (GeoPackage bbox read, reprojected).

    Raises:
        InputNotFoundError, ClcReadError, ClcSchemaError, UnknownClcCodeError: bad CLC input.
    """
    from bigearthnet.clc.reader import read_clc_bbox

    codes, geoms, stats = read_clc_bbox(clc_path, plan.extent, f"EPSG:{plan.epsg}")
    return TileClc(codes, geoms, stats)


class LabelEngine(Protocol):
    """Computes per (patch, code) intersection areas for a tile: the v1 rule's input."""

    name: str

    def code_areas(self, plan: TilePlan, clc: TileClc) -> pa.Table:
        """``AREA_SCHEMA`` rows (``patch_index``, ``code``, ``area_m2``), sorted, area > 0."""
        ...


class SedonaDBEngine:
    """The embedded SedonaDB SQL join, run inside the task that holds the tile."""

    name = "sedonadb"

    def code_areas(self, plan: TilePlan, clc: TileClc) -> pa.Table:
        """Join the tile's footprints with its CLC window in SedonaDB SQL."""
        from bigearthnet.labeling.sedona import code_areas

        return code_areas(plan.footprints(), np.arange(plan.n_patches), clc.geoms, clc.codes)


ENGINES: dict[str, type] = {SedonaDBEngine.name: SedonaDBEngine}
"""Label engines that run inside the pixel task, by config name (``label_engine``). Engines that
run before the tasks, over all tiles, are in ``bigearthnet.spark.build.PLAN_ENGINES``."""


@dataclass(frozen=True)
class LabelRule:
    """A label rule: what it needs and how it turns it into label rows.

    Args:
        name: the config name (``label_rule``).
        needs_areas: it reads per (patch, code) areas from a join engine.
        needs_maps: it reads the 10 m reference maps.
        apply: ``(areas, maps, n_patches, cfg) -> LABEL_SCHEMA rows``; ``areas`` holds the
            strip's rows with ``patch_index`` counted from the strip's first patch.
    """

    name: str
    needs_areas: bool
    needs_maps: bool
    apply: Callable[[pa.Table | None, np.ndarray | None, int, BuildConfig], pa.Table]


RULES: dict[str, LabelRule] = {
    rule.name: rule
    for rule in (
        LabelRule("v1", needs_areas=True, needs_maps=False,
                  apply=lambda areas, maps, n, cfg: labels_v1(areas, n, cfg.min_area_m2)),
        LabelRule("reben", needs_areas=False, needs_maps=True,
                  apply=lambda areas, maps, n, cfg: labels_reben(maps, cfg.max_unlabeled_fraction)),
    )
}
"""The label rules by config name (``label_rule``)."""


class TileLabels:
    """Label rows of one tile, strip by strip, under the configured rule.

    Args:
        plan: the tile's plan.
        clc: its CLC window.
        cfg: ``label_rule``, ``min_area_m2``, ``max_unlabeled_fraction``, ``reference_maps``.
        areas: per (patch, code) areas of the whole tile (v1 rule); computed here with
            :class:`SedonaDBEngine` when not given.

    Attributes:
        seconds: time spent labelling (join, rasterization, rules), for the manifest.
    """

    def __init__(self, plan: TilePlan, clc: TileClc, cfg: BuildConfig,
                 areas: pa.Table | None = None) -> None:
        t0 = time.perf_counter()
        self.plan, self.clc, self.cfg = plan, clc, cfg
        self.rule = RULES[cfg.label_rule]
        self.areas = None
        if self.rule.needs_areas:
            if areas is None:
                engine = ENGINES.get(cfg.label_engine)
                if engine is None:
                    raise ConfigError(
                        f"label engine {cfg.label_engine!r} runs before the pixel tasks, but no "
                        f"areas were handed to the task of {plan.product_id}"
                    )
                areas = engine().code_areas(plan, clc)
            self.areas = areas
            self.area_index = np.asarray(self.areas["patch_index"])
        self.seconds = time.perf_counter() - t0

    @property
    def wants_maps(self) -> bool:
        """Reference maps are needed (stored, or the reBEN rule)."""
        return self.cfg.reference_maps or self.rule.needs_maps

    def strip(self, row0: int, n_rows: int) -> tuple[pa.Table, np.ndarray | None]:
        """The label table of ``n_rows`` patch rows from ``row0`` and their reference maps.

        Returns:
            ``(labels, maps)``: a ``LABEL_SCHEMA`` table with ``patch_index`` counted from the
            strip's first patch, and the ``(n, 120, 120)`` uint16 maps (``None`` when neither
            stored nor needed).
        """
        t0 = time.perf_counter()
        grid = self.plan.grid
        n_cols = grid.n_cols
        maps = None
        if self.wants_maps:
            maps = reference_maps(self.clc.geoms, self.clc.codes, grid.ulx,
                                  grid.uly - row0 * PATCH_SIZE_M, n_rows, n_cols)
        part = None
        if self.areas is not None:
            lo, hi = row0 * n_cols, (row0 + n_rows) * n_cols
            a, b = np.searchsorted(self.area_index, [lo, hi])
            part = self.areas.slice(a, b - a)
            part = part.set_column(0, "patch_index",
                                   pa.array(np.asarray(part["patch_index"]) - lo, pa.int32()))
        table = self.rule.apply(part, maps, n_rows * n_cols, self.cfg)
        self.seconds += time.perf_counter() - t0
        return table, maps


def rule_columns(labels: pa.Table) -> dict[str, pa.Array]:
    """The patch-table columns of a label table (``multi_hot_*`` as plain binary)."""
    cols = {c: labels[c].combine_chunks() for c in ("labels_43", "labels_19", "clc_codes",
                                                    "clc_area_fractions", "unlabeled_fraction")}
    for c in ("multi_hot_43", "multi_hot_19"):
        cols[c] = labels[c].combine_chunks().cast(pa.binary())
    return cols


def no_43_labels(labels: pa.Table) -> np.ndarray:
    """True where a label row has none of the 43 classes."""
    return multi_hot_array(labels, "multi_hot_43").sum(axis=1) == 0
