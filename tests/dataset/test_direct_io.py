"""The write path's memory and page-cache behaviour: DirectFile, Parquet pages, the task heap.

Oracles: a plain buffered write of the same bytes; the kernel's own view of the page cache
(``mincore``) and of a process's page faults (``getrusage``).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bigearthnet.dataset.io import DIRECT_ALIGN, PAGE_CHECK_ROWS, DirectFile, parquet_writer
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.sentinel2.products import discover_products
from worlds import T29UPU, synth_world

PAGE = mmap.PAGESIZE


def cached_pages(path: Path) -> int:
    """How many of the file's pages are in the page cache (mincore over a shared mapping)."""
    size = path.stat().st_size
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype, libc.mmap.argtypes = ctypes.c_void_p, (
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
        n = -(-size // PAGE)
        vec = ctypes.create_string_buffer(n)
        assert libc.mincore(addr, size, vec) == 0, ctypes.get_errno()
        libc.munmap(addr, size)
    finally:
        os.close(fd)
    return sum(b & 1 for b in vec.raw)


def chunks(seed: int, sizes: list[int]) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in sizes]


@pytest.mark.parametrize("sizes", [
    [], [1], [DIRECT_ALIGN - 1], [DIRECT_ALIGN], [DIRECT_ALIGN + 1],
    [3, 70_000, 1, 65_536, 200_000], [1 << 16] * 5 + [17],
])
def test_direct_file_writes_exactly_the_bytes_given(tmp_path, sizes):
    """Whatever the sizes and alignment of the writes (the buffer is 64 KiB here, so writes cross
    it), the file holds exactly the concatenation: the padding of the last block is cut off."""
    data = chunks(len(sizes), sizes)
    path = tmp_path / "f.bin"
    with DirectFile(path, buffer_bytes=1 << 16) as f:
        for d in data:
            assert f.write(d) == len(d)
        assert f.tell() == sum(sizes)
    assert path.read_bytes() == b"".join(data)
    with pytest.raises(ValueError):
        DirectFile(tmp_path / "g.bin", buffer_bytes=DIRECT_ALIGN + 1)


def test_direct_file_bypasses_the_page_cache(tmp_path):
    """8 MiB written through DirectFile leave (almost) nothing in the page cache; the same bytes
    written through the page cache leave them all there. This is what makes the tasks' system
    CPU independent of how recently the kernel freed its pages."""
    data = b"".join(chunks(1, [1 << 20] * 8)) + b"tail"
    direct, buffered = tmp_path / "direct.bin", tmp_path / "buffered.bin"
    try:  # does this filesystem take O_DIRECT at all? (the oracle for f.direct below)
        os.close(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
    except (AttributeError, OSError) as exc:
        pytest.skip(f"the filesystem of {tmp_path} refuses O_DIRECT: {exc}")
    with DirectFile(direct) as f:
        f.write(data)
    assert f.direct
    buffered.write_bytes(data)
    n_pages = -(-len(data) // PAGE)
    assert cached_pages(buffered) == n_pages
    assert cached_pages(direct) <= 1  # at most the padded last block
    assert direct.read_bytes() == data


def test_direct_file_writes_buffered_where_there_is_no_o_direct(tmp_path, monkeypatch):
    """Where the platform has no O_DIRECT (macOS) the file goes through the page cache: same
    bytes, and all of them cached. (Filesystems that refuse O_DIRECT at open or at the first
    write, e.g. tmpfs before Linux 6.6, take the same buffered path.)"""
    monkeypatch.delattr(os, "O_DIRECT", raising=False)
    path = tmp_path / "f.bin"
    data = b"".join(chunks(2, [5000, 90_000]))
    with DirectFile(path, buffer_bytes=1 << 16) as f:
        f.write(data)
    assert f.direct is False
    assert path.read_bytes() == data
    assert cached_pages(path) == -(-len(data) // PAGE)


def _tensor_batch(n: int) -> pa.RecordBatch:
    nbytes = 4 * 120 * 120 * 2
    values = np.random.default_rng(3).integers(0, 10_000, (n, nbytes // 2), dtype=np.uint16)
    offsets = np.arange(n + 1, dtype=np.int32) * nbytes
    tensors = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                     pa.py_buffer(values)])
    return pa.RecordBatch.from_arrays(
        [pa.array([f"p{i}" for i in range(n)]), pa.array(["train"] * n), tensors],
        names=["patch_id", "split", "bands_10m"])


def test_parquet_through_direct_file_is_the_same_file_with_megabyte_pages(tmp_path):
    """The Parquet writer gives the same bytes through a path and through a DirectFile, and a
    tensor column chunk is cut into pages of at most ~2 MB (not one page per chunk)."""
    batch = _tensor_batch(200)
    plain, direct = tmp_path / "plain.parquet", tmp_path / "direct.parquet"
    with parquet_writer(plain, batch.schema, "zstd") as w:
        w.write_batch(batch, row_group_size=batch.num_rows)
    with DirectFile(direct) as f, parquet_writer(f, batch.schema, "zstd") as w:
        w.write_batch(batch, row_group_size=batch.num_rows)
    assert direct.read_bytes() == plain.read_bytes()
    assert pq.read_table(direct).to_batches()[0].equals(batch)
    chunk = pq.ParquetFile(plain).metadata.row_group(0).column(2)
    size = chunk.total_compressed_size
    tensor = 4 * 120 * 120 * 2
    assert size > 200 * tensor
    # pages are cut every PAGE_CHECK_ROWS rows once past 1 MiB: at most 2 checks' worth each
    max_page = 2 * PAGE_CHECK_ROWS * tensor
    pages = _data_pages(plain, chunk)
    assert len(pages) >= size // max_page
    assert max(pages) <= max_page + 1024


def _data_pages(path: Path, chunk) -> list[int]:
    """Sizes of the data pages of a column chunk (from the loader's page-header reader)."""
    from bigearthnet.dataset.loader import _page_header

    fd = os.open(path, os.O_RDONLY)
    sizes = []
    try:
        pos, end = chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size
        while pos < end:
            header, length = _page_header(fd, pos, end)
            sizes.append(header[3])  # compressed_page_size
            pos += length + header[3]
    finally:
        os.close(fd)
    return sizes


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.parquet"))}


def test_a_task_writes_the_same_files_with_and_without_direct_io(tmp_path):
    """build_product (the task of a build) with direct_io on and off: the same files, byte for
    byte, and the summary reports the task's CPU."""
    from bigearthnet.config import BuildConfig
    from bigearthnet.stages.product import build_product

    world = synth_world(tmp_path / "world", [T29UPU], 480, "cog", seed=4)
    (source,), failed = discover_products(world / "products")
    assert not failed
    digests = {}
    for direct in (True, False):
        staging = tmp_path / f"staging_{direct}"
        DatasetLayout(staging).create_task_folders()
        cfg = BuildConfig(products=str(world / "products"), out=str(tmp_path / "o"),
                          direct_io=direct, strip_rows=2)
        summary = build_product(0, source, staging, cfg)
        assert summary["status"] == "ok", summary
        assert summary["cpu_s"] >= summary["cpu_sys_s"] >= 0
        digests[direct] = _digests(staging)
    assert digests[True] and digests[True] == digests[False]


HEAP_PROBE = """
import json, resource, sys
import numpy as np
from bigearthnet.stages.write import keep_freed_heap
kept = keep_freed_heap() if sys.argv[1] == "keep" else False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = np.empty(48 << 20, np.uint8)  # 48 MiB, over glibc's largest dynamic mmap threshold
    a.fill(1)
    del a
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def test_keep_freed_heap_reuses_freed_memory_instead_of_faulting_it_in_again():
    """20 rounds of allocating, filling and freeing 48 MiB: glibc's default maps and unmaps the
    block every round (~12,000 faults each); with keep_freed_heap the freed block stays in the
    heap and the next round reuses it."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}  # count 4 KiB faults, not huge pages

    def probe(mode: str) -> dict:
        out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], env=env, check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out)

    default, kept = probe("default"), probe("keep")
    assert kept["kept"] is True
    rounds_of_faults = default["faults"] / ((48 << 20) // PAGE)
    assert rounds_of_faults > 10, default
    assert kept["faults"] < 2 * (48 << 20) // PAGE, kept
