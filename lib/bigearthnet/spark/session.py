"""Spark session builder: embedded local Spark by default, any master on request.

Sets ``PYSPARK_PYTHON`` to this interpreter wherever Spark starts, so executors import the same
environment (otherwise workers pick the system python: «No module named pyarrow»).
"""

from __future__ import annotations

import logging
import os
import sys

from bigearthnet.config import SparkConfig

log = logging.getLogger(__name__)


def python_env() -> dict[str, str]:
    """Environment for Spark processes: the current interpreter for driver and workers."""
    return {
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "PYSPARK_DRIVER_PYTHON": os.environ.get("PYSPARK_DRIVER_PYTHON", sys.executable),
    }


def get_session(cfg: SparkConfig | None = None, master: str | None = None):
    """Return the active SparkSession, or start one.

    Precedence of the master URL: ``master`` argument, then a master already set by
    ``spark-submit`` / Databricks, then ``cfg.master``.
    """
    os.environ.update(python_env())
    from pyspark.sql import SparkSession

    cfg = cfg or SparkConfig()
    wanted = master or cfg.master
    active = SparkSession.getActiveSession()
    if active is not None:
        current = active.sparkContext.master
        if wanted is None or wanted == current:
            return active
        # An explicit, different master: the user asked for it, so restart on it.
        log.warning("stopping the active Spark session on %s to start one on %s", current, wanted)
        active.stop()
    # Under spark-submit the JVM is up before Python starts and holds the submitted master.
    launched_by_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    builder = SparkSession.builder.appName(cfg.app_name)
    chosen = master or cfg.master or (None if launched_by_submit else "local[*]")
    if chosen:
        builder = builder.master(chosen)
    py = python_env()["PYSPARK_PYTHON"]
    conf = {
        "spark.driver.memory": cfg.driver_memory,
        "spark.pyspark.python": py,
        "spark.executorEnv.PYSPARK_PYTHON": py,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.python.worker.faulthandler.enabled": "true",
    }
    if cfg.executor_memory:
        conf["spark.executor.memory"] = cfg.executor_memory
    conf.update(cfg.extra_conf)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
