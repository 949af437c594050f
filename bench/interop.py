"""Interop benchmark: the reBEN folders read by TorchGeo against our loader on the same patches,
and the throughput of ``import-v2`` (and ``export --format reben``).

Inputs (cached in ``bench/cache``): ``bigearthnet synth --tiles 2 --size-px 3600 --format cog``,
``bigearthnet build`` (labeled, reference maps), ``bigearthnet export --format reben`` of it.

- ``import-v2`` of that reBEN folder, ``local[2]``, each run a fresh interpreter measured with
  its whole process tree (driver, JVM, Python workers: :func:`common.run_tree`):
  patches/s/core = patches / wall seconds / 2 cores, and patches per CPU second of the tree.
  ``export --format reben`` is measured the same way.
- Loading the train split, every variant a fresh process, rounds interleaved:

  - ``ours_w{0,2}``: ``make_loader(batch_size=64, shuffle=True, num_workers=N)`` on the dataset
    ``import-v2`` wrote, columns ``bands_10m``, ``bands_20m``, ``bands_60m``,
    ``reference_map``, ``multi_hot_19``, ``multi_hot_43`` (what TorchGeo returns, and more);
  - ``torchgeo_w{0,2}``: ``torchgeo.datasets.BigEarthNetV2(root, split="train", bands="s2")`` in
    a ``torch.utils.data.DataLoader(batch_size=64, shuffle=True, num_workers=N)`` on the reBEN
    folders (13 GeoTIFFs per patch: 12 bands and the reference map), in the TorchGeo side venv.

  TorchGeo also resamples the 20/60 m bands to 120 x 120 and returns float32, work our loader
  leaves to the training device (``BatchTransform``); the ratio is the price of reading folders
  of GeoTIFFs per sample against reading row groups of Parquet.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

from common import CACHE, loadavg, run_tree, spread, write_result
from loader import EPOCH_LOOP, OURS, SEED, _cli, built_dataset, ratio, run_rounds, summarize

PRODUCTS, SIZE_PX, FORMAT = 2, 3600, "cog"  # seed: the loader benchmark's
WORLD = CACHE / f"interop_world_{FORMAT}_{PRODUCTS}x{SIZE_PX}"
DATASET = CACHE / f"interop_dataset_{FORMAT}_{PRODUCTS}x{SIZE_PX}"
REBEN = CACHE / f"interop_reben_{FORMAT}_{PRODUCTS}x{SIZE_PX}"
IMPORTED = CACHE / f"interop_imported_{FORMAT}_{PRODUCTS}x{SIZE_PX}"
COLUMNS = ("bands_10m", "bands_20m", "bands_60m", "reference_map", "multi_hot_19", "multi_hot_43")
BATCH = 64
WORKERS = (0, 2)
REPS = 3
EPOCHS = {"ours": 8, "torchgeo": 3}  # per process; the first is warm-up
JOB_REPS = 3
CORES = 2
TARGET = 50.0  # our loader vs TorchGeo's folder reading, at equal workers

TORCHGEO = EPOCH_LOOP + textwrap.dedent("""
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import BigEarthNetV2
    dataset = BigEarthNetV2({root!r}, split="train", bands="s2")
    loader = DataLoader(dataset, batch_size={batch}, shuffle=True, num_workers={workers},
                        persistent_workers={workers} > 0, generator=torch.Generator().manual_seed(0))
    def one_epoch(epoch):
        rows = 0
        for batch in loader:
            rows += batch["label"].shape[0]
        return rows
    run_epochs(one_epoch, {epochs})
""")

JOB = textwrap.dedent("""
    import json, shutil, sys, time
    from bigearthnet.config import ExportConfig, ImportV2Config, SparkConfig
    from bigearthnet.spark.export import run_export
    from bigearthnet.spark.import_v2 import run_import_v2
    kind, src, out = {kind!r}, {src!r}, {out!r}
    shutil.rmtree(out, ignore_errors=True)
    spark = SparkConfig(master="local[{cores}]")
    t0 = time.perf_counter()
    if kind == "import_v2":
        m = run_import_v2(ImportV2Config(archive=src, out=out, spark=spark))
        n = m["counts"]["patches_kept"]
    else:
        n = run_export(ExportConfig(dataset=src, format="reben", out=out, spark=spark))["counts"]["patches"]
    wall = time.perf_counter() - t0
    _stop_spark_and_reap_jvm()
    print(json.dumps({{"patches": n, "job_wall_s": wall}}))
""")


def inputs() -> tuple[Path, Path]:
    """The built dataset and its reBEN export, made once."""
    built_dataset(WORLD, DATASET, PRODUCTS, SIZE_PX)
    if not (REBEN / "export.json").exists():
        _cli("export", str(DATASET), "--format", "reben", "--out", str(REBEN), "--master",
             "local[2]", "--overwrite")
    return DATASET, REBEN


def job(kind: str, src: Path, out: Path) -> dict:
    """One measured run of ``import-v2`` or ``export`` in a fresh interpreter."""
    from common import SPARK_TEARDOWN

    load = loadavg()
    r = run_tree(SPARK_TEARDOWN + JOB.format(kind=kind, src=str(src), out=str(out), cores=CORES),
                 env={"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable})
    return {"patches": r["patches"], "wall_s": r["tree_wall_s"], "job_wall_s": round(r["job_wall_s"], 3),
            "tree_cpu_s": r["tree_cpu_s"], "tree_peak_rss_mb": r["tree_peak_rss_mb"],
            "patches_per_s_per_core": round(r["patches"] / r["job_wall_s"] / CORES, 2),
            "patches_per_cpu_s": round(r["patches"] / r["tree_cpu_s"], 2),
            "loadavg_1m_before": load}


def jobs(dataset: Path, reben: Path) -> dict:
    """Interleaved runs of export and import-v2; the last import stays as the loader's input."""
    runs: dict[str, list[dict]] = {"export_reben": [], "import_v2": []}
    scratch = CACHE / "interop_export_scratch"
    for rnd in range(JOB_REPS):
        runs["export_reben"].append(job("export", dataset, scratch))
        runs["import_v2"].append(job("import_v2", reben, IMPORTED))
        print(f"jobs round {rnd + 1}/{JOB_REPS}: " + ", ".join(
            f"{k} {v[-1]['patches_per_s_per_core']} patches/s/core" for k, v in runs.items()), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    out = {}
    for kind, reps in runs.items():
        out[kind] = {"patches": reps[0]["patches"], "cores": CORES, "runs": reps,
                     **{k: spread([r[k] for r in reps], 2) for k in (
                         "patches_per_s_per_core", "patches_per_cpu_s", "job_wall_s", "tree_cpu_s")}}
    return out


def variants(imported: Path, reben: Path, torchgeo: Path) -> dict[str, dict]:
    """name -> {"label", "python", "code", "workers"}."""
    out = {}
    for w in WORKERS:
        out[f"ours_w{w}"] = {
            "label": f"ours, make_loader num_workers={w}, on the import-v2 dataset", "workers": w,
            "python": sys.executable,
            "code": OURS.format(dataset=str(imported), batch=BATCH, columns=COLUMNS, workers=w,
                                worker_type="process", fresh=False, epochs=EPOCHS["ours"])}
        out[f"torchgeo_w{w}"] = {
            "label": f"TorchGeo BigEarthNetV2 + DataLoader num_workers={w}, on the reBEN folders",
            "workers": w, "python": str(torchgeo),
            "code": TORCHGEO.format(root=str(reben), batch=BATCH, workers=w, epochs=EPOCHS["torchgeo"])}
    return out


def main(reps: int = REPS) -> dict:
    """Run everything and write bench/results/interop.json."""
    from torchgeo_env import torchgeo_python

    dataset, reben = inputs()
    job_results = jobs(dataset, reben)
    torchgeo = torchgeo_python()
    todo = variants(IMPORTED, reben, torchgeo)
    result = summarize(run_rounds(todo, reps), todo)
    ratios = {f"ours_w{w}_vs_torchgeo_w{w}": ratio(result, f"ours_w{w}", f"torchgeo_w{w}", TARGET)
              for w in WORKERS}
    manifest = json.loads((IMPORTED / "manifest.json").read_text())
    doc = {
        "dataset": {
            "made_by": f"bigearthnet synth --tiles {PRODUCTS} --size-px {SIZE_PX} --format {FORMAT} "
                       f"--seed {SEED}; bigearthnet build (defaults); bigearthnet export --format "
                       "reben; bigearthnet import-v2",
            "patches": manifest["counts"]["patches_kept"],
            "train_patches": manifest["counts"]["kept_train"],
            "reben_mb": round(sum(f.stat().st_size for f in reben.rglob("*") if f.is_file()) / 2**20, 1),
            "imported_mb": round(sum(f.stat().st_size for f in IMPORTED.rglob("*.parquet")) / 2**20, 1),
        },
        "columns": list(COLUMNS), "batch_size": BATCH, "reps": reps, "epochs_per_process": EPOCHS,
        "warmup_epochs": 1, "torchgeo": "torchgeo 0.8.1 (bench/torchgeo_env.py)",
        "variants": result, "ratios": ratios, "target": TARGET,
        "all_targets_hold": all(r["holds"] for r in ratios.values()),
        "jobs": job_results, "cpus": os.cpu_count(),
    }
    path = write_result("interop", doc)
    for name, r in result.items():
        p = r["patches_per_s"]
        print(f"{name:16s} {p['median']:9.0f} [{p['min']:.0f}-{p['max']:.0f}] patches/s")
    for name, r in ratios.items():
        print(f"{name}: {r['value']} ({r['min']}-{r['max']}) target >= {r['target']}")
    print(f"wrote {path}")
    return doc


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def render(doc: dict) -> list[str]:
    """The BENCHMARKS.md interop section of bench/results/interop.json."""
    lines = ["## Interop (`bench/results/interop.json`) — issue 10: reBEN import and TorchGeo", ""]
    if "variants" not in doc:
        return lines + ["Not measured yet (`python bench/run.py interop`)."]
    d, var, jobs_ = doc["dataset"], doc["variants"], doc["jobs"]
    loads = [x for v in var.values() for x in v["loadavg_1m_before"]]
    lines += [
        (f"{d['patches']:,} patches ({d['train_patches']:,} train) of {d['made_by']}: "
         f"{d['reben_mb']} MB of reBEN folders, {d['imported_mb']} MB of Parquet. Loading: the "
         f"train split, batch {doc['batch_size']}, every variant a fresh process, "
         f"{doc['reps']} interleaved rounds, first epoch excluded; ours reads the dataset "
         "`import-v2` wrote, TorchGeo's `BigEarthNetV2` in a torch `DataLoader` reads the reBEN "
         "folders it was imported from (same patches, same batch size and worker count; TorchGeo "
         "also upsamples to 120 × 120 float32, which our loader leaves to the training device). "
         f"The {doc['cpus']}-core VM is shared: 1-minute load average before the runs "
         f"{min(loads):.1f}–{max(loads):.1f}. What each variant does: `bench/interop.py`."),
        "",
        "| variant | | patches/s | min–max | CPU µs/patch |",
        "|---|---|---:|---:|---:|",
    ]
    for name, v in var.items():
        p = v["patches_per_s"]
        lines.append(f"| `{name}` | {v['label']} | **{_num(p['median'])}** | {_num(p['min'])}–"
                     f"{_num(p['max'])} | {_num(v['cpu_us_per_patch']['median'])} |")
    lines += ["", "| ratio | value | min–max over rounds | target | holds (median / every round) |",
              "|---|---:|---:|---:|:---:|"]
    for name, r in doc["ratios"].items():
        lines.append(f"| `{name}` | **{r['value']}** | {r['min']}–{r['max']} | ≥ {r['target']} | "
                     f"{'yes' if r['holds'] else '**no**'} / {'yes' if r['holds_every_round'] else 'no'} |")
    lines += ["", (f"Jobs, `local[{jobs_['import_v2']['cores']}]`, each run a fresh interpreter "
                   "measured with its whole process tree, median (min–max) of "
                   f"{len(jobs_['import_v2']['runs'])} interleaved runs:"), "",
              "| job | patches | patches/s/core (wall, 2 cores) | patches per CPU second (tree) | wall s |",
              "|---|---:|---:|---:|---:|"]
    for name, label in (("import_v2", "`import-v2`"), ("export_reben", "`export --format reben`")):
        j = jobs_[name]
        lines.append(f"| {label} | {j['patches']:,} | **{j['patches_per_s_per_core']['median']}** "
                     f"({j['patches_per_s_per_core']['min']}–{j['patches_per_s_per_core']['max']}) | "
                     f"{j['patches_per_cpu_s']['median']} | {j['job_wall_s']['median']} |")
    lines += ["", f"All targets hold: **{'yes' if doc['all_targets_hold'] else 'no'}**."]
    return lines


if __name__ == "__main__":
    main()
