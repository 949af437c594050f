"""Whole-batch input transforms run on the training device: normalise, upsample, select bands.

A :class:`BatchTransform` turns a loader batch (uint16 band tensors, uint8 multi-hot labels)
into ``(x, y)``:

- ``bands="rgb"``: ``x`` has 3 channels in the order **B04, B03, B02** (red, green, blue),
  taken from ``bands_10m``; nothing is upsampled.
- ``bands="all"``: ``x`` has 12 channels in the order **B01, B02, B03, B04, B05, B06, B07,
  B08, B8A, B09, B11, B12** (:data:`bigearthnet.sentinel2.bands.BAND_NAMES`, the order of the
  v1 reference code and its normalisation table). The 20 m bands (60×60) and 60 m bands
  (20×20) are upsampled to 120×120 with ``F.interpolate(mode="bicubic",
  align_corners=False)``, as S-CNN-All did with cubic interpolation.

Each band is normalised as ``(value - mean) / std`` with the train split's ``stats.json``,
before upsampling (as the v1 reference code did; bicubic weights sum to one, so the order only
changes rounding). ``y`` is the ``multi_hot_43`` or ``multi_hot_19`` column as float32.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from bigearthnet.constants import PATCH_SIZE_PX, patch_px
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.objectstore import local_dataset
from bigearthnet.errors import ConfigError, DatasetSchemaError, InputNotFoundError, StatsError
from bigearthnet.sentinel2.bands import BAND_NAMES, GROUPS, RGB

BAND_COLUMNS: dict[int, str] = {10: "bands_10m", 20: "bands_20m", 60: "bands_60m"}
"""Tensor column of each native resolution."""

CHANNELS: dict[str, tuple[str, ...]] = {"rgb": RGB, "all": BAND_NAMES}
"""Output channel order per band selection."""


def load_stats(path: str | Path) -> dict:
    """Read ``stats.json`` (a file, or a dataset folder that holds one).

    Raises:
        InputNotFoundError: no such file.
        StatsError: not valid JSON.
    """
    p = local_dataset(path)
    if p.is_dir():
        p = DatasetLayout(p).stats
    if not p.is_file():
        raise InputNotFoundError(f"band statistics {p} do not exist; was the dataset built? "
                                 "Rebuild it (bigearthnet build --overwrite)")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StatsError(f"{p} is not valid JSON ({exc}): the file is damaged; rebuild the "
                         "dataset (bigearthnet build --overwrite)") from None


def band_mean_std(stats: Mapping, bands: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """Per-band means and stds from a ``stats.json`` document, in the order of ``bands``.

    Raises:
        StatsError: a band is missing or its std is not a positive finite number.
    """
    table = stats.get("bands") if isinstance(stats, Mapping) else None
    if not isinstance(table, Mapping):
        raise StatsError("band statistics have no 'bands' mapping")
    means, stds = [], []
    for band in bands:
        entry = table.get(band)
        if not isinstance(entry, Mapping) or "mean" not in entry or "std" not in entry:
            raise StatsError(f"band statistics lack mean/std of {band}")
        mean, std = float(entry["mean"]), float(entry["std"])
        if not (math.isfinite(std) and std > 0 and math.isfinite(mean)):
            raise StatsError(f"band statistics of {band}: mean {mean} must be finite and std {std} positive and finite")
        means.append(mean)
        stds.append(std)
    return means, stds


def to_float32(raw: torch.Tensor, device: torch.device, widen: bool | None = None) -> torch.Tensor:
    """Move an integer tensor to ``device`` and convert it to float32 there.

    ``torch.uint16`` is a "barebones" dtype with few kernels off the CPU, so on other devices
    (``widen=None``: any device but the CPU) its bytes travel as int16 and are widened there
    (int32, & 0xFFFF), which every backend supports. The transfer stays 2 bytes per value.
    """
    if widen is None:
        widen = device.type != "cpu"
    if raw.dtype == torch.uint16 and widen:
        wide = raw.view(torch.int16).to(device, non_blocking=True).to(torch.int32)
        return wide.bitwise_and_(0xFFFF).to(torch.float32)
    return raw.to(device, non_blocking=True).to(torch.float32)


class BatchTransform:
    """Normalise, upsample and select bands of a whole batch on one device.

    Args:
        stats: a ``stats.json`` document, its path, or the dataset folder.
        bands: ``"rgb"`` (B04, B03, B02) or ``"all"`` (12 bands, B01 … B12).
        label_set: ``"43"`` or ``"19"``: which multi-hot column becomes ``y``.
        device: where ``x`` and ``y`` are built (default CPU).

    Raises:
        ConfigError: unknown ``bands`` or ``label_set``.
        StatsError, InputNotFoundError: the statistics are unusable.
    """

    def __init__(self, stats: Mapping | str | Path, bands: Literal["rgb", "all"] = "all",
                 label_set: Literal["43", "19"] = "43",
                 device: torch.device | str | None = None) -> None:
        if bands not in CHANNELS:
            raise ConfigError(f"bands must be 'rgb' or 'all', not {bands!r}")
        if str(label_set) not in ("43", "19"):
            raise ConfigError(f"label_set must be '43' or '19', not {label_set!r}")
        if not isinstance(stats, Mapping):
            stats = load_stats(stats)
        self.bands = bands
        self.label_set = str(label_set)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.channels: tuple[str, ...] = CHANNELS[bands]
        # (column, indices of that column's bands to keep, mean, std) per resolution group
        self._groups: list[tuple[int, str, list[int], torch.Tensor, torch.Tensor]] = []
        for res in ((10,) if bands == "rgb" else (60, 20, 10)):
            names = tuple(b for b in self.channels if b in GROUPS[res]) if bands == "rgb" else GROUPS[res]
            index = [GROUPS[res].index(b) for b in names]
            mean, std = band_mean_std(stats, names)
            self._groups.append((res, BAND_COLUMNS[res], index,
                                 torch.tensor(mean, dtype=torch.float32, device=self.device).view(-1, 1, 1),
                                 torch.tensor(std, dtype=torch.float32, device=self.device).view(-1, 1, 1)))
        # position of every output channel in the concatenation of the groups
        concat = [b for res, _, index, _, _ in self._groups for b in (GROUPS[res][i] for i in index)]
        self._order = [concat.index(b) for b in self.channels]
        self._identity = self._order == list(range(len(self._order)))

    @property
    def label_column(self) -> str:
        """The batch column ``y`` comes from."""
        return f"multi_hot_{self.label_set}"

    @property
    def columns(self) -> tuple[str, ...]:
        """The loader columns this transform needs."""
        return tuple(col for _, col, _, _, _ in self._groups) + (self.label_column,)

    @property
    def num_channels(self) -> int:
        """Channels of ``x``."""
        return len(self.channels)

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: float32 ``(B, C, 120, 120)``; ``y``: float32 ``(B, K)``, both on the device.

        Raises:
            DatasetSchemaError: the batch lacks a needed column or has the wrong shape.
        """
        missing = [c for c in self.columns if c not in batch]
        if missing:
            raise DatasetSchemaError(
                f"batch lacks column(s) {missing}; load with columns={list(self.columns)}"
            )
        parts = []
        for res, col, index, mean, std in self._groups:
            raw = batch[col]
            px = patch_px(res)
            if raw.ndim != 4 or tuple(raw.shape[1:]) != (len(GROUPS[res]), px, px):
                raise DatasetSchemaError(
                    f"batch column {col} has shape {tuple(raw.shape)}, expected (B, {len(GROUPS[res])}, {px}, {px})"
                )
            x = to_float32(raw, self.device)
            if index != list(range(len(GROUPS[res]))):
                x = x[:, index]
            x = (x - mean) / std
            if px != PATCH_SIZE_PX:
                x = F.interpolate(x, size=(PATCH_SIZE_PX, PATCH_SIZE_PX), mode="bicubic", align_corners=False)
            parts.append(x)
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if not self._identity:
            x = x[:, self._order]
        x = x.contiguous()
        y = batch[self.label_column].to(self.device, non_blocking=True).to(torch.float32)
        if y.ndim != 2 or y.shape[1] != int(self.label_set):
            raise DatasetSchemaError(
                f"batch column {self.label_column} has shape {tuple(y.shape)}, expected (B, {self.label_set})"
            )
        return x, y
