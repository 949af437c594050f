"""Render BENCHMARKS.md from bench/results/*.json (called by ``make bench``)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent
TEMPLATE = """# Benchmarks

`make bench` runs `bench/run.py` (tiling, loader, train) and writes `bench/results/*.json`.
Each benchmark measures its baseline side by side with our code in the same run, interleaving
repetitions; the figures below are medians. The machine is a shared 2-core VM without GPU
(other jobs were running during some of these measurements), so read the **ratios**, not the
absolute rates. No GPU machine was lent to the sessions that measured these.

## Tiling (`bench/results/tiling.json`) — issue: archive build part 1

One full 10980 px tile (T29UPU, synthetic, 12 bands + SCL), `gdal_threads=1`, GDAL cache 512 MB.
*Decode-only* = rasterio reading all 13 layers whole. *Build* = a real `run_build` on
`local[1]`, one Spark task; CPU/wall/peak RSS are the task's own Python worker.

| format | decode-only CPU s | build CPU s | **ratio_cpu** (target) | build patches/s | peak RSS of the worker |
|---|---:|---:|---:|---:|---:|
| JP2 (SAFE) | {jp2_dec} | {jp2_build} | **{RATIO_JP2}** (≤ 1.15) | {PPS_JP2} | {RSS_JP2} MB |
| COG (STAC) | {cog_dec} | {cog_build} | **{RATIO_COG}** (≤ 2.0) | {PPS_COG} | {RSS_COG} MB |

Peak RSS for a full tile: **{PEAK_RSS} MB** (target ≤ 3 GB).

How: each layer is decoded in windows aligned to its internal blocks (1024² JP2 tiles, 512² COG
tiles) into one reused row buffer, so every compressed block is decoded exactly once whatever
the strip height; patches are cut straight from those buffers into reused arrays and handed to
Arrow without copies. The first version (strips not aligned to JP2 tiles) measured
ratio_cpu_jp2 = 2.3: straddling tiles were decoded twice. The remaining COG overhead is
mostly writing 1.1 GB of uncompressed tensors (kernel time of the page cache writes).
On this VM writing 1.1 GB costs 2.3–4 s of kernel time whatever the buffering (measured apart
with a bare pyarrow writer), about half of the COG decode-only CPU; so the COG ratio stays
close to the 2.0 target (individual repetitions in `ratios_each`; the run before the last
cutting change measured 2.00–2.06), and only less output (compression cheaper than the write
it saves) could move it much further.

### Label stage share — issue: archive build part 2

The same tile with the v1 rule on a CLC layer of {CLC_POLYS} polygons around the tile (bbox
read, SedonaDB reprojection and join, 10 m reference maps, screening, splits, train
histograms): label stage = {LABEL_S_JP2} s of a {WALL_JP2} s task → **{LABEL_SHARE_JP2}** of the build
time on JP2 (target ≤ 5 %); on COG, where decoding is 15× cheaper, {LABEL_SHARE_COG}.

## Loader (`bench/results/loader.json`) — issue: training and evaluation

2,592 train rows (the 6 real example patches, rotated/flipped + noise) in 3 files of 116–448
row groups; columns `bands_10m`, `bands_20m`, `bands_60m`, `multi_hot_43`; batch 64, shuffle on;
steady-state epochs. Baselines: a raw `pyarrow.dataset` scan of the same files, and reading the
v1 folder layout (12 GeoTIFFs + JSON per patch, 300 replicated real patches) with rasterio.

| | patches/s (1 process) |
|---|---:|
| our loader, `num_workers=0` | {LOADER_OURS} |
| raw `pyarrow.dataset` scan | {LOADER_RAW} |
| v1 folders (rasterio) | {LOADER_V1} |

**ratio_vs_raw_arrow = {RATIO_RAW}** (target ≥ 0.7), **ratio_vs_v1_folders = {RATIO_V1}** (target ≥ 50).
With zstd-compressed tensor columns the v1 ratio drops to about 33: decompression dominates,
for only ~1.2× smaller files, which is why the build writes tensors uncompressed by default
(`tensor_compression: none`).

## Training loop (`bench/results/train.json`)

S-CNN-All, batch 64, 2 CPU threads: the full loop (loader + device transform + step) against
the pure model step on in-memory tensors.

| loader workers | pure step img/s | loop img/s | **ratio_vs_pure_step** (target ≥ 0.9) |
|---|---:|---:|---:|
| 0 | {TRAIN_P0} | {TRAIN_L0} | **{TRAIN_R0}** |
| 1 (conf/paper.yaml) | {TRAIN_P1} | {TRAIN_L1} | **{TRAIN_R1}** |

GPU: not measured (no GPU machine was lent to this task); `bench/train.py` records S-CNN-All
img/s on CUDA when one is present.
"""


def _load(name: str) -> dict:
    path = ROOT / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def render() -> str:
    """Fill the template with the latest results ('n/a' where a benchmark has not run)."""
    tiling, loader, train = _load("tiling"), _load("loader"), _load("train")
    v = {}
    for fmt in ("jp2", "cog"):
        d = tiling.get(fmt, {})
        v[f"{fmt}_dec"] = d.get("decode_only", {}).get("cpu_s", "n/a")
        v[f"{fmt}_build"] = d.get("build", {}).get("cpu_s", "n/a")
        v[f"RATIO_{fmt.upper()}"] = d.get("ratio_cpu", "n/a")
        v[f"PPS_{fmt.upper()}"] = d.get("build", {}).get("patches_per_s", "n/a")
        v[f"RSS_{fmt.upper()}"] = round(d.get("build", {}).get("peak_rss_mb", 0))
        lab = d.get("labeled_build", {})
        v[f"LABEL_SHARE_{fmt.upper()}"] = f"{lab.get('label_share', float('nan')):.1%}"
        if fmt == "jp2":
            v["LABEL_S_JP2"], v["WALL_JP2"] = lab.get("label_s", "n/a"), lab.get("wall_s", "n/a")
            v["CLC_POLYS"] = lab.get("clc_polygons", "n/a")
    v["PEAK_RSS"] = round(tiling.get("peak_rss_mb", 0))
    steady = loader.get("default", {})
    rate = lambda k: steady.get(k, {}).get("steady", {}).get("patches_per_s", "n/a")  # noqa: E731
    v["LOADER_OURS"], v["LOADER_RAW"] = rate("ours_workers0"), rate("raw_arrow")
    v["LOADER_V1"] = rate("v1_folders")
    v["RATIO_RAW"] = loader.get("ratio_vs_raw_arrow", "n/a")
    v["RATIO_V1"] = loader.get("ratio_vs_v1_folders", "n/a")
    for w in (0, 1):
        d = train.get(f"cpu_workers{w}", {})
        v[f"TRAIN_P{w}"] = d.get("pure_step_img_per_s", "n/a")
        v[f"TRAIN_L{w}"] = d.get("loop_img_per_s", "n/a")
        v[f"TRAIN_R{w}"] = d.get("ratio_vs_pure_step", "n/a")
    return TEMPLATE.format(**v)


def main() -> None:
    """Write BENCHMARKS.md next to bench/."""
    (ROOT.parent / "BENCHMARKS.md").write_text(render())
    print(f"wrote {ROOT.parent / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
