"""import-v2 of a reBEN folder with deliberately broken patches: under ``--on-error skip`` it
finishes, imports the sound patches unchanged and names and counts every broken, extra and
excluded one; under ``fail`` it stops with the named error and commits nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import rasterio
from interop_helpers import SPARK, patch_rows
from rasterio.transform import Affine

from bigearthnet.cli import main
from bigearthnet.config import ImportV2Config
from bigearthnet.dataset.archives import RebenLayout
from bigearthnet.errors import PatchMissingError
from bigearthnet.spark.import_v2 import run_import_v2

pytestmark = pytest.mark.spark


def _rewrite_band_at(path: Path, size: int) -> None:
    """Replace a band file by one of ``size`` px over the same bounds (a wrong-size band)."""
    with rasterio.open(path) as src:
        crs, bounds = src.crs, src.bounds
    res = (bounds.right - bounds.left) / size
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint16",
                       crs=crs, transform=Affine(res, 0.0, bounds.left, 0.0, -res, bounds.top)) as dst:
        dst.write(np.full((size, size), 7, np.uint16), 1)


@pytest.fixture(scope="module")
def broken(reben_export, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the reBEN export with one patch broken in each way a real archive can be."""
    root = tmp_path_factory.mktemp("broken") / "reben"
    shutil.copytree(reben_export, root)
    layout = RebenLayout(root)
    meta = pq.read_table(layout.metadata)
    ids = sorted(meta["patch_id"].to_pylist())
    role = {"missing_folder": ids[0], "missing_map": ids[1], "wrong_size": ids[2],
            "excluded": ids[3], "bad_label": ids[4], "with_extra_file": ids[5]}
    shutil.rmtree(layout.patch_dir(role["missing_folder"]))
    layout.reference_map(role["missing_map"]).unlink()
    _rewrite_band_at(layout.band_file(role["wrong_size"], "B05"), 120)  # a 20 m band at 10 m size
    (layout.patch_dir(role["with_extra_file"]) / "notes.txt").write_text("not a band\n")
    extra = ids[6].rsplit("_", 2)[0] + "_9_9"  # a patch folder the metadata does not know
    shutil.copytree(layout.patch_dir(ids[6]), layout.patch_dir(extra))
    role["extra_on_disk"] = extra
    excluded = pc.equal(meta["patch_id"], role["excluded"])
    pq.write_table(meta.filter(excluded), layout.excluded)
    meta = meta.filter(pc.invert(excluded))
    labels = [["Lunar regolith"] if p == role["bad_label"] else lab
              for p, lab in zip(meta["patch_id"].to_pylist(), meta["labels"].to_pylist())]
    meta = meta.set_column(meta.schema.get_field_index("labels"), "labels",
                           pa.array(labels, pa.list_(pa.string())))
    pq.write_table(meta, layout.metadata)
    return root, role


def test_skip_imports_the_rest_and_names_every_broken_patch(broken, built, tmp_path, capsys):
    root, role = broken
    out = tmp_path / "ds"
    assert main(["import-v2", str(root), "--out", str(out), "--on-error", "skip",
                 "--master", "local[2]"]) == 0
    assert "4 broken patch(es) skipped" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert {k: counts[k] for k in (
        "patches_listed", "patches_failed", "patches_missing", "patches_wrong_size",
        "patches_bad_metadata", "patches_excluded_snow_cloud", "patches_extra_on_disk",
        "files_extra", "patches_kept")} == {
        "patches_listed": 7, "patches_failed": 4, "patches_missing": 2, "patches_wrong_size": 1,
        "patches_bad_metadata": 1, "patches_excluded_snow_cloud": 1, "patches_extra_on_disk": 1,
        "files_extra": 1, "patches_kept": 3}
    failures = {f["patch_id"]: f for f in manifest["failures"]}
    assert set(failures) == {role["missing_folder"], role["missing_map"], role["wrong_size"],
                             role["bad_label"]}
    layout = RebenLayout(root)
    assert failures[role["missing_folder"]]["error_type"] == "PatchMissingError"
    assert str(layout.patch_dir(role["missing_folder"])) in failures[role["missing_folder"]]["message"]
    assert str(layout.reference_map(role["missing_map"])) in failures[role["missing_map"]]["message"]
    assert failures[role["wrong_size"]]["error_type"] == "RasterFormatError"
    assert str(layout.band_file(role["wrong_size"], "B05")) in failures[role["wrong_size"]]["message"]
    assert "Lunar regolith" in failures[role["bad_label"]]["message"]
    problems = manifest["archive"]["problems"]
    assert problems["excluded_snow_cloud"] == [role["excluded"]]
    assert problems["extra_on_disk"] == [role["extra_on_disk"]]
    assert problems["extra_file"] == [role["with_extra_file"]]
    # the sound patches come back unchanged
    ours, back = patch_rows(built), patch_rows(out)
    assert len(back) == 3 and role["with_extra_file"] in back
    for pid, row in back.items():
        for col in ("bands_10m", "bands_20m", "bands_60m", "reference_map", "multi_hot_19"):
            np.testing.assert_array_equal(row[col], ours[pid][col])
        assert row["split"] == ours[pid]["split"]


def test_fail_stops_at_the_first_broken_patch(broken, tmp_path):
    root, role = broken
    with pytest.raises(PatchMissingError, match=role["missing_folder"]) as info:
        run_import_v2(ImportV2Config(archive=str(root), out=str(tmp_path / "ds"), spark=SPARK))
    assert "--on-error skip" in str(info.value)
    assert not (tmp_path / "ds").exists()


def test_fail_names_a_wrong_size_band_found_by_a_task(reben_export, tmp_path, capsys):
    root = tmp_path / "reben"
    shutil.copytree(reben_export, root)
    layout = RebenLayout(root)
    victim = sorted(pq.read_table(layout.metadata)["patch_id"].to_pylist())[5]
    _rewrite_band_at(layout.band_file(victim, "B09"), 60)  # a 60 m band at 20 m size
    assert main(["import-v2", str(root), "--out", str(tmp_path / "ds"), "--master", "local[2]"]) == 2
    err = capsys.readouterr().err
    assert "RasterFormatError" in err and str(layout.band_file(victim, "B09")) in err
    assert "expected (20, 20)" in err
    assert not (tmp_path / "ds").exists()


def test_skip_with_every_patch_broken_in_the_tasks_is_an_error(reben_export, tmp_path):
    """Every patch passes the plan but fails when its task reads it: nothing is committed."""
    from bigearthnet.errors import EmptyInputError

    root = tmp_path / "reben"
    shutil.copytree(reben_export, root)
    layout = RebenLayout(root)
    ids = sorted(pq.read_table(layout.metadata)["patch_id"].to_pylist())
    for pid in ids:
        _rewrite_band_at(layout.band_file(pid, "B05"), 120)
    with pytest.raises(EmptyInputError, match=f"none of which could be imported \\({len(ids)} "
                       "broken\\).*B05"):
        run_import_v2(ImportV2Config(archive=str(root), out=str(tmp_path / "ds"),
                                     on_error="skip", spark=SPARK))
    assert not (tmp_path / "ds").exists()
