"""Silent corruption: files damaged after their product was written fail by their checksums.

A COG or JP2 with 2,000 bytes flipped in the middle of its data decodes without a word (GDAL
returns other pixels). Products carry checksums (``manifest.safe`` MD5s, STAC ``file:checksum``);
the build verifies them and a mismatch is a ``ChecksumMismatchError`` naming the file.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from bigearthnet.config import BuildConfig
from bigearthnet.errors import ChecksumMismatchError, CorruptRasterError, ProductManifestError
from bigearthnet.sentinel2 import checksums
from bigearthnet.sentinel2.products import discover_products
from bigearthnet.sentinel2.reader import OpenProduct
from bigearthnet.spark.build import run_build
from worlds import T29UPU, T33UUP, copy_products

FIX = "re-download the product"


def flip_middle(path: Path, n: int = 2000) -> None:
    """Invert ``n`` bytes in the middle of a file (its size stays the same)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid - n // 2: mid + n // 2] = bytes(b ^ 0xFF for b in data[mid - n // 2: mid + n // 2])
    path.write_bytes(bytes(data))


def layer_file(products: Path, product: str, layer: str) -> Path:
    hits = sorted((products / f"{product}.SAFE").rglob(f"*_{layer}_*m.jp2"))
    hits += sorted((products / product).glob(f"{layer}.tif")) if (products / product).is_dir() else []
    (hit,) = hits
    return hit


def assert_no_output(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.tmp-*"))


@pytest.mark.parametrize("fmt", ["cog", "jp2"])
def test_flipped_bytes_decode_silently_but_fail_the_checksum(spark, fmt, world_cog, world_jp2,
                                                             tmp_path):
    world = world_cog if fmt == "cog" else world_jp2
    products = copy_products(world, tmp_path / "p")
    victim = layer_file(products, T33UUP, "B04")
    with rasterio.open(victim) as ds:
        before = ds.read(1)
    flip_middle(victim)
    with rasterio.open(victim) as ds:  # the fault is silent to the decoder...
        assert (ds.read(1) != before).any()
    out = tmp_path / "ds"
    with pytest.raises(ChecksumMismatchError) as info:  # ...but not to the build
        run_build(BuildConfig(products=str(products), out=str(out)))
    message = str(info.value)
    assert T33UUP in message and str(victim) in message and FIX in message
    assert ("manifest.safe" if fmt == "jp2" else "STAC item") in message
    assert isinstance(info.value, CorruptRasterError)  # the family callers already catch
    assert_no_output(out)

    # on_error: skip builds the good product and lists the damaged one.
    manifest = run_build(BuildConfig(products=str(products), out=str(out), on_error="skip"))
    assert manifest["counts"]["products"] == 1
    (failure,) = manifest["failures"]
    assert failure["product_id"] == T33UUP and failure["error_type"] == "ChecksumMismatchError"
    assert str(victim) in failure["message"]
    assert json.loads((out / "manifest.json").read_text())["failures"] == manifest["failures"]
    assert [p.stem for p in (out / "patches").glob("*.parquet")] == [T29UPU]


def test_flipped_bytes_in_a_zipped_safe(spark, world_zip, tmp_path):
    products = tmp_path / "p"
    shutil.copytree(world_zip / "products", products)
    victim = products / f"{T29UPU}.zip"
    with zipfile.ZipFile(victim) as zf:
        (info,) = [i for i in zf.infolist() if i.filename.endswith("_B03_10m.jp2")]
    # Damage the member's bytes inside the zip (a damaged download).
    data = bytearray(victim.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    mid = start + info.compress_size // 2
    data[mid - 1000: mid + 1000] = bytes(b ^ 0xFF for b in data[mid - 1000: mid + 1000])
    victim.write_bytes(bytes(data))
    out = tmp_path / "ds"
    with pytest.raises(ChecksumMismatchError) as info_:
        run_build(BuildConfig(products=str(products), out=str(out)))
    message = str(info_.value)
    assert T29UPU in message and str(victim.resolve()) in message and "B03" in message
    assert FIX in message
    assert_no_output(out)


def test_truncation_fails_on_the_size_before_any_decoding(world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    victim = layer_file(products, T29UPU, "SCL")
    victim.write_bytes(victim.read_bytes()[:-10])
    source = next(s for s in discover_products(products)[0] if s.product_id == T29UPU)
    with pytest.raises(ChecksumMismatchError, match="bytes, but .*manifest.safe says"):
        OpenProduct(source)


def test_a_good_product_is_verified_while_it_is_read(world_cog, world_jp2):
    for world in (world_cog, world_jp2):
        (source, _), _ = discover_products(world / "products")
        assert len(source.checksums) == 13
        with OpenProduct(source) as product:
            assert product.verified == 0  # digests pending while strips are decoded
            for _ in product.strips(1):
                pass
            assert product.verified == 13


def test_a_product_without_checksums_builds_as_before(spark, world_jp2, world_cog, tmp_path):
    jp2 = copy_products(world_jp2, tmp_path / "jp2")
    for manifest in jp2.rglob("manifest.safe"):
        manifest.unlink()
    cog = copy_products(world_cog, tmp_path / "cog")
    for item_path in cog.rglob("*.json"):
        item = json.loads(item_path.read_text())
        for asset in item["assets"].values():
            asset.pop("file:checksum"), asset.pop("file:size")
        item_path.write_text(json.dumps(item))
    for products in (jp2, cog):
        sources, _ = discover_products(products)
        assert all(not s.checksums and not s.checksums_from for s in sources)
        flip_middle(layer_file(products, T33UUP, "B04"))  # undetectable without checksums
        manifest = run_build(BuildConfig(products=str(products), out=str(tmp_path / f"ds-{products.name}")))
        assert manifest["counts"]["products"] == 2 and not manifest["failures"]


def test_malformed_manifest_is_a_named_error(spark, world_jp2, tmp_path):
    products = copy_products(world_jp2, tmp_path / "p")
    manifest = products / f"{T29UPU}.SAFE" / "manifest.safe"
    manifest.write_text(manifest.read_text()[:500])  # cut mid-element
    out = tmp_path / "ds"
    with pytest.raises(ProductManifestError) as info:
        run_build(BuildConfig(products=str(products), out=str(out)))
    assert str(manifest) in str(info.value) and FIX in str(info.value)
    assert_no_output(out)
    bad_digest = products / f"{T33UUP}.SAFE" / "manifest.safe"
    bad_digest.write_text(bad_digest.read_text().replace('checksumName="MD5">', 'checksumName="MD5">zz', 1))
    sources, (failure,) = discover_products(products / f"{T33UUP}.SAFE")
    assert not sources and failure.error_type == "ProductManifestError"
    assert "malformed" in failure.message and str(bad_digest) in failure.message


def test_multihash_forms():
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert checksums.parse_multihash("d510" + md5, "x") == checksums.Expected("md5", md5)
    assert checksums.parse_multihash("1220" + sha.upper(), "x") == checksums.Expected("sha256", sha)
    assert checksums.Expected("md5", md5).to_multihash() == "d510" + md5
    for bad in ("", md5, "d510" + md5[:-2], "1220" + md5, "ffff" + md5, "d510" + "g" * 32):
        with pytest.raises(ProductManifestError, match="multihash"):
            checksums.parse_multihash(bad, "item.json, asset B02")


def test_verification_cost_is_one_streamed_pass(tmp_path):
    """The digest is computed in 1 MiB chunks (flat memory) and matches hashlib's."""
    import hashlib

    path = tmp_path / "blob"
    rng = np.random.default_rng(0)
    path.write_bytes(rng.integers(0, 256, 3 * checksums.CHUNK_BYTES + 17, dtype=np.uint8).tobytes())
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    assert checksums.file_multihash(path) == "1220" + want
    expected = checksums.Expected("sha256", want, path.stat().st_size)
    assert checksums.verify_file(str(path), expected, "P", "B02", "item")
    with pytest.raises(ChecksumMismatchError, match="SHA256"):
        checksums.verify_file(str(path), checksums.Expected("sha256", "0" * 64), "P", "B02", "item")
