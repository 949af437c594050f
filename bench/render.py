"""Render BENCHMARKS.md from bench/results/*.json (called by ``make bench``)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent
HEADER = """# Benchmarks

`make bench` runs `bench/run.py` and writes `bench/results/*.json`; this page is rendered from
those files by `bench/render.py` (no figure on it is typed by hand). Each benchmark measures its
baseline side by side with our code in the same run, interleaving repetitions; figures are
medians with their ranges. The machine is a shared 2-core VM without GPU, loaded by other jobs
during most of these measurements (the JSON files record the load), so read the **ratios** and
the CPU figures, not the absolute rates. No GPU machine was lent to the sessions that measured
these.
"""

def _load(name: str) -> dict:
    path = ROOT / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


LOADER_ORDER = ("ours_w0", "ours_w1", "ours_w2", "ours_w1_thread", "ours_w2_thread",
                "ours_w1_process_fresh", "floor", "floor_2threads", "petastorm_batch_w1",
                "petastorm_batch_w2", "petastorm_row_w1", "petastorm_row_w2", "v1_folders")


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def loader_section(doc: dict) -> str:
    """The loader section, every figure from bench/results/loader.json."""
    head = "## Loader (`bench/results/loader.json`) — issue: training and evaluation\n\n"
    if "variants" not in doc:
        return head + "Not measured yet with the current benchmark (`python bench/run.py loader`)."
    d, var, rat = doc["dataset"], doc["variants"], doc["ratios"]
    loads = [x for v in var.values() for x in v["loadavg_1m_before"]]
    lines = [
        head.rstrip("\n"), "",
        (f"{d['train_rows']:,} train patches of a real `bigearthnet build` output ({d['made_by']}): "
        f"{d['files']} files, {d['row_groups']} row groups of {d['row_group_rows']['min']}–"
        f"{d['row_group_rows']['max']} rows, {d['train_mb']} MB. Columns "
        f"{', '.join(f'`{c}`' for c in doc['columns'])}; batch {doc['batch_size']}; our loader "
        f"shuffles (buffer {doc['shuffle_buffer']} rows). {doc['reps']} interleaved rounds, "
        f"each variant a fresh process reading {doc['epochs_per_process']} epochs of which the "
        f"first {doc['warmup_epochs']} is warm-up. patches/s: median over the steady epochs of "
        f"all rounds (min–max); ratios: median over rounds of the ratio of the two variants' "
        f"round medians (min–max over rounds). The {doc['machine']['cpus']}-core VM is shared: "
        f"1-minute load average "
        f"before the runs {min(loads):.1f}–{max(loads):.1f}; `floor_2threads` shows what two "
        f"threads could get from it at the time; CPU µs/patch and CPUs used (CPU seconds per "
        f"second) count the measuring process's threads and its worker processes. Petastorm: "
        f"{doc['petastorm']}. What each variant does: `bench/loader.py`."),
        "",
        "| variant | | patches/s | min–max | CPU µs/patch | CPUs used |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in LOADER_ORDER:
        if name in var:
            v = var[name]
            p, cpu = v["patches_per_s"], v["cpu_us_per_patch"]
            used = v.get("cpu_used", {}).get("median", float("nan"))
            lines.append(f"| `{name}` | {v['label']} | **{_num(p['median'])}** | "
                         f"{_num(p['min'])}–{_num(p['max'])} | {_num(cpu['median'])} | {used:.2f} |")
    lines += ["", "| ratio | value | min–max over rounds | target | holds (median / every round) |",
              "|---|---:|---:|---:|:---:|"]
    targeted = [k for k, r in rat.items() if "target" in r]
    for name in targeted + [k for k in rat if k not in targeted]:
        r = rat[name]
        target = f"≥ {r['target']}" if "target" in r else ""
        holds = (f"{'yes' if r['holds'] else '**no**'} / {'yes' if r['holds_every_round'] else 'no'}"
                 if "target" in r else "")
        lines.append(f"| `{name}` | **{r['value']}** | {r['min']}–{r['max']} | {target} | {holds} |")
    lines += ["", (f"Shipped default: `num_workers: {doc['default_num_workers']}` (conf/paper.yaml); "
              f"all targets hold: **{'yes' if doc['all_targets_hold'] else 'no'}**.")]
    return "\n".join(lines)


def train_section(doc: dict) -> list[str]:
    """The training-loop section, from bench/results/train.json."""
    lines = ["## Training loop (`bench/results/train.json`)", ""]
    if not doc:
        return lines + ["Not measured yet (`python bench/run.py train`)."]
    lines += [("S-CNN-All, batch 64, 2 CPU threads: the full loop (loader + device transform + "
               "step) against the pure model step on in-memory tensors."), "",
              ("| loader workers | pure step img/s | loop img/s | **ratio_vs_pure_step** "
               "(target ≥ 0.9) |"), "|---|---:|---:|---:|"]
    for key, d in sorted(doc.items()):
        if key.startswith("cpu_workers") and isinstance(d, dict):
            lines.append(f"| {key.removeprefix('cpu_workers')} | {d.get('pure_step_img_per_s')} | "
                         f"{d.get('loop_img_per_s')} | **{d.get('ratio_vs_pure_step')}** |")
    gpu = [k for k in doc if k.startswith("cuda")]
    lines += ["", "GPU: " + (", ".join(gpu) if gpu else "not measured (no GPU machine was lent "
                                                         "to the session that ran it).")]
    return lines


def _section(module: str, doc: dict) -> list[str]:
    if not doc:
        return [f"## {module}", "", f"Not measured yet (`python bench/run.py {module}`)."]
    return __import__(module).render(doc)


def render() -> str:
    """The whole page from the latest results."""
    import sys

    sys.path.insert(0, str(ROOT))
    parts = [HEADER.rstrip("\n"), ""]
    for name in ("tiling", "scaling", "session", "labels"):
        parts += _section(name, _load(name)) + [""]
    parts += [loader_section(_load("loader")), ""]
    parts += _section("interop", _load("interop")) + [""]
    parts += train_section(_load("train"))
    return "\n".join(parts).rstrip("\n") + "\n"


def main() -> None:
    """Write BENCHMARKS.md next to bench/."""
    (ROOT.parent / "BENCHMARKS.md").write_text(render())
    print(f"wrote {ROOT.parent / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
