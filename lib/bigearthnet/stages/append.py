"""``bigearthnet build --append``: add new products to a committed dataset, driver side.

An append is a build of the new products only, whose staging folder also receives the existing
dataset's files as hard links (nothing that is there is rewritten), followed by the usual merge:
``metadata.parquet`` is re-sorted over old and new rows, ``stats.json`` is recomputed exactly
from the per-product train histograms stored in ``histograms.parquet``, and the manifest gets
one more entry in its version ``history``. The new folder replaces the old one atomically (the
same swap as ``--overwrite``), so readers see either version, never a mix.

Patch ids, labels and splits do not depend on which other products are in the dataset (the
split is a function of the patch id, the tile or the official lists), so appending products one
run at a time gives the same rows, splits and statistics as one build of all of them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq

from bigearthnet.config import BuildConfig
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.errors import ConfigError, IncompleteDatasetError, InputNotFoundError
from bigearthnet.sentinel2.products import ProductSource

DATASET_KEYS = (
    "clc", "label_rule", "min_area_m2", "max_unlabeled_fraction", "reference_maps", "quality",
    "exclude_lists", "split", "split_seed", "split_fractions", "official_splits", "countries",
    "compression", "tensor_compression",
)
"""Config keys that shape the rows and bytes of a dataset: an append must use the same values.
(The label engine may differ: both engines give the same bytes.)"""


def new_version(cfg: BuildConfig, previous: list[dict], added: list[str], skipped: list[str],
                failed: list[str], patches_added: int) -> list[dict]:
    """The manifest's version ``history`` with this run appended."""
    return [*previous, {
        "version": len(previous) + 1,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "append" if previous else "build",
        "products_source": cfg.products,
        "products_added": sorted(added),
        "products_skipped_existing": sorted(skipped),
        "products_failed": sorted(failed),
        "patches_added": patches_added,
    }]


@dataclass
class ExistingDataset:
    """A committed dataset that ``--append`` extends.

    Args:
        root: its folder.
        manifest: its ``manifest.json``.
    """

    root: Path
    manifest: dict

    @classmethod
    def load(cls, root: Path, cfg: BuildConfig) -> ExistingDataset:
        """Open ``root`` for an append with ``cfg``.

        Raises:
            InputNotFoundError: ``root`` is not a folder.
            IncompleteDatasetError: it lacks ``_SUCCESS``.
            ConfigError: it was not written by ``build``, or ``cfg`` differs from its config
                in a key that shapes the rows (see :data:`DATASET_KEYS`).
        """
        layout = DatasetLayout(root)
        if not root.is_dir():
            raise InputNotFoundError(
                f"--append: {root} is not a dataset folder; choose the folder of a dataset "
                "written by `bigearthnet build`"
            )
        if not layout.success.exists():
            raise IncompleteDatasetError(
                f"--append: {root} has no {layout.success.name} marker, so it is not a complete "
                "dataset; rebuild it without --append (or with --overwrite)"
            )
        manifest = json.loads(layout.manifest.read_text())
        if not layout.build_config.exists():
            raise ConfigError(
                f"--append: {root} was not written by `bigearthnet build` (no "
                f"{layout.build_config.name}); only build outputs can be appended to"
            )
        old = json.loads(layout.build_config.read_text())
        new = json.loads(cfg.model_dump_json())
        diff = [k for k in DATASET_KEYS if old.get(k) != new.get(k)]
        if diff:
            detail = "; ".join(f"{k}: dataset {old.get(k)!r}, now {new.get(k)!r}" for k in diff)
            raise ConfigError(
                f"--append: the config differs from the one {root} was built with ({detail}); "
                f"use the values in {layout.build_config}, or build a new dataset"
            )
        if new["clc"] is not None and not layout.histograms.exists():
            raise ConfigError(
                f"--append: {root} has no {layout.histograms.name} (written by builds "
                "since per-product histograms were added); rebuild it once without --append"
            )
        return cls(root, manifest)

    @property
    def product_ids(self) -> set[str]:
        """The products already in the dataset."""
        return {p["product_id"] for p in self.manifest["products"]}

    @property
    def history(self) -> list[dict]:
        """The version history so far (a dataset from before histories counts as version 1)."""
        return self.manifest.get("history") or [{
            "version": 1, "mode": "build", "created_utc": None,
            "products_source": self.manifest["config"]["products"],
            "products_added": sorted(self.product_ids), "products_skipped_existing": [],
            "products_failed": [], "patches_added": self.manifest["counts"]["patches_cut"],
        }]

    def partition(self, sources: list[ProductSource]) -> tuple[list[ProductSource], list[str]]:
        """Split discovered products into (new ones, ids of those already in the dataset)."""
        have = self.product_ids
        new = [s for s in sources if s.product_id not in have]
        return new, sorted(s.product_id for s in sources if s.product_id in have)

    def link_into(self, staging: Path) -> None:
        """Give ``staging`` the existing patch files, as hard links (copies where the
        filesystem has none), and the old metadata as one more metadata part."""
        src, dst = DatasetLayout(self.root), DatasetLayout(staging)
        for f in sorted(src.patches.rglob("*.parquet")):
            target = dst.root / f.relative_to(src.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, target)
            except OSError:
                shutil.copy2(f, target)
        if src.metadata.exists():
            dst.metadata_parts.mkdir(parents=True, exist_ok=True)
            os.link(src.metadata, dst.metadata_part("_existing"))

    def summaries(self) -> list[dict]:
        """Summary rows of the existing products, as the build tasks return them, so the
        driver merges old and new products alike."""
        hist = {}
        path = DatasetLayout(self.root).histograms
        if path.exists():
            t = pq.read_table(path)
            hist = dict(zip(t["product_id"].to_pylist(), t["histograms"].to_pylist()))
        rows = []
        for p in self.manifest["products"]:
            row = dict(p)
            row.update(status="ok", files=json.dumps(p["files"]),
                       counts=json.dumps(p["counts"], sort_keys=True),
                       clc=json.dumps(p.get("clc") or {}, sort_keys=True),
                       histograms=hist.get(p["product_id"]))
            rows.append(row)
        return rows
