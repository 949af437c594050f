"""Every path and file name of the two folder archives we read and write, defined once.

These are other people's formats, not ours (ours is :mod:`bigearthnet.dataset.layout`):

reBEN / BigEarthNet v2.0, as TorchGeo's ``BigEarthNetV2`` reads it::

    ROOT/
      metadata.parquet                                   patch_id, labels (19), split, country,
                                                         s1_name, s2v1_name, contains_* flags
      metadata_for_patches_with_snow_cloud_or_shadow.parquet   patches reBEN excluded (optional)
      BigEarthNet-S2/<tile>/<patch_id>/<patch_id>_<band>.tif   B01 ... B12 (no B10), native size
      Reference_Maps/<tile>/<patch_id>/<patch_id>_reference_map.tif   CLC codes at 10 m
      BigEarthNet-S1/                                    Sentinel-1 (empty in our exports)

where ``<tile>`` is the patch id without its last two ``_`` fields
(``S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP`` for ``..._T33UUP_26_57``).

BigEarthNet v1.0, as TorchGeo's ``BigEarthNet`` reads it::

    ROOT/
      BigEarthNet-v1.0/<name>/<name>_<band>.tif          B01 ... B12 (no B10), native size
      BigEarthNet-v1.0/<name>/<name>_labels_metadata.json   labels (43), coordinates, projection,
                                                         tile_source, acquisition_date
      train.csv, val.csv, test.csv                       official split lists (one v1 name a line)
      bigearthnet-train.csv, -val.csv, -test.csv         TorchGeo's split files (``s2,s1`` pairs)

Both layouts hold the band files in :data:`bigearthnet.sentinel2.bands.BAND_NAMES` order when
sorted the way TorchGeo sorts them (``B8A`` between ``B08`` and ``B09``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bigearthnet.constants import SPLITS

EXPORT_MANIFEST = "export.json"
"""What our exporter writes next to an export's folders: format, band order, class orders,
counts (the one file of an export that is ours)."""

TIF = ".tif"

REBEN_METADATA = "metadata.parquet"
REBEN_EXCLUDED = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
REBEN_S2 = "BigEarthNet-S2"
REBEN_S1 = "BigEarthNet-S1"
REBEN_MAPS = "Reference_Maps"
REFERENCE_MAP_SUFFIX = "reference_map"

V1_FOLDER = "BigEarthNet-v1.0"
V1_LABELS_SUFFIX = "labels_metadata.json"
V1_SPLIT_STEMS: dict[str, str] = dict(zip(SPLITS, ("train", "val", "test"), strict=True))
"""Our split name -> the stem of v1's split files (``val``, not ``validation``)."""
TORCHGEO_V1_SPLIT_PREFIX = "bigearthnet-"


def band_file_name(patch: str, band: str) -> str:
    """``<patch>_<band>.tif``: a band file of either archive."""
    return f"{patch}_{band}{TIF}"


def v1_labels_name(name: str) -> str:
    """``<name>_labels_metadata.json``: the labels file of a v1 patch."""
    return f"{name}_{V1_LABELS_SUFFIX}"


def reben_tile_folder(patch_id: str) -> str:
    """The reBEN folder of a patch's tile: the patch id without its last two fields."""
    return "_".join(patch_id.split("_")[:-2])


@dataclass(frozen=True)
class RebenLayout:
    """The files of a reBEN (BigEarthNet v2.0) folder archive."""

    root: Path

    @property
    def metadata(self) -> Path:
        """``metadata.parquet``."""
        return self.root / REBEN_METADATA

    @property
    def excluded(self) -> Path:
        """The metadata of the patches reBEN excluded for snow, cloud or shadow."""
        return self.root / REBEN_EXCLUDED

    @property
    def s2(self) -> Path:
        """``BigEarthNet-S2/``."""
        return self.root / REBEN_S2

    @property
    def s1(self) -> Path:
        """``BigEarthNet-S1/``."""
        return self.root / REBEN_S1

    @property
    def maps(self) -> Path:
        """``Reference_Maps/``."""
        return self.root / REBEN_MAPS

    def patch_dir(self, patch_id: str) -> Path:
        """``BigEarthNet-S2/<tile>/<patch_id>/``."""
        return self.s2 / reben_tile_folder(patch_id) / patch_id

    def band_file(self, patch_id: str, band: str) -> Path:
        """One band GeoTIFF of a patch."""
        return self.patch_dir(patch_id) / band_file_name(patch_id, band)

    def map_dir(self, patch_id: str) -> Path:
        """``Reference_Maps/<tile>/<patch_id>/``."""
        return self.maps / reben_tile_folder(patch_id) / patch_id

    def reference_map(self, patch_id: str) -> Path:
        """``<patch_id>_reference_map.tif``."""
        return self.map_dir(patch_id) / f"{patch_id}_{REFERENCE_MAP_SUFFIX}{TIF}"

    def band_files(self, patch_id: str, bands: tuple[str, ...]) -> set[str]:
        """The file names a patch folder holds (its bands), nothing else."""
        return {band_file_name(patch_id, b) for b in bands}

    @property
    def manifest(self) -> Path:
        """Our ``export.json`` (present in archives we exported)."""
        return self.root / EXPORT_MANIFEST


@dataclass(frozen=True)
class V1Layout:
    """The files of a BigEarthNet v1.0 folder archive."""

    root: Path

    @property
    def patches(self) -> Path:
        """``BigEarthNet-v1.0/``: one folder per patch."""
        return self.root / V1_FOLDER

    def patch_dir(self, name: str) -> Path:
        """The folder of one patch."""
        return self.patches / name

    @staticmethod
    def band_path(folder: Path, band: str) -> Path:
        """A band file in a patch folder (named after the folder)."""
        return folder / band_file_name(folder.name, band)

    @staticmethod
    def labels_path(folder: Path) -> Path:
        """``<name>_labels_metadata.json`` in a patch folder."""
        return folder / v1_labels_name(folder.name)

    def split_csv(self, split: str) -> Path:
        """The official split list (``train.csv``, ``val.csv``, ``test.csv``)."""
        return self.root / f"{V1_SPLIT_STEMS[split]}.csv"

    def torchgeo_split_csv(self, split: str) -> Path:
        """TorchGeo's split file (``bigearthnet-train.csv`` ...), ``s2_name,s1_name`` lines."""
        return self.root / f"{TORCHGEO_V1_SPLIT_PREFIX}{V1_SPLIT_STEMS[split]}.csv"

    @property
    def manifest(self) -> Path:
        """Our ``export.json``."""
        return self.root / EXPORT_MANIFEST
