"""Multi-label classification metrics of the BigEarthNet papers (numpy only).

All functions take ``y_true`` of shape ``(n_samples, n_classes)`` with 0/1 (or bool) entries and
either ``y_pred`` (0/1, same shape) or ``y_score`` (float, same shape). numpy arrays, torch tensors
(any device, any dtype) and nested lists are accepted; results are numpy float64 or Python floats.
Nothing here imports torch.

Binarisation rule
    A class is predicted when its *probability* is at least the threshold:
    ``y_pred = y_score >= threshold`` (``>=``, not ``>``; a score of exactly 0.5 is a positive).
    With ``threshold = 0.5`` this is the same as ``logit >= 0``. Scores must be probabilities
    (``sigmoid(logits)``); :func:`compute_metrics` rejects values outside ``[0, 1]`` so that
    logits are not thresholded at 0.5 by mistake.

Sample-based scores (the numbers of the paper's Table 4)
    For every patch *i*, with ``tp_i`` true positives, ``p_i`` predicted labels and ``t_i`` true
    labels::

        precision_i = tp_i / p_i                                  (0 when p_i == 0)
        recall_i    = tp_i / t_i                                  (0 when t_i == 0)
        F_beta_i    = (1 + b^2) tp_i / (b^2 t_i + p_i)            (0 when t_i == p_i == 0)

    then each is averaged (unweighted mean) over the patches. ``F_beta_i`` equals the harmonic
    form ``(1 + b^2) P R / (b^2 P + R)`` whenever that is defined and is 0 otherwise. Edge cases:

    * a patch with no predicted label has precision 0 (0/0), and recall and F 0 (tp = 0);
    * a patch with no true label has recall 0 (0/0); its precision is 0 too (every prediction
      is a false positive, or 0/0 if it predicts nothing), and so is F;
    * a patch with neither true nor predicted labels scores 0 on every metric: it is *not*
      counted as a perfect prediction and it is *not* skipped (it stays in the denominator of
      the average over patches).

    This is exactly scikit-learn's ``precision_recall_fscore_support(average="samples",
    zero_division=0)`` / ``fbeta_score(..., average="samples", zero_division=0)``.

Micro, macro and per-class scores
    Per class the same three formulas are applied to the column counts (0/0 -> 0). *Micro*
    sums tp, predicted and true counts over all classes first. *Macro* is the unweighted mean of
    the per-class scores over **all** classes, including classes that never occur in ``y_true``
    (they contribute 0); macro F is the mean of per-class F, not F of macro P and R. This equals
    scikit-learn with ``average="micro" | "macro" | None`` and ``zero_division=0``.

Average precision (AP)
    For one class, scores are sorted in decreasing order; at each *distinct* score value
    (ties form one step) precision ``P_k`` and recall ``R_k`` of "score >= value" are computed,
    and ``AP = sum_k (R_k - R_{k-1}) P_k`` with ``R_0 = 0`` (no interpolation). This is
    scikit-learn's ``average_precision_score``. AP is undefined for a class with no positive
    patch; :func:`average_precision` returns NaN for it (scikit-learn returns 0 with a warning).

    * ``map_macro``: mean AP over the classes that have **at least one positive** in ``y_true``
      (equal to ``average_precision_score(average=None)`` restricted to those classes and
      averaged). Classes without positives are excluded, not counted as 0, so that a rare class
      absent from a small test split does not pull the mean down. NaN (``None`` in
      :func:`compute_metrics`) when no class has a positive.
    * ``map_micro``: AP of all (patch, class) pairs pooled into one binary problem (scikit-learn's
      ``average="micro"``). NaN / ``None`` when ``y_true`` has no positive at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bigearthnet.errors import MetricInputError

DEFAULT_THRESHOLD = 0.5
"""Probability at or above which a class is predicted (``score >= threshold``)."""

__all__ = [
    "DEFAULT_THRESHOLD",
    "as_numpy",
    "average_precision",
    "binarize",
    "class_scores",
    "compute_metrics",
    "macro_scores",
    "map_macro",
    "map_micro",
    "micro_scores",
    "sample_scores",
]


# --------------------------------------------------------------------------------------------
# input handling


def as_numpy(x: Any) -> np.ndarray:
    """Convert a numpy array, torch tensor or nested sequence to a numpy array.

    Torch tensors are detached and moved to the CPU (duck-typed, so torch is not imported).

    Args:
        x: array-like input.

    Returns:
        A numpy array (a view when ``x`` already is one).
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        if hasattr(x, "dtype") and str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _check_2d(x: np.ndarray, name: str) -> None:
    if x.ndim != 2:
        raise MetricInputError(
            f"{name} must have shape (n_samples, n_classes), got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise MetricInputError(f"{name} has no samples; metrics over 0 patches are undefined")
    if x.shape[1] == 0:
        raise MetricInputError(f"{name} has no classes")


def _binary(x: Any, name: str) -> np.ndarray:
    """Validate a 0/1 label matrix and return it as bool."""
    a = as_numpy(x)
    _check_2d(a, name)
    if a.dtype == np.bool_:
        return a
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise MetricInputError(f"{name} must be numeric 0/1 or bool, got dtype {a.dtype}")
    ok = (a == 0) | (a == 1)
    if not bool(ok.all()):
        bad = a[~ok].ravel()[:5].tolist()
        raise MetricInputError(f"{name} must contain only 0 and 1, found e.g. {bad}")
    return a == 1


def _scores(x: Any, name: str) -> np.ndarray:
    """Validate a finite float score matrix and return it as float64."""
    a = as_numpy(x)
    _check_2d(a, name)
    if not (
        np.issubdtype(a.dtype, np.floating)
        or np.issubdtype(a.dtype, np.integer)
        or a.dtype == np.bool_
    ):
        raise MetricInputError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not bool(np.isfinite(a).all()):
        raise MetricInputError(f"{name} contains NaN or infinite values")
    return a


def _same_shape(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise MetricInputError(
            f"{na} has shape {tuple(a.shape)} but {nb} has shape {tuple(b.shape)}"
        )


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Elementwise ``num / den`` with 0 where ``den == 0`` (scikit-learn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _fbeta(tp: np.ndarray, n_true: np.ndarray, n_pred: np.ndarray, beta: float) -> np.ndarray:
    """``(1 + b^2) tp / (b^2 n_true + n_pred)``, 0 where the denominator is 0."""
    b2 = beta * beta
    return _divide(
        (1.0 + b2) * np.asarray(tp, np.float64),
        b2 * np.asarray(n_true, np.float64) + np.asarray(n_pred, np.float64),
    )


def _counts(y_true: Any, y_pred: Any, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = _binary(y_true, "y_true")
    p = _binary(y_pred, "y_pred")
    _same_shape(t, p, "y_true", "y_pred")
    tp = np.logical_and(t, p).sum(axis=axis, dtype=np.int64)
    return tp, t.sum(axis=axis, dtype=np.int64), p.sum(axis=axis, dtype=np.int64)


def _prf(tp: np.ndarray, n_true: np.ndarray, n_pred: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "precision": _divide(tp, n_pred),
        "recall": _divide(tp, n_true),
        "f1": _fbeta(tp, n_true, n_pred, 1.0),
        "f2": _fbeta(tp, n_true, n_pred, 2.0),
    }


# --------------------------------------------------------------------------------------------
# thresholded metrics


def binarize(y_score: Any, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Turn probabilities into 0/1 predictions with ``y_score >= threshold``.

    Args:
        y_score: ``(n, C)`` probabilities.
        threshold: decision threshold; a score equal to it counts as predicted.

    Returns:
        ``(n, C)`` int8 array of 0/1.

    Raises:
        MetricInputError: on a bad shape, non-finite scores or a non-finite threshold.
    """
    s = _scores(y_score, "y_score")
    if not math.isfinite(float(threshold)):
        raise MetricInputError(f"threshold must be finite, got {threshold!r}")
    return (s >= float(threshold)).astype(np.int8)


def sample_scores(y_true: Any, y_pred: Any, *, per_sample: bool = False) -> dict[str, Any]:
    """Sample-based precision, recall, F1 and F2 (per patch, then averaged over patches).

    See the module docstring for the edge cases (every 0/0 is 0).

    Args:
        y_true: ``(n, C)`` 0/1 ground truth.
        y_pred: ``(n, C)`` 0/1 predictions.
        per_sample: return the ``(n,)`` per-patch arrays instead of their means.

    Returns:
        ``{"precision", "recall", "f1", "f2"}`` as floats (or arrays with ``per_sample``).

    Raises:
        MetricInputError: on mismatched shapes or non-binary values.
    """
    per = _prf(*_counts(y_true, y_pred, axis=1))
    if per_sample:
        return per
    return {k: float(v.mean()) for k, v in per.items()}


def class_scores(y_true: Any, y_pred: Any) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1, F2 and support (number of true positives of the class).

    Args:
        y_true: ``(n, C)`` 0/1 ground truth.
        y_pred: ``(n, C)`` 0/1 predictions.

    Returns:
        ``{"precision", "recall", "f1", "f2"}`` as ``(C,)`` float64 arrays and ``"support"`` as
        a ``(C,)`` int64 array.

    Raises:
        MetricInputError: on mismatched shapes or non-binary values.
    """
    tp, n_true, n_pred = _counts(y_true, y_pred, axis=0)
    out: dict[str, np.ndarray] = _prf(tp, n_true, n_pred)
    out["support"] = n_true
    return out


def micro_scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Micro-averaged precision, recall, F1 and F2 (counts summed over all classes first).

    Args:
        y_true: ``(n, C)`` 0/1 ground truth.
        y_pred: ``(n, C)`` 0/1 predictions.

    Returns:
        ``{"precision", "recall", "f1", "f2"}`` as floats.
    """
    tp, n_true, n_pred = _counts(y_true, y_pred, axis=0)
    return {k: float(v) for k, v in _prf(tp.sum(), n_true.sum(), n_pred.sum()).items()}


def macro_scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """Macro-averaged precision, recall, F1 and F2 (unweighted mean over all classes).

    Classes with no true and no predicted patch contribute 0 to every mean.

    Args:
        y_true: ``(n, C)`` 0/1 ground truth.
        y_pred: ``(n, C)`` 0/1 predictions.

    Returns:
        ``{"precision", "recall", "f1", "f2"}`` as floats.
    """
    per = class_scores(y_true, y_pred)
    return {k: float(per[k].mean()) for k in ("precision", "recall", "f1", "f2")}


# --------------------------------------------------------------------------------------------
# ranking metrics


def _binary_ap(truth: np.ndarray, score: np.ndarray) -> float:
    """Uninterpolated AP of one binary problem; NaN when there is no positive."""
    n_pos = int(truth.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    t = truth[order].astype(np.float64)
    # last index of every run of equal scores = one threshold step
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(t)[ends]
    n_above = ends + 1.0
    precision = tps / n_above
    recall = tps / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def average_precision(y_true: Any, y_score: Any) -> np.ndarray:
    """Per-class average precision (scikit-learn's ``average_precision_score(average=None)``).

    Args:
        y_true: ``(n, C)`` 0/1 ground truth.
        y_score: ``(n, C)`` scores (any monotone score works; only the order matters).

    Returns:
        ``(C,)`` float64 array, NaN for classes without a positive patch.

    Raises:
        MetricInputError: on mismatched shapes, non-binary labels or non-finite scores.
    """
    t = _binary(y_true, "y_true")
    s = _scores(y_score, "y_score")
    _same_shape(t, s, "y_true", "y_score")
    return np.array([_binary_ap(t[:, c], s[:, c]) for c in range(t.shape[1])], dtype=np.float64)


def map_macro(y_true: Any, y_score: Any) -> float:
    """Mean AP over the classes with at least one positive patch (NaN if there is none).

    Args:
        y_true: ``(n, C)`` 0/1 ground truth.
        y_score: ``(n, C)`` scores.

    Returns:
        The macro mean average precision.
    """
    ap = average_precision(y_true, y_score)
    defined = ap[~np.isnan(ap)]
    return float(defined.mean()) if defined.size else float("nan")


def map_micro(y_true: Any, y_score: Any) -> float:
    """AP of all (patch, class) pairs pooled together (NaN if ``y_true`` has no positive).

    Args:
        y_true: ``(n, C)`` 0/1 ground truth.
        y_score: ``(n, C)`` scores.

    Returns:
        The micro mean average precision.
    """
    t = _binary(y_true, "y_true")
    s = _scores(y_score, "y_score")
    _same_shape(t, s, "y_true", "y_score")
    return _binary_ap(t.ravel(), s.ravel())


# --------------------------------------------------------------------------------------------
# entry point


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def compute_metrics(
    y_true: Any,
    y_score: Any,
    class_names: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, Any]:
    """Compute every evaluation metric of the project in one JSON-serialisable dict.

    Args:
        y_true: ``(n, C)`` 0/1 ground truth (numpy, torch or lists).
        y_score: ``(n, C)`` probabilities in ``[0, 1]`` (apply the sigmoid to logits first).
        class_names: the ``C`` class names, in column order (must be unique).
        threshold: a class is predicted when ``score >= threshold``; must be in ``[0, 1]``.

    Returns:
        ``{"samples": {"precision", "recall", "f1", "f2"},
        "micro": {...same keys}, "macro": {...same keys},
        "per_class": {name: {"precision", "recall", "f1", "support"}},
        "map_macro", "map_micro", "n_samples", "threshold"}``. All values are Python floats or
        ints; ``map_macro``/``map_micro`` are ``None`` when undefined (no positive label), never
        NaN, so ``json.dumps(..., allow_nan=False)`` works.

    Raises:
        MetricInputError: on mismatched shapes, non-binary labels, scores outside ``[0, 1]``,
            a threshold outside ``[0, 1]`` or class names that do not match the columns.
    """
    t = _binary(y_true, "y_true")
    s = _scores(y_score, "y_score")
    _same_shape(t, s, "y_true", "y_score")
    names = list(class_names)
    if len(names) != t.shape[1]:
        raise MetricInputError(f"{len(names)} class names given for {t.shape[1]} label columns")
    if len(set(names)) != len(names):
        raise MetricInputError("class_names contains duplicates")
    if not all(isinstance(n, str) for n in names):
        raise MetricInputError("class_names must be strings")
    thr = float(threshold)
    if not (0.0 <= thr <= 1.0):
        raise MetricInputError(f"threshold must be in [0, 1], got {threshold!r}")
    if s.min() < 0.0 or s.max() > 1.0:
        raise MetricInputError(
            f"y_score must be probabilities in [0, 1] (got range [{s.min():.4g}, {s.max():.4g}]);"
            " apply torch.sigmoid to the model's logits first"
        )

    y_pred = binarize(s, thr)
    per = class_scores(t, y_pred)
    per_class = {
        name: {
            "precision": float(per["precision"][i]),
            "recall": float(per["recall"][i]),
            "f1": float(per["f1"][i]),
            "support": int(per["support"][i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "samples": sample_scores(t, y_pred),
        "micro": micro_scores(t, y_pred),
        "macro": {k: float(per[k].mean()) for k in ("precision", "recall", "f1", "f2")},
        "per_class": per_class,
        "map_macro": _json_float(map_macro(t, s)),
        "map_micro": _json_float(map_micro(t, s)),
        "n_samples": int(t.shape[0]),
        "threshold": thr,
    }
