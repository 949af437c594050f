"""The Spark tiling stage end to end on synthetic JP2 / COG / zipped-SAFE products."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from rasterio.windows import Window

from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.dataset.schema import PATCH_SCHEMA, SCHEMA_KEY, tensor_columns_from_metadata
from bigearthnet.sentinel2.bands import GROUPS
from bigearthnet.sentinel2.grid import tile_origin
from bigearthnet.sentinel2.products import discover_products
from bigearthnet.spark.build import run_build
from worlds import T29UPA, T29UPU, T29UPV, synth_world

pytestmark = pytest.mark.spark


def build(spark, products: Path, out: Path, **kw) -> dict:
    cfg = BuildConfig(products=str(products), out=str(out), **kw)
    return run_build(cfg)


def read_patches(ds: Path):
    return pads.dataset(ds / "patches", format="parquet").to_table().sort_by("patch_id")


@pytest.fixture(scope="module")
def built_jp2(world_jp2, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "ds_jp2"
    manifest = build(None, world_jp2 / "products", out, strip_rows=1)
    return out, manifest


def source_window(path: str, res: int, col: int, row: int) -> np.ndarray:
    px = 1200 // res
    with rasterio.open(path) as src:
        return src.read(1, window=Window(col * px, row * px, px, px))


@pytest.mark.parametrize("fmt", ["jp2", "cog", "zip"])
def test_patch_pixels_equal_source_windows(spark, fmt, request, tmp_path):
    world = request.getfixturevalue(f"world_{fmt}")
    out = tmp_path / "ds"
    manifest = build(spark, world / "products", out, strip_rows=1)
    table = read_patches(out)
    assert manifest["counts"]["patches_cut"] == table.num_rows == 2 * 4
    sources = {s.product_id: s for s in discover_products(world / "products")[0]}
    assert {s.kind for s in sources.values()} == {"jp2": {"safe"}, "cog": {"stac"}, "zip": {"zip"}}[fmt]
    for i in range(table.num_rows):
        row = table.slice(i, 1)
        src = sources[row["product_id"][0].as_py()]
        col, r = row["col"][0].as_py(), row["row"][0].as_py()
        for res, names in GROUPS.items():
            column = PATCH_SCHEMA[f"bands_{res}m"]
            got = column.decode(row[column.name])[0]
            for b, name in enumerate(names):
                np.testing.assert_array_equal(got[b], source_window(src.layers[name], res, col, r))
        scl = PATCH_SCHEMA["scl"].decode(row["scl"])[0]
        np.testing.assert_array_equal(scl, source_window(src.layers["SCL"], 20, col, r))


def test_jp2_cog_and_zip_give_identical_tensors(spark, world_jp2, world_cog, world_zip, tmp_path):
    tables = {fmt: read_patches(_b(spark, w, tmp_path / fmt))
              for fmt, w in (("jp2", world_jp2), ("cog", world_cog), ("zip", world_zip))}
    for name in ("patch_id", "bands_10m", "bands_20m", "bands_60m", "scl", "footprint"):
        assert tables["jp2"][name].equals(tables["cog"][name]), name
        assert tables["jp2"][name].equals(tables["zip"][name]), name


def _b(spark, world, out):
    build(spark, world / "products", out)
    return out


def test_names_and_footprints_follow_the_real_grid(built_jp2):
    out, _ = built_jp2
    table = read_patches(out)
    for rec in table.select(["patch_id", "patch_id_v1", "tile_id", "col", "row", "epsg",
                             "footprint", "product_id"]).to_pylist():
        origin = tile_origin(rec["tile_id"])
        left = origin.ulx + rec["col"] * 1200
        top = origin.uly - rec["row"] * 1200
        assert shapely.from_wkb(rec["footprint"]).equals(shapely.box(left, top - 1200, left + 1200, top))
        assert rec["epsg"] == origin.epsg
        mission, _, datatake = rec["product_id"].split("_")[:3]
        assert rec["patch_id_v1"] == f"{mission}_MSIL2A_{datatake}_{rec['col']}_{rec['row']}"
        assert rec["patch_id"].endswith(f"_{rec['tile_id']}_{rec['col']}_{rec['row']}")
    assert len(table["patch_id"].unique()) == table.num_rows


def test_patch_table_reads_back_through_pyarrow_and_spark(spark, built_jp2):
    out, manifest = built_jp2
    files = sorted((out / "patches").glob("*.parquet"))
    assert len(files) == 2
    pf = pq.ParquetFile(files[0])
    assert pf.metadata.num_row_groups == 2  # strip_rows=1 on a 2x2 patch tile
    specs = tensor_columns_from_metadata(pf.schema_arrow)
    assert specs["bands_10m"].shape == (4, 120, 120) and specs["bands_10m"].bands == GROUPS[10]
    assert json.loads(pf.schema_arrow.metadata[SCHEMA_KEY]) == manifest["schema"]
    df = spark.read.parquet(str(out / "patches"))
    assert df.count() == manifest["counts"]["patches_cut"]
    first = df.orderBy("patch_id").select("patch_id", "bands_10m", "sensing_time").first()
    arrow_first = read_patches(out).slice(0, 1)
    assert first["patch_id"] == arrow_first["patch_id"][0].as_py()
    assert bytes(first["bands_10m"]) == arrow_first["bands_10m"][0].as_py()
    assert first["sensing_time"].replace(tzinfo=None) == arrow_first["sensing_time"][0].as_py().replace(tzinfo=None)


def test_manifest_and_atomic_layout(built_jp2):
    out, manifest = built_jp2
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["counts"] == manifest["counts"]
    assert on_disk["config"]["strip_rows"] == 1
    assert {"pyspark", "rasterio", "gdal", "pyarrow"} <= set(on_disk["versions"])
    assert (out / "_SUCCESS").exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))
    replay = BuildConfig.model_validate_json((out / "build_config.json").read_text())
    assert replay.strip_rows == 1
    for product in on_disk["products"]:  # the task's CPU, and its kernel part
        assert 0.0 <= product["cpu_sys_s"] <= product["cpu_s"] + 0.02, product
        assert product["cpu_s"] > 0.0


def _digest(ds: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((ds / "patches").glob("*.parquet"))}


def test_same_config_same_bytes_at_any_parallelism(spark, world_jp2, built_jp2, tmp_path):
    out, _ = built_jp2
    again = tmp_path / "again"
    cfg = BuildConfig(products=str(world_jp2 / "products"), out=str(again), strip_rows=1,
                      spark=SparkConfig(master="local[1]"))
    run_build(cfg)
    assert _digest(again) == _digest(out)


def test_v1_name_collisions_are_counted(spark, tmp_path):
    world = synth_world(tmp_path / "w", [T29UPV, T29UPA, T29UPU], 240)
    manifest = build(spark, world / "products", tmp_path / "ds")
    # T29UPV and T29UPA share datatake 20170717T113321: all 4 v1 names of each collide.
    assert manifest["counts"]["v1_name_collisions"] == 4
    (group,) = manifest["v1_name_collisions"]["groups"]
    assert group["tiles"] == ["T29UPA", "T29UPV"]
    table = read_patches(tmp_path / "ds")
    assert len(table["patch_id"].unique()) == 12
    assert len(table["patch_id_v1"].unique()) == 8


def test_nodata_wedge_is_flagged(spark, tmp_path):
    from bigearthnet.synth import ProductConditions

    world = synth_world(tmp_path / "w", [T29UPU], 480, conditions={
        T29UPU: ProductConditions(nodata_wedge=True, cloud_fraction=0.0, snow_fraction=0.0)})
    build(spark, world / "products", tmp_path / "ds")
    table = read_patches(tmp_path / "ds")
    flags = np.array(table["has_nodata"].to_pylist())
    tensors = PATCH_SCHEMA["bands_10m"].decode(table["bands_10m"])
    truth = (tensors.reshape(len(flags), -1) == 0).any(axis=1)
    assert 0 < flags.sum() < len(flags)
    # 10 m zeros imply the flag; the flag may also come from 20/60 m or SCL zeros.
    assert np.all(flags[truth])
