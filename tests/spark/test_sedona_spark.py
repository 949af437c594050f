"""Sedona on Spark: jar pins, CLC GeoPackage reader and the ``sedona-spark`` label engine.

The engine (:mod:`bigearthnet.spark.sedona_labels`) is checked against the embedded SedonaDB
engine (the CLC window + ``code_areas``, one tile at a time) and against an independent
shapely/pyproj overlay, on two small tiles in different UTM zones (EPSG:32632 and EPSG:32633,
either side of 12°E) that overlap on the ground, under one CLC layer in EPSG:3035 whose polygons
cross both tiles.

The Spark tests need the Sedona jars (``scripts/fetch_sedona_jars.sh``) built for the installed
Spark line; they are skipped, with the reason, when those are missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyogrio
import pytest
import shapely
from pyproj import Transformer

from bigearthnet.clc.nomenclature import CODES_44
from bigearthnet.errors import (
    BigEarthNetError,
    ClcReadError,
    ClcSchemaError,
    InputNotFoundError,
    UnknownClcCodeError,
)
from bigearthnet.sentinel2.grid import PatchGrid
from bigearthnet.spark import sedona as ss
from bigearthnet.stages.plan import TilePlan

pytestmark = pytest.mark.spark

PATCH = 1200.0
N = 4  # patches per tile side
# (name, EPSG, upper-left x, upper-left y): both tiles cover ~11.93-12.02°E at 50°N.
TILES = [
    ("T32UQA", 32632, 709800.0, 5545080.0),
    ("T33UUR", 32633, 282000.0, 5546040.0),
]
REL = 1e-6


# --- world -------------------------------------------------------------------------------------


def _tile_bounds(ulx: float, uly: float) -> tuple[float, float, float, float]:
    return ulx, uly - N * PATCH, ulx + N * PATCH, uly


def _footprints() -> list[tuple[str, int, shapely.Polygon]]:
    out = []
    for name, epsg, ulx, uly in TILES:
        for row in range(N):
            for col in range(N):
                left, top = ulx + col * PATCH, uly - row * PATCH
                box = shapely.box(left, top - PATCH, left + PATCH, top)
                out.append((f"{name}_{row}_{col}", epsg, box))
    return out


def _to_3035(geom: shapely.Geometry, epsg: int) -> shapely.Geometry:
    tr = Transformer.from_crs(epsg, 3035, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _region_3035(margin: float) -> shapely.Geometry:
    regions = [
        _to_3035(shapely.segmentize(shapely.box(*_tile_bounds(ulx, uly)), 200.0), epsg)
        for _, epsg, ulx, uly in TILES
    ]
    return shapely.union_all(regions).buffer(margin)


def _write_gpkg(path: Path, geoms, codes, column: str = "Code_18") -> Path:
    table = pa.table(
        {
            "ID": pa.array([f"EU_{k + 1}" for k in range(len(geoms))], pa.string()),
            column: pa.array([str(c) for c in codes], pa.string()),
            "geometry": pa.array(shapely.to_wkb(np.asarray(geoms, dtype=object)), pa.binary()),
        }
    )
    pyogrio.write_arrow(
        table, path, layer="clc", driver="GPKG", geometry_name="geometry",
        geometry_type="Polygon", crs="EPSG:3035", layer_options={"SPATIAL_INDEX": "YES"},
    )
    return path


def _clc_polygons() -> tuple[np.ndarray, np.ndarray]:
    """A Voronoi partition (edges densified to 50 m) over both tiles, a bow-tie, a near miss."""
    rng = np.random.default_rng(7)
    region = _region_3035(1500.0)
    minx, miny, maxx, maxy = region.bounds
    pts = shapely.points(rng.uniform(minx, maxx, 60), rng.uniform(miny, maxy, 60))
    cells = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=shapely.box(*region.bounds))
    )
    cells = shapely.segmentize(shapely.intersection(cells, shapely.box(*region.bounds)), 50.0)
    codes = rng.choice(np.array(sorted(CODES_44) + [999]), len(cells))
    # An invalid (self-intersecting) polygon over tile A: both engines repair it.
    cx, cy = shapely.centroid(_to_3035(shapely.box(*_tile_bounds(*TILES[0][2:])), 32632)).coords[0]
    bowtie = shapely.Polygon(
        [(cx - 1500, cy - 900), (cx + 1500, cy + 900), (cx + 1500, cy - 900), (cx - 1500, cy + 900)]
    )
    # 0.5 m west of tile A's west edge: within the join margin, but no area in any footprint.
    _, _, ulx, uly = TILES[0]
    near = _to_3035(shapely.box(ulx - 50.5, uly - 600.0, ulx - 0.5, uly - 550.0), 32632)
    geoms = np.concatenate([cells, np.array([bowtie, near], dtype=object)])
    return geoms, np.concatenate([codes, [512, 141]])


@pytest.fixture(scope="module")
def clc_gpkg(tmp_path_factory) -> Path:
    geoms, codes = _clc_polygons()
    return _write_gpkg(tmp_path_factory.mktemp("clc") / "clc.gpkg", geoms, codes)


# --- oracles -----------------------------------------------------------------------------------


def _plans() -> dict[int, TilePlan]:
    from bigearthnet.sentinel2.naming import parse_product_name

    names = {"T32UQA": "S2A_MSIL2A_20170617T103021_N0205_R108_T32UQA_20170617T103020",
             "T33UUR": "S2A_MSIL2A_20170617T103021_N0205_R108_T33UUR_20170617T103020"}
    return {i: TilePlan(parse_product_name(names[name]),
                        PatchGrid(ulx, uly, int(N * PATCH / 10), int(N * PATCH / 10)), epsg)
            for i, (name, epsg, ulx, uly) in enumerate(TILES)}


def _as_dict(plans: dict[int, TilePlan], areas_by_task: dict[int, pa.Table]) -> dict:
    out: dict[tuple[str, int], float] = {}
    for task_id, table in areas_by_task.items():
        tile = plans[task_id].name.tile
        for p, c, a in zip(*(table[k].to_pylist() for k in ("patch_index", "code", "area_m2")),
                           strict=True):
            out[(f"{tile}_{p // N}_{p % N}", int(c))] = a
    return out


def _sedonadb(gpkg: Path, plans: dict[int, TilePlan]):
    """The SedonaDB engine, as a build task runs it: per tile, the CLC window, then the join."""
    from bigearthnet.config import BuildConfig
    from bigearthnet.stages.labels import SedonaDBEngine, read_tile_clc

    BuildConfig(products="p", out="o", clc=str(gpkg))  # the engine's inputs validate
    windows = {i: read_tile_clc(str(gpkg), plan) for i, plan in plans.items()}
    areas = {i: SedonaDBEngine().code_areas(plans[i], clc) for i, clc in windows.items()}
    return windows, areas


def _overlay_areas(gpkg: Path) -> dict[tuple[str, int], float]:
    """Independent oracle: make_valid + pyproj + shapely intersection, no SedonaDB."""
    meta, table = pyogrio.read_arrow(gpkg, columns=["Code_18"])
    geoms = shapely.from_wkb(table[meta["geometry_name"] or "wkb_geometry"].to_numpy())
    geoms = np.array([shapely.make_valid(g) for g in geoms], dtype=object)
    codes = np.array([int(c) for c in table["Code_18"].to_pylist()])
    out: dict[tuple[str, int], float] = {}
    for _, epsg, _, _ in TILES:
        tr = Transformer.from_crs(3035, epsg, always_xy=True)
        utm = shapely.transform(
            geoms, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
        )
        for pid, e, box in _footprints():
            if e != epsg:
                continue
            areas = shapely.area(shapely.intersection(box, utm))
            for code in np.unique(codes[areas > 0]):
                out[(pid, int(code))] = float(areas[(codes == code) & (areas > 0)].sum())
    return out


@pytest.fixture(scope="module")
def sedona_spark():
    """The project's local[2] session, which carries Sedona when the jars are installed."""
    try:
        ss.sedona_spark_conf()
    except ss.SedonaJarsMissingError as exc:
        pytest.skip(f"Sedona-Spark unavailable: {exc}")
    from bigearthnet.config import SparkConfig
    from bigearthnet.spark.session import get_session

    return get_session(SparkConfig(master="local[2]"), require_sedona=True)


@pytest.fixture(scope="module")
def engine_run(sedona_spark, clc_gpkg, tmp_path_factory):
    from bigearthnet.config import BuildConfig
    from bigearthnet.dataset.layout import DatasetLayout
    from bigearthnet.spark.sedona_labels import read_tile_labels, sedona_spark_labels

    staging = tmp_path_factory.mktemp("staging")
    DatasetLayout(staging).create_task_folders()
    plans = _plans()
    cfg = BuildConfig(products="p", out="o", clc=str(clc_gpkg), label_engine="sedona-spark")
    stats = sedona_spark_labels(sedona_spark, plans, cfg, staging)
    tiles = {i: read_tile_labels(staging, i, stats[i]) for i in plans}
    return plans, tiles


# --- tests: the engine -------------------------------------------------------------------------


def test_engine_equals_sedonadb_exactly_and_the_overlay(engine_run, clc_gpkg):
    """Two tiles in two UTM zones, polygons crossing both, a bow-tie, a near miss: the
    Sedona-Spark plan gives the SedonaDB engine's polygons and repair counts bit for bit, its
    areas to 1e-12 and an independent overlay's areas within 1e-6."""
    plans, tiles = engine_run
    windows, areas = _sedonadb(clc_gpkg, plans)
    for i in plans:
        clc, got_areas = tiles[i]
        assert clc.stats == windows[i].stats
        # The same polygons (GeoPackage file order here, R-tree order there: the order changes
        # no output, areas are summed exactly and maps burnt in code order).
        assert sorted(zip(clc.codes.tolist(), (g.wkb for g in clc.geoms))) == sorted(
            zip(windows[i].codes.tolist(), (g.wkb for g in windows[i].geoms)))
        # The same (patch, code) pairs; JTS and SedonaDB areas agree to the last bits.
        for k in ("patch_index", "code"):
            assert got_areas[k].equals(areas[i][k])
        np.testing.assert_allclose(got_areas["area_m2"], areas[i]["area_m2"], rtol=1e-12)
    assert sum(w.stats["invalid_repaired"] for w in windows.values()) >= 1  # the bow-tie
    got = _as_dict(plans, {i: t[1] for i, t in tiles.items()})
    assert {k[0] for k in got} == {pid for pid, _, _ in _footprints()}
    oracle = _overlay_areas(clc_gpkg)
    assert got.keys() == oracle.keys()
    assert all(got[k] == pytest.approx(oracle[k], rel=REL) for k in oracle)
    totals: dict[str, float] = {}
    for (pid, _), area in got.items():
        totals[pid] = totals.get(pid, 0.0) + area
    assert min(totals.values()) == pytest.approx(PATCH * PATCH, rel=1e-9)


def test_the_equality_check_sees_a_wrong_area(engine_run, clc_gpkg):
    plans, tiles = engine_run
    _, areas = _sedonadb(clc_gpkg, plans)
    table = tiles[0][1]
    wrong = np.asarray(table["area_m2"]) * (1 + 1e-9)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(wrong, areas[0]["area_m2"], rtol=1e-12)


def test_clc_dataframe_columns_and_codes(sedona_spark, clc_gpkg):
    clc = ss.clc_dataframe(sedona_spark, clc_gpkg)
    assert ss._jvm_fields(clc.df) == {"code": "integer", "geom": "geometry"}
    codes = {r["code"] for r in clc.df.select("code").distinct().collect()}
    assert codes == {int(c) for c in _clc_polygons()[1]}
    srids = {r[0] for r in clc.df.selectExpr("ST_SRID(geom)").distinct().collect()}
    assert srids == {3035}
    raw = ss.clc_dataframe(sedona_spark, clc_gpkg, as_read=True)
    assert set(ss._jvm_fields(raw.df)) == {"fid", "code", "geom"}
    assert raw.stats["read"] == len(_clc_polygons()[0])


# --- tests: named errors of the CLC reader -----------------------------------------------------


def test_missing_code_column(sedona_spark, tmp_path):
    path = _write_gpkg(tmp_path / "c12.gpkg", [shapely.box(4.4e6, 3.0e6, 4.401e6, 3.001e6)],
                       ["311"], column="Code_12")
    with pytest.raises(ClcSchemaError, match="Code_18") as info:
        ss.clc_dataframe(sedona_spark, path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("bad", ["998", "31a"])
def test_unknown_code(sedona_spark, tmp_path, bad):
    box = shapely.box(4.4e6, 3.0e6, 4.401e6, 3.001e6)
    path = _write_gpkg(tmp_path / "bad.gpkg", [box, box], ["311", bad])
    with pytest.raises(UnknownClcCodeError, match=bad) as info:
        ss.clc_dataframe(sedona_spark, path)
    assert str(path) in str(info.value)


def test_unreadable_gpkg(sedona_spark, tmp_path):
    path = tmp_path / "corrupt.gpkg"
    path.write_bytes(b"this is not a GeoPackage" * 100)
    with pytest.raises(ClcReadError, match="corrupt.gpkg"):
        ss.clc_dataframe(sedona_spark, path)
    with pytest.raises(InputNotFoundError, match="does not exist"):
        ss.clc_dataframe(sedona_spark, tmp_path / "missing.gpkg")


# --- tests: jars (no Spark needed) -------------------------------------------------------------


def test_missing_jars_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ss.JARS_ENV, str(tmp_path))
    with pytest.raises(ss.SedonaJarsMissingError) as info:
        ss.sedona_jar_paths()
    assert isinstance(info.value, BigEarthNetError) and isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert "scripts/fetch_sedona_jars.sh" in message and "make setup" in message
    assert "--packages org.apache.sedona:" in message
    assert "org.datasyslab:geotools-wrapper" in message
    monkeypatch.setenv(ss.JARS_ENV, f"{tmp_path}/a.jar,{tmp_path}/b.jar")
    with pytest.raises(ss.SedonaJarsMissingError, match="do not exist"):
        ss.sedona_spark_conf()


def test_lock_pins_and_conf(tmp_path, monkeypatch):
    jars = ss.read_lock()
    assert ss.sedona_version(jars) and ss.geotools_wrapper_version(jars)
    assert {j.group for j in jars} == {"org.apache.sedona", "org.datasyslab"}
    sedona_jar = next(j.filename for j in jars if j.group == "org.apache.sedona")
    for jar in jars:
        (tmp_path / jar.filename).write_bytes(b"")
    monkeypatch.setenv(ss.JARS_ENV, str(tmp_path))
    line = ss.jar_spark_line([Path(sedona_jar)])
    conf = ss.sedona_spark_conf(spark_version=f"{line}.9")
    assert conf["spark.sql.extensions"] == "org.apache.sedona.sql.SedonaSqlExtensions"
    assert conf["spark.kryo.registrator"] == "org.apache.sedona.core.serde.SedonaKryoRegistrator"
    assert conf["spark.serializer"] == "org.apache.spark.serializer.KryoSerializer"
    assert sorted(conf["spark.jars"].split(",")) == sorted(
        str((tmp_path / j.filename).resolve()) for j in jars
    )
    with pytest.raises(ss.SedonaVersionMismatchError, match=f"built for Spark {line}"):
        ss.sedona_spark_conf(spark_version="3.9.0")
