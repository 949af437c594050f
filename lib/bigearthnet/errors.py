"""Error hierarchy.

Every error the package raises on purpose derives from :class:`BigEarthNetError` and also from
the matching builtin, so callers can catch either (``except FileNotFoundError`` works for a
missing band). Messages name the offending product and file and say what to do next.
"""

from __future__ import annotations


class BigEarthNetError(Exception):
    """Root of all errors raised on purpose by this package."""

    #: CLI exit status for this error family.
    exit_code: int = 2


class ConfigError(BigEarthNetError, ValueError):
    """A config file or option is invalid (unknown key, bad value)."""


class ProductNameError(BigEarthNetError, ValueError):
    """A Sentinel-2 product name does not follow the ESA L2A naming convention."""


class InputNotFoundError(BigEarthNetError, FileNotFoundError):
    """An input path does not exist."""


class EmptyInputError(BigEarthNetError, FileNotFoundError):
    """An input directory holds no Sentinel-2 product."""


class MissingBandError(BigEarthNetError, FileNotFoundError):
    """A product lacks one of the 12 bands or the SCL layer."""


class CorruptRasterError(BigEarthNetError, OSError):
    """A raster file cannot be opened or decoded (truncated or corrupt)."""


class GeoreferenceMismatchError(BigEarthNetError, ValueError):
    """The bands of one product disagree in CRS, origin or pixel grid."""


class TileTooSmallError(BigEarthNetError, ValueError):
    """A tile is smaller than one 1200 m patch."""


class StacItemError(BigEarthNetError, ValueError):
    """A STAC item is malformed or lacks what we need."""


class OutputExistsError(BigEarthNetError, FileExistsError):
    """The output directory exists already (pass --overwrite to replace it)."""


class OutputLockedError(BigEarthNetError, BlockingIOError):
    """Another live job is writing the same output folder."""


class BuildFailedError(BigEarthNetError, RuntimeError):
    """A distributed build failed; the message lists the failed products."""


ERROR_TYPES: dict[str, type[BigEarthNetError]] = {}


def register(cls: type[BigEarthNetError]) -> type[BigEarthNetError]:
    """Register an error class so it can be re-raised by name after crossing a Spark task."""
    ERROR_TYPES[cls.__name__] = cls
    return cls


for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, BigEarthNetError):
        register(_cls)


def error_from_name(name: str, message: str) -> BigEarthNetError:
    """Rebuild a named error (sent back from an executor as name + message)."""
    cls = ERROR_TYPES.get(name, BigEarthNetError)
    return cls(message)


# --- train: metrics and models -------------------------------------------------------------


@register
class MetricInputError(BigEarthNetError, ValueError):
    """Labels or scores given to a metric have the wrong shape, dtype or values."""


@register
class ModelInputError(BigEarthNetError, ValueError):
    """A model received a batch of the wrong shape (channels or patch size)."""


@register
class UnknownModelError(BigEarthNetError, ValueError):
    """A model name is not one of the supported architectures."""


@register
class WeightsUnavailableError(BigEarthNetError, FileNotFoundError):
    """Pretrained weights are neither in the local torch hub cache nor at the given path."""


@register
class WeightsIncompatibleError(BigEarthNetError, ValueError):
    """A weights file does not match the architecture it is loaded into."""


@register
class RasterFormatError(BigEarthNetError, ValueError):
    """A band file has an unexpected data type, band count or resolution."""


# --- clc / labeling / quality / splits -----------------------------------------------------


@register
class ClcReadError(BigEarthNetError, OSError):
    """A CORINE Land Cover file exists but cannot be opened or read by GDAL/OGR."""


@register
class ClcSchemaError(BigEarthNetError, ValueError):
    """A CORINE Land Cover layer lacks the expected code column (``Code_18``) or a CRS."""


@register
class UnknownClcCodeError(BigEarthNetError, ValueError):
    """A CORINE Land Cover polygon carries a code outside the CLC 2018 Level-3 nomenclature."""


@register
class UnknownLabelError(BigEarthNetError, ValueError):
    """A class name is not part of the requested label nomenclature (43 or 19 classes)."""


@register
class LabelingInputError(BigEarthNetError, ValueError):
    """Arrays given to a labeling, quality or split function disagree in length or shape."""


@register
class SplitListError(BigEarthNetError, ValueError):
    """Official split lists are inconsistent (one patch name in several split files)."""


# --- dataset loader and batch transforms ----------------------------------------------------


@register
class IncompleteDatasetError(BigEarthNetError, FileNotFoundError):
    """A dataset folder lacks its ``_SUCCESS`` marker (the build did not finish or failed)."""


@register
class SplitNotFoundError(BigEarthNetError, FileNotFoundError):
    """A dataset has no ``patches/split=<name>`` folder, or that folder holds no Parquet file."""


@register
class DatasetSchemaError(BigEarthNetError, ValueError):
    """A dataset file lacks a requested column or declares a tensor shape/dtype we do not expect."""


@register
class StatsError(BigEarthNetError, ValueError):
    """``stats.json`` lacks a band's mean/std, or a std is not positive."""


@register
class PatchMetadataError(BigEarthNetError, FileNotFoundError):
    """A v1 archive patch folder lacks its ``*_labels_metadata.json`` or it is unreadable."""


# --- train: loop, checkpoints, distributed runs, evaluation, report ---------------------------


@register
class CheckpointError(BigEarthNetError, ValueError):
    """A checkpoint is missing, unreadable, or does not belong to the run being resumed."""


@register
class RunNotFoundError(BigEarthNetError, FileNotFoundError):
    """A training run folder (or its config/checkpoint/evaluation) does not exist."""


@register
class DistributedTrainingError(BigEarthNetError, RuntimeError):
    """A distributed training process (local DDP or a TorchDistributor task) failed."""


# --- faults: silent corruption, full disks, damaged datasets ---------------------------------


@register
class ChecksumMismatchError(CorruptRasterError):
    """A product file's size or digest differs from its ``manifest.safe`` or STAC checksum
    (a corrupt raster found before decoding, where a decoder might not notice)."""


@register
class ProductManifestError(BigEarthNetError, ValueError):
    """A product's ``manifest.safe`` or a STAC asset's ``file:checksum`` cannot be parsed."""


@register
class DiskFullError(BigEarthNetError, OSError):
    """The output filesystem ran out of space (ENOSPC, EDQUOT) while a job wrote to it."""


@register
class CorruptDatasetError(BigEarthNetError, OSError):
    """A dataset file (Parquet, ``stats.json``, ``manifest.json``) is truncated or unreadable."""


@register
class NoDataTileError(BigEarthNetError, ValueError):
    """Every pixel of a product's bands and SCL is 0 (no data): the product holds no image."""


@register
class FileNameError(BigEarthNetError, OSError):
    """An input path is not valid UTF-8 (GDAL, Arrow and JSON need UTF-8 names). An OSError, not
    a ValueError, so that config models raise it as is (pydantic wraps ValueErrors)."""


@register
class AssetUnreachableError(BigEarthNetError, OSError):
    """A remote asset (http(s) or s3 URL of a STAC item) cannot be opened."""


# --- object storage (s3:// inputs and outputs) ----------------------------------------------


@register
class ObjectStoreError(BigEarthNetError, OSError):
    """A request to the object store (S3 or an S3-compatible server) failed; names the URI."""


@register
class ObjectStoreAccessError(ObjectStoreError):
    """The object store refused the credentials, or cannot be reached at its endpoint."""


@register
class BucketNotFoundError(ObjectStoreError, FileNotFoundError):
    """The bucket of an ``s3://`` URI does not exist."""


@register
class UnsupportedStorageError(BigEarthNetError, ValueError):
    """An option that does not work with ``s3://`` inputs or outputs (says what to use)."""


# --- interop: reBEN / v1 folder archives in and out ------------------------------------------


@register
class PatchMissingError(BigEarthNetError, FileNotFoundError):
    """A patch an archive's metadata lists is missing on disk (its folder or one of its files)."""


@register
class ArchiveMetadataError(BigEarthNetError, ValueError):
    """A reBEN archive's ``metadata.parquet`` lacks a column, repeats a patch id, or holds a value
    (split, label, patch id) that is not valid; names the file and the patch."""


@register
class ExportError(BigEarthNetError, ValueError):
    """A dataset cannot be written in the requested folder layout (no labels, no reference maps
    for reBEN, v1 names that collide); says which format or option works instead."""
