"""Loader benchmark: our torch loader against the single-core floor, Petastorm and the v1 layout.

Everything reads the tensors S-CNN-All needs (``bands_10m`` 4x120x120, ``bands_20m`` 6x60x60,
``bands_60m`` 2x20x20 as uint16, ``multi_hot_43``) of the train split of a real ``bigearthnet
build`` output (``bigearthnet synth --tiles 4 --size-px 6600 --format cog`` + ``bigearthnet
build``, 5,350 train patches in 4 files of 7 row groups; cached in ``bench/cache``), into
arrays of those shapes, shuffled where the reader can, and counts the rows:

- ``ours_w{0,1,2}``: ``make_loader(batch_size=64, shuffle=True, num_workers=N)`` with the
  default worker type (DataLoader worker processes writing into recycled shared-memory slots;
  ``N=0`` reads in the consuming thread).
- ``ours_w{1,2}_thread``: the same with ``worker_type="thread"`` (reader threads).
- ``ours_w1_process_fresh``: one worker process as the loader had it before the slots (a new
  shared-memory segment per batch): the root cause of the slow worker path.
- ``floor``: one thread doing the least a loader must: ``ParquetFile(memory_map=True)
  .read_row_group`` per row group, zero-copy numpy views of the tensor columns
  (``TensorColumn.decode``), and one copy of every 64-row slice into new arrays made tensors
  (file order, no shuffle, no batch spanning two row groups). ``floor_2threads`` runs two of
  those on alternate row groups at once: what the machine gives two threads at that moment.
- ``petastorm_batch_w{1,2}``: Petastorm 0.13.1 ``make_batch_reader`` (thread pool of 1 or 2
  workers, shuffled row groups) over the same files, in its own venv (pyarrow 14); each
  row-group batch's tensor columns (``bytes`` per row) are joined into arrays of the shapes
  above. Not re-batched to 64 rows, which only helps it.
- ``petastorm_row_w{1,2}``: Petastorm ``make_reader`` (its row reader), which needs a
  Petastorm dataset: the same rows and row groups written with a Unischema of
  ``NdarrayCodec`` fields (uncompressed, like ours); rows are stacked 64 at a time, as
  ``petastorm.pytorch.DataLoader``'s collate does.
- ``v1_folders``: the BigEarthNet v1 layout, one folder per patch with 12 GeoTIFFs and a labels
  JSON; the 6 real example patches of ``bigearthnet_common`` replicated to 300 folders, read
  with 12 ``rasterio.open(...).read(1)`` per patch.

Every measurement is a fresh interpreter reading ``EPOCHS`` epochs; the first is warm-up and
excluded; ``REPS`` repetitions are interleaved (every variant once per round, in a rotated
order). Figures are medians over the steady epochs of all rounds, with min and max; each ratio
is the median over rounds of the ratio of the two variants' round medians (paired, so slow
spells of the shared machine hit both sides), with its min and max over rounds. The 1-minute
load average before each run is recorded beside it.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

from common import CACHE, ROOT, write_result

PRODUCTS, SIZE_PX, FORMAT, SEED = 4, 6600, "cog", 0
WORLD = CACHE / f"loader_world_{FORMAT}_{PRODUCTS}x{SIZE_PX}"
DATASET = CACHE / f"loader_dataset_{FORMAT}_{PRODUCTS}x{SIZE_PX}"
V1_PATCHES = 300
COLUMNS = ("bands_10m", "bands_20m", "bands_60m", "multi_hot_43")
BATCH = 64
REPS = 5
EPOCHS = 4  # per process; the first is warm-up
TARGETS = {
    "ours_w0_vs_floor": 0.8,
    "ours_w2_vs_floor": 1.6,
    "ours_vs_petastorm_batch": 2.0,  # at equal workers
    "ours_vs_petastorm_row": 5.0,  # at equal workers
    "ours_default_vs_v1_folders": 50.0,
}

# Child programs (str.format templates) print one JSON line:
# {"epochs": [{"rows", "wall_s", "cpu_s"}, ...]}; cpu_s: CPU time of the child's threads and of
# its worker processes (read from /proc), so patches per CPU second compare the variants'
# efficiency apart from how much of the shared machine each one got.
EPOCH_LOOP = """
import json, os, time
def cpu_s():
    # CPU seconds of this process (all threads) and of its live child processes (workers)
    t = os.times()
    total, tick = t.user + t.system, os.sysconf("SC_CLK_TCK")
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{{task}}/children") as f:
                kids = f.read().split()
        except OSError:
            continue
        for pid in kids:
            try:
                with open(f"/proc/{{pid}}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
    return total
def run_epochs(one_epoch, n):
    out = []
    for epoch in range(n):
        c0, w0 = cpu_s(), time.perf_counter()
        rows = one_epoch(epoch)
        wall = time.perf_counter() - w0
        out.append({{"rows": rows, "wall_s": wall, "cpu_s": cpu_s() - c0}})
    print(json.dumps({{"epochs": out}}))
"""

OURS = EPOCH_LOOP + textwrap.dedent("""
    from bigearthnet.dataset import loader as L
    if {fresh!r}:  # the process path before the slots: a new shared segment per batch
        L._use_slots = lambda table, worker_id: None
    loader = L.make_loader({dataset!r}, "train", batch_size={batch}, num_workers={workers},
                           worker_type={worker_type!r}, columns={columns!r}, shuffle=True, seed=0)
    def one_epoch(epoch):
        loader.dataset.set_epoch(epoch)
        rows = 0
        for batch in loader:
            rows += batch["multi_hot_43"].shape[0]
        return rows
    run_epochs(one_epoch, {epochs})
""")

FLOOR = EPOCH_LOOP + textwrap.dedent("""
    import glob, threading
    import numpy as np, pyarrow.parquet as pq, torch
    from bigearthnet.dataset.schema import LABELED_PATCH_SCHEMA
    specs = [LABELED_PATCH_SCHEMA[c] for c in {columns!r}]
    units = []
    for path in sorted(glob.glob({split!r} + "/*.parquet")):
        units += [(path, i) for i in range(pq.ParquetFile(path).num_row_groups)]
    def read(my, counts):
        files, rows = {{}}, 0
        for path, i in my:
            if path not in files:
                files[path] = pq.ParquetFile(path, memory_map=True)
            pf = files[path]
            table = pf.read_row_group(i, columns={columns!r}, use_threads=False)
            views = [s.decode(table.column(s.name).chunk(0)) for s in specs]
            for a in range(0, table.num_rows, {batch}):
                batch = []
                for v in views:
                    part = v[a:a + {batch}]
                    out = np.empty(part.shape, part.dtype)
                    np.copyto(out, part)
                    batch.append(torch.from_numpy(out))
                rows += len(part)
        counts.append(rows)
    def one_epoch(epoch):
        counts = []
        threads = [threading.Thread(target=read, args=(units[k::{threads}], counts))
                   for k in range({threads})]
        for t in threads: t.start()
        for t in threads: t.join()
        return sum(counts)
    run_epochs(one_epoch, {epochs})
""")

PETASTORM_BATCH = EPOCH_LOOP + textwrap.dedent("""
    import numpy as np
    from petastorm import make_batch_reader
    shapes = {shapes!r}
    # one epoch more than measured: epochs are counted in rows, and batches straddle them
    reader = make_batch_reader("file://" + {split!r}, schema_fields=list(shapes), num_epochs={epochs} + 1,
                               workers_count={workers}, shuffle_row_groups=True, seed=0)
    stream = iter(reader)
    def one_epoch(epoch):
        rows = 0
        while rows < {rows}:
            d = next(stream)._asdict()
            n = len(d["multi_hot_43"])
            for name, (dtype, shape) in shapes.items():
                arr = np.frombuffer(b"".join(d[name]), dtype=dtype).reshape((n, *shape))
            rows += n
        return rows
    run_epochs(one_epoch, {epochs})
    reader.stop(); reader.join()
""")

PETASTORM_ROW = EPOCH_LOOP + textwrap.dedent("""
    import numpy as np
    from petastorm import make_reader
    shapes = {shapes!r}
    reader = make_reader("file://" + {url!r}, schema_fields=list(shapes), num_epochs={epochs} + 1,
                         workers_count={workers}, shuffle_row_groups=True, seed=0)
    stream = iter(reader)
    def one_epoch(epoch):
        rows = 0
        while rows < {rows}:
            got = [next(stream)._asdict() for _ in range(min({batch}, {rows} - rows))]
            batch = {{name: np.stack([r[name] for r in got]) for name in shapes}}
            rows += len(got)
        return rows
    run_epochs(one_epoch, {epochs})
    reader.stop(); reader.join()
""")

PETASTORM_WRITE = textwrap.dedent("""
    import glob, json, os, pickle, sys
    import numpy as np, pyarrow as pa, pyarrow.parquet as pq
    from petastorm.codecs import NdarrayCodec
    from petastorm.etl.dataset_metadata import ROW_GROUPS_PER_FILE_KEY, UNISCHEMA_KEY
    from petastorm.unischema import Unischema, UnischemaField
    src, dst, shapes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    codec = NdarrayCodec()
    fields = {n: UnischemaField(n, np.dtype(d).type, tuple(s), codec, False) for n, (d, s) in shapes.items()}
    unischema = Unischema("BigEarthNetPatch", list(fields.values()))
    schema = pa.schema([pa.field(n, pa.binary(), False) for n in shapes])
    counts = {}
    for path in sorted(glob.glob(src + "/*.parquet")):
        pf = pq.ParquetFile(path)
        name = os.path.basename(path)
        with pq.ParquetWriter(os.path.join(dst, name), schema, compression="none") as writer:
            for i in range(pf.num_row_groups):
                table = pf.read_row_group(i, columns=list(shapes))
                cols = []
                for n, (d, s) in shapes.items():
                    cells = [codec.encode(fields[n], np.frombuffer(b, dtype=d).reshape(s))
                             for b in table.column(n).to_pylist()]
                    cols.append(pa.array([bytes(c) for c in cells], pa.binary()))
                writer.write_table(pa.Table.from_arrays(cols, schema=schema), row_group_size=table.num_rows)
        counts[name] = pf.num_row_groups
    meta = {UNISCHEMA_KEY: pickle.dumps(unischema), ROW_GROUPS_PER_FILE_KEY: json.dumps(counts).encode()}
    pq.write_metadata(schema.with_metadata(meta), os.path.join(dst, "_common_metadata"))
""")

V1 = EPOCH_LOOP + textwrap.dedent("""
    import numpy as np, rasterio
    from bigearthnet.clc.nomenclature import multi_hot
    from bigearthnet.sentinel2.bands import GROUPS
    root = {root!r}
    names = sorted(n for n in os.listdir(root) if not n.startswith("."))
    def one_epoch(epoch):
        rows = 0
        with rasterio.Env(GDAL_NUM_THREADS="1"):
            for name in names:
                folder = os.path.join(root, name)
                for res, px in ((10, 120), (20, 60), (60, 20)):
                    arr = np.empty((len(GROUPS[res]), px, px), dtype=np.uint16)
                    for j, band in enumerate(GROUPS[res]):
                        with rasterio.open(os.path.join(folder, f"{{name}}_{{band}}.tif")) as src:
                            arr[j] = src.read(1)
                with open(os.path.join(folder, f"{{name}}_labels_metadata.json")) as f:
                    labels = multi_hot(json.load(f)["labels"], 43)
                rows += 1
        return rows
    run_epochs(one_epoch, {epochs})
""")


# --------------------------------------------------------------------------------------------
# inputs


def _cli(*args: str) -> None:
    exe = Path(sys.executable).with_name("bigearthnet")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    subprocess.run([str(exe), *args], check=True, env=env)


def built_dataset(world: Path = WORLD, dataset: Path = DATASET, tiles: int = PRODUCTS,
                  size_px: int = SIZE_PX) -> Path:
    """``bigearthnet synth`` + ``bigearthnet build`` (COG, labeled, defaults), made once."""
    if not (world / ".complete").exists():
        shutil.rmtree(world, ignore_errors=True)
        t0 = time.perf_counter()
        _cli("synth", str(world), "--tiles", str(tiles), "--size-px", str(size_px),
             "--format", FORMAT, "--seed", str(SEED))
        (world / ".complete").write_text(json.dumps({"synth_s": time.perf_counter() - t0}))
    if not (dataset / "_SUCCESS").exists():
        _cli("build", "--products", str(world / "products"), "--clc",
             str(world / "clc" / "clc2018.gpkg"), "--out", str(dataset), "--master", "local[2]",
             "--overwrite")
    return dataset


def _shapes() -> dict[str, tuple[str, list[int]]]:
    from bigearthnet.dataset.schema import LABELED_PATCH_SCHEMA

    return {c: (LABELED_PATCH_SCHEMA[c].dtype, list(LABELED_PATCH_SCHEMA[c].shape)) for c in COLUMNS}


def petastorm_dataset(python: Path, split: Path) -> Path:
    """The train split rewritten as a Petastorm dataset (for ``make_reader``), made once."""
    out = CACHE / f"{DATASET.name}_petastorm_train"
    if (out / ".complete").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run([str(python), "-c", PETASTORM_WRITE, str(split), str(out), json.dumps(_shapes())],
                   check=True)
    (out / ".complete").write_text("")
    return out


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


def default_num_workers() -> int:
    """``num_workers`` of conf/paper.yaml (the shipped training default)."""
    import yaml

    return int(yaml.safe_load((ROOT.parent / "conf" / "paper.yaml").read_text())["num_workers"])


# --------------------------------------------------------------------------------------------
# measuring


def _run(python: str, code: str) -> dict:
    load = os.getloadavg()[0]
    proc = subprocess.run([python, "-c", code], check=False, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["loadavg_1m_before"] = round(load, 2)
    return out


def variants(dataset: Path, petastorm: Path | None, petastorm_url: Path | None,
             folders: Path) -> dict[str, dict]:
    """name -> {"label", "python", "code", "workers"}."""
    split = str(dataset / "patches" / "split=train")
    rows = sum(_row_counts(dataset))
    me = sys.executable
    common = {"dataset": str(dataset), "batch": BATCH, "columns": COLUMNS, "epochs": EPOCHS}
    out = {}
    for w in (0, 1, 2):
        out[f"ours_w{w}"] = {
            "label": f"ours, num_workers={w}" + (" (default: worker processes, recycled slots)" if w else ""),
            "workers": w, "python": me,
            "code": OURS.format(workers=w, worker_type="process", fresh=False, **common)}
    for w in (1, 2):
        out[f"ours_w{w}_thread"] = {
            "label": f"ours, num_workers={w}, worker_type=thread (reader threads)", "workers": w,
            "python": me, "code": OURS.format(workers=w, worker_type="thread", fresh=False, **common)}
    out["ours_w1_process_fresh"] = {
        "label": "ours before: num_workers=1 worker process, new shared segment per batch",
        "workers": 1, "python": me,
        "code": OURS.format(workers=1, worker_type="process", fresh=True, **common)}
    for t in (1, 2):
        out["floor" if t == 1 else "floor_2threads"] = {
            "label": "single-core floor: read_row_group + zero-copy views + one copy" if t == 1
            else "two floor threads at once (the machine's 2-core ceiling then)",
            "workers": t, "python": me,
            "code": FLOOR.format(split=split, threads=t, batch=BATCH, columns=list(COLUMNS),
                                 epochs=EPOCHS)}
    if petastorm is not None:
        shapes = _shapes()
        for w in (1, 2):
            out[f"petastorm_batch_w{w}"] = {
                "label": f"Petastorm 0.13.1 make_batch_reader, {w} worker(s)", "workers": w,
                "python": str(petastorm),
                "code": PETASTORM_BATCH.format(split=split, shapes=shapes, workers=w, rows=rows,
                                               epochs=EPOCHS)}
            out[f"petastorm_row_w{w}"] = {
                "label": f"Petastorm 0.13.1 make_reader, {w} worker(s)", "workers": w,
                "python": str(petastorm),
                "code": PETASTORM_ROW.format(url=str(petastorm_url), shapes=shapes, workers=w,
                                             rows=rows, batch=BATCH, epochs=EPOCHS)}
    out["v1_folders"] = {"label": f"v1 folders ({V1_PATCHES} patches, 12 GeoTIFFs each, rasterio)",
                         "workers": 0, "python": me, "code": V1.format(root=str(folders), epochs=EPOCHS)}
    return out


def _row_counts(dataset: Path) -> list[int]:
    import pyarrow.parquet as pq

    split = dataset / "patches" / "split=train"
    return [pq.read_metadata(f).row_group(i).num_rows for f in sorted(split.glob("*.parquet"))
            for i in range(pq.read_metadata(f).num_row_groups)]


def _stats(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1)}


def run_rounds(todo: dict[str, dict], reps: int) -> dict[str, list[dict]]:
    """Run every variant once per round, ``reps`` rounds, in an order rotated each round."""
    names = list(todo)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for rnd in range(reps):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        for name in order:
            runs[name].append(_run(todo[name]["python"], todo[name]["code"]))
        print(f"round {rnd + 1}/{reps}: " + ", ".join(
            f"{n} {statistics.median(e['rows'] / e['wall_s'] for e in runs[n][-1]['epochs'][1:]):.0f}"
            for n in names), flush=True)
    return runs


def summarize(runs: dict[str, list[dict]], labels: dict[str, dict]) -> dict:
    """Per variant: patches/s over the steady epochs of all rounds, and per round."""
    out = {}
    for name, reps in runs.items():
        steady = [e for r in reps for e in r["epochs"][1:]]
        rates = [e["rows"] / e["wall_s"] for e in steady]
        out[name] = {
            "label": labels[name]["label"], "workers": labels[name]["workers"],
            "rows_per_epoch": reps[0]["epochs"][0]["rows"],
            "patches_per_s": _stats(rates),
            "round_medians": [round(statistics.median(e["rows"] / e["wall_s"] for e in r["epochs"][1:]), 1)
                              for r in reps],
            "first_epoch_patches_per_s": _stats([r["epochs"][0]["rows"] / r["epochs"][0]["wall_s"]
                                                 for r in reps]),
            # CPU per patch of the measuring process and its worker processes
            "cpu_us_per_patch": _stats([e["cpu_s"] / e["rows"] * 1e6 for e in steady]),
            "cpu_used": _stats([e["cpu_s"] / e["wall_s"] for e in steady]),
            "loadavg_1m_before": [r["loadavg_1m_before"] for r in reps],
        }
    return out


def ratio(result: dict, num: str, den: str, target: float | None = None) -> dict:
    """Median over rounds of num/den round medians (paired), min and max; against a target."""
    a, b = result[num]["round_medians"], result[den]["round_medians"]
    per_round = [x / y for x, y in zip(a, b)]
    out = {"numerator": num, "denominator": den, "value": round(statistics.median(per_round), 3),
           "min": round(min(per_round), 3), "max": round(max(per_round), 3),
           "of_medians": round(result[num]["patches_per_s"]["median"]
                               / result[den]["patches_per_s"]["median"], 3)}
    if target is not None:
        out.update({"target": target, "holds": out["value"] >= target,
                    "holds_every_round": out["min"] >= target})
    return out


def main(reps: int = REPS) -> dict:
    """Run the interleaved rounds and write bench/results/loader.json."""
    dataset = built_dataset()
    folders = v1_folders()
    petastorm = petastorm_url = None
    petastorm_note = None
    try:
        from petastorm_env import PetastormUnavailable, petastorm_python

        try:
            petastorm = petastorm_python()
            petastorm_url = petastorm_dataset(petastorm, dataset / "patches" / "split=train")
        except PetastormUnavailable as exc:
            petastorm_note = f"not measured: {exc}"
    except ImportError as exc:
        petastorm_note = f"not measured: {exc}"
    todo = variants(dataset, petastorm, petastorm_url, folders)
    result = summarize(run_rounds(todo, reps), todo)
    default = default_num_workers()
    ratios = {
        "ours_w0_vs_floor": ratio(result, "ours_w0", "floor", TARGETS["ours_w0_vs_floor"]),
        "ours_w1_vs_floor": ratio(result, "ours_w1", "floor"),
        "ours_w2_vs_floor": ratio(result, "ours_w2", "floor", TARGETS["ours_w2_vs_floor"]),
        "floor_2threads_vs_floor": ratio(result, "floor_2threads", "floor"),
        "ours_w2_vs_floor_2threads": ratio(result, "ours_w2", "floor_2threads"),
        "ours_w1_vs_ours_w1_process_fresh": ratio(result, "ours_w1", "ours_w1_process_fresh"),
        "ours_w2_vs_ours_w2_thread": ratio(result, "ours_w2", "ours_w2_thread"),
        "ours_w1_vs_ours_w1_thread": ratio(result, "ours_w1", "ours_w1_thread"),
    }
    for w in (1, 2):
        ratios[f"ours_w{w}_thread_vs_floor"] = ratio(result, f"ours_w{w}_thread", "floor")
    if petastorm is not None:
        for w in (1, 2):
            for kind, target in (("batch", "ours_vs_petastorm_batch"), ("row", "ours_vs_petastorm_row")):
                ratios[f"ours_w{w}_vs_petastorm_{kind}_w{w}"] = ratio(
                    result, f"ours_w{w}", f"petastorm_{kind}_w{w}", TARGETS[target])
                ratios[f"ours_w{w}_thread_vs_petastorm_{kind}_w{w}"] = ratio(
                    result, f"ours_w{w}_thread", f"petastorm_{kind}_w{w}", TARGETS[target])
            # Petastorm has no in-process mode: num_workers=0 against its 1 worker
            ratios["ours_w0_vs_petastorm_batch_w1"] = ratio(
                result, "ours_w0", "petastorm_batch_w1", TARGETS["ours_vs_petastorm_batch"])
            ratios["ours_w0_vs_petastorm_row_w1"] = ratio(
                result, "ours_w0", "petastorm_row_w1", TARGETS["ours_vs_petastorm_row"])
    for w in (0, 1, 2):
        ratios[f"ours_w{w}_vs_v1_folders"] = ratio(
            result, f"ours_w{w}", "v1_folders",
            TARGETS["ours_default_vs_v1_folders"] if w == default else None)
    counts = _row_counts(dataset)
    split = dataset / "patches" / "split=train"
    doc = {
        "dataset": {"path": str(dataset.relative_to(ROOT.parent)),
                    "made_by": f"bigearthnet synth --tiles {PRODUCTS} --size-px {SIZE_PX} "
                               f"--format {FORMAT} --seed {SEED}; bigearthnet build (defaults)",
                    "train_rows": sum(counts), "files": len(list(split.glob("*.parquet"))),
                    "row_groups": len(counts), "row_group_rows": {"min": min(counts), "max": max(counts)},
                    "train_mb": round(sum(f.stat().st_size for f in split.glob("*.parquet")) / 2**20, 1)},
        "columns": list(COLUMNS), "batch_size": BATCH, "shuffle_buffer": 1024, "reps": reps,
        "epochs_per_process": EPOCHS, "warmup_epochs": 1, "v1_patches": V1_PATCHES,
        "default_num_workers": default, "petastorm": petastorm_note or "petastorm 0.13.1, pyarrow 14.0.2",
        "variants": result, "ratios": ratios, "targets": TARGETS,
        "all_targets_hold": all(r["holds"] for r in ratios.values() if "holds" in r),
    }
    path = write_result("loader", doc)
    for name, r in result.items():
        p = r["patches_per_s"]
        print(f"{name:24s} {p['median']:9.0f} [{p['min']:.0f}-{p['max']:.0f}] patches/s")
    for name, r in ratios.items():
        mark = "" if "holds" not in r else (" OK" if r["holds"] else f" BELOW {r['target']}")
        print(f"{name:40s} {r['value']:7.3f} [{r['min']}-{r['max']}]{mark}")
    print(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else REPS)
