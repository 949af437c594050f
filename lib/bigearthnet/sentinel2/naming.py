"""Sentinel-2 product names and BigEarthNet patch names (v1 and v2/reBEN)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from bigearthnet.errors import ProductNameError

_PRODUCT_RE = re.compile(
    r"^(?P<mission>S2[A-D])_(?P<level>MSIL2A)_(?P<datatake>\d{8}T\d{6})_"
    r"(?P<baseline>N\d{4})_(?P<orbit>R\d{3})_(?P<tile>T\d{2}[C-X][A-Z]{2})_"
    r"(?P<discriminator>\d{8}T\d{6})$"
)
_SUFFIXES = (".SAFE.zip", ".zip", ".SAFE", ".json")


@dataclass(frozen=True)
class _Datatake:
    """What product names and reBEN patch ids share: mission, level, datatake, baseline, orbit,
    tile."""

    mission: str
    level: str
    datatake: str
    baseline: str
    orbit: str
    tile: str

    @property
    def sensing_time(self) -> datetime:
        """Datatake sensing start, UTC."""
        return datetime.strptime(self.datatake, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


@dataclass(frozen=True)
class ProductName(_Datatake):
    """The parts of an ESA L2A product name.

    Example: ``S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319``.
    """

    discriminator: str

    @property
    def name(self) -> str:
        """The full product name (no ``.SAFE`` suffix)."""
        return (f"{self.mission}_{self.level}_{self.datatake}_{self.baseline}_{self.orbit}_"
                f"{self.tile}_{self.discriminator}")

    @property
    def utm_zone(self) -> int:
        """UTM zone number of the tile."""
        return int(self.tile[1:3])

    def patch_name_v1(self, col: int, row: int) -> str:
        """BigEarthNet v1 patch name: ``S2A_MSIL2A_20170617T113321_36_85``.

        Not unique when one datatake covers several tiles; see ``patch_name_v2``.
        """
        return f"{self.mission}_{self.level}_{self.datatake}_{col}_{row}"

    def patch_name_v2(self, col: int, row: int) -> str:
        """reBEN (v2) patch name, the unique key:
        ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57``."""
        return f"{self.mission}_{self.level}_{self.datatake}_N9999_{self.orbit}_{self.tile}_{col}_{row}"


def strip_suffix(name: str) -> str:
    """Remove ``.SAFE``, ``.zip`` or ``.json`` from a file or folder name."""
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_product_name(name: str, source: str | None = None) -> ProductName:
    """Parse an L2A product name.

    Args:
        name: the product name, with or without ``.SAFE`` / ``.zip``.
        source: the file the name came from, for the error message.

    Raises:
        ProductNameError: the name does not follow ``MMM_MSIL2A_YYYYMMDDTHHMMSS_Nxxxx_ROOO_Txxxxx_…``.
    """
    base = strip_suffix(name.rsplit("/", 1)[-1])
    match = _PRODUCT_RE.match(base)
    if match is None:
        where = f" (from {source})" if source else ""
        raise ProductNameError(
            f"cannot parse Sentinel-2 L2A product name {name!r}{where}: expected "
            "'S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319'. Rename the product "
            "as ESA names it, or fix the STAC item's id / s2:product_uri."
        )
    parts = match.groupdict()
    _check_datatake(parts["datatake"], f"product name {name!r}")
    return ProductName(**parts)


def _check_datatake(datatake: str, where: str) -> None:
    try:
        datetime.strptime(datatake, "%Y%m%dT%H%M%S")
    except ValueError as exc:
        raise ProductNameError(f"invalid datatake time in {where}: {exc}") from exc


_PATCH_V2_RE = re.compile(
    r"^(?P<mission>S2[A-D])_(?P<level>MSIL2A)_(?P<datatake>\d{8}T\d{6})_(?P<baseline>N\d{4})_"
    r"(?P<orbit>R\d{3})_(?P<tile>T\d{2}[C-X][A-Z]{2})_(?P<col>\d{1,3})_(?P<row>\d{1,3})$"
)


@dataclass(frozen=True)
class PatchNameV2(_Datatake):
    """The parts of a reBEN (v2) patch id, e.g. ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57``."""

    col: int
    row: int

    @property
    def name_v1(self) -> str:
        """The v1 name of the same patch (not unique across the tiles of one datatake)."""
        return f"{self.mission}_{self.level}_{self.datatake}_{self.col}_{self.row}"


def parse_patch_name_v2(patch_id: str) -> PatchNameV2:
    """Parse a reBEN patch id.

    Raises:
        ProductNameError: the id does not follow
            ``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57``.
    """
    match = _PATCH_V2_RE.match(patch_id)
    if match is None:
        raise ProductNameError(
            f"cannot parse reBEN patch id {patch_id!r}: expected "
            "'S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57'"
        )
    parts = match.groupdict()
    _check_datatake(parts["datatake"], f"patch id {patch_id!r}")
    return PatchNameV2(**{**parts, "col": int(parts["col"]), "row": int(parts["row"])})
