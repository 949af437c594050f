"""Tests for bigearthnet.train.metrics against scikit-learn and hand-computed answers."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, fbeta_score, precision_recall_fscore_support

from bigearthnet.errors import BigEarthNetError, MetricInputError
from bigearthnet.train import metrics as m

# --------------------------------------------------------------------------------------------
# random cases


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random multi-label case with the edge cases mixed in.

    Depending on the seed: rows with no true label, rows with no predicted label, rows with
    neither, all-zero true columns, all-zero predicted columns, ties in the scores and scores of
    exactly the threshold.
    """
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    c = int(rng.integers(2, 12))
    density = rng.uniform(0.05, 0.6)
    y_true = (rng.random((n, c)) < density).astype(np.int64)
    y_score = rng.random((n, c))
    if seed % 3 == 0:  # coarse scores -> many ties, some exactly 0.5
        y_score = np.round(y_score * 4) / 4
    if seed % 4 == 0:  # some rows with no true label
        y_true[rng.random(n) < 0.3] = 0
    if seed % 5 == 0:  # some rows with no prediction
        y_score[rng.random(n) < 0.3] = 0.1
    if seed % 6 == 0:  # all-zero label columns
        y_true[:, rng.random(c) < 0.3] = 0
    if seed % 7 == 0:  # all-zero predicted columns
        y_score[:, rng.random(c) < 0.3] = 0.2
    if seed % 11 == 0:  # correlated scores -> non-trivial precision
        y_score = np.clip(0.6 * y_true + 0.5 * rng.random((n, c)), 0, 1)
    return y_true, y_score


SEEDS = list(range(120))


def _sk_prf(y_true: np.ndarray, y_pred: np.ndarray, average: str | None) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, average=average, zero_division=0
        )
        f2 = fbeta_score(y_true, y_pred, beta=2, average=average, zero_division=0)
    return {"precision": p, "recall": r, "f1": f1, "f2": f2}


def _sk_ap(y_true: np.ndarray, y_score: np.ndarray, average: str | None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return average_precision_score(y_true, y_score, average=average)


@pytest.mark.parametrize("seed", SEEDS)
def test_thresholded_scores_match_sklearn(seed: int) -> None:
    y_true, y_score = _case(seed)
    y_pred = (y_score >= 0.5).astype(int)
    assert np.array_equal(m.binarize(y_score), y_pred)

    ours = m.sample_scores(y_true, y_pred)
    ref = _sk_prf(y_true, y_pred, "samples")
    for k in ("precision", "recall", "f1", "f2"):
        assert ours[k] == pytest.approx(ref[k], abs=1e-12), k

    for average, fn in (("micro", m.micro_scores), ("macro", m.macro_scores)):
        ours = fn(y_true, y_pred)
        ref = _sk_prf(y_true, y_pred, average)
        for k in ("precision", "recall", "f1", "f2"):
            assert ours[k] == pytest.approx(ref[k], abs=1e-12), (average, k)

    ours = m.class_scores(y_true, y_pred)
    ref = _sk_prf(y_true, y_pred, None)
    for k in ("precision", "recall", "f1", "f2"):
        np.testing.assert_allclose(ours[k], ref[k], atol=1e-12, err_msg=k)
    np.testing.assert_array_equal(ours["support"], y_true.sum(axis=0))


@pytest.mark.parametrize("seed", SEEDS)
def test_average_precision_matches_sklearn(seed: int) -> None:
    y_true, y_score = _case(seed)
    ap = m.average_precision(y_true, y_score)
    has_pos = y_true.sum(axis=0) > 0
    assert np.array_equal(np.isnan(ap), ~has_pos)
    ref = _sk_ap(y_true, y_score, None)
    np.testing.assert_allclose(ap[has_pos], np.asarray(ref)[has_pos], atol=1e-12)

    macro = m.map_macro(y_true, y_score)
    if has_pos.any():
        ref_macro = float(np.mean(np.asarray(ref)[has_pos]))
        assert macro == pytest.approx(ref_macro, abs=1e-12)
        # sklearn's own macro agrees when every class has a positive
        if has_pos.all():
            assert macro == pytest.approx(_sk_ap(y_true, y_score, "macro"), abs=1e-12)
    else:
        assert np.isnan(macro)

    micro = m.map_micro(y_true, y_score)
    if y_true.any():
        assert micro == pytest.approx(_sk_ap(y_true, y_score, "micro"), abs=1e-12)
    else:
        assert np.isnan(micro)


@pytest.mark.parametrize("seed", SEEDS[:40])
def test_compute_metrics_matches_parts(seed: int) -> None:
    y_true, y_score = _case(seed)
    names = [f"class {i}" for i in range(y_true.shape[1])]
    out = m.compute_metrics(y_true, y_score, names)
    json.dumps(out, allow_nan=False)  # strictly JSON-serialisable
    y_pred = (y_score >= 0.5).astype(int)
    ref = _sk_prf(y_true, y_pred, "samples")
    for k in ("precision", "recall", "f1", "f2"):
        assert out["samples"][k] == pytest.approx(ref[k], abs=1e-12)
    assert out["micro"] == m.micro_scores(y_true, y_pred)
    assert out["macro"] == m.macro_scores(y_true, y_pred)
    per = _sk_prf(y_true, y_pred, None)
    assert list(out["per_class"]) == names
    for i, name in enumerate(names):
        row = out["per_class"][name]
        assert set(row) == {"precision", "recall", "f1", "support"}
        assert row["precision"] == pytest.approx(per["precision"][i], abs=1e-12)
        assert row["recall"] == pytest.approx(per["recall"][i], abs=1e-12)
        assert row["f1"] == pytest.approx(per["f1"][i], abs=1e-12)
        assert row["support"] == int(y_true[:, i].sum())
        assert isinstance(row["support"], int)
    assert out["n_samples"] == y_true.shape[0]
    assert out["threshold"] == 0.5


# --------------------------------------------------------------------------------------------
# explicit edge cases


def test_edge_rows_against_sklearn() -> None:
    """One row per edge case; every per-row value is also checked by hand."""
    y_true = np.array(
        [
            [1, 1, 0, 0],  # perfect
            [1, 1, 0, 0],  # no prediction -> P 0, R 0, F 0
            [0, 0, 0, 0],  # no truth, a prediction -> P 0, R 0, F 0
            [0, 0, 0, 0],  # neither -> everything 0 (not 1, not skipped)
            [1, 0, 1, 0],  # one of two found, one false alarm -> P 1/2, R 1/2
        ]
    )
    y_pred = np.array(
        [
            [1, 1, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 1, 0],
            [0, 0, 0, 0],
            [1, 1, 0, 0],
        ]
    )
    per = m.sample_scores(y_true, y_pred, per_sample=True)
    np.testing.assert_array_equal(per["precision"], [1, 0, 0, 0, 0.5])
    np.testing.assert_array_equal(per["recall"], [1, 0, 0, 0, 0.5])
    np.testing.assert_array_equal(per["f1"], [1, 0, 0, 0, 0.5])
    np.testing.assert_array_equal(per["f2"], [1, 0, 0, 0, 0.5])
    avg = m.sample_scores(y_true, y_pred)
    assert avg == {"precision": 0.3, "recall": 0.3, "f1": 0.3, "f2": 0.3}
    ref = _sk_prf(y_true, y_pred, "samples")
    for k in avg:
        assert avg[k] == pytest.approx(ref[k], abs=1e-15)
    # column 3 is all-zero in truth and prediction: 0 on every per-class score
    cls = m.class_scores(y_true, y_pred)
    assert [cls[k][3] for k in ("precision", "recall", "f1", "f2", "support")] == [0, 0, 0, 0, 0]


def test_all_empty_truth_and_prediction() -> None:
    y = np.zeros((3, 4), dtype=int)
    out = m.compute_metrics(y, np.zeros((3, 4)), list("abcd"))
    for group in ("samples", "micro", "macro"):
        assert out[group] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "f2": 0.0}
    assert out["map_macro"] is None
    assert out["map_micro"] is None
    json.dumps(out, allow_nan=False)


def test_threshold_is_inclusive() -> None:
    y_true = np.array([[1, 0, 1]])
    y_score = np.array([[0.5, np.nextafter(0.5, 0.0), 0.7]])
    assert m.binarize(y_score).tolist() == [[1, 0, 1]]
    out = m.compute_metrics(y_true, y_score, ["a", "b", "c"])
    assert out["samples"]["precision"] == 1.0 and out["samples"]["recall"] == 1.0
    out = m.compute_metrics(y_true, y_score, ["a", "b", "c"], threshold=0.6)
    assert out["samples"]["recall"] == 0.5 and out["threshold"] == 0.6


# --------------------------------------------------------------------------------------------
# known answer, computed by hand


def test_known_answer() -> None:
    names = ["forest", "water", "urban"]
    y_true = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0], [0, 0, 1]])
    y_score = np.array(
        [
            [0.9, 0.2, 0.6],  # pred {forest, urban}: tp 1, p 2, t 2
            [0.1, 0.8, 0.7],  # pred {water, urban}: tp 2, p 2, t 2
            [0.4, 0.3, 0.1],  # pred {}: tp 0, p 0, t 1
            [0.3, 0.1, 0.55],  # pred {urban}: tp 1, p 1, t 1
        ]
    )
    out = m.compute_metrics(y_true, y_score, names)
    # per patch P = 1/2, 1, 0, 1 ; R = 1/2, 1, 0, 1 ; F1 = F2 = 1/2, 1, 0, 1
    assert out["samples"]["precision"] == pytest.approx(2.5 / 4)
    assert out["samples"]["recall"] == pytest.approx(2.5 / 4)
    assert out["samples"]["f1"] == pytest.approx(2.5 / 4)
    assert out["samples"]["f2"] == pytest.approx(2.5 / 4)
    # per class: forest tp1 p1 t2 ; water tp1 p1 t2 ; urban tp2 p3 t2
    assert out["per_class"]["forest"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert out["per_class"]["urban"]["precision"] == pytest.approx(2 / 3)
    assert out["per_class"]["urban"]["recall"] == 1.0
    assert out["per_class"]["urban"]["f1"] == pytest.approx(0.8)
    # micro: tp 4, p 5, t 6
    assert out["micro"]["precision"] == pytest.approx(4 / 5)
    assert out["micro"]["recall"] == pytest.approx(4 / 6)
    assert out["micro"]["f1"] == pytest.approx(8 / 11)
    assert out["micro"]["f2"] == pytest.approx(5 * 4 / (4 * 6 + 5))
    # macro: P (1 + 1 + 2/3)/3, R (1/2 + 1/2 + 1)/3, F1 (2/3 + 2/3 + 4/5)/3
    assert out["macro"]["precision"] == pytest.approx(8 / 9)
    assert out["macro"]["recall"] == pytest.approx(2 / 3)
    assert out["macro"]["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0.8) / 3)
    # AP forest: order .9(+) .4(+) .3 .1 -> 1*1/2 + 1*1/2 = 1
    # AP water: order .8(+) .3 .2(+) .1 -> 1/2*1 + 1/2*2/3 = 5/6
    # AP urban: order .7(+) .6 .55(+) .1 -> 1/2*1 + 1/2*2/3 = 5/6
    np.testing.assert_allclose(m.average_precision(y_true, y_score), [1, 5 / 6, 5 / 6])
    assert out["map_macro"] == pytest.approx((1 + 5 / 6 + 5 / 6) / 3)
    assert out["n_samples"] == 4


def test_ties_form_one_step() -> None:
    # scores tie at 0.5 for one positive and one negative: one step of recall 1 at precision 1/2
    assert m.average_precision([[1], [0]], [[0.5], [0.5]])[0] == pytest.approx(0.5)
    assert m.average_precision([[1], [0]], [[0.6], [0.5]])[0] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# input types and validation


def test_accepts_torch_tensors() -> None:
    y_true, y_score = _case(7)
    names = [str(i) for i in range(y_true.shape[1])]
    ref = m.compute_metrics(y_true, y_score, names)
    got = m.compute_metrics(torch.from_numpy(y_true).bool(), torch.from_numpy(y_score), names)
    assert got == ref
    got = m.compute_metrics(
        torch.from_numpy(y_true).float(), torch.from_numpy(y_score).requires_grad_(), names
    )
    assert got == ref


@pytest.mark.parametrize(
    ("y_true", "y_score", "names", "threshold", "match"),
    [
        (np.ones((2, 3)), np.ones((2, 2)), list("abc"), 0.5, "shape"),
        (np.ones(3), np.ones(3), list("abc"), 0.5, "n_samples, n_classes"),
        (np.zeros((0, 3)), np.zeros((0, 3)), list("abc"), 0.5, "no samples"),
        (np.full((2, 3), 2), np.ones((2, 3)), list("abc"), 0.5, "only 0 and 1"),
        (np.ones((2, 3)), np.full((2, 3), np.nan), list("abc"), 0.5, "NaN"),
        (np.ones((2, 3)), np.full((2, 3), 3.0), list("abc"), 0.5, "sigmoid"),
        (np.ones((2, 3)), np.ones((2, 3)), list("ab"), 0.5, "class names"),
        (np.ones((2, 3)), np.ones((2, 3)), list("aab"), 0.5, "duplicates"),
        (np.ones((2, 3)), np.ones((2, 3)), list("abc"), 1.5, "threshold"),
    ],
)
def test_rejects_bad_input(y_true, y_score, names, threshold, match) -> None:
    with pytest.raises(MetricInputError, match=match) as info:
        m.compute_metrics(y_true, y_score, names, threshold=threshold)
    assert isinstance(info.value, BigEarthNetError)
    assert isinstance(info.value, ValueError)
