"""Spatial SQL on the embedded Apache SedonaDB engine: reprojection and the patch x CLC join.

SedonaDB (``sedonadb``) runs in-process, so it works inside one Spark task: each function here
handles one tile's worth of data. One :class:`sedonadb.SedonaContext` is created lazily per
thread and reused (creating the first one costs ~0.2 s, later ones ~2 ms); every call registers
its inputs under fresh, unique view names and drops them before returning, so calls never see
each other's data.

Facts this module relies on (sedonadb 0.5.0, checked by the tests):

* ``ST_Transform`` uses PROJ and matches ``pyproj`` to the last bit for EPSG codes;
* ``ST_Intersects`` is true for polygons that only touch, with an intersection area of 0, so
  areas are filtered with ``> 0``;
* query results come back in no particular order, so every input carries an index and the
  results are sorted in Arrow.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import pyarrow as pa
import shapely

from bigearthnet.errors import LabelingInputError

CrsLike = Any
"""Anything :meth:`pyproj.CRS.from_user_input` accepts (``32629``, ``"EPSG:3035"``, WKT...)."""

GeometriesLike = Any
"""A shapely geometry array/sequence, a sequence of WKB ``bytes``, or an Arrow binary array."""

_local = threading.local()


def sedona_context() -> Any:
    """The calling thread's SedonaDB context, created on first use.

    Returns:
        A :class:`sedonadb.context.SedonaContext`.
    """
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        import sedonadb

        ctx = sedonadb.connect()
        _local.ctx = ctx
    return ctx


@contextmanager
def registered_views(ctx: Any, **tables: pa.Table) -> Iterator[dict[str, str]]:
    """Register Arrow tables as uniquely named views and drop them on exit.

    Args:
        ctx: a SedonaDB context.
        **tables: logical name -> Arrow table.

    Yields:
        Logical name -> the actual (unique) view name to use in SQL.
    """
    names: dict[str, str] = {}
    try:
        for key, table in tables.items():
            view = f"{key}_{uuid.uuid4().hex}"
            ctx.create_data_frame(table).to_view(view)
            names[key] = view
        yield names
    finally:
        for view in names.values():
            # Best-effort cleanup: it must not mask the error that ended the block.
            with suppress(Exception):
                ctx.drop_view(view)


def crs_sql_literal(crs: CrsLike) -> str:
    """A CRS as a quoted SQL string literal for ``ST_Transform`` / ``ST_SetCRS``.

    ``EPSG:n`` when the CRS is exactly an EPSG CRS, PROJJSON otherwise.

    Args:
        crs: any CRS pyproj understands.

    Returns:
        The literal including its single quotes.
    """
    from pyproj import CRS

    parsed = CRS.from_user_input(crs)
    epsg = parsed.to_epsg(min_confidence=100)
    text = f"EPSG:{epsg}" if epsg is not None else parsed.to_json()
    return "'" + text.replace("'", "''") + "'"


def to_wkb_array(geoms: GeometriesLike, what: str = "geometries") -> pa.Array:
    """Normalise geometries to an Arrow ``binary`` array of WKB.

    Args:
        geoms: shapely geometries, WKB ``bytes``, or an Arrow (extension) binary array.
        what: used in error messages.

    Returns:
        A ``pa.binary()`` array (no nulls).

    Raises:
        LabelingInputError: nulls or objects that are neither geometries nor bytes.
    """
    if isinstance(geoms, pa.ChunkedArray):
        geoms = geoms.combine_chunks()
    if isinstance(geoms, pa.ExtensionArray):
        geoms = geoms.storage
    if isinstance(geoms, pa.Array):
        if geoms.null_count:
            raise LabelingInputError(f"{what}: {geoms.null_count} null geometries")
        return geoms.cast(pa.binary())
    items = np.asarray(geoms, dtype=object) if not isinstance(geoms, np.ndarray) else geoms
    if items.ndim != 1:
        items = items.reshape(-1)
    if len(items) == 0:
        return pa.array([], pa.binary())
    first = items[0]
    if isinstance(first, (bytes, bytearray, memoryview)):
        return pa.array([bytes(b) for b in items], pa.binary())
    if not all(isinstance(g, shapely.Geometry) for g in items):
        raise LabelingInputError(f"{what}: expected shapely geometries or WKB bytes (or None)")
    return pa.array(shapely.to_wkb(items), pa.binary())


def _geoarrow_wkb(wkb: pa.Array, crs: CrsLike | None = None) -> pa.Array:
    import geoarrow.pyarrow as ga

    ext = ga.wkb()
    if crs is not None:
        from pyproj import CRS

        ext = ext.with_crs(CRS.from_user_input(crs).to_json())
    return pa.ExtensionArray.from_storage(ext, wkb)


def _result_wkb(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    return shapely.from_wkb(column.cast(pa.binary()).to_numpy(zero_copy_only=False))


def transform_geometries(
    geoms: GeometriesLike,
    src_crs: CrsLike,
    dst_crs: CrsLike,
    clip_bounds: tuple[float, float, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reproject geometries with SedonaDB ``ST_Transform`` and optionally keep only those
    intersecting a box.

    Coordinates are transformed vertex by vertex (no densification); CLC polygon edges are
    short (tens of metres) so the curvature error of a UTM <-> LAEA transform is negligible.

    Args:
        geoms: geometries in ``src_crs``.
        src_crs: CRS of ``geoms``.
        dst_crs: target CRS.
        clip_bounds: ``(minx, miny, maxx, maxy)`` in ``dst_crs``; when given, only geometries
            that intersect (or touch) this box are returned. Geometries are not clipped.

    Returns:
        ``(index, geoms)``: the positions in the input of the returned geometries (ascending
        ``int64``) and the reprojected shapely geometries.
    """
    wkb = to_wkb_array(geoms)
    n = len(wkb)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, dtype=object)
    table = pa.table(
        {"idx": pa.array(np.arange(n, dtype=np.int64)), "geom": _geoarrow_wkb(wkb, src_crs)}
    )
    dst = crs_sql_literal(dst_crs)
    hit = "TRUE"
    if clip_bounds is not None:
        minx, miny, maxx, maxy = (float(v) for v in clip_bounds)
        box_wkt = (
            f"POLYGON(({minx!r} {miny!r}, {maxx!r} {miny!r}, {maxx!r} {maxy!r}, "
            f"{minx!r} {maxy!r}, {minx!r} {miny!r}))"
        )
        hit = f"ST_Intersects(geom, ST_SetCRS(ST_GeomFromWKT('{box_wkt}'), {dst}))"
    ctx = sedona_context()
    with registered_views(ctx, src=table) as views:
        # The intersects test is a column, filtered in Arrow: a SQL WHERE on the transformed
        # geometry makes SedonaDB 0.5 evaluate ST_Transform twice (2x slower).
        sql = (
            f"SELECT idx, geom, {hit} AS hit FROM ("
            f"SELECT idx, ST_Transform(geom, {dst}) AS geom FROM {views['src']}"
            f") AS t"
        )
        result = ctx.sql(sql).to_arrow_table()
    result = result.filter(result["hit"]).sort_by("idx")
    return result["idx"].to_numpy().astype(np.int64), _result_wkb(result["geom"])


AREA_SCHEMA = pa.schema(
    [
        pa.field("patch_index", pa.int32(), nullable=False),
        pa.field("code", pa.uint16(), nullable=False),
        pa.field("area_m2", pa.float64(), nullable=False),
    ]
)
"""Schema of :func:`code_areas`' result."""


def code_areas(
    footprints: GeometriesLike,
    patch_index: np.ndarray | Sequence[int],
    polygons: GeometriesLike,
    codes: np.ndarray | Sequence[int],
) -> pa.Table:
    """Area of each CLC code inside each patch footprint, computed by a SedonaDB SQL join.

    The query is::

        SELECT f.patch_index, c.code, SUM(ST_Area(ST_Intersection(f.geom, c.geom))) AS area_m2
        FROM footprints f JOIN clc c ON ST_Intersects(f.geom, c.geom)
        GROUP BY f.patch_index, c.code

    and rows with ``area_m2 <= 0`` (polygons that only touch a footprint) are dropped. Areas are
    planar, in the squared unit of the (shared) CRS of both inputs, i.e. m² for UTM. Polygons
    that overlap each other are summed per code, so per-patch totals can exceed the footprint
    area when the CLC layer has overlaps.

    Args:
        footprints: patch footprints (polygons, one per patch), in the same CRS as ``polygons``.
        patch_index: one integer id per footprint (e.g. ``row * n_cols + col``); need not be
            contiguous or unique (duplicates are merged).
        polygons: CLC polygons.
        codes: one CLC code per polygon (integers, e.g. ``uint16``).

    Returns:
        Arrow table with :data:`AREA_SCHEMA` ``(patch_index int32, code uint16, area_m2
        float64)``, sorted by ``(patch_index, code)``; only pairs with a positive area.

    Raises:
        LabelingInputError: input lengths disagree or codes are not integers in 0..65535.
    """
    fp_wkb = to_wkb_array(footprints, "footprints")
    poly_wkb = to_wkb_array(polygons, "polygons")
    pidx = np.asarray(patch_index)
    code_arr = np.asarray(codes)
    if pidx.shape != (len(fp_wkb),):
        raise LabelingInputError(
            f"code_areas: {len(fp_wkb)} footprints but patch_index has shape {pidx.shape}"
        )
    if code_arr.shape != (len(poly_wkb),):
        raise LabelingInputError(
            f"code_areas: {len(poly_wkb)} polygons but codes has shape {code_arr.shape}"
        )
    if code_arr.size and (
        code_arr.dtype.kind not in "iu" or code_arr.min() < 0 or code_arr.max() > 65535
    ):
        raise LabelingInputError(
            "code_areas: codes must be integers in 0..65535 (CLC Level-3 codes such as 311)"
        )
    if pidx.size and pidx.dtype.kind not in "iu":
        raise LabelingInputError("code_areas: patch_index must be integers")
    if len(fp_wkb) == 0 or len(poly_wkb) == 0:
        return AREA_SCHEMA.empty_table()

    fp = pa.table({"patch_index": pa.array(pidx.astype(np.int32)), "geom": _geoarrow_wkb(fp_wkb)})
    clc = pa.table({"polygon": pa.array(np.arange(len(poly_wkb), dtype=np.int64)),
                    "code": pa.array(code_arr.astype(np.uint16)), "geom": _geoarrow_wkb(poly_wkb)})
    ctx = sedona_context()
    with registered_views(ctx, fp=fp, clc=clc) as v:
        sql = f"""
            SELECT f.patch_index AS patch_index, c.polygon AS polygon, c.code AS code,
                   ST_Area(ST_Intersection(f.geom, c.geom)) AS area_m2
            FROM {v["fp"]} AS f JOIN {v["clc"]} AS c ON ST_Intersects(f.geom, c.geom)
        """
        pieces = ctx.sql(sql).to_arrow_table()
    return sum_code_areas(pieces)


def sum_code_areas(pieces: pa.Table) -> pa.Table:
    """Sum per-(patch, polygon) intersection areas into per-(patch, code) areas, in a fixed order.

    The join engines return one area per (patch, polygon) pair in no particular order (SedonaDB
    and Spark are multi-threaded); summing them here, ordered by ``(patch_index, code,
    polygon)``, makes the float64 sums independent of the engine's scheduling.

    Args:
        pieces: ``patch_index``, ``polygon`` (the polygon's position in the tile's CLC window),
            ``code`` and ``area_m2`` columns.

    Returns:
        :data:`AREA_SCHEMA` rows with a positive area, sorted by ``(patch_index, code)``.
    """
    if pieces.num_rows == 0:
        return AREA_SCHEMA.empty_table()
    pidx = pieces["patch_index"].to_numpy().astype(np.int64)
    poly = pieces["polygon"].to_numpy().astype(np.int64)
    code = pieces["code"].to_numpy().astype(np.int64)
    area = pieces["area_m2"].to_numpy().astype(np.float64)
    order = np.lexsort((poly, code, pidx))
    pidx, code, area = pidx[order], code[order], area[order]
    start = np.flatnonzero(np.r_[True, (pidx[1:] != pidx[:-1]) | (code[1:] != code[:-1])])
    sums = np.array([math.fsum(area[a:b]) for a, b in zip(start, np.r_[start[1:], len(area)])])
    keep = sums > 0
    return pa.table(
        [
            pa.array(pidx[start][keep].astype(np.int32)),
            pa.array(code[start][keep].astype(np.uint16)),
            pa.array(sums[keep]),
        ],
        schema=AREA_SCHEMA,
    )
