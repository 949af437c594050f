"""Apache Sedona on Spark: pinned jars, session conf, CLC reader and the patch x CLC join.

This is the distributed counterpart of :mod:`bigearthnet.labeling.sedona` (the embedded SedonaDB
engine, one tile per task): the same labeling join written as one Sedona-Spark SQL plan over
any number of tiles.

Jars. The Sedona jars are pinned, with their SHA-256, in ``conf/sedona-jars.lock`` (one line per
jar: ``group:artifact:version sha256 filename``), which is the single source of the versions.
``scripts/fetch_sedona_jars.sh`` downloads and verifies them into
``${BIGEARTHNET_CACHE:-~/.cache/bigearthnet}/jars/sedona-<version>/``. An installed wheel has no
lock file next to it, so :func:`sedona_jar_paths` also takes ``BIGEARTHNET_SEDONA_JARS`` (a
folder, or a comma-separated list of jars). The Python package ``apache-sedona`` is not needed:
the SQL functions come from ``spark.sql.extensions``. Without it, though, Python cannot parse a
schema that holds a ``geometry`` column (``df.schema``, ``df.dtypes``, ``collect()`` of
geometries fail with «No module named 'sedona'»), so this module inspects schemas on the JVM side
and only ever returns geometries inside DataFrames.

Reprojection. Sedona-Spark 1.8's ``ST_Transform`` (GeoTools) differs from PROJ, which SedonaDB
uses: it changes the ellipsoid between ETRS89 and WGS 84 (up to 5 mm between EPSG:3035 and a UTM
zone) and its inverse LAEA is up to 0.7 mm off PROJ 9.5 (measured on 500 points over Europe),
enough to move CLC areas in a patch by ~1 m². The label engine
(:mod:`bigearthnet.spark.sedona_labels`) therefore reprojects with the SedonaDB engine's own code
inside an Arrow UDF and uses Sedona-Spark for what it is for: reading, and the spatial joins.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from bigearthnet.clc.nomenclature import KNOWN_CODES
from bigearthnet.errors import (
    BigEarthNetError,
    ClcReadError,
    ClcSchemaError,
    InputNotFoundError,
    UnknownClcCodeError,
    register,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

JARS_ENV = "BIGEARTHNET_SEDONA_JARS"
"""Environment variable: a folder holding the Sedona jars, or a comma-separated list of jars."""

CACHE_ENV = "BIGEARTHNET_CACHE"
"""Environment variable: the cache root (default ``~/.cache/bigearthnet``)."""

LOCK_FILE = Path("conf") / "sedona-jars.lock"
"""The lock file, relative to the repository root."""

SQL_EXTENSIONS = "org.apache.sedona.sql.SedonaSqlExtensions"
KRYO_SERIALIZER = "org.apache.spark.serializer.KryoSerializer"
KRYO_REGISTRATOR = "org.apache.sedona.core.serde.SedonaKryoRegistrator"

CLC_EPSG = 3035
"""The CRS of the CORINE Land Cover 2018 vector product (ETRS89-extended / LAEA Europe)."""

CODE_COLUMN = "Code_18"
"""Attribute holding the CLC 2018 Level-3 code (as in :mod:`bigearthnet.clc.reader`)."""

_SHADED = re.compile(r"^sedona-spark-shaded-(?P<spark>\d+\.\d+)_(?P<scala>\d+\.\d+)-.+\.jar$")
_POLYGONAL_TYPES = "('ST_Polygon', 'ST_MultiPolygon')"


@register
class SedonaJarsMissingError(BigEarthNetError, FileNotFoundError):
    """No usable Apache Sedona jars for Spark: not fetched, not found, or not for this Spark."""


@register
class SedonaVersionMismatchError(SedonaJarsMissingError):
    """The Sedona jars found are built for another Spark line than the installed pyspark."""


@dataclass(frozen=True)
class PinnedJar:
    """One line of ``conf/sedona-jars.lock``.

    Attributes:
        group: Maven group id (``org.apache.sedona``).
        artifact: Maven artifact id (``sedona-spark-shaded-4.0_2.13``).
        version: Maven version (``1.8.0``).
        sha256: the jar's SHA-256, lowercase hex.
        filename: the jar's file name (``<artifact>-<version>.jar``).
    """

    group: str
    artifact: str
    version: str
    sha256: str
    filename: str

    @property
    def coordinate(self) -> str:
        """``group:artifact:version``, as ``spark-submit --packages`` takes it."""
        return f"{self.group}:{self.artifact}:{self.version}"


def _install_hint(jars: Sequence[PinnedJar] | None = None) -> str:
    if jars is None:  # name the pinned coordinates when a lock is at hand
        try:
            jars = read_lock()
        except (SedonaJarsMissingError, ValueError, OSError):
            jars = []
    packages = ",".join(j.coordinate for j in jars) or (
        "org.apache.sedona:sedona-spark-shaded-<spark>_2.13:<v>,"
        "org.datasyslab:geotools-wrapper:<v>-<geotools>"
    )
    return (
        "Install them with `make setup` or `scripts/fetch_sedona_jars.sh` (verified download "
        "into ~/.cache/bigearthnet/jars/), or point "
        f"{JARS_ENV} at a folder or a comma-separated list of the jars, or let Spark fetch them: "
        f"spark-submit --packages {packages}"
    )


def repo_lock_path() -> Path | None:
    """``conf/sedona-jars.lock`` of the source checkout this module runs from, if any.

    Returns:
        The path, or ``None`` when the package runs from an installed wheel (no lock next to it).
    """
    root = Path(__file__).resolve().parents[3]  # lib/bigearthnet/spark/sedona.py -> repo root
    path = root / LOCK_FILE
    return path if path.is_file() else None


def read_lock(path: str | os.PathLike[str] | None = None) -> list[PinnedJar]:
    """Parse a Sedona jar lock file.

    Args:
        path: the lock file; default: :func:`repo_lock_path`.

    Returns:
        The pinned jars in file order.

    Raises:
        SedonaJarsMissingError: no lock file is given or found, or it pins no Sedona jar.
        ValueError: a line is malformed (file and line number in the message).
    """
    lock = Path(path) if path is not None else repo_lock_path()
    if lock is None or not lock.is_file():
        raise SedonaJarsMissingError(
            f"no Sedona jar lock file ({lock or LOCK_FILE}) and {JARS_ENV} is not set. "
            + _install_hint([])
        )
    jars: list[PinnedJar] = []
    for n, raw in enumerate(lock.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        coord = parts[0].split(":")
        if len(parts) != 3 or len(coord) != 3 or not re.fullmatch(r"[0-9a-f]{64}", parts[1]):
            raise ValueError(
                f"{lock}:{n}: malformed line {raw!r}; want 'group:artifact:version sha256 filename'"
            )
        group, artifact, version = coord
        if parts[2] != f"{artifact}-{version}.jar":
            raise ValueError(f"{lock}:{n}: file name {parts[2]!r} does not match {parts[0]}")
        jars.append(PinnedJar(group, artifact, version, parts[1], parts[2]))
    if not any(j.group == "org.apache.sedona" for j in jars):
        raise SedonaJarsMissingError(f"{lock} pins no org.apache.sedona jar. " + _install_hint([]))
    return jars


def sedona_version(jars: Sequence[PinnedJar] | None = None) -> str:
    """The pinned Apache Sedona version (``1.8.0``).

    Args:
        jars: pinned jars; default: :func:`read_lock`.
    """
    jars = read_lock() if jars is None else jars
    return next(j.version for j in jars if j.group == "org.apache.sedona")


def geotools_wrapper_version(jars: Sequence[PinnedJar] | None = None) -> str | None:
    """The pinned ``org.datasyslab:geotools-wrapper`` version (``1.8.0-33.1``), if any.

    Args:
        jars: pinned jars; default: :func:`read_lock`.
    """
    jars = read_lock() if jars is None else jars
    return next((j.version for j in jars if j.artifact == "geotools-wrapper"), None)


def default_jar_dir(version: str) -> Path:
    """Where ``scripts/fetch_sedona_jars.sh`` puts the jars of one Sedona version.

    Args:
        version: the Sedona version.
    """
    cache = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "bigearthnet")
    return Path(cache) / "jars" / f"sedona-{version}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sedona_jar_paths(*, verify: bool = False) -> list[Path]:
    """The Sedona jars to put on Spark's classpath.

    ``BIGEARTHNET_SEDONA_JARS`` wins when set (a folder: every ``*.jar`` in it; or a
    comma-separated list of jar files). Otherwise the jars pinned in the repository's
    ``conf/sedona-jars.lock`` are looked up in :func:`default_jar_dir`.

    Args:
        verify: also check each pinned jar's SHA-256 against the lock (reads ~100 MB).

    Returns:
        Absolute jar paths.

    Raises:
        SedonaJarsMissingError: no jar is configured, a configured jar does not exist, the
            folder holds no Sedona jar, or (``verify``) a checksum differs; the message says how
            to install them.
    """
    env = os.environ.get(JARS_ENV, "").strip()
    if env:
        entries = [Path(e.strip()).expanduser() for e in env.split(",") if e.strip()]
        if len(entries) == 1 and entries[0].is_dir():
            paths = sorted(p.resolve() for p in entries[0].glob("*.jar"))
            where = f"folder {entries[0]}"
        else:
            missing = [str(p) for p in entries if not p.is_file()]
            if missing:
                raise SedonaJarsMissingError(
                    f"{JARS_ENV} names jar(s) that do not exist: {missing}. " + _install_hint()
                )
            paths = [p.resolve() for p in entries]
            where = f"{JARS_ENV}={env}"
        if not any(p.name.startswith("sedona-spark") for p in paths):
            raise SedonaJarsMissingError(
                f"no sedona-spark*.jar in {where} ({JARS_ENV}). " + _install_hint()
            )
        return paths
    jars = read_lock()
    folder = default_jar_dir(sedona_version(jars))
    paths = [folder / j.filename for j in jars]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise SedonaJarsMissingError(
            f"Sedona jars {missing} are not in {folder}. " + _install_hint(jars)
        )
    if verify:
        for jar, path in zip(jars, paths, strict=True):
            got = _sha256(path)
            if got != jar.sha256:
                raise SedonaJarsMissingError(
                    f"{path} has SHA-256 {got}, but the lock pins {jar.sha256}; delete it and "
                    "run scripts/fetch_sedona_jars.sh again"
                )
    return paths


def jar_spark_line(paths: Sequence[Path]) -> str | None:
    """The Spark line (``"4.0"``) a set of Sedona jars is built for, from the shaded jar's name.

    Args:
        paths: jar paths.

    Returns:
        ``"<major>.<minor>"``, or ``None`` when no ``sedona-spark-shaded-<x.y>_<scala>`` jar is
        among them (then nothing is checked).
    """
    for path in paths:
        match = _SHADED.match(Path(path).name)
        if match:
            return match["spark"]
    return None


def sedona_spark_conf(
    jars: Sequence[Path] | None = None, spark_version: str | None = None
) -> dict[str, str]:
    """Spark settings that load Apache Sedona into a new session.

    Pass each item to ``SparkSession.builder.config(key, value)`` before ``getOrCreate()`` (or
    to ``spark-submit --conf``); they cannot be added to a running session.

    Args:
        jars: the jars; default: :func:`sedona_jar_paths`.
        spark_version: the Spark version the session will run (default: the installed
            ``pyspark.__version__``), checked against the jars' Spark line.

    Returns:
        ``spark.jars``, ``spark.sql.extensions``, ``spark.serializer`` and
        ``spark.kryo.registrator``.

    Raises:
        SedonaJarsMissingError: no jars (see :func:`sedona_jar_paths`).
        SedonaVersionMismatchError: the jars are built for another Spark ``major.minor``.
    """
    paths = list(jars) if jars is not None else sedona_jar_paths()
    if spark_version is None:
        import pyspark

        spark_version = pyspark.__version__
    line = jar_spark_line(paths)
    running = ".".join(spark_version.split(".")[:2])
    if line is not None and line != running:
        raise SedonaVersionMismatchError(
            f"the Sedona jars {[Path(p).name for p in paths]} are built for Spark {line}, but "
            f"pyspark is {spark_version}; Sedona's Spark {line} build does not load on Spark "
            f"{running} (e.g. NoClassDefFoundError in Catalog). Pin "
            f"org.apache.sedona:sedona-spark-shaded-{running}_2.13 and its geotools-wrapper in "
            "conf/sedona-jars.lock and fetch them again (scripts/fetch_sedona_jars.sh)"
        )
    return {
        "spark.jars": ",".join(str(p) for p in paths),
        "spark.sql.extensions": SQL_EXTENSIONS,
        "spark.serializer": KRYO_SERIALIZER,
        "spark.kryo.registrator": KRYO_REGISTRATOR,
    }


# --- CORINE Land Cover through Sedona's GeoPackage reader ------------------------------------


class SparkClc(NamedTuple):
    """What :func:`clc_dataframe` returns.

    Attributes:
        df: columns ``code`` (int) and ``geom`` (geometry, EPSG:3035), lazily evaluated.
        stats: ``{"read": polygons in the extent, "invalid_repaired": invalid polygons
            repaired with ``ST_MakeValid``, "dropped_empty": polygons with no area left,
            "kept": rows of df}``, like :func:`bigearthnet.clc.reader.read_clc_bbox`'s stats.
    """

    df: DataFrame
    stats: dict[str, int]


def _jvm_fields(df: DataFrame) -> dict[str, str]:
    """Column name -> Spark type name, read on the JVM side (Python cannot parse geometry UDTs
    without the ``apache-sedona`` package)."""
    return {f.name(): f.dataType().typeName() for f in df._jdf.schema().fields()}


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file:")


def _features_tables(spark: SparkSession, path: str) -> dict[str, int | None]:
    """Features tables of a GeoPackage (``gpkg_contents`` order) -> their ``srs_id``."""
    meta = spark.read.format("geopackage").option("showMetadata", "true").load(path)
    rows = meta.where("data_type = 'features'").select("table_name", "srs_id").collect()
    return {r["table_name"]: r["srs_id"] for r in rows}


def clc_dataframe(
    spark: SparkSession,
    gpkg_path: str | os.PathLike[str],
    extent_3035: tuple[float, float, float, float] | None = None,
    *,
    layer: str | None = None,
    code_column: str = CODE_COLUMN,
    as_read: bool = False,
) -> SparkClc:
    """CORINE Land Cover polygons as a Sedona DataFrame (``code`` int, ``geom`` in EPSG:3035).

    Mirrors :func:`bigearthnet.clc.reader.read_clc_bbox`: the same named errors for a missing
    file, an unreadable file, a missing ``Code_18`` column and null / non-numeric / unknown
    codes; invalid or non-polygonal geometries are repaired (``ST_MakeValid``, keeping the
    polygonal parts) and counted, and polygons with no area left are dropped. Validation runs
    one Spark job over the polygons in the extent; the returned DataFrame is lazy (cache it
    when it is used more than once).

    Sedona 1.8's GeoPackage reader reads a file in one partition and does not push the extent
    down to the R-tree: every read scans the whole layer in one task (fine for a tile's worth,
    slow for the 2.3 M-polygon European layer, which is better converted once to GeoParquet).

    Args:
        spark: a session started with :func:`sedona_spark_conf`.
        gpkg_path: the CLC 2018 GeoPackage (a local path or any URI Spark reads).
        extent_3035: ``(minx, miny, maxx, maxy)`` in EPSG:3035; when given, only polygons that
            intersect (or touch) this box are kept.
        layer: the features table; default: the first one, as GDAL/pyogrio pick it.
        code_column: attribute holding the Level-3 code.
        as_read: return the polygons as read (``fid``, ``code``, ``geom``; validated codes, no
            repair), for engines that repair per tile exactly as the SedonaDB engine does.

    Returns:
        :class:`SparkClc` ``(df, stats)``.

    Raises:
        InputNotFoundError: a local ``gpkg_path`` does not exist.
        ClcReadError: the file cannot be opened or read as a GeoPackage.
        ClcSchemaError: no features table, no ``code_column``, no geometry column, a code column
            that is neither string nor integer, or a CRS other than EPSG:3035.
        UnknownClcCodeError: a code is null, non-numeric or not a CLC 2018 code.
    """
    path = os.fspath(gpkg_path)
    if _is_local(path) and not Path(path.removeprefix("file:")).exists():
        raise InputNotFoundError(
            f"CORINE Land Cover file {path} does not exist; check the --clc path: pass the "
            "CLC 2018 GeoPackage (e.g. U2018_CLC2018_V2020_20u1.gpkg) or generate a synthetic one"
        )
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    read_errors = (Py4JJavaError, PySparkException)
    try:
        tables = _features_tables(spark, path)
    except read_errors as exc:
        raise ClcReadError(f"{path}: cannot open CLC layer {layer!r}: {exc}. The file is damaged "
                           "or not a GeoPackage: re-download the CLC 2018 GeoPackage, or fix --clc"
                           ) from exc
    if not tables:
        raise ClcSchemaError(f"{path}: the GeoPackage holds no features table (CLC layer)")
    table = layer or next(iter(tables))
    if table not in tables:
        raise ClcReadError(
            f"{path}: cannot open CLC layer {layer!r}: no such features table "
            f"(tables: {list(tables)})"
        )
    srs_id = tables[table]
    try:
        raw = spark.read.format("geopackage").option("tableName", table).load(path)
        fields = _jvm_fields(raw)
    except read_errors as exc:
        raise ClcReadError(f"{path}: cannot open CLC layer {table!r}: {exc}") from exc
    if code_column not in fields:
        names = [f for f, t in fields.items() if t != "geometry"]
        raise ClcSchemaError(
            f"{path}: CLC layer {table!r} has no {code_column!r} column (columns: {names}); "
            "expected the CLC 2018 vector with its Level-3 code attribute"
        )
    geom_cols = [f for f, t in fields.items() if t == "geometry"]
    if not geom_cols:
        raise ClcSchemaError(f"{path}: the CLC layer {table!r} has no geometry column")
    if srs_id not in (None, 0, CLC_EPSG):
        raise ClcSchemaError(f"{path}: CLC layer {table!r} has srs_id {srs_id}; expected EPSG:3035")
    code_type = fields[code_column]
    if code_type == "string":
        code_raw = f"trim(`{code_column}`)"
        code_ok = "code_raw RLIKE '^[0-9]+$'"
    elif code_type in ("byte", "short", "integer", "long"):
        code_raw = f"CAST(`{code_column}` AS STRING)"
        code_ok = "TRUE"
    else:
        raise ClcSchemaError(
            f"{path}: column {code_column} has type {code_type}; expected string or integer "
            "CLC codes"
        )

    fid = "fid" if "fid" in fields else "monotonically_increasing_id() AS fid"
    df = raw.selectExpr(fid, f"{code_raw} AS code_raw", f"`{geom_cols[0]}` AS geom0")
    if extent_3035 is not None:
        minx, miny, maxx, maxy = (float(v) for v in extent_3035)
        if not (minx < maxx and miny < maxy):
            raise ValueError(f"clc_dataframe: empty extent {extent_3035}")
        df = df.where(
            f"ST_Intersects(geom0, ST_PolygonFromEnvelope({minx!r}, {miny!r}, {maxx!r}, {maxy!r}))"
        )
    needs_fix = (
        f"(geom0 IS NOT NULL AND (NOT ST_IsValid(geom0) "
        f"OR ST_GeometryType(geom0) NOT IN {_POLYGONAL_TYPES}))"
    )
    fixed = (
        f"CASE WHEN {needs_fix} THEN ST_CollectionExtract(ST_MakeValid(geom0), 3) ELSE geom0 END"
    )
    df = df.selectExpr(
        "fid",
        "geom0",
        "code_raw",
        f"({code_ok}) AS code_ok",
        "(geom0 IS NOT NULL AND NOT ST_IsValid(geom0)) AS invalid",
        f"{fixed} AS geom",
    ).selectExpr(
        "fid",
        "geom0",
        "code_raw",
        "code_ok",
        "invalid",
        "geom",
        "(geom IS NOT NULL AND NOT ST_IsEmpty(geom) AND ST_Area(geom) > 0) AS keep",
    )
    try:
        agg = df.selectExpr(
            "count(1) AS n",
            "count_if(code_raw IS NULL) AS n_null",
            "slice(array_sort(collect_set(CASE WHEN NOT code_ok THEN code_raw END)), 1, 5) AS bad",
            "array_sort(collect_set(CASE WHEN code_ok THEN CAST(code_raw AS BIGINT) END)) AS codes",
            "count_if(invalid) AS n_invalid",
            "count_if(NOT keep) AS n_dropped",
            "array_sort(collect_set(ST_SRID(geom))) AS srids",
        ).collect()[0]
    except read_errors as exc:
        raise ClcReadError(f"{path}: cannot read CLC polygons of layer {table!r}: {exc}") from exc
    if agg["n_null"]:
        raise UnknownClcCodeError(
            f"{path}: {agg['n_null']} polygon(s) have no {code_column} value; every CLC "
            "polygon needs a Level-3 code (999 marks NODATA)"
        )
    if agg["bad"]:
        raise UnknownClcCodeError(
            f"{path}: {code_column} holds non-numeric CLC code(s) {agg['bad']}; expected "
            "three-digit CLC 2018 Level-3 codes such as '311'"
        )
    unknown = [int(c) for c in agg["codes"] if int(c) not in KNOWN_CODES]
    if unknown:
        raise UnknownClcCodeError(
            f"{path}: unknown CLC code(s) {unknown[:10]} in {code_column}; valid codes are the 44 "
            "CLC 2018 Level-3 codes (111..523) and 999 (NODATA)"
        )
    srids = [s for s in agg["srids"] if s not in (None, 0)]
    if any(s != CLC_EPSG for s in srids):
        raise ClcSchemaError(f"{path}: CLC layer {table!r} has SRID(s) {srids}; expected EPSG:3035")
    if as_read:
        return SparkClc(df.selectExpr("fid", "CAST(code_raw AS INT) AS code", "geom0 AS geom"),
                        {"read": int(agg["n"])})
    out = df.where("keep").selectExpr("CAST(code_raw AS INT) AS code", "geom")
    n_dropped = int(agg["n_dropped"])
    stats = {
        "read": int(agg["n"]),
        "invalid_repaired": int(agg["n_invalid"]),
        "dropped_empty": n_dropped,
        "kept": int(agg["n"]) - n_dropped,
    }
    return SparkClc(out, stats)
