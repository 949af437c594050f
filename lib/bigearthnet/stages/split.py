"""Stage *split*: train / validation / test for every patch (random, reBEN rings, official).

Deterministic per patch (see :mod:`bigearthnet.splits`): a patch's split never depends on the
other patches, on the executor or on the partitioning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bigearthnet.splits import official_lookup, random_split, reben_split

NOT_IN_SPLIT = "not_in_split"
"""Drop reason of a patch that no official split file lists."""


@dataclass(frozen=True)
class SplitRule:
    """How splits are assigned.

    Args:
        kind: ``random``, ``reben`` or ``official``.
        seed: seed of the random split.
        fractions: (train, validation, test) of the random split.
        official: v1 name -> split (official split files), for ``kind="official"``.
    """

    kind: str
    seed: int = 0
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    official: dict[str, str] | None = None

    @classmethod
    def create(cls, kind: str, seed: int, fractions: tuple[float, float, float],
               official_dir: str | None) -> SplitRule:
        """A rule; reads the official split files when ``kind="official"``.

        Raises:
            ConfigError: ``official`` without a folder.
            InputNotFoundError, SplitListError: missing or overlapping split files.
        """
        official = official_lookup(official_dir) if kind == "official" else None
        return cls(kind, seed, tuple(fractions), official)

    def assign(self, patch_ids: Sequence[str], names_v1: Sequence[str], cols: np.ndarray,
               rows: np.ndarray, n_cols: int, n_rows: int,
               extent: tuple[float, float] | None = None) -> np.ndarray:
        """The split of each patch (``None`` where an official split lists it nowhere).

        Args:
            patch_ids: unique (v2) ids, hashed by the random split.
            names_v1: v1 names, looked up in the official files.
            cols: patch columns (reBEN rings).
            rows: patch rows.
            n_cols: patch columns of the tile.
            n_rows: patch rows of the tile.
            extent: the tile's full extent in patch units (columns, rows), on which the reBEN
                rings are centred; default ``(n_cols, n_rows)``.
        """
        if self.kind == "random":
            return random_split(patch_ids, self.seed, self.fractions)
        if self.kind == "reben":
            return reben_split(np.asarray(cols), np.asarray(rows), n_cols, n_rows, extent)
        return np.array([self.official.get(str(n)) for n in names_v1], dtype=object)


def mark_unsplit(reasons: np.ndarray, split: np.ndarray) -> np.ndarray:
    """Give kept patches without a split the reason :data:`NOT_IN_SPLIT`."""
    missing = np.array([r is None and s is None for r, s in zip(reasons, split)], dtype=bool)
    if not missing.any():
        return reasons
    reasons = reasons.copy()
    reasons[missing] = NOT_IN_SPLIT
    return reasons
