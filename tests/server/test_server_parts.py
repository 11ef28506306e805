"""Round plan, reply checks, checkpoint metadata and global metrics of the federated server."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cccmr_model.config import config_to_dict, load_config
from cccmr_model.run_folder import load_checkpoint, save_checkpoint
from server.checkpoint import check_resumable, known_sites, strategy_meta
from server.evaluation import global_eval_metrics
from server.schedule import plan_rounds, round_seed
from server.validation import check_train_reply, update_norm

GROUPS = {"pretrain": ("encoders.", "heads."), "fim": ("encoders.", "heads.", "uncertainty."), "fusion": ("fusion.",)}


def test_plan_covers_each_phase_schedule_once():
    plan = plan_rounds(load_config("default").federation.phases, GROUPS)
    assert len(plan) == 30 + 60 + 2
    fim = [p for p in plan if p.phase == "fim"]
    assert fim[0].lr_window == (0.0, 1 / 60) and fim[-1].lr_window == (59 / 60, 1.0)
    assert all(a.lr_window[1] == b.lr_window[0] for a, b in itertools.pairwise(fim))
    assert [p.server_round for p in plan] == list(range(1, 93))
    fusion = plan[-1]
    assert fusion.trains == ("fusion.",)
    assert fusion.sends == ("fusion.", "encoders.cine_4ch.", "encoders.cine_sax.")
    assert plan[0].sends == plan[0].trains == ("encoders.", "heads.")
    assert round_seed(7, fim[0]) == 7 and round_seed(7, fim[3]) == 10


def test_check_train_reply():
    sent = {"a": np.zeros((2, 2), np.float32), "b": np.ones(3, np.float32)}
    ok = {"a": np.full((2, 2), 0.5, np.float32), "b": np.ones(3, np.float32)}
    assert check_train_reply(ok, {"num-examples": 4, "loss": 0.3}, sent, max_update_norm=1.01) is None
    assert update_norm(ok, sent) == pytest.approx(1.0)
    assert "exceeds" in check_train_reply(ok, {"num-examples": 4}, sent, max_update_norm=0.5)
    assert "missing b" in check_train_reply({"a": ok["a"]}, {"num-examples": 4}, sent)
    assert "float64" in check_train_reply({**ok, "b": np.ones(3)}, {"num-examples": 4}, sent)
    assert "num-examples" in check_train_reply(ok, {"num-examples": 0}, sent)
    assert "num-examples" in check_train_reply(ok, {"loss": 1.0}, sent)
    assert "loss is not a finite number" in check_train_reply(ok, {"num-examples": 4, "loss": float("inf")}, sent)


def test_strategy_meta_written_with_a_checkpoint_reads_back_its_sites_and_config(tmp_path):
    config = load_config("tiny")
    save_checkpoint(tmp_path, 1, {"a.w": np.ones(2, np.float32)}, strategy_meta(config, {7: "anzhen", 12: "lanzhou"}))
    ckpt = load_checkpoint(tmp_path)
    assert known_sites(ckpt) == {7: "anzhen", 12: "lanzhou"}
    check_resumable(ckpt, config_to_dict(config), tmp_path)  # the config it holds is the run's
    save_checkpoint(tmp_path, 2, {"a.w": np.ones(2, np.float32)}, {"config": config_to_dict(config)})
    assert known_sites(load_checkpoint(tmp_path)) == {}  # a checkpoint without strategy state


def test_global_metrics_equal_pooled_evaluation():
    sites = {
        "a": {"num-examples": 5, "loss": 1.0, "confusion": [2, 1, 0, 2], "scores": [0.1, 0.6, 0.2, 0.9, 0.8],
              "labels": [0, 0, 0, 1, 1]},
        "b": {"num-examples": 3, "loss": 2.0, "confusion": [1, 0, 1, 1], "scores": [0.3, 0.4, 0.7],
              "labels": [0, 1, 1]},
    }  # fmt: skip
    g = global_eval_metrics(sites, 2)
    assert g["accuracy"] == pytest.approx(6 / 8) and g["loss"] == pytest.approx(11 / 8)
    labels = sites["a"]["labels"] + sites["b"]["labels"]
    assert g["auc"] == pytest.approx(roc_auc_score(labels, sites["a"]["scores"] + sites["b"]["scores"]))
    del sites["b"]["scores"]
    assert "auc" not in global_eval_metrics(sites, 2)


def test_head_metrics_pool_exactly_where_they_can_and_weight_the_sites_aucs():
    sites = {
        "a": {"num-examples": 5, "loss": 1.0, "confusion": [2, 1, 0, 2], "acc:lge_sax": 1.0, "auc:lge_sax": 0.9,
              "loss:lge_sax": 0.2, "examples:lge_sax": 3},
        "b": {"num-examples": 3, "loss": 2.0, "confusion": [1, 0, 1, 1], "acc:lge_sax": 0.0, "auc:lge_sax": 0.5,
              "loss:lge_sax": 1.0, "examples:lge_sax": 1, "acc:cine_4ch": 0.5, "loss:cine_4ch": 0.7,
              "examples:cine_4ch": 3},
    }  # fmt: skip
    g = global_eval_metrics(sites, 2)
    assert g["acc:lge_sax"] == pytest.approx(3 / 4) and g["loss:lge_sax"] == pytest.approx((3 * 0.2 + 1.0) / 4)
    assert g["auc:lge_sax"] == pytest.approx((3 * 0.9 + 0.5) / 4) and g["examples:lge_sax"] == 4
    assert (g["acc:cine_4ch"], g["loss:cine_4ch"], g["examples:cine_4ch"]) == (0.5, pytest.approx(0.7), 3)
    assert "auc:cine_4ch" not in g and "examples:cine_sax" not in g  # undefined at its one site; not scored
