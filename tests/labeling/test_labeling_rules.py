"""Reference maps (pixel-centre rasterization) and the v1 / reBEN label rules."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import shapely

from bigearthnet.clc.nomenclature import LABELS_19, LABELS_43, multi_hot
from bigearthnet.dataset.schema import LABEL_SCHEMA
from bigearthnet.errors import LabelingInputError, UnknownClcCodeError
from bigearthnet.labeling.raster import reference_maps
from bigearthnet.labeling.sedona import code_areas
from bigearthnet.stages.labels import labels_reben, labels_v1, multi_hot_array

ULX, ULY = 499980.0, 5300040.0
PATCH = 1200.0


def _areas(rows):
    p, c, a = zip(*rows, strict=True)
    return pa.table(
        {
            "patch_index": pa.array(p, pa.int32()),
            "code": pa.array(c, pa.uint16()),
            "area_m2": pa.array(a, pa.float64()),
        }
    )


# --- reference maps -------------------------------------------------------------------------


def test_pixel_centre_rule():
    # Pixel centres of column 0 and 1 lie at ULX+5 and ULX+15.
    narrow = shapely.box(ULX, ULY - PATCH, ULX + 14.9, ULY)
    wide = shapely.box(ULX + PATCH, ULY - PATCH, ULX + PATCH + 15.1, ULY)
    maps = reference_maps([narrow, wide], [311, 211], ULX, ULY, 1, 2)
    assert maps.shape == (2, 120, 120) and maps.dtype == np.uint16
    assert (maps[0] == 311).sum() == 120 and (maps[0][:, 0] == 311).all()
    assert (maps[1] == 211).sum() == 240
    assert (maps[0][:, 1:] == 0).all()


def test_patch_cut_is_row_major():
    row, col, n_rows, n_cols = 1, 2, 3, 4
    left, top = ULX + col * PATCH, ULY - row * PATCH
    poly = shapely.box(left + 100, top - 700, left + 600, top - 100)
    maps = reference_maps([poly], [512], ULX, ULY, n_rows, n_cols)
    counts = (maps == 512).sum(axis=(1, 2))
    assert counts.tolist() == [3000 if i == row * n_cols + col else 0 for i in range(12)]
    # 100 m from the patch's left edge = column 10; 100 m below its top = row 10.
    assert maps[row * n_cols + col][10, 10] == 512 and maps[row * n_cols + col][9, 9] == 0


def test_overlaps_resolved_by_largest_code_regardless_of_order():
    a = shapely.box(ULX, ULY - 800, ULX + 800, ULY)
    b = shapely.box(ULX + 400, ULY - 1200, ULX + 1200, ULY - 400)
    m1 = reference_maps([a, b], [311, 211], ULX, ULY, 1, 1)
    m2 = reference_maps([b, a], [211, 311], ULX, ULY, 1, 1)
    np.testing.assert_array_equal(m1, m2)
    assert m1[0, 50, 50] == 311  # the overlap (x 400-800 m, y 400-800 m below the top)


def test_reference_maps_agree_with_point_in_polygon_oracle():
    rng = np.random.default_rng(11)
    pts = shapely.points(
        rng.uniform(ULX - 300, ULX + 2700, 25), rng.uniform(ULY - 2700, ULY + 300, 25)
    )
    polys = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts)))
    polys = shapely.intersection(polys, shapely.box(ULX - 300, ULY - 2700, ULX + 2700, ULY + 300))
    polys = shapely.buffer(polys, -3.0)  # leave gaps -> unlabeled pixels
    codes = rng.choice(np.array([111, 211, 311, 523], np.uint16), len(polys))
    maps = reference_maps(polys, codes, ULX, ULY, 2, 2)
    np.testing.assert_array_equal(maps, reference_maps(polys, codes, ULX, ULY, 2, 2, strip_rows=1))
    # Check 3000 random pixels against shapely.contains at the pixel centre.
    k = rng.integers(0, 4, 3000)
    i, j = rng.integers(0, 120, 3000), rng.integers(0, 120, 3000)
    row, col = np.divmod(k, 2)
    cx = ULX + col * PATCH + (j + 0.5) * 10
    cy = ULY - row * PATCH - (i + 0.5) * 10
    want = np.zeros(3000, np.uint16)
    for poly, code in zip(polys, codes, strict=True):
        want[shapely.contains_xy(poly, cx, cy)] = code
    np.testing.assert_array_equal(maps[k, i, j], want)
    assert (want == 0).any()


def test_reference_maps_validation():
    with pytest.raises(LabelingInputError):
        reference_maps([shapely.box(0, 0, 1, 1)], [311, 312], ULX, ULY, 1, 1)
    with pytest.raises(LabelingInputError):
        reference_maps([], [], ULX, ULY, 0, 1)


# --- reBEN rule -----------------------------------------------------------------------------


def test_reben_unlabeled_threshold_is_inclusive():
    maps = np.full((3, 120, 120), 311, np.uint16)
    maps[0].reshape(-1)[:3600] = 0  # exactly 25 % without CLC -> dropped
    maps[1].reshape(-1)[:3599] = 122  # 24.99 % with a code lacking a 19-class name -> kept
    maps[2].reshape(-1)[:3600] = 999
    t = labels_reben(maps)
    assert t.schema == LABEL_SCHEMA
    np.testing.assert_array_equal(
        t["unlabeled_fraction"].to_numpy(), np.float32([0.25, 3599 / 14400, 0.25])
    )
    assert t["drop_unlabeled"].to_pylist() == [True, False, True]
    assert labels_reben(maps, max_unlabeled_fraction=0.3)["drop_unlabeled"].to_pylist() == [
        False,
        False,
        False,
    ]
    row = t.slice(1, 1).to_pylist()[0]
    assert row["labels_43"] == ["Road and rail networks and associated land", "Broad-leaved forest"]
    assert row["labels_19"] == ["Broad-leaved forest"]
    assert row["clc_codes"] == ["122", "311"]
    assert row["clc_area_fractions"] == pytest.approx([3599 / 14400, 1 - 3599 / 14400])
    assert t.slice(0, 1).to_pylist()[0]["clc_codes"] == ["311"]  # 0 is not a code
    mh = multi_hot_array(t)
    assert mh.shape == (3, 43) and mh.dtype == np.uint8
    assert row["multi_hot_43"] == multi_hot(row["labels_43"]).tobytes()
    np.testing.assert_array_equal(multi_hot_array(t.slice(1, 2)), mh[1:])
    assert multi_hot_array(t, "multi_hot_19").shape == (3, 19)
    assert t.slice(2, 1).to_pylist()[0]["clc_codes"] == ["311", "999"]


def test_reben_one_pixel_counts_and_order_is_official():
    maps = np.full((1, 120, 120), 523, np.uint16)
    maps[0, 0, 0] = 111
    maps[0, 0, 1] = 112
    maps[0, 5, 5] = 211
    t = labels_reben(maps)
    r = t.to_pylist()[0]
    assert r["labels_43"] == [
        "Continuous urban fabric",
        "Discontinuous urban fabric",
        "Non-irrigated arable land",
        "Sea and ocean",
    ]
    assert r["labels_19"] == ["Urban fabric", "Arable land", "Marine waters"]
    np.testing.assert_array_equal(multi_hot_array(t)[0], multi_hot(r["labels_43"], LABELS_43))
    np.testing.assert_array_equal(
        multi_hot_array(t, "multi_hot_19")[0], multi_hot(r["labels_19"], LABELS_19)
    )


def test_reben_rejects_unknown_codes():
    maps = np.full((1, 120, 120), 311, np.uint16)
    maps[0, 3, 3] = 998
    with pytest.raises(UnknownClcCodeError, match="998"):
        labels_reben(maps)


# --- v1 rule --------------------------------------------------------------------------------


def test_v1_min_area_is_strict_and_labels_in_official_order():
    areas = _areas(
        [(0, 523, 5000.0), (0, 311, 1000.0), (0, 211, 500.0), (0, 112, 10.0), (2, 111, 1.0)]
    )
    t = labels_v1(areas, 3, min_area_m2=500.0)
    rows = t.to_pylist()
    assert [r["patch_index"] for r in rows] == [0, 1, 2]
    assert rows[0]["labels_43"] == ["Broad-leaved forest", "Sea and ocean"]
    assert rows[0]["clc_codes"] == ["311", "523"]
    assert rows[0]["clc_area_fractions"] == pytest.approx([1000 / 1.44e6, 5000 / 1.44e6])
    assert rows[1]["labels_43"] == [] and rows[1]["unlabeled_fraction"] == 1.0
    assert rows[2]["labels_43"] == []
    t0 = labels_v1(areas, 3)
    assert t0.to_pylist()[0]["labels_43"][:2] == [
        "Discontinuous urban fabric",
        "Non-irrigated arable land",
    ]
    assert t0.to_pylist()[2]["labels_19"] == ["Urban fabric"]


def test_v1_19_classes_derived_from_43_and_unlabeled():
    a = 1.44e6
    areas = _areas([(0, 111, 0.2 * a), (0, 112, 0.5 * a), (0, 122, 0.3 * a), (1, 335, a)])
    t = labels_v1(areas, 2, max_unlabeled_fraction=0.25)
    r0, r1 = t.to_pylist()
    assert r0["labels_19"] == ["Urban fabric"]
    assert r0["unlabeled_fraction"] == pytest.approx(0.3)
    assert r0["drop_unlabeled"] is True
    assert r1["labels_43"] == [] and r1["clc_codes"] == ["335"] and r1["drop_unlabeled"] is True
    assert labels_v1(areas, 2)["drop_unlabeled"].to_pylist() == [False, False]


def test_v1_validation():
    with pytest.raises(LabelingInputError, match="patch_index"):
        labels_v1(_areas([(5, 311, 1.0)]), 3)
    with pytest.raises(UnknownClcCodeError, match="998"):
        labels_v1(_areas([(0, 998, 1.0)]), 1)
    assert labels_v1(_areas([(0, 311, 1.0)]).slice(0, 0), 0).num_rows == 0


def test_v1_and_reben_agree_on_pixel_aligned_polygons():
    rng = np.random.default_rng(5)
    n_rows = n_cols = 3
    # Pixel-aligned rectangles tiling the window without overlap (a random guillotine split).
    rects = [(0, 0, 360, 360)]
    for _ in range(30):
        i = int(rng.integers(len(rects)))
        x0, y0, x1, y1 = rects[i]
        if x1 - x0 > 2 and rng.random() < 0.5:
            cut = int(rng.integers(x0 + 1, x1))
            rects[i : i + 1] = [(x0, y0, cut, y1), (cut, y0, x1, y1)]
        elif y1 - y0 > 2:
            cut = int(rng.integers(y0 + 1, y1))
            rects[i : i + 1] = [(x0, y0, x1, cut), (x0, cut, x1, y1)]
    polys = np.array(
        [
            shapely.box(ULX + x0 * 10, ULY - y1 * 10, ULX + x1 * 10, ULY - y0 * 10)
            for x0, y0, x1, y1 in rects
        ],
        dtype=object,
    )
    codes = rng.choice(np.array([111, 122, 211, 311, 335, 523], np.uint16), len(polys))
    row, col = np.divmod(np.arange(9), n_cols)
    fps = shapely.box(
        ULX + col * PATCH, ULY - (row + 1) * PATCH, ULX + (col + 1) * PATCH, ULY - row * PATCH
    )
    v1 = labels_v1(code_areas(fps, np.arange(9), polys, codes), 9, max_unlabeled_fraction=0.25)
    rb = labels_reben(reference_maps(polys, codes, ULX, ULY, n_rows, n_cols))
    for col_name in ("labels_43", "labels_19", "clc_codes", "drop_unlabeled"):
        assert v1[col_name].to_pylist() == rb[col_name].to_pylist(), col_name
    np.testing.assert_allclose(
        v1["unlabeled_fraction"].to_numpy(), rb["unlabeled_fraction"].to_numpy(), atol=1e-7
    )
    np.testing.assert_allclose(
        v1["clc_area_fractions"].combine_chunks().flatten().to_numpy(),
        rb["clc_area_fractions"].combine_chunks().flatten().to_numpy(),
        rtol=1e-6,
    )
