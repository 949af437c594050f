"""Grid and naming against the real archive's conventions (DESIGN.md §2)."""

import json
import tarfile
from importlib import resources

import numpy as np
import pytest

from bigearthnet.constants import FULL_TILE_PX
from bigearthnet.errors import ProductNameError, TileTooSmallError
from bigearthnet.sentinel2.grid import (
    PatchGrid,
    mgrs_tile_origin,
    tile_origin,
    tile_origin_table,
)
from bigearthnet.sentinel2.naming import parse_product_name

T29UPU = "S2A_MSIL2A_20170617T113321_N0205_R080_T29UPU_20170617T113319"


def test_real_t29upu_example_patch_bounds():
    origin = tile_origin("T29UPU")
    assert (origin.epsg, origin.ulx, origin.uly) == (32629, 600000.0, 5900040.0)
    grid = PatchGrid(origin.ulx, origin.uly, FULL_TILE_PX, FULL_TILE_PX)
    name = parse_product_name(T29UPU)
    assert name.patch_name_v1(36, 85) == "S2A_MSIL2A_20170617T113321_36_85"
    left, bottom, right, top = grid.bounds(36, 85)
    assert (left, bottom, right, top) == (643200, 5796840, 644400, 5798040)


def test_full_tile_has_8281_patches_and_drops_last_60px():
    grid = PatchGrid(0.0, 0.0, FULL_TILE_PX, FULL_TILE_PX)
    assert (grid.n_cols, grid.n_rows, grid.n_patches) == (91, 91, 8281)
    assert grid.n_cols * 120 == FULL_TILE_PX - 60


def test_tile_smaller_than_a_patch_is_a_named_error():
    with pytest.raises(TileTooSmallError, match="smaller than one 1200 m patch"):
        PatchGrid(0.0, 0.0, 119, 5000).check("product X")


def test_v2_name_is_reben_format():
    name = parse_product_name("S2A_MSIL2A_20170613T101031_N0204_R022_T33UUP_20170613T101608.SAFE")
    assert name.patch_name_v2(26, 57) == "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_26_57"
    assert name.tile == "T33UUP" and name.orbit == "R022"
    assert name.sensing_time.isoformat() == "2017-06-13T10:10:31+00:00"


@pytest.mark.parametrize("bad", [
    "S2A_MSIL1C_20170617T113321_N0205_R080_T29UPU_20170617T113319",  # L1C, not L2A
    "S2A_MSIL2A_20170617_N0205_R080_T29UPU_20170617T113319",
    "S2A_MSIL2A_20171317T113321_N0205_R080_T29UPU_20170617T113319",  # month 13
    "garbage",
])
def test_unparseable_product_names(bad):
    with pytest.raises(ProductNameError, match="cannot parse|invalid datatake"):
        parse_product_name(bad, source="/data/x")


def test_mgrs_origin_close_to_real_table():
    for tile, real in tile_origin_table().items():
        derived = mgrs_tile_origin(tile)
        assert derived.epsg == real.epsg
        assert abs(derived.ulx - real.ulx) <= 40 and abs(derived.uly - real.uly) <= 40, tile


def test_unknown_tile_origin_warns():
    with pytest.warns(UserWarning, match="MGRS"):
        origin = tile_origin("T35VPK")
    assert origin.epsg == 32635 and origin.ulx == 600000.0


def test_grid_reproduces_real_example_patch_footprints():
    """The 6 real v1 patches: their JSON coordinates follow from the tile origin and col/row."""
    archive = resources.files("bigearthnet_common").joinpath("BigEarthNet-S2-Example.tar.bz2")
    checked = 0
    with tarfile.open(str(archive)) as tar:
        for member in tar.getmembers():
            if not member.name.endswith("_labels_metadata.json"):
                continue
            meta = json.load(tar.extractfile(member))
            patch = member.name.rsplit("/", 1)[-1].removesuffix("_labels_metadata.json")
            col, row = (int(x) for x in patch.rsplit("_", 2)[1:])
            tile = meta["tile_source"].split("_")[5]
            origin = tile_origin_table().get(tile) or mgrs_tile_origin(tile)
            grid = PatchGrid(origin.ulx, origin.uly, FULL_TILE_PX, FULL_TILE_PX)
            left, bottom, right, top = grid.bounds(col, row)
            c = meta["coordinates"]
            # MGRS-derived origins may be off by up to 40 m; the table ones are exact.
            tol = 0 if tile in tile_origin_table() else 40
            assert np.allclose([left, top, right, bottom], [c["ulx"], c["uly"], c["lrx"], c["lry"]], atol=tol), patch
            checked += 1
    assert checked == 6
