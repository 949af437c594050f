"""``bigearthnet build --append``: incremental builds give the rows of one full build."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bigearthnet.cli import main
from bigearthnet.config import BuildConfig, resolve
from bigearthnet.errors import ConfigError, IncompleteDatasetError, InputNotFoundError
from bigearthnet.spark.build import run_build
from worlds import T29UPU, T29UPV, T33UUP, synth_world

pytestmark = pytest.mark.spark
PRODUCTS = [T29UPU, T33UUP, T29UPV]


@pytest.fixture(scope="module")
def world3(tmp_path_factory) -> Path:
    return synth_world(tmp_path_factory.mktemp("world3"), PRODUCTS, 240, "jp2", seed=3)


def subset(world: Path, dest: Path, names: list[str]) -> Path:
    """A products folder holding only ``names`` (symlinks to the world's SAFE folders)."""
    dest.mkdir()
    for n in names:
        (dest / f"{n}.SAFE").symlink_to(world / "products" / f"{n}.SAFE")
    return dest


def build(world: Path, products: Path, out: Path, **kw) -> dict:
    return run_build(BuildConfig(products=str(products), clc=str(world / "clc" / "clc2018.gpkg"),
                                 out=str(out), **kw))


def file_digests(ds: Path) -> dict[str, str]:
    return {str(p.relative_to(ds)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(ds.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def full_and_appended(world3, tmp_path_factory):
    """One build of all three products, and the same products in three runs."""
    tmp = tmp_path_factory.mktemp("append")
    full = tmp / "full"
    build(world3, world3 / "products", full)
    inc = tmp / "inc"
    first = build(world3, subset(world3, tmp / "p1", PRODUCTS[:1]), inc)
    ino_before = {p.name: p.stat().st_ino for p in (inc / "patches").rglob("*.parquet")}
    second = build(world3, subset(world3, tmp / "p12", PRODUCTS[:2]), inc, append=True)
    third = build(world3, subset(world3, tmp / "p123", PRODUCTS), inc, append=True,
                  label_engine="sedona-spark")
    return full, inc, (first, second, third), ino_before


def test_appends_equal_one_full_build(full_and_appended):
    full, inc, _, _ = full_and_appended
    # Same patch files (rows, splits, labels, bytes), same metadata and histograms.
    assert file_digests(inc) == file_digests(full)
    assert len(file_digests(full)) >= 3 * 2  # products x splits, at least
    meta_full, meta_inc = pq.read_table(full / "metadata.parquet"), pq.read_table(inc / "metadata.parquet")
    assert meta_inc.equals(meta_full)
    assert set(meta_inc["product_id"].to_pylist()) == set(PRODUCTS)
    # stats.json recomputed exactly from the stored per-product histograms.
    assert json.loads((inc / "stats.json").read_text()) == json.loads((full / "stats.json").read_text())
    m_full = json.loads((full / "manifest.json").read_text())
    m_inc = json.loads((inc / "manifest.json").read_text())
    per_run = {"products_added", "products_skipped_existing", "task_attempts_retried"}
    assert {k: v for k, v in m_inc["counts"].items() if k not in per_run} == \
        {k: v for k, v in m_full["counts"].items() if k not in per_run}
    assert m_inc["class_frequencies"] == m_full["class_frequencies"]
    assert m_inc["clc"] == m_full["clc"]
    assert [p["product_id"] for p in m_inc["products"]] == sorted(PRODUCTS)


def test_version_history_and_skips(full_and_appended):
    _, inc, (_, second, third), _ = full_and_appended
    versions = json.loads((inc / "manifest.json").read_text())["history"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert [v["mode"] for v in versions] == ["build", "append", "append"]
    assert [v["products_added"] for v in versions] == [[T29UPU], [T33UUP], [T29UPV]]
    assert versions[1]["products_skipped_existing"] == [T29UPU]
    assert versions[2]["products_skipped_existing"] == sorted([T29UPU, T33UUP])
    assert second["counts"]["products_added"] == 1 and second["counts"]["products_skipped_existing"] == 1
    assert third["counts"]["products_skipped_existing"] == 2
    assert third["counts"]["products"] == 3
    assert sum(v["patches_added"] for v in versions) == third["counts"]["patches_cut"]
    assert (inc / "_SUCCESS").exists()
    assert not list(inc.parent.glob(".inc.tmp-*")) and not (inc / "_parts").exists()


def test_existing_files_are_not_rewritten(full_and_appended):
    """The first product's files are the same inodes after two appends (hard links)."""
    _, inc, _, ino_before = full_and_appended
    after = {p.name: p.stat().st_ino for p in (inc / "patches").rglob("*.parquet")}
    for name, ino in ino_before.items():
        assert after[name] == ino, name


def test_append_without_a_dataset_is_a_first_build(world3, tmp_path):
    """A scheduled job can always pass --append: the first run creates the dataset."""
    out = tmp_path / "new"
    manifest = build(world3, subset(world3, tmp_path / "p", PRODUCTS[:1]), out, append=True)
    assert (out / "_SUCCESS").exists()
    assert manifest["history"][0]["mode"] == "build"
    assert manifest["history"][0]["products_added"] == [T29UPU]


def test_nothing_new_leaves_the_dataset_untouched(world3, full_and_appended, tmp_path, capsys):
    _, inc, _, _ = full_and_appended
    before = {p: p.stat().st_mtime_ns for p in inc.rglob("*")}
    rc = main(["build", "--products", str(subset(world3, tmp_path / "again", PRODUCTS[1:])),
               "--clc", str(world3 / "clc" / "clc2018.gpkg"), "--out", str(inc), "--append",
               "--master", "local[2]"])
    assert rc == 0
    assert "nothing to append" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in inc.rglob("*")} == before


def test_append_refuses_other_configs_and_missing_datasets(world3, full_and_appended, tmp_path):
    _, inc, _, _ = full_and_appended
    products = subset(world3, tmp_path / "p", PRODUCTS)
    with pytest.raises(ConfigError, match=r"split_seed: dataset 0, now 7.*build_config.json"):
        build(world3, products, inc, append=True, split_seed=7)
    file_out = tmp_path / "a_file"
    file_out.write_text("")
    with pytest.raises(InputNotFoundError, match="not a dataset folder"):
        build(world3, products, file_out, append=True)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{}")
    with pytest.raises(IncompleteDatasetError, match="_SUCCESS"):
        build(world3, products, broken, append=True)
    with pytest.raises(ConfigError, match="exclude each other"):
        resolve(BuildConfig, None, {"products": "p", "out": "o", "append": True, "overwrite": True})
