"""Round trips through the folder layouts give the dataset back:
build -> export reben -> import-v2, and build -> export v1 -> import-v1 (with the export's split
files), compared patch by patch with the files read by pyarrow."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely
from interop_helpers import SPARK, export, patch_rows

from bigearthnet.config import ImportConfig, ImportV2Config
from bigearthnet.dataset.loader import make_loader
from bigearthnet.errors import ExportError
from bigearthnet.spark.import_v1 import run_import
from bigearthnet.spark.import_v2 import run_import_v2
from worlds import T29UPA, T29UPV, synth_world

pytestmark = pytest.mark.spark
PIXELS = ("bands_10m", "bands_20m", "bands_60m")
LABELS = ("labels_43", "labels_19", "multi_hot_43", "multi_hot_19")
SAME = ("split", "patch_id_v1", "product_id", "tile_id", "sensing_time", "epsg", "col", "row",
        "has_nodata", "contains_seasonal_snow", "contains_cloud_or_shadow")


def assert_same_patches(ours: dict, back: dict, columns: tuple[str, ...]) -> None:
    assert sorted(back) == sorted(ours)
    for pid, row in ours.items():
        for col in columns:
            a, b = row[col], back[pid][col]
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(b, a, err_msg=f"{pid} {col}")
            else:
                assert b == a, (pid, col)
        assert shapely.from_wkb(back[pid]["footprint"]).equals(shapely.from_wkb(row["footprint"]))


@pytest.fixture(scope="module")
def reimported_v2(reben_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("rt") / "v2"
    manifest = run_import_v2(ImportV2Config(archive=str(reben_export), out=str(out),
                                            patches_per_task=3, spark=SPARK))
    return out, manifest


def test_reben_round_trip_gives_the_dataset_back(built, reimported_v2):
    out, manifest = reimported_v2
    ours, back = patch_rows(built), patch_rows(out)
    assert_same_patches(ours, back, PIXELS + LABELS + SAME + ("reference_map", "clc_codes"))
    assert manifest["counts"]["patches_listed"] == manifest["counts"]["patches_kept"] == 8
    assert manifest["failures"] == [] and set(manifest["archive"]["problem_counts"].values()) == {0}
    # metadata.parquet: every column comes back (reBEN's and ours)
    a = pq.read_table(built / "metadata.parquet").sort_by("patch_id")
    b = pq.read_table(out / "metadata.parquet").sort_by("patch_id")
    assert b.equals(a)
    # exact train statistics from the same pixels
    stats = [json.loads((d / "stats.json").read_text())["bands"] for d in (built, out)]
    assert stats[0] == stats[1]
    # our loader serves the imported patches, reference maps included
    loader = make_loader(out, "train", batch_size=64, columns=("patch_id", "bands_20m", "reference_map"))
    batch = next(iter(loader))
    for i, pid in enumerate(batch["patch_id"]):
        np.testing.assert_array_equal(batch["reference_map"][i].numpy(), ours[pid]["reference_map"])
        np.testing.assert_array_equal(batch["bands_20m"][i].numpy(), ours[pid]["bands_20m"])
    assert len(batch["patch_id"]) == sum(r["split"] == "train" for r in ours.values())


def test_v1_round_trip_gives_the_dataset_back(built, v1_export, tmp_path):
    out = tmp_path / "v1"
    manifest = run_import(ImportConfig(archive=str(v1_export), out=str(out),
                                       splits_dir=str(v1_export), spark=SPARK))
    assert manifest["counts"]["dropped_not_in_split"] == 0
    assert_same_patches(patch_rows(built), patch_rows(out), PIXELS + LABELS + SAME[:-2])


def test_reben_needs_reference_maps(v1_export, tmp_path):
    no_maps = tmp_path / "no_maps"  # import-v1 has no reference maps
    run_import(ImportConfig(archive=str(v1_export), out=str(no_maps), spark=SPARK))
    with pytest.raises(ExportError, match="no reference maps.*--format v1"):
        export(no_maps, "reben", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_v1_names_shared_by_two_tiles_cannot_be_exported_as_v1(tmp_path):
    """One datatake over two tiles: patches of both are ``S2A_MSIL2A_20170717T113321_<c>_<r>``."""
    from bigearthnet.config import BuildConfig
    from bigearthnet.spark.build import run_build

    world = synth_world(tmp_path / "world", [T29UPV, T29UPA], 240)
    ds = tmp_path / "ds"
    run_build(BuildConfig(products=str(world / "products"), clc=str(world / "clc" / "clc2018.gpkg"),
                          out=str(ds), spark=SPARK))
    with pytest.raises(ExportError, match=r"S2A_MSIL2A_20170717T113321_\d_\d.*--format reben"):
        export(ds, "v1", tmp_path / "v1")
    assert not (tmp_path / "v1").exists()
    export(ds, "reben", tmp_path / "reben")  # reBEN ids are unique
    kept = pq.read_table(ds / "metadata.parquet")
    assert kept.num_rows > len(set(kept["s2v1_name"].to_pylist()))  # names collide
    assert pq.read_table(tmp_path / "reben" / "metadata.parquet").num_rows == kept.num_rows
