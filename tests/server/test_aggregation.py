"""Robust aggregation (issue 16 point 8): `federation.aggregation` median or trimmed_mean through Flower's own
strategies, per phase group; FedAvg stays the default and stays bit-identical; wrong combinations are refused."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from scipy import stats

from cccmr_model.config import load_config
from cccmr_model.errors import ConfigError
from cccmr_model.packing import weighted_average
from cccmr_model.run_folder import read_history
from cccmr_model.wire import decode, encode
from server.aggregation import aggregate, server_step
from server.privacy import check_privacy_config
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg

GROUPS = {"pretrain": ("encoders.", "heads."), "fim": ("encoders.", "heads.", "uncertainty."), "fusion": ("fusion.",)}
SHAPES = {"encoders.cine_4ch.w": (4, 3), "heads.cine_4ch.w": (2,), "uncertainty.s": (6,), "fusion.w": (3, 2)}
TRAINED = ("encoders.cine_4ch.w", "heads.cine_4ch.w")  # round 1 trains the pretrain groups
THREE = ["federation.sites=[a,b,c]", "federation.min_sites=3"]


def test_each_method_computes_what_it_names() -> None:
    rng = np.random.default_rng(0)
    buffers = [rng.normal(size=50).astype(np.float32) for _ in range(5)]
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    stacked = np.stack(buffers)
    np.testing.assert_array_equal(aggregate(buffers, weights, "fedavg", 0.2), weighted_average(buffers, weights))
    np.testing.assert_allclose(aggregate(buffers, weights, "median", 0.2), np.median(stacked, axis=0), rtol=1e-6)
    trimmed = aggregate(buffers, weights, "trimmed_mean", 0.2)
    np.testing.assert_allclose(trimmed, stats.trim_mean(stacked, 0.2, axis=0), rtol=1e-5)
    assert trimmed.dtype == np.float32
    with pytest.raises(ValueError, match="unknown aggregation 'mean'"):
        aggregate(buffers, weights, "mean", 0.2)


def make_strategy(tmp_path, *sets: str) -> tuple[PhaseFedAvg, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    start = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    config = load_config("tiny", ["federation.phases.pretrain.rounds=1", *sets])
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, GROUPS), {k: v.copy() for k, v in start.items()},
                           config=config, run_dir=tmp_path, eval_keys=["fusion.w"])  # fmt: skip
    return strategy, start


def site(name: str, step: float, n: int = 4):
    """A site adding `step` to the groups it trains (a poisoned one: a large step that stays under the bound)."""

    def reply(msg):
        if msg.metadata.message_type == "evaluate":
            metrics = {"num-examples": 4, "loss": 0.3, "confusion": [2, 0, 1, 1]}
            return RecordDict({"metrics": MetricRecord(metrics), "site": ConfigRecord({"name": name})})
        phase = msg.content["config"]["phase"]
        sent = decode(msg.content["arrays"].to_numpy_ndarrays(), "test")
        arrays = {k: v + np.float32(step) for k, v in sent.items() if k.startswith(GROUPS[phase])}
        return RecordDict({"arrays": ArrayRecord(encode(arrays)), "metrics": MetricRecord({"num-examples": n}),
                           "site": ConfigRecord({"name": name})})  # fmt: skip

    return reply


def run_round(strategy: PhaseFedAvg, grid) -> dict:
    strategy.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=1, timeout=5)
    return read_history(strategy.history_path)[0]


@pytest.mark.parametrize(
    ("method", "sets", "expected_step"),
    [
        ("fedavg", [], (0.1 + 0.12 - 2.0) / 3),  # the poisoned site pulls the mean along
        ("median", ["federation.aggregation=median"], 0.1),
        ("trimmed_mean", ["federation.aggregation=trimmed_mean", "federation.trim_fraction=0.34"], 0.1),
    ],
)
def test_one_poisoned_site_within_the_norm_bound_moves_fedavg_but_not_a_robust_aggregate(
    tmp_path, kit, method, sets, expected_step
) -> None:
    strategy, start = make_strategy(tmp_path, *THREE, *sets)
    grid = kit.FakeGrid({1: site("a", 0.1), 2: site("b", 0.12), 3: site("c", -2.0)})
    record = run_round(strategy, grid)
    assert record["sites_replied"] == ["a", "b", "c"] and record["sites_failed"] == {}  # c passed every bound
    assert record["aggregation"] == method
    for key in TRAINED:
        np.testing.assert_allclose(strategy.global_state[key], start[key] + np.float32(expected_step), rtol=1e-5)
    for key in ("uncertainty.s", "fusion.w"):  # groups the round does not train are untouched
        np.testing.assert_array_equal(strategy.global_state[key], start[key])


def test_with_honest_sites_a_robust_aggregate_stays_near_fedavg(tmp_path, kit) -> None:
    steps = (0.10, 0.11, 0.12)
    results = {}
    for method in ("fedavg", "median"):
        sets = [] if method == "fedavg" else ["federation.aggregation=median"]
        strategy, start = make_strategy(tmp_path / method, *THREE, *sets)
        run_round(strategy, kit.FakeGrid({i + 1: site("abc"[i], s) for i, s in enumerate(steps)}))
        results[method] = strategy.global_state["heads.cine_4ch.w"] - start["heads.cine_4ch.w"]
    np.testing.assert_allclose(results["median"], results["fedavg"], atol=1e-6)  # both 0.11 here


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["federation.sites=[a,b]", "federation.aggregation=median"], "needs min_sites >= 3"),
        ([*THREE, "federation.aggregation=trimmed_mean"], r"trim_fraction 0\.2 x min_sites 3 is below 1"),
        ([*THREE, "federation.aggregation=krum"], "aggregation must be one of fedavg, median, trimmed_mean"),
        ([*THREE, "federation.aggregation=median", "federation.trim_fraction=0.5"], r"trim_fraction must be in"),
    ],
)
def test_robust_settings_that_cannot_work_are_refused(sets, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", sets)


def test_central_dp_over_a_robust_aggregate_is_refused() -> None:
    config = load_config("tiny", [*THREE, "federation.aggregation=median", "privacy.central_dp.enabled=true"])
    with pytest.raises(ConfigError, match="central DP's noise is calibrated to the mean"):
        check_privacy_config(config)
    check_privacy_config(load_config("tiny", [*THREE, "privacy.central_dp.enabled=true"]))  # fedavg: fine


def test_server_step_scales_the_mean_displacement() -> None:
    start = np.array([1.0, -2.0, 0.5], dtype=np.float32)
    mean = np.array([1.5, -2.0, 0.0], dtype=np.float32)
    assert server_step(start, mean, 1.0) is mean  # plain FedAvg, bit for bit
    np.testing.assert_allclose(server_step(start, mean, 2.0), [2.0, -2.0, -0.5])
    np.testing.assert_allclose(server_step(start, mean, 0.5), [1.25, -2.0, 0.25])
    assert server_step(start, mean, 2.0).dtype == np.float32


@pytest.mark.parametrize(("server_lr", "expected_step"), [(1.0, 0.2), (2.0, 0.4)])
def test_server_lr_scales_the_round_step_of_the_trained_groups_only(tmp_path, kit, server_lr, expected_step) -> None:
    strategy, start = make_strategy(tmp_path, f"federation.server_lr={server_lr}")
    record = run_round(strategy, kit.FakeGrid({1: site("a", 0.1), 2: site("b", 0.3)}))
    assert record["sites_replied"] == ["a", "b"] and record["server_lr"] == server_lr
    for key in TRAINED:
        np.testing.assert_allclose(strategy.global_state[key], start[key] + np.float32(expected_step), rtol=1e-5)
    for key in ("uncertainty.s", "fusion.w"):
        np.testing.assert_array_equal(strategy.global_state[key], start[key])


def test_server_lr_out_of_range_and_with_central_dp_is_refused() -> None:
    for value in ("0", "-1", "11"):
        with pytest.raises(ConfigError, match=r"server_lr must be in \(0, 10\]"):
            load_config("tiny", [f"federation.server_lr={value}"])
    config = load_config("tiny", ["federation.server_lr=2", "privacy.central_dp.enabled=true"])
    with pytest.raises(ConfigError, match=r"federation\.server_lr 2\.0: Flower adds the noise after the server step"):
        check_privacy_config(config)
