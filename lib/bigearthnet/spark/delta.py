"""Delta Lake on Spark: the pinned jars, the session conf, and reading a dataset's Delta tables.

``bigearthnet build --delta`` commits the dataset's ``patches/`` and metadata as Delta tables
over the same Parquet files (:mod:`bigearthnet.dataset.delta`, written with the ``deltalake``
package, no JVM). Reading them with Spark needs Delta's jars, SQL extension and catalog:

* locally, every session :func:`bigearthnet.spark.session.get_session` starts carries them when
  the jars are installed (``make setup`` runs ``scripts/fetch_delta_jars.sh``, which downloads
  the versions pinned in ``conf/delta-jars.lock`` into
  ``${BIGEARTHNET_CACHE:-~/.cache/bigearthnet}/jars/delta-<version>/``, checking SHA-1 and
  SHA-256); ``BIGEARTHNET_DELTA_JARS`` (a folder or a comma-separated list of jars) overrides;
* on Databricks the runtime ships Delta: nothing to install.

Delta 4.0.x is the line built for Spark 4.0 (pyspark 4.0.5) and Scala 2.13.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from bigearthnet.errors import BigEarthNetError, InputNotFoundError, register

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

JARS_ENV = "BIGEARTHNET_DELTA_JARS"
"""Environment variable: a folder holding the Delta jars, or a comma-separated list of jars."""

LOCK_FILE = Path("conf") / "delta-jars.lock"
"""The lock file, relative to the repository root."""

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"

_LINE = re.compile(r"^(?P<group>[^:\s]+):(?P<artifact>[^:\s]+):(?P<version>[^:\s]+)\s+"
                   r"(?P<sha256>[0-9a-f]{64})\s+(?P<file>\S+\.jar)$")


@register
class DeltaJarsMissingError(BigEarthNetError, FileNotFoundError):
    """Spark cannot read Delta tables: the Delta jars are not installed, or the session was
    started without them."""


_HINT = (
    "Install them with `make setup` or `scripts/fetch_delta_jars.sh` (verified download into "
    f"~/.cache/bigearthnet/jars/), or point {JARS_ENV} at a folder or a comma-separated list of "
    "the jars; under spark-submit pass --packages io.delta:delta-spark_2.13:4.0.1 --conf "
    f"spark.sql.extensions={DELTA_EXTENSION} --conf spark.sql.catalog.spark_catalog={DELTA_CATALOG}"
    " (on Databricks Delta is built in)"
)


def _lock_path() -> Path | None:
    root = Path(__file__).resolve().parents[3]  # lib/bigearthnet/spark/delta.py -> repo root
    path = root / LOCK_FILE
    return path if path.is_file() else None


def read_delta_lock(path: str | os.PathLike[str] | None = None) -> list[tuple[str, str, str]]:
    """The pinned jars of ``conf/delta-jars.lock``: ``(coordinate, sha256, filename)`` each.

    Raises:
        DeltaJarsMissingError: no lock file (an installed wheel has none: set the env variable).
        ValueError: a malformed line (file and line number in the message).
    """
    lock = Path(path) if path is not None else _lock_path()
    if lock is None or not lock.is_file():
        raise DeltaJarsMissingError(f"no Delta jar lock file ({lock or LOCK_FILE}). " + _HINT)
    jars = []
    for n, raw in enumerate(lock.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _LINE.match(line)
        if m is None or m["file"] != f"{m['artifact']}-{m['version']}.jar":
            raise ValueError(f"{lock}:{n}: malformed line {raw!r}; want "
                             "'group:artifact:version sha256 artifact-version.jar'")
        jars.append((f"{m['group']}:{m['artifact']}:{m['version']}", m["sha256"], m["file"]))
    if not any(c.startswith("io.delta:delta-spark") for c, _, _ in jars):
        raise DeltaJarsMissingError(f"{lock} pins no io.delta:delta-spark jar. " + _HINT)
    return jars


def delta_version(jars: list[tuple[str, str, str]] | None = None) -> str:
    """The pinned Delta version (``4.0.1``)."""
    jars = read_delta_lock() if jars is None else jars
    return next(c.rsplit(":", 1)[1] for c, _, _ in jars if c.startswith("io.delta:"))


def delta_jar_paths() -> list[Path]:
    """The Delta jars to put on Spark's class path (``BIGEARTHNET_DELTA_JARS`` wins when set).

    Raises:
        DeltaJarsMissingError: none configured, or a pinned jar is not installed.
    """
    env = os.environ.get(JARS_ENV, "").strip()
    if env:
        entries = [Path(e.strip()).expanduser() for e in env.split(",") if e.strip()]
        if len(entries) == 1 and entries[0].is_dir():
            paths = sorted(p.resolve() for p in entries[0].glob("*.jar"))
        else:
            missing = [str(p) for p in entries if not p.is_file()]
            if missing:
                raise DeltaJarsMissingError(f"{JARS_ENV} names jar(s) that do not exist: "
                                            f"{missing}. " + _HINT)
            paths = [p.resolve() for p in entries]
        if not any(p.name.startswith("delta-spark") for p in paths):
            raise DeltaJarsMissingError(f"no delta-spark*.jar in {env} ({JARS_ENV}). " + _HINT)
        return paths
    jars = read_delta_lock()
    cache = os.environ.get("BIGEARTHNET_CACHE") or str(Path.home() / ".cache" / "bigearthnet")
    folder = Path(cache) / "jars" / f"delta-{delta_version(jars)}"
    paths = [folder / name for _, _, name in jars]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DeltaJarsMissingError(f"Delta jars {missing} are not in {folder}. " + _HINT)
    return paths


def delta_spark_conf(jars: list[Path] | None = None) -> dict[str, str]:
    """Spark settings that load Delta Lake into a new session (``spark.jars``, the SQL
    extension and ``spark_catalog``); merge them with others by :func:`merge_spark_conf`.

    Raises:
        DeltaJarsMissingError: see :func:`delta_jar_paths`.
    """
    paths = list(jars) if jars is not None else delta_jar_paths()
    return {
        "spark.jars": ",".join(str(p) for p in paths),
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
    }


LIST_KEYS = ("spark.jars", "spark.sql.extensions")
"""Spark settings that hold comma-separated lists: merged, not replaced."""


def merge_spark_conf(conf: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """``conf`` updated with ``extra``; the list settings (:data:`LIST_KEYS`) are joined."""
    out = dict(conf)
    for key, value in extra.items():
        if key in LIST_KEYS and out.get(key):
            items = out[key].split(",")
            out[key] = ",".join(items + [v for v in value.split(",") if v not in items])
        else:
            out[key] = value
    return out


def has_delta(spark: SparkSession) -> bool:
    """The session was started with Delta's SQL extension (Databricks sessions always are)."""
    if "DATABRICKS_RUNTIME_VERSION" in os.environ:
        return True
    return DELTA_EXTENSION in (spark.conf.get("spark.sql.extensions", "") or "")


def read_delta(spark: SparkSession, table: str | os.PathLike[str]) -> DataFrame:
    """``spark.read.format("delta").load(table)``, with named errors.

    Args:
        spark: a session with Delta (see :func:`has_delta`).
        table: the table folder, e.g. ``DATASET/patches`` (see
            :func:`bigearthnet.dataset.delta.delta_tables`).

    Raises:
        DeltaJarsMissingError: the session has no Delta.
        InputNotFoundError: ``table`` holds no ``_delta_log`` (build with ``--delta``).
    """
    path = Path(table)
    if not (path / "_delta_log").is_dir() and "://" not in str(table):
        raise InputNotFoundError(
            f"{path} is not a Delta table (no _delta_log); build the dataset with --delta"
        )
    if not has_delta(spark):
        raise DeltaJarsMissingError("the Spark session was started without Delta Lake. " + _HINT)
    return spark.read.format("delta").load(str(table))
