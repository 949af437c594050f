"""The two label engines build the same dataset: ``sedonadb`` (embedded, in each pixel task) and
``sedona-spark`` (one Apache Sedona plan over all tiles before the pixel tasks).

World: three products in three UTM zones (29, 33, 35), 100 patches each, whose CLC polygons
cross tile edges. Labels are also checked against independent oracles in test_labels.py (both
engines run there too).
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest

from bigearthnet.config import BuildConfig
from bigearthnet.errors import ClcReadError, ClcSchemaError, UnknownClcCodeError
from bigearthnet.spark.build import run_build
from bigearthnet.spark.sedona import SedonaJarsMissingError, sedona_spark_conf
from worlds import T29UPU, T33UUP, synth_world

pytestmark = pytest.mark.spark
T35VNJ = "S2B_MSIL2A_20180204T094159_N0206_R036_T35VNJ_20180204T114851"
ENGINES = ("sedonadb", "sedona-spark")
VOLATILE = ("timings_s", "versions", "history")  # history: creation times


@pytest.fixture(scope="module", autouse=True)
def _sedona_jars():
    try:
        sedona_spark_conf()
    except SedonaJarsMissingError as exc:
        pytest.fail(f"the Sedona jars must be installed for this test (make setup): {exc}")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return synth_world(tmp_path_factory.mktemp("ew"), [T29UPU, T33UUP, T35VNJ], 1200, seed=4)


def _build(world: Path, out: Path, **kw) -> dict:
    return run_build(BuildConfig(products=str(world / "products"),
                                 clc=str(world / "clc" / "clc2018.gpkg"), out=str(out), **kw))


def _manifest_core(manifest: dict) -> dict:
    doc = {k: v for k, v in manifest.items() if k not in VOLATILE}
    doc["products"] = [{k: v for k, v in p.items() if k not in ("cpu_s", "cpu_sys_s", "wall_s",
                                                                   "label_s", "peak_rss_mb")}
                       for p in manifest["products"]]
    doc["config"] = {k: v for k, v in manifest["config"].items() if k not in ("label_engine", "out")}
    doc.pop("label_engine")
    return doc


@pytest.mark.parametrize(("rule", "split"), [("v1", "random"), ("reben", "reben")])
def test_both_engines_build_the_same_dataset(spark, world, tmp_path, rule, split):
    built = {e: tmp_path / e for e in ENGINES}
    manifests = {e: _build(world, built[e], label_rule=rule, split=split, label_engine=e)
                 for e in ENGINES}
    a, b = built["sedonadb"], built["sedona-spark"]
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    assert len(files) >= 7
    for rel in files:
        ta, tb = pq.read_table(a / rel), pq.read_table(b / rel)
        assert ta.schema == tb.schema
        for name in ta.column_names:
            if name == "clc_area_fractions":
                assert ta[name].to_pylist() is not None
                x, y = ta[name].to_pylist(), tb[name].to_pylist()
                assert [len(v) for v in x] == [len(v) for v in y]
                np.testing.assert_allclose(np.concatenate(x), np.concatenate(y), atol=1e-6)
            else:
                assert ta[name].equals(tb[name]), (rel, name)
    assert (a / "stats.json").read_bytes() == (b / "stats.json").read_bytes()
    # The manifests differ in the engine (and timings, versions) only.
    assert manifests["sedonadb"]["label_engine"] == "sedonadb"
    assert manifests["sedona-spark"]["label_engine"] == "sedona-spark"
    assert _manifest_core(manifests["sedonadb"]) == _manifest_core(manifests["sedona-spark"])
    on_disk = json.loads((b / "manifest.json").read_text())
    assert on_disk["label_engine"] == "sedona-spark" == on_disk["config"]["label_engine"]
    assert manifests["sedonadb"]["counts"]["patches_kept"] > 150


def _bad_clc(world: Path, tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.gpkg"
    if kind == "unreadable":
        path.write_bytes(b"not a GeoPackage" * 64)
        return path
    gdf = gpd.read_file(world / "clc" / "clc2018.gpkg")
    if kind == "no_code_column":
        gdf = gdf.rename(columns={"Code_18": "CODE"})
    else:
        gdf.loc[gdf.index[::5], "Code_18"] = "998"  # some lie under every tile
    gdf.to_file(path, layer="clc2018")
    return path


@pytest.mark.parametrize(("kind", "error", "needle"), [
    ("no_code_column", ClcSchemaError, "Code_18"),
    ("unknown_code", UnknownClcCodeError, "998"),
    ("unreadable", ClcReadError, "unreadable.gpkg"),
])
@pytest.mark.parametrize("engine", ENGINES)
def test_bad_clc_gives_the_same_named_error(spark, world, tmp_path, engine, kind, error, needle):
    bad = _bad_clc(world, tmp_path, kind)
    with pytest.raises(error) as info:
        run_build(BuildConfig(products=str(world / "products"), clc=str(bad),
                              out=str(tmp_path / "ds"), label_engine=engine))
    assert needle in str(info.value) and str(bad) in str(info.value)
    assert not (tmp_path / "ds").exists()
