"""import-v1 on the 6 real BigEarthNet-S2 v1.0 example patches shipped in bigearthnet-common."""

from __future__ import annotations

import json
import tarfile
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely

from bigearthnet.dataset.schema import IMPORTED_PATCH_SCHEMA
from bigearthnet.errors import (
    CorruptRasterError,
    EmptyInputError,
    PatchMetadataError,
    PatchMissingError,
    UnknownLabelError,
)
from bigearthnet.sentinel2.bands import GROUPS
from bigearthnet.spark.import_v1 import ImportConfig, run_import

pytestmark = pytest.mark.spark
COMMON = resources.files("bigearthnet_common")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("v1")
    with tarfile.open(str(COMMON.joinpath("BigEarthNet-S2-Example.tar.bz2"))) as tar:
        tar.extractall(root, filter="data")
    return root / "BigEarthNet-S2-Example"


@pytest.fixture(scope="module")
def splits_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("splits")
    for stem in ("train", "val", "test"):
        (d / f"{stem}.csv.bz2").write_bytes(COMMON.joinpath(f"{stem}.csv.bz2").read_bytes())
    return d


@pytest.fixture(scope="module")
def imported(archive, splits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "ds"
    manifest = run_import(ImportConfig(archive=str(archive), out=str(out), splits_dir=str(splits_dir),
                                       patches_per_task=4))
    return out, manifest


def test_pixels_and_labels_equal_the_archive(spark, archive, tmp_path):
    out = tmp_path / "ds"
    manifest = run_import(ImportConfig(archive=str(archive), out=str(out)))  # random split, no lists
    table = pads.dataset(out / "patches", format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 6 == manifest["counts"]["patches_kept"]
    for i in range(table.num_rows):
        name = table["patch_id_v1"][i].as_py()
        folder = archive / name
        meta = json.loads((folder / f"{name}_labels_metadata.json").read_text())
        assert sorted(table["labels_43"][i].as_py()) == sorted(meta["labels"])
        for res, bands in GROUPS.items():
            col = IMPORTED_PATCH_SCHEMA[f"bands_{res}m"]
            got = col.decode(table[col.name].slice(i, 1))[0]
            for b, band in enumerate(bands):
                with rasterio.open(folder / f"{name}_{band}.tif") as src:
                    np.testing.assert_array_equal(got[b], src.read(1))
        c = meta["coordinates"]
        assert shapely.from_wkb(table["footprint"][i].as_py()).equals(
            shapely.box(c["ulx"], c["lry"], c["lrx"], c["uly"]))
        assert table["patch_id"][i].as_py().endswith(f"_{meta['tile_source'].split('_')[5]}_" + "_".join(name.split("_")[-2:]))


def test_official_splits_and_metadata(imported, splits_dir):
    out, manifest = imported
    from bigearthnet.quality import read_name_list

    official = {}
    for split, stem in (("train", "train"), ("validation", "val"), ("test", "test")):
        for n in read_name_list(splits_dir / f"{stem}.csv.bz2"):
            official[n] = split
    meta = pq.read_table(out / "metadata.parquet")
    for rec in meta.to_pylist():
        assert rec["split"] == official[rec["s2v1_name"]]
        assert rec["s1_name"] is None
    counts = manifest["counts"]
    # One example patch is in no official split file (it is on the snow/cloud lists).
    assert meta.num_rows == counts["patches_kept"] == 6 - counts["dropped_not_in_split"]
    assert counts["kept_train"] + counts["kept_validation"] + counts["kept_test"] == counts["patches_kept"]
    assert manifest["class_frequencies"]["labels_43"]["Coniferous forest"] >= 1
    stats = json.loads((out / "stats.json").read_text())
    assert stats["n_patches"] == counts["kept_train"]


def test_exclusion_lists_drop_and_flag(spark, archive, tmp_path):
    out = tmp_path / "ds"
    snow = tmp_path / "patches_with_seasonal_snow.csv"
    victim = min(p.name for p in archive.iterdir())
    snow.write_text(victim + "\n")
    manifest = run_import(ImportConfig(archive=str(archive), out=str(out), exclude_lists=[str(snow)]))
    assert manifest["counts"]["dropped_lists"] == 1 and manifest["counts"]["patches_kept"] == 5
    assert victim not in pq.read_table(out / "metadata.parquet")["s2v1_name"].to_pylist()


def _copy(archive: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(archive, dest)
    return dest


def test_unreadable_tiff(spark, archive, tmp_path):
    bad = _copy(archive, tmp_path / "a")
    name = sorted(p.name for p in bad.iterdir())[1]
    victim = bad / name / f"{name}_B8A.tif"
    victim.write_bytes(b"not a tiff")
    with pytest.raises(CorruptRasterError, match=str(victim)):
        run_import(ImportConfig(archive=str(bad), out=str(tmp_path / "ds")))
    assert not (tmp_path / "ds").exists()


def test_missing_json(spark, archive, tmp_path):
    bad = _copy(archive, tmp_path / "a")
    name = sorted(p.name for p in bad.iterdir())[2]
    (bad / name / f"{name}_labels_metadata.json").unlink()
    with pytest.raises(PatchMetadataError, match=name):
        run_import(ImportConfig(archive=str(bad), out=str(tmp_path / "ds")))
    assert not (tmp_path / "ds").exists()


def test_unknown_label_name(spark, archive, tmp_path):
    bad = _copy(archive, tmp_path / "a")
    name = sorted(p.name for p in bad.iterdir())[3]
    path = bad / name / f"{name}_labels_metadata.json"
    meta = json.loads(path.read_text())
    meta["labels"].append("Lunar regolith")
    path.write_text(json.dumps(meta))
    with pytest.raises(UnknownLabelError, match="Lunar regolith"):
        run_import(ImportConfig(archive=str(bad), out=str(tmp_path / "ds")))
    assert not (tmp_path / "ds").exists()


def _break_three(archive: Path, dest: Path) -> tuple[Path, dict[str, tuple[str, Path]], set[str]]:
    """A copy of the archive with three of its six patch folders broken: a truncated band TIFF,
    a missing band file, bytes flipped in a TIFF header (its first directory offset). At two
    patches per task, the first task reads no sound patch.

    Returns:
        The copy, broken folder name -> (the error it must give, the damaged file), and the
        names of the sound folders.
    """
    bad = _copy(archive, dest)
    names = sorted(p.name for p in bad.iterdir())
    broken = {names[0]: ("CorruptRasterError", bad / names[0] / f"{names[0]}_B04.tif"),
              names[1]: ("PatchMissingError", bad / names[1] / f"{names[1]}_B11.tif"),
              names[4]: ("CorruptRasterError", bad / names[4] / f"{names[4]}_B02.tif")}
    truncated, missing, flipped = (path for _, path in broken.values())
    truncated.write_bytes(truncated.read_bytes()[:3000])
    missing.unlink()
    data = bytearray(flipped.read_bytes())
    data[4:8] = bytes(b ^ 0xFF for b in data[4:8])
    flipped.write_bytes(bytes(data))
    return bad, broken, set(names) - set(broken)


def _output_bytes(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("manifest.json", "import_config.json")}


def test_skip_imports_the_sound_patches_and_names_the_broken_ones(spark, archive, tmp_path, capsys):
    from bigearthnet.cli import main
    from bigearthnet.config import SparkConfig

    bad, broken, good = _break_three(archive, tmp_path / "a")
    out = tmp_path / "ds"
    assert main(["import-v1", str(bad), "--out", str(out), "--on-error", "skip",
                 "--master", "local[2]", "--config", str(_per_task(tmp_path, 2))]) == 0
    assert "3 broken patch(es) skipped" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert {k: counts[k] for k in ("patches_listed", "patches_failed", "patches_unreadable",
                                   "patches_missing", "patches_cut", "patches_kept")} == {
        "patches_listed": 6, "patches_failed": 3, "patches_unreadable": 2, "patches_missing": 1,
        "patches_cut": 3, "patches_kept": 3}
    failures = manifest["failures"]
    assert [f["patch_id"] for f in failures] == sorted(broken)
    for f in failures:
        error_type, path = broken[f["patch_id"]]
        assert f["error_type"] == error_type and str(path) in f["message"], f
        assert f["kind"] == ("missing" if error_type == "PatchMissingError" else "unreadable")
    assert manifest["archive"]["problems"]["unreadable"] == sorted(
        n for n, (t, _) in broken.items() if t == "CorruptRasterError")
    # exactly the sound patches, each as an import of the sound folders alone gives it
    table = pads.dataset(out / "patches", format="parquet", partitioning="hive").to_table()
    assert set(table["patch_id_v1"].to_pylist()) == good == set(
        pq.read_table(out / "metadata.parquet")["s2v1_name"].to_pylist())
    alone = tmp_path / "good"
    alone.mkdir()
    for name in good:
        (bad / name).rename(alone / name)
    run_import(ImportConfig(archive=str(alone), out=str(tmp_path / "ref")))
    ref = pads.dataset(tmp_path / "ref" / "patches", format="parquet", partitioning="hive").to_table()
    assert table.sort_by("patch_id").to_pylist() == ref.sort_by("patch_id").to_pylist()
    # the same bytes on one core
    for name in good:
        (alone / name).rename(bad / name)
    again = tmp_path / "again"
    run_import(ImportConfig(archive=str(bad), out=str(again), on_error="skip", patches_per_task=2,
                            spark=SparkConfig(master="local[1]")))
    assert _output_bytes(again) == _output_bytes(out)
    assert json.loads((again / "manifest.json").read_text())["failures"] == failures


def _per_task(tmp_path: Path, n: int) -> Path:
    cfg = tmp_path / "import.yaml"
    cfg.write_text(f"patches_per_task: {n}\n")
    return cfg


def test_fail_stops_at_a_broken_patch(spark, archive, tmp_path):
    bad, broken, _ = _break_three(archive, tmp_path / "a")
    with pytest.raises((CorruptRasterError, PatchMissingError)) as info:
        run_import(ImportConfig(archive=str(bad), out=str(tmp_path / "ds"), patches_per_task=2))
    assert any(str(path) in str(info.value) and type(info.value).__name__ == error_type
               for error_type, path in broken.values()), info.value
    assert "re-download the archive" in str(info.value)
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.tmp-*"))


def test_skip_with_every_patch_broken_is_an_error(spark, archive, tmp_path):
    bad = _copy(archive, tmp_path / "a")
    names = sorted(p.name for p in bad.iterdir())
    for name in names:
        (bad / name / f"{name}_B02.tif").unlink()
    with pytest.raises(EmptyInputError, match=f"all 6 patch folder.*{bad / names[0]}") as info:
        run_import(ImportConfig(archive=str(bad), out=str(tmp_path / "ds"), on_error="skip"))
    assert "re-download the archive" in str(info.value)
    assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.tmp-*"))


def test_garbled_projection_and_non_object_json_are_named(archive, tmp_path):
    from bigearthnet.stages.v1_archive import read_patch

    bad = _copy(archive, tmp_path / "a")
    first, second = sorted(bad.iterdir())[:2]
    path = first / f"{first.name}_labels_metadata.json"
    meta = json.loads(path.read_text())
    meta["projection"] = "not a WKT"
    path.write_text(json.dumps(meta))
    (second / f"{second.name}_labels_metadata.json").write_text("[]")
    for folder in (first, second):
        with pytest.raises(PatchMetadataError, match=f"{folder.name}_labels_metadata.json.*re-download"):
            read_patch(folder)
