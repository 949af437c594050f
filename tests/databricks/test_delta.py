"""``bigearthnet build --delta``: the dataset's own Parquet files as Delta tables, read back with
Spark and the Delta jars; ``--append`` is a Delta append."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bigearthnet.cli import main
from bigearthnet.dataset.delta import delta_tables
from bigearthnet.spark.delta import read_delta
from worlds import T29UPU, T33UUP

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def _products(world: Path, dest: Path, names: list[str]) -> Path:
    """A products folder holding only ``names`` (symlinks to the world's SAFE folders)."""
    dest.mkdir()
    for n in names:
        (dest / f"{n}.SAFE").symlink_to(world / "products" / f"{n}.SAFE")
    return dest


def _build(world: Path, products: Path, out: Path, *flags: str) -> None:
    assert main(["build", "--products", str(products), "--clc",
                 str(world / "clc" / "clc2018.gpkg"), "--out", str(out), "--master", "local[2]",
                 *flags]) == 0


def _patch_ids(files: list[Path]) -> list[str]:
    return sorted(i for f in files for i in pq.read_table(f, columns=["patch_id"])["patch_id"]
                  .to_pylist())


@pytest.fixture(scope="module")
def versions(world_jp2, tmp_path_factory):
    """A --delta build of one product, then a plain --append of the second one; the patch and
    metadata state after each step."""
    tmp = tmp_path_factory.mktemp("delta")
    ds = tmp / "ds"
    _build(world_jp2, _products(world_jp2, tmp / "p1", [T29UPU]), ds, "--delta")
    first = {"patch_ids": _patch_ids(sorted((ds / "patches").rglob("*.parquet"))),
             "metadata": pq.read_table(ds / "metadata.parquet").sort_by("patch_id"),
             "manifest": json.loads((ds / "manifest.json").read_text())}
    # No --delta: an append to a dataset with Delta tables extends them all the same.
    _build(world_jp2, _products(world_jp2, tmp / "p12", [T29UPU, T33UUP]), ds, "--append")
    return ds, first


def test_tables_are_the_dataset_files(versions, spark):
    ds, _ = versions
    tables = delta_tables(ds)
    assert set(tables) == {"patches", "metadata"}
    files = sorted(p for p in (ds / "patches").glob("split=*/*.parquet"))
    assert {f.stem for f in files} == {T29UPU, T33UUP}
    patches = read_delta(spark, tables["patches"])
    # Same rows and patch ids as the Parquet files, with the split from the partition folders.
    assert patches.count() == sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    assert sorted(r.patch_id for r in patches.select("patch_id").collect()) == _patch_ids(files)
    by_split = {r.split: r["count"] for r in patches.groupBy("split").count().collect()}
    assert by_split == {f.parent.name.removeprefix("split="): sum(
        pq.ParquetFile(g).metadata.num_rows for g in files if g.parent == f.parent)
        for f in files}
    # The log names the files in place: nothing was copied.
    added = [json.loads(line)["add"]["path"]
             for log in sorted((ds / "patches" / "_delta_log").glob("*.json"))
             for line in log.read_text().splitlines() if '"add"' in line]
    assert sorted(added) == sorted(f.relative_to(ds / "patches").as_posix() for f in files)
    meta = read_delta(spark, tables["metadata"])
    expected = pq.read_table(ds / "metadata.parquet")
    assert meta.count() == expected.num_rows
    assert sorted(r.patch_id for r in meta.select("patch_id").collect()) == \
        sorted(expected["patch_id"].to_pylist())
    # The metadata table's file is metadata.parquet itself (a hard link), at version 2.
    manifest = json.loads((ds / "manifest.json").read_text())
    data = ds / "metadata_delta" / manifest["delta"]["metadata"]["file"]
    assert data.name == "metadata-v2.parquet"
    assert data.stat().st_ino == (ds / "metadata.parquet").stat().st_ino


def test_append_is_a_delta_append(versions, spark):
    ds, first = versions
    manifest = json.loads((ds / "manifest.json").read_text())
    assert first["manifest"]["delta"]["patches"]["version"] == 0
    assert manifest["delta"]["patches"]["version"] == 1
    history = spark.sql(f"DESCRIBE HISTORY delta.`{ds / 'patches'}`").orderBy("version").collect()
    assert [h.operation for h in history] == ["CREATE TABLE", "WRITE"]
    assert history[1].operationParameters["mode"] == "Append"
    # The append commit adds exactly the new product's files.
    log = (ds / "patches" / "_delta_log" / "00000000000000000001.json").read_text().splitlines()
    added = [json.loads(line)["add"]["path"] for line in log if '"add"' in line]
    assert added and all(T33UUP in p for p in added)
    assert manifest["delta"]["patches"]["files_added"] == len(added)
    # Time travel: version 0 is the first build, row for row.
    v0 = spark.read.format("delta").option("versionAsOf", 0).load(str(ds / "patches"))
    assert sorted(r.patch_id for r in v0.select("patch_id").collect()) == first["patch_ids"]
    m0 = spark.read.format("delta").option("versionAsOf", 0).load(str(ds / "metadata_delta"))
    assert sorted(r.patch_id for r in m0.select("patch_id").collect()) == \
        first["metadata"]["patch_id"].to_pylist()
    now = spark.read.format("delta").load(str(ds / "patches"))
    assert now.count() > v0.count() == len(first["patch_ids"])


def test_register_in_a_catalog(versions, spark):
    """What the README shows: CREATE TABLE … USING DELTA LOCATION, then SQL."""
    ds, _ = versions
    spark.sql("CREATE SCHEMA IF NOT EXISTS ben_test")
    try:
        spark.sql(f"CREATE TABLE ben_test.patches USING DELTA LOCATION '{ds / 'patches'}'")
        spark.sql(f"CREATE TABLE ben_test.metadata USING DELTA LOCATION '{ds / 'metadata_delta'}'")
        rows = spark.sql(
            "SELECT m.split, count(*) AS n FROM ben_test.patches p JOIN ben_test.metadata m "
            "ON p.patch_id = m.patch_id AND p.split = m.split GROUP BY m.split").collect()
        expected = pq.read_table(ds / "metadata.parquet")["split"].value_counts().to_pylist()
        assert {r.split: r.n for r in rows} == {e["values"]: e["counts"] for e in expected}
    finally:
        spark.sql("DROP SCHEMA IF EXISTS ben_test CASCADE")
