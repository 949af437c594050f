"""Datasets on an object store: the commit protocol of ``--out s3://…`` and its readers.

A rename is neither atomic nor cheap on S3, so a build cannot write a hidden folder and rename
it as :func:`bigearthnet.dataset.io.staged_output` does. Instead::

    s3://bucket/prefix/
      _SUCCESS                       {"run_id": …}: the commit point, one PUT, written last
      _runs/<run_id>/                the dataset of one build (the normal layout,
        patches/split=*/…parquet       bigearthnet.dataset.layout, without _SUCCESS)
        metadata.parquet  stats.json  manifest.json  build_config.json

* every file of a build goes under ``_runs/<run_id>/``, a prefix no other build uses: the tasks
  build their product into a local temporary folder (the ordinary stage code) and upload its
  files there through pyarrow's S3 filesystem (an object appears whole or not at all; a
  multipart upload is invisible until complete); the driver merges the metadata parts and
  uploads ``metadata.parquet``, ``stats.json``, ``manifest.json`` and ``build_config.json``;
* the driver then lists the run prefix and checks that every file the manifest names is there,
  removes the parts and any stray object, and writes ``prefix/_SUCCESS`` naming the run, in one
  PUT: that object is the commit;
* only after the commit are the other ``_runs/*`` removed: the replaced dataset
  (``--overwrite``) and whatever dead builds left;
* a build that fails or is interrupted writes ``_runs/<run_id>.aborted`` and then deletes its
  run prefix. Python tasks outlive a cancelled Spark job (a killed task's Python worker runs its
  function to the end), so a task checks that marker after its uploads and deletes what it
  uploaded when the marker is there: an upload the driver's delete did not see ended after the
  marker was written, so the task's check sees the marker. The marker alone is left, and the
  next committed build removes it with the other runs;
* readers (:func:`committed_run`, :func:`local_dataset`) read ``_SUCCESS`` to find the run and
  refuse a prefix without it (:class:`~bigearthnet.errors.IncompleteDatasetError`), so a
  build that dies at any point, its driver SIGKILLed included, leaves nothing they accept.

Differences from the local protocol: S3 has no lock, so a second build into the same prefix is
not refused at once. Two concurrent builds write disjoint run prefixes; without
``--overwrite`` the later one to finish finds ``_SUCCESS`` and fails with
:class:`~bigearthnet.errors.OutputExistsError`; with ``--overwrite`` the first to commit
deletes the other's run files, and the other then fails its pre-commit check with
:class:`~bigearthnet.errors.BuildFailedError` (the window between that check and its PUT is
not covered: run one build per prefix at a time). Readers keep reading the run they resolved;
one that resolved a run just before an ``--overwrite`` deleted it fails with a named error.

Readers that need local files (the torch loader's ``preadv`` path) get them through
:func:`local_dataset`: the committed run is downloaded once into
``$BIGEARTHNET_CACHE/datasets/<bucket>/<prefix>/<run_id>/`` (default cache
``~/.cache/bigearthnet``), atomically (a temporary sibling renamed when complete, under an
``flock`` so parallel ranks download it once), and read from there; a run id is never reused,
so the cache never serves stale data.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bigearthnet.config import BuildConfig
from bigearthnet.dataset.layout import IN_PROGRESS, MANIFEST, PARTS, SUCCESS, DatasetLayout
from bigearthnet.errors import (
    BigEarthNetError,
    BuildFailedError,
    IncompleteDatasetError,
    OutputExistsError,
    UnsupportedStorageError,
)
from bigearthnet.storage import ObjectStore, S3Settings, S3Uri, is_s3_uri

RUNS = "_runs"
"""The prefix holding one folder per build run."""

FAILURES = f"{PARTS}/failures"
"""Where failed tasks report themselves (``on_error: fail``), under the run prefix."""

ABORTED = ".aborted"
"""Suffix of the marker ``_runs/<run_id>.aborted`` of a run whose build failed."""


def abort_marker(run_root: S3Uri) -> S3Uri:
    """``prefix/_runs/<run_id>.aborted``, the marker of an aborted run ``run_root``."""
    return run_root.parent.join(f"{run_root.name}{ABORTED}")


def discard_if_aborted(store: ObjectStore, run_root: S3Uri, written: list[S3Uri]) -> bool:
    """Delete ``written`` and return True when the run was aborted meanwhile (task side).

    Called after a task's uploads: a task of a cancelled job runs on in its Python worker, and
    what it uploads after the driver removed the run prefix would stay behind otherwise.
    """
    if not store.exists(abort_marker(run_root)):
        return False
    for uri in written:
        try:
            store.delete(uri)
        except BigEarthNetError:
            pass
    return True


def new_run_id() -> str:
    """A run id: UTC time (sortable) and a random suffix (unique)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def cache_root() -> Path:
    """Where downloaded datasets are cached."""
    base = os.environ.get("BIGEARTHNET_CACHE") or os.path.join(Path.home(), ".cache", "bigearthnet")
    return Path(base) / "datasets"


def uses_s3(cfg: BuildConfig) -> bool:
    """True when a build reads or writes an ``s3://`` URI."""
    return any(is_s3_uri(p) for p in (cfg.products, cfg.clc, cfg.out))


# --- the task side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskStorage:
    """What a build task needs to read and write the object store; travels in its closure.

    Args:
        settings: the driver's S3 settings (endpoint, region, credentials when set).
        run_root: the run prefix the task uploads into, or ``None`` for a local output.
    """

    settings: S3Settings
    run_root: S3Uri | None = None

    def run(self, build: Callable[[Path], dict], staging: Path) -> dict:
        """Run ``build(folder)`` in the task, with GDAL set up for ``/vsis3/``.

        For a local output ``folder`` is the shared staging folder. For an S3 output it is a
        fresh local temporary folder with the task folders; when the build succeeds, its files
        are uploaded under the run prefix (keys = the dataset layout) and the folder is
        removed. An upload that fails turns the row into a failed one with the named error.
        """
        self.settings.apply()
        if self.run_root is None:
            return build(staging)
        with tempfile.TemporaryDirectory(prefix="bigearthnet-task-") as tmp:
            local = Path(tmp)
            DatasetLayout(local).create_task_folders()
            row = build(local)
            if row.get("status") != "ok":
                return row
            store = ObjectStore(self.settings)
            written: list[S3Uri] = []
            try:
                for path in sorted(p for p in local.rglob("*") if p.is_file()):
                    rel = path.relative_to(local).as_posix()
                    if IN_PROGRESS not in path.name:
                        written.append(self.run_root.join(rel))
                        store.upload(path, written[-1])
            except BigEarthNetError as exc:
                row.update(status="failed", error_type=type(exc).__name__,
                           error_message=f"product {row.get('product_id')}: {exc}")
            if discard_if_aborted(store, self.run_root, written):
                row.update(status="failed", error_type="BuildFailedError",
                           error_message=f"product {row.get('product_id')}: the build was "
                           "aborted while this task ran; its uploads were removed")
        return row


class S3FailureBoard:
    """Failure reports of tasks under the run prefix (``on_error: fail``); the S3 twin of the
    local ``_parts/failures`` folder that :func:`bigearthnet.spark.tasks.run_indexed_tasks`
    polls. A failed task writes ``<task_id>.json`` (its row), a good one ``<task_id>.ok``, under
    ``<run_root>/_parts/failures``.

    Polling lists the prefix at most once a second.
    """

    POLL_S = 1.0

    def __init__(self, settings: S3Settings, run_root: S3Uri):
        self.settings, self.run_root = settings, run_root
        self.prefix = run_root.join(FAILURES)
        self._seen: dict[str, int] = {}
        self._listed_at = 0.0

    def __getstate__(self) -> dict:
        return {"settings": self.settings, "run_root": self.run_root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["settings"], state["run_root"])

    def report(self, task_id: int, row: dict) -> None:
        """Called in the task with its row."""
        store = ObjectStore(self.settings)
        if row.get("status") == "ok":
            key, data = self.prefix.join(f"{task_id}.ok"), b""
        else:
            doc = {k: v for k, v in row.items() if not isinstance(v, bytes | bytearray)}
            key, data = self.prefix.join(f"{task_id}.json"), json.dumps(doc, default=str).encode()
        store.write_bytes(key, data)
        discard_if_aborted(store, self.run_root, [key])

    def _listing(self, fresh: bool = False) -> dict[str, int]:
        if fresh or time.monotonic() - self._listed_at >= self.POLL_S:
            self._seen = ObjectStore(self.settings).list(self.prefix)
            self._listed_at = time.monotonic()
        return self._seen

    def has_failure(self) -> bool:
        """True once a task reported a failure (driver side)."""
        return any(k.endswith(".json") for k in self._listing())

    def failures(self) -> list[dict]:
        """The failed rows reported so far."""
        store = ObjectStore(self.settings)
        return [json.loads(store.read_bytes(self.prefix.join(k)))
                for k in sorted(self._listing(fresh=True)) if k.endswith(".json")]

    def ok_count(self) -> int:
        """How many tasks reported success."""
        return sum(k.endswith(".ok") for k in self._listing())


# --- the driver side -------------------------------------------------------------------------


class S3Build:
    """The object-store side of one build: settings for the tasks and, for ``--out s3://…``,
    the run and its commit.

    Use :func:`s3_build`. ``out`` is ``None`` when only the inputs are on S3.
    """

    def __init__(self, cfg: BuildConfig):
        self.store = ObjectStore()
        self.settings = self.store.settings
        self.out = S3Uri.parse(cfg.out) if is_s3_uri(cfg.out) else None
        self.overwrite = cfg.overwrite
        self.run_id = new_run_id()
        self.settings.apply()  # the driver reads /vsis3/ too (plans, STAC items)
        if self.out is not None:
            check_s3_output(self.store, self.out, cfg.overwrite)

    @property
    def run_root(self) -> S3Uri | None:
        """``prefix/_runs/<run_id>`` (S3 output only)."""
        return None if self.out is None else self.out.join(RUNS, self.run_id)

    @property
    def task(self) -> TaskStorage:
        """What the tasks carry."""
        return TaskStorage(self.settings, self.run_root)

    def failure_board(self) -> S3FailureBoard:
        """Where tasks report failures (S3 output only)."""
        assert self.run_root is not None
        return S3FailureBoard(self.settings, self.run_root)

    def pull_parts(self, staging: Path) -> None:
        """Download the tasks' metadata parts into the driver's local staging folder (the
        merge of :func:`bigearthnet.stages.finish.finish_labeled` reads them there)."""
        if self.run_root is None:
            return
        layout = DatasetLayout(staging)
        remote = self.run_root.join(PARTS, "metadata")
        layout.metadata_parts.mkdir(parents=True, exist_ok=True)
        for rel in sorted(self.store.list(remote)):
            if "/" not in rel and rel.endswith(".parquet"):
                self.store.download(remote.join(rel), layout.metadata_parts / rel)

    @contextmanager
    def staged(self) -> Iterator[Path]:
        """The S3 twin of ``staged_output``: yields the driver's local staging folder (driver
        files only; the tasks upload theirs) and commits the run when the block ends.

        If the block raises, the run's objects are removed (best effort; a dead driver leaves
        them to the next build) and nothing is committed.
        """
        assert self.out is not None and self.run_root is not None
        with tempfile.TemporaryDirectory(prefix="bigearthnet-driver-") as tmp:
            staging = Path(tmp) / "dataset"
            staging.mkdir()
            try:
                yield staging
                self._commit(staging)
            except BaseException:
                try:  # the marker first: tasks still running check it after their uploads
                    self.store.write_bytes(abort_marker(self.run_root), b"")
                    self.store.delete_prefix(self.run_root)
                except BigEarthNetError:
                    pass
                raise

    def _commit(self, staging: Path) -> None:
        assert self.out is not None and self.run_root is not None
        root = self.run_root
        uploaded = set()
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            rel = path.relative_to(staging).as_posix()
            if not rel.startswith(f"{PARTS}/") and rel != SUCCESS:
                self.store.upload(path, root.join(rel))
                uploaded.add(rel)
        manifest = json.loads((staging / MANIFEST).read_text())
        expected = expected_files(manifest) | uploaded
        present = self.store.list(root)
        missing = sorted(expected - set(present))
        if missing:
            raise BuildFailedError(
                f"{len(missing)} file(s) of this build are missing from {root} before its "
                f"commit (e.g. {missing[0]}); another build into {self.out} may have removed "
                "them (S3 has no lock: run one build per prefix at a time). Nothing was committed."
            )
        for rel in sorted(set(present) - expected):  # parts, failure reports, strays
            self.store.delete(root.join(rel))
        marker = self.out.join(SUCCESS)
        if not self.overwrite and self.store.exists(marker):
            raise OutputExistsError(
                f"a dataset was committed at {self.out} during this build; not replacing it "
                "(pass --overwrite to replace it)")
        doc = {"run_id": self.run_id, "format": manifest.get("format"),
               "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.store.write_bytes(marker, (json.dumps(doc, sort_keys=True) + "\n").encode())
        remove_other_runs(self.store, self.out, keep=self.run_id)


def expected_files(manifest: dict) -> set[str]:
    """The task files a build manifest names (``products[*].files``, relative paths)."""
    files: set[str] = set()
    for product in manifest.get("products") or []:
        files.update(product.get("files") or [])
    return files


def check_s3_output(store: ObjectStore, out: S3Uri, overwrite: bool) -> None:
    """Refuse an output prefix that holds a committed dataset (without ``overwrite``) or
    objects no build wrote.

    Raises:
        BucketNotFoundError, ObjectStoreAccessError: the bucket is missing or not accessible.
        OutputExistsError: see above.
    """
    from pyarrow import fs

    store.check_bucket(out)
    if not out.key:
        raise UnsupportedStorageError(
            f"--out {out} is a bucket root; give a prefix (s3://{out.bucket}/NAME) so the "
            "dataset's _SUCCESS and _runs/ have a folder of their own")
    try:
        top = store.fs.get_file_info(fs.FileSelector(out.path, allow_not_found=True))
    except OSError as exc:
        from bigearthnet.storage import object_error

        raise object_error(exc, out, "list") from None
    names = sorted(out.relative(i.path) for i in top)
    foreign = [n for n in names if n not in (RUNS, SUCCESS)]
    if foreign:
        raise OutputExistsError(
            f"output {out} holds objects that no build wrote (e.g. {out.join(foreign[0])}); "
            "choose an empty prefix")
    if SUCCESS in names and not overwrite:
        raise OutputExistsError(
            f"output {out} holds a committed dataset already; choose another --out or pass "
            "--overwrite")


def remove_other_runs(store: ObjectStore, out: S3Uri, keep: str) -> list[str]:
    """Delete every ``_runs/*`` of ``out`` but ``keep`` (and every abort marker); return the
    run ids removed."""
    listing = store.list(out.join(RUNS))
    runs = sorted({rel.split("/", 1)[0] for rel in listing if "/" in rel})
    removed = [r for r in runs if r != keep]
    for run in removed:
        store.delete_prefix(out.join(RUNS, run))
    for marker in sorted(rel for rel in listing if "/" not in rel and rel.endswith(ABORTED)):
        store.delete(out.join(RUNS, marker))
    return removed


def s3_build(cfg: BuildConfig) -> S3Build | None:
    """The object-store side of a build, or ``None`` when it touches no ``s3://`` URI.

    Raises:
        UnsupportedStorageError: ``--append`` into S3, or the ``sedona-spark`` engine with an
            S3 CLC or output.
        OutputExistsError, BucketNotFoundError, ObjectStoreAccessError: see
            :func:`check_s3_output`.
    """
    if not uses_s3(cfg):
        return None
    if is_s3_uri(cfg.out) and cfg.append:
        raise UnsupportedStorageError(
            f"--append into {cfg.out} is not supported on object storage yet; build into a new "
            "prefix, or rebuild with --overwrite")
    if cfg.clc is not None and cfg.label_engine == "sedona-spark" and (
            is_s3_uri(cfg.clc) or is_s3_uri(cfg.out)):
        where = cfg.clc if is_s3_uri(cfg.clc) else cfg.out
        raise UnsupportedStorageError(
            f"the sedona-spark label engine cannot use {where}: it reads the CLC through "
            "Sedona's GeoPackage reader (Hadoop paths, no s3a connector here) and writes its "
            "per-tile parts into a staging folder shared with the tasks; use --label-engine "
            "sedonadb (the default), or local/shared paths for --clc and --out")
    return S3Build(cfg)


# --- readers ---------------------------------------------------------------------------------


def committed_run(uri: str, store: ObjectStore | None = None) -> tuple[S3Uri, str]:
    """The run prefix and id of the dataset committed at ``uri``.

    Raises:
        IncompleteDatasetError: no ``_SUCCESS`` under ``uri`` (never built, being built, or a
            build that died), or a marker that names no run.
        BucketNotFoundError, ObjectStoreAccessError: the bucket is missing or not accessible.
    """
    store = store or ObjectStore()
    prefix = S3Uri.parse(uri)
    store.check_bucket(prefix)
    marker = prefix.join(SUCCESS)
    if not store.exists(marker):
        raise IncompleteDatasetError(
            f"dataset {prefix} has no {SUCCESS} marker: no build committed a dataset there (one "
            "may be running, or it died); build it (bigearthnet build --out "
            f"{prefix} [--overwrite])")
    try:
        run_id = json.loads(store.read_bytes(marker))["run_id"]
    except (ValueError, KeyError, TypeError):
        raise IncompleteDatasetError(
            f"{marker} names no run (expected JSON with 'run_id'); rebuild the dataset "
            "(bigearthnet build --overwrite)") from None
    return prefix.join(RUNS, str(run_id)), str(run_id)


def local_dataset(path: str | os.PathLike[str]) -> Path:
    """A local folder holding the dataset at ``path``.

    A local path is returned as it is (checks are the caller's). For an ``s3://`` URI the
    committed run is downloaded once into the cache (see the module docstring) and that folder,
    complete with its ``_SUCCESS``, is returned.

    Raises:
        IncompleteDatasetError: the prefix has no committed dataset.
        BucketNotFoundError, ObjectStoreAccessError: see :func:`committed_run`.
    """
    if not is_s3_uri(path):
        return Path(path)
    store = ObjectStore()
    root, run_id = committed_run(str(path), store)
    prefix = S3Uri.parse(str(path))
    target = cache_root() / prefix.bucket / prefix.key / run_id
    if (target / SUCCESS).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.parent / f".{run_id}.lock"
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # parallel ranks: one downloads, the others wait
        if (target / SUCCESS).is_file():
            return target
        tmp = target.parent / f".{run_id}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            files = store.list(root)
            if MANIFEST not in files:
                raise IncompleteDatasetError(
                    f"{root} (committed at {prefix}) has no {MANIFEST}; its files were removed "
                    "(a concurrent --overwrite?); read the dataset again or rebuild it")
            for rel, size in sorted(files.items()):
                local = tmp / rel
                local.parent.mkdir(parents=True, exist_ok=True)
                store.download(root.join(rel), local)
                if local.stat().st_size != size:
                    raise IncompleteDatasetError(
                        f"{root.join(rel)}: downloaded {local.stat().st_size} of {size} bytes; "
                        "read the dataset again")
            (tmp / SUCCESS).write_text(json.dumps({"run_id": run_id, "source": str(prefix)}))
            if target.exists():  # a partial folder cannot exist (renamed only when complete)
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
