"""Run by the TorchGeo side venv (not collected by pytest): open an export with TorchGeo's own
dataset classes and dump every sample of every split, plus TorchGeo's band and class orders.

    python torchgeo_dump.py reben|v1 EXPORT_ROOT OUT_DIR

Writes ``OUT_DIR/<variant>_<split>.npz`` (``ids``, ``image`` int32, ``label``, ``mask`` for
reBEN) and prints one JSON line: versions, the band files of each variant's first patch in
TorchGeo's sort order, TorchGeo's stated Sentinel-2 band order and its class lists.
"""

import glob
import json
import os
import re
import sys

import numpy as np
import torchgeo
from torchgeo.datasets import BigEarthNet, BigEarthNetV2
from torchgeo.datasets.utils import sort_sentinel2_bands

kind, root, out = sys.argv[1:4]
doc = {"torchgeo": torchgeo.__version__, "band_files": {}, "counts": {}}
for split in ("train", "val", "test"):
    if kind == "reben":
        variants = {"v2": BigEarthNetV2(root, split=split, bands="s2")}
    else:
        variants = {f"v1_{k}": BigEarthNet(root, split=split, bands="s2", num_classes=k)
                    for k in (19, 43)}
    for name, ds in variants.items():
        if kind == "reben":
            ids = [str(p) for p in ds.metadata_df["patch_id"]]
        else:
            ids = [os.path.basename(f["s2"]) for f in ds.folders]
        samples = [ds[i] for i in range(len(ds))]
        arrays = {"ids": np.array(ids, dtype=str)}
        for key in ("image", "label", "mask"):
            if samples and key in samples[0]:
                arrays[key] = np.stack([s[key].numpy() for s in samples])
        if "image" in arrays:
            # float32 of int32 reads: every uint16 value is exact
            arrays["image"] = arrays["image"].astype(np.int32)
        np.savez(os.path.join(out, f"{name}_{split}.npz"), **arrays)
        doc["counts"][f"{name}_{split}"] = len(ds)
        if ids and name not in doc["band_files"]:
            if kind == "reben":
                folder = os.path.join(root, "BigEarthNet-S2", "_".join(ids[0].split("_")[:-2]), ids[0])
                paths = sorted(glob.glob(os.path.join(folder, "*.tif")), key=sort_sentinel2_bands)
            else:
                paths = ds._load_paths(0)
            doc["band_files"][name] = [os.path.basename(p) for p in paths]
stated = re.search(r"Sentinel-2 bands: \(([^)]*)\)", BigEarthNet.__doc__)
doc["stated_s2_bands"] = [b.strip() for b in stated.group(1).split(",")]
doc["class_sets"] = {str(k): v for k, v in BigEarthNet.class_sets.items()}
doc["v2_class_set"] = list(BigEarthNetV2.class_set)
doc["v2_clc_codes"] = {str(k): v for k, v in BigEarthNetV2.clc_codes.items()}
doc["v1_label_converter"] = {str(k): v for k, v in BigEarthNet.label_converter.items()}
print(json.dumps(doc))
