"""Loader benchmark: our torch loader against a raw Arrow scan and against the v1 folder layout.

All three read the same tensors S-CNN-All needs (12 bands in their three resolution groups and
the 43-class multi-hot labels) into numpy/torch arrays of the same shapes, on one core each:

- **ours**: ``make_loader(batch_size=64, shuffle=True)`` with ``num_workers=0`` (the main
  process reads) and ``num_workers=1`` (one worker process reads, batches cross to the main
  process through shared memory). Rows go through the shuffle buffer (one gather copy per
  row) and become ``torch.uint16``/``torch.uint8`` tensors.
- **raw_arrow**: ``pyarrow.dataset`` over the same files, ``to_batches(columns=...,
  use_threads=False)``, each tensor column viewed as numpy with the same zero-copy
  ``TensorColumn.decode`` and one value per view read (so the buffers are touched). No
  shuffling and no batch assembly. ``raw_row_groups`` does the same with
  ``ParquetFile(memory_map=True).read_row_group`` (the reader our loader uses), which is the
  faster of the two here: the floor a loader can't beat on one core.
- **v1_folders**: the BigEarthNet v1 layout: one folder per patch holding 12 GeoTIFFs and a
  labels JSON. The 6 real example patches of ``bigearthnet_common`` are replicated to
  ``V1_PATCHES`` folders; each patch is read with 12 ``rasterio.open(...).read(1)`` into the
  three group arrays, and its JSON labels become the 43-class multi-hot vector.

The synthetic Parquet dataset (``FILES`` files of uneven row groups, 2,592 rows) is made of the
real example patches under random flips/rotations plus 3 bits of noise, so it compresses like
real reflectances (zstd: 1.2x; real patches alone: 1.29x) rather than like white noise. It is
written twice: with zstd (the build's default, the headline numbers) and uncompressed.

Every measurement runs in a fresh interpreter that reads ``epochs`` epochs; repetitions are
interleaved. The headline ratios use the median wall time of the later (steady-state) epochs;
first epochs of a fresh process (page faults of a cold heap dominate them) are reported beside
them, and so are ratios of the reading process's CPU seconds, which other load on the machine
disturbs less. patches/s are per reading process (every variant has exactly one).
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
import tarfile
import textwrap
import time
from pathlib import Path

from common import CACHE, median, run_measured, write_result

ROWS_PER_FILE = (448, 300, 116)  # row groups of uneven size, like the build's strips
FILES = 3
V1_PATCHES = 300
COLUMNS = ("bands_10m", "bands_20m", "bands_60m", "multi_hot_43")

OURS = textwrap.dedent("""
    import json, resource, time
    from bigearthnet.dataset.loader import make_loader
    loader = make_loader({dataset!r}, "train", batch_size=64, num_workers={workers},
                         columns={columns!r}, shuffle=True, seed=0)
    epochs = []
    for epoch in range({epochs}):
        loader.dataset.set_epoch(epoch)
        c0, w0 = time.process_time(), time.perf_counter()
        rows = 0
        for batch in loader:
            rows += batch["multi_hot_43"].shape[0]
        epochs.append({{"rows": rows, "wall_s": time.perf_counter() - w0,
                        "main_cpu_s": time.process_time() - c0}})
    print(json.dumps({{"epochs": epochs,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""")

RAW = textwrap.dedent("""
    import json, resource, time
    import pyarrow.dataset as pads
    from bigearthnet.dataset.schema import LABELED_PATCH_SCHEMA
    columns = {columns!r}
    specs = [LABELED_PATCH_SCHEMA[c] for c in columns]
    epochs = []
    for epoch in range({epochs}):
        c0, w0 = time.process_time(), time.perf_counter()
        ds = pads.dataset({split!r}, format="parquet")
        rows, touched = 0, 0
        for batch in ds.to_batches(columns=list(columns), use_threads=False):
            for spec in specs:
                arr = spec.decode(batch.column(spec.name))
                touched += int(arr.reshape(len(arr), -1)[:, -1].sum())
            rows += batch.num_rows
        epochs.append({{"rows": rows, "wall_s": time.perf_counter() - w0,
                        "main_cpu_s": time.process_time() - c0}})
    print(json.dumps({{"epochs": epochs,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""")

RAW_ROW_GROUPS = textwrap.dedent("""
    import glob, json, resource, time
    import pyarrow.parquet as pq
    from bigearthnet.dataset.schema import LABELED_PATCH_SCHEMA
    columns = {columns!r}
    specs = [LABELED_PATCH_SCHEMA[c] for c in columns]
    epochs = []
    for epoch in range({epochs}):
        c0, w0 = time.process_time(), time.perf_counter()
        rows, touched = 0, 0
        for path in sorted(glob.glob({split!r} + "/*.parquet")):
            pf = pq.ParquetFile(path, memory_map=True)
            for i in range(pf.num_row_groups):
                table = pf.read_row_group(i, columns=list(columns), use_threads=False)
                for spec in specs:
                    arr = spec.decode(table.column(spec.name).chunk(0))
                    touched += int(arr.reshape(len(arr), -1)[:, -1].sum())
                rows += table.num_rows
        epochs.append({{"rows": rows, "wall_s": time.perf_counter() - w0,
                        "main_cpu_s": time.process_time() - c0}})
    print(json.dumps({{"epochs": epochs,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""")

V1 = textwrap.dedent("""
    import json, os, resource, time
    import numpy as np, rasterio
    from bigearthnet.clc.nomenclature import multi_hot
    from bigearthnet.sentinel2.bands import GROUPS
    root = {root!r}
    epochs = []
    for epoch in range({epochs}):
        c0, w0 = time.process_time(), time.perf_counter()
        rows = 0
        with rasterio.Env(GDAL_NUM_THREADS="1"):
            for name in sorted(n for n in os.listdir(root) if not n.startswith(".")):
                folder = os.path.join(root, name)
                out = {{}}
                for res, px in ((10, 120), (20, 60), (60, 20)):
                    arr = np.empty((len(GROUPS[res]), px, px), dtype=np.uint16)
                    for j, band in enumerate(GROUPS[res]):
                        with rasterio.open(os.path.join(folder, f"{{name}}_{{band}}.tif")) as src:
                            arr[j] = src.read(1)
                    out[res] = arr
                with open(os.path.join(folder, f"{{name}}_labels_metadata.json")) as f:
                    labels = multi_hot(json.load(f)["labels"], 43)
                rows += 1
        epochs.append({{"rows": rows, "wall_s": time.perf_counter() - w0,
                        "main_cpu_s": time.process_time() - c0}})
    print(json.dumps({{"epochs": epochs,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
""")


def _example_patches() -> list[Path]:
    """The 6 real v1 example patches, extracted once into bench/cache/v1_example."""
    out = CACHE / "v1_example"
    marker = out / ".complete"
    if not marker.exists():
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        tar = importlib.resources.files("bigearthnet_common") / "BigEarthNet-S2-Example.tar.bz2"
        with importlib.resources.as_file(tar) as path, tarfile.open(path, "r:bz2") as tf:
            tf.extractall(out, filter="data")
        marker.write_text("")
    return sorted(p for p in (out / "BigEarthNet-S2-Example").iterdir() if p.is_dir())


def v1_folders(n: int = V1_PATCHES) -> Path:
    """``n`` patch folders in the v1 layout, copies of the real examples under new names."""
    out = CACHE / f"v1_folders_{n}"
    marker = out / ".complete"
    if marker.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    examples = _example_patches()
    for k in range(n):
        src = examples[k % len(examples)]
        head, col, row = src.name.rsplit("_", 2)
        name = f"{head}_{int(col) + 100 * (k // len(examples) + 1)}_{row}"
        dest = out / name
        dest.mkdir()
        for f in src.iterdir():
            shutil.copyfile(f, dest / f.name.replace(src.name, name))
    marker.write_text("")
    return out


def synthetic_dataset(codec: str = "zstd") -> Path:
    """Write (once) a Parquet dataset of ``FILES × sum(ROWS_PER_FILE)`` train rows."""
    out = CACHE / f"loader_dataset_{codec}"
    marker = out / "_SUCCESS"
    if marker.exists():
        return out
    import numpy as np
    import pyarrow as pa
    import rasterio

    from bigearthnet.clc.nomenclature import multi_hot
    from bigearthnet.dataset.io import parquet_writer
    from bigearthnet.dataset.schema import LABELED_PATCH_SCHEMA, encode_tensor
    from bigearthnet.sentinel2.bands import BAND_NAMES, GROUPS

    shutil.rmtree(out, ignore_errors=True)
    split = out / "patches" / "split=train"
    split.mkdir(parents=True)
    real = []  # per example: {res: (bands, px, px) uint16}, multi-hot 43
    for folder in _example_patches():
        groups = {}
        for res in (10, 20, 60):
            bands = []
            for b in GROUPS[res]:
                with rasterio.open(folder / f"{folder.name}_{b}.tif") as src:
                    bands.append(src.read(1))
            groups[res] = np.stack(bands)
        labels = json.loads((folder / f"{folder.name}_labels_metadata.json").read_text())["labels"]
        real.append((groups, multi_hot(labels, 43)))
    rng = np.random.default_rng(0)
    schema = LABELED_PATCH_SCHEMA.to_arrow()
    t0 = time.perf_counter()
    for f in range(FILES):
        product = f"S2A_MSIL2A_20170617T1133{f:02d}_N0205_R080_T29UPU_20170617T113319"
        # "default" is what `bigearthnet build` writes (zstd scalars, uncompressed tensors).
        tensor_codec = "none" if codec == "default" else codec
        with parquet_writer(split / f"{product}.parquet", schema, "zstd" if codec == "default" else codec,
                            tensor_compression=tensor_codec) as writer:
            first = 0
            for n in ROWS_PER_FILE:
                pick = rng.integers(0, len(real), n)
                flips = rng.integers(0, 8, n)
                tensors = {}
                for res, col in ((10, "bands_10m"), (20, "bands_20m"), (60, "bands_60m")):
                    arrs = []
                    for p, t in zip(pick, flips):
                        a = np.rot90(real[p][0][res], k=int(t % 4), axes=(1, 2))
                        arrs.append(a[:, :, ::-1] if t >= 4 else a)
                    stack = np.stack(arrs)
                    tensors[col] = stack + rng.integers(0, 8, stack.shape, dtype=np.uint16)
                hot43 = np.stack([real[p][1] for p in pick])
                ids = [f"S2A_MSIL2A_20170617T1133{f:02d}_N9999_R080_T29UPU_{(first + i) % 91}_{(first + i) // 91}"
                       for i in range(n)]
                z32 = np.zeros(n, dtype=np.float32)
                cols = {
                    "patch_id": pa.array(ids), "patch_id_v1": pa.array(ids),
                    "product_id": pa.array([product] * n), "tile_id": pa.array(["T29UPU"] * n),
                    "sensing_time": pa.array(np.full(n, np.datetime64("2017-06-17T11:33:21", "us")),
                                             pa.timestamp("us", tz="UTC")),
                    "col": pa.array(np.arange(first, first + n, dtype=np.int16) % 91),
                    "row": pa.array((np.arange(first, first + n) // 91).astype(np.int16)),
                    "epsg": pa.array(np.full(n, 32629, np.int32)),
                    "footprint": pa.array([b""] * n, pa.binary()),
                    "scl": encode_tensor(np.full((n, 60, 60), 4, np.uint8), LABELED_PATCH_SCHEMA["scl"]),
                    "has_nodata": pa.array(np.zeros(n, bool)),
                    "labels_43": pa.array([[]] * n, pa.list_(pa.string())),
                    "labels_19": pa.array([[]] * n, pa.list_(pa.string())),
                    "multi_hot_43": encode_tensor(hot43, LABELED_PATCH_SCHEMA["multi_hot_43"]),
                    "multi_hot_19": encode_tensor(np.zeros((n, 19), np.uint8), LABELED_PATCH_SCHEMA["multi_hot_19"]),
                    "clc_codes": pa.array([[]] * n, pa.list_(pa.string())),
                    "clc_area_fractions": pa.array([[]] * n, pa.list_(pa.float32())),
                    "contains_seasonal_snow": pa.array(np.zeros(n, bool)),
                    "contains_cloud_or_shadow": pa.array(np.zeros(n, bool)),
                }
                for name in ("unlabeled_fraction", "cloud_fraction", "shadow_fraction",
                             "snow_fraction", "nodata_fraction"):
                    cols[name] = pa.array(z32)
                for col, arr in tensors.items():
                    cols[col] = encode_tensor(arr, LABELED_PATCH_SCHEMA[col])
                batch = pa.record_batch([cols[c] for c in schema.names], schema=schema)
                writer.write_batch(batch, row_group_size=n)
                first += n
    stats = {"split": "train", "n_patches": FILES * sum(ROWS_PER_FILE),
             "bands": {b: {"mean": 1000.0, "std": 500.0, "min": 0.0, "max": 10000.0,
                           "p01": 0.0, "p99": 5000.0} for b in BAND_NAMES}}
    (out / "stats.json").write_text(json.dumps(stats))
    (out / "manifest.json").write_text(json.dumps({"schema": LABELED_PATCH_SCHEMA.to_json()}))
    marker.write_text(json.dumps({"write_s": time.perf_counter() - t0}))
    return out


def _summary(runs: list[dict]) -> dict:
    """Medians over repetitions of the first epoch (fresh process) and of later epochs."""
    rows = runs[0]["epochs"][0]["rows"]
    first = [r["epochs"][0] for r in runs]
    steady = [e for r in runs for e in r["epochs"][1:]]
    out = {"rows": rows, "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
           "process_cpu_s": median([r["process_cpu_s"] for r in runs])}
    for name, eps in (("first_epoch", first), ("steady", steady)):
        wall = median([e["wall_s"] for e in eps])
        cpu = median([e["main_cpu_s"] for e in eps])
        out[name] = {"wall_s": wall, "patches_per_s": round(rows / wall, 1),
                     "patches_per_s_each": [round(e["rows"] / e["wall_s"], 1) for e in eps],
                     "main_cpu_s": cpu, "patches_per_main_cpu_s": round(rows / cpu, 1)}
    return out


def bench_codec(codec: str, folders: Path, reps: int, epochs: int, with_v1: bool) -> dict:
    """Interleave the variants on the synthetic dataset written with ``codec``."""
    dataset = synthetic_dataset(codec)
    split = str(dataset / "patches" / "split=train")
    runs: dict[str, list[dict]] = {"ours_workers0": [], "ours_workers1": [], "raw_arrow": [],
                                   "raw_row_groups": []}
    if with_v1:
        runs["v1_folders"] = []
    for _ in range(reps):
        runs["raw_arrow"].append(run_measured(RAW.format(split=split, columns=COLUMNS, epochs=epochs)))
        runs["raw_row_groups"].append(run_measured(
            RAW_ROW_GROUPS.format(split=split, columns=COLUMNS, epochs=epochs)))
        for w in (0, 1):
            runs[f"ours_workers{w}"].append(run_measured(
                OURS.format(dataset=str(dataset), workers=w, columns=COLUMNS, epochs=epochs)))
        if with_v1:
            runs["v1_folders"].append(run_measured(V1.format(root=str(folders), epochs=epochs)))
    result = {name: _summary(r) for name, r in runs.items()}
    size = sum(p.stat().st_size for p in Path(split).glob("*.parquet"))
    result["parquet_mb"] = round(size / 2**20, 1)
    return result


def _rate(result: dict, name: str, phase: str = "steady", key: str = "patches_per_s") -> float:
    return result[name][phase][key]


def main(reps: int = 3, epochs: int = 3) -> dict:
    """Run the interleaved repetitions and write bench/results/loader.json.

    Each measured process reads ``epochs`` epochs; the headline ratios use the median of the
    later (steady-state) epochs, the first epoch of a fresh process is reported beside them.
    """
    folders = v1_folders()
    zstd = bench_codec("default", folders, reps, epochs, with_v1=True)  # the build's defaults
    none = bench_codec("zstd", folders, reps, epochs, with_v1=False)  # tensors zstd-compressed too
    v1 = _rate(zstd, "v1_folders")
    doc = {
        "reps": reps, "epochs_per_process": epochs, "batch_size": 64, "shuffle_buffer": 1024,
        "columns": list(COLUMNS),
        "dataset": {"rows": zstd["ours_workers0"]["rows"], "files": FILES,
                    "row_groups_per_file": list(ROWS_PER_FILE)},
        "v1_patches": V1_PATCHES,
        "default": zstd, "tensors_zstd": none,
        "note": "headline ratios use the build's default layout (zstd scalars, uncompressed "
                "tensor columns); 'tensors_zstd' compresses the tensors too",
        "ratio_vs_raw_arrow": round(_rate(zstd, "ours_workers0") / _rate(zstd, "raw_arrow"), 3),
        "ratio_vs_raw_arrow_workers1": round(_rate(zstd, "ours_workers1") / _rate(zstd, "raw_arrow"), 3),
        "ratio_vs_v1_folders": round(_rate(zstd, "ours_workers0") / v1, 1),
        "ratio_vs_v1_folders_workers1": round(_rate(zstd, "ours_workers1") / v1, 1),
        "ratio_vs_raw_row_groups": round(_rate(zstd, "ours_workers0") / _rate(zstd, "raw_row_groups"), 3),
        # CPU seconds of the reading process: less sensitive to other load on the machine
        "ratio_cpu_vs_raw_arrow": round(_rate(zstd, "ours_workers0", key="patches_per_main_cpu_s")
                                        / _rate(zstd, "raw_arrow", key="patches_per_main_cpu_s"), 3),
        "ratio_cpu_vs_v1_folders": round(_rate(zstd, "ours_workers0", key="patches_per_main_cpu_s")
                                         / _rate(zstd, "v1_folders", key="patches_per_main_cpu_s"), 1),
        "ratio_vs_raw_arrow_first_epoch": round(
            _rate(zstd, "ours_workers0", "first_epoch") / _rate(zstd, "raw_arrow", "first_epoch"), 3),
        "ratio_vs_v1_folders_first_epoch": round(
            _rate(zstd, "ours_workers0", "first_epoch") / _rate(zstd, "v1_folders", "first_epoch"), 1),
        "tensors_zstd_ratios": {
            "ratio_vs_raw_arrow": round(_rate(none, "ours_workers0") / _rate(none, "raw_arrow"), 3),
            "ratio_vs_raw_row_groups": round(_rate(none, "ours_workers0") / _rate(none, "raw_row_groups"), 3),
            "ratio_vs_v1_folders": round(_rate(none, "ours_workers0") / v1, 1),
        },
        "targets": {"ratio_vs_raw_arrow": 0.7, "ratio_vs_v1_folders": 50},
    }
    path = write_result("loader", doc)
    keys = [k for k in doc if k.startswith("ratio")] + ["tensors_zstd_ratios"]
    print(json.dumps({k: doc[k] for k in keys}))
    for codec in ("default", "tensors_zstd"):
        print(codec, json.dumps({k: (v["first_epoch"]["patches_per_s"], v["steady"]["patches_per_s"])
                                 for k, v in doc[codec].items() if isinstance(v, dict)}))
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
