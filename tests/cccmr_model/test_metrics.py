"""Metrics on hand-checked examples, against scikit-learn, and the bootstrap against a direct numpy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from cccmr_model.metrics import (
    binary_auc,
    bootstrap_ci,
    evaluation_report,
    markdown_table,
    roc_auc,
    screening_metrics,
    stratified_bootstrap_indices,
    subtyping_metrics,
)

# A fixed example: 6 healthy, 4 patients.
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
P_POS = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.05, 0.9, 0.7, 0.45, 0.8])


def test_screening_metrics_by_hand() -> None:
    m = screening_metrics(np.stack([1 - P_POS, P_POS], axis=1), LABELS)
    # calls: healthy 0.6 is a false positive; patient 0.45 a false negative -> TP 3, TN 5, FP 1, FN 1
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert m["auc"] == pytest.approx(roc_auc_score(LABELS, P_POS))
    assert m["f1"] == pytest.approx(f1_score(LABELS, P_POS >= 0.5))


def test_binary_auc_with_ties_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = rng.integers(0, 5, 200) / 4.0  # many ties
    assert binary_auc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert math.isnan(binary_auc(s, np.zeros(200)))


def test_roc_auc_binary_and_one_vs_rest_macro_match_sklearn() -> None:
    assert roc_auc(np.stack([1 - P_POS, P_POS], axis=1), LABELS) == pytest.approx(roc_auc_score(LABELS, P_POS))
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(5), 4)
    scores = rng.dirichlet(np.ones(5), size=len(y))
    assert roc_auc(scores, y) == pytest.approx(roc_auc_score(y, scores, multi_class="ovr", average="macro"))
    assert math.isnan(roc_auc(scores[y != 4], y[y != 4]))  # a class absent: not defined


def test_subtyping_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(5), 6)
    scores = rng.dirichlet(np.ones(5), size=len(y)) + np.eye(5)[y] * 0.3
    m = subtyping_metrics(scores, y)
    assert m["accuracy"] == pytest.approx((scores.argmax(1) == y).mean())
    assert m["macro_f1"] == pytest.approx(f1_score(y, scores.argmax(1), average="macro"))
    assert m["auc_HCM"] == pytest.approx(roc_auc_score(y == 0, scores[:, 0]))
    assert m["recall_ARVC"] == pytest.approx(((scores.argmax(1) == 4) & (y == 4)).sum() / 6)


def _direct_numpy_bootstrap(scores, labels, resamples, seed, confidence):
    """The documented algorithm written out: per resample, per class, draw that class's n_c members."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    members = [np.flatnonzero(labels == c) for c in classes]
    draws = [rng.integers(0, len(m), size=(resamples, len(m))) for m in members]
    accs, aucs = [], []
    for b in range(resamples):
        idx = np.concatenate([m[d[b]] for m, d in zip(members, draws, strict=True)])
        y, p = labels[idx], scores[idx]
        accs.append(np.mean((p >= 0.5) == (y == 1)))
        pos, neg = p[y == 1], p[y == 0]
        aucs.append(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))
    alpha = (1 - confidence) / 2
    return np.quantile(accs, [alpha, 1 - alpha]), np.quantile(aucs, [alpha, 1 - alpha])


def test_bootstrap_matches_direct_numpy_computation() -> None:
    ci = bootstrap_ci(lambda s, y: screening_metrics(s, y), P_POS, LABELS, resamples=500, confidence=0.95, seed=7)
    acc_ci, auc_ci = _direct_numpy_bootstrap(P_POS, LABELS, 500, 7, 0.95)
    assert [ci["accuracy"]["ci_low"], ci["accuracy"]["ci_high"]] == pytest.approx(acc_ci)
    assert [ci["auc"]["ci_low"], ci["auc"]["ci_high"]] == pytest.approx(auc_ci)
    assert ci["accuracy"]["value"] == pytest.approx(0.8)
    assert ci["accuracy"]["ci_low"] <= 0.8 <= ci["accuracy"]["ci_high"]


def test_bootstrap_resamples_are_stratified_and_seeded() -> None:
    idx = stratified_bootstrap_indices(LABELS, 100, seed=0)
    assert idx.shape == (100, len(LABELS))
    assert np.all((LABELS[idx] == 1).sum(axis=1) == 4)  # every resample keeps the class counts
    assert np.array_equal(idx, stratified_bootstrap_indices(LABELS, 100, seed=0))
    assert not np.array_equal(idx, stratified_bootstrap_indices(LABELS, 100, seed=1))


def test_report_and_markdown_table_layout() -> None:
    report = evaluation_report("screening", P_POS, LABELS, resamples=50, seed=0)
    assert report["class_counts"] == {"0": 6, "1": 4}
    table = markdown_table({"CC-CMR": report})
    lines = table.strip().splitlines()
    assert lines[2] == "| Method | Accuracy | F1-score | Sensitivity | Specificity | AUC |"
    row = lines[4]
    assert row.startswith("| CC-CMR | 0.800 (")
    assert row.count("(") == 5
    sub = evaluation_report("subtyping", np.eye(5)[[0, 1, 2, 3, 4, 0]], np.array([0, 1, 2, 3, 4, 1]), resamples=20)
    assert "Recall HCM" in markdown_table({"x": sub})
