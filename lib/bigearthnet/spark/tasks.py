"""Run one Spark task per work item and collect their small summary rows.

``spark.range(n, numPartitions=n)`` gives each task exactly one index; ``mapInArrow`` calls a
plain Python function with it inside the executor. Only the summaries (counts, timings,
histograms) travel back to the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

_ARROW = {"long": pa.int64(), "string": pa.string(), "int": pa.int32(), "double": pa.float64(),
          "binary": pa.binary()}


def run_indexed_tasks(spark: Any, n: int, task: Callable[[int], dict],
                      fields: tuple[tuple[str, str], ...]) -> list[dict]:
    """Run ``task(i)`` for i in 0..n-1, one Spark task each; return the rows sorted by index.

    Args:
        spark: the SparkSession.
        n: number of tasks.
        task: picklable function of the task index returning one row (a dict over ``fields``,
            which must include ``task_id``).
        fields: (name, Spark DDL type) of the summary row.
    """
    if n == 0:
        return []
    schema = pa.schema([(name, _ARROW[kind]) for name, kind in fields])
    ddl = ", ".join(f"{name} {kind}" for name, kind in fields)

    def run_partition(batches):
        for batch in batches:
            for task_id in batch.column(0).to_pylist():
                yield pa.RecordBatch.from_pylist([task(task_id)], schema=schema)

    rows = spark.range(0, n, 1, numPartitions=n).mapInArrow(run_partition, ddl).collect()
    return sorted((r.asDict() for r in rows), key=lambda r: r["task_id"])
