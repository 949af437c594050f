"""Each kind of bad input gives a named error naming the product and the file, and no output.

The damaged products here are re-signed (their checksums rewritten for the damaged bytes), as if
their producer had written them so: what fails is the decoder or a validator, not the checksum
check (damage after writing is tests/faults/test_checksums.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from bigearthnet.config import BuildConfig, resolve
from bigearthnet.errors import (
    BigEarthNetError,
    ConfigError,
    CorruptRasterError,
    EmptyInputError,
    GeoreferenceMismatchError,
    MissingBandError,
    OutputExistsError,
    ProductNameError,
    TileTooSmallError,
)
from bigearthnet.spark.build import run_build
from worlds import T29UPU, T33UUP, copy_products, resign

pytestmark = pytest.mark.spark


def band_file(products: Path, product: str, band: str) -> Path:
    (hit,) = (products / f"{product}.SAFE").rglob(f"*_{band}_*m.jp2")
    return hit


def assert_fails(products: Path, out: Path, error: type, *needles: str, **kw) -> BigEarthNetError:
    resign(products)
    with pytest.raises(error) as info:
        run_build(BuildConfig(products=str(products), out=str(out), **kw))
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))
    return info.value


def test_missing_band_file(spark, world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    victim = band_file(products, T29UPU, "B8A")
    victim.unlink()
    assert_fails(products, tmp_path / "ds", MissingBandError, T29UPU, "B8A", str(victim.parent.parent.parent.parent.parent))


def test_truncated_jp2(spark, world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    victim = band_file(products, T33UUP, "B04")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    err = assert_fails(products, tmp_path / "ds", CorruptRasterError, T33UUP, str(victim))
    assert isinstance(err, OSError)


def test_corrupt_jp2_header(spark, world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    victim = band_file(products, T29UPU, "B02")
    victim.write_bytes(b"\x00" * 64 + victim.read_bytes()[64:])
    assert_fails(products, tmp_path / "ds", CorruptRasterError, T29UPU, str(victim))


def test_unparseable_product_name(spark, world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    bad = products / "my_favourite_tile.SAFE"
    (products / f"{T29UPU}.SAFE").rename(bad)
    assert_fails(products, tmp_path / "ds", ProductNameError, "my_favourite_tile", str(bad))


def test_bands_with_disagreeing_transform(spark, world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    victim = band_file(products, T29UPU, "B11")
    with rasterio.open(victim) as src:
        profile, data = src.profile, src.read(1)
    profile["transform"] = profile["transform"] @ rasterio.Affine.translation(1, 0)  # 20 m east
    with rasterio.open(victim, "w", **profile) as dst:
        dst.write(data, 1)
    assert_fails(products, tmp_path / "ds", GeoreferenceMismatchError, T29UPU, str(victim), "disagree")


def test_bands_with_disagreeing_crs(spark, world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    victim = band_file(products, T29UPU, "B01")
    with rasterio.open(victim) as src:
        profile, data = src.profile, src.read(1)
    profile["crs"] = "EPSG:32630"
    with rasterio.open(victim, "w", **profile) as dst:
        dst.write(data, 1)
    assert_fails(products, tmp_path / "ds", GeoreferenceMismatchError, T29UPU, str(victim), "CRS")


def test_tile_smaller_than_one_patch(spark, world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    for path in (products / f"{T29UPU}.SAFE").rglob("*.jp2"):
        with rasterio.open(path) as src:
            res = int(src.transform.a)
            keep = int(np.ceil(1000 / res))  # 1000 m: less than one 1200 m patch
            data = src.read(1, window=Window(0, 0, keep, keep))
            profile = src.profile | {"width": keep, "height": keep}
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
    assert_fails(products, tmp_path / "ds", TileTooSmallError, T29UPU, "smaller than one")


def test_empty_input_directory(spark, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_fails(tmp_path / "empty", tmp_path / "ds", EmptyInputError, str(tmp_path / "empty"))


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "build.yaml"
    cfg.write_text("products: x\nout: y\nstrip_rowz: 4\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'strip_rowz'") as info:
        resolve(BuildConfig, cfg, {})
    assert str(cfg) in str(info.value)
    nested = tmp_path / "nested.yaml"
    nested.write_text("products: x\nout: y\nspark:\n  mastr: local[1]\n")
    with pytest.raises(ConfigError, match=r"spark\.mastr"):
        resolve(BuildConfig, nested, {})


def test_existing_output_is_not_clobbered(spark, world_jp2, tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_build(BuildConfig(products=str(world_jp2 / "products"), out=str(out)))
    assert (out / "keep.txt").read_text() == "mine"


def test_on_error_skip_builds_the_rest_and_lists_failures(spark, world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    victim = band_file(products, T33UUP, "B09")
    victim.write_bytes(victim.read_bytes()[:200])
    resign(products)
    out = tmp_path / "ds"
    manifest = run_build(BuildConfig(products=str(products), out=str(out), on_error="skip"))
    assert manifest["counts"]["products"] == 1 and manifest["counts"]["products_failed"] == 1
    (failure,) = manifest["failures"]
    assert failure["product_id"] == T33UUP and failure["error_type"] == "CorruptRasterError"
    assert str(victim) in failure["message"]
    assert [p.name for p in (out / "patches").iterdir()] == [f"{T29UPU}.parquet"]
    assert json.loads((out / "manifest.json").read_text())["failures"] == manifest["failures"]


def test_cli_exit_status_and_message(world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    victim = band_file(products, T29UPU, "B03")
    victim.write_bytes(victim.read_bytes()[:1000])
    resign(products)
    out = tmp_path / "ds"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run(
        [sys.executable, "-m", "bigearthnet.cli", "build", "--products", str(products), "--out",
         str(out), "--master", "local[1]"], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "CorruptRasterError" in proc.stderr and str(victim) in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".ds.tmp-*"))
