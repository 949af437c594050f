"""The configs of the dataset jobs: ``build`` and ``import-v1`` (and the Spark settings).

All derive from :class:`bigearthnet.configbase.StrictModel`; :func:`resolve` (re-exported from
there) merges defaults, a YAML file and command-line options.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from bigearthnet.configbase import StrictModel, load_yaml, resolve
from bigearthnet.constants import REBEN_MAX_UNLABELED_FRACTION
from bigearthnet.quality import QualityConfig


def _check_fractions(value: tuple[float, float, float]) -> tuple[float, float, float]:
    if any(not math.isfinite(f) or f < 0 for f in value) or not math.isclose(sum(value), 1.0,
                                                                               abs_tol=1e-9):
        raise ValueError(f"must be 3 non-negative fractions (train, validation, test) summing "
                         f"to 1, got {list(value)}")
    return value


SplitFractions = Annotated[tuple[float, float, float], AfterValidator(_check_fractions)]
"""(train, validation, test) fractions of a random split: finite, >= 0, summing to 1."""

__all__ = ["BuildConfig", "ExportConfig", "ImportConfig", "ImportV2Config", "SparkConfig", "StrictModel",
           "load_yaml", "resolve"]


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
    quick_jvm: bool = Field(
        True, description="local masters: start the driver JVM with C1-only JIT "
        "(-XX:TieredStopAtLevel=1), which halves its start-up CPU; not with the sedona-spark "
        "engine, whose joins run in the JVM, nor when extra_conf sets driver Java options"
    )


class BuildConfig(StrictModel):
    """Configuration of ``bigearthnet build``."""

    S3_FIELDS: ClassVar[frozenset[str]] = frozenset({"products", "clc", "out"})

    products: str = Field(..., description="folder of SAFE dirs/zips or STAC items with COGs")
    clc: str | None = Field(None, description="CORINE Land Cover 2018 GeoPackage (EPSG:3035)")
    out: str = Field(..., description="dataset folder to create")
    overwrite: bool = False
    append: bool = Field(
        False, description="add the products not yet in the dataset at `out` (same config), "
        "keeping its files, ids, labels and splits; nothing new: nothing changes; no dataset "
        "yet: a first build"
    )
    delta: bool = Field(
        False, description="also commit patches/ and the metadata as Delta Lake tables over the "
        "same Parquet files (no copy; patches/_delta_log, metadata_delta/); an append to a "
        "dataset with Delta tables extends them"
    )
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="fail: abort on the first bad product; skip: build the rest, list failures"
    )
    strip_rows: int = Field(
        8, ge=1, le=91, description="patch rows read per raster window; one Parquet row group each"
    )
    gdal_threads: int = Field(1, ge=1, le=256, description="GDAL_NUM_THREADS inside each task")
    gdal_cache_mb: int = Field(512, ge=16, le=1 << 20, description="GDAL block cache per task (MB)")
    compression: Literal["zstd", "snappy", "none"] = Field(
        "zstd", description="Parquet codec of the scalar columns"
    )
    tensor_compression: Literal["none", "zstd", "snappy"] = Field(
        "none", description="codec of the pixel tensor columns (none: fastest loading)"
    )
    direct_io: bool = Field(
        True, description="write the patch files with O_DIRECT, past the page cache (same bytes; "
        "a build's CPU then does not depend on the kernel's free memory, and it does not evict "
        "the node's page cache); buffered where the filesystem refuses O_DIRECT"
    )
    # Labels (used when `clc` is given).
    label_rule: Literal["v1", "reben"] = Field(
        "v1", description="v1: CLC classes with intersection area > min_area_m2 (paper, 43 classes); "
        "reben: rasterized at 10 m, pixel-centre rule, 19 classes"
    )
    label_engine: Literal["sedonadb", "sedona-spark"] = Field(
        "sedonadb", description="sedonadb: the embedded SedonaDB join inside each pixel task "
        "(the default: faster on one machine); sedona-spark: one Apache Sedona plan over all "
        "tiles before the pixel tasks (needs the Sedona jars)"
    )
    min_area_m2: float = Field(0.0, ge=0.0, lt=1200.0 ** 2, allow_inf_nan=False,
                               description="v1 rule: minimum intersection area (below a patch's)")
    max_unlabeled_fraction: float = Field(
        REBEN_MAX_UNLABELED_FRACTION, ge=0.0, le=1.0, description="reben rule: drop a patch at this unlabeled fraction or more"
    )
    reference_maps: bool = Field(True, description="store the 120x120 CLC code map per patch")
    quality: QualityConfig = Field(default_factory=QualityConfig)
    exclude_lists: list[str] = Field(
        default_factory=list, description="headerless CSVs of v1 names to drop (official snow/cloud lists)"
    )
    split: Literal["random", "reben", "official"] = "random"
    split_seed: int = 0
    split_fractions: SplitFractions = (0.6, 0.2, 0.2)
    official_splits: str | None = Field(
        None, description="folder with train.csv, val.csv, test.csv (or .csv.bz2) of v1 names"
    )
    countries: dict[str, str] = Field(
        default_factory=dict, description="tile id or product id -> country (else the products table)"
    )
    spark: SparkConfig = Field(default_factory=SparkConfig)

    @model_validator(mode="after")
    def _append_or_overwrite(self) -> BuildConfig:
        if self.delta and self.out.startswith("s3://"):
            raise ValueError("delta: the Delta tables are committed on a filesystem output; "
                             "build to a local or shared folder (not s3://) for --delta")
        if self.append and self.overwrite:
            raise ValueError("append and overwrite exclude each other: --append keeps the "
                             "dataset and adds to it, --overwrite replaces it")
        return self


class ImportConfig(StrictModel):
    """Configuration of ``bigearthnet import-v1``."""

    archive: str = Field(..., description="BigEarthNet-S2 v1.0 folder (one sub-folder per patch)")
    out: str = Field(..., description="dataset folder to create")
    overwrite: bool = False
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="fail: abort at the first broken patch; skip: import the rest and "
        "name every broken patch in manifest.json"
    )
    splits_dir: str | None = Field(None, description="folder with official train/val/test CSVs")
    exclude_lists: list[str] = Field(
        default_factory=list,
        description="headerless CSVs of v1 names to drop; a file whose name contains 'snow' also "
        "sets contains_seasonal_snow, 'cloud' sets contains_cloud_or_shadow",
    )
    split_seed: int = 0
    split_fractions: SplitFractions = (0.6, 0.2, 0.2)
    patches_per_task: int = Field(512, ge=1)
    compression: str = "zstd"
    direct_io: bool = Field(True, description="write the patch files with O_DIRECT (see build)")
    spark: SparkConfig = Field(default_factory=SparkConfig)


class ImportV2Config(StrictModel):
    """Configuration of ``bigearthnet import-v2`` (the reBEN / BigEarthNet v2.0 folder archive)."""

    archive: str = Field(..., description="reBEN folder: metadata.parquet, BigEarthNet-S2/, Reference_Maps/")
    out: str = Field(..., description="dataset folder to create")
    overwrite: bool = False
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="fail: abort at the first broken patch; skip: import the rest and "
        "name every broken patch in manifest.json"
    )
    patches_per_task: int = Field(256, ge=1)
    compression: str = "zstd"
    direct_io: bool = Field(True, description="write the patch files with O_DIRECT (see build)")
    spark: SparkConfig = Field(default_factory=SparkConfig)


class ExportConfig(StrictModel):
    """Configuration of ``bigearthnet export`` (a dataset to the reBEN or v1 folder layout)."""

    dataset: str = Field(..., description="dataset folder written by build / import-v1 / import-v2")
    format: Literal["reben", "v1"] = Field(
        ..., description="reben: BigEarthNet v2.0 layout (TorchGeo BigEarthNetV2); v1: the "
        "BigEarthNet-S2 v1.0 layout (TorchGeo BigEarthNet)"
    )
    out: str = Field(..., description="folder to create")
    overwrite: bool = False
    patches_per_task: int = Field(512, ge=1)
    spark: SparkConfig = Field(default_factory=SparkConfig)
