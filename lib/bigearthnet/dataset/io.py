"""Atomic output directories and deterministic Parquet writing."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bigearthnet.dataset.layout import SUCCESS
from bigearthnet.errors import OutputExistsError

SUCCESS_MARKER = SUCCESS


def staging_dir(out: Path) -> Path:
    """A hidden temporary sibling of ``out`` on the same filesystem (for an atomic rename)."""
    return out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing output unless asked to."""
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"output {out} exists already; choose another --out or pass --overwrite"
        )


def commit_dir(staging: Path, out: Path, overwrite: bool, marker: bool = True) -> None:
    """Write the success marker, then move ``staging`` to ``out`` atomically.

    An existing ``out`` is replaced only when ``overwrite`` is set; it is moved aside first and
    deleted after the rename, so ``out`` is always either the old or the new complete folder.

    Args:
        staging: the complete folder, a sibling of ``out``.
        out: the final name.
        overwrite: replace an existing ``out``.
        marker: write ``_SUCCESS`` into ``staging`` first (datasets).
    """
    if marker:
        (staging / SUCCESS).write_text("")
    old = None
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"output {out} appeared during the build; not replacing it")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_output(out: Path, overwrite: bool, marker: bool = True) -> Iterator[Path]:
    """Build a folder under a hidden sibling name; commit it as ``out`` when the block ends.

    The one atomic folder swap of the package (datasets, evaluations, reports): if the block
    raises, the staging folder is deleted and ``out`` is untouched.

    Yields:
        The staging folder (created, empty).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out)
    staging.mkdir()
    try:
        yield staging
        commit_dir(staging, out, overwrite, marker)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_json(path: Path, doc: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def _codec(name: str) -> str:
    return "NONE" if name == "none" else name


def parquet_writer(path: Path, schema: pa.Schema, compression: str,
                   tensor_compression: str = "none") -> pq.ParquetWriter:
    """A Parquet writer with deterministic, loader-friendly settings.

    Tensor (binary) columns get ``tensor_compression`` (default none: reflectances compress
    only ~1.2x with zstd while decompression would dominate loading), other columns
    ``compression``. Dictionary encoding only for low-cardinality strings; statistics only for
    scalar columns (min/max of megabyte-sized binary tensors are useless and bloat the footer).
    """
    scalar = [f.name for f in schema if not pa.types.is_binary(f.type)]
    codecs = {f.name: _codec(tensor_compression if pa.types.is_binary(f.type) and f.name != "footprint"
                             else compression) for f in schema}
    return pq.ParquetWriter(
        str(path), schema,
        compression=codecs,
        use_dictionary=[n for n in ("product_id", "tile_id", "split") if n in schema.names],
        write_statistics=scalar,
        data_page_size=1 << 20,
    )
