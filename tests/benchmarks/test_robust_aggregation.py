"""The robust-aggregation benchmark's attack and plan (fast), and one smoke federation per run (slow)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from benchmarks.robust_aggregation import ATTACK_FRACTION, RUNS, federation_overrides, poisoned, render, run_all
from cccmr_model.config import load_config
from cccmr_model.wire import decode, encode
from server.validation import l2_norm, update_bound


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def test_the_poisoned_update_is_the_honest_one_flipped_and_just_under_the_bound() -> None:
    rng = np.random.default_rng(0)
    sent = {"encoders.w": rng.normal(size=(5, 4)).astype(np.float32), "fusion.w": np.ones(3, np.float32)}
    trained = {"encoders.w": sent["encoders.w"] + np.float32(0.01)}

    def honest(msg, context):
        return Message(RecordDict({"arrays": ArrayRecord(encode(trained)), "metrics": MetricRecord({"num-examples": 4}),
                                   "site": ConfigRecord({"name": "x"})}), reply_to=msg)  # fmt: skip

    msg = Message(RecordDict({"arrays": ArrayRecord(encode(sent))}), dst_node_id=1, message_type="train")
    reply = poisoned(honest, 3.0)(msg, None)
    attacked = decode(reply.content["arrays"].to_numpy_ndarrays(), "test")
    update = attacked["encoders.w"] - sent["encoders.w"]
    bound = update_bound({"encoders.w": sent["encoders.w"]}, None, 3.0)
    assert l2_norm({"u": update}) == pytest.approx(ATTACK_FRACTION * bound, rel=1e-4)
    assert np.all(update < 0)  # the honest step was +0.01 everywhere


def test_every_run_is_a_valid_config() -> None:
    for aggregation, _ in RUNS:
        for quick in (False, True):
            config = load_config("tiny", federation_overrides(["a", "b", "c"], aggregation, 0, quick))
            assert config.federation.aggregation == aggregation and config.federation.min_sites == 3


@pytest.mark.slow
def test_a_smoke_run_scores_four_federations(tmp_path) -> None:
    results = run_all(tmp_path, 3, 4, 6, seed=0, quick=True)
    assert [(r["aggregation"], bool(r["poisoned_site"])) for r in results["runs"]] == list(RUNS)
    assert all(0.0 <= r["test_auc"] <= 1.0 and r["replies_rejected"] == 0 for r in results["runs"])
    assert "| median | site3 poisoned |" in render(results)
