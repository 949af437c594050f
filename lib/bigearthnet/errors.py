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
