"""Every path and file name inside a dataset directory, defined once.

::

    DATASET/
      _SUCCESS                                   written last: the dataset is complete
      manifest.json                              schema, config, versions, counts, class orders
      stats.json                                 per-band statistics of the train split
      metadata.parquet                           one row per kept patch (reBEN columns + ours)
      histograms.parquet                         per-product train histograms (source of stats.json)
      build_config.json | import_config.json     the resolved config of the job that wrote it
      patches/split=<split>/<name>.parquet       the patch table (labeled builds, imports)
      patches/<product>.parquet                  the patch table of a tiling-only build
      _parts/metadata/<name>.parquet             per-task metadata, merged and removed at commit
      patches/_delta_log/                        `build --delta`: patches/ as a Delta table
      metadata_delta/                            `build --delta`: the metadata Delta table
                                                 (_delta_log/, metadata-v<N>.parquet: hard
                                                 links of metadata.parquet at version N)
      _parts/import_plan.parquet                 an archive import's work list, removed at commit

Builders, loaders, the training loop and the transforms all locate files through
:class:`DatasetLayout`; no other module spells these names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
STATS = "stats.json"
METADATA = "metadata.parquet"
HISTOGRAMS = "histograms.parquet"
BUILD_CONFIG = "build_config.json"
IMPORT_CONFIG = "import_config.json"
PATCHES = "patches"
PARTS = "_parts"
SPLIT_PREFIX = "split="
PARQUET = ".parquet"
IN_PROGRESS = ".inprogress"
DELTA_LOG = "_delta_log"
METADATA_TABLE = "metadata_delta"


@dataclass(frozen=True)
class DatasetLayout:
    """The files of one dataset directory.

    Args:
        root: the dataset directory (or a staging directory that becomes it).
    """

    root: Path

    @classmethod
    def of(cls, root: str | os.PathLike[str]) -> DatasetLayout:
        """The layout of ``root``."""
        return cls(Path(root))

    @property
    def success(self) -> Path:
        """The completion marker, written last."""
        return self.root / SUCCESS

    @property
    def manifest(self) -> Path:
        """``manifest.json``."""
        return self.root / MANIFEST

    @property
    def stats(self) -> Path:
        """``stats.json``."""
        return self.root / STATS

    @property
    def metadata(self) -> Path:
        """``metadata.parquet``."""
        return self.root / METADATA

    @property
    def histograms(self) -> Path:
        """``histograms.parquet``: per-product train histograms, the source of ``stats.json``."""
        return self.root / HISTOGRAMS

    @property
    def build_config(self) -> Path:
        """The resolved config of ``bigearthnet build``."""
        return self.root / BUILD_CONFIG

    @property
    def import_config(self) -> Path:
        """The resolved config of ``bigearthnet import-v1`` / ``import-v2``."""
        return self.root / IMPORT_CONFIG

    @property
    def patches(self) -> Path:
        """The folder of the patch table."""
        return self.root / PATCHES

    def split_dir(self, split: str | None) -> Path:
        """``patches/split=<split>`` (``patches`` itself for ``None``, tiling-only builds)."""
        return self.patches if split is None else self.patches / f"{SPLIT_PREFIX}{split}"

    def patch_file(self, split: str | None, name: str) -> Path:
        """The Parquet file of one product (or import chunk) in one split."""
        return self.split_dir(split) / f"{name}{PARQUET}"

    def splits_present(self) -> list[str]:
        """Names of the ``split=*`` folders, sorted."""
        return sorted(p.name.removeprefix(SPLIT_PREFIX) for p in self.patches.glob(f"{SPLIT_PREFIX}*"))

    @property
    def metadata_parts(self) -> Path:
        """The folder of the tasks' metadata parts."""
        return self.root / PARTS / "metadata"

    @property
    def parts(self) -> Path:
        """The folder of all per-task parts (removed before commit)."""
        return self.root / PARTS

    @property
    def failures(self) -> Path:
        """Where failing tasks report themselves at once (``on_error: fail``)."""
        return self.root / PARTS / "failures"

    @property
    def import_plan(self) -> Path:
        """The work list of an archive import (one Parquet row group per task)."""
        return self.root / PARTS / "import_plan.parquet"

    def label_parts(self, kind: str) -> Path:
        """Labels computed before the pixel tasks (``clc`` polygons, ``areas``), by task."""
        return self.root / PARTS / "labels" / kind

    def stray_files(self) -> list[Path]:
        """Files of task attempts that never finished (``*.inprogress-*``), e.g. lost executors."""
        return sorted(self.root.rglob(f"*{IN_PROGRESS}*"))

    def create_task_folders(self) -> None:
        """Create the folders tasks write into (the driver does, before any task runs).

        Tasks then create only leaf folders (``split=<split>``) and never parents: a task of a
        dead build that outlives its driver cannot bring a removed staging folder back.
        """
        for folder in (self.patches, self.metadata_parts, self.failures):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def metadata_table(self) -> Path:
        """The metadata Delta table's folder (``build --delta``)."""
        return self.root / METADATA_TABLE

    @staticmethod
    def delta_log(table: Path) -> Path:
        """The ``_delta_log`` folder of a Delta table folder."""
        return table / DELTA_LOG

    def metadata_part(self, name: str) -> Path:
        """The metadata part of one task."""
        return self.metadata_parts / f"{name}{PARQUET}"
