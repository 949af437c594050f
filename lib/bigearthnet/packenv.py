"""Pack a virtual environment into an archive that Spark ships to its executors.

    bigearthnet pack-env env.tar.gz [--without torch] [--cpu-only]
    spark-submit --archives env.tar.gz#environment \\
        --conf spark.pyspark.python=./environment/bin/python jobs/build_dataset.py ...

The model is venv-pack's: the archive holds the venv's ``bin/``, ``lib/`` and ``pyvenv.cfg``
at its top level; ``bin/python`` stays a symlink to the base interpreter the venv was made
from (``/root/.pyenv/versions/3.11.7/bin/python3.11`` here), so every node needs the same base
Python at the same path, and nothing else. Unlike venv-pack it accepts our editable install
(``pip install -e .``): the package's source tree goes in as a normal installed package with a
fresh ``RECORD``, and the editable ``.pth`` is left out.

What goes in is the dependency closure of the ``bigearthnet`` distribution (its runtime
requirements, recursively, markers evaluated), not everything in the venv: test tools, linters
and their dependencies stay out. ``without`` leaves out distributions and every distribution
that needs them (``--without torch`` also drops torchvision, the NVIDIA libraries and triton:
a build-only environment). ``cpu_only`` keeps torch but leaves out triton (only
``torch.compile`` uses it) and every NVIDIA library that torch does not link at import (the
cuDNN engines, cuSOLVER-Mg, nvrtc-alt, profiling libraries...): such an archive imports torch
and trains on CPU executors but cannot use a GPU.

Console scripts get a relocatable shebang (``#!/bin/sh`` that execs ``bin/python`` next to the
script), as pip writes for long paths; ``spark.pyspark.python`` does not need them.

The archive must be ``.tar.gz`` or ``.tgz``: Spark unpacks those with the system ``tar``
(Hadoop ``FileUtil.unTar``), which keeps symlinks and permissions. A plain ``.tar`` is unpacked
by a Java implementation that drops permissions (SPARK-38632) and refuses symlinks that point
outside the archive, such as ``bin/python``; ``.zip`` keeps no symlinks. ``level=0`` writes a
``.tar.gz`` without compression (fast to write, as large as the files).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import struct
import sys
import tarfile
import time
from base64 import urlsafe_b64encode
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath

from bigearthnet.errors import BigEarthNetError

log = logging.getLogger(__name__)

ROOT_DIST = "bigearthnet"
SUFFIXES = (".tar.gz", ".tgz")
PACK_INFO = ".bigearthnet-pack.json"
"""Written at the archive's top level: what was packed, from where, with which options."""

CPU_ONLY_DROP = ("triton",)
"""Distributions a CPU-only archive leaves out although torch declares them (torch.compile)."""

RELOCATABLE_SHEBANG = (
    "#!/bin/sh\n"
    "'''exec' \"$(dirname -- \"$(realpath -- \"$0\")\")\"/python \"$0\" \"$@\"\n"
    "' '''\n"
)
"""pip's shebang for scripts whose interpreter path does not fit: a shell line that re-executes
the script with the ``python`` next to it, which Python reads as a string literal."""


class PackEnvError(BigEarthNetError, ValueError):
    """The environment cannot be packed (not a venv, unsupported install, bad option)."""


@dataclass
class PackResult:
    """What :func:`pack_env` wrote."""

    path: Path
    files: int
    bytes_in: int
    bytes_out: int
    seconds: float
    base_python: str
    dists: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def summary(self) -> str:
        mb = 1 << 20
        return (f"{self.path}: {len(self.dists)} distributions, {self.files} files, "
                f"{self.bytes_in / mb:.0f} MiB packed into {self.bytes_out / mb:.0f} MiB "
                f"in {self.seconds:.1f} s; nodes need {self.base_python}")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _site_packages(prefix: Path) -> Path:
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    cfg = _pyvenv_cfg(prefix)
    if "version" in cfg:
        major, minor = cfg["version"].split(".")[:2]
        ver = f"python{major}.{minor}"
    site = prefix / "lib" / ver / "site-packages"
    if not site.is_dir():
        raise PackEnvError(f"{prefix} has no {site.relative_to(prefix)}; is it a virtual "
                           "environment made with python -m venv?")
    return site


def _pyvenv_cfg(prefix: Path) -> dict[str, str]:
    path = prefix / "pyvenv.cfg"
    if not path.is_file():
        raise PackEnvError(
            f"{prefix} is not a virtual environment (no pyvenv.cfg): pack-env packs a venv "
            "(make setup creates .venv); run it with that venv's python or pass --prefix")
    cfg = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            cfg[key.strip()] = value.strip()
    return cfg


def _requirements(dist: metadata.Distribution, extras: Iterable[str] = ()) -> list:
    """The requirements of ``dist`` that apply here (markers evaluated, with ``extras``)."""
    from packaging.requirements import Requirement

    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None:
            out.append(req)
            continue
        for extra in ("", *extras):
            if req.marker.evaluate({"extra": extra}):
                out.append(req)
                break
    return out


def _closure(dists: dict[str, metadata.Distribution], without: set[str],
             skip: set[str]) -> tuple[list[str], list[str]]:
    """Distributions the root needs, minus ``without`` (and their dependents) and ``skip``.

    Returns:
        (kept names, left-out names), both sorted.
    """
    if ROOT_DIST not in dists:
        raise PackEnvError(f"the {ROOT_DIST} package is not installed in this environment "
                           "(make setup installs it)")
    # Dependents of a dropped distribution cannot work without it: drop them too (the root
    # excepted: the build does not need torch).
    dropped = set(without)
    changed = True
    while changed:
        changed = False
        for name, dist in dists.items():
            if name in dropped or name == ROOT_DIST:
                continue
            if any(canonical(r.name) in dropped for r in _requirements(dist)):
                dropped.add(name)
                changed = True
    kept: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(ROOT_DIST, ())]
    while todo:
        name, extras = todo.pop()
        if name in dropped or name in skip:
            continue
        first = name not in kept
        kept.add(name)
        if not first and not extras:
            continue
        for req in _requirements(dists[name], extras):
            dep = canonical(req.name)
            if dep in dropped or dep in skip:
                continue
            if dep not in dists:
                raise PackEnvError(
                    f"{name} requires {req}, which is not installed in this environment; "
                    "reinstall it (make setup) before packing")
            if dep not in kept or req.extras:
                todo.append((dep, tuple(sorted(req.extras))))
    left_out = sorted(set(dists) - kept)
    return sorted(kept), left_out


def _editable_roots(dist: metadata.Distribution, site: Path) -> list[Path] | None:
    """The source folders of an editable install (``None`` when it is a normal install)."""
    direct = dist.read_text("direct_url.json")
    if not direct or not json.loads(direct).get("dir_info", {}).get("editable"):
        return None
    roots = []
    for entry in dist.files or []:
        name = PurePosixPath(str(entry)).name
        if name.endswith(".pth") and name.startswith("__editable__"):
            for line in (site / str(entry)).read_text().splitlines():
                line = line.strip()
                if line and not line.startswith(("#", "import ")):
                    roots.append(Path(line))
        elif name.startswith("__editable__") and name.endswith("_finder.py"):
            raise PackEnvError(
                f"{dist.metadata['Name']} is installed editable through an import finder "
                f"({entry}); reinstall it with `pip install -e . --config-settings "
                "editable_mode=compat` or without -e, then pack again")
    if not roots:
        raise PackEnvError(f"{dist.metadata['Name']} is an editable install without a path "
                           ".pth file; reinstall it without -e, then pack again")
    return roots


# --- ELF: which shared libraries a library links (DT_NEEDED), for cpu_only -------------------

def elf_needed(path: Path) -> list[str]:
    """The ``DT_NEEDED`` entries of a 64-bit little-endian ELF file ([] for anything else)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return []
        shoff, = struct.unpack_from("<Q", head, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", head, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQIIQQ", table, i * shentsize) for i in range(shnum)]
        needed: list[str] = []
        for _name, sh_type, _flags, _addr, offset, size, link, *_rest in sections:
            if sh_type != 6:  # SHT_DYNAMIC
                continue
            f.seek(offset)
            dyn = f.read(size)
            strtab = sections[link]
            f.seek(strtab[4])
            strings = f.read(strtab[5])
            for i in range(0, len(dyn) - 15, 16):
                tag, val = struct.unpack_from("<qQ", dyn, i)
                if tag == 0:
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(strings[val:strings.index(b"\0", val)].decode())
        return needed


def _is_shared_lib(path: str) -> bool:
    return bool(re.search(r"\.so(\.\d+)*$", path))


def _linked_closure(roots: Iterable[Path], libraries: dict[str, Path]) -> set[Path]:
    """Every library in ``libraries`` (soname -> file) that ``roots`` link, transitively."""
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(libraries[n] for n in elf_needed(path) if n in libraries)
    return seen


# --- the archive -------------------------------------------------------------------------------

class ParallelGzip(io.RawIOBase):
    """A write-only gzip stream compressed on every core, like pigz.

    The stream is cut into blocks, each compressed on a thread (zlib releases the GIL) into
    its own gzip member; the members are written in order. A file of several members is one
    valid gzip file (RFC 1952): ``gzip -dc``, GNU tar and Python read it whole.
    """

    BLOCK = 8 << 20

    def __init__(self, raw: io.BufferedIOBase, level: int, threads: int | None = None):
        super().__init__()
        from concurrent.futures import ThreadPoolExecutor

        self._raw, self._level = raw, level
        self._threads = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._threads)
        self._pending: list = []
        self._buf = bytearray()
        self._pos = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def write(self, data) -> int:
        self._pos += len(data)
        self._buf += data
        while len(self._buf) >= self.BLOCK:
            self._submit(bytes(self._buf[:self.BLOCK]))
            del self._buf[:self.BLOCK]
        return len(data)

    def _submit(self, block: bytes) -> None:
        self._pending.append(self._pool.submit(gzip.compress, block, self._level, mtime=0))
        while len(self._pending) > 2 * self._threads:
            self._raw.write(self._pending.pop(0).result())

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._buf or not self._pending:
                self._submit(bytes(self._buf))
                self._buf.clear()
            for future in self._pending:
                self._raw.write(future.result())
            self._pending.clear()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            super().close()


@dataclass
class _Entry:
    arcname: str
    source: Path | None = None      # a file or symlink on disk
    data: bytes | None = None       # generated content
    mode: int = 0o644


def _record_line(arcname: str, data: bytes) -> str:
    digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _script(path: Path, prefix: Path) -> bytes | None:
    """A console script with a relocatable shebang (``None``: leave the file as it is)."""
    data = path.read_bytes()
    first, _, rest = data.partition(b"\n")
    if not first.startswith(b"#!") or str(prefix).encode() not in first:
        return None
    return RELOCATABLE_SHEBANG.encode() + rest


def _plan(prefix: Path, without: Sequence[str], cpu_only: bool) -> tuple[list[_Entry], dict]:
    cfg = _pyvenv_cfg(prefix)
    site = _site_packages(prefix)
    site_rel = site.relative_to(prefix).as_posix()
    dists: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions(path=[str(site)]):
        dists.setdefault(canonical(dist.metadata["Name"]), dist)
    unknown = [w for w in without if canonical(w) not in dists]
    if unknown:
        raise PackEnvError(f"--without {' '.join(unknown)}: not installed in {prefix} "
                           f"(installed: {', '.join(sorted(dists))})")
    skip = set(CPU_ONLY_DROP) if cpu_only else set()
    kept, left_out = _closure(dists, {canonical(w) for w in without}, skip)

    entries: list[_Entry] = []
    seen: set[str] = set()

    def add(entry: _Entry) -> None:
        if entry.arcname not in seen:
            seen.add(entry.arcname)
            entries.append(entry)

    # The interpreter links (bin/python -> the base interpreter) and pyvenv.cfg.
    base = None
    for item in sorted((prefix / "bin").iterdir()):
        if item.is_symlink() and item.name.startswith("python"):
            add(_Entry(f"bin/{item.name}", source=item))
            base = base or os.path.realpath(item)
    if base is None:
        raise PackEnvError(f"{prefix}/bin has no python symlink; make the venv with "
                           "python -m venv (without --copies) and pack again")
    add(_Entry("pyvenv.cfg", source=prefix / "pyvenv.cfg"))
    if (prefix / "lib64").is_symlink():
        add(_Entry("lib64", source=prefix / "lib64"))

    # cpu_only: of the NVIDIA wheels keep only the libraries torch links at import.
    keep_libs: set[Path] | None = None
    if cpu_only and any(n.startswith("nvidia-") for n in kept):
        libraries: dict[str, Path] = {}
        roots: list[Path] = []
        for name in kept:
            for f in dists[name].files or []:
                path = Path(dists[name].locate_file(f))
                if not _is_shared_lib(str(f)) or not path.is_file():
                    continue
                if name.startswith("nvidia-"):
                    libraries.setdefault(path.name, path)
                else:
                    roots.append(path)
        keep_libs = _linked_closure(roots, libraries)

    for name in kept:
        dist = dists[name]
        editable = _editable_roots(dist, site)
        record: list[str] = []
        info_dir = None
        for f in dist.files or []:
            path = Path(os.path.normpath(dist.locate_file(f)))
            try:
                rel = path.relative_to(prefix).as_posix()
            except ValueError:
                continue  # outside the venv (never for wheels)
            if not path.is_file() and not path.is_symlink():
                continue  # listed, not present (pyc files not compiled, say)
            if keep_libs is not None and name.startswith("nvidia-") and \
                    _is_shared_lib(rel) and path not in keep_libs:
                continue
            if editable is not None:
                if f.name == "RECORD" and f.parent.name.endswith(".dist-info"):
                    info_dir = f"{site_rel}/{f.parent.as_posix()}"
                if f.name.endswith(".pth") or f.name.startswith("__editable__") or \
                        f.name in ("direct_url.json", "RECORD"):
                    continue
            script = _script(path, prefix) if rel.startswith("bin/") else None
            if script is not None:
                add(_Entry(rel, data=script, mode=0o755))
            else:
                add(_Entry(rel, source=path))
            if editable is not None:
                data = script if script is not None else path.read_bytes()
                record.append(_record_line(os.path.relpath(rel, site_rel), data))
        if editable is not None:
            top = (dist.read_text("top_level.txt") or "").split()
            if not top or info_dir is None:
                raise PackEnvError(f"{name} is an editable install without top_level.txt or "
                                   "RECORD; reinstall it, then pack again")
            for package in top:
                src = next((r / package for r in editable if (r / package).is_dir()), None)
                if src is None:
                    raise PackEnvError(f"the source of the editable package {package} is not "
                                       f"under {', '.join(map(str, editable))}")
                for path in sorted(src.rglob("*")):
                    if "__pycache__" in path.parts or not path.is_file() or \
                            path.suffix in (".pyc", ".pyo"):
                        continue
                    inner = f"{package}/{path.relative_to(src).as_posix()}"
                    add(_Entry(f"{site_rel}/{inner}", source=path))
                    record.append(_record_line(inner, path.read_bytes()))
            record.append(f"{os.path.relpath(info_dir, site_rel)}/RECORD,,")
            add(_Entry(f"{info_dir}/RECORD", data=("\n".join(record) + "\n").encode()))
    bytes_in = 0
    for entry in entries:
        if entry.source is not None and not entry.source.is_symlink():
            bytes_in += entry.source.stat().st_size
        elif entry.data is not None:
            bytes_in += len(entry.data)
    info = {"base_python": base, "python_version": cfg.get("version", ""),
            "prefix": str(prefix), "without": sorted(canonical(w) for w in without),
            "cpu_only": cpu_only, "dists": {n: dists[n].version for n in kept},
            "left_out": left_out, "bytes": bytes_in}
    add(_Entry(PACK_INFO, data=json.dumps(info, indent=1).encode()))
    return entries, info


def pack_env(out: str | Path, *, prefix: str | Path | None = None, without: Sequence[str] = (),
             cpu_only: bool = False, level: int = 1, overwrite: bool = False) -> PackResult:
    """Write the archive.

    Args:
        out: the archive to write, ``.tar.gz`` or ``.tgz``.
        prefix: the venv to pack (default: the running interpreter's).
        without: distributions to leave out, with everything that needs them.
        cpu_only: leave out triton and the NVIDIA libraries torch does not link at import.
        level: gzip level, 0 (store, fastest) to 9.
        overwrite: replace an existing ``out``.

    Raises:
        PackEnvError: not a venv, an unsupported install, a bad suffix or option, or ``out``
            exists.
    """
    t0 = time.perf_counter()
    out = Path(out)
    if not out.name.endswith(SUFFIXES):
        raise PackEnvError(
            f"{out}: write a .tar.gz or .tgz; Spark unpacks those with the system tar, which "
            "keeps bin/python's symlink and the permissions, while a plain .tar (Java untar) "
            "or .zip loses them. --level 0 writes an uncompressed .tar.gz")
    if not 0 <= level <= 9:
        raise PackEnvError(f"--level {level}: use 0 (no compression) to 9")
    if out.exists() and not overwrite:
        raise PackEnvError(f"{out} exists; pass --overwrite to replace it")
    if prefix is None:
        if sys.prefix == sys.base_prefix:
            raise PackEnvError("this Python is not running in a virtual environment: run "
                               "pack-env with the venv's python (make setup creates .venv) "
                               "or pass --prefix")
        prefix = sys.prefix
    prefix = Path(prefix).absolute()
    entries, info = _plan(prefix, without, cpu_only)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as raw, \
                ParallelGzip(raw, level) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs: set[str] = set()
            for entry in sorted(entries, key=lambda e: e.arcname):
                for parent in reversed(PurePosixPath(entry.arcname).parents[:-1]):
                    if str(parent) not in dirs:
                        dirs.add(str(parent))
                        ti = tarfile.TarInfo(str(parent))
                        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                        tar.addfile(ti)
                if entry.data is not None:
                    ti = tarfile.TarInfo(entry.arcname)
                    ti.size, ti.mode, ti.mtime = len(entry.data), entry.mode, int(time.time())
                    tar.addfile(ti, io.BytesIO(entry.data))
                else:
                    ti = tar.gettarinfo(str(entry.source), arcname=entry.arcname)
                    ti.uid = ti.gid = 0
                    ti.uname = ti.gname = ""
                    if ti.isreg():
                        with open(entry.source, "rb") as f:
                            tar.addfile(ti, f)
                    else:
                        tar.addfile(ti)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    result = PackResult(path=out, files=len(entries), bytes_in=info["bytes"],
                        bytes_out=out.stat().st_size, seconds=time.perf_counter() - t0,
                        base_python=info["base_python"], dists=sorted(info["dists"]),
                        left_out=info["left_out"])
    log.info("%s", result.summary())
    return result
