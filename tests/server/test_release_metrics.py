"""The federated release's metrics: Table-1 reports with bootstrap CIs from the sites' final evaluation replies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cccmr_model.config import load_config
from cccmr_model.metrics import count_report, evaluation_report
from cccmr_model.release.files import CARD_FILE, METRICS_FILE
from cccmr_model.release.load import verify_release
from server.app import initial_state
from server.evaluation import global_eval_metrics, release_reports
from server.release import write_release

CONFIG = load_config("tiny", ["evaluation.bootstrap_resamples=100"])


def site_reply(seed: int, n: int, share: bool) -> dict:
    """What a site's evaluate handler returns: counts, loss, and (when shared) scores and labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    scores = np.clip(0.35 * labels + rng.uniform(0, 0.65, n), 0, 1)
    confusion = np.zeros((2, 2), dtype=int)
    np.add.at(confusion, (labels, (scores >= CONFIG.evaluation.threshold).astype(int)), 1)
    reply = {"num-examples": n, "loss": 0.5 + seed / 10, "confusion": confusion.ravel().tolist()}
    if share:
        reply.update(scores=scores.tolist(), labels=labels.tolist())
    return reply


def test_counts_only_give_count_reports_pooled_and_per_site():
    sites = {"lanzhou": site_reply(1, 14, False), "anzhen": site_reply(0, 20, False)}
    reports = release_reports(sites, CONFIG)
    assert list(reports["sites"]) == ["anzhen", "lanzhou"]
    pooled_counts = np.add(*(np.reshape(s["confusion"], (2, 2)) for s in sites.values()))
    expected = count_report("screening", pooled_counts, resamples=100, seed=CONFIG.evaluation.seed)
    assert reports["pooled"]["metrics"] == expected["metrics"]
    assert "auc" not in reports["pooled"]["metrics"] and "auc" in reports["pooled"]["unavailable"]
    assert reports["pooled"]["n"] == 34 and reports["sites"]["lanzhou"]["n"] == 14
    exact = global_eval_metrics(sites, 2)  # the per-round history values
    for name in ("accuracy", "sensitivity", "specificity"):
        assert reports["pooled"]["metrics"][name]["value"] == pytest.approx(exact[name])
    assert reports["pooled"]["loss"] == pytest.approx(exact["loss"])


def test_shared_scores_give_auc_with_ci_consistent_with_the_counts():
    sites = {"anzhen": site_reply(0, 20, True), "lanzhou": site_reply(1, 14, True)}
    reports = release_reports(sites, CONFIG)
    labels = np.concatenate([s["labels"] for s in sites.values()])
    scores = np.concatenate([s["scores"] for s in sites.values()])
    expected = evaluation_report("screening", scores, labels, resamples=100, seed=CONFIG.evaluation.seed)
    assert reports["pooled"]["metrics"] == expected["metrics"]
    auc = reports["pooled"]["metrics"]["auc"]
    assert auc["ci_low"] <= auc["value"] <= auc["ci_high"] and auc["ci_low"] < auc["ci_high"]
    counts_only = {k: {key: x for key, x in v.items() if key != "scores"} for k, v in sites.items()}
    counts = release_reports(counts_only, CONFIG)
    assert counts["pooled"]["metrics"]["sensitivity"]["value"] == pytest.approx(
        reports["pooled"]["metrics"]["sensitivity"]["value"]
    )


def test_a_site_without_scores_makes_the_pooled_auc_unavailable():
    sites = {"anzhen": site_reply(0, 20, True), "lanzhou": site_reply(1, 14, False)}
    reports = release_reports(sites, CONFIG)
    assert "auc" in reports["sites"]["anzhen"]["metrics"]
    assert "auc" not in reports["sites"]["lanzhou"]["metrics"]
    assert "auc" not in reports["pooled"]["metrics"]


def test_release_card_shows_table_one_with_cis(tmp_path):
    replies = {"anzhen": site_reply(0, 20, False), "lanzhou": site_reply(1, 14, False)}
    replies["anzhen"].update(
        {"acc:cine_sax": 0.8, "auc:cine_sax": 0.875, "loss:cine_sax": 0.4, "examples:cine_sax": 20}
    )
    rounds = [{"round": 1, "phase": "fusion", "sites_replied": ["anzhen", "lanzhou"], "evaluate": replies}]
    rounds[0]["evaluate_global"] = global_eval_metrics(replies, 2)  # a history line
    out = write_release(tmp_path / "release", initial_state(CONFIG), CONFIG, rounds)
    verify_release(out)
    metrics = json.loads((out / METRICS_FILE).read_text())
    assert set(metrics) == {"pooled", "sites"} and set(metrics["sites"]) == {"anzhen", "lanzhou"}
    card = (out / CARD_FILE).read_text()
    assert "| Evaluated on |" in card and "| pooled |" in card and "| sites / anzhen |" in card
    sens = metrics["pooled"]["metrics"]["sensitivity"]
    assert f"{sens['value']:.3f} ({sens['ci_low']:.3f}, {sens['ci_high']:.3f})" in card
    assert "| validation AUC, cine_sax | – | – | 0.875 |" in card  # the heads' row, in the fusion column


@pytest.mark.parametrize("privacy", ["none", "dp"])
def test_release_states_the_privacy_the_history_records(tmp_path, privacy):
    sets = ["privacy.dp_sgd.enabled=true", "privacy.central_dp.enabled=true", "federation.phases.fim.rounds=0"]
    config = load_config("tiny", ["evaluation.bootstrap_resamples=100", *(sets if privacy == "dp" else [])])
    replies = {"anzhen": site_reply(0, 20, False), "lanzhou": site_reply(1, 14, False)}
    rounds = []
    for number, (eps_a, eps_l, central) in enumerate([(1.2, 1.1, 0.8), (2.345678, 2.2, 1.56789)], start=1):
        record = {"round": number, "phase": "pretrain", "sites_replied": ["anzhen", "lanzhou"], "evaluate": replies}
        record["train"] = {"anzhen": {"num-examples": 20}, "lanzhou": {"num-examples": 14}}
        if privacy == "dp":
            record["train"]["anzhen"]["dp_epsilon"], record["train"]["lanzhou"]["dp_epsilon"] = eps_a, eps_l
            record["central_dp"] = {"epsilon": central, "delta": 1e-5, "sites_averaged": 2}
        rounds.append(record)
    rounds[-1]["evaluate_global"] = global_eval_metrics(replies, 2)
    out = write_release(tmp_path / "release", initial_state(config), config, rounds)
    card = (out / CARD_FILE).read_text()
    recorded = json.loads((out / "training.json").read_text())["privacy"]
    if privacy == "none":
        assert recorded == {"dp_sgd": {"applied": False}, "central_dp": {"applied": False}}
        assert "No differential privacy was applied to this model: the sites kept their images" in card
        return
    assert recorded["dp_sgd"]["epsilon_by_site"] == {"anzhen": 2.345678, "lanzhou": 2.2}
    assert recorded["central_dp"]["epsilon"] == 1.56789 and recorded["central_dp"]["rounds"] == 2
    assert "per site: anzhen 2.35, lanzhou 2.2." in card and "epsilon 1.57 at delta 1e-05 over 2 round(s)" in card
