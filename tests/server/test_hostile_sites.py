"""One registered site can neither steer nor stop the federation (issue 16, points 1-5): its claimed FedAvg weight,
its update norm, its metrics, its evaluation counts and its site name are all bounded or checked, and a rejected
reply is recorded against the node that sent it. Site names are escaped wherever they go into Markdown or HTML."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.proto.node_pb2 import NodeInfo

from cccmr_model.config import load_config
from cccmr_model.demo.report import markdown_to_html, rounds_table
from cccmr_model.errors import ConfigError
from cccmr_model.markdown import escape_markdown
from cccmr_model.release.card import render_card
from cccmr_model.release.privacy import privacy_lines
from cccmr_model.run_folder import read_history
from cccmr_model.wire import decode, encode
from server.app import initial_state
from server.privacy import check_update_bound
from server.release import write_release
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg
from server.validation import TRAIN_METRICS, l2_norm

GROUPS = {"pretrain": ("encoders.", "heads."), "fim": ("encoders.", "heads.", "uncertainty."), "fusion": ("fusion.",)}
SHAPES = {"encoders.cine_4ch.w": (4, 3), "heads.cine_4ch.w": (2,), "uncertainty.s": (6,), "fusion.w": (3, 2)}
TRAINED = ("encoders.cine_4ch.w", "heads.cine_4ch.w")  # round 1 trains the pretrain groups


def make_strategy(tmp_path, *sets: str) -> tuple[PhaseFedAvg, dict[str, np.ndarray]]:
    """The tiny config with its default bounds (no max_update_norm: max_update_ratio 3.0; max_examples_ratio 10)."""
    rng = np.random.default_rng(0)
    start = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    config = load_config("tiny", ["federation.phases.pretrain.rounds=1", *sets])
    plan = plan_rounds(config.federation.phases, GROUPS)[:1]  # the last round: evaluated in its own exchange
    strategy = PhaseFedAvg(plan, {k: v.copy() for k, v in start.items()}, config=config, run_dir=tmp_path,
                           eval_keys=["fusion.w"])  # fmt: skip
    return strategy, start


def site(name: str, n: int = 4, step: float = 0.1, *, metrics=None, evaluation=None, poison=None):
    """A site adding `step` to the trained groups; `metrics` / `evaluation` replace its reply's metrics."""

    def reply(msg):
        if msg.metadata.message_type == "evaluate":
            m = evaluation if evaluation is not None else {"num-examples": 4, "loss": 0.3, "confusion": [2, 0, 1, 1]}
            return RecordDict({"metrics": MetricRecord(m), "site": ConfigRecord({"name": name})})
        phase = msg.content["config"]["phase"]
        sent = decode(msg.content["arrays"].to_numpy_ndarrays(), "test")
        arrays = {k: v + np.float32(step) for k, v in sent.items() if k.startswith(GROUPS[phase])}
        if poison is not None:
            arrays = poison(arrays)
        m = {"num-examples": n, "loss": 0.3} if metrics is None else metrics
        return RecordDict({"arrays": ArrayRecord(encode(arrays)), "metrics": MetricRecord(m),
                           "site": ConfigRecord({"name": name})})  # fmt: skip

    return reply


def run_round(strategy: PhaseFedAvg, grid) -> dict:
    strategy.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=1, timeout=5)
    return read_history(strategy.history_path)[0]


# ---- point 1: the FedAvg weight ----


def test_a_huge_num_examples_claim_is_rejected_and_every_claim_recorded(tmp_path, kit):
    strategy, start = make_strategy(tmp_path)
    record = run_round(strategy, kit.FakeGrid({1: site("anzhen", 4, 0.1), 2: site("lanzhou", 10**9, -0.2)}))
    for key in TRAINED:  # anzhen alone: the claim of 10^9 examples did not set the model
        np.testing.assert_allclose(strategy.global_state[key], start[key] + np.float32(0.1), rtol=1e-6)
    assert record["sites_replied"] == ["anzhen"]
    assert "num-examples 1000000000 exceeds the round's bound 40" in record["sites_failed"]["lanzhou"]
    assert record["num_examples_claimed"] == {"anzhen": 4, "lanzhou": 10**9}


def test_max_num_examples_caps_every_claim(tmp_path, kit):
    strategy, _ = make_strategy(tmp_path, "federation.max_num_examples=100")
    record = run_round(strategy, kit.FakeGrid({1: site("anzhen", 100), 2: site("lanzhou", 101)}))
    assert record["sites_replied"] == ["anzhen"]
    assert "exceeds federation.max_num_examples 100" in record["sites_failed"]["lanzhou"]


def test_honest_sites_of_different_sizes_are_both_averaged_by_weight(tmp_path, kit):
    strategy, start = make_strategy(tmp_path)
    record = run_round(strategy, kit.FakeGrid({1: site("anzhen", 3, 0.1), 2: site("lanzhou", 27, 0.2)}))
    assert record["sites_replied"] == ["anzhen", "lanzhou"] and record["sites_failed"] == {}
    expected = start["heads.cine_4ch.w"] + np.float32(0.1 * 0.1 + 0.2 * 0.9)
    np.testing.assert_allclose(strategy.global_state["heads.cine_4ch.w"], expected, rtol=1e-5)


# ---- point 2: the update norm ----


def test_the_default_update_bound_rejects_a_huge_update(tmp_path, kit):
    def huge(arrays):
        arrays["heads.cine_4ch.w"][0] = np.float32(1e30)
        return arrays

    strategy, start = make_strategy(tmp_path)
    assert strategy.max_update_norm is None
    record = run_round(strategy, kit.FakeGrid({1: site("anzhen"), 2: site("lanzhou", poison=huge)}))
    assert record["sites_replied"] == ["anzhen"]
    assert "exceeds the round's max_update_ratio bound" in record["sites_failed"]["lanzhou"]
    np.testing.assert_allclose(strategy.global_state["heads.cine_4ch.w"], start["heads.cine_4ch.w"] + 0.1, rtol=1e-6)
    assert record["update_bound"] == pytest.approx(3.0 * l2_norm({k: start[k] for k in TRAINED}))
    assert record["update_norms"]["anzhen"] == pytest.approx(0.1 * np.sqrt(14), rel=1e-4)


def test_the_server_app_refuses_to_start_without_an_update_bound():
    check_update_bound(load_config("tiny"))  # the default: max_update_ratio
    unbounded = ["federation.max_update_norm=null", "federation.max_update_ratio=null"]
    with pytest.raises(ConfigError, match=r"max_update_norm and federation\.max_update_ratio are both null"):
        check_update_bound(load_config("tiny", unbounded))
    check_update_bound(load_config("tiny", [*unbounded, "privacy.central_dp.enabled=true"]))  # clipping bounds it


# ---- point 3: metrics ----

MALFORMED_METRICS = {
    "list where others send a scalar": ({"loss": [0.1, 0.2]}, "metric loss is not a finite number"),
    "list of another length": ({"acc:cine_4ch": [0.5, 0.5, 0.5]}, "metric acc:cine_4ch is not a finite number"),
    "NaN": ({"lr": float("nan")}, "metric lr is not a finite number"),
    "float count": ({"num-examples": 4.0}, "num-examples must be a positive integer"),
    "negative count": ({"num-examples": -4}, "num-examples must be a positive integer"),
    "int beyond int64": ({"epochs": 2**70}, "metric epochs is not a finite number"),
}


@pytest.mark.parametrize("case", list(MALFORMED_METRICS))
def test_a_malformed_training_metric_rejects_the_reply_by_site_name(case, tmp_path, kit):
    extra, reason = MALFORMED_METRICS[case]
    honest = {"num-examples": 4, "loss": 0.3, "acc:cine_4ch": [0.5, 0.5]} if "length" in case else None
    strategy, start = make_strategy(tmp_path)
    bad = site("lanzhou", metrics={"num-examples": 4, "loss": 0.3, **extra})
    if honest is not None:  # two list metrics of different lengths: the honest one is rejected too, by its name
        record = run_round(strategy, kit.FakeGrid({1: site("anzhen"), 2: site("nanjing", metrics=honest), 3: bad}))
        assert "metric acc:cine_4ch" in record["sites_failed"]["nanjing"]
    else:
        record = run_round(strategy, kit.FakeGrid({1: site("anzhen"), 2: bad}))
    assert record["sites_replied"] == ["anzhen"] and reason in record["sites_failed"]["lanzhou"]
    np.testing.assert_allclose(strategy.global_state["heads.cine_4ch.w"], start["heads.cine_4ch.w"] + 0.1, rtol=1e-6)


def test_metrics_off_the_allow_list_are_dropped_and_named(tmp_path, kit):
    strategy, _ = make_strategy(tmp_path)
    metrics = {"num-examples": 4, "loss": 0.3, "patient_ids": [1, 2, 3], "<b>x</b>": 1.0}
    record = run_round(strategy, kit.FakeGrid({1: site("anzhen"), 2: site("lanzhou", metrics=metrics)}))
    assert record["sites_replied"] == ["anzhen", "lanzhou"]
    assert record["metrics_dropped"] == {"lanzhou": ["'<b>x</b>'", "'patient_ids'"]}
    assert set(record["train"]["lanzhou"]) == {"num-examples", "loss"}


def test_every_honest_training_metric_is_allowed():
    """The honest set of tests/integration/test_no_data_leaves.py (TRAIN_METRICS there), spelled out."""
    seqs, heads = ("cine_4ch", "cine_sax", "lge_sax"), ("cine_4ch", "cine_sax", "lge_sax", "fusion")
    pairs = ("cine_4ch|cine_sax", "cine_4ch|lge_sax", "cine_sax|lge_sax")
    fim = [f"cls:{s}" for s in seqs] + [f"fsa:{p}" for p in pairs]
    honest = {"num-examples", "loss", "lr", "epochs", "samples_per_s", "train_seconds", "task_seconds"}
    honest |= {"startup_seconds", "evaluate_seconds", "cls:fusion", *fim}
    honest |= {"dp_epsilon", "dp_delta", "dp_steps", "dp_stopped"}
    honest |= {f"sigma:{t}" for t in fim} | {f"{k}:{h}" for k in ("acc", "auc", "constant") for h in heads}
    assert honest <= TRAIN_METRICS, honest - TRAIN_METRICS


# ---- point 4: evaluation replies ----

BAD_EVALUATIONS = {
    "negative count": ({"num-examples": 950, "confusion": [-50, 0, 0, 1000]}, "non-negative integer counts"),
    "counts off num-examples": ({"num-examples": 5, "confusion": [1, 0, 0, 1]}, "sum to 2, not num-examples 5"),
    "float counts": ({"num-examples": 2, "confusion": [1.0, 0.0, 0.0, 1.0]}, "non-negative integer counts"),
    "nine counts": ({"num-examples": 1, "confusion": [1] + [0] * 8}, "must be 4 non-negative"),
    "NaN loss": ({"loss": float("nan")}, "metric loss is not a finite number"),
    "scores longer than labels": ({"scores": [0.1, 0.9, 0.5], "labels": [0, 1]}, "scores must be 2 numbers"),
    "label 7": ({"scores": [0.1, 0.9], "labels": [0, 7]}, "labels must lie in 0..1"),
    "labels off the counts": ({"scores": [0.1, 0.9], "labels": [0, 0]}, "the confusion rows"),
    "score 3": ({"scores": [0.1, 3.0], "labels": [0, 1]}, "probabilities in [0, 1]"),
    "scores alone": ({"scores": [0.1, 0.9]}, "scores and labels must be shared together"),
    "head AUC 7": (
        {"acc:cine_sax": 0.5, "auc:cine_sax": 7.0, "loss:cine_sax": 0.6, "examples:cine_sax": 2},
        "auc:cine_sax must lie in [0, 1]",
    ),
    "head AUC alone": ({"auc:lge_sax": 0.9}, "head lge_sax: examples, loss and acc must be given together"),
    "head examples beyond num-examples": (
        {"acc:lge_sax": 0.5, "loss:lge_sax": 0.6, "examples:lge_sax": 3000},
        "examples:lge_sax must be an integer",
    ),
    "negative head loss": ({"acc:cine_4ch": 1.0, "loss:cine_4ch": -1.0, "examples:cine_4ch": 2}, "loss:cine_4ch"),
}


@pytest.fixture(scope="module")
def release_state():
    return initial_state(load_config("tiny"))


@pytest.mark.parametrize("case", list(BAD_EVALUATIONS))
def test_a_bad_evaluation_report_is_rejected_and_the_release_is_written(case, tmp_path, kit, release_state):
    change, reason = BAD_EVALUATIONS[case]
    evaluation = {"num-examples": 2, "loss": 0.4, "confusion": [1, 0, 0, 1], **change}
    honest = {"num-examples": 4, "loss": 0.3, "confusion": [2, 0, 1, 1], "scores": [0.1, 0.2, 0.3, 0.9]}
    honest["labels"] = [0, 0, 1, 1]
    strategy, _ = make_strategy(tmp_path, "evaluation.bootstrap_resamples=20")
    grid = kit.FakeGrid({1: site("anzhen", evaluation=honest), 2: site("lanzhou", evaluation=evaluation)})
    record = run_round(strategy, grid)
    assert reason in record["sites_failed"]["lanzhou"] and "evaluation rejected" in record["sites_failed"]["lanzhou"]
    assert set(record["evaluate"]) == {"anzhen"} and set(strategy.final_evaluation) == {"anzhen"}
    assert record["evaluate_global"]["accuracy"] == pytest.approx(0.75)
    config = load_config("tiny", ["evaluation.bootstrap_resamples=20"])
    rounds = read_history(strategy.history_path)
    out = write_release(tmp_path / "release", release_state, config, rounds, strategy.final_evaluation)
    assert (out / "metrics.json").is_file()


def test_a_huge_validation_claim_does_not_set_the_pooled_metrics(tmp_path, kit, release_state):
    """An evaluation claiming far more validation subjects than the round's others (its weight in the pooled
    metrics and the release's Table 1) is rejected like a training claim; the honest sites' metrics stand."""
    honest = {"num-examples": 4, "loss": 0.3, "confusion": [2, 0, 1, 1]}
    huge = {"num-examples": 10**6, "loss": 0.1, "confusion": [0, 0, 0, 10**6]}  # "always right" on a million
    strategy, _ = make_strategy(tmp_path, "evaluation.bootstrap_resamples=20")
    sites = {1: site("anzhen", evaluation=honest), 2: site("lanzhou", evaluation=honest),
             3: site("xian", evaluation=huge)}  # fmt: skip
    record = run_round(strategy, kit.FakeGrid(sites))
    assert "evaluation rejected: num-examples 1000000 exceeds the round's bound 100" in record["sites_failed"]["xian"]
    assert set(record["evaluate"]) == {"anzhen", "lanzhou"} and set(strategy.final_evaluation) == {"anzhen", "lanzhou"}
    assert record["evaluate_global"]["accuracy"] == pytest.approx(0.75)


def test_honest_validation_splits_of_a_few_subjects_pass_the_bound(tmp_path, kit):
    """1 and 11 validation subjects (more than 10x apart): each claim counts as at least 10, so both stand."""
    one = {"num-examples": 1, "loss": 0.3, "confusion": [1, 0, 0, 0]}
    eleven = {"num-examples": 11, "loss": 0.3, "confusion": [5, 1, 1, 4]}
    strategy, _ = make_strategy(tmp_path, "evaluation.bootstrap_resamples=20")
    record = run_round(
        strategy, kit.FakeGrid({1: site("anzhen", evaluation=one), 2: site("lanzhou", evaluation=eleven)})
    )
    assert record["sites_failed"] == {} and set(record["evaluate"]) == {"anzhen", "lanzhou"}


# ---- point 5: site names ----


class RegisteredGrid:
    """A FakeGrid whose SuperLink registered a name for every node (SuperNode authentication)."""

    @staticmethod
    def make(kit, sites: dict[int, object], names: dict[int, str]):
        class Grid(kit.FakeGrid):
            def get_nodes(self):
                return [NodeInfo(node_id=node_id, name=names[node_id]) for node_id in self.sites]

        return Grid(sites)


def test_a_reply_claiming_another_registered_name_is_refused_and_recorded_against_its_own(tmp_path, kit):
    strategy, start = make_strategy(tmp_path)
    sites = {1: site("anzhen", 4, 0.1), 2: site("lanzhou", 4, 0.1), 3: site("anzhen", 400, -3.0)}
    grid = RegisteredGrid.make(kit, sites, {1: "anzhen", 2: "lanzhou", 3: "rogue"})
    record = run_round(strategy, grid)
    assert record["sites_replied"] == ["anzhen", "lanzhou"]
    assert record["sites_failed"] == {
        "rogue": "refused: claims site name 'anzhen', registered as 'rogue'"
    }  # twice: training and evaluation, never against anzhen
    assert set(record["evaluate"]) == {"anzhen", "lanzhou"}
    np.testing.assert_allclose(strategy.global_state["heads.cine_4ch.w"], start["heads.cine_4ch.w"] + 0.1, rtol=1e-6)
    assert strategy.sites[3] == "rogue"


def test_without_registration_a_name_another_node_holds_is_refused(tmp_path, kit):
    strategy, _ = make_strategy(tmp_path)
    sites = {1: site("anzhen"), 2: site("anzhen", 400, -3.0), 3: site("<img src=x onerror=alert(1)>")}
    record = run_round(strategy, kit.FakeGrid(sites))
    assert record["sites_replied"] == ["anzhen"]
    assert record["sites_failed"]["node-2"] == "refused: claims site name 'anzhen', which node 1 holds"
    assert "is not a plain name" in record["sites_failed"]["node-3"]
    assert strategy.sites == {1: "anzhen"}


HOSTILE = "<img src=x onerror=alert(1)>|**x**`[a](b)&\nz"


def test_site_names_are_escaped_in_the_model_card_and_the_report():
    escaped = escape_markdown(HOSTILE)
    assert "<" not in escaped.replace("\\<", "") and "\n" not in escaped and "|" not in escaped.replace("\\|", "")
    training = {"mode": "federated", "sites": {HOSTILE: {"rounds": 2}}}
    card = render_card(load_config("tiny"), {}, training, created="now", cccmr_version="0")
    row = next(line for line in card.splitlines() if "img" in line)
    assert row.startswith("| \\<img") and row.count("|") - row.count("\\|") == 3  # one name cell, one count cell
    html = markdown_to_html(card)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;|**x**`[a](b)&amp; z" in html
    (line,) = privacy_lines({"dp_sgd": {"applied": True, "epsilon_by_site": {HOSTILE: 1.5}}}, "federated")[:1]
    assert "<img" not in markdown_to_html(line) and "\\<img" in line
    table = rounds_table([{"round": 1, "phase": "pretrain", "phase_round": 1, "sites_replied": [HOSTILE]}])
    page = markdown_to_html(table)
    assert "<img src" not in page and "<strong>" not in page and page.count("<td>") == 10  # one row, ten columns
