"""Hash-random, reBEN ring and official splits."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from bigearthnet.errors import InputNotFoundError, LabelingInputError, SplitListError
from bigearthnet.splits import SPLITS, official_split, random_split, reben_split


def _ids(n):
    return [f"S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_{i % 91}_{i // 91}" for i in range(n)]


def test_random_split_deterministic_and_order_independent():
    ids = _ids(10_000)
    a = random_split(ids, seed=1)
    np.testing.assert_array_equal(a, random_split(ids, seed=1))
    perm = np.random.default_rng(0).permutation(len(ids))
    shuffled = random_split([ids[i] for i in perm], seed=1)
    np.testing.assert_array_equal(shuffled, a[perm])
    np.testing.assert_array_equal(random_split(ids[:50], seed=1), a[:50])
    b = random_split(ids, seed=2)
    assert (a != b).mean() > 0.3


def test_random_split_fractions():
    ids = _ids(10_000)
    for fractions in [(0.6, 0.2, 0.2), (0.8, 0.1, 0.1)]:
        s = random_split(ids, seed=123, fractions=fractions)
        got = [(s == name).mean() for name in SPLITS]
        assert got == pytest.approx(list(fractions), abs=0.03)
    assert set(random_split(ids[:100], 0, (1.0, 0.0, 0.0))) == {"train"}
    with pytest.raises(LabelingInputError):
        random_split(ids, 0, (0.5, 0.2, 0.2))


def test_reben_rings_on_full_tile():
    row, col = np.divmod(np.arange(91 * 91), 91)
    s = reben_split(col, row, 91, 91)
    counts = {name: int((s == name).sum()) for name in SPLITS}
    assert counts == {"train": 4056, "validation": 2200, "test": 2025}
    frac = {k: v / 8281 for k, v in counts.items()}
    assert frac == pytest.approx({"train": 0.5, "validation": 0.25, "test": 0.25}, abs=0.02)
    grid = s.reshape(91, 91)
    assert grid[45, 45] == "test" and grid[0, 0] == "train" and grid[45, 0] == "train"
    assert grid[45, 20] == "validation" and grid[45, 23] == "test" and grid[45, 22] == "validation"
    # Symmetric under flips and transposition.
    assert (grid == grid[::-1]).all() and (grid == grid[:, ::-1]).all() and (grid == grid.T).all()


def test_reben_rings_on_the_full_tile_extent_match_a_metric_oracle():
    """The real archive centres the rings on the whole 10980 px tile (109.8 km), not on the 91
    whole patches: an oracle in metres, written from that definition, agrees on every patch."""
    row, col = np.divmod(np.arange(91 * 91), 91)
    s = reben_split(col, row, 91, 91, (10980 / 120, 10980 / 120))
    half = 10980 * 10 / 2  # metres from the tile's upper-left corner to its centre
    dx = np.abs((col + 0.5) * 1200 - half)
    dy = np.abs((row + 0.5) * 1200 - half)
    d = np.maximum(dx, dy) / half
    oracle = np.where(d <= 0.5, "test", np.where(d <= 0.5 ** 0.5, "validation", "train"))
    assert (s == oracle).all()
    grid = s.reshape(91, 91)
    # Column and row 68 lie on the inner square's edge: test in the real archive (T33UUP).
    assert grid[45, 68] == "test" and grid[68, 45] == "test" and grid[68, 68] == "test"
    assert grid[45, 22] == "validation" and grid[22, 45] == "validation"
    counts = {name: int((s == name).sum()) for name in SPLITS}
    assert counts == {"train": 4056, "validation": 2109, "test": 2116}


def test_reben_split_rejects_out_of_grid():
    with pytest.raises(LabelingInputError):
        reben_split([91], [0], 91, 91)


def test_official_split_lookup(tmp_path):
    for name, rows in {"train": ["a", "b"], "val": ["c"], "test": ["d", ""]}.items():
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    csvs = [tmp_path / f"{n}.csv" for n in ("train", "val", "test")]
    got = official_split(["d", "a", "x", "c"], *csvs)
    assert got.tolist() == ["test", "train", None, "validation"]
    (tmp_path / "test.csv").write_text("d\nb\n")
    with pytest.raises(SplitListError, match="b"):
        official_split(["a"], *csvs)
    with pytest.raises(InputNotFoundError):
        official_split(["a"], tmp_path / "nope.csv", csvs[1], csvs[2])


def test_official_split_real_files():
    pkg = resources.files("bigearthnet_common")
    got = official_split(
        [
            "S2A_MSIL2A_20170717T113321_28_87",
            "S2A_MSIL2A_20170717T113321_28_89",
            "S2A_MSIL2A_20170717T113321_28_88",
            "S2B_MSIL2A_20170831T095029_27_76",  # snow list: in no split
        ],
        pkg / "train.csv.bz2",
        pkg / "val.csv.bz2",
        pkg / "test.csv.bz2",
    )
    assert got.tolist() == ["train", "validation", "test", None]
