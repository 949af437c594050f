"""Tests of the seeded synthetic world (``bigearthnet.synth``)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from pyproj import Transformer

from bigearthnet.errors import ConfigError, ProductNameError
from bigearthnet.sentinel2.bands import (
    BAND_NAMES,
    GROUPS,
    SCL_CLOUD_HIGH,
    SCL_CLOUD_MEDIUM,
    SCL_CLOUD_SHADOW,
    SCL_NOT_VEGETATED,
    SCL_SNOW,
    SCL_THIN_CIRRUS,
    SCL_VEGETATION,
    SCL_WATER,
)
from bigearthnet.synth import ProductConditions, SynthConfig, resolve_products, synthesize
from bigearthnet.synth.landcover import CODES, MMU_M2, REGION_MARGIN_M, tile_region_3035
from bigearthnet.synth.noise import LatticeNoise
from bigearthnet.synth.spectra import RGB_IDENTICAL_GROUPS, spectra_table

# Two products of the same tile (so they share the CLC polygons), one forced to have every
# condition, one forced clear.
A = "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319"
B = "S2A_MSIL2A_20180225T114351_N0205_R123_T29UPU_20180225T114351"
SIZE = 480
SEED = 7
CONDITIONS = {
    A: {"cloud_fraction": 0.3, "shadow": True, "snow_fraction": 0.3, "nodata_wedge": True},
    B: {"cloud_fraction": 0.0, "shadow": False, "snow_fraction": 0.0, "nodata_wedge": False},
}
LAYERS = BAND_NAMES + ("SCL",)
RES = {b: r for r, bands in GROUPS.items() for b in bands} | {"SCL": 20}


def _config(fmt: str = "jp2", seed: int = SEED) -> SynthConfig:
    return SynthConfig(products=[A, B], size_px=SIZE, format=fmt, seed=seed, conditions=CONDITIONS)


@pytest.fixture(scope="module")
def jp2(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_jp2")
    return out, synthesize(_config("jp2"), out)


@pytest.fixture(scope="module")
def jp2_again(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_jp2_again")
    return out, synthesize(_config("jp2"), out)


@pytest.fixture(scope="module")
def cog(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_cog")
    return out, synthesize(_config("cog"), out)


@pytest.fixture(scope="module")
def cog_again(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_cog_again")
    return out, synthesize(_config("cog"), out)


@pytest.fixture(scope="module")
def other_seed(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth_seed")
    return out, synthesize(_config("jp2", seed=SEED + 1), out)


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def _product(summary: dict, name: str) -> dict:
    return next(p for p in summary["products"] if p["name"] == name)


def _read(root: Path, summary: dict, name: str, layer: str) -> np.ndarray:
    with rasterio.open(root / _product(summary, name)["bands"][layer]) as ds:
        return ds.read(1)


def _truth(root: Path, summary: dict, name: str) -> np.ndarray:
    with rasterio.open(root / _product(summary, name)["truth_clc10m"]) as ds:
        return ds.read(1)


# --- determinism --------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(jp2, jp2_again):
    first, second = _hashes(jp2[0]), _hashes(jp2_again[0])
    assert len(first) == 2 * 15 + 1 + 2 + 1  # 13 layers, MTD, manifest.safe; gpkg, 2 truth, json
    assert first == second


def test_same_seed_gives_byte_identical_cogs(cog, cog_again):
    first, second = _hashes(cog[0]), _hashes(cog_again[0])
    assert len(first) == 2 * 14 + 1 + 2 + 1  # 13 COGs + STAC item per product, gpkg, truth, json
    assert first == second


def test_different_seed_gives_different_files(jp2, other_seed):
    first, other = _hashes(jp2[0]), _hashes(other_seed[0])
    assert first.keys() == other.keys()
    changed = {k for k in first if first[k] != other[k]}
    assert "clc/clc2018.gpkg" in changed
    band_files = {k for k in first if k.endswith(".jp2")}
    assert band_files <= changed


# --- layout and georeference -------------------------------------------------------------


def test_jp2_layout_is_esa_safe(jp2):
    root, _ = jp2
    safe = root / "products" / f"{A}.SAFE"
    granule = safe / "GRANULE" / "L2A_T29UPU_A000000_20170617T113321" / "IMG_DATA"
    expected = {"MTD_MSIL2A.xml", "manifest.safe"}
    for layer in LAYERS:
        res = RES[layer]
        expected.add(f"{granule.relative_to(safe).as_posix()}/R{res}m/T29UPU_20170617T113321_{layer}_{res}m.jp2")
    found = {p.relative_to(safe).as_posix() for p in safe.rglob("*") if p.is_file()}
    assert found == expected  # no .aux.xml sidecars either
    assert f"<PRODUCT_URI>{A}.SAFE</PRODUCT_URI>" in (safe / "MTD_MSIL2A.xml").read_text()
    assert not list((root / "products").glob(".*"))  # no temporary folders left


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_safe_manifest_lists_every_file_with_size_and_md5(jp2):
    import xml.etree.ElementTree as ET

    safe = jp2[0] / "products" / f"{A}.SAFE"
    ns = {"xfdu": "urn:ccsds:schema:xfdu:1"}
    root = ET.parse(safe / "manifest.safe").getroot()
    assert root.tag == "{urn:ccsds:schema:xfdu:1}XFDU"
    listed = {}
    for obj in root.find("dataObjectSection", ns) or root.iter("dataObject"):
        stream = obj.find("byteStream")
        href = stream.find("fileLocation").get("href")
        checksum = stream.find("checksum")
        assert checksum.get("checksumName") == "MD5"
        listed[href] = (int(stream.get("size")), checksum.text)
    files = {p.relative_to(safe).as_posix(): p for p in safe.rglob("*")
             if p.is_file() and p.name != "manifest.safe"}
    assert set(listed) == {f"./{rel}" for rel in files}
    for rel, path in files.items():
        assert listed[f"./{rel}"] == (path.stat().st_size, _md5(path))


def test_cog_layout_and_stac_item(cog):
    root, summary = cog
    folder = root / "products" / A
    item = json.loads((folder / f"{A}.json").read_text())
    assert item["type"] == "Feature" and item["stac_version"] == "1.0.0" and item["id"] == A
    props = item["properties"]
    assert props["s2:product_uri"] == f"{A}.SAFE"
    assert props["proj:epsg"] == 32629
    assert props["platform"] == "sentinel-2a"
    assert props["datetime"] == "2017-06-17T11:33:21Z"
    assert set(item["assets"]) == set(LAYERS)
    for layer, asset in item["assets"].items():
        assert asset["href"] == f"./{layer}.tif"
        assert (folder / f"{layer}.tif").is_file()
        n = SIZE * 10 // RES[layer]
        assert asset["proj:shape"] == [n, n]
        assert asset["proj:transform"] == [RES[layer], 0.0, 600000.0, 0.0, -RES[layer], 5900040.0]
        if layer != "SCL":
            assert asset["eo:bands"][0]["name"] == layer
        # STAC file extension: SHA-256 multihash (0x12 sha2-256, 0x20 = 32 bytes) and size.
        digest = hashlib.sha256((folder / f"{layer}.tif").read_bytes()).hexdigest()
        assert asset["file:checksum"] == "1220" + digest
        assert asset["file:size"] == (folder / f"{layer}.tif").stat().st_size
    assert "https://stac-extensions.github.io/file/v2.1.0/schema.json" in item["stac_extensions"]
    assert _product(summary, A)["path"] == f"products/{A}/{A}.json"


@pytest.mark.parametrize("fmt", ["jp2", "cog"])
def test_georeference_matches_real_tile_origin(fmt, jp2, cog):
    root, summary = jp2 if fmt == "jp2" else cog
    entry = _product(summary, A)
    assert (entry["epsg"], entry["ulx"], entry["uly"]) == (32629, 600000.0, 5900040.0)
    for layer in LAYERS:
        res = RES[layer]
        with rasterio.open(root / entry["bands"][layer]) as ds:
            assert ds.crs.to_epsg() == 32629
            assert tuple(ds.transform)[:6] == (res, 0.0, 600000.0, 0.0, -res, 5900040.0)
            assert ds.shape == (SIZE * 10 // res,) * 2
            assert ds.dtypes[0] == ("uint8" if layer == "SCL" else "uint16")
            if fmt == "cog":
                assert ds.nodata == 0
                assert ds.profile["compress"] == "deflate"
            else:
                assert ds.driver == "JP2OpenJPEG"


def test_jp2_and_cog_hold_identical_pixels(jp2, cog):
    for name in (A, B):
        for layer in LAYERS:
            a = _read(jp2[0], jp2[1], name, layer)
            b = _read(cog[0], cog[1], name, layer)
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {layer}")


# --- CLC GeoPackage ----------------------------------------------------------------------


def test_clc_gpkg_schema_crs_mmu_and_index(jp2):
    root, summary = jp2
    path = root / "clc" / "clc2018.gpkg"
    info = pyogrio.read_info(path, layer="clc2018")
    assert info["crs"] == "EPSG:3035"
    assert info["geometry_type"] == "Polygon"
    assert {"Code_18", "ID"} <= set(info["fields"])
    _, table = pyogrio.read_arrow(path, layer="clc2018")
    codes = table.column("Code_18").to_pylist()
    assert all(isinstance(c, str) and len(c) == 3 for c in codes)
    assert set(codes) <= set(CODES) and "335" not in codes
    assert len(set(table.column("ID").to_pylist())) == len(codes)
    geoms = shapely.from_wkb(table.column(info["geometry_name"] or "geom").to_numpy(zero_copy_only=False))
    assert shapely.is_valid(geoms).all()
    assert shapely.area(geoms).min() >= MMU_M2
    assert summary["clc"]["n_polygons"] == len(codes)
    with sqlite3.connect(path) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert any(t.startswith("rtree_clc2018") for t in tables)
    # The layer covers the tile plus (almost all of) the 2 km margin.
    need = tile_region_3035(32629, 600000.0, 5900040.0, SIZE * 10.0).buffer(-100.0)
    assert shapely.union_all(geoms).contains(need)


def test_truth_map_is_rasterized_gpkg(jp2):
    root, summary = jp2
    df = pyogrio.read_dataframe(root / "clc" / "clc2018.gpkg").to_crs(32629)
    transform = rasterio.Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5900040.0)
    expected = rasterio.features.rasterize(
        zip(df.geometry, df["Code_18"].astype(int), strict=True), out_shape=(SIZE, SIZE),
        transform=transform, dtype="uint16",
    )
    truth_a, truth_b = _truth(root, summary, A), _truth(root, summary, B)
    assert (truth_a > 0).all()
    # Vertex-wise reprojection by another path may move a few boundary pixel centres.
    assert (truth_a == expected).mean() > 0.999
    np.testing.assert_array_equal(truth_a, truth_b)  # same tile, same CLC


def test_full_tile_world_has_enough_polygons():
    from bigearthnet.synth.landcover import generate_clc

    region = tile_region_3035(32629, 600000.0, 5900040.0, 109_800.0)
    geoms, codes = generate_clc([region], seed=0)
    assert len(geoms) >= 5000
    assert shapely.area(geoms).min() >= MMU_M2
    # Realistic mix: many classes, none dominating.
    _, counts = np.unique(codes, return_counts=True)
    assert len(counts) >= 20 and counts.max() / counts.sum() < 0.5
    assert shapely.union_all(geoms).contains(region.buffer(-REGION_MARGIN_M / 2))


# --- conditions ----------------------------------------------------------------------------


def test_forced_wedge_is_zero_in_every_layer(jp2):
    root, summary = jp2
    scl = _read(root, summary, A, "SCL")
    assert 0.02 < (scl == 0).mean() < 0.6
    for layer in LAYERS:
        data = _read(root, summary, A, layer)
        zero = data == 0
        assert zero.any(), layer
        # A band's zeros sit exactly where SCL (resampled) says no data.
        if RES[layer] == 60:
            ref = scl[1::3, 1::3] == 0
        elif RES[layer] == 20:
            ref = scl == 0
        else:
            ref = np.repeat(np.repeat(scl == 0, 2, axis=0), 2, axis=1)
        assert (zero != ref).mean() < 0.02, layer
        # The wedge touches the east or the west edge.
        cols = np.flatnonzero(zero.any(axis=0))
        assert cols[0] == 0 or cols[-1] == zero.shape[1] - 1


def test_no_zero_without_wedge(jp2):
    root, summary = jp2
    for layer in LAYERS:
        assert (_read(root, summary, B, layer) > 0).all(), layer


def test_clear_product_scl_is_surface_classes_only(jp2):
    root, summary = jp2
    scl = _read(root, summary, B, "SCL")
    assert set(np.unique(scl)) <= {SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER}
    frac = _product(summary, B)["scl_fractions"]
    assert frac["cloud"] == frac["snow"] == frac["shadow"] == frac["nodata"] == 0


def test_forced_clouds_shadow_snow_in_scl_and_pixels(jp2):
    root, summary = jp2
    scl = _read(root, summary, A, "SCL")
    present = set(np.unique(scl).tolist())
    assert {SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_THIN_CIRRUS, SCL_CLOUD_SHADOW, SCL_SNOW} <= present
    cloud = np.isin(scl, (SCL_CLOUD_HIGH,))
    snow = scl == SCL_SNOW
    shadow = scl == SCL_CLOUD_SHADOW
    assert 0.15 < np.isin(scl, (8, 9, 10)).mean() < 0.45
    b03, b11 = _read(root, summary, A, "B03")[::2, ::2], _read(root, summary, A, "B11")
    clear_b03 = _read(root, summary, B, "B03")[::2, ::2]
    clear_b11 = _read(root, summary, B, "B11")
    # Clouds: bright in the visible and in SWIR; snow: bright in the visible, dark in SWIR.
    assert b03[cloud].mean() > 5000 and b11[cloud].mean() > 4000
    assert b03[snow].mean() > 4000 and b11[snow].mean() < 0.7 * clear_b11[snow].mean()
    # Shadows: the same ground as the clear product, darker.
    b08 = _read(root, summary, A, "B8A")
    clear_b08 = _read(root, summary, B, "B8A")
    assert b08[shadow].mean() < 0.75 * clear_b08[shadow].mean()
    assert b03[~(cloud | snow | shadow) & (scl != 0)].mean() < 0.5 * b03[cloud].mean()
    assert clear_b03.mean() < 2000


def test_classes_differ_only_outside_rgb(jp2):
    """RGB-identical class pairs: same visible spectra, different red-edge/NIR/SWIR.

    Each polygon has a random brightness factor (+/-8 %, the same for every band and class),
    so with a handful of polygons per class the absolute means differ by a few per cent; the
    band ratios do not depend on it.
    """
    root, summary = jp2
    truth = _truth(root, summary, B)
    blocks = truth.reshape(SIZE // 2, 2, SIZE // 2, 2)
    pure = (blocks == blocks[:, :1, :, :1]).all(axis=(1, 3))
    cls20 = np.where(pure, blocks[:, 0, :, 0], 0)  # 20 m pixels covering one class only

    def at20(band: str) -> np.ndarray:
        data = _read(root, summary, B, band).astype(np.float64)
        if RES[band] == 10:
            return data.reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3))
        return data

    bands = {b: at20(b) for b in ("B02", "B03", "B04", "B06", "B08", "B8A", "B11")}
    checked = 0
    for group in RGB_IDENTICAL_GROUPS:
        present = [int(c) for c in group if (cls20 == int(c)).sum() >= 300]
        for i, a in enumerate(present):
            for b in present[i + 1:]:
                mean = {k: (v[cls20 == a].mean(), v[cls20 == b].mean()) for k, v in bands.items()}
                ratio = {k: ma / mb for k, (ma, mb) in mean.items()}
                # Same visible colour (band ratios) and brightness up to the polygon factor.
                for x in ("B02", "B04"):
                    assert abs(np.log(ratio[x] / ratio["B03"])) < 0.03, (a, b, x, ratio)
                assert abs(np.log(ratio["B03"])) < 0.2, (a, b, ratio)
                # Different shape outside the visible.
                outside = [abs(np.log(ratio[x] / ratio["B03"])) for x in ("B06", "B08", "B8A", "B11")]
                assert max(outside) > 0.25, (a, b, ratio)
                checked += 1
    assert checked >= 2, "too few RGB-identical class pairs in the test world; change SEED"


def test_spectra_table_rgb_groups():
    spec = spectra_table()
    idx = {c: i + 1 for i, c in enumerate(CODES)}
    vis = [BAND_NAMES.index(b) for b in ("B01", "B02", "B03", "B04")]
    rest = [i for i in range(12) if i not in vis]
    for group in RGB_IDENTICAL_GROUPS:
        rows = spec[[idx[c] for c in group]]
        assert (rows[:, vis] == rows[:1, vis]).all()
        for k in range(1, len(rows)):
            assert np.max(np.abs(np.log(rows[k, rest] / rows[0, rest]))) > 0.15
    # Every other pair of classes differs somewhere in the visible bands or elsewhere.
    assert len({tuple(r) for r in spec.round(3)}) == len(spec)


def test_lattice_noise_is_resolution_consistent():
    noise = LatticeNoise.create(np.random.default_rng(0), 4800.0, 1000.0, octaves=3)
    u10 = (np.arange(480) + 0.5) * 10
    u20 = (np.arange(240) + 0.5) * 20
    a, b = noise.grid(u10, u10), noise.grid(u20, u20)
    assert a.shape == (480, 480) and 0 <= a.min() and a.max() <= 1
    # A 20 m centre lies between 10 m centres: values agree to the local gradient.
    assert np.abs(b - a.reshape(240, 2, 240, 2).mean(axis=(1, 3))).max() < 0.02
    np.testing.assert_array_equal(noise.grid(u10[100:200], u10[:50]), a[:50, 100:200])


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -120, 1000, 10981, 11040, 12000])
def test_bad_size_px_raises_config_error(size, tmp_path):
    with pytest.raises(ConfigError, match="size_px"):
        synthesize(SynthConfig(products=[A], size_px=size), tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_full_tile_size_and_multiples_of_120_are_valid():
    from bigearthnet.synth import validate_config

    for size in (120, 1200, 10920, 10980):
        validate_config(SynthConfig(size_px=size))


def test_conditions_for_unknown_product_raise(tmp_path):
    with pytest.raises(ConfigError, match="conditions"):
        synthesize(SynthConfig(products=[A], conditions={B: ProductConditions(shadow=True)}),
                   tmp_path / "w")


def test_bad_product_name_raises(tmp_path):
    with pytest.raises(ProductNameError):
        synthesize(SynthConfig(products=["S2A_MSIL2A_nonsense"]), tmp_path / "w")


def test_products_drawn_from_real_list_are_seeded():
    default = resolve_products(SynthConfig())
    assert len(default) == 1
    three = [n.name for n in resolve_products(SynthConfig(tiles=3, seed=5))]
    assert three == [n.name for n in resolve_products(SynthConfig(tiles=3, seed=5))]
    assert len(set(three)) == 3 and all(n.split("_")[3] == "N0205" for n in three)
    assert three != [n.name for n in resolve_products(SynthConfig(tiles=3, seed=6))]
    mixed = resolve_products(SynthConfig(products=[A], tiles=2))
    assert mixed[0].name == A and len(mixed) == 3


def test_world_json_records_conditions_and_files(jp2):
    root, _ = jp2
    doc = json.loads((root / "truth" / "world.json").read_text())
    assert doc["seed"] == SEED and doc["size_px"] == SIZE and doc["format"] == "jp2"
    entry = next(p for p in doc["products"] if p["name"] == A)
    assert entry["conditions"] == CONDITIONS[A]
    assert entry["tile"] == "T29UPU" and entry["epsg"] == 32629
    assert set(entry["bands"]) == set(LAYERS)
    assert all((root / f).is_file() for f in entry["bands"].values())
    assert str(root) not in json.dumps(doc)  # relative paths only


def test_unforced_multi_product_world_has_cloudy_and_snowy_products():
    from bigearthnet.synth.world import resolve_conditions

    cfg = SynthConfig(tiles=3, seed=0)
    conds = resolve_conditions(cfg, resolve_products(cfg))
    assert max(c.cloud_fraction for c in conds) >= 0.25
    assert max(c.snow_fraction for c in conds) >= 0.25
    assert all(c.cloud_fraction is not None and c.nodata_wedge is not None for c in conds)


def test_transformer_sanity_of_region():
    # The 3035 region of T29UPU contains the tile centre.
    region = tile_region_3035(32629, 600000.0, 5900040.0, SIZE * 10.0)
    tr = Transformer.from_crs(32629, 3035, always_xy=True)
    assert region.contains(shapely.Point(*tr.transform(602400.0, 5897640.0)))
