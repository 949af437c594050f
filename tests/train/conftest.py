"""Fixtures for the training tests: a small *learnable* fake dataset and one shared tiny run.

The dataset follows the build contract (``patches/split=<split>/*.parquet`` with the schema in
the Parquet metadata, ``stats.json``, ``manifest.json``, ``_SUCCESS``) but holds only the
columns training and evaluation read: ``patch_id``, the three band tensors and both multi-hot
columns.

Labels are a function of the pixels: each of B04, B03, B02 is either dark (~1000) or bright
(~3000) over the whole patch, plus noise; class ``k`` (k = 0, 1, 2) is present iff band
``(B04, B03, B02)[k]`` is bright, and class 3 iff none is. So both S-CNN variants can learn the
labels from RGB, and the best constant prediction is far from perfect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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

SUBSET_SCHEMA = PatchSchema((LABELED_PATCH_SCHEMA["patch_id"], BANDS_10M, BANDS_20M, BANDS_60M,
                             MULTI_HOT_43, MULTI_HOT_19))
LAYOUT: dict[str, list[list[int]]] = {
    "train": [[16, 16], [16, 16]],
    "validation": [[8, 8], [8]],
    "test": [[8, 8]],
}
ACTIVE = ("B04", "B03", "B02")  # class k <-> band ACTIVE[k] bright; class 3 <-> none bright


@dataclass
class LearnableDataset:
    """A written dataset and its truth."""

    root: Path
    ids: dict[str, list[str]] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)


def _rows(n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    bright = rng.random((n, len(ACTIVE))) < 0.5
    b10 = rng.integers(900, 1100, size=(n, 4, 120, 120), dtype=np.uint16)
    for k, band in enumerate(ACTIVE):
        b10[:, GROUPS[10].index(band)] += (bright[:, k] * 2000).astype(np.uint16)[:, None, None]
    b20 = rng.integers(1400, 1600, size=(n, 6, 60, 60), dtype=np.uint16)
    b60 = rng.integers(1400, 1600, size=(n, 2, 20, 20), dtype=np.uint16)
    hot = np.zeros((n, 43), dtype=np.uint8)
    hot[:, :3] = bright
    hot[:, 3] = ~bright.any(axis=1)
    hot19 = np.zeros((n, 19), dtype=np.uint8)
    hot19[:, :4] = hot[:, :4]
    return {"bands_10m": b10, "bands_20m": b20, "bands_60m": b60, "multi_hot_43": hot,
            "multi_hot_19": hot19}, hot


def write_learnable_dataset(root: Path, layout: dict[str, list[list[int]]] | None = None,
                            seed: int = 0, success: bool = True) -> LearnableDataset:
    """Write the learnable dataset at ``root``.

    Args:
        root: folder to create.
        layout: split -> files -> row-group sizes.
        seed: seed of every value.
        success: write the ``_SUCCESS`` marker.
    """
    layout = LAYOUT if layout is None else layout
    rng = np.random.default_rng(seed)
    schema = SUBSET_SCHEMA.to_arrow()
    out = LearnableDataset(root=root, class_names=[f"class {j:02d}" for j in range(43)])
    sums = {b: [0.0, 0.0, 0] for b in BAND_NAMES}
    for s_idx, (split, files) in enumerate(layout.items()):
        folder = root / "patches" / f"split={split}"
        folder.mkdir(parents=True, exist_ok=True)
        out.ids[split], labels = [], []
        for f_idx, groups in enumerate(files):
            product = f"S2A_MSIL2A_2017061{s_idx}T1133{f_idx:02d}_N0205_R080_T29UPU_20170617T113319"
            with pq.ParquetWriter(str(folder / f"{product}.parquet"), schema,
                                  compression="none") as writer:
                row = 0
                for n in groups:
                    ids = [f"S2A_MSIL2A_2017061{s_idx}T1133{f_idx:02d}_N9999_R080_T29UPU_{c}_0"
                           for c in range(row, row + n)]
                    arrays, hot = _rows(n, rng)
                    cols = {"patch_id": pa.array(ids, pa.string())}
                    for col in SUBSET_SCHEMA.tensors:
                        cols[col.name] = encode_tensor(arrays[col.name], col)
                    writer.write_batch(pa.record_batch([cols[c] for c in schema.names],
                                                       schema=schema), row_group_size=n)
                    out.ids[split].extend(ids)
                    labels.append(hot)
                    row += n
                    if split == "train":
                        for res, key in ((10, "bands_10m"), (20, "bands_20m"), (60, "bands_60m")):
                            for i, band in enumerate(GROUPS[res]):
                                v = arrays[key][:, i].astype(np.float64)
                                sums[band][0] += v.sum()
                                sums[band][1] += (v * v).sum()
                                sums[band][2] += v.size
        out.labels[split] = np.concatenate(labels)
    bands = {}
    for band, (s, s2, n) in sums.items():
        mean = s / n if n else 1500.0
        std = max((s2 / n - mean * mean) ** 0.5, 1.0) if n else 500.0
        bands[band] = {"mean": mean, "std": std}
    (root / "stats.json").write_text(json.dumps({"split": "train", "bands": bands}))
    (root / "manifest.json").write_text(json.dumps({
        "class_orders": {"labels_43": out.class_names,
                         "labels_19": [f"class {j:02d}" for j in range(19)]},
        "schema": SUBSET_SCHEMA.to_json(),
    }))
    if success:
        (root / "_SUCCESS").write_text("")
    return out


def tiny_config(dataset: Path, out: Path, **overrides):
    """A TrainConfig that trains S-CNN-RGB on the learnable dataset in a few seconds.

    With these settings (16 steps of 4 patches per epoch) the validation sample F1 rises from
    ~0.5 after epoch 1 to ~0.8 after epoch 3; the best constant prediction scores ~0.6.
    """
    from bigearthnet.train.config import TrainConfig

    base = {"dataset": str(dataset), "out": str(out), "model": "s-cnn-rgb", "epochs": 3,
            "label_set": "19", "batch_size": 4, "lr": 0.03, "momentum": 0.9, "fc_width": 16,
            "seed": 7, "num_workers": 0, "buffer_size": 32, "device": "cpu", "progress": False}
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="session")
def make_config():
    """The :func:`tiny_config` factory (test modules cannot import this conftest by name)."""
    return tiny_config


@pytest.fixture(scope="session")
def make_dataset():
    """The :func:`write_learnable_dataset` writer."""
    return write_learnable_dataset


@pytest.fixture(scope="session")
def learnable(tmp_path_factory) -> LearnableDataset:
    """The learnable dataset (shared, read-only)."""
    return write_learnable_dataset(tmp_path_factory.mktemp("learnable") / "dataset")


@pytest.fixture(scope="session")
def trained_run(learnable, tmp_path_factory) -> dict:
    """One finished 3-epoch S-CNN-RGB run (shared, read-only): train()'s result."""
    from bigearthnet.train.loop import train

    out = tmp_path_factory.mktemp("runs") / "s-cnn-rgb"
    return train(tiny_config(learnable.root, out))
