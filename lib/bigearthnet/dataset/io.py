"""Atomic output directories and deterministic Parquet writing."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import io
import json
import logging
import mmap
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bigearthnet.dataset.layout import SUCCESS
from bigearthnet.errors import DiskFullError, OutputExistsError, OutputLockedError

STAGING_INFIX = ".tmp-"
OLD_INFIX = ".old-"
log = logging.getLogger(__name__)


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """An OSError (pyarrow's included, which may carry no errno) for a full filesystem or quota."""
    if not isinstance(exc, OSError) or isinstance(exc, DiskFullError):
        return False
    text = str(exc)
    return exc.errno in _FULL_ERRNOS or "No space left on device" in text or "quota exceeded" in text


def disk_full(out: Path | str, exc: BaseException) -> DiskFullError:
    """The named error for a job that filled the filesystem of its output ``out``."""
    where = getattr(exc, "filename", None)
    return DiskFullError(
        f"the filesystem of {out} is full: writing {where or 'the output'} failed ({exc}). "
        "Nothing was committed and the partial output was removed; free space there or choose "
        "another --out"
    )


def staging_dir(out: Path) -> Path:
    """A hidden temporary sibling of ``out`` on the same filesystem (for an atomic rename)."""
    return out.parent / f".{out.name}{STAGING_INFIX}{uuid.uuid4().hex[:12]}"


def output_of(staging: Path) -> Path:
    """The output a staging folder (from :func:`staging_dir`) is for."""
    name = staging.name
    if name.startswith(".") and STAGING_INFIX in name:
        return staging.parent / name[1:name.rindex(STAGING_INFIX)]
    return staging


def lock_path(out: Path) -> Path:
    """The lock file of an output folder: a hidden sibling, ``.NAME.lock``."""
    return out.parent / f".{out.name}.lock"


def debris(out: Path) -> list[Path]:
    """Staging and replaced folders of ``out`` left behind by jobs that died."""
    return sorted(p for infix in (STAGING_INFIX, OLD_INFIX)
                  for p in out.parent.glob(f".{out.name}{infix}*"))


@contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``out`` while a job writes it; clean the debris of dead jobs.

    The lock is an ``flock`` on ``.NAME.lock``: the kernel releases it when its process ends,
    however it ends (SIGKILL included). So whoever holds it is the only live writer, and every
    staging folder of ``out`` that exists when the lock is taken belongs to a dead job and is
    removed. ``flock`` is reliable on local filesystems; on network filesystems it depends on
    the mount (NFSv4 and Lustre support it, some FUSE mounts do not).

    Raises:
        OutputLockedError: another live job holds the lock.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(out)
    fd = _acquire(path, out)
    try:
        os.ftruncate(fd, 0)
        try:
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # the holder's name is a courtesy to whoever is refused; the lock is the flock
        for leftover in debris(out):
            log.warning("removing %s, left by a job that died", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a waiter re-checks the inode
        os.close(fd)  # releases the lock


def _acquire(path: Path, out: Path) -> int:
    """Open and lock ``path``; retry when the file was unlinked by the previous holder."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLockedError(
                f"another job is writing {out} right now ({holder}; lock {path}); wait for it "
                "to finish or choose another output"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # we locked a file its holder had just removed: take the new one


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to clobber an existing output unless asked to."""
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"output {out} exists already; choose another --out or pass --overwrite"
        )


_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange_dirs(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        False where the platform or filesystem cannot (the caller falls back to two renames).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")


def commit_dir(staging: Path, out: Path, overwrite: bool, marker: bool = True) -> None:
    """Write the success marker, then move ``staging`` to ``out`` atomically.

    An existing ``out`` is replaced only when ``overwrite`` is set: the two folders are
    exchanged in one atomic step where the kernel can (Linux), so readers always see either the
    old or the new complete folder; elsewhere the old one is renamed aside first, which leaves a
    moment without ``out``. The old folder is deleted afterwards.

    Args:
        staging: the complete folder, a sibling of ``out``.
        out: the final name.
        overwrite: replace an existing ``out``.
        marker: write ``_SUCCESS`` into ``staging`` first (datasets).
    """
    if marker:
        (staging / SUCCESS).write_text("")
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"output {out} appeared during the build; not replacing it")
        if exchange_dirs(staging, out):
            shutil.rmtree(staging, ignore_errors=True)  # now holds the old folder
            return
        old = out.parent / f".{out.name}{OLD_INFIX}{uuid.uuid4().hex[:12]}"
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(staging, out)


@contextmanager
def staged_output(out: Path, overwrite: bool, marker: bool = True) -> Iterator[Path]:
    """Build a folder under a hidden sibling name; commit it as ``out`` when the block ends.

    The one atomic folder swap of the package (datasets, evaluations, reports). The block runs
    under :func:`output_lock`, so a second job on the same output fails at once and the
    leftovers of dead jobs are removed. If the block raises, the staging folder is deleted and
    ``out`` is untouched.

    Raises:
        OutputLockedError: another live job is writing ``out``.
        DiskFullError: the block or the commit filled the output's filesystem (the staging
            folder is removed, so the space is freed).

    Yields:
        The staging folder (created, empty).
    """
    with output_lock(out):
        staging = staging_dir(out)
        staging.mkdir()
        try:
            yield staging
            commit_dir(staging, out, overwrite, marker)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(out, exc) from exc
            raise
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


DIRECT_ALIGN = 4096
"""Offset, length and address alignment ``O_DIRECT`` writes get here (a page; the logical block
size of common disks is 512 or 4096 bytes)."""


class DirectFile(io.RawIOBase):
    """A write-only file that bypasses the page cache (``O_DIRECT``), for write-once outputs.

    A build writes ~1.3 GB of Parquet per full-size product. Written through the page cache,
    every byte lands in a freshly allocated page-cache page: on this project's VMs (free page
    reporting on) the kernel's first touch of such pages costs a host fault, so buffered writing
    cost seconds of system CPU and wall time per product where ``O_DIRECT`` costs a tenth of a
    second (measured: ``write_path`` in ``bench/results/scaling.json``), and the task's CPU
    depended on the host rather than on the build. It also keeps a build from evicting the page cache of
    everything else on the node.

    The bytes go through one page-aligned buffer of ``buffer_bytes`` that is reused (hot memory)
    and reach the file in aligned blocks; the last block is zero-padded and the file truncated to
    its true length on close, so the bytes are the same as a buffered write's. Where the
    filesystem refuses ``O_DIRECT`` (tmpfs before Linux 6.6, some FUSE and network mounts) or the
    platform has none (macOS), the file is written through the page cache instead
    (:attr:`direct` tells which).

    Args:
        path: the file to create (truncated if it exists).
        buffer_bytes: the staging buffer, a multiple of :data:`DIRECT_ALIGN`.
    """

    def __init__(self, path: Path | str, buffer_bytes: int = 8 << 20):
        super().__init__()
        if buffer_bytes <= 0 or buffer_bytes % DIRECT_ALIGN:
            raise ValueError(f"buffer_bytes must be a positive multiple of {DIRECT_ALIGN}")
        self.path = Path(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        direct = getattr(os, "O_DIRECT", 0)
        self.direct = bool(direct)
        try:
            self._fd = os.open(self.path, flags | direct, 0o644)
        except OSError as exc:
            if not direct or exc.errno != errno.EINVAL:
                raise
            self._fd, self.direct = os.open(self.path, flags, 0o644), False
        self._buf = mmap.mmap(-1, buffer_bytes)  # page-aligned
        self._view = memoryview(self._buf)
        self._fill = 0
        self._pos = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def write(self, data) -> int:
        """Append ``data`` (any bytes-like object); whole aligned blocks go to the file."""
        src = memoryview(data).cast("B")
        n, done, size = len(src), 0, len(self._view)
        while done < n:
            k = min(n - done, size - self._fill)
            self._view[self._fill:self._fill + k] = src[done:done + k]
            self._fill += k
            done += k
            if self._fill == size:
                self._drain(size)
                self._fill = 0
        self._pos += n
        return n

    def _drain(self, length: int) -> None:
        """Write the buffer's first ``length`` bytes (a multiple of the alignment)."""
        sent = 0
        while sent < length:
            try:
                sent += os.write(self._fd, self._view[sent:length])
            except OSError as exc:
                if not self.direct or exc.errno != errno.EINVAL:
                    raise
                # opened, but the filesystem refuses direct writes: go through the page cache
                fcntl.fcntl(self._fd, fcntl.F_SETFL,
                            fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                self.direct = False

    def close(self) -> None:
        """Write the last partial block (padded), cut the file to its length, and close it."""
        if self.closed:
            return
        try:
            if self._fill:
                padded = -(-self._fill // DIRECT_ALIGN) * DIRECT_ALIGN
                self._view[self._fill:padded] = bytes(padded - self._fill)
                self._drain(padded)
                self._fill = 0
            os.ftruncate(self._fd, self._pos)
        finally:
            os.close(self._fd)
            self._view.release()
            self._buf.close()
            super().close()


PAGE_CHECK_ROWS = 8
"""Rows the Parquet writer encodes between two checks of a page's size (Arrow's default: 1024).

A strip's row group has ~730 rows, so with the default every tensor column chunk became one
page of up to 84 MB, which Arrow holds in memory and hands to the file in one piece: ~250 MB
more memory for each task to fault in. Checking every 8 rows (8 patches of 10 m bands are 0.9
MB) cuts pages of 1-2 MB; a full-size product's task then peaks at ~560 MB instead of ~750 MB and
uses less CPU. The pages are PLAIN either way, and the loader reads any number of them."""


def parquet_writer(where: Path | io.RawIOBase, schema: pa.Schema, compression: str,
                   tensor_compression: str = "none") -> pq.ParquetWriter:
    """A Parquet writer with deterministic, loader-friendly settings.

    Tensor (binary) columns get ``tensor_compression`` (default none: reflectances compress
    only ~1.2x with zstd while decompression would dominate loading), other columns
    ``compression``. Dictionary encoding only for low-cardinality strings; statistics only for
    scalar columns (min/max of megabyte-sized binary tensors are useless and bloat the footer).
    Data pages of ~1 MB (:data:`PAGE_CHECK_ROWS`). ``where``: a path, or an open file (a
    :class:`DirectFile`) that the caller closes after the writer.
    """
    scalar = [f.name for f in schema if not pa.types.is_binary(f.type)]
    codecs = {f.name: _codec(tensor_compression if pa.types.is_binary(f.type) and f.name != "footprint"
                             else compression) for f in schema}
    return pq.ParquetWriter(
        where if isinstance(where, io.RawIOBase) else str(where), schema,
        compression=codecs,
        use_dictionary=[n for n in ("product_id", "tile_id", "split") if n in schema.names],
        write_statistics=scalar,
        data_page_size=1 << 20,
        write_batch_size=PAGE_CHECK_ROWS,
    )
