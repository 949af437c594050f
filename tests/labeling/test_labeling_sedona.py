"""SedonaDB join and reprojection against shapely / pyproj oracles."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import shapely
from pyproj import Transformer

from bigearthnet.errors import LabelingInputError
from bigearthnet.labeling.sedona import AREA_SCHEMA, code_areas, transform_geometries

ULX, ULY = 600000.0, 5900040.0
PATCH = 1200.0


def _footprints(n_rows, n_cols):
    row, col = np.divmod(np.arange(n_rows * n_cols), n_cols)
    left = ULX + col * PATCH
    top = ULY - row * PATCH
    return shapely.box(left, top - PATCH, left + PATCH, top), np.arange(n_rows * n_cols)


def _oracle(footprints, pidx, polygons, codes):
    out = {}
    for fp, p in zip(footprints, pidx, strict=True):
        inter = shapely.intersection(fp, polygons)
        area = shapely.area(inter)
        for code in np.unique(codes[area > 0]):
            out[(int(p), int(code))] = float(area[(codes == code) & (area > 0)].sum())
    return out


def _as_dict(table):
    return {
        (int(p), int(c)): a
        for p, c, a in zip(
            table["patch_index"].to_pylist(),
            table["code"].to_pylist(),
            table["area_m2"].to_pylist(),
            strict=True,
        )
    }


def test_code_areas_matches_shapely_overlay():
    rng = np.random.default_rng(42)
    fps, pidx = _footprints(6, 7)
    # A Voronoi partition (shared edges, like CLC) plus random rotated boxes overlapping it.
    pts = shapely.points(
        rng.uniform(ULX - 500, ULX + 7 * PATCH + 500, 80),
        rng.uniform(ULY - 6 * PATCH - 500, ULY + 500, 80),
    )
    vor = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts)))
    bx = rng.uniform(ULX, ULX + 8000, 15)
    by = rng.uniform(ULY - 7000, ULY - 500, 15)
    boxes = np.array(
        [
            shapely.affinity.rotate(shapely.box(x, y, x + 900, y + 500), a)
            for x, y, a in zip(bx, by, rng.uniform(0, 90, 15), strict=True)
        ],
        dtype=object,
    )
    polygons = np.concatenate([vor, boxes])
    codes = rng.choice(np.array([111, 211, 311, 312, 512, 999], np.uint16), len(polygons))

    table = code_areas(fps, pidx, polygons, codes)
    assert table.schema == AREA_SCHEMA
    got = _as_dict(table)
    want = _oracle(fps, pidx, polygons, codes)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-6), k
    # Sorted by (patch_index, code) for determinism.
    keys = list(zip(table["patch_index"].to_pylist(), table["code"].to_pylist(), strict=True))
    assert keys == sorted(keys)
    # Each patch is fully covered by the Voronoi partition, so its areas add up to >= 1.44e6.
    sums = np.bincount(table["patch_index"].to_numpy(), table["area_m2"].to_numpy())
    assert (sums >= PATCH * PATCH - 1e-3).all()


def test_touching_polygons_give_no_row():
    fps, pidx = _footprints(1, 3)
    left = ULX + PATCH  # patch 1 spans [ULX+1200, ULX+2400]
    polygons = np.array(
        [
            shapely.box(left - 500, ULY - PATCH, left, ULY),  # shares patch 1's west edge
            shapely.box(left + PATCH, ULY, left + PATCH + 300, ULY + 300),  # corner only
            shapely.box(left + 100, ULY - 200, left + 300, ULY - 100),  # inside patch 1
        ],
        dtype=object,
    )
    codes = np.array([211, 311, 512], np.uint16)
    got = _as_dict(code_areas(fps, pidx, polygons, codes))
    assert got == {(0, 211): pytest.approx(500 * PATCH), (1, 512): pytest.approx(200 * 100)}


def test_inputs_as_wkb_bytes_and_arrow_give_same_result():
    fps, pidx = _footprints(2, 2)
    polys = np.array([shapely.box(ULX + 600, ULY - 1800, ULX + 1800, ULY - 600)], dtype=object)
    codes = np.array([311], np.uint16)
    a = code_areas(fps, pidx, polys, codes)
    b = code_areas(list(shapely.to_wkb(fps)), pidx, pa.array(shapely.to_wkb(polys)), codes)
    assert a.equals(b)
    assert a["area_m2"].to_pylist() == pytest.approx([360000.0] * 4)


def test_empty_and_mismatched_inputs():
    fps, pidx = _footprints(1, 2)
    empty = code_areas(fps, pidx, np.array([], dtype=object), np.array([], np.uint16))
    assert empty.num_rows == 0 and empty.schema == AREA_SCHEMA
    with pytest.raises(LabelingInputError, match="patch_index"):
        code_areas(fps, pidx[:1], fps, np.array([1, 2], np.uint16))
    with pytest.raises(LabelingInputError, match="codes"):
        code_areas(fps, pidx, fps, np.array([111], np.uint16))
    with pytest.raises(LabelingInputError, match="integers"):
        code_areas(fps, pidx, fps, np.array(["111", "112"]))


def test_transform_matches_pyproj_and_clips():
    rng = np.random.default_rng(3)
    x = rng.uniform(3.0e6, 3.2e6, 50)
    y = rng.uniform(3.4e6, 3.6e6, 50)
    geoms = shapely.buffer(shapely.points(x, y), 500.0)
    idx, out = transform_geometries(geoms, "EPSG:3035", 32629)
    assert idx.tolist() == list(range(50))
    tr = Transformer.from_crs(3035, 32629, always_xy=True)
    ref = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    np.testing.assert_allclose(
        shapely.get_coordinates(out), shapely.get_coordinates(ref), rtol=0, atol=1e-6
    )
    clip = shapely.bounds(ref[7])
    idx2, out2 = transform_geometries(geoms, 3035, "EPSG:32629", clip_bounds=tuple(clip))
    expected = np.flatnonzero(shapely.intersects(ref, shapely.box(*clip)))
    assert 7 in idx2 and idx2.tolist() == expected.tolist()
    assert len(out2) == len(idx2)


def test_transform_keeps_input_order_for_many_geometries():
    # SedonaDB returns large inputs in several batches in no particular order.
    rng = np.random.default_rng(4)
    x, y = rng.uniform(3.0e6, 3.2e6, 20_000), rng.uniform(3.4e6, 3.6e6, 20_000)
    idx, out = transform_geometries(shapely.points(x, y), 3035, 32629)
    assert idx.tolist() == list(range(20_000))
    tr = Transformer.from_crs(3035, 32629, always_xy=True)
    ex, ey = tr.transform(x, y)
    np.testing.assert_allclose(shapely.get_coordinates(out), np.column_stack([ex, ey]), atol=1e-6)
