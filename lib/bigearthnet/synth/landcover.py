"""Synthetic CORINE Land Cover 2018 polygons (EPSG:3035) around the requested tiles.

The world is a Voronoi tessellation of a jittered lattice anchored at the EPSG:3035 origin
(spacing :data:`CELL_SPACING_M`). A lattice point's jitter and class depend only on its
lattice index, the seed and smooth hash noise, so tiles that overlap share identical cells, and
tiles far apart (Ireland and Finland) cost nothing in between: only the lattice points near
each tile region are generated.

Spatial structure:

* a coarse *landscape regime* field (agricultural, boreal forest, temperate forest,
  Mediterranean, urban; ~20 km features) reweights the class frequencies;
* a *sea* field (~60 km) turns whole cells into sea (523) with a band of coastal classes;
* cells join *meso clumps* (3.5 km blocks) that share one draw, so neighbouring cells often
  carry the same class.

Class frequencies follow BigEarthNet v1 (Table 2 of the paper, images per label). Glaciers
(335) never occur. Every written polygon is a whole Voronoi cell that intersects the region
(tile extents plus a 2 km margin), so no clipping slivers arise; any cell under the 25 ha
minimum mapping unit is merged into the neighbour it shares the longest edge with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyogrio
import shapely
from pyproj import Transformer

from bigearthnet.synth.noise import fractal_hash_noise, hash01

CLC_CRS_EPSG = 3035
CELL_SPACING_M = 1000.0
"""Spacing of the jittered lattice whose Voronoi cells are the CLC polygons."""
JITTER = 0.4
"""Lattice point jitter as a fraction of the spacing (each axis, +/-)."""
REGION_MARGIN_M = 2000.0
"""Margin around each tile (in EPSG:3035) that the CLC layer covers."""
MMU_M2 = 250_000.0
"""CLC minimum mapping unit: 25 ha."""
LAYER_NAME = "clc2018"
GPKG_FIXED_DATE = "2000-01-01T00:00:00.000Z"
"""Value of GDAL's ``OGR_CURRENT_DATE`` while writing, so the GeoPackage is byte-reproducible."""

# Number of BigEarthNet v1 images carrying each label (paper, Table 2): the class weights.
CLASS_WEIGHTS: dict[str, float] = {
    "111": 10784, "112": 69872, "121": 12895, "122": 3384, "123": 509, "124": 979,
    "131": 4618, "132": 959, "133": 1174, "141": 1786, "142": 5353,
    "211": 196695, "212": 13589, "213": 3793, "221": 9567, "222": 4754, "223": 12538,
    "231": 103554, "241": 7022, "242": 107786, "243": 147095, "244": 30674,
    "311": 150944, "312": 211703, "313": 217119, "321": 12835, "322": 5890, "323": 11241,
    "324": 173506, "331": 1578, "332": 3277, "333": 1563, "334": 328,
    "411": 6236, "412": 23207, "421": 1562, "422": 424, "423": 1003,
    "511": 10572, "512": 83811, "521": 1498, "522": 1086, "523": 81612,
}  # fmt: skip
CODES: tuple[str, ...] = tuple(sorted(CLASS_WEIGHTS))
"""The 43 codes the world uses (the 44 CLC Level-3 classes minus 335 glaciers)."""

# Landscape regimes: multipliers of the base weights (unlisted classes get REGIME_DEFAULT).
REGIME_DEFAULT = 0.3
REGIMES: tuple[tuple[str, dict[str, float]], ...] = (
    ("agricultural", {"211": 4, "212": 2, "231": 3, "242": 3, "243": 2, "112": 1.5, "121": 1,
                      "141": 1, "512": 0.8, "311": 0.6, "313": 0.5, "324": 0.8, "511": 1}),
    ("boreal", {"312": 4, "313": 3, "324": 3, "412": 4, "411": 2, "512": 3, "311": 0.8,
                "321": 1, "322": 2, "333": 1, "211": 0.5, "231": 0.7, "243": 1}),
    ("temperate_forest", {"311": 4, "313": 3, "312": 1.5, "324": 2, "243": 2, "231": 2,
                          "321": 2, "322": 1.5, "332": 1, "333": 1, "512": 1}),
    ("mediterranean", {"223": 8, "221": 6, "222": 4, "244": 6, "241": 5, "212": 4, "213": 4,
                       "323": 6, "324": 1.5, "243": 2, "242": 2, "311": 1, "312": 1, "331": 1,
                       "332": 2, "333": 2, "334": 6, "211": 1}),
    ("urban", {"111": 12, "112": 8, "121": 10, "122": 10, "123": 6, "124": 10, "131": 6,
               "132": 8, "133": 10, "141": 10, "142": 10, "242": 1}),
)  # fmt: skip
_REGIME_BIAS = np.array([0.0, 0.0, 0.0, -0.05, -0.12])
COASTAL_CODES: tuple[str, ...] = ("331", "421", "422", "423", "521", "522")
_COASTAL_WEIGHTS = np.array([3.0, 2.0, 1.0, 2.0, 1.0, 1.5])
SEA_CODE = "523"
_SEA_THRESHOLD = 0.70
_COAST_BAND = 0.035

_SALT_JITTER_X, _SALT_JITTER_Y = 11, 12
_SALT_REGIME = 20  # + regime index
_SALT_SEA = 30
_SALT_CLUMP_PICK, _SALT_CLUMP_DRAW, _SALT_OWN_DRAW, _SALT_COAST = 40, 41, 42, 43
_REGIME_SPACING_M = 20_000.0
_SEA_SPACING_M = 60_000.0
_CLUMP_SPACING_M = 3_500.0
_CLUMP_SHARE = 0.5


def _regime_cdfs() -> np.ndarray:
    base = np.array([CLASS_WEIGHTS[c] for c in CODES], dtype=np.float64)
    cdfs = []
    for _, boost in REGIMES:
        w = base * np.array([boost.get(c, REGIME_DEFAULT) for c in CODES])
        w[CODES.index(SEA_CODE)] = 0.0  # sea comes only from the sea field
        cdf = np.cumsum(w)
        cdfs.append(cdf / cdf[-1])
    return np.array(cdfs)


def tile_region_3035(epsg: int, ulx: float, uly: float, size_m: float) -> shapely.Polygon:
    """A tile's extent (plus :data:`REGION_MARGIN_M`) as a polygon in EPSG:3035.

    Args:
        epsg: the tile's UTM EPSG code.
        ulx: upper-left x in the tile CRS.
        uly: upper-left y in the tile CRS.
        size_m: tile side in metres.
    """
    box = shapely.segmentize(shapely.box(ulx, uly - size_m, ulx + size_m, uly), 1000.0)
    tr = Transformer.from_crs(epsg, CLC_CRS_EPSG, always_xy=True)
    poly = shapely.transform(box, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return poly.buffer(REGION_MARGIN_M)


def lattice_indices(regions: Sequence[shapely.Geometry], pad_cells: int = 3) -> np.ndarray:
    """The lattice indices ``(i, j)`` needed to tessellate the regions, sorted and unique.

    Args:
        regions: polygons in EPSG:3035.
        pad_cells: lattice rows/columns added beyond each region's bounds.

    Returns:
        int64 array of shape ``(n, 2)``, sorted by ``j`` then ``i``.
    """
    keys = []
    for reg in regions:
        minx, miny, maxx, maxy = reg.bounds
        i = np.arange(int(np.floor(minx / CELL_SPACING_M)) - pad_cells,
                      int(np.ceil(maxx / CELL_SPACING_M)) + pad_cells + 1)
        j = np.arange(int(np.floor(miny / CELL_SPACING_M)) - pad_cells,
                      int(np.ceil(maxy / CELL_SPACING_M)) + pad_cells + 1)
        ii, jj = np.meshgrid(i, j)
        keys.append(np.column_stack([ii.ravel(), jj.ravel()]))
    ij = np.unique(np.concatenate(keys), axis=0)
    order = np.lexsort((ij[:, 0], ij[:, 1]))
    return ij[order]


def lattice_points(ij: np.ndarray, seed: int) -> np.ndarray:
    """Jittered point positions (EPSG:3035 metres) of lattice indices.

    Args:
        ij: int64 ``(n, 2)`` lattice indices.
        seed: world seed.
    """
    i, j = ij[:, 0], ij[:, 1]
    jx = (hash01(i, j, seed, _SALT_JITTER_X) * 2 - 1) * JITTER
    jy = (hash01(i, j, seed, _SALT_JITTER_Y) * 2 - 1) * JITTER
    return np.column_stack([(i + 0.5 + jx) * CELL_SPACING_M, (j + 0.5 + jy) * CELL_SPACING_M])


def assign_classes(points: np.ndarray, ij: np.ndarray, seed: int) -> np.ndarray:
    """CLC code of each lattice point: regime field, sea field, clumps (all hash based).

    Args:
        points: ``(n, 2)`` EPSG:3035 coordinates of the jittered lattice points.
        ij: ``(n, 2)`` their lattice indices.
        seed: world seed.

    Returns:
        Array of 3-character code strings.
    """
    x, y = points[:, 0], points[:, 1]
    fields = np.stack([
        fractal_hash_noise(x, y, _REGIME_SPACING_M, seed, _SALT_REGIME + k)
        for k in range(len(REGIMES))
    ], axis=1)
    regime = np.argmax(fields + _REGIME_BIAS, axis=1)
    ci = np.floor(x / _CLUMP_SPACING_M).astype(np.int64)
    cj = np.floor(y / _CLUMP_SPACING_M).astype(np.int64)
    pi, pj = ij[:, 0], ij[:, 1]
    u_clump = hash01(ci, cj, seed, _SALT_CLUMP_DRAW)
    u_own = hash01(pi, pj, seed, _SALT_OWN_DRAW)
    u = np.where(hash01(pi, pj, seed, _SALT_CLUMP_PICK) < _CLUMP_SHARE, u_clump, u_own)
    cdfs = _regime_cdfs()
    idx = np.empty(len(x), dtype=np.int64)
    for r in range(len(REGIMES)):
        sel = regime == r
        idx[sel] = np.searchsorted(cdfs[r], u[sel], side="right")
    codes = np.array(CODES, dtype=object)[np.minimum(idx, len(CODES) - 1)]
    sea = fractal_hash_noise(x, y, _SEA_SPACING_M, seed, _SALT_SEA)
    coast_cdf = np.cumsum(_COASTAL_WEIGHTS) / _COASTAL_WEIGHTS.sum()
    u_coast = hash01(pi, pj, seed, _SALT_COAST)
    coast = (sea >= _SEA_THRESHOLD - _COAST_BAND) & (sea < _SEA_THRESHOLD) & (u_coast < 0.6)
    pick = np.searchsorted(coast_cdf, u_coast[coast] / 0.6, side="right")
    codes[coast] = np.array(COASTAL_CODES, dtype=object)[np.minimum(pick, len(COASTAL_CODES) - 1)]
    codes[sea >= _SEA_THRESHOLD] = SEA_CODE
    return codes


def merge_small_polygons(
    geoms: np.ndarray, codes: np.ndarray, min_area: float = MMU_M2
) -> tuple[np.ndarray, np.ndarray]:
    """Merge every polygon under ``min_area`` into the neighbour sharing its longest edge.

    Args:
        geoms: polygons (EPSG:3035), in a deterministic order.
        codes: their codes; a merged polygon takes its absorbing neighbour's code.
        min_area: the minimum mapping unit in square metres.

    Returns:
        ``(geoms, codes)`` without the absorbed polygons, order otherwise kept.
    """
    geoms = np.asarray(geoms, dtype=object).copy()
    alive = np.ones(len(geoms), dtype=bool)
    tree = shapely.STRtree(geoms)
    for k in np.argsort(shapely.area(geoms), kind="stable"):
        if not alive[k] or geoms[k].area >= min_area:
            continue
        cand = [c for c in tree.query(geoms[k], predicate="intersects") if c != k and alive[c]]
        if not cand:
            continue
        shared = shapely.length(shapely.intersection(geoms[k].boundary, shapely.boundary(geoms[cand])))
        best = cand[int(np.argmax(shared))]
        if shared.max() <= 0:
            continue
        geoms[best] = shapely.union(geoms[best], geoms[k])
        alive[k] = False
    return geoms[alive], np.asarray(codes)[alive]


def generate_clc(regions: Sequence[shapely.Geometry], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The CLC polygons covering the regions.

    Args:
        regions: polygons in EPSG:3035 (tile extents plus margin).
        seed: world seed.

    Returns:
        ``(geoms, codes)``: polygons in EPSG:3035 (whole Voronoi cells, every one >= 25 ha)
        and their 3-character codes, in lattice order.
    """
    ij = lattice_indices(regions)
    pts = lattice_points(ij, seed)
    lo, hi = pts.min(axis=0) - 10 * CELL_SPACING_M, pts.max(axis=0) + 10 * CELL_SPACING_M
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=shapely.box(*lo, *hi),
                                 ordered=True)
    )
    if len(cells) != len(pts):
        raise RuntimeError("Voronoi tessellation lost points (duplicate lattice points?)")
    union = shapely.union_all(list(regions))
    shapely.prepare(union)
    keep = shapely.intersects(union, cells)
    cells, pts, ij = cells[keep], pts[keep], ij[keep]
    codes = assign_classes(pts, ij, seed)
    return merge_small_polygons(cells, codes)


def write_clc_gpkg(path: Path, geoms: np.ndarray, codes: np.ndarray) -> None:
    """Write the polygons as a CLC 2018-like GeoPackage (byte-reproducible).

    Layer :data:`LAYER_NAME`, EPSG:3035, columns ``ID`` (``EU_<n>``), ``Code_18`` and
    ``Area_Ha``, with an R-tree spatial index. GDAL's ``OGR_CURRENT_DATE`` is pinned while
    writing so the file has no wall-clock timestamp.

    Args:
        path: output file (replaced if present).
        geoms: polygons in EPSG:3035.
        codes: 3-character code strings.
    """
    table = pa.table({
        "ID": pa.array([f"EU_{k + 1}" for k in range(len(geoms))], pa.string()),
        "Code_18": pa.array([str(c) for c in codes], pa.string()),
        "Area_Ha": pa.array(np.round(shapely.area(geoms) / 1e4, 4), pa.float64()),
        "geometry": pa.array(shapely.to_wkb(geoms), pa.binary()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_FIXED_DATE})
    try:
        pyogrio.write_arrow(
            table, path, layer=LAYER_NAME, driver="GPKG", geometry_name="geometry",
            geometry_type="Polygon", crs=f"EPSG:{CLC_CRS_EPSG}",
            layer_options={"SPATIAL_INDEX": "YES"},
        )
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
