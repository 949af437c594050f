"""Fixtures for the dataset tests: a factory that writes small fake BigEarthNet datasets.

The layout follows the contract of ``bigearthnet build``::

    DATASET/patches/split=<train|validation|test>/<product_id>.parquet   (LABELED_PATCH_SCHEMA)
    DATASET/stats.json        per-band mean/std/min/max/p01/p99 of the train split
    DATASET/manifest.json     class_orders + schema
    DATASET/_SUCCESS

Values are seeded random numbers; every file has several row groups of uneven sizes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

from bigearthnet.dataset.schema import LABELED_PATCH_SCHEMA, encode_tensor
from bigearthnet.sentinel2.bands import BAND_NAMES

# split -> one list of row-group sizes per file
DEFAULT_LAYOUT: dict[str, list[list[int]]] = {
    "train": [[7, 3, 11], [5], [2, 9, 4, 6]],
    "validation": [[6, 4], [3]],
    "test": [[5, 8]],
}


@dataclass
class FakeDataset:
    """A written fake dataset and the truth it was made from."""

    root: Path
    ids: dict[str, list[str]] = field(default_factory=dict)
    """split -> patch_ids in file/row order."""
    files: dict[str, list[Path]] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)


def _column_arrays(ids: list[str], product: str, first_row: int,
                   rng: np.random.Generator) -> dict[str, pa.Array]:
    """One row group's worth of values for every column of LABELED_PATCH_SCHEMA."""
    n = len(ids)
    tile = product.split("_")[5]
    hot43 = (rng.random((n, 43)) < 0.1).astype(np.uint8)
    hot19 = (rng.random((n, 19)) < 0.15).astype(np.uint8)
    cols: dict[str, pa.Array] = {
        "patch_id": pa.array(ids, pa.string()),
        "patch_id_v1": pa.array([i.replace("_N9999_R080_" + tile, "") for i in ids], pa.string()),
        "product_id": pa.array([product] * n, pa.string()),
        "tile_id": pa.array([tile] * n, pa.string()),
        "sensing_time": pa.array([datetime(2017, 6, 17, 11, 33, 21, tzinfo=UTC)] * n,
                                 pa.timestamp("us", tz="UTC")),
        "col": pa.array(np.arange(first_row, first_row + n, dtype=np.int16)),
        "row": pa.array(np.full(n, first_row, dtype=np.int16)),
        "epsg": pa.array(np.full(n, 32629, dtype=np.int32)),
        "footprint": pa.array([shapely.box(600000 + 1200 * i, 5900000, 601200 + 1200 * i, 5901200).wkb
                               for i in range(n)], pa.binary()),
        "has_nodata": pa.array(np.zeros(n, dtype=bool)),
        "labels_43": pa.array([[f"c{j}" for j in np.flatnonzero(h)] for h in hot43], pa.list_(pa.string())),
        "labels_19": pa.array([[f"c{j}" for j in np.flatnonzero(h)] for h in hot19], pa.list_(pa.string())),
        "clc_codes": pa.array([["211"]] * n, pa.list_(pa.string())),
        "clc_area_fractions": pa.array([[1.0]] * n, pa.list_(pa.float32())),
    }
    for name in ("unlabeled_fraction", "cloud_fraction", "shadow_fraction", "snow_fraction",
                 "nodata_fraction"):
        cols[name] = pa.array(np.zeros(n, dtype=np.float32))
    cols["contains_seasonal_snow"] = pa.array(np.zeros(n, dtype=bool))
    cols["contains_cloud_or_shadow"] = pa.array(np.zeros(n, dtype=bool))
    for col in LABELED_PATCH_SCHEMA.tensors:
        if col.name == "multi_hot_43":
            values = hot43
        elif col.name == "multi_hot_19":
            values = hot19
        elif col.dtype == "<u2":
            # per-band offset so band mix-ups are visible in the numbers
            base = (np.arange(col.shape[0], dtype=np.uint16) * 1000)[:, None, None]
            values = base + rng.integers(0, 4000, size=(n, *col.shape), dtype=np.uint16)
        else:
            values = rng.integers(0, 12, size=(n, *col.shape), dtype=np.uint8)
        cols[col.name] = encode_tensor(values, col)
    return cols


def write_fake_dataset(root: Path, layout: dict[str, list[list[int]]] | None = None, seed: int = 0,
                       success: bool = True, compression: str = "zstd") -> FakeDataset:
    """Write a fake dataset at ``root`` (created) and return what it holds.

    Args:
        root: dataset folder to create.
        layout: split -> list of files, each a list of row-group sizes.
        seed: seed of all random values.
        success: write the ``_SUCCESS`` marker.
        compression: Parquet codec (``none`` for uncompressed).
    """
    layout = DEFAULT_LAYOUT if layout is None else layout
    rng = np.random.default_rng(seed)
    schema = LABELED_PATCH_SCHEMA.to_arrow()
    out = FakeDataset(root=root)
    tiles = ["T29UPU", "T33UUP", "T29UPV", "T31TCJ", "T32TQR", "T34VER"]
    for s_idx, (split, files) in enumerate(layout.items()):
        split_dir = root / "patches" / f"split={split}"
        split_dir.mkdir(parents=True, exist_ok=True)
        out.ids[split], out.files[split] = [], []
        for f_idx, group_sizes in enumerate(files):
            tile = tiles[(s_idx * 3 + f_idx) % len(tiles)]
            product = f"S2A_MSIL2A_2017061{s_idx}T1133{f_idx:02d}_N0205_R080_{tile}_20170617T113319"
            path = split_dir / f"{product}.parquet"
            with pq.ParquetWriter(str(path), schema, compression=None if compression == "none"
                                  else compression) as writer:
                row = 0
                for n in group_sizes:
                    # reBEN-style names, unique within the dataset (datatake differs per file)
                    ids = [f"S2A_MSIL2A_2017061{s_idx}T1133{f_idx:02d}_N9999_R080_{tile}_{c}_{row // 50}"
                           for c in range(row, row + n)]
                    cols = _column_arrays(ids, product, row, rng)
                    batch = pa.record_batch([cols[name] for name in schema.names], schema=schema)
                    writer.write_batch(batch, row_group_size=n)
                    out.ids[split].extend(ids)
                    row += n
            out.files[split].append(path)
    out.stats = {"split": "train", "n_patches": len(out.ids.get("train", [])),
                 "bands": {b: {"mean": 500.0 + 100 * i, "std": 250.0 + 10 * i, "min": 0.0,
                               "max": 10000.0, "p01": 1.0, "p99": 9000.0}
                           for i, b in enumerate(BAND_NAMES)}}
    (root / "stats.json").write_text(json.dumps(out.stats))
    (root / "manifest.json").write_text(json.dumps({
        "class_orders": {"labels_43": [f"c{j}" for j in range(43)],
                         "labels_19": [f"c{j}" for j in range(19)]},
        "schema": LABELED_PATCH_SCHEMA.to_json(),
    }))
    if success:
        (root / "_SUCCESS").write_text("")
    return out


@pytest.fixture(scope="session")
def fake_dataset_factory(tmp_path_factory) -> Callable[..., FakeDataset]:
    """``factory(name, **kwargs)`` writes a fake dataset into a fresh session tmp dir."""

    def factory(name: str = "ds", **kwargs) -> FakeDataset:
        return write_fake_dataset(tmp_path_factory.mktemp(name) / "dataset", **kwargs)

    return factory


@pytest.fixture(scope="session")
def fake_dataset(fake_dataset_factory) -> FakeDataset:
    """The default 3-split fake dataset (shared, read-only)."""
    return fake_dataset_factory("default")

