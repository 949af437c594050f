"""PNG plots of an evaluation: per-class F1, training curves, example patches (paper Table 3).

Every function takes plain arrays/dicts and writes one PNG. Figures are built with
``matplotlib.figure.Figure`` (no pyplot state, no GUI backend), so they work in any process.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_examples", "plot_per_class_f1", "plot_training_curves", "rgb_stretch"]

DPI = 110


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def plot_per_class_f1(per_class: Mapping[str, Mapping[str, float]],
                      path: str | os.PathLike[str], title: str = "") -> Path:
    """Horizontal bars of per-class F1, annotated with each class's support.

    Args:
        per_class: ``compute_metrics(...)["per_class"]`` (name -> precision/recall/f1/support),
            in class order.
        path: PNG to write.
        title: figure title.

    Returns:
        ``path``.
    """
    names = list(per_class)
    f1 = np.array([float(per_class[n]["f1"]) for n in names])
    support = [int(per_class[n].get("support", 0)) for n in names]
    fig = _figure(8.0, max(2.5, 0.24 * len(names) + 1.0))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    colors = ["#4c72b0" if s > 0 else "#c8c8c8" for s in support]
    ax.barh(y, f1, color=colors)
    ax.set_yticks(y, [textwrap.shorten(n, 48) for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("F1 (grey: class absent from the split)")
    for yi, (v, s) in enumerate(zip(f1, support)):
        ax.text(min(v, 1.0) + 0.01, yi, f"{v:.2f} (n={s})", va="center", fontsize=6)
    ax.set_title(title or "Per-class F1")
    return _save(fig, path)


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                         title: str = "") -> Path:
    """Training loss and validation sample P/R/F1/F2 against the epoch; best epoch marked.

    Args:
        history: the records of ``train_log.jsonl``.
        path: PNG to write.
        title: figure title.

    Returns:
        ``path``.
    """
    fig = _figure(9.0, 3.6)
    ax_loss, ax_val = fig.subplots(1, 2)
    epochs = [int(r["epoch"]) for r in history]
    ax_loss.plot(epochs, [float(r["train_loss"]) for r in history], marker="o", ms=3)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (sigmoid cross-entropy)")
    for key in ("precision", "recall", "f1", "f2"):
        ax_val.plot(epochs, [float(r["val"]["samples"][key]) for r in history], marker="o",
                    ms=3, label=key if key in ("f1", "f2") else key[0].upper())
    best = [int(r["epoch"]) for r in history if r.get("best")]
    if best:
        ax_val.axvline(best[-1], color="grey", ls="--", lw=1, label=f"best (epoch {best[-1]})")
    ax_val.set_ylim(0, 1)
    ax_val.set_xlabel("epoch")
    ax_val.set_ylabel("validation, sample-based")
    ax_val.legend(fontsize=7)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    fig.suptitle(title or "Training curves")
    return _save(fig, path)


def rgb_stretch(bands_10m: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """True-colour image of one patch: B04, B03, B02 with a per-channel percentile stretch.

    Args:
        bands_10m: ``(4, H, W)`` uint16 in the stored order B02, B03, B04, B08.
        low: lower percentile mapped to 0.
        high: upper percentile mapped to 1.

    Returns:
        ``(H, W, 3)`` float32 in ``[0, 1]``.
    """
    rgb = np.stack([bands_10m[2], bands_10m[1], bands_10m[0]], axis=-1).astype(np.float32)
    lo = np.percentile(rgb, low, axis=(0, 1))
    hi = np.percentile(rgb, high, axis=(0, 1))
    return np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def plot_examples(examples: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                  title: str = "") -> Path:
    """The analogue of the paper's Table 3: RGB patches with true and predicted labels.

    Args:
        examples: ``{"patch_id", "bands_10m" (4, 120, 120) uint16, "true": [names],
            "pred": [names]}`` per patch.
        path: PNG to write.
        title: figure title.

    Returns:
        ``path``.
    """
    n = max(len(examples), 1)
    fig = _figure(9.0, 2.0 * n + 0.4)
    axes = fig.subplots(n, 2, squeeze=False, width_ratios=[1, 3.2])
    for i in range(n):
        ax_img, ax_txt = axes[i]
        ax_img.set_axis_off()
        ax_txt.set_axis_off()
        if i >= len(examples):
            continue
        ex = examples[i]
        ax_img.imshow(rgb_stretch(np.asarray(ex["bands_10m"])), interpolation="nearest")
        true, pred = list(ex["true"]), list(ex["pred"])
        right = sorted(set(true) & set(pred))
        text = (f"{ex['patch_id']}\n"
                + textwrap.fill("true: " + (", ".join(true) or "-"), 90) + "\n"
                + textwrap.fill("predicted: " + (", ".join(pred) or "-"), 90) + "\n"
                + f"correct {len(right)} of {len(true)} true, {len(pred)} predicted")
        ax_txt.text(0.0, 0.5, text, va="center", ha="left", fontsize=7, family="monospace",
                    transform=ax_txt.transAxes)
    fig.suptitle(title or "Test patches: true vs predicted labels")
    return _save(fig, path)
