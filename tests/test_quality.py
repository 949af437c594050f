"""SCL fractions, flags, drop reasons and the official name lists."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pydantic
import pytest

from bigearthnet.errors import InputNotFoundError, LabelingInputError
from bigearthnet.quality import (
    DROP_REASONS,
    QualityConfig,
    drop_counts,
    drop_reason,
    in_name_lists,
    quality_flags,
    read_name_list,
    scl_fractions,
)


def _scl(*fills):
    """One 60x60 patch per argument: a list of (scl_class, n_pixels) from the top-left; rest 4."""
    out = np.full((len(fills), 60, 60), 4, np.uint8)
    for k, parts in enumerate(fills):
        flat = out[k].reshape(-1)
        pos = 0
        for cls, n in parts:
            flat[pos : pos + n] = cls
            pos += n
    return out


def test_scl_fractions_known_answers():
    scl = _scl([(11, 3600)], [(8, 1800), (3, 900), (10, 900)], [(9, 36), (0, 1)], [])
    f = scl_fractions(scl)
    assert set(f) == {"cloud", "shadow", "cloud_shadow", "snow", "nodata"}
    assert all(v.dtype == np.float32 and v.shape == (4,) for v in f.values())
    np.testing.assert_array_equal(f["snow"], [1.0, 0, 0, 0])
    np.testing.assert_array_equal(f["cloud"], np.float32([0, 0.75, 0.01, 0]))
    np.testing.assert_array_equal(f["shadow"], [0, 0.25, 0, 0])
    np.testing.assert_array_equal(f["cloud_shadow"], np.float32([0, 1.0, 0.01, 0]))
    np.testing.assert_array_equal(f["nodata"], np.float32([0, 0, 1 / 3600, 0]))
    with pytest.raises(LabelingInputError):
        scl_fractions(np.zeros((60, 60), np.uint8))


def test_default_drops_only_fully_covered_patches():
    scl = _scl([(11, 3600)], [(11, 3599)], [(8, 2000), (3, 1600)], [(8, 3599)], [(0, 1)], [])
    f = scl_fractions(scl)
    cfg = QualityConfig()
    reasons = drop_reason(
        cfg,
        snow_fraction=f["snow"],
        cloud_shadow_fraction=f["cloud_shadow"],
        nodata_fraction=f["nodata"],
    )
    assert reasons.tolist() == ["snow", None, "cloud_shadow", None, "nodata", None]
    flags = quality_flags(f, cfg)
    assert flags["contains_seasonal_snow"].tolist() == [True, True, False, False, False, False]
    assert flags["contains_cloud_or_shadow"].tolist() == [False, False, True, True, False, False]


def test_thresholds_tolerate_float32_rounding():
    # float32(9/3600) rounds below 0.0025, float32(1080/3600) rounds above 0.3.
    assert float(np.float32(9 / 3600)) < 0.0025 and float(np.float32(1080 / 3600)) > 0.3
    f = scl_fractions(_scl([(11, 9)], [(11, 8)], [(11, 1080)], [(11, 1081)]))
    cfg = QualityConfig(drop_snow_fraction=0.0025, flag_snow_above=0.3)
    reasons = drop_reason(cfg, snow_fraction=f["snow"], cloud_shadow_fraction=f["cloud"])
    assert reasons.tolist() == ["snow", None, "snow", "snow"]
    flags = quality_flags(f, cfg)["contains_seasonal_snow"]
    assert flags.tolist() == [False, False, False, True]


def test_first_matching_reason_wins_and_is_counted_once():
    n = 7
    snow = np.array([1, 1, 0, 0, 0, 0, 0], np.float32)
    cloud = np.array([0, 1, 1, 0, 0, 0, 0], np.float32)
    band_nodata = np.array([True, False, False, False, False, False, False])
    listed = np.array([True, True, True, True, False, False, False])
    unlabeled = np.array([True, True, True, True, True, False, False])
    no_labels = np.array([True, True, True, True, True, True, False])
    cfg = QualityConfig()
    reasons = drop_reason(
        cfg,
        snow_fraction=snow,
        cloud_shadow_fraction=cloud,
        band_nodata=band_nodata,
        listed=listed,
        unlabeled_drop=unlabeled,
        no_labels=no_labels,
    )
    assert reasons.tolist() == ["nodata", "snow", "cloud_shadow", "lists", "unlabeled",
                                "no_labels", None]
    counts = drop_counts(reasons)
    assert list(counts) == list(DROP_REASONS)
    assert sum(counts.values()) == n - 1
    off = QualityConfig(
        drop_nodata_fraction=None,
        drop_snow_fraction=None,
        drop_listed=False,
        drop_cloud_shadow_fraction=None,
        drop_unlabeled=False,
        drop_no_labels=False,
    )
    kept = drop_reason(
        off,
        snow_fraction=snow,
        cloud_shadow_fraction=cloud,
        band_nodata=band_nodata,
        listed=listed,
        unlabeled_drop=unlabeled,
        no_labels=no_labels,
    )
    assert kept.tolist() == [None] * n
    with pytest.raises(LabelingInputError, match="listed"):
        drop_reason(cfg, snow_fraction=snow, cloud_shadow_fraction=cloud, listed=listed[:2])


def test_config_forbids_unknown_keys_and_bad_values():
    with pytest.raises(pydantic.ValidationError):
        QualityConfig(drop_snow=1.0)
    with pytest.raises(pydantic.ValidationError):
        QualityConfig(drop_snow_fraction=1.5)


def test_read_official_lists_from_bigearthnet_common():
    pkg = resources.files("bigearthnet_common")
    snow = read_name_list(pkg / "patches_with_seasonal_snow.csv.bz2")
    cloud = read_name_list(pkg / "patches_with_cloud_and_shadow.csv.bz2")
    assert (len(snow), len(cloud)) == (61707, 9280)  # the paper's 61,707 + 9,280
    assert snow[0] == "S2B_MSIL2A_20170831T095029_27_76"
    flags = in_name_lists([snow[5], "S2A_MSIL2A_20990101T000000_0_0", cloud[-1]], snow, cloud)
    assert flags.tolist() == [True, False, True]


def test_read_name_list_plain_csv(tmp_path):
    p = tmp_path / "names.csv"
    p.write_text("\ufeffS2A_MSIL2A_20170617T113321_36_85\n\nS2B_MSIL2A_20170831T095029_1_2,S1x\n")
    assert read_name_list(p) == [
        "S2A_MSIL2A_20170617T113321_36_85",
        "S2B_MSIL2A_20170831T095029_1_2",
    ]
    with pytest.raises(InputNotFoundError):
        read_name_list(tmp_path / "missing.csv")
