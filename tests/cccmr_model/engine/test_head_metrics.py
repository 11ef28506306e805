"""Per-head training metrics of `train_phase` and the warning for a head that predicts a constant."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cccmr_model.config import load_config
from cccmr_model.engine import train_phase
from cccmr_model.engine.train import constant_prediction, head_metrics
from cccmr_model.model import build_model

SEQUENCE_HEADS = ("cine_4ch", "cine_sax", "lge_sax")


def test_head_metrics_accuracy_and_auc() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    assert head_metrics(probs, np.array([0, 1, 1, 0])) == {"acc": 0.5, "auc": 0.75}
    assert head_metrics(probs, np.array([1, 1, 1, 1])) == {"acc": 0.5}  # one class: no AUC, never NaN


def test_constant_prediction() -> None:
    labels = np.array([0, 1, 0, 1])
    assert constant_prediction(np.array([[0.6, 0.4], [0.9, 0.1], [0.7, 0.3], [0.55, 0.45]]), labels) is not None
    flat = np.tile([0.4, 0.6], (4, 1)) + np.array([[1e-4, -1e-4]]) * np.arange(4)[:, None]
    assert "vary by" in constant_prediction(flat, labels)
    varied = np.array([[0.6, 0.4], [0.2, 0.8], [0.7, 0.3], [0.55, 0.45]])
    assert constant_prediction(varied, labels) is None
    assert constant_prediction(np.tile([0.1, 0.9], (4, 1)), np.ones(4)) is None  # one class: a constant is right
    ranked = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.7, 0.3]])  # one call for all, but a perfect ranking
    assert constant_prediction(ranked, labels) is None  # early in training: still learning, not a constant


def test_phase_metrics_carry_every_head(config, cohort) -> None:
    result = train_phase(None, "pretrain", cohort, config, epochs=1, seed=0)
    for head in SEQUENCE_HEADS:
        assert 0.0 <= result.metrics[f"acc:{head}"] <= 1.0
    assert 0.0 <= result.metrics["auc:cine_4ch"] <= 1.0
    assert all(isinstance(v, float) and np.isfinite(v) for v in result.metrics.values())
    fused = train_phase(result.state, "fusion", cohort, config, epochs=1, seed=0)
    assert {k for k in fused.metrics if k.startswith(("acc:", "auc:"))} == {"acc:fusion", "auc:fusion"}


def test_a_constant_head_is_warned_about_and_flagged(fast, config, cohort, caplog: pytest.LogCaptureFixture) -> None:
    state = build_model(config).state_dict()
    state["heads.cine_4ch.weight"] = torch.zeros_like(state["heads.cine_4ch.weight"])  # logits = bias: constant
    state["heads.cine_4ch.bias"] = torch.tensor([2.0, -2.0])
    frozen = load_config("tiny", [*fast, "train.lr=1e-12", "train.min_lr=0"])  # the head stays as it is
    with caplog.at_level(logging.WARNING, logger="cccmr_model.engine.train"):
        result = train_phase(state, "pretrain", cohort, frozen, epochs=2, seed=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for epoch in (1, 2):
        assert f"phase pretrain epoch {epoch}: head cine_4ch predicts a constant (" in "\n".join(warnings)
    assert result.metrics["constant:cine_4ch"] == 1.0
    assert result.metrics["acc:cine_4ch"] == pytest.approx(float(np.mean(cohort.labels == 0)))
    assert "auc:cine_4ch" in result.metrics  # ties: 0.5, still a number
