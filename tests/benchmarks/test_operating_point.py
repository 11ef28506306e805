"""The operating-point benchmark's threshold rules on scores whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import operating_point


def test_youden_cuts_midway_between_the_classes_when_they_separate() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert operating_point.youden_threshold(scores, labels) == pytest.approx(0.45)


def test_youden_takes_the_best_cut_when_the_classes_overlap() -> None:
    scores = np.array([0.1, 0.2, 0.55, 0.3, 0.6, 0.7])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # cut 0.25: sensitivity 1, specificity 2/3 (J 0.67); cut 0.575: 2/3 and 1 (J 0.67, not larger); 0.4: 2/3, 2/3
    assert operating_point.youden_threshold(scores, labels) == pytest.approx(0.25)


def test_the_sensitivity_rule_misses_at_most_its_share_of_patients() -> None:
    labels = np.array([1] * 10 + [0] * 4)
    scores = np.array([0.05, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.1, 0.2, 0.35, 0.45])
    cut = operating_point.sensitivity_threshold(scores, labels, target=0.9)  # one of ten patients may be missed
    assert cut == pytest.approx((0.3 + 0.2) / 2)
    assert operating_point.calls_at(scores, labels, cut) == pytest.approx(
        {"sensitivity": 0.9, "specificity": 0.5, "accuracy": 11 / 14}
    )
