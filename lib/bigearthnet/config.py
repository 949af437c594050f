"""Job configuration: one pydantic model per job, unknown keys rejected.

A config is resolved from (lowest to highest precedence) the model defaults, a YAML file
(``--config``) and command-line options, and the resolved config is saved next to every output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bigearthnet.errors import ConfigError
from bigearthnet.quality import QualityConfig

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for all config models: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SparkConfig(StrictModel):
    """Where and how Spark runs."""

    master: str | None = Field(
        None,
        description="Spark master URL (local[N], spark://host:7077, …); default: the one "
        "spark-submit or Databricks set, else local[*]",
    )
    app_name: str = "bigearthnet"
    driver_memory: str = "2g"
    executor_memory: str | None = Field(None, description="only used on clusters")
    extra_conf: dict[str, str] = Field(default_factory=dict, description="passed to SparkConf")


class BuildConfig(StrictModel):
    """Configuration of ``bigearthnet build``."""

    products: str = Field(..., description="folder of SAFE dirs/zips or STAC items with COGs")
    clc: str | None = Field(None, description="CORINE Land Cover 2018 GeoPackage (EPSG:3035)")
    out: str = Field(..., description="dataset folder to create")
    overwrite: bool = False
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="fail: abort on the first bad product; skip: build the rest, list failures"
    )
    strip_rows: int = Field(
        8, ge=1, le=91, description="patch rows read per raster window; one Parquet row group each"
    )
    gdal_threads: int = Field(1, ge=1, description="GDAL_NUM_THREADS inside each task")
    gdal_cache_mb: int = Field(512, ge=16, description="GDAL block cache per task (MB)")
    compression: Literal["zstd", "snappy", "none"] = Field(
        "zstd", description="Parquet codec of the scalar columns"
    )
    tensor_compression: Literal["none", "zstd", "snappy"] = Field(
        "none", description="codec of the pixel tensor columns (none: fastest loading)"
    )
    # Labels (used when `clc` is given).
    label_rule: Literal["v1", "reben"] = Field(
        "v1", description="v1: CLC classes with intersection area > min_area_m2 (paper, 43 classes); "
        "reben: rasterized at 10 m, pixel-centre rule, 19 classes"
    )
    min_area_m2: float = Field(0.0, ge=0.0, description="v1 rule: minimum intersection area")
    max_unlabeled_fraction: float = Field(
        0.25, ge=0.0, le=1.0, description="reben rule: drop a patch at this unlabeled fraction or more"
    )
    reference_maps: bool = Field(True, description="store the 120x120 CLC code map per patch")
    quality: QualityConfig = Field(default_factory=QualityConfig)
    exclude_lists: list[str] = Field(
        default_factory=list, description="headerless CSVs of v1 names to drop (official snow/cloud lists)"
    )
    split: Literal["random", "reben", "official"] = "random"
    split_seed: int = 0
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    official_splits: str | None = Field(
        None, description="folder with train.csv, val.csv, test.csv (or .csv.bz2) of v1 names"
    )
    countries: dict[str, str] = Field(
        default_factory=dict, description="tile id or product id -> country (else the products table)"
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown config key '{loc}'")
        else:
            lines.append(f"'{loc}': {err['msg']}")
    return f"invalid configuration in {source}: " + "; ".join(lines) + ". Fix or remove these keys."


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; ConfigError if missing or not a mapping."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve(model: type[M], config_file: str | Path | None, overrides: dict[str, Any]) -> M:
    """Build a config from defaults < YAML file < explicit overrides (None values ignored).

    Raises:
        ConfigError: unknown key or invalid value, naming the file.
    """
    data: dict[str, Any] = load_yaml(config_file) if config_file else {}
    clean = {k: v for k, v in overrides.items() if v is not None}
    data = _deep_merge(data, clean)
    source = str(config_file) if config_file else "command-line options"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
