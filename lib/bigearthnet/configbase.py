"""The one strict config base and the config loader shared by every job.

Every config model of the package derives from :class:`StrictModel` (unknown keys are an
error). A config is resolved from (lowest to highest precedence) the model defaults, a YAML file
(``--config``) and command-line options; the resolved config is saved next to every output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from bigearthnet.errors import ConfigError, FileNameError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for all config models: unknown keys are an error, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="after")
    def _utf8_text(self) -> StrictModel:
        # A path with bytes that are not UTF-8 (a surrogate escape in Python) cannot reach GDAL,
        # Arrow or JSON; refuse it by name now rather than fail somewhere deep in a job.
        for name in type(self).model_fields:
            for text in _strings(getattr(self, name)):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                    raise FileNameError(
                        f"{name} {shown}: the name is not valid UTF-8 (GDAL, Parquet and JSON "
                        "need UTF-8 paths); rename it"
                    ) from None
        return self

    S3_FIELDS: ClassVar[frozenset[str]] = frozenset()
    """The string fields that accept ``s3://`` URIs; every other one refuses them, so a local
    path is never made of a URI (``Path("s3://b/k")`` is the local folder ``s3:/b/k``)."""

    @model_validator(mode="after")
    def _s3_only_where_supported(self) -> StrictModel:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, str) and value.startswith("s3://") and name not in self.S3_FIELDS:
                raise ValueError(
                    f"{name} {value!r}: this setting takes a local or shared path, not an s3:// "
                    "URI (s3:// is accepted by build --products/--clc/--out and train --dataset)")
        return self


def _strings(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)


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
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {p} is not UTF-8 text ({exc}); fix it: save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"config file {p} cannot be read ({exc}); check its permissions") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML; fix it: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys, got "
                          f"{type(data).__name__}; fix it (key: value lines)")
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
