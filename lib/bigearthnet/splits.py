"""Train / validation / test splits: hash-random, reBEN rings, official v1 CSVs.

Split names are :data:`SPLITS` = ``("train", "validation", "test")``. Every function is
deterministic: the random split hashes the patch id with the seed (no random generator state),
so the same patch gets the same split on any executor, in any order, in any partitioning.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bigearthnet.constants import SPLITS
from bigearthnet.errors import ConfigError, LabelingInputError, SplitListError
from bigearthnet.quality import read_name_list

RING_TEST_MAX = 0.5
"""reBEN: centroids with normalised Chebyshev distance <= 0.5 (inner square, 1/4 area) -> test."""

RING_VALIDATION_MAX = math.sqrt(0.5)
"""reBEN: 0.5 < d <= sqrt(1/2) (middle ring, 1/4 area) -> validation; d > sqrt(1/2) -> train."""


def hash_unit(patch_id: str, seed: int | str) -> float:
    """A uniform number in [0, 1) from ``blake2b(f"{seed}:{patch_id}")`` (first 8 bytes).

    Args:
        patch_id: the unique patch id (the v2/reBEN name).
        seed: the split seed.
    """
    digest = hashlib.blake2b(f"{seed}:{patch_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def random_split(
    patch_ids: Sequence[str] | np.ndarray,
    seed: int | str,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> np.ndarray:
    """The paper's random 60/20/20 split, decided per patch by a hash of ``seed:patch_id``.

    Patch ``p`` goes to train when ``u < f_train``, to validation when
    ``u < f_train + f_val``, else to test, with ``u = hash_unit(p, seed)``. The assignment of a
    patch never depends on the other patches.

    Args:
        patch_ids: unique patch ids (use the v2 name: v1 names collide across tiles).
        seed: split seed.
        fractions: (train, validation, test), non-negative, summing to 1.

    Returns:
        ``object`` array of split names, one per id.

    Raises:
        LabelingInputError: invalid fractions.
    """
    if (
        len(fractions) != 3
        or any(f < 0 for f in fractions)
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-9)
    ):
        raise LabelingInputError(
            f"random_split: fractions must be 3 non-negative numbers summing to 1, got {fractions}"
        )
    u = np.fromiter((hash_unit(str(p), seed) for p in patch_ids), dtype=np.float64)
    cut1 = fractions[0]
    cut2 = fractions[0] + fractions[1]
    out = np.full(len(u), SPLITS[2], dtype=object)
    out[u < cut2] = SPLITS[1]
    out[u < cut1] = SPLITS[0]
    return out


def reben_ring_distance(
    col: np.ndarray | Sequence[int], row: np.ndarray | Sequence[int], n_cols: int, n_rows: int,
    extent: tuple[float, float] | None = None,
) -> np.ndarray:
    """Normalised Chebyshev distance of patch centroids from the tile centre.

    ``d = max(|cx - w/2| / (w/2), |cy - h/2| / (h/2))`` with centroid ``(col + 0.5, row + 0.5)``
    in patch units and ``(w, h)`` the tile's full extent: 0 at the centre, 1 at the tile edge.
    The square ``d <= t`` covers ``t²`` of the tile area. The real archive centres the rings on
    the whole tile, 10980 px = 91.5 patches, not on the 91 whole patches, so they are not
    symmetric in patch units: on a full tile column 68 is inside the test square and column 22
    is not.

    Args:
        col: patch column(s).
        row: patch row(s).
        n_cols: whole patch columns in the tile (91 for a full tile).
        n_rows: whole patch rows in the tile.
        extent: the tile's full (width, height) in patch units, e.g. ``(91.5, 91.5)`` for a
            full tile; default ``(n_cols, n_rows)``.
    """
    if n_cols <= 0 or n_rows <= 0:
        raise LabelingInputError(f"reben_split: bad grid {n_cols}x{n_rows}")
    c = np.asarray(col, dtype=np.float64)
    r = np.asarray(row, dtype=np.float64)
    if ((c < 0) | (c >= n_cols) | (r < 0) | (r >= n_rows)).any():
        raise LabelingInputError(f"reben_split: col/row outside the {n_cols}x{n_rows} grid")
    width, height = (float(n_cols), float(n_rows)) if extent is None else map(float, extent)
    if width < n_cols or height < n_rows:
        raise LabelingInputError(f"reben_split: extent {extent} is smaller than the {n_cols}x{n_rows} grid")
    hx, hy = width / 2.0, height / 2.0
    return np.maximum(np.abs(c + 0.5 - hx) / hx, np.abs(r + 0.5 - hy) / hy)


def reben_split(
    col: np.ndarray | Sequence[int], row: np.ndarray | Sequence[int], n_cols: int, n_rows: int,
    extent: tuple[float, float] | None = None,
) -> np.ndarray:
    """reBEN's spatial split per tile: concentric squares of patch centroids.

    * inner square ``d <= 0.5`` (¼ of the tile area) -> ``test``;
    * middle ring ``0.5 < d <= sqrt(1/2)`` (¼) -> ``validation``;
    * outer ring ``d > sqrt(1/2)`` (½) -> ``train``;

    with ``d`` from :func:`reben_ring_distance`. On a full tile (91 x 91 whole patches, rings
    on the 91.5-patch extent) this gives 4056 / 2109 / 2116 patches (49.0 / 25.5 / 25.6 %).

    Args:
        col: patch column(s), 0..n_cols-1.
        row: patch row(s), 0..n_rows-1.
        n_cols: patch columns in the tile.
        n_rows: patch rows in the tile.
        extent: the tile's full extent in patch units (see :func:`reben_ring_distance`).

    Returns:
        ``object`` array of split names, shaped like ``col``.
    """
    d = reben_ring_distance(col, row, n_cols, n_rows, extent)
    out = np.full(d.shape, SPLITS[0], dtype=object)
    out[d <= RING_VALIDATION_MAX] = SPLITS[1]
    out[d <= RING_TEST_MAX] = SPLITS[2]
    return out


OFFICIAL_STEMS: tuple[str, str, str] = ("train", "val", "test")
"""File stems of the official v1 split files, in :data:`SPLITS` order."""


def read_official_lists(
    train_csv: str | os.PathLike[str],
    val_csv: str | os.PathLike[str],
    test_csv: str | os.PathLike[str],
) -> dict[str, str]:
    """v1 name -> split from the three official split files.

    Raises:
        InputNotFoundError: a file is missing.
        SplitListError: a name appears in two different split files.
    """
    lookup: dict[str, str] = {}
    for split, path in zip(SPLITS, (train_csv, val_csv, test_csv), strict=True):
        for name in read_name_list(path):
            previous = lookup.setdefault(name, split)
            if previous != split:
                raise SplitListError(
                    f"patch {name} is listed in both the {previous} and the {split} split files "
                    f"({path}); the official split files must be disjoint"
                )
    return lookup


def official_lookup(folder: str | os.PathLike[str] | None) -> dict[str, str]:
    """v1 name -> split from ``train``/``val``/``test`` ``.csv`` (or ``.csv.bz2``/``.csv.gz``)
    in ``folder``.

    Raises:
        ConfigError: no folder given.
        InputNotFoundError: a split file is missing.
        SplitListError: the files overlap.
    """
    if not folder:
        raise ConfigError("split: official needs official_splits: a folder with train/val/test CSVs")
    paths = []
    for stem in OFFICIAL_STEMS:
        candidates = [Path(folder) / f"{stem}{ext}" for ext in (".csv", ".csv.bz2", ".csv.gz")]
        paths.append(next((c for c in candidates if c.exists()), candidates[0]))
    return read_official_lists(*paths)


def official_split(
    names_v1: Sequence[str] | np.ndarray,
    train_csv: str | os.PathLike[str],
    val_csv: str | os.PathLike[str],
    test_csv: str | os.PathLike[str],
) -> np.ndarray:
    """Look patches up in the official BigEarthNet v1 split files.

    Args:
        names_v1: v1 names of the patches (``S2A_MSIL2A_20170617T113321_36_85``). v1 names are
            not unique across tiles of one datatake; colliding patches all get the listed split.
        train_csv: ``train.csv`` (headerless, one name per line; ``.bz2``/``.gz`` accepted).
        val_csv: ``val.csv``.
        test_csv: ``test.csv``.

    Returns:
        ``object`` array: ``"train"``, ``"validation"``, ``"test"`` or ``None`` when the name
        is in no file.

    Raises:
        InputNotFoundError: a file is missing.
        SplitListError: a name appears in two different split files.
    """
    lookup = read_official_lists(train_csv, val_csv, test_csv)
    return np.array([lookup.get(str(n)) for n in names_v1], dtype=object)
