"""read_clc_bbox on small GeoPackages written in EPSG:3035 (oracle: geopandas full read)."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from bigearthnet.clc.nomenclature import CODES_44
from bigearthnet.clc.reader import read_clc_bbox, repair_polygons
from bigearthnet.errors import (
    ClcReadError,
    ClcSchemaError,
    InputNotFoundError,
    UnknownClcCodeError,
)

TILE_CRS = 32629
BOUNDS = (600000.0, 5888040.0, 612000.0, 5900040.0)  # 12 km x 12 km, real T29UPU origin
_TO_3035 = Transformer.from_crs(TILE_CRS, 3035, always_xy=True)


def _to_3035(geoms):
    geoms = np.asarray(geoms, dtype=object)
    # GEOS densify "repairs" invalid polygons, so only densify valid ones.
    valid = shapely.is_valid(geoms)
    geoms[valid] = shapely.segmentize(geoms[valid], 200.0)
    return shapely.transform(
        geoms, lambda xy: np.column_stack(_TO_3035.transform(xy[:, 0], xy[:, 1]))
    )


def _write(path, geoms_utm, codes, column="Code_18", extra=None):
    data = {column: codes, "ID": np.arange(len(codes))}
    if extra:
        data.update(extra)
    gdf = gpd.GeoDataFrame(data, geometry=_to_3035(geoms_utm), crs=3035)
    gdf.to_file(path, layer="clc", driver="GPKG")
    return path


@pytest.fixture(scope="module")
def random_gpkg(tmp_path_factory):
    rng = np.random.default_rng(7)
    n = 400
    x0 = rng.uniform(BOUNDS[0] - 30000, BOUNDS[2] + 30000, n)
    y0 = rng.uniform(BOUNDS[1] - 30000, BOUNDS[3] + 30000, n)
    size = rng.uniform(200, 4000, (n, 2))
    geoms = shapely.box(x0, y0, x0 + size[:, 0], y0 + size[:, 1])
    # A few rotated polygons so edges are not axis-aligned in either CRS.
    geoms[:40] = [shapely.affinity.rotate(g, 30.0) for g in geoms[:40]]
    codes = np.asarray([str(c) for c in rng.choice(CODES_44 + (999,), n)], dtype=object)
    path = _write(tmp_path_factory.mktemp("clc") / "clc.gpkg", geoms, codes)
    return path, n


def test_bbox_read_matches_full_read_filtered(random_gpkg):
    path, n_total = random_gpkg
    codes, geoms, stats = read_clc_bbox(path, BOUNDS, f"EPSG:{TILE_CRS}")

    full = gpd.read_file(path).to_crs(TILE_CRS)
    expected = full[full.intersects(shapely.box(*BOUNDS))]
    assert 10 < len(expected) < n_total // 2
    # The index query read only a fraction of the file, and we return exactly the oracle's set.
    assert stats["read"] < n_total // 2
    assert stats["kept"] == len(geoms) == len(codes) == len(expected)
    assert codes.dtype == np.uint16
    assert stats["invalid_repaired"] == 0

    # Match polygons one to one (codes repeat, so key by code + rounded centroid).
    def key(code, g):
        c = g.centroid
        return (int(code), round(c.x, 3), round(c.y, 3))

    ours = {key(c, g): g for c, g in zip(codes, geoms, strict=True)}
    theirs = {key(c, g): g for c, g in zip(expected["Code_18"], expected.geometry, strict=True)}
    assert ours.keys() == theirs.keys()
    for k, g in ours.items():
        # SedonaDB's ST_Transform agrees with pyproj (geopandas.to_crs) to the millimetre.
        assert shapely.equals_exact(g, theirs[k], tolerance=1e-3), k


def test_integer_code_column_and_layer_by_index(tmp_path):
    g = [shapely.box(601000, 5889000, 602000, 5890000)]
    path = _write(tmp_path / "int.gpkg", g, np.array([311]))
    codes, geoms, _ = read_clc_bbox(path, BOUNDS, TILE_CRS, layer=0)
    assert codes.tolist() == [311]
    assert geoms[0].area == pytest.approx(1e6, rel=1e-6)


def test_missing_code_column_is_a_named_error(tmp_path):
    g = [shapely.box(601000, 5889000, 602000, 5890000)]
    path = _write(tmp_path / "nocode.gpkg", g, np.array(["311"]), column="CODE_2018")
    with pytest.raises(ClcSchemaError, match="Code_18") as exc:
        read_clc_bbox(path, BOUNDS, TILE_CRS)
    assert str(path) in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_unknown_code_names_file_and_code(tmp_path):
    g = [
        shapely.box(601000, 5889000, 602000, 5890000),
        shapely.box(603000, 5889000, 604000, 5890000),
    ]
    path = _write(tmp_path / "bad.gpkg", g, np.array(["311", "998"], dtype=object))
    with pytest.raises(UnknownClcCodeError, match="998") as exc:
        read_clc_bbox(path, BOUNDS, TILE_CRS)
    assert str(path) in str(exc.value)


def test_invalid_geometry_repaired_and_counted(tmp_path):
    bowtie = shapely.Polygon(
        [(601000, 5889000), (602000, 5890000), (602000, 5889000), (601000, 5890000)]
    )
    assert not bowtie.is_valid
    ok = shapely.box(603000, 5889000, 604000, 5890000)
    path = _write(tmp_path / "invalid.gpkg", [bowtie, ok], np.array(["311", "211"], dtype=object))
    codes, geoms, stats = read_clc_bbox(path, BOUNDS, TILE_CRS)
    assert stats["invalid_repaired"] == 1
    assert codes.tolist() == [311, 211]
    assert shapely.is_valid(geoms).all()
    assert set(shapely.get_type_id(geoms)) <= {3, 6}
    # make_valid turns the bow-tie into its two triangles: half the square's area.
    assert geoms[0].area == pytest.approx(0.5e6, rel=1e-3)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InputNotFoundError, match="nope.gpkg"):
        read_clc_bbox(tmp_path / "nope.gpkg", BOUNDS, TILE_CRS)
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"this is not a geopackage")
    with pytest.raises(ClcReadError, match="junk.gpkg") as exc:
        read_clc_bbox(junk, BOUNDS, TILE_CRS)
    assert isinstance(exc.value, OSError)


def test_repair_keeps_only_polygonal_parts():
    spike = shapely.Polygon([(0, 0), (10, 0), (10, 10), (10, 20), (10, 10), (0, 10)])
    flat = shapely.Polygon([(0, 0), (10, 0), (20, 0)])
    ok = shapely.box(0, 0, 1, 1)
    assert shapely.get_type_id(shapely.make_valid(spike)) == 7  # polygon + dangling line
    geoms, keep, n_invalid = repair_polygons(np.array([spike, flat, ok, None], dtype=object))
    assert n_invalid == 2
    assert keep.tolist() == [True, False, True, False]
    assert shapely.get_type_id(geoms[0]) == 3 and geoms[0].area == pytest.approx(100.0)
    assert geoms[2] is ok


def test_bounds_without_polygons_give_empty_arrays(random_gpkg):
    path, _ = random_gpkg
    far = (700000.0, 5500000.0, 701200.0, 5501200.0)
    codes, geoms, stats = read_clc_bbox(path, far, TILE_CRS)
    assert len(codes) == len(geoms) == 0 and codes.dtype == np.uint16
    assert stats["read"] == 0 and stats["kept"] == 0
