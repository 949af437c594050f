"""One seeded factory of small fake datasets in the build's layout, for tests and benchmarks.

Two recipes, both written through the dataset layout and the schema definitions:

* ``"random"``: every column of the labeled patch table (``LABELED_PATCH_SCHEMA``) with seeded
  random values; class names ``c0`` … ``c42``; each 16-bit band offset by ``1000 x`` its index
  in its group, so band mix-ups show in the numbers. For loader and format tests.
* ``"learnable"``: only the columns training reads (``patch_id``, the three band tensors, both
  multi-hot columns), and labels that are a function of the pixels: each of B04, B03, B02 is
  dark (~1000) or bright (~3000) over the whole patch; class ``k`` (k = 0, 1, 2) is present iff
  band ``(B04, B03, B02)[k]`` is bright, class 3 iff none is. Both S-CNN variants can learn it,
  and the best constant prediction is far from perfect. For training tests and benchmarks.

``layout`` maps each split to its files, each a list of row-group sizes; files hold several row
groups of uneven sizes so sharding and shuffling are exercised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from bigearthnet.constants import PATCH_SIZE_M
from bigearthnet.dataset.layout import DatasetLayout
from bigearthnet.dataset.schema import (
    BANDS_10M,
    BANDS_20M,
    BANDS_60M,
    LABELED_PATCH_SCHEMA,
    MULTI_HOT_19,
    MULTI_HOT_43,
    PatchSchema,
    encode_tensor,
)
from bigearthnet.sentinel2.bands import BAND_NAMES, GROUPS

Recipe = Literal["random", "learnable"]

LAYOUTS: dict[str, dict[str, list[list[int]]]] = {
    "random": {"train": [[7, 3, 11], [5], [2, 9, 4, 6]], "validation": [[6, 4], [3]],
               "test": [[5, 8]]},
    "learnable": {"train": [[16, 16], [16, 16]], "validation": [[8, 8], [8]], "test": [[8, 8]]},
}
"""The default layout of each recipe."""

TRAINING_SCHEMA = PatchSchema((LABELED_PATCH_SCHEMA["patch_id"], BANDS_10M, BANDS_20M, BANDS_60M,
                               MULTI_HOT_43, MULTI_HOT_19))
"""The columns of the ``learnable`` recipe."""

ACTIVE = ("B04", "B03", "B02")
"""``learnable``: class k is present iff band ``ACTIVE[k]`` is bright; class 3 iff none is."""

_TILES = ["T29UPU", "T33UUP", "T29UPV", "T31TCJ", "T32TQR", "T34VER"]


@dataclass
class FakeDataset:
    """A written fake dataset and the truth it was made from.

    Attributes:
        root: the dataset folder.
        ids: split -> patch ids in file and row order.
        files: split -> Parquet files.
        labels: split -> ``(n, 43)`` uint8 multi-hot, in ``ids`` order.
        class_names: the 43 class names of the manifest.
        stats: the ``stats.json`` document.
    """

    root: Path
    ids: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def _neutral(arrow_type: pa.DataType, n: int) -> pa.Array:
    """``n`` zeros, empty strings, empty lists or ``False`` of a scalar type."""
    if pa.types.is_list(arrow_type):
        value = []
    elif pa.types.is_string(arrow_type):
        value = ""
    elif pa.types.is_boolean(arrow_type):
        value = False
    else:
        value = 0
    return pa.array([value] * n, arrow_type)


def _random_columns(ids: list[str], product: str, first_row: int,
                    rng: np.random.Generator) -> tuple[dict[str, pa.Array], np.ndarray]:
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
        "footprint": pa.array([shapely.box(600000 + PATCH_SIZE_M * i, 5900000,
                                           600000 + PATCH_SIZE_M * (i + 1),
                                           5900000 + PATCH_SIZE_M).wkb for i in range(n)],
                              pa.binary()),
        "has_nodata": pa.array(np.zeros(n, dtype=bool)),
        "labels_43": pa.array([[f"c{j}" for j in np.flatnonzero(h)] for h in hot43],
                              pa.list_(pa.string())),
        "labels_19": pa.array([[f"c{j}" for j in np.flatnonzero(h)] for h in hot19],
                              pa.list_(pa.string())),
        "clc_codes": pa.array([["211"]] * n, pa.list_(pa.string())),
        "clc_area_fractions": pa.array([[1.0]] * n, pa.list_(pa.float32())),
    }
    for name in ("unlabeled_fraction", "cloud_fraction", "shadow_fraction", "snow_fraction",
                 "nodata_fraction"):
        cols[name] = pa.array(np.zeros(n, dtype=np.float32))
    cols["contains_seasonal_snow"] = pa.array(np.zeros(n, dtype=bool))
    cols["contains_cloud_or_shadow"] = pa.array(np.zeros(n, dtype=bool))
    for f in LABELED_PATCH_SCHEMA.to_arrow():  # any other scalar column: a neutral value
        if f.name not in cols and not pa.types.is_binary(f.type):
            cols[f.name] = _neutral(f.type, n)
    for col in LABELED_PATCH_SCHEMA.tensors:
        if col.name == "multi_hot_43":
            values = hot43
        elif col.name == "multi_hot_19":
            values = hot19
        elif col.dtype == "<u2":
            base = (np.arange(col.shape[0], dtype=np.uint16) * 1000)[:, None, None]
            values = base + rng.integers(0, 4000, size=(n, *col.shape), dtype=np.uint16)
        else:
            values = rng.integers(0, 12, size=(n, *col.shape), dtype=np.uint8)
        cols[col.name] = encode_tensor(values, col)
    return cols, hot43


def _learnable_arrays(n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    bright = rng.random((n, len(ACTIVE))) < 0.5
    b10 = rng.integers(900, 1100, size=(n, *BANDS_10M.shape), dtype=np.uint16)
    for k, band in enumerate(ACTIVE):
        b10[:, GROUPS[10].index(band)] += (bright[:, k] * 2000).astype(np.uint16)[:, None, None]
    b20 = rng.integers(1400, 1600, size=(n, *BANDS_20M.shape), dtype=np.uint16)
    b60 = rng.integers(1400, 1600, size=(n, *BANDS_60M.shape), dtype=np.uint16)
    hot = np.zeros((n, 43), dtype=np.uint8)
    hot[:, :3] = bright
    hot[:, 3] = ~bright.any(axis=1)
    hot19 = np.zeros((n, 19), dtype=np.uint8)
    hot19[:, :4] = hot[:, :4]
    return {"bands_10m": b10, "bands_20m": b20, "bands_60m": b60, "multi_hot_43": hot,
            "multi_hot_19": hot19}, hot


def write_fake_dataset(root: str | Path, layout: dict[str, list[list[int]]] | None = None, *,
                       recipe: Recipe = "random", seed: int = 0, success: bool = True,
                       compression: str = "zstd") -> FakeDataset:
    """Write a fake dataset at ``root`` (created) and return what it holds.

    Args:
        root: dataset folder to create.
        layout: split -> files -> row-group sizes (default: the recipe's).
        recipe: ``"random"`` (every column) or ``"learnable"`` (training columns).
        seed: seed of every value.
        success: write the ``_SUCCESS`` marker.
        compression: Parquet codec (``none`` for uncompressed).
    """
    root = Path(root)
    paths = DatasetLayout(root)
    layout = LAYOUTS[recipe] if layout is None else layout
    rng = np.random.default_rng(seed)
    schema = (LABELED_PATCH_SCHEMA if recipe == "random" else TRAINING_SCHEMA)
    arrow = schema.to_arrow()
    prefix = "c" if recipe == "random" else "class "
    out = FakeDataset(root=root, class_names=[f"{prefix}{j:02d}" if recipe == "learnable"
                                              else f"{prefix}{j}" for j in range(43)])
    sums = {b: [0.0, 0.0, 0] for b in BAND_NAMES}
    for s_idx, (split, files) in enumerate(layout.items()):
        paths.split_dir(split).mkdir(parents=True, exist_ok=True)
        out.ids[split], out.files[split], labels = [], [], []
        for f_idx, group_sizes in enumerate(files):
            tile = _TILES[(s_idx * 3 + f_idx) % len(_TILES)] if recipe == "random" else "T29UPU"
            datatake = f"2017061{s_idx}T1133{f_idx:02d}"
            product = f"S2A_MSIL2A_{datatake}_N0205_R080_{tile}_20170617T113319"
            path = paths.patch_file(split, product)
            codec = None if compression == "none" else compression
            with pq.ParquetWriter(str(path), arrow, compression=codec) as writer:
                row = 0
                for n in group_sizes:
                    ids = [f"S2A_MSIL2A_{datatake}_N9999_R080_{tile}_{c}_"
                           f"{row // 50 if recipe == 'random' else 0}" for c in range(row, row + n)]
                    if recipe == "random":
                        cols, hot = _random_columns(ids, product, row, rng)
                    else:
                        arrays, hot = _learnable_arrays(n, rng)
                        cols = {"patch_id": pa.array(ids, pa.string())}
                        for col in schema.tensors:
                            cols[col.name] = encode_tensor(arrays[col.name], col)
                        if split == "train":
                            for res, key in ((10, "bands_10m"), (20, "bands_20m"), (60, "bands_60m")):
                                for i, band in enumerate(GROUPS[res]):
                                    v = arrays[key][:, i].astype(np.float64)
                                    sums[band][0] += v.sum()
                                    sums[band][1] += (v * v).sum()
                                    sums[band][2] += v.size
                    writer.write_batch(pa.record_batch([cols[c] for c in arrow.names], schema=arrow),
                                       row_group_size=n)
                    out.ids[split].extend(ids)
                    labels.append(hot)
                    row += n
            out.files[split].append(path)
        out.labels[split] = np.concatenate(labels) if labels else np.zeros((0, 43), np.uint8)
    if recipe == "random":
        out.stats = {"split": "train", "n_patches": len(out.ids.get("train", [])),
                     "bands": {b: {"mean": 500.0 + 100 * i, "std": 250.0 + 10 * i, "min": 0.0,
                                   "max": 10000.0, "p01": 1.0, "p99": 9000.0}
                               for i, b in enumerate(BAND_NAMES)}}
    else:
        bands = {}
        for band, (s, s2, n) in sums.items():
            mean = s / n if n else 1500.0
            std = max((s2 / n - mean * mean) ** 0.5, 1.0) if n else 500.0
            bands[band] = {"mean": mean, "std": std}
        out.stats = {"split": "train", "bands": bands}
    paths.stats.write_text(json.dumps(out.stats))
    names19 = [f"{prefix}{j:02d}" if recipe == "learnable" else f"{prefix}{j}" for j in range(19)]
    paths.manifest.write_text(json.dumps({
        "class_orders": {"labels_43": out.class_names, "labels_19": names19},
        "schema": schema.to_json(),
    }))
    if success:
        paths.success.write_text("")
    return out
