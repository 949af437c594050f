"""Labels, screening, splits and dataset metadata of a labeled build, against independent oracles.

The label oracle tests run under both label engines (``sedonadb`` and ``sedona-spark``).

The oracles use geopandas/shapely overlay (v1 rule) and ``rasterio.features.rasterize``
(reBEN rule) on the whole synthetic CLC layer reprojected with geopandas; the pipeline uses a
bbox read, SedonaDB SQL (reprojection and join) and its own rasterization per strip.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import rasterio.features
import shapely
from rasterio.transform import from_origin

from bigearthnet.clc.nomenclature import CODE_TO_NAME_19, LABELS_19, LABELS_43
from bigearthnet.config import BuildConfig, SparkConfig
from bigearthnet.dataset.schema import labeled_schema
from bigearthnet.quality import QualityConfig
from bigearthnet.spark.build import run_build
from worlds import T29UPU, T33UUP, synth_world

pytestmark = pytest.mark.spark
T35VNJ = "S2B_MSIL2A_20180204T094159_N0206_R036_T35VNJ_20180204T114851"
NO_DROPS = QualityConfig(drop_snow_fraction=None, drop_cloud_shadow_fraction=None,
                         drop_nodata_fraction=None, drop_listed=False, drop_unlabeled=False,
                         drop_no_labels=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return synth_world(tmp_path_factory.mktemp("lw"), [T29UPU, T33UUP, T35VNJ], 1200, seed=3)


def build(world: Path, out: Path, **kw) -> dict:
    cfg = BuildConfig(products=str(world / "products"), clc=str(world / "clc" / "clc2018.gpkg"),
                      out=str(out), **kw)
    return run_build(cfg)


def patches(ds: Path, columns=None):
    return (pads.dataset(ds / "patches", format="parquet", partitioning="hive")
            .to_table(columns=columns).sort_by("patch_id"))


@pytest.fixture(scope="module")
def clc(world):
    return gpd.read_file(world / "clc" / "clc2018.gpkg")


def oracle_v1(table, clc) -> dict[str, set[str]]:
    out = {}
    for epsg in set(table["epsg"].to_pylist()):
        sel = table.filter(pads.field("epsg") == epsg) if False else None  # noqa: F841
        rows = [r for r in table.select(["patch_id", "epsg", "footprint"]).to_pylist() if r["epsg"] == epsg]
        polys = clc.to_crs(epsg)
        boxes = gpd.GeoDataFrame({"patch_id": [r["patch_id"] for r in rows]},
                                 geometry=shapely.from_wkb([r["footprint"] for r in rows]), crs=epsg)
        inter = gpd.overlay(boxes, polys[["Code_18", "geometry"]], how="intersection", keep_geom_type=True)
        inter = inter[inter.geometry.area > 0]
        for r in rows:
            out[r["patch_id"]] = set()
        for pid, code in zip(inter["patch_id"], inter["Code_18"]):
            out[pid].add(code)
    return out


def oracle_reben(table, clc, world: Path) -> dict[str, tuple[set[str], float, np.ndarray]]:
    truth = json.loads((world / "truth" / "world.json").read_text())
    out = {}
    for prod in truth["products"]:
        epsg, ulx, uly = prod["epsg"], prod["ulx"], prod["uly"]
        size = truth["config"]["size_px"] if "config" in truth else truth["size_px"]
        n = size // 120
        polys = clc.to_crs(epsg)
        grid = rasterio.features.rasterize(
            ((g, int(c)) for g, c in zip(polys.geometry, polys["Code_18"])),
            out_shape=(n * 120, n * 120), transform=from_origin(ulx, uly, 10, 10), fill=0,
            dtype="uint16", all_touched=False)
        tile = prod["tile"]
        for r in [r for r in table.select(["patch_id", "tile_id", "col", "row"]).to_pylist() if r["tile_id"] == tile]:
            m = grid[r["row"] * 120:(r["row"] + 1) * 120, r["col"] * 120:(r["col"] + 1) * 120]
            names = {CODE_TO_NAME_19.get(int(c)) for c in np.unique(m)} - {None}
            unlabeled = float(np.mean([CODE_TO_NAME_19.get(int(c)) is None for c in m.ravel()]))
            out[r["patch_id"]] = (names, unlabeled, m)
    return out


@pytest.fixture(scope="module", params=["sedonadb", "sedona-spark"])
def built_v1(world, tmp_path_factory, request):
    out = tmp_path_factory.mktemp("v1") / "ds"
    return out, build(world, out, quality=NO_DROPS, label_engine=request.param)


@pytest.fixture(scope="module", params=["sedonadb", "sedona-spark"])
def built_reben(world, tmp_path_factory, request):
    out = tmp_path_factory.mktemp("reben") / "ds"
    return out, build(world, out, label_rule="reben", quality=NO_DROPS, max_unlabeled_fraction=1.0,
                      label_engine=request.param)


def test_v1_labels_agree_with_overlay_oracle(built_v1, clc):
    out, manifest = built_v1
    table = patches(out)
    assert table.num_rows == manifest["counts"]["patches_cut"] == 300
    truth = oracle_v1(table, clc)
    got = {pid: set(codes) for pid, codes in zip(table["patch_id"].to_pylist(), table["clc_codes"].to_pylist())}
    agree = np.mean([got[p] == truth[p] for p in truth])
    assert agree >= 0.995, agree
    # Names and multi-hot follow the codes in the official order.
    from bigearthnet.clc.nomenclature import CODE_TO_NAME_43

    for codes, names, hot in zip(table["clc_codes"].to_pylist(), table["labels_43"].to_pylist(),
                                 table["multi_hot_43"].to_pylist()):
        assert names == [n for n in LABELS_43 if n in {CODE_TO_NAME_43[int(c)] for c in codes}]
        assert np.frombuffer(hot, np.uint8).tolist() == [int(n in names) for n in LABELS_43]


def test_reben_labels_agree_with_rasterize_oracle(built_reben, clc, world):
    out, _ = built_reben
    table = patches(out)
    truth = oracle_reben(table, clc, world)
    assert len(truth) == table.num_rows == 300
    ref = labeled_schema(True)["reference_map"]
    maps = ref.decode(table["reference_map"])
    agree_labels, agree_frac, agree_pixels = [], [], []
    for i, pid in enumerate(table["patch_id"].to_pylist()):
        names, unlabeled, m = truth[pid]
        agree_labels.append(set(table["labels_19"][i].as_py()) == names)
        agree_frac.append(abs(table["unlabeled_fraction"][i].as_py() - unlabeled) < 1e-6)
        agree_pixels.append(np.mean(maps[i] == m))
    assert np.mean(agree_labels) >= 0.995 and np.mean(agree_frac) >= 0.995
    assert np.mean(agree_pixels) >= 0.999
    assert all(lab == [n for n in LABELS_19 if n in lab] for lab in table["labels_19"].to_pylist())


def test_reben_unlabeled_threshold_drops(spark, world, built_reben, tmp_path):
    _, _ = built_reben
    full = patches(built_reben[0], ["patch_id", "unlabeled_fraction"])
    frac = np.array(full["unlabeled_fraction"].to_pylist())
    threshold = float(np.quantile(frac, 0.8))
    manifest = build(world, tmp_path / "ds", label_rule="reben", max_unlabeled_fraction=threshold,
                     quality=NO_DROPS.model_copy(update={"drop_unlabeled": True}))
    assert manifest["counts"]["dropped_unlabeled"] == int(np.sum(frac >= threshold - 1e-6)) > 0


def test_counts_add_up_and_drop_reasons_are_exclusive(spark, world, tmp_path):
    lists = tmp_path / "patches_with_cloud_and_shadow.csv"
    lists.write_text("S2A_MSIL2A_20170613T101031_5_5\nS2A_MSIL2A_20170613T101031_6_5\n")
    out = tmp_path / "ds"
    manifest = build(world, out, exclude_lists=[str(lists)])
    c = manifest["counts"]
    reasons = manifest["drop_reason_order"]
    assert reasons[:6] == ["nodata", "snow", "cloud_shadow", "lists", "unlabeled", "no_labels"]
    assert c["patches_cut"] == c["patches_kept"] + sum(c[f"dropped_{r}"] for r in reasons)
    assert c["patches_kept"] == c["kept_train"] + c["kept_validation"] + c["kept_test"]
    assert c["dropped_snow"] > 0 and c["dropped_cloud_shadow"] > 0 and 1 <= c["dropped_lists"] <= 2
    meta = pq.read_table(out / "metadata.parquet")
    assert meta.num_rows == c["patches_kept"]
    assert set(meta.column_names) >= {"patch_id", "labels", "split", "country", "s1_name", "s2v1_name",
                                      "contains_seasonal_snow", "contains_cloud_or_shadow",
                                      "labels_43", "tile_id"}
    assert "S2A_MSIL2A_20170613T101031_5_5" not in meta["s2v1_name"].to_pylist()
    assert set(meta["country"].to_pylist()) >= {"Ireland", "Austria"}
    assert sum(manifest["class_frequencies"]["labels_19"].values()) == sum(len(x) for x in meta["labels"].to_pylist())
    assert sum(manifest["label_cardinality"]["labels_43"].values()) == c["patches_kept"]
    assert manifest["class_orders"]["labels_43"] == list(LABELS_43)
    # Fully covered patches are gone; partly covered ones are kept and flagged.
    kept = patches(out, ["patch_id", "snow_fraction", "contains_seasonal_snow"])
    assert max(kept["snow_fraction"].to_pylist()) < 1.0
    assert np.all(np.array(kept["contains_seasonal_snow"].to_pylist()) ==
                  (np.array(kept["snow_fraction"].to_pylist()) > 0))


def test_v1_build_drops_and_counts_patches_without_labels(spark, world, clc, tmp_path):
    """In the paper every image has 1-12 labels. Holes in the CLC layer leave patches with none
    of the 43 classes: the v1 rule drops them under ``no_labels``, as an overlay oracle counts."""
    west = clc.geometry.centroid.x < clc.geometry.centroid.x.quantile(0.6)
    holed = tmp_path / "holed.gpkg"
    clc[west].to_file(holed, layer="clc2018")
    out = tmp_path / "ds"
    manifest = run_build(BuildConfig(
        products=str(world / "products"), clc=str(holed), out=str(out),
        quality=NO_DROPS.model_copy(update={"drop_no_labels": True})))
    c = manifest["counts"]
    table = pads.dataset(out / "patches", format="parquet", partitioning="hive").to_table(
        columns=["labels_43"])
    assert all(len(labels) >= 1 for labels in table["labels_43"].to_pylist())
    assert c["patches_cut"] == 300 == c["patches_kept"] + c["dropped_no_labels"]
    # Oracle: overlay of every cut patch with the holed layer; 335 and 999 are not classes.
    every = run_build(BuildConfig(products=str(world / "products"), clc=str(holed),
                                  out=str(tmp_path / "every"), quality=NO_DROPS))
    assert every["counts"]["patches_kept"] == 300
    cut = patches(tmp_path / "every", ["patch_id", "epsg", "footprint"])
    truth = oracle_v1(cut, gpd.read_file(holed))
    without = sum(1 for codes in truth.values() if not {int(x) for x in codes} - {335, 999})
    assert without > 20
    assert abs(c["dropped_no_labels"] - without) <= 2  # the oracle agrees on >= 99.5 % of patches
    assert manifest["label_cardinality"]["labels_43"].get("0", 0) == 0


def test_stats_json_matches_numpy_on_train(spark, world, tmp_path):
    out = tmp_path / "ds"
    build(world, out)
    stats = json.loads((out / "stats.json").read_text())
    train = pads.dataset(out / "patches" / "split=train", format="parquet").to_table()
    b20 = labeled_schema(True)["bands_20m"].decode(train["bands_20m"])
    b11 = b20[:, 4].ravel().astype(np.float64)  # B05 B06 B07 B8A B11 B12
    s = stats["bands"]["B11"]
    assert s["n_pixels"] == b11.size and stats["n_patches"] == train.num_rows
    assert s["mean"] == pytest.approx(b11.mean(), rel=1e-9)
    assert s["std"] == pytest.approx(b11.std(), rel=1e-9)
    assert s["min"] == b11.min() and s["max"] == b11.max()
    assert s["p01"] == np.percentile(b11, 1, method="inverted_cdf")
    assert s["p99"] == np.percentile(b11, 99, method="inverted_cdf")


def test_random_split_identical_across_parallelism(spark, world, tmp_path):
    a = build(world, tmp_path / "a", spark=SparkConfig(master="local[1]"))
    b = build(world, tmp_path / "b", spark=SparkConfig(master="local[2]"))
    ma = pq.read_table(tmp_path / "a" / "metadata.parquet")
    mb = pq.read_table(tmp_path / "b" / "metadata.parquet")
    assert ma.equals(mb)
    for split in ("train", "validation", "test"):
        fa = sorted((tmp_path / "a" / "patches" / f"split={split}").glob("*.parquet"))
        fb = sorted((tmp_path / "b" / "patches" / f"split={split}").glob("*.parquet"))
        assert [f.read_bytes() for f in fa] == [f.read_bytes() for f in fb]
    n = a["counts"]["patches_kept"]
    for split, want in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
        assert abs(a["counts"][f"kept_{split}"] / n - want) <= 0.05  # ~200 patches; pure test: ±3 % on 10k
    assert a["counts"] == b["counts"]


def test_reben_and_official_splits(spark, world, tmp_path):
    reben = build(world, tmp_path / "r", split="reben", quality=NO_DROPS)
    meta = pq.read_table(tmp_path / "r" / "metadata.parquet").to_pylist()
    cols = {r["patch_id"]: r for r in patches(tmp_path / "r", ["patch_id", "col", "row"]).to_pylist()}
    for rec in meta:
        c, r = cols[rec["patch_id"]]["col"], cols[rec["patch_id"]]["row"]
        d = max(abs(c + 0.5 - 5), abs(r + 0.5 - 5)) / 5  # 10x10 grid
        want = "test" if d <= 0.5 else "validation" if d <= 0.5 ** 0.5 else "train"
        assert rec["split"] == want
    assert reben["counts"]["kept_train"] >= reben["counts"]["kept_test"] > 0  # 10x10: 36/28/36 per tile
    d = tmp_path / "official"
    d.mkdir()
    names = sorted(r["s2v1_name"] for r in meta)
    (d / "train.csv").write_text("\n".join(names[:150]) + "\n")
    (d / "val.csv").write_text("\n".join(names[150:200]) + "\n")
    (d / "test.csv").write_text("\n".join(names[200:250]) + "\n")
    off = build(world, tmp_path / "o", split="official", official_splits=str(d), quality=NO_DROPS)
    assert off["counts"]["kept_train"] == 150 and off["counts"]["kept_test"] == 50
    assert off["counts"]["dropped_not_in_split"] == 50


def test_clc_without_code_column_is_a_named_error(spark, world, tmp_path):
    from bigearthnet.errors import ClcSchemaError

    gdf = gpd.read_file(world / "clc" / "clc2018.gpkg").rename(columns={"Code_18": "CODE"})
    bad = tmp_path / "bad.gpkg"
    gdf.to_file(bad, layer="clc2018")
    with pytest.raises(ClcSchemaError, match="Code_18") as info:
        run_build(BuildConfig(products=str(world / "products"), clc=str(bad), out=str(tmp_path / "ds")))
    assert str(bad) in str(info.value)
    assert not (tmp_path / "ds").exists()
