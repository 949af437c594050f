"""Spark session builder: embedded local Spark by default, any master on request.

Sets ``PYSPARK_PYTHON`` to this interpreter wherever Spark starts, so executors import the same
environment (otherwise workers pick the system python: «No module named pyarrow»).

Every session it starts carries Apache Sedona (the pinned jars, the SQL extensions and Kryo with
Sedona's registrator, :func:`bigearthnet.spark.sedona.sedona_spark_conf`) when the jars are
installed (``make setup``); without them it starts plain Spark with a warning, and only the
``sedona-spark`` label engine fails, with :class:`~bigearthnet.spark.sedona.SedonaJarsMissingError`.
Likewise it carries Delta Lake (:func:`bigearthnet.spark.delta.delta_spark_conf`) when its jars
are installed, so the Delta tables of ``build --delta`` can be read and registered.
pyspark launches the JVM with these settings, so the jars are on its class path. Under
spark-submit the JVM exists before Python runs: the jars and settings must come with the
submission (README), and a session without them is an error only where Sedona is required.
"""

from __future__ import annotations

import logging
import os
import sys

from bigearthnet.config import SparkConfig
from bigearthnet.spark.delta import DeltaJarsMissingError, delta_spark_conf, merge_spark_conf
from bigearthnet.spark.sedona import SQL_EXTENSIONS, SedonaJarsMissingError, sedona_spark_conf

log = logging.getLogger(__name__)

QUICK_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
"""Driver JVM options of local sessions with ``quick_jvm`` (C1-only JIT)."""


def python_env() -> dict[str, str]:
    """Environment for Spark processes: the current interpreter for driver and workers."""
    return {
        "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
        "PYSPARK_DRIVER_PYTHON": os.environ.get("PYSPARK_DRIVER_PYTHON", sys.executable),
    }


def has_sedona(spark) -> bool:
    """The session was started with Sedona's SQL extensions."""
    return SQL_EXTENSIONS in (spark.conf.get("spark.sql.extensions", "") or "")


def get_session(cfg: SparkConfig | None = None, master: str | None = None,
                require_sedona: bool = False):
    """Return the active SparkSession, or start one.

    Precedence of the master URL: ``master`` argument, then a master already set by
    ``spark-submit`` / Databricks, then ``cfg.master``.

    Args:
        cfg: Spark settings.
        master: an explicit master URL (restarts an active session on another master).
        require_sedona: the caller runs Sedona-Spark SQL: a session without Sedona is an error
            when it was not started here (spark-submit, Databricks), restarted otherwise.

    Raises:
        SedonaJarsMissingError: ``require_sedona`` and the jars are not installed, or the
            session came from outside without them.
    """
    os.environ.update(python_env())
    from pyspark.sql import SparkSession

    cfg = cfg or SparkConfig()
    wanted = master or cfg.master
    # Under spark-submit the JVM is up before Python starts and holds the submitted master and
    # class path: Sedona must come with the submission (--jars and --conf, see README).
    launched_by_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    active = SparkSession.getActiveSession()
    if active is not None:
        current = active.sparkContext.master
        if wanted is None or wanted == current:
            if not require_sedona or has_sedona(active):
                return active
            if launched_by_submit:
                raise SedonaJarsMissingError(_SUBMIT_HINT)
            log.warning("restarting the Spark session to load the Sedona jars")
            active.stop()
        else:
            # An explicit, different master: the user asked for it, so restart on it.
            log.warning("stopping the active Spark session on %s to start one on %s", current,
                        wanted)
            active.stop()
    builder = SparkSession.builder.appName(cfg.app_name)
    chosen = master or cfg.master or (None if launched_by_submit else "local[*]")
    if chosen:
        builder = builder.master(chosen)
    conf = session_conf(cfg, chosen, require_sedona, launched_by_submit)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if require_sedona and not has_sedona(spark):
        raise SedonaJarsMissingError(_SUBMIT_HINT)
    return spark


def session_conf(cfg: SparkConfig, master: str | None, require_sedona: bool,
                 launched_by_submit: bool) -> dict[str, str]:
    """The Spark settings :func:`get_session` starts a session with.

    Raises:
        SedonaJarsMissingError: ``require_sedona`` and the jars are not installed.
    """
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
    if cfg.quick_jvm and not require_sedona and str(master).startswith("local"):
        # Measured (bench/results/session.json): C2 compilation is half of a local session's
        # start-up CPU; our local jobs do their work in Python workers, not in JVM hot loops.
        conf["spark.driver.extraJavaOptions"] = QUICK_JVM_OPTIONS
    if not launched_by_submit:  # pyspark launches the JVM with these (class path included)
        try:
            conf.update(sedona_spark_conf())
        except SedonaJarsMissingError:
            if require_sedona:
                raise
            log.warning("Apache Sedona jars are not installed (make setup); starting Spark "
                        "without Sedona: the sedona-spark label engine is unavailable")
        try:  # Delta Lake, to read the tables of `build --delta` (bigearthnet.spark.delta)
            conf = merge_spark_conf(conf, delta_spark_conf())
        except DeltaJarsMissingError:
            log.info("Delta Lake jars are not installed (make setup); starting Spark without "
                     "Delta: Spark cannot read the datasets' Delta tables")
    conf.update(cfg.extra_conf)
    return conf


_SUBMIT_HINT = (
    "the Spark session was started without Apache Sedona; submit with --jars <the Sedona jars> "
    f"--conf spark.sql.extensions={SQL_EXTENSIONS} --conf spark.serializer="
    "org.apache.spark.serializer.KryoSerializer --conf spark.kryo.registrator="
    "org.apache.sedona.core.serde.SedonaKryoRegistrator (scripts/fetch_sedona_jars.sh "
    "--print-jars prints the jar list; see README, Running on a cluster)"
)
