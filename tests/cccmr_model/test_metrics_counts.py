"""Bootstrap CIs from confusion counts (what federated sites share) against direct per-subject computations."""

from __future__ import annotations

import numpy as np
import pytest

from cccmr_model.metrics import (
    calls,
    confusion_counts,
    confusion_metrics,
    count_report,
    evaluation_report,
    markdown_table,
    outcomes_from_confusion,
    stratified_bootstrap_indices,
)

SCREENING = np.array([[30, 7], [5, 21]])  # rows: true healthy, patient; columns: predicted


def test_calls_and_confusion_counts_round_trip_the_outcomes():
    labels, predicted = outcomes_from_confusion(SCREENING)
    np.testing.assert_array_equal(confusion_counts(labels, predicted, 2), SCREENING)
    assert calls("screening", np.array([0.2, 0.5, 0.7]), threshold=0.6).tolist() == [0, 0, 1]
    assert calls("subtyping", np.eye(5)[[3, 0, 4]]).tolist() == [3, 0, 4]
    with pytest.raises(ValueError, match="class indices"):
        confusion_counts(np.array([0, -1]), np.array([0, 1]), 2)
    m = confusion_metrics(SCREENING)
    assert m["sensitivity"] == pytest.approx(21 / 26) and m["specificity"] == pytest.approx(30 / 37)


def test_outcomes_expand_the_counts_exactly():
    labels, predicted = outcomes_from_confusion(SCREENING)
    assert len(labels) == SCREENING.sum()
    rebuilt = np.zeros_like(SCREENING)
    np.add.at(rebuilt, (labels, predicted), 1)
    np.testing.assert_array_equal(rebuilt, SCREENING)
    assert np.all(np.diff(labels) >= 0)  # grouped by true class


def test_count_report_matches_a_direct_bootstrap_of_the_outcomes():
    resamples, seed = 300, 7
    report = count_report("screening", SCREENING, resamples=resamples, seed=seed)
    (tn, fp), (fn, tp) = SCREENING
    m = report["metrics"]
    assert m["accuracy"]["value"] == pytest.approx((tp + tn) / SCREENING.sum())
    assert m["sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"]["value"] == pytest.approx(tn / (tn + fp))
    assert m["f1"]["value"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert "auc" not in m and "auc" in report["unavailable"]
    assert report["n"] == SCREENING.sum() and report["class_counts"] == {"0": 37, "1": 26}

    labels, predicted = outcomes_from_confusion(SCREENING)
    draws = {"accuracy": [], "sensitivity": [], "specificity": [], "f1": []}
    for idx in stratified_bootstrap_indices(labels, resamples, seed):
        y, p = labels[idx], predicted[idx]
        tp_, tn_ = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
        fp_, fn_ = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
        draws["accuracy"].append((tp_ + tn_) / len(y))
        draws["sensitivity"].append(tp_ / (tp_ + fn_))
        draws["specificity"].append(tn_ / (tn_ + fp_))
        draws["f1"].append(2 * tp_ / (2 * tp_ + fp_ + fn_))
    for name, sample in draws.items():
        low, high = np.quantile(sample, [0.025, 0.975])
        assert m[name]["ci_low"] == pytest.approx(low), name
        assert m[name]["ci_high"] == pytest.approx(high), name
        assert low < m[name]["value"] < high


def test_count_report_equals_per_subject_report_on_the_same_calls():
    """Subjects ordered like the expansion (by true, then predicted class) give identical intervals."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 80)
    scores = np.clip(0.3 * labels + rng.uniform(0, 0.7, 80), 0, 1)
    predicted = (scores >= 0.5).astype(int)
    order = np.lexsort((predicted, labels))
    confusion = np.zeros((2, 2), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    full = evaluation_report("screening", scores[order], labels[order], resamples=200, seed=1)
    counts = count_report("screening", confusion, resamples=200, seed=1)
    assert set(full["metrics"]) - set(counts["metrics"]) == {"auc"}
    for name, entry in counts["metrics"].items():
        for key in ("value", "ci_low", "ci_high"):
            assert entry[key] == pytest.approx(full["metrics"][name][key]), (name, key)


def test_count_report_for_subtypes_and_its_table_row():
    confusion = np.diag([6, 5, 4, 3, 2]) + 1  # five subtypes, one confusion in every off-diagonal cell
    report = count_report("subtyping", confusion, resamples=50)
    m = report["metrics"]
    assert m["accuracy"]["value"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert m["recall_HCM"]["value"] == pytest.approx(7 / 11)
    assert "macro_f1" in m and not any("auc" in k for k in m)
    table = markdown_table({"pooled": report})
    assert "| pooled |" in table and "n/a" in table  # AUC columns shown as unavailable
