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
from bigearthnet.errors import CorruptRasterError, PatchMetadataError, UnknownLabelError
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
