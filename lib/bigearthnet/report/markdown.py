"""The final report: our Table 4 next to the paper's, as Markdown + JSON, with the plots.

``write_report(W, {"s-cnn-rgb": RUN1, "s-cnn-all": RUN2, "inception-v3": RUN3})`` reads each
run's evaluation (``RUN/eval/metrics.json``, written by
:func:`bigearthnet.train.evaluate.evaluate`) and writes::

    W/report/report.md        Table-4-style table (model | P % | R % | F1 | F2, sample-based,
                              test split) with the paper's numbers alongside, the weights each
                              model used, micro/macro scores and mAP, and the plots
    W/report/summary.json     {"models": {"s-cnn-rgb": {"precision", "recall", "f1", "f2"}, ...},
                               "split": "test"}   (fractions in [0, 1], sample-based)
    W/report/<model>/*.png    copies of each run's evaluation plots

The folder is staged and renamed into place (replacing an older report).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bigearthnet.dataset.io import staged_output
from bigearthnet.errors import ConfigError, RunNotFoundError
from bigearthnet.train.registry import MODEL_NAMES, MODELS
from bigearthnet.train.rundir import CONFIG_JSON

__all__ = ["MODEL_ORDER", "PAPER_TABLE4", "write_report"]

PAPER_TABLE4: dict[str, dict[str, Any]] = {
    name: {"name": spec.paper_name, **spec.paper_scores} for name, spec in MODELS.items()
}
"""The paper's Table 4 (P and R in %, F1 and F2 as fractions), keyed by our model names. Our
Inception baseline is torchvision's Inception-v3; the paper used Inception-v2."""

MODEL_ORDER = MODEL_NAMES
"""Row order of the paper's Table 4."""

DISPLAY = {name: spec.display for name, spec in MODELS.items()}
PLOTS = ("training_curves.png", "per_class_f1.png", "examples.png")
SCORES = ("precision", "recall", "f1", "f2")


def _read_metrics(model: str, run_dir: Path, split: str) -> dict[str, Any]:
    folder = run_dir / ("eval" if split == "test" else f"eval_{split}")
    path = folder / "metrics.json"
    if not path.is_file():
        raise RunNotFoundError(
            f"{path} does not exist: evaluate the {model} run first "
            f"(bigearthnet evaluate --run {run_dir} --split {split})"
        )
    doc = json.loads(path.read_text())
    if doc.get("model") not in (None, model):
        raise ConfigError(f"run {run_dir} trained {doc.get('model')}, but was given as {model}")
    return doc


def report_from_runs(workdir: str | os.PathLike[str], run_dirs: list[str | os.PathLike[str]],
                     split: str = "test") -> Path:
    """:func:`write_report` for run folders, each naming its model in its ``config.json``.

    Raises:
        RunNotFoundError: a folder is not a training run.
        ConfigError: two runs of the same model.
    """
    runs: dict[str, Path] = {}
    for run_dir in run_dirs:
        path = Path(run_dir)
        model = _run_config(path).get("model")
        if model is None:
            raise RunNotFoundError(f"{path} is not a training run folder (no {CONFIG_JSON})")
        if model in runs:
            raise ConfigError(f"two runs of {model}: {runs[model]} and {path}; pass one per model")
        runs[model] = path
    return write_report(workdir, runs, split=split)


def _run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_JSON
    return json.loads(path.read_text()) if path.is_file() else {}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100.0 * float(x):.2f}"


def _frac(x: float | None) -> str:
    return "–" if x is None else f"{float(x):.4f}"


def write_report(workdir: str | os.PathLike[str],
                 runs: Mapping[str, str | os.PathLike[str]], split: str = "test") -> Path:
    """Write ``W/report/report.md`` and ``W/report/summary.json`` from evaluated runs.

    Args:
        workdir: the work folder ``W``; the report goes to ``W/report``.
        runs: model name (``s-cnn-rgb``, ``s-cnn-all``, ``inception-v3``) -> run folder; each
            run must have been evaluated on ``split``.
        split: the evaluated split (the paper's Table 4 is on ``test``).

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError: no runs, an unknown model name, or a run that trained another model.
        RunNotFoundError: a run has no evaluation of ``split``.
    """
    if not runs:
        raise ConfigError("write_report needs at least one evaluated run")
    unknown = sorted(set(runs) - set(MODEL_ORDER))
    if unknown:
        raise ConfigError(f"unknown model name(s) {unknown}; expected some of {list(MODEL_ORDER)}")
    models = [m for m in MODEL_ORDER if m in runs]
    docs = {m: _read_metrics(m, Path(runs[m]), split) for m in models}

    out = Path(workdir) / "report"
    with staged_output(out, overwrite=True, marker=False) as stage:
        plots: dict[str, list[str]] = {}
        for m in models:
            src = Path(runs[m]) / ("eval" if split == "test" else f"eval_{split}")
            plots[m] = []
            for name in PLOTS:
                if (src / name).is_file():
                    (stage / m).mkdir(exist_ok=True)
                    shutil.copy2(src / name, stage / m / name)
                    plots[m].append(f"{m}/{name}")
        summary = {"models": {m: {k: float(docs[m]["samples"][k]) for k in SCORES}
                              for m in models}, "split": split}
        (stage / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (stage / "report.md").write_text(_markdown(models, docs, runs, plots, split))
    return out / "report.md"


def _markdown(models: list[str], docs: dict[str, dict[str, Any]],
              runs: Mapping[str, str | os.PathLike[str]], plots: dict[str, list[str]],
              split: str) -> str:
    datasets = sorted({str(docs[m].get("dataset", "?")) for m in models})
    lines = [
        "# BigEarthNet: multi-label classification results",
        "",
        (f"Sample-based precision (P), recall (R), F1 and F2 on the **{split}** split: each "
        "patch's P/R/F is computed from its predicted and true label sets (a class is predicted "
        "at sigmoid ≥ threshold), then averaged over patches — the metrics of the paper's "
        "Table 4."),
        "",
        f"Dataset: {', '.join(f'`{d}`' for d in datasets)}.",
        "",
        "## Table 4: ours and the paper's",
        "",
        ("| Model | P (%) | R (%) | F1 | F2 | patches | paper model | paper P (%) | paper R (%) "
        "| paper F1 | paper F2 |"),
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for m in models:
        s = docs[m]["samples"]
        p = PAPER_TABLE4[m]
        lines.append(
            f"| {DISPLAY[m]} | {_pct(s['precision'])} | {_pct(s['recall'])} | {_frac(s['f1'])} "
            f"| {_frac(s['f2'])} | {docs[m].get('n_samples', '–')} | {p['name']} "
            f"| {p['precision']:.2f} | {p['recall']:.2f} | {p['f1']:.4f} | {p['f2']:.4f} |"
        )
    lines += [
        "",
        ("The paper's numbers were measured on the real BigEarthNet archive (590,326 patches, "
        "43 classes, random 60/20/20 split after removing snow/cloud/shadow patches, 100 "
        "epochs). Ours are on the dataset above; on a synthetic or partial dataset they are "
        "not comparable in value, only in method. The paper fine-tuned a frozen Inception-v2; "
        "torchvision has no Inception-v2, so our baseline is a frozen Inception-v3 (same "
        "reference [1] of the paper) with the same FC + classification head."),
        "",
        "## Weights and checkpoints",
        "",
        ("| Model | weights | epochs | batch | learning rate | momentum | label set | threshold "
         "| checkpoint (epoch) | run folder |"),
        "|---|---|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for m in models:
        d = docs[m]
        c = _run_config(Path(runs[m]))
        lines.append(
            f"| {DISPLAY[m]} | `{d.get('weights_source', '?')}` | {c.get('epochs', '?')} "
            f"| {c.get('batch_size', '?')} | {c.get('lr', '?')} | {c.get('momentum', '?')} "
            f"| {d.get('label_set', '?')} | {d.get('threshold', '?')} | {d.get('checkpoint', '?')} "
            f"({d.get('checkpoint_epoch', '?')}) | `{runs[m]}` |"
        )
    lines += [
        "",
        ("Epochs, batch (global) and learning rate are each run's own settings (`config.json` in "
         "its folder). The paper trained 100 epochs and gives no batch size or learning rate; "
         "`bigearthnet run` (the demo) trains far shorter on a small synthetic world."),
    ]
    lines += [
        "",
        ("`random`: trained from scratch (S-CNN, as in the paper); `imagenet:<file>`: ImageNet "
        "weights read from the local torch hub cache; `file:<file>`: a given state_dict."),
        "",
        "## Other averages",
        "",
        ("| Model | micro P (%) | micro R (%) | micro F1 | macro P (%) | macro R (%) | macro F1 "
        "| mAP (macro) | mAP (micro) |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        d = docs[m]
        mi, ma = d["micro"], d["macro"]
        lines.append(
            f"| {DISPLAY[m]} | {_pct(mi['precision'])} | {_pct(mi['recall'])} | "
            f"{_frac(mi['f1'])} | {_pct(ma['precision'])} | {_pct(ma['recall'])} | "
            f"{_frac(ma['f1'])} | {_frac(d.get('map_macro'))} | {_frac(d.get('map_micro'))} |"
        )
    for m in models:
        if not plots[m]:
            continue
        lines += ["", f"## {DISPLAY[m]}", ""]
        for rel in plots[m]:
            caption = Path(rel).stem.replace("_", " ")
            lines += [f"![{DISPLAY[m]}: {caption}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"
