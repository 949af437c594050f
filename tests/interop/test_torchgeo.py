"""TorchGeo as the judge: our reBEN and v1 exports open in TorchGeo's own ``BigEarthNetV2`` and
``BigEarthNet`` (19 and 43 classes), which see exactly our pixels, labels, masks and splits.

TorchGeo runs in its cached side venv (``bench/torchgeo_env.py``); ``torchgeo_dump.py`` dumps
every sample of every split there, and the tests compare them with the dataset's files read
with pyarrow. TorchGeo resamples every band to 120 x 120 with GDAL's bilinear read; the 10 m
bands must come back bit for bit, the 20 m and 60 m ones equal to the same GDAL read of our
stored arrays.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from interop_helpers import patch_rows
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from bigearthnet.clc.nomenclature import CLASS_BY_CODE, LABELS_19, LABELS_43, NAME_43_TO_NAME_19
from bigearthnet.constants import PATCH_SIZE_M, PATCH_SIZE_PX
from bigearthnet.dataset.archives import EXPORT_MANIFEST
from bigearthnet.sentinel2.bands import BAND_BY_NAME, BAND_NAMES, GROUPS

pytestmark = [pytest.mark.interop, pytest.mark.spark]
DUMP = Path(__file__).with_name("torchgeo_dump.py")
TORCHGEO_SPLITS = {"train": "train", "val": "validation", "test": "test"}
REBEN_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
"""The band files of a reBEN / v1 patch folder, as the archives' documentation lists them."""


def run_dump(python: Path, kind: str, root: Path, out: Path) -> dict:
    out.mkdir()
    proc = subprocess.run([str(python), str(DUMP), kind, str(root), str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reben_dump(torchgeo_python, reben_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("tg") / "reben"
    return out, run_dump(torchgeo_python, "reben", reben_export, out)


@pytest.fixture(scope="module")
def v1_dump(torchgeo_python, v1_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("tg") / "v1"
    return out, run_dump(torchgeo_python, "v1", v1_export, out)


def gdal_bilinear(band: np.ndarray) -> np.ndarray:
    """TorchGeo's read of one band file (out_shape 120 x 120, bilinear, int32), on our array."""
    with MemoryFile() as mem:
        res = PATCH_SIZE_M / band.shape[1]
        with mem.open(driver="GTiff", width=band.shape[1], height=band.shape[0], count=1,
                      dtype="uint16", crs="EPSG:32633",
                      transform=Affine(res, 0.0, 0.0, 0.0, -res, PATCH_SIZE_M)) as dst:
            dst.write(band, 1)
        with mem.open() as src:
            return src.read(1, out_shape=(PATCH_SIZE_PX, PATCH_SIZE_PX), out_dtype="int32",
                            resampling=Resampling.bilinear)


def expected_image(row: dict) -> np.ndarray:
    """Our 12 bands in ``BAND_NAMES`` order as TorchGeo would read them."""
    out = []
    for band in BAND_NAMES:
        res = BAND_BY_NAME[band].resolution_m
        arr = row[f"bands_{res}m"][GROUPS[res].index(band)]
        out.append(arr.astype(np.int32) if res == 10 else gdal_bilinear(arr))
    return np.stack(out)


def expected_mask(reference_map: np.ndarray) -> np.ndarray:
    """Our reference map under TorchGeo's class indexing, from OUR nomenclature: a CLC code
    with a 19-class name becomes that class's index in ``LABELS_19``; other values stay."""
    out = reference_map.astype(np.int64)
    for code in np.unique(reference_map):
        cls = CLASS_BY_CODE.get(int(code))
        if cls is not None and cls.name_19 is not None:
            out[reference_map == code] = LABELS_19.index(cls.name_19)
    return out[None]


def _by_split(rows: dict[str, dict], key: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {s: [] for s in TORCHGEO_SPLITS.values()}
    for row in rows.values():
        out[row["split"]].append(row[key])
    return out


def _samples(folder: Path, variant: str, expected: dict[str, list[str]]):
    """(dump, index, id) of every sample TorchGeo returned, after checking each split's ids."""
    for tg_split, split in TORCHGEO_SPLITS.items():
        dump = np.load(folder / f"{variant}_{tg_split}.npz")
        assert sorted(dump["ids"].tolist()) == sorted(expected[split])
        for i, pid in enumerate(dump["ids"].tolist()):
            yield dump, i, pid


def test_reben_export_opens_in_torchgeo_v2(built, reben_dump):
    folder, _ = reben_dump
    ours = patch_rows(built)
    expected = _by_split(ours, "patch_id")
    assert all(expected.values())  # every split holds patches
    seen = 0
    for dump, i, pid in _samples(folder, "v2", expected):
        row = ours[pid]
        image = dump["image"][i]
        np.testing.assert_array_equal(image[[BAND_NAMES.index(b) for b in GROUPS[10]]],
                                      row["bands_10m"].astype(np.int32))  # 10 m: bit for bit
        np.testing.assert_array_equal(image, expected_image(row))
        np.testing.assert_array_equal(dump["label"][i], row["multi_hot_19"])
        np.testing.assert_array_equal(dump["mask"][i], expected_mask(row["reference_map"]))
        seen += 1
    assert seen == len(ours) == 8


@pytest.mark.parametrize("classes", [19, 43])
def test_v1_export_opens_in_torchgeo_v1(built, v1_dump, classes):
    folder, _ = v1_dump
    ours = {row["patch_id_v1"]: row for row in patch_rows(built).values()}
    seen = 0
    for dump, i, name in _samples(folder, f"v1_{classes}", _by_split(ours, "patch_id_v1")):
        np.testing.assert_array_equal(dump["image"][i], expected_image(ours[name]))
        np.testing.assert_array_equal(dump["label"][i], ours[name][f"multi_hot_{classes}"])
        seen += 1
    assert seen == len(ours)


def test_band_and_class_orders_are_written_once(built, reben_export, v1_export, reben_dump, v1_dump):
    """One band order everywhere: our constant, the manifest, both exports' export.json, the
    file names TorchGeo sorts into its channels, TorchGeo's stated order and reBEN's list; and
    TorchGeo's class lists and code mapping equal ours."""
    manifest = json.loads((built / "manifest.json").read_text())
    orders = [list(BAND_NAMES), manifest["band_order"]["bands"], list(REBEN_BANDS),
              reben_dump[1]["stated_s2_bands"]]
    for root in (reben_export, v1_export):
        orders.append(json.loads((root / EXPORT_MANIFEST).read_text())["band_order"]["bands"])
    for _, doc in (reben_dump, v1_dump):
        for files in doc["band_files"].values():
            orders.append([f.rsplit("_", 1)[1].removesuffix(".tif") for f in files])
    assert len(orders) == 9 and all(o == list(REBEN_BANDS) for o in orders), orders
    columns = {c["name"]: c["bands"] for c in manifest["schema"]["columns"] if c.get("bands")}
    for res, names in GROUPS.items():
        assert columns[f"bands_{res}m"] == manifest["band_order"]["columns"][f"bands_{res}m"] == list(names)
    doc = reben_dump[1]
    assert doc["class_sets"]["43"] == list(LABELS_43)
    assert doc["class_sets"]["19"] == doc["v2_class_set"] == list(LABELS_19)
    assert manifest["class_orders"]["labels_19"] == list(LABELS_19)
    for code, index in doc["v2_clc_codes"].items():
        assert LABELS_19[index] == CLASS_BY_CODE[int(code)].name_19
    assert len(doc["v2_clc_codes"]) == sum(c.name_19 is not None for c in CLASS_BY_CODE.values())
    for i43, i19 in doc["v1_label_converter"].items():
        assert NAME_43_TO_NAME_19[LABELS_43[int(i43)]] == LABELS_19[i19]


def test_exported_geotiffs_carry_the_patch_georeference(built, reben_export):
    import shapely

    from bigearthnet.dataset.archives import RebenLayout

    layout = RebenLayout(reben_export)
    for pid, row in patch_rows(built).items():
        bounds = shapely.from_wkb(row["footprint"]).bounds
        for band in BAND_NAMES:
            with rasterio.open(layout.band_file(pid, band)) as src:
                assert src.crs.to_epsg() == row["epsg"]
                assert tuple(src.bounds) == pytest.approx(bounds)
                assert src.width == BAND_BY_NAME[band].patch_size_px and src.dtypes == ("uint16",)
        with rasterio.open(layout.reference_map(pid)) as src:
            assert tuple(src.bounds) == pytest.approx(bounds) and src.crs.to_epsg() == row["epsg"]
