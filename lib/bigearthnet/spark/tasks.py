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
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark import InheritableThread

from bigearthnet.errors import BigEarthNetError, error_from_name

_ARROW = {"long": pa.int64(), "string": pa.string(), "int": pa.int32(), "double": pa.float64(),
          "binary": pa.binary()}


class TasksCancelledError(Exception):
    """Internal: the job group was cancelled after a task reported a failure."""


def run_indexed_tasks(spark: Any, n: int, task: Callable[[int], dict],
                      fields: tuple[tuple[str, str], ...],
                      failure_dir: str | Path | None = None) -> list[dict]:
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
            driver and executors (it lives in the staging folder).

    Returns:
        The rows, or, after a cancellation, the failed rows found in ``failure_dir`` (with
        ``cancelled_tasks``: the tasks that neither succeeded nor failed before the cancel).
    """
    if n == 0:
        return []
    schema = pa.schema([(name, _ARROW[kind]) for name, kind in fields])
    ddl = ", ".join(f"{name} {kind}" for name, kind in fields)
    signal = None if failure_dir is None else str(failure_dir)

    def run_partition(batches):
        for batch in batches:
            for task_id in batch.column(0).to_pylist():
                row = task(task_id)
                if signal is not None:
                    _report(Path(signal), task_id, row)
                yield pa.RecordBatch.from_pylist([row], schema=schema)

    frame = spark.range(0, n, 1, numPartitions=n).mapInArrow(run_partition, ddl)
    if signal is None:
        return sorted((r.asDict() for r in frame.collect()), key=lambda r: r["task_id"])
    return _collect_or_cancel(spark, frame, Path(signal), n)


def _report(folder: Path, task_id: int, row: dict) -> None:
    """A failed task writes its row as ``<task_id>.json``; a good one an empty ``<id>.ok``.

    The folder is created by the driver; a task never creates it (nor its parents).
    """
    if row.get("status") == "ok":
        (folder / f"{task_id}.ok").write_text("")
        return
    doc = {k: v for k, v in row.items() if not isinstance(v, bytes | bytearray)}
    tmp = folder / f".{task_id}.json.tmp"
    tmp.write_text(json.dumps(doc, default=str))
    os.replace(tmp, folder / f"{task_id}.json")


def _collect_or_cancel(spark: Any, frame: Any, folder: Path, n: int) -> list[dict]:
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
        if thread.is_alive() and any(folder.glob("*.json")):
            sc.cancelJobGroup(group)
            cancelled = True
            thread.join()
    if not cancelled and "error" in box:
        raise box["error"]
    if not cancelled:
        return sorted((r.asDict() for r in box["rows"]), key=lambda r: r["task_id"])
    failed = sorted((json.loads(p.read_text()) for p in folder.glob("*.json")),
                    key=lambda r: r["task_id"])
    ok = len(list(folder.glob("*.ok")))
    for row in failed:
        row["cancelled_tasks"] = max(n - ok - len(failed), 0)
    return failed


def first_failure(failed: list[dict], n_tasks: int, what: str) -> BigEarthNetError:
    """The named error of the first failed task, saying how many tasks were cancelled."""
    first = failed[0]
    message = first["error_message"]
    cancelled = first.get("cancelled_tasks")
    if cancelled:
        message += f" (stopped at this failure: {cancelled} of {n_tasks} {what} were cancelled)"
    return error_from_name(first["error_type"], message)
