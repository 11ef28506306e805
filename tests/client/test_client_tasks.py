"""Client work for one message, on an in-memory synthetic cohort: trained groups, metrics, evaluation counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.support.synthetic import SyntheticCohort
from cccmr_model.config import load_config
from cccmr_model.engine.datasets import LabelledSubset
from cccmr_model.engine.evaluate import evaluate_heads, evaluate_model
from cccmr_model.errors import CccmrError, ConfigError
from cccmr_model.metrics import calls, confusion_counts
from cccmr_model.model import PHASE_GROUPS, build_model
from cccmr_model.release.files import is_release_key
from cccmr_model.site import handlers
from cccmr_model.site.config import SiteSettings
from cccmr_model.site.data import SiteData, site_settings
from cccmr_model.site.tasks import evaluate_round, full_state, train_round
from cccmr_model.wire import EvaluateOrder, TrainOrder, decode, encode, experiment_to_json, split_evaluation
from server.validation import check_eval_metrics


@pytest.fixture(scope="module")
def config():
    return load_config("tiny", ["train.resample_factor=1", "train.batch_size=4"])


@pytest.fixture(scope="module")
def data(config):
    cohort = SyntheticCohort(10, config.data, seed=1)
    return SiteData(LabelledSubset(cohort, range(6)), LabelledSubset(cohort, range(6, 10)))


def test_train_round_replies_exactly_the_phase_groups(config, data):
    torch.manual_seed(0)
    start = build_model(config).state_dict()
    sent = {k: v for k, v in start.items() if k.startswith(PHASE_GROUPS["fusion"] + ("encoders.cine_",))}
    trained, metrics = train_round(sent, "fusion", data, config, epochs=2, lr_window=(0.0, 0.5), device="cpu", seed=3)
    assert set(trained) == {k for k in start if k.startswith("fusion.")}
    assert any(not torch.equal(trained[k], start[k]) for k in trained)
    assert metrics["num-examples"] == 2 * 6  # samples seen over both epochs, not batches
    assert all(np.isfinite(v) for v in metrics.values())


def test_full_state_keeps_received_values_and_refuses_foreign_keys(config):
    torch.manual_seed(0)
    received = {"fusion.0.weight": torch.zeros_like(build_model(config).state_dict()["fusion.0.weight"])}
    state = full_state(received, config)
    assert torch.equal(state["fusion.0.weight"], received["fusion.0.weight"])
    assert set(state) == set(build_model(config).state_dict())
    with pytest.raises(CccmrError, match="lacks"):
        full_state({"nope.weight": torch.zeros(1)}, config)


def test_evaluate_round_counts_and_optional_scores(config, data):
    cine = {k: v for k, v in build_model(config, with_lge=False).state_dict().items() if not k.startswith("heads.")}
    cine = {k: v for k, v in cine.items() if not k.startswith("uncertainty.")}
    metrics = evaluate_round(cine, data, config, device="cpu", share_scores=False)
    assert metrics["num-examples"] == 4 and sum(metrics["confusion"]) == 4 and len(metrics["confusion"]) == 4
    assert "scores" not in metrics and "labels" not in metrics
    shared = evaluate_round(cine, data, config, device="cpu", share_scores=True)
    assert len(shared["scores"]) == 4 and shared["labels"] == [int(y) for y in data.val.labels]


def test_evaluate_round_scores_each_received_head_in_the_same_pass(config, data):
    """Per-head validation metrics of the sequence heads the state holds, equal to scoring each head alone; the
    cine-only part (counts, loss) is the one a cine-only state gives; the LGE head over the subjects with LGE."""
    torch.manual_seed(0)
    state = build_model(config).state_dict()
    metrics = evaluate_round(state, data, config, device="cpu", share_scores=True)
    cine = evaluate_round({k: v for k, v in state.items() if is_release_key(k)}, data, config, device="cpu",
                          share_scores=True)  # fmt: skip
    assert {k: metrics[k] for k in cine} == cine and not any(":" in k for k in cine)
    with_lge = int(sum(bool(data.val[i]["has_lge"]) for i in range(len(data.val))))
    for head in ("cine_4ch", "cine_sax", "lge_sax"):
        alone = evaluate_heads(state, data.val, config)[head]
        assert metrics[f"loss:{head}"] == pytest.approx(alone.loss, rel=1e-5)
        assert metrics[f"acc:{head}"] == pytest.approx(float(np.mean(alone.scores.argmax(1) == alone.labels)))
        assert metrics[f"examples:{head}"] == (with_lge if head == "lge_sax" else 4)
    assert metrics["loss:cine_4ch"] == pytest.approx(evaluate_model(state, data.val, config, source="cine_4ch").loss)
    assert 0.0 <= metrics["auc:cine_sax"] <= 1.0  # both classes among the 4 validation subjects
    assert check_eval_metrics(metrics, config.num_classes) is None


def test_confusion_and_threshold(config):
    scores = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])
    predicted = calls(config.task, scores, config.evaluation.threshold)
    assert predicted.tolist() == [0, 1, 1, 0]
    assert confusion_counts(np.array([0, 1, 0, 1]), predicted, 2).tolist() == [[1, 1], [1, 1]]


def test_site_settings_deployment_and_simulation(config, tmp_path):
    site = site_settings({"site": "anzhen", "data-path": "/data/a", "cache-path": str(tmp_path)}, {}, config)
    assert (site.name, str(site.data_path), site.cache_path, site.device) == ("anzhen", "/data/a", tmp_path, "auto")
    sim = site_settings({"partition-id": 1, "num-partitions": 2}, {"sim-data-dir": "/d", "sim-cache-dir": "/c"}, config)
    assert (sim.name, str(sim.data_path), str(sim.cache_path)) == ("lanzhou", "/d/lanzhou", "/c/lanzhou")
    with pytest.raises(ConfigError, match="data-path"):
        site_settings({"site": "anzhen"}, {}, config)
    with pytest.raises(ConfigError, match="partition 5"):
        site_settings({"partition-id": 5}, {"sim-data-dir": "/d"}, config)


def test_a_train_message_asking_for_an_evaluation_evaluates_first_and_trains_as_without(config, data, tmp_path,
                                                                                       monkeypatch):  # fmt: skip
    """Issue 17 point 3: the evaluation of the received model rides the train reply under `eval:`; it is the
    evaluate message's evaluation (cine-only groups; a fusion round sends no heads) and leaves the training bit for
    bit as it was."""
    monkeypatch.setattr(handlers, "prepare_site", lambda site, config: data)
    site = SiteSettings("anzhen", tmp_path / "data", tmp_path / "cache", "cpu")
    torch.manual_seed(0)
    start = build_model(config).state_dict()
    sent = {k: v.numpy() for k, v in start.items() if k.startswith(PHASE_GROUPS["fusion"] + ("encoders.cine_",))}
    order = TrainOrder("fusion", 1, (0.0, 0.5), 1, 3, experiment_to_json(config))
    asking = TrainOrder(**{**order.__dict__, "evaluate_round": 4, "share_scores": True})
    _, plain, plain_arrays = handlers.handle_train(order.to_config(), encode(sent), lambda c: site)
    _, metrics, arrays = handlers.handle_train(asking.to_config(), encode(sent), lambda c: site)
    train, evaluation = split_evaluation(metrics)
    assert not split_evaluation(plain)[1] and set(train) == set(plain) | {"evaluate_seconds"}
    assert train["evaluate_seconds"] > 0  # the benchmark tells evaluation apart from set-up with it
    cine = {k: v for k, v in sent.items() if is_release_key(k)}
    _, expected, _ = handlers.handle_evaluate(EvaluateOrder("fusion", 4, True, order.experiment_json).to_config(),
                                              encode(cine), lambda c: site)  # fmt: skip
    assert evaluation == expected and len(evaluation["scores"]) == 4
    for got, want in zip(decode(arrays, "test").values(), decode(plain_arrays, "test").values(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_pretraining_message_asking_for_an_evaluation_adds_its_heads(config, data, tmp_path, monkeypatch):
    """A pretraining round sends every encoder and head: its evaluation adds each head's validation metrics to the
    cine-only prediction's, which equal the evaluate message's."""
    monkeypatch.setattr(handlers, "prepare_site", lambda site, config: data)
    site = SiteSettings("anzhen", tmp_path / "data", tmp_path / "cache", "cpu")
    torch.manual_seed(0)
    start = {k: v.numpy() for k, v in build_model(config).state_dict().items()}
    sent = {k: v for k, v in start.items() if k.startswith(PHASE_GROUPS["pretrain"]) or is_release_key(k)}
    order = TrainOrder("pretrain", 1, (0.0, 0.5), 2, 3, experiment_to_json(config), evaluate_round=1)
    _, metrics, _ = handlers.handle_train(order.to_config(), encode(sent), lambda c: site)
    evaluation = split_evaluation(metrics)[1]
    cine = {k: v for k, v in sent.items() if is_release_key(k)}
    _, expected, _ = handlers.handle_evaluate(EvaluateOrder("pretrain", 1, False, order.experiment_json).to_config(),
                                              encode(cine), lambda c: site)  # fmt: skip
    assert {k: evaluation[k] for k in expected} == expected
    assert {f"examples:{h}" for h in ("cine_4ch", "cine_sax", "lge_sax")} <= set(evaluation)
