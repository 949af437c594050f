"""Input fuzzing: seeded, generated faults across every input of the package.

Targets: SAFE folders, SAFE zips and STAC items with COGs (one small synthetic world each,
copied, then the copy damaged), the CLC GeoPackage, the v1 archive (the real example patches)
and config files. Faults: truncated, bit-flipped and zero-byte JP2/TIFF/GPKG files (with the
product's checksums stale, as after a damaged download, or rewritten, as if the producer wrote
them so), missing bands or SCL, wrong CRS or transform per band, a tile of no data only, STAC
items with missing or unreachable assets, non-UTF-8 names, unreadable files (skipped as root),
huge or negative config values.

For every case: a named ``BigEarthNetError`` (never another exception), whose message names the
file and the fix; no output that looks complete (no output folder, no staging folder); under
``on_error: skip`` one build of all damaged products of a format builds the good product (its
files byte-identical to an undisturbed build: 0 bytes lost) and lists every damaged one in the
manifest; likewise one import-v1 of all damaged v1 patches next to the good ones. A few cases go through the real CLI for the exit status.

The generator is seeded (``BIGEARTHNET_FUZZ_SEED``, default below); every assertion message
starts with the seed and the case, so a failure can be replayed exactly.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pytest
from damage import (
    empty,
    flip,
    non_utf8_rename,
    rename_product,
    rewrite_raster,
    truncate,
    zero_header,
    zip_member_offset,
    zip_safe,
)

from bigearthnet.config import BuildConfig, ImportConfig, SparkConfig, resolve
from bigearthnet.errors import BigEarthNetError
from bigearthnet.spark.build import run_build
from bigearthnet.spark.import_v1 import run_import
from worlds import T29UPU, T33UUP, resign

pytestmark = pytest.mark.spark

SEED = int(os.environ.get("BIGEARTHNET_FUZZ_SEED", "20261201"))
LAYERS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12", "SCL")
RES = {"B01": 60, "B09": 60, "B02": 10, "B03": 10, "B04": 10, "B08": 10, "SCL": 20} | {
    b: 20 for b in ("B05", "B06", "B07", "B8A", "B11", "B12")}
FIX = re.compile(r"re-download|remove it|rename|fix |fix,|fix or|use |choose|check |free |"
                 r"delete|replace|restore|rebuild|re-run|install|make it readable|wait", re.IGNORECASE)
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
LOCAL2 = SparkConfig(master="local[2]")  # the shared session of tests/conftest.py's spark fixture

PRODUCT_FAULTS = {
    "safe": ["truncate", "bitflip", "header", "zero_byte", "missing_layer", "missing_scl",
             "wrong_crs", "wrong_transform", "nodata_tile", "non_utf8_layer",
             "non_utf8_product", "manifest_truncated", "unreadable"],
    "zip": ["truncate", "bitflip", "zero_byte", "missing_layer", "wrong_crs", "nodata_tile",
            "zip_truncated", "zip_member_flipped"],
    "stac": ["truncate", "bitflip", "header", "zero_byte", "missing_asset", "missing_scl",
             "asset_unreachable", "asset_file_missing", "item_truncated", "item_zero_byte",
             "wrong_crs", "wrong_transform", "nodata_tile", "non_utf8_input"],
}
OTHER_FAULTS = {
    "clc": ["truncate", "header", "zero_byte", "bitflip_schema", "missing", "non_utf8_path"],
    "v1": ["tif_truncate", "tif_header", "tif_zero_byte", "tif_missing", "json_truncate",
           "json_zero_byte", "non_utf8_archive"],
    "config": ["zero_byte", "truncated_yaml", "non_utf8_bytes"],  # + huge/negative per field
}
CONFIG_FIELDS = {  # field: (huge, negative) generators; each must be refused by name
    "strip_rows": (lambda r: 10 ** r.randint(3, 30), lambda r: -r.randint(1, 10 ** 6)),
    "gdal_threads": (lambda r: 10 ** r.randint(5, 30), lambda r: -r.randint(1, 64)),
    "gdal_cache_mb": (lambda r: 10 ** r.randint(8, 30), lambda r: -r.randint(1, 10 ** 6)),
    "min_area_m2": (lambda r: float("inf"), lambda r: -r.uniform(1, 1e9)),
    "max_unlabeled_fraction": (lambda r: r.uniform(1.01, 1e12), lambda r: -r.uniform(1e-6, 5)),
    "split_fractions": (lambda r: [r.uniform(2, 1e9), 0.2, 0.2], lambda r: [-0.5, 0.75, 0.75]),
    "quality.snow_threshold": (lambda r: r.uniform(1.5, 1e12), lambda r: -r.uniform(0.1, 9)),
}


@dataclass(frozen=True)
class Case:
    """One generated fault."""

    n: int
    target: str
    fault: str
    layer: str = ""
    signed: bool = False  # checksums rewritten after the damage (the producer wrote it so)
    fraction: float = 0.5
    nbytes: int = 1
    config_field: str = ""
    config_value: object = None
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def id(self) -> str:
        bits = [f"{self.n:02d}", self.target, self.fault]
        if self.layer:
            bits.append(self.layer)
        if self.config_field:
            bits.append(self.config_field)
        return "-".join(bits)

    def ctx(self) -> str:
        """Prefix of every assertion message: how to replay this case."""
        return (f"[fuzz seed {SEED} (BIGEARTHNET_FUZZ_SEED={SEED} to replay), case {self.id}, "
                f"signed={self.signed}, fraction={self.fraction:.3f}, nbytes={self.nbytes}, "
                f"value={self.config_value!r}]")


def generate(seed: int) -> list[Case]:
    """The cases of one seed: every (target, fault) once, parameters drawn from the seed."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for target, faults in [*PRODUCT_FAULTS.items(), *OTHER_FAULTS.items()]:
        for fault in faults:
            n = len(cases)
            layer = ""
            if target in PRODUCT_FAULTS:
                layer = "SCL" if fault == "missing_scl" else rng.choice(LAYERS)
                if fault in ("wrong_crs", "wrong_transform"):
                    layer = rng.choice([x for x in LAYERS if x != "B02"])
            signed = rng.random() < 0.5 if fault in ("truncate", "zero_byte", "header") else (
                fault in ("wrong_crs", "wrong_transform", "nodata_tile"))
            fraction = rng.uniform(0.05, 0.95)
            nbytes = rng.randint(1, 2000)
            cases.append(Case(n, target, fault, layer, signed, fraction, nbytes))
    for cfield in sorted(CONFIG_FIELDS):  # every bounded key, too big and below its minimum
        for i, fault in enumerate(("huge", "negative")):
            cases.append(Case(len(cases), "config", fault, config_field=cfield,
                              config_value=CONFIG_FIELDS[cfield][i](rng)))
    return cases


CASES = generate(SEED)
assert len(CASES) >= 40, len(CASES)


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_named(exc: BaseException | None, case: Case, needles: list[str]) -> BigEarthNetError:
    """The error is a named BigEarthNetError whose message names the file and the fix."""
    ctx = case.ctx()
    assert exc is not None, f"{ctx} no error: the fault passed silently"
    assert isinstance(exc, BigEarthNetError), (
        f"{ctx} raw {type(exc).__name__} instead of a named error: {exc!r}")
    message = str(exc)
    assert any(n in message or _printable(n) in message for n in needles), (
        f"{ctx} {type(exc).__name__} does not name the file ({needles}): {message}")
    assert FIX.search(message), f"{ctx} {type(exc).__name__} does not say what to do: {message}"
    return exc


def assert_nothing_complete(out: Path, case: Case) -> None:
    ctx = case.ctx()
    assert not out.exists(), f"{ctx} output folder {out} exists after a failed job"
    assert not list(out.parent.glob(f".{out.name}.tmp-*")), f"{ctx} staging folder left"
    assert not list(out.parent.rglob("_SUCCESS")), f"{ctx} a _SUCCESS marker exists"


def raised(fn) -> BaseException | None:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the test checks what was raised
        return exc
    return None


# --- product worlds ----------------------------------------------------------------------------


def clone_name(n: int) -> str:
    """A distinct real-looking product name per case (its own datatake): T33UUP, other times."""
    hh, mm = 10 + n // 60, n % 60
    return T33UUP.replace("20170613T101031", f"20170613T{hh:02d}{mm:02d}31", 1)


@dataclass
class Damaged:
    """A damaged product of a case: where it is, what the error must name, expected types."""

    case: Case
    path: Path  # the SAFE folder, zip or STAC item (alone: the on_error fail build's input)
    needles: list[str]  # the message names one of these (the file, in its printed forms)
    expected: tuple[str, ...]
    also: tuple[str, ...] = ()  # and all of these


def _layer_path(product: Path, fmt: str, layer: str) -> Path:
    if fmt == "stac":
        return product / f"{layer}.tif"
    (hit,) = product.rglob(f"*_{layer}_{RES[layer]}m.jp2")
    return hit


def _data_range(path: Path) -> tuple[int, int]:
    size = path.stat().st_size
    return size // 4, size // 2  # the middle of the file: image data, not the header


def damage_product(case: Case, fmt: str, world: Path, root: Path) -> Damaged | None:
    """Copy T33UUP of ``world`` under the case's own name into ``root`` and damage it."""
    if case.fault == "non_utf8_input":
        return None  # its own input folder: see test_non_utf8_input_folder
    name = clone_name(case.n)
    src_name = f"{T33UUP}.SAFE" if fmt in ("safe", "zip") else T33UUP
    product = rename_product(world / "products" / src_name, root, name)
    f = case.fault
    expected: tuple[str, ...] = ()
    victim = _layer_path(product, fmt, case.layer) if case.layer else None
    needles = [str(victim)] if victim else []
    stale = "ChecksumMismatchError"
    if f == "truncate":
        truncate(victim, case.fraction)
        expected = ("CorruptRasterError",) if case.signed else (stale,)
    elif f == "bitflip":
        lo, span = _data_range(victim)
        flip(victim, lo + int(case.fraction * span), case.nbytes)
        expected = (stale,)
    elif f == "header":
        zero_header(victim)
        expected = ("CorruptRasterError",) if case.signed else (stale,)
    elif f == "zero_byte":
        empty(victim)
        expected = ("CorruptRasterError",) if case.signed else (stale,)
    elif f in ("missing_layer", "missing_scl"):
        victim.unlink()
        needles, expected = [str(product)], ("MissingBandError",)
    elif f in ("missing_asset",):
        item_path = product / f"{name}.json"
        item = json.loads(item_path.read_text())
        del item["assets"][case.layer]
        item_path.write_text(json.dumps(item))
        needles, expected = [str(item_path)], ("MissingBandError",)
    elif f == "wrong_crs":
        rewrite_raster(victim, crs="EPSG:32630" if "32633" in _crs(victim) else "EPSG:32633")
        expected = ("GeoreferenceMismatchError",)
    elif f == "wrong_transform":
        rewrite_raster(victim, shift_px=1)
        expected = ("GeoreferenceMismatchError",)
    elif f == "nodata_tile":
        for layer in LAYERS:
            rewrite_raster(_layer_path(product, fmt, layer), zeros=True)
        needles, expected = [str(product)], ("NoDataTileError",)
    elif f == "non_utf8_layer":
        needles = [str(non_utf8_rename(victim))]
        expected = ("FileNameError",)
    elif f == "non_utf8_product":
        bad = Path(os.fsdecode(os.fsencode(product.parent) + b"/\xff" + os.fsencode(product.name)))
        os.rename(os.fsencode(product), os.fsencode(bad))
        # Its name does not parse (ProductNameError); given alone as the input, the input's own
        # name is refused first (FileNameError).
        product, needles, expected = bad, [str(bad)], ("ProductNameError", "FileNameError")
    elif f == "manifest_truncated":
        truncate(product / "manifest.safe", case.fraction)
        needles, expected = [str(product / "manifest.safe")], ("ProductManifestError",)
    elif f == "unreadable":
        if IS_ROOT:
            shutil.rmtree(product)
            return None
        victim.chmod(0)
        expected = ("CorruptRasterError", stale)
    elif f in ("asset_unreachable", "asset_file_missing"):
        item_path = product / f"{name}.json"
        item = json.loads(item_path.read_text())
        url = (f"http://127.0.0.1:9/{name}/{case.layer}.tif" if f == "asset_unreachable"
               else f"./missing/{case.layer}.tif")
        item["assets"][case.layer]["href"] = url
        item_path.write_text(json.dumps(item))
        needles = [url if f == "asset_unreachable" else str(product / "missing" / f"{case.layer}.tif")]
        expected = ("AssetUnreachableError",) if f == "asset_unreachable" else ("MissingBandError",)
    elif f in ("item_truncated", "item_zero_byte"):
        item_path = product / f"{name}.json"
        (truncate(item_path, case.fraction) if f == "item_truncated" else empty(item_path))
        needles, expected = [str(item_path)], ("StacItemError",)
    elif f in ("zip_truncated", "zip_member_flipped"):
        pass  # damaged once zipped, below
    else:
        raise AssertionError(f"{case.ctx()} unknown fault {f}")
    if case.signed:
        resign(product)
    path = product
    if fmt == "stac":
        path = product / f"{name}.json" if not product.name.startswith("\udcff") else product
    if fmt == "zip":
        path = zip_safe(product, root / f"{name}.zip")
        shutil.rmtree(product)
        if f == "zip_truncated":
            truncate(path, case.fraction)
            needles, expected = [str(path)], ("CorruptRasterError",)
        elif f == "zip_member_flipped":
            offset, size = zip_member_offset(path, f"_{case.layer}_{RES[case.layer]}m.jp2")
            flip(path, offset + int(size * (0.25 + case.fraction / 2)), case.nbytes)
            needles, expected = [str(path)], (stale,)
        elif f in ("missing_layer", "missing_scl") or f == "nodata_tile":
            needles = [str(path)]
        elif victim is not None:
            member = victim.relative_to(root).as_posix()
            needles = [f"/vsizip/{path}/{member}"]
    also = (case.layer,) if f in ("missing_layer", "missing_scl", "missing_asset") else ()
    return Damaged(case, path, needles, expected, also)


def _crs(path: Path) -> str:
    import rasterio

    with rasterio.open(path) as ds:
        return str(ds.crs)


@pytest.fixture(scope="module")
def good_reference(world_jp2, tmp_path_factory) -> dict[str, bytes]:
    """The good product (T29UPU) built undisturbed: its output files' bytes."""
    out = tmp_path_factory.mktemp("fuzz-ref") / "ds"
    run_build(BuildConfig(products=str(world_jp2 / "products" / f"{T29UPU}.SAFE"), out=str(out),
                          spark=LOCAL2))
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in (out / "patches").rglob("*.parquet")}


@pytest.fixture(scope="module")
def damaged_worlds(world_jp2, world_cog, tmp_path_factory) -> dict[str, tuple[Path, list[Damaged]]]:
    """Per format: a products folder holding the good product and every damaged clone."""
    out = {}
    for fmt, world in (("safe", world_jp2), ("zip", world_jp2), ("stac", world_cog)):
        root = tmp_path_factory.mktemp(f"fuzz-{fmt}") / "products"
        root.mkdir()
        good = world / "products" / (f"{T29UPU}.SAFE" if world is world_jp2 else T29UPU)
        if fmt == "zip":
            zip_safe(good, root / f"{T29UPU}.zip")
        else:
            shutil.copytree(good, root / good.name)
        damaged = []
        for case in CASES:
            if case.target == fmt:
                d = damage_product(case, fmt, world, root)
                if d is not None:
                    damaged.append(d)
        out[fmt] = (root, damaged)
    return out


def _product_cases(fmt: str) -> list[Case]:
    return [c for c in CASES if c.target == fmt]


def _case_damaged(damaged_worlds, case: Case) -> Damaged:
    if case.fault == "unreadable" and IS_ROOT:
        pytest.skip("unreadable files: we run as root, who reads every file (chmod 000 does "
                    "not stop root); this case runs for non-root users")
    if case.fault == "non_utf8_input":
        pytest.skip("covered by test_non_utf8_input_folder (needs its own input folder)")
    _, damaged = damaged_worlds[case.target]
    (d,) = [d for d in damaged if d.case == case]
    return d


@pytest.mark.parametrize("case", [c for c in CASES if c.target in PRODUCT_FAULTS], ids=lambda c: c.id)
def test_damaged_product_fails_by_name(spark, damaged_worlds, case, tmp_path, fault_log):
    d = _case_damaged(damaged_worlds, case)
    out = tmp_path / "ds"
    exc = raised(lambda: run_build(BuildConfig(products=str(d.path), out=str(out))))
    err = check_named(exc, case, d.needles)
    assert all(a in str(err) for a in d.also), f"{case.ctx()} {d.also} not named: {err}"
    assert type(err).__name__ in d.expected, (
        f"{case.ctx()} expected {d.expected}, got {type(err).__name__}: {err}")
    assert_nothing_complete(out, case)
    fault_log(case.id, "product", type(err).__name__)


@pytest.mark.parametrize("fmt", sorted(PRODUCT_FAULTS))
def test_on_error_skip_builds_the_good_product_and_lists_every_damaged_one(
        spark, damaged_worlds, good_reference, fmt, tmp_path, fault_log):
    root, damaged = damaged_worlds[fmt]
    ctx = f"[fuzz seed {SEED}, format {fmt}, on_error skip]"
    out = tmp_path / "ds"
    manifest = run_build(BuildConfig(products=str(root), out=str(out), on_error="skip"))
    assert (out / "_SUCCESS").exists(), ctx
    assert manifest["counts"]["products"] == 1, (
        f"{ctx} {manifest['counts']} built: {[p['product_id'] for p in manifest['products']]}, "
        f"failed: {[(f.get('product_id') or f.get('path'), f['error_type']) for f in manifest['failures']]}")
    failures = manifest["failures"]
    assert len(failures) == len(damaged), (
        f"{ctx} {len(damaged)} damaged products, {len(failures)} failures listed: "
        f"{[f.get('product_id') or f.get('path') for f in failures]}")
    for d in damaged:
        hits = [f for f in failures
                if any(n in f["message"] or _printable(n) in f["message"] for n in d.needles)
                and all(a in f["message"] for a in d.also) and f["error_type"] in d.expected]
        assert hits, f"{d.case.ctx()} not listed as {d.expected} naming {d.needles}: {failures}"
    # The good product: byte-identical to an undisturbed build (0 bytes lost).
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "patches").rglob("*.parquet")}
    lost = sum(len(v) for k, v in good_reference.items() if got.get(k) != v)
    assert got.keys() == good_reference.keys() and lost == 0, f"{ctx} {lost} bytes lost"
    assert json.loads((out / "manifest.json").read_text())["failures"] == failures, ctx
    fault_log(f"skip-{fmt}", "skip", "ok", survived_cases=len(damaged), bytes_lost=lost)


def test_non_utf8_input_folder(spark, world_cog, tmp_path, fault_log):
    (case,) = [c for c in CASES if c.fault == "non_utf8_input"]
    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/products-\xff"))
    shutil.copytree(world_cog / "products", folder)
    out = tmp_path / "ds"
    exc = raised(lambda: run_build(BuildConfig(products=str(folder), out=str(out))))
    err = check_named(exc, case, [str(folder)])
    assert type(err).__name__ == "FileNameError", f"{case.ctx()} {type(err).__name__}: {err}"
    assert_nothing_complete(out, case)
    fault_log(case.id, "product", type(err).__name__)


# --- the CLC GeoPackage ------------------------------------------------------------------------


def damage_clc(case: Case, world: Path, dest: Path) -> tuple[Path, list[str]]:
    src = world / "clc" / "clc2018.gpkg"
    dest.mkdir(parents=True)
    path = dest / "clc2018.gpkg"
    shutil.copy(src, path)
    if case.fault == "truncate":
        truncate(path, case.fraction)
    elif case.fault == "header":
        zero_header(path, 100)  # the SQLite header: magic string, page size
    elif case.fault == "zero_byte":
        empty(path)
    elif case.fault == "bitflip_schema":
        flip(path, 100 + int(case.fraction * 3000), max(case.nbytes, 64))  # page 1: the schema
    elif case.fault == "missing":
        path.unlink()
    elif case.fault == "non_utf8_path":
        path = non_utf8_rename(path)
    return path, [str(path)]


@pytest.fixture(scope="module")
def clc_reference(world_jp2, tmp_path_factory) -> dict[str, bytes]:
    """The labeled build of the undamaged world: its patch files' bytes."""
    out = tmp_path_factory.mktemp("fuzz-clc-ref") / "ds"
    run_build(BuildConfig(products=str(world_jp2 / "products"),
                          clc=str(world_jp2 / "clc" / "clc2018.gpkg"), out=str(out), spark=LOCAL2))
    return _patch_bytes(out)


def _patch_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "patches").rglob("*.parquet")}


@pytest.mark.parametrize("case", [c for c in CASES if c.target == "clc"], ids=lambda c: c.id)
def test_damaged_clc_fails_by_name_under_both_error_modes(spark, world_jp2, clc_reference, case,
                                                          tmp_path, fault_log):
    clc, needles = damage_clc(case, world_jp2, tmp_path / "clc")
    outcome = None
    for mode in ("fail", "skip"):  # a bad CLC layer is no product's fault: it fails every build
        out = tmp_path / f"ds-{mode}"
        exc = raised(lambda out=out, mode=mode: run_build(BuildConfig(
            products=str(world_jp2 / "products"), clc=str(clc), out=str(out), on_error=mode)))
        if exc is None and case.fault == "bitflip_schema":
            # SQLite pages carry no checksum: flipped bytes that nothing reads (a free cell, the
            # SQL text of an unused table) go unnoticed. Survived only if nothing changed.
            lost = sum(len(v) for k, v in clc_reference.items() if _patch_bytes(out).get(k) != v)
            assert lost == 0, f"{case.ctx()} {mode}: the damaged CLC changed the output silently"
            outcome = "unread bytes: output identical"
            continue
        err = check_named(exc, case, needles)
        allowed = ("ClcReadError", "ClcSchemaError", "UnknownClcCodeError", "InputNotFoundError",
                   "FileNameError") + (("BuildFailedError",) if mode == "skip" else ())
        assert type(err).__name__ in allowed, f"{case.ctx()} {mode}: {err!r}"
        assert_nothing_complete(out, case)
        outcome = type(err).__name__
    fault_log(case.id, "clc", outcome)


# --- the v1 archive ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def v1_archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-v1")
    common = resources.files("bigearthnet_common")
    with tarfile.open(str(common.joinpath("BigEarthNet-S2-Example.tar.bz2"))) as tar:
        tar.extractall(root, filter="data")
    return root / "BigEarthNet-S2-Example"


def damage_v1(case: Case, archive: Path, dest: Path) -> tuple[Path, list[str]]:
    """Copy the archive to ``dest`` and damage one of its patch folders (or, for
    ``non_utf8_archive``, give the copy a name that is not UTF-8)."""
    rng = random.Random(f"{SEED}/{case.id}")
    if case.fault == "non_utf8_archive":
        dest = Path(os.fsdecode(os.fsencode(dest) + b"-\xff"))
    shutil.copytree(archive, dest)
    if case.fault == "non_utf8_archive":
        return dest, [str(dest)]
    patch = rng.choice(sorted(p for p in dest.iterdir() if p.is_dir()))
    return dest, damage_v1_patch(case, patch, rng)


def damage_v1_patch(case: Case, patch: Path, rng: random.Random) -> list[str]:
    """Damage one v1 patch folder as the case says; returns the damaged file (as needles)."""
    band = rng.choice(LAYERS[:-1])
    tif = patch / f"{patch.name}_{band}.tif"
    meta = patch / f"{patch.name}_labels_metadata.json"
    {"tif_truncate": lambda: truncate(tif, case.fraction),
     "tif_header": lambda: zero_header(tif, 8),
     "tif_zero_byte": lambda: empty(tif),
     "tif_missing": tif.unlink,
     "json_truncate": lambda: truncate(meta, case.fraction),
     "json_zero_byte": lambda: empty(meta)}[case.fault]()
    return [str(meta) if case.fault.startswith("json") else str(tif)]


def clone_v1_patch(src: Path, root: Path, n: int) -> Path:
    """Copy a v1 patch folder into ``root`` under a new name (its own column and row), its
    files renamed with it."""
    name = re.sub(r"_\d+_\d+$", f"_{100 + n}_{100 + n}", src.name)
    dest = root / name
    dest.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dest / f.name.replace(src.name, name, 1))
    return dest


@pytest.mark.parametrize("case", [c for c in CASES if c.target == "v1"], ids=lambda c: c.id)
def test_damaged_v1_archive_fails_by_name(spark, v1_archive, case, tmp_path, fault_log):
    archive, needles = damage_v1(case, v1_archive, tmp_path / "archive")
    out = tmp_path / "ds"
    exc = raised(lambda: run_import(ImportConfig(archive=str(archive), out=str(out),
                                                 patches_per_task=3)))
    err = check_named(exc, case, needles)
    assert_nothing_complete(out, case)
    fault_log(case.id, "v1", type(err).__name__)


@pytest.fixture(scope="module")
def v1_reference(v1_archive, tmp_path_factory) -> dict[str, bytes]:
    """The undamaged example patches imported in one task: the output files' bytes."""
    out = tmp_path_factory.mktemp("fuzz-v1-ref") / "ds"
    run_import(ImportConfig(archive=str(v1_archive), out=str(out), spark=LOCAL2))
    return _import_bytes(out)


def _import_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "import_config.json")}


def test_on_error_skip_imports_the_good_v1_patches_and_lists_every_damaged_one(
        spark, v1_archive, v1_reference, tmp_path, fault_log):
    # Every patch case damages its own clone of a good patch, in one archive with the six good
    # ones; the non-UTF-8 archive name is no patch's fault (it fails under skip as well).
    ctx = f"[fuzz seed {SEED}, v1 archive, on_error skip]"
    archive = tmp_path / "archive"
    shutil.copytree(v1_archive, archive)
    damaged = {}
    for case in CASES:
        if case.target == "v1" and case.fault != "non_utf8_archive":
            rng = random.Random(f"{SEED}/{case.id}")
            src = rng.choice(sorted(p for p in v1_archive.iterdir() if p.is_dir()))
            clone = clone_v1_patch(src, archive, case.n)
            damaged[clone.name] = (case, damage_v1_patch(case, clone, rng))
    out = tmp_path / "ds"
    manifest = run_import(ImportConfig(archive=str(archive), out=str(out), on_error="skip",
                                       patches_per_task=1000))
    assert (out / "_SUCCESS").exists(), ctx
    failures = {f["patch_id"]: f for f in manifest["failures"]}
    assert failures.keys() == damaged.keys(), f"{ctx} damaged {sorted(damaged)}, listed {sorted(failures)}"
    assert manifest["counts"]["patches_failed"] == len(damaged), ctx
    for name, (case, needles) in damaged.items():
        f = failures[name]
        assert any(n in f["message"] for n in needles) and FIX.search(f["message"]), (
            f"{case.ctx()} not listed naming {needles} and the fix: {f}")
        assert f["error_type"] in ("CorruptRasterError", "PatchMissingError", "PatchMetadataError"), (
            f"{case.ctx()} {f}")
    # The good patches: byte-identical to an undisturbed import (0 bytes lost).
    got = _import_bytes(out)
    lost = sum(len(v) for k, v in v1_reference.items() if got.get(k) != v)
    assert got.keys() == v1_reference.keys() and lost == 0, f"{ctx} {lost} bytes lost"
    assert json.loads((out / "manifest.json").read_text())["failures"] == manifest["failures"], ctx
    fault_log("skip-v1", "skip", "ok", survived_cases=len(damaged), bytes_lost=lost)


# --- config files ------------------------------------------------------------------------------


def damage_config(case: Case, path: Path) -> None:
    if case.fault in ("huge", "negative"):
        keys = case.config_field.split(".")
        doc: dict = {"products": "p", "out": "o"}
        node = doc
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = case.config_value
        text = json.dumps(doc).replace("Infinity", ".inf")  # JSON is YAML (but for infinity)
        path.write_text(text)
    elif case.fault == "zero_byte":
        path.write_bytes(b"")
    elif case.fault == "truncated_yaml":
        path.write_text("products: p\nout: o\nquality:\n  snow_threshold: [0.5,\n")
    elif case.fault == "non_utf8_bytes":
        path.write_bytes(b"products: p\nout: \xff\xfe\n")


@pytest.mark.parametrize("case", [c for c in CASES if c.target == "config"], ids=lambda c: c.id)
def test_bad_config_file_fails_by_name(case, tmp_path, fault_log):
    path = tmp_path / "build.yaml"
    damage_config(case, path)
    exc = raised(lambda: resolve(BuildConfig, path, {}))
    err = check_named(exc, case, [str(path)])
    assert type(err).__name__ == "ConfigError", f"{case.ctx()} {type(err).__name__}: {err}"
    if case.config_field:
        assert case.config_field.split(".")[-1] in str(err), f"{case.ctx()} key not named: {err}"
    fault_log(case.id, "config", type(err).__name__)


# --- through the real CLI ----------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run([sys.executable, "-m", "bigearthnet.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def test_cli_exit_status_for_a_product_a_v1_archive_and_a_config_fault(
        damaged_worlds, v1_archive, tmp_path, fault_log):
    safe_case = next(c for c in CASES if c.target == "safe" and c.fault == "bitflip")
    d = _case_damaged(damaged_worlds, safe_case)
    v1_case = next(c for c in CASES if c.target == "v1" and c.fault == "tif_header")
    archive, v1_needles = damage_v1(v1_case, v1_archive, tmp_path / "archive")
    cfg_case = next(c for c in CASES if c.target == "config" and c.fault == "negative")
    cfg = tmp_path / "build.yaml"
    damage_config(cfg_case, cfg)
    runs = [
        (safe_case, d.needles, ["build", "--products", str(d.path), "--out", str(tmp_path / "a"),
                                "--master", "local[1]"], tmp_path / "a"),
        (v1_case, v1_needles, ["import-v1", str(archive), "--out", str(tmp_path / "b"),
                               "--master", "local[1]"], tmp_path / "b"),
        (cfg_case, [str(cfg)], ["build", "--config", str(cfg), "--products", "p", "--out",
                                str(tmp_path / "c")], tmp_path / "c"),
    ]
    for case, needles, args, out in runs:
        proc = _cli(*args)
        ctx = case.ctx()
        assert proc.returncode == 2, f"{ctx} exit {proc.returncode}: {proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, f"{ctx} raw traceback: {proc.stderr[-3000:]}"
        last = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert last and re.match(r"error: \w+Error: ", last[-1]), f"{ctx} {proc.stderr[-2000:]}"
        assert any(_printable(n) in proc.stderr or n in proc.stderr for n in needles), ctx
        assert not out.exists() and not list(tmp_path.glob(f".{out.name}.tmp-*")), ctx
        fault_log(f"cli-{case.id}", "cli", last[-1].split(":")[1].strip())
