"""Per-head training metrics in the history, and a site whose head predicts a constant named in a warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cccmr_model.config import load_config
from cccmr_model.run_folder import read_history
from cccmr_model.wire import decode
from server.evaluation import memorising_heads
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg, constant_heads

GROUPS = {"pretrain": ("encoders.", "heads."), "fim": ("encoders.", "heads.", "uncertainty."), "fusion": ("fusion.",)}


def make_strategy(tmp_path) -> PhaseFedAvg:
    shapes = {"encoders.cine_4ch.w": (2, 3), "encoders.cine_sax.w": (2, 3), "heads.cine_4ch.w": (2,), "fusion.w": (3,)}
    state = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    config = load_config("tiny", ["federation.max_update_ratio=null"])  # toy updates: +1 on zeros
    plan = plan_rounds(config.federation.phases, GROUPS)
    eval_keys = ["encoders.cine_4ch.w", "encoders.cine_sax.w", "fusion.w"]
    return PhaseFedAvg(plan, state, config=config, run_dir=tmp_path, eval_keys=eval_keys)


def site(kit, name: str, num_examples: int, metrics: dict[str, float]):
    """Trains by adding 1 to every sent trained array and reports `metrics`; evaluates with fixed counts."""

    def reply(msg):
        if msg.metadata.message_type == "evaluate":
            return kit.eval_reply(name, [3, 1, 0, 4], 0.5)
        groups = GROUPS[msg.content["config"]["phase"]]
        arrays = decode(msg.content["arrays"].to_numpy_ndarrays(), "test")
        trained = {k: v + np.float32(1.0) for k, v in arrays.items() if k.startswith(groups)}
        return kit.train_reply(name, trained, num_examples, loss=0.5, **metrics)

    return reply


def test_constant_heads_reads_the_flags() -> None:
    flags = {"loss": 0.3, "constant:lge_sax": 1.0, "constant:cine_4ch": 1.0, "constant:fusion": 0.0}
    assert constant_heads(flags) == ["cine_4ch", "lge_sax"]
    assert constant_heads({"acc:cine_4ch": 1.0}) == []


def test_history_carries_head_metrics_and_the_server_warns(tmp_path, kit, caplog: pytest.LogCaptureFixture) -> None:
    stuck = {"acc:cine_4ch": 0.5, "auc:cine_4ch": 0.5, "acc:lge_sax": 0.4, "constant:cine_4ch": 1.0}
    good = {"acc:cine_4ch": 0.9, "auc:cine_4ch": 0.95, "acc:lge_sax": 0.8, "auc:lge_sax": 0.7}
    grid = kit.FakeGrid({1: site(kit, "anzhen", 1, stuck), 2: site(kit, "lanzhou", 3, good)})
    with caplog.at_level(logging.WARNING, logger="cccmr.server"):
        strategy = make_strategy(tmp_path)
        strategy.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=1, timeout=5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("site anzhen" in w and "head cine_4ch predicts a constant" in w for w in warnings)
    assert not any("lanzhou" in w for w in warnings)
    (record,) = read_history(tmp_path / "history.jsonl")
    assert record["constant_heads"] == {"anzhen": ["cine_4ch"]}
    assert record["train"]["anzhen"]["constant:cine_4ch"] == 1.0
    assert record["train"]["lanzhou"]["auc:lge_sax"] == 0.7
    glob = record["train_global"]
    assert glob["acc:cine_4ch"] == pytest.approx(0.25 * 0.5 + 0.75 * 0.9)
    assert glob["auc:lge_sax"] == pytest.approx(0.7)  # averaged over the site that reports it
    assert glob["constant:cine_4ch"] == pytest.approx(0.25)  # the weighted share of flagged sites


def test_a_head_that_fits_training_but_not_validation_is_named(tmp_path, kit, caplog) -> None:
    """Training AUC >= 0.9 with validation AUC <= 0.6: a warning and `memorising_heads` in the history line; a head
    that holds up on validation is not named."""
    heads = {"acc:cine_4ch": 0.5, "auc:cine_4ch": 0.5, "loss:cine_4ch": 0.7, "examples:cine_4ch": 8,
             "acc:cine_sax": 0.9, "auc:cine_sax": 0.95, "loss:cine_sax": 0.3, "examples:cine_sax": 8}  # fmt: skip
    trained = {"auc:cine_4ch": 0.98, "auc:cine_sax": 0.97}

    def memorising(name: str):
        def reply(msg):
            if msg.metadata.message_type == "evaluate":
                return kit.eval_reply(name, [3, 1, 0, 4], 0.5, **heads)
            arrays = decode(msg.content["arrays"].to_numpy_ndarrays(), "test")
            return kit.train_reply(name, {k: v + np.float32(1.0) for k, v in arrays.items()
                                          if k.startswith(GROUPS["pretrain"])}, 4, loss=0.5, **trained)  # fmt: skip

        return reply

    one_round = ["federation.max_update_ratio=null", "federation.phases.pretrain.rounds=1",
                 "federation.phases.fim.rounds=0", "federation.phases.fusion.rounds=0"]  # fmt: skip
    config = load_config("tiny", one_round)
    state = {"encoders.cine_4ch.w": np.zeros((2, 3), np.float32), "heads.cine_4ch.w": np.zeros(2, np.float32),
             "encoders.cine_sax.w": np.zeros((2, 3), np.float32), "fusion.w": np.zeros(3, np.float32)}  # fmt: skip
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, GROUPS), state, config=config, run_dir=tmp_path,
                           eval_keys=["encoders.cine_4ch.w", "encoders.cine_sax.w", "fusion.w"])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="cccmr.server"):
        grid = kit.FakeGrid({1: memorising("anzhen"), 2: memorising("lanzhou")})
        strategy.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=1, timeout=5)
    (record,) = read_history(tmp_path / "history.jsonl")
    assert record["evaluate_global"]["auc:cine_4ch"] == pytest.approx(0.5)
    assert record["memorising_heads"] == {"cine_4ch": {"train_auc": pytest.approx(0.98), "val_auc": 0.5,
                                                       "evaluated_round": 1}}  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("head cine_4ch of round 1's model fits its training subjects" in w for w in warnings), warnings
    assert not any("cine_sax" in w for w in warnings)


def test_memorising_heads_needs_both_aucs() -> None:
    assert memorising_heads({"auc:lge_sax": 0.95}, {"auc:cine_4ch": 0.5}) == {}  # different heads: nothing to pair
    assert memorising_heads({"auc:lge_sax": 0.9}, {"auc:lge_sax": 0.6}) == {"lge_sax": {"train_auc": 0.9,
                                                                                        "val_auc": 0.6}}  # fmt: skip
    assert memorising_heads({"auc:lge_sax": 0.89}, {"auc:lge_sax": 0.5}) == {}
