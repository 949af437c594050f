"""Read the CORINE Land Cover 2018 polygons that cover one tile (or strip).

Only the polygons near the tile are read: the tile bounds (plus a margin) are transformed to the
layer's CRS (EPSG:3035 for the official CLC 2018 GeoPackage) with densified edges, and passed to
``pyogrio.read_arrow(bbox=...)``, which GDAL answers from the GeoPackage R-tree index. The
polygons are then validated, repaired, reprojected to the tile CRS with SedonaDB's
``ST_Transform`` and filtered exactly: the result holds exactly the polygons that intersect (or
touch) ``bounds`` in the tile CRS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from pyproj import CRS, Transformer

from bigearthnet.clc.nomenclature import KNOWN_CODES
from bigearthnet.errors import ClcReadError, ClcSchemaError, InputNotFoundError, UnknownClcCodeError
from bigearthnet.labeling.sedona import CrsLike, transform_geometries
from bigearthnet.storage import ObjectStore, S3Uri, is_s3_uri

CODE_COLUMN = "Code_18"
"""Attribute holding the three-digit CLC 2018 Level-3 code in the official vector products."""

_DAMAGED = ("The file is damaged or not a GeoPackage: re-download the CLC 2018 GeoPackage, or "
            "fix --clc")

_POLYGONAL = (shapely.GeometryType.POLYGON, shapely.GeometryType.MULTIPOLYGON)


def polygonal_part(geom: shapely.Geometry) -> shapely.Geometry | None:
    """Keep only the polygonal part of a geometry (e.g. the output of ``make_valid``).

    Args:
        geom: any shapely geometry.

    Returns:
        A Polygon or MultiPolygon, or ``None`` when nothing polygonal with positive area is left.
    """
    if geom is None or geom.is_empty:
        return None
    if shapely.get_type_id(geom) in _POLYGONAL:
        return geom
    parts = shapely.get_parts(geom)
    polys: list[shapely.Geometry] = []
    for part in parts:
        tid = shapely.get_type_id(part)
        if tid == shapely.GeometryType.POLYGON:
            polys.append(part)
        elif tid == shapely.GeometryType.MULTIPOLYGON:
            polys.extend(shapely.get_parts(part))
        elif tid == shapely.GeometryType.GEOMETRYCOLLECTION:
            sub = polygonal_part(part)
            if sub is not None:
                polys.extend(shapely.get_parts(sub))
    polys = [p for p in polys if not p.is_empty and p.area > 0]
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def repair_polygons(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Repair invalid polygons with ``shapely.make_valid`` keeping only polygonal parts.

    Args:
        geoms: shapely geometries (may contain ``None``).

    Returns:
        ``(geoms, keep, n_repaired)``: the repaired array (same length), a boolean mask of the
        entries that are non-empty polygons after repair, and how many were invalid.
    """
    geoms = np.asarray(geoms, dtype=object).copy()
    present = ~shapely.is_missing(geoms)
    invalid = present & ~shapely.is_valid(geoms)
    not_polygonal = present & ~np.isin(shapely.get_type_id(geoms), [int(t) for t in _POLYGONAL])
    fix = invalid | not_polygonal
    n_repaired = int(invalid.sum())
    if fix.any():
        fixed = shapely.make_valid(geoms[fix])
        geoms[fix] = np.array([polygonal_part(g) for g in fixed], dtype=object)
    keep = ~shapely.is_missing(geoms)
    keep[keep] = ~shapely.is_empty(geoms[keep])
    return geoms, keep, n_repaired


def _parse_codes(column: pa.ChunkedArray | pa.Array, path: str, code_column: str) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise UnknownClcCodeError(
            f"{path}: {column.null_count} polygon(s) have no {code_column} value; every CLC "
            "polygon needs a Level-3 code (999 marks NODATA)"
        )
    if pa.types.is_integer(column.type):
        values = column.to_numpy().astype(np.int64)
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        stripped = pc.utf8_trim_whitespace(column)
        is_digit = pc.utf8_is_digit(stripped)
        if len(stripped) and not pc.all(is_digit).as_py():
            bad = pc.filter(stripped, pc.invert(is_digit)).unique().to_pylist()[:5]
            raise UnknownClcCodeError(
                f"{path}: {code_column} holds non-numeric CLC code(s) {bad}; expected "
                "three-digit CLC 2018 Level-3 codes such as '311'"
            )
        values = pc.cast(stripped, pa.int64()).to_numpy()
    else:
        raise ClcSchemaError(
            f"{path}: column {code_column} has type {column.type}; expected string or integer "
            "CLC codes"
        )
    uniq = np.unique(values)
    unknown = [int(c) for c in uniq if int(c) not in KNOWN_CODES]
    if unknown:
        raise UnknownClcCodeError(
            f"{path}: unknown CLC code(s) {unknown[:10]} in {code_column}; valid codes are the 44 "
            "CLC 2018 Level-3 codes (111..523) and 999 (NODATA)"
        )
    return values.astype(np.uint16)


def _geometry_column(table: pa.Table, meta: dict[str, Any], path: str) -> pa.Array:
    name = meta.get("geometry_name") or "wkb_geometry"
    if name not in table.column_names:
        candidates = [
            f.name
            for f in table.schema
            if (f.metadata or {}).get(b"ARROW:extension:name") == b"geoarrow.wkb"
        ]
        if not candidates:
            raise ClcSchemaError(f"{path}: the CLC layer has no geometry column")
        name = candidates[0]
    col = table[name].combine_chunks()
    if isinstance(col, pa.ExtensionArray):
        col = col.storage
    return col


def read_clc_bbox(
    path: str | os.PathLike[str],
    bounds: tuple[float, float, float, float],
    crs: CrsLike,
    *,
    layer: str | int | None = None,
    code_column: str = CODE_COLUMN,
    margin_m: float = 100.0,
    densify_pts: int = 21,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Read the CLC polygons intersecting a tile's bounds, reprojected to the tile CRS.

    Args:
        path: CLC vector file (GeoPackage with an R-tree index for speed; any OGR format works),
            local or ``s3://`` (read in place through GDAL's ``/vsis3/``: the R-tree query
            fetches only the pages it needs, with ranged GETs).
        bounds: ``(minx, miny, maxx, maxy)`` of the area of interest in ``crs`` (e.g. a tile's or
            strip's patch-grid extent in its UTM zone).
        crs: the tile CRS (EPSG int, ``"EPSG:32629"``, pyproj CRS, WKT).
        layer: layer name or index; default: the first layer.
        code_column: attribute holding the Level-3 code.
        margin_m: margin added around ``bounds`` (in ``crs`` units) before transforming them to
            the layer CRS for the index query, so curved transformed edges cannot miss polygons.
        densify_pts: points added per bounds edge when transforming it (``pyproj``
            ``transform_bounds``).

    Returns:
        ``(codes, geoms, stats)``:

        * ``codes``: ``np.uint16`` array of CLC codes (the 44 Level-3 codes or 999);
        * ``geoms``: shapely Polygon/MultiPolygon object array in ``crs``, same length, ordered
          as in the file; exactly the polygons intersecting (or touching) ``bounds``;
        * ``stats``: ``{"read": polygons returned by the index query, "invalid_repaired":
          invalid polygons repaired with make_valid (source CRS, plus any made invalid by the
          reprojection), "dropped_empty": polygons with no area left (null, empty or
          degenerate), "outside": polygons read but not intersecting bounds, "kept": returned}``.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        ClcReadError: the file cannot be opened or read.
        ClcSchemaError: the layer lacks ``code_column``, a geometry column or a CRS.
        UnknownClcCodeError: a code is null, non-numeric or not a CLC 2018 code.
    """
    path_str = os.fspath(path)
    gdal = path_str
    if is_s3_uri(path_str):
        uri = S3Uri.parse(path_str)
        gdal = uri.gdal
        store = ObjectStore()
        store.settings.apply()  # GDAL (pyogrio's) reads /vsis3/ with the same settings
        if not store.exists(uri):
            raise InputNotFoundError(
                f"CORINE Land Cover file {path_str} does not exist; upload the CLC 2018 "
                "GeoPackage there or fix --clc")
    elif not Path(path_str).exists():
        raise InputNotFoundError(
            f"CORINE Land Cover file {path_str} does not exist; check the --clc path: pass the "
            "CLC 2018 GeoPackage (e.g. U2018_CLC2018_V2020_20u1.gpkg) or generate a synthetic one"
        )
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    if not (minx < maxx and miny < maxy):
        raise ValueError(f"read_clc_bbox: empty bounds {bounds}")

    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        info = pyogrio.read_info(gdal, layer=layer)
    except (DataSourceError, DataLayerError, OSError) as exc:
        raise ClcReadError(f"{path_str}: cannot open CLC layer {layer!r}: {exc}. {_DAMAGED}") from exc
    if code_column not in list(info["fields"]):
        raise ClcSchemaError(
            f"{path_str}: CLC layer {info.get('layer_name', layer)!r} has no {code_column!r} "
            f"column (columns: {list(info['fields'])}); expected the CLC 2018 vector with its "
            "Level-3 code attribute"
        )
    if not info.get("crs"):
        raise ClcSchemaError(f"{path_str}: CLC layer has no CRS; expected EPSG:3035")
    src_crs = CRS.from_user_input(info["crs"])
    dst_crs = CRS.from_user_input(crs)

    bbox_src = query_bbox(bounds, dst_crs, src_crs, margin_m=margin_m, densify_pts=densify_pts)
    try:
        meta, table = pyogrio.read_arrow(
            gdal, layer=layer, columns=[code_column], bbox=tuple(bbox_src)
        )
    except (DataSourceError, DataLayerError, OSError) as exc:
        raise ClcReadError(f"{path_str}: cannot read CLC polygons: {exc}. {_DAMAGED}") from exc

    codes = _parse_codes(table[code_column], path_str, code_column)
    wkb = _geometry_column(table, meta, path_str)
    return prepare_clc(codes, wkb, src_crs, dst_crs, (minx, miny, maxx, maxy), path_str)


def query_bbox(bounds: tuple[float, float, float, float], crs: CrsLike, layer_crs: CrsLike, *,
               margin_m: float = 100.0, densify_pts: int = 21) -> tuple[float, float, float, float]:
    """The box, in the CLC layer's CRS, that is asked for the polygons around ``bounds``.

    ``bounds`` (in ``crs``) plus ``margin_m``, transformed with densified edges so curved
    transformed edges cannot miss polygons. Both engines read exactly these polygons.
    """
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    to_src = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_user_input(layer_crs),
                                  always_xy=True)
    return tuple(to_src.transform_bounds(minx - margin_m, miny - margin_m, maxx + margin_m,
                                         maxy + margin_m, densify_pts=densify_pts))


def prepare_clc(codes: np.ndarray, wkb: pa.Array, src_crs: CrsLike, dst_crs: CrsLike,
                bounds: tuple[float, float, float, float],
                path_str: str = "CLC") -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Repair, reproject and filter the polygons read for one tile (the part of
    :func:`read_clc_bbox` after the read; the Sedona-Spark engine runs it per tile too).

    Args:
        codes: parsed CLC codes, one per polygon, in file order.
        wkb: the polygons as WKB in ``src_crs``.
        src_crs: the layer CRS.
        dst_crs: the tile CRS.
        bounds: the tile bounds in ``dst_crs``.
        path_str: named in errors.

    Returns:
        ``(codes, geoms, stats)`` as :func:`read_clc_bbox`.
    """
    src_crs, dst_crs = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    n_read = len(wkb)
    try:
        original = shapely.from_wkb(wkb.to_numpy(zero_copy_only=False))
    except shapely.errors.GEOSException as exc:
        raise ClcReadError(f"{path_str}: corrupt polygon geometry (WKB): {exc}. {_DAMAGED}") from exc
    geoms, keep, n_invalid = repair_polygons(original)
    dropped = int((~keep).sum())
    codes, geoms = codes[keep], geoms[keep]

    polygonal = np.isin(shapely.get_type_id(original), [int(t) for t in _POLYGONAL])
    repaired = n_invalid > 0 or dropped > 0 or not polygonal.all()
    # Untouched geometries go to SedonaDB as the file's own WKB (no re-encoding).
    idx, out = transform_geometries(
        geoms if repaired else wkb, src_crs, dst_crs, clip_bounds=(minx, miny, maxx, maxy)
    )
    codes = codes[idx]
    out, keep2, n_invalid2 = repair_polygons(out)
    dropped += int((~keep2).sum())
    codes, out = codes[keep2], out[keep2]
    stats = {
        "read": int(n_read),
        "invalid_repaired": n_invalid + n_invalid2,
        "dropped_empty": dropped,
        "outside": len(geoms) - len(idx),
        "kept": len(out),
    }
    return codes, out, stats
