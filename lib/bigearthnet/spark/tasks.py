"""Run one Spark task per work item and collect their small summary rows.

``spark.range(n, numPartitions=n)`` gives each task exactly one index; ``mapInArrow`` calls a
plain Python function with it inside the executor. Only the summaries (counts, timings,
histograms) travel back to the driver.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark import InheritableThread

from bigearthnet.errors import BigEarthNetError, error_from_name

_ARROW = {"long": pa.int64(), "string": pa.string(), "int": pa.int32(), "double": pa.float64(),
          "binary": pa.binary()}


@dataclass
class TaskRun:
    """What :func:`run_indexed_tasks` returns.

    Attributes:
        rows: the summary rows, sorted by task index (after a cancellation: the failed rows,
            with ``cancelled_tasks``).
        failed_attempts: task attempts Spark ran again (an executor lost, a task killed): each
            retried attempt wrote nothing that stays, since tasks commit their files by rename
            under deterministic names.
        cancelled: the job was cancelled at a reported failure.
    """

    rows: list[dict] = field(default_factory=list)
    failed_attempts: int = 0
    cancelled: bool = False


def run_indexed_tasks(spark: Any, n: int, task: Callable[[int], dict],
                      fields: tuple[tuple[str, str], ...],
                      failure_dir: str | Path | Any | None = None) -> TaskRun:
    """Run ``task(i)`` for i in 0..n-1, one Spark task each; return the rows sorted by index.

    Args:
        spark: the SparkSession.
        n: number of tasks.
        task: picklable function of the task index returning one row (a dict over ``fields``,
            which must include ``task_id`` and ``status``).
        fields: (name, Spark DDL type) of the summary row.
        failure_dir: when given, a task whose row has ``status != "ok"`` writes it there as
            ``<task_id>.json`` at once, and the driver cancels the whole job (its job group, with
            running tasks interrupted) as soon as it sees the file: the first failure ends the
            job within seconds instead of after every other task. The folder must be visible to
            driver and executors (it lives in the staging folder). Instead of a folder, a board
            object with the same duties (``report(task_id, row)`` in the task;
            ``has_failure()``, ``failures()``, ``ok_count()`` on the driver), such as the
            object-store one of an ``s3://`` output
            (:class:`bigearthnet.dataset.objectstore.S3FailureBoard`).

    Returns:
        A :class:`TaskRun`.

    Raises:
        DiskFullError: a task filled the output's filesystem (see ``FATAL_ERRORS``).
    """
    if n == 0:
        return TaskRun()
    schema = pa.schema([(name, _ARROW[kind]) for name, kind in fields])
    ddl = ", ".join(f"{name} {kind}" for name, kind in fields)
    board = (None if failure_dir is None else failure_dir if hasattr(failure_dir, "report")
             else _FolderBoard(str(failure_dir)))

    def run_partition(batches):
        for batch in batches:
            for task_id in batch.column(0).to_pylist():
                row = task(task_id)
                if board is not None:
                    board.report(task_id, row)
                yield pa.RecordBatch.from_pylist([row], schema=schema)

    frame = spark.range(0, n, 1, numPartitions=n).mapInArrow(run_partition, ddl)
    run = _collect(spark, frame, board, n)
    fatal = [r for r in run.rows if r.get("error_type") in FATAL_ERRORS]
    if fatal:  # no item's fault: on_error skip would only list every item as failed
        raise first_failure(fatal, n, "tasks")
    return run


FATAL_ERRORS = frozenset({"DiskFullError"})
"""Errors of the job's environment, not of an item (the output filesystem is full): they end the
job whatever ``on_error`` says."""


@dataclass(frozen=True)
class _FolderBoard:
    """Failure reports as files in a folder that driver and executors share."""

    folder: str

    def report(self, task_id: int, row: dict) -> None:
        """A failed task writes its row as ``<task_id>.json``; a good one an empty ``<id>.ok``.

        The folder is created by the driver; a task never creates it (nor its parents).
        """
        folder = Path(self.folder)
        try:
            if row.get("status") == "ok":
                (folder / f"{task_id}.ok").write_text("")
                return
            doc = {k: v for k, v in row.items() if not isinstance(v, bytes | bytearray)}
            tmp = folder / f".{task_id}.json.tmp"
            tmp.write_text(json.dumps(doc, default=str))
            os.replace(tmp, folder / f"{task_id}.json")
        except OSError:
            # A full disk (or a folder that is gone): the row still reaches the driver with the
            # job's results; only the early cancellation is lost.
            return

    def has_failure(self) -> bool:
        return any(Path(self.folder).glob("*.json"))

    def failures(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in Path(self.folder).glob("*.json")]

    def ok_count(self) -> int:
        return len(list(Path(self.folder).glob("*.ok")))


def _collect(spark: Any, frame: Any, board: Any | None, n: int) -> TaskRun:
    """Collect the job in a thread under its own job group; cancel it at a reported failure."""
    sc = spark.sparkContext
    group = f"bigearthnet-{uuid.uuid4().hex[:12]}"
    box: dict[str, Any] = {}

    def collect() -> None:
        sc.setJobGroup(group, "bigearthnet tasks", interruptOnCancel=True)
        try:
            box["rows"] = frame.collect()
        except BaseException as exc:  # noqa: BLE001 - re-raised below unless we cancelled
            box["error"] = exc

    thread = InheritableThread(target=collect, daemon=True)
    thread.start()
    cancelled = False
    while thread.is_alive():
        thread.join(timeout=0.2)
        if board is not None and thread.is_alive() and board.has_failure():
            sc.cancelJobGroup(group)
            cancelled = True
            thread.join()
    attempts = _failed_attempts(sc, group)
    if not cancelled and "error" in box:
        raise box["error"]
    if not cancelled:
        rows = sorted((r.asDict() for r in box["rows"]), key=lambda r: r["task_id"])
        return TaskRun(rows, attempts)
    failed = sorted(board.failures(), key=lambda r: r["task_id"])
    ok = board.ok_count()
    for row in failed:
        row["cancelled_tasks"] = max(n - ok - len(failed), 0)
    return TaskRun(failed, attempts, cancelled=True)


def _failed_attempts(sc: Any, group: str) -> int:
    """Failed task attempts of the job group's stages (Spark's status tracker)."""
    tracker = sc.statusTracker()
    failed = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in (job.stageIds if job else []):
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                failed += int(stage.numFailedTasks)
    return failed


def first_failure(failed: list[dict], n_tasks: int, what: str) -> BigEarthNetError:
    """The named error of the first failed task, saying how many tasks were cancelled."""
    first = failed[0]
    message = first["error_message"]
    cancelled = first.get("cancelled_tasks")
    if cancelled:
        message += f" (stopped at this failure: {cancelled} of {n_tasks} {what} were cancelled)"
    return error_from_name(first["error_type"], message)
