"""The dataset as Delta Lake tables over its own Parquet files (``bigearthnet build --delta``).

Two tables, committed with the ``deltalake`` package (delta-rs; no JVM) into the build's staging
folder, so they appear atomically with the dataset::

    DATASET/patches/                the patch table: its _delta_log/ lists every
                                    patches/split=<split>/<product>.parquet in place (partition
                                    column ``split``; a tiling-only build: patches/*.parquet,
                                    unpartitioned). No byte of a patch file is copied.
    DATASET/metadata_delta/         the metadata table: _delta_log/ and metadata-v<N>.parquet,
                                    a hard link of metadata.parquet as dataset version N wrote
                                    it (a copy only where the filesystem has no hard links)

``--append`` (:mod:`bigearthnet.stages.append`) becomes a Delta append: the staging folder gets
the previous tables' logs (immutable files, hard-linked like the patch files), then

* the patch table gets one ``WRITE`` (append) commit that adds exactly the new products' files;
* the metadata table gets one overwrite commit: ``metadata.parquet`` is re-sorted over old and
  new rows at every append, so its version N+1 replaces version N (whose file stays, for time
  travel, until a ``VACUUM`` of that table).

Either table can be registered in a catalog (``CREATE TABLE … USING DELTA LOCATION
'DATASET/patches'``) and read by any Delta reader; Spark needs the Delta jars
(:mod:`bigearthnet.spark.delta`). Do not ``VACUUM`` with a retention shorter than the dataset's
readers need: files of the patch table are never removed by a build, so a ``VACUUM`` of it
deletes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bigearthnet.dataset.layout import PARQUET, SPLIT_PREFIX, DatasetLayout
from bigearthnet.errors import BuildFailedError

__all__ = ["commit_delta_tables", "delta_tables", "has_delta_tables"]

PATCHES_TABLE_NAME = "bigearthnet_patches"
METADATA_TABLE_NAME = "bigearthnet_metadata"
LAST_CHECKPOINT = "_last_checkpoint"


def delta_tables(root: str | os.PathLike[str]) -> dict[str, Path]:
    """The Delta table folders of a dataset: ``{"patches": …, "metadata": …}`` (those that
    exist)."""
    layout = DatasetLayout(Path(root))
    tables = {"patches": layout.patches, "metadata": layout.metadata_table}
    return {k: v for k, v in tables.items() if DatasetLayout.delta_log(v).is_dir()}


def has_delta_tables(root: str | os.PathLike[str]) -> bool:
    """The dataset at ``root`` has its patch table as Delta (``build --delta`` made it)."""
    return "patches" in delta_tables(root)


def _link(src: Path, dst: Path) -> None:
    """Hard link ``src`` as ``dst`` (a copy where the filesystem has no hard links)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file under ``src`` into ``dst`` (files already there are kept), except
    ``_last_checkpoint``, the one log file a writer rewrites: that one is copied."""
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / f.relative_to(src)
        if target.exists():
            continue
        if f.name == LAST_CHECKPOINT:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        else:
            _link(f, target)


def _patch_files(layout: DatasetLayout) -> list[Path]:
    """The committed patch files (never the in-progress files of unfinished task attempts)."""
    files = sorted(layout.patches.glob(f"{SPLIT_PREFIX}*/*{PARQUET}"))
    return files or sorted(layout.patches.glob(f"*{PARQUET}"))


def _add_action(table: Path, f: Path, partitioned: bool):
    from deltalake.transaction import AddAction

    st = f.stat()
    rel = f.relative_to(table).as_posix()
    parts = {"split": f.parent.name.removeprefix(SPLIT_PREFIX)} if partitioned else {}
    stats = json.dumps({"numRecords": pq.ParquetFile(f).metadata.num_rows})
    return AddAction(rel, st.st_size, parts, int(st.st_mtime * 1000), True, stats)


def _table_schema(f: Path, partitioned: bool) -> pa.Schema:
    schema = pq.read_schema(f).remove_metadata()
    return schema.append(pa.field("split", pa.string())) if partitioned else schema


def _current_files(table: Path) -> set[str]:
    from deltalake import DeltaTable

    dt = DeltaTable(str(table))
    base = os.path.realpath(table)
    return {os.path.relpath(os.path.realpath(u.removeprefix("file://")), base)
            for u in dt.file_uris()}


def _commit_patches(layout: DatasetLayout, dataset_version: int) -> dict:
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.transaction import create_table_with_add_actions

    table = layout.patches
    files = _patch_files(layout)
    if not files:
        raise BuildFailedError(f"{table} holds no patch file to commit as a Delta table")
    partitioned = files[0].parent != table
    schema = Schema.from_arrow(_table_schema(files[0], partitioned))
    partition_by = ["split"] if partitioned else None
    props = CommitProperties(custom_metadata={"bigearthnet.dataset_version": str(dataset_version)})
    if not DatasetLayout.delta_log(table).is_dir():
        adds = [_add_action(table, f, partitioned) for f in files]
        create_table_with_add_actions(str(table), schema, adds, partition_by=partition_by,
                                      name=PATCHES_TABLE_NAME, commit_properties=props)
        added = len(adds)
    else:
        have = _current_files(table)
        present = {f.relative_to(table).as_posix() for f in files}
        lost = sorted(have - present)
        if lost:
            raise BuildFailedError(
                f"the Delta log of {table} lists files the dataset no longer has ({lost[:3]}); "
                "please report this"
            )
        adds = [_add_action(table, f, partitioned) for f in files
                if f.relative_to(table).as_posix() not in have]
        if adds:
            DeltaTable(str(table)).create_write_transaction(
                adds, mode="append", schema=schema, partition_by=partition_by,
                commit_properties=props)
        added = len(adds)
    return {"path": table.name, "version": DeltaTable(str(table)).version(),
            "files": len(files), "files_added": added, "partition_by": partition_by or []}


def _commit_metadata(layout: DatasetLayout, dataset_version: int) -> dict | None:
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.transaction import create_table_with_add_actions

    if not layout.metadata.exists():  # tiling-only builds have no metadata table
        return None
    table = layout.metadata_table
    data = table / f"metadata-v{dataset_version}{PARQUET}"
    if data.exists():
        raise BuildFailedError(f"{data} exists already; the dataset's version history and its "
                               "Delta table disagree; please report this")
    _link(layout.metadata, data)
    schema = Schema.from_arrow(pq.read_schema(data).remove_metadata())
    add = _add_action(table, data, partitioned=False)
    props = CommitProperties(custom_metadata={"bigearthnet.dataset_version": str(dataset_version)})
    if not DatasetLayout.delta_log(table).is_dir():
        create_table_with_add_actions(str(table), schema, [add], name=METADATA_TABLE_NAME,
                                      commit_properties=props)
    else:
        DeltaTable(str(table)).create_write_transaction([add], mode="overwrite", schema=schema,
                                                        commit_properties=props)
    return {"path": table.name, "version": DeltaTable(str(table)).version(),
            "file": data.name}


def commit_delta_tables(staging: str | os.PathLike[str], dataset_version: int,
                        previous: str | os.PathLike[str] | None = None) -> dict:
    """Commit the dataset in ``staging`` as Delta tables (its patch files and metadata must be
    final); return the manifest's ``delta`` entry.

    Args:
        staging: the dataset folder about to be committed (its files are final).
        dataset_version: the dataset's version (the manifest ``history`` length).
        previous: the dataset this one appends to; its Delta logs (and metadata table files)
            are hard-linked into ``staging`` first, so the new commits follow its versions.

    Returns:
        ``{"patches": {"path", "version", "files", "files_added", "partition_by"},
        "metadata": {"path", "version", "file"} | None}`` (Delta versions, from 0).

    Raises:
        BuildFailedError: no patch file, or the previous log lists files that are gone.
    """
    layout = DatasetLayout(Path(staging))
    if previous is not None:
        old = DatasetLayout(Path(previous))
        if DatasetLayout.delta_log(old.patches).is_dir():
            _link_tree(DatasetLayout.delta_log(old.patches),
                       DatasetLayout.delta_log(layout.patches))
        if DatasetLayout.delta_log(old.metadata_table).is_dir():
            _link_tree(old.metadata_table, layout.metadata_table)
    return {"patches": _commit_patches(layout, dataset_version),
            "metadata": _commit_metadata(layout, dataset_version)}
