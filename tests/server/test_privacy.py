"""Central (site-level) DP on the server: Flower's client-side fixed clipping wrapper fitted to PhaseFedAvg, with
hand-made replies. Clipping norm sent, clipping verified, uniform mean plus calibrated noise on the trained groups
only, epsilon from Flower's RDP accountant in the history (continued on resume), and the DP-SGD config check."""

from __future__ import annotations

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp import RdpAccountant
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from cccmr_model.config import load_config
from cccmr_model.errors import ConfigError
from cccmr_model.run_folder import read_history
from cccmr_model.wire import decode
from server.privacy import PhaseClientSideFixedClipping, check_privacy_config, with_central_dp
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg

GROUPS = {"pretrain": ("encoders.", "heads."), "fim": ("encoders.", "heads.", "uncertainty."), "fusion": ("fusion.",)}
ONE_ROUND_EACH = [f"federation.phases.{p}.rounds=1" for p in GROUPS]


def make_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"encoders.cine_4ch.w": (4, 3), "heads.cine_4ch.w": (20000,), "uncertainty.s": (6,), "fusion.w": (3, 2)}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def make_dp(tmp_path, sets, state=None, completed=0, past=()):
    config = load_config("tiny", ["privacy.central_dp.enabled=true", *ONE_ROUND_EACH, *sets])
    strategy = PhaseFedAvg(
        plan_rounds(config.federation.phases, GROUPS),
        state if state is not None else make_state(),
        config=config,
        run_dir=tmp_path,
        eval_keys=["fusion.w"],
        completed_rounds=completed,
    )
    return strategy, with_central_dp(strategy, config, past)


def site(kit, name, step, num_examples, clip=None):
    """Adds `step` to every trained array it receives (scaled down to norm `clip` when given)."""

    def reply(msg):
        if msg.metadata.message_type == "evaluate":
            return kit.eval_reply(name, [1, 0, 0, 1], 0.5)
        phase = msg.content["config"]["phase"]
        sent = {
            k: v
            for k, v in decode(msg.content["arrays"].to_numpy_ndarrays(), "test").items()
            if k.startswith(GROUPS[phase])
        }
        norm = step * np.sqrt(sum(v.size for v in sent.values()))
        scale = min(1.0, clip / norm) if clip else 1.0
        return kit.train_reply(name, {k: v + np.float32(step * scale) for k, v in sent.items()}, num_examples)

    return reply


def run(wrapper, strategy, grid, rounds=None):
    wrapper.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=rounds or strategy.remaining_rounds(),
                  timeout=5)  # fmt: skip


def test_disabled_returns_the_strategy_and_dp_sgd_with_fim_is_refused(tmp_path):
    config = load_config("tiny")
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, GROUPS), make_state(),
                           config=config, run_dir=tmp_path, eval_keys=[])  # fmt: skip
    assert with_central_dp(strategy, config) is strategy
    with pytest.raises(ConfigError, match="not a sum of per-sample terms"):
        check_privacy_config(load_config("tiny", ["privacy.dp_sgd.enabled=true"]))
    check_privacy_config(load_config("tiny", ["privacy.dp_sgd.enabled=true", "federation.phases.fim.rounds=0"]))


def test_uniform_mean_noise_on_trained_groups_only_and_epsilon_in_history(tmp_path, kit):
    sets = ["privacy.central_dp.noise_multiplier=1.0", "privacy.central_dp.clipping_norm=1.0"]
    start = make_state()
    strategy, wrapper = make_dp(tmp_path, sets, state={k: v.copy() for k, v in start.items()})
    assert isinstance(wrapper, PhaseClientSideFixedClipping)
    assert strategy.max_update_norm == pytest.approx(1.001)  # the server verifies the sites' clipping
    grid = kit.FakeGrid({1: site(kit, "anzhen", 0.0, 1), 2: site(kit, "lanzhou", 0.0, 9)})
    run(wrapper, strategy, grid, rounds=1)
    train = [m for m in grid.sent if m.metadata.message_type.startswith("train")]
    assert all(m.content["config"][KEY_CLIPPING_NORM] == 1.0 for m in train)
    assert all(KEY_CLIPPING_NORM not in m.content["config"] for m in grid.sent if m.metadata.message_type == "evaluate")
    noise = strategy.global_state["heads.cine_4ch.w"] - start["heads.cine_4ch.w"]
    assert np.std(noise) == pytest.approx(1.0 * 1.0 / 2, rel=0.03)  # z * C / m, m = 2 sites averaged
    assert abs(np.mean(noise)) < 0.02
    for frozen in ("uncertainty.s", "fusion.w"):
        np.testing.assert_array_equal(strategy.global_state[frozen], start[frozen])
    record = read_history(tmp_path / "history.jsonl")[0]["central_dp"]
    assert record["sites_averaged"] == 2 and record["noise_std"] == pytest.approx(0.5)
    reference = RdpAccountant()
    reference.compose(dp_event.GaussianDpEvent(1.0))
    assert record["epsilon"] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-9)


def test_mean_is_uniform_not_num_examples_weighted(tmp_path, kit):
    sets = ["privacy.central_dp.noise_multiplier=1e-6", "privacy.central_dp.clipping_norm=1000"]
    start = make_state()
    strategy, wrapper = make_dp(tmp_path, sets, state={k: v.copy() for k, v in start.items()})
    run(wrapper, strategy, kit.FakeGrid({1: site(kit, "anzhen", 0.1, 1), 2: site(kit, "lanzhou", 0.3, 9)}), 1)
    moved = strategy.global_state["encoders.cine_4ch.w"] - start["encoders.cine_4ch.w"]
    np.testing.assert_allclose(moved, 0.2, atol=3e-3)  # noise std 5e-4; (0.1 + 0.3) / 2, not (0.1 + 9 * 0.3) / 10


def test_a_site_that_does_not_clip_is_rejected_by_name(tmp_path, kit, caplog):
    sets = ["privacy.central_dp.noise_multiplier=1.0", "privacy.central_dp.clipping_norm=0.5"]
    strategy, wrapper = make_dp(tmp_path, sets)
    grid = kit.FakeGrid({1: site(kit, "anzhen", 0.1, 2, clip=0.5), 2: site(kit, "lanzhou", 0.1, 2)})
    run(wrapper, strategy, grid, rounds=1)
    record = read_history(tmp_path / "history.jsonl")[0]
    assert record["sites_replied"] == ["anzhen"] and "update norm" in record["sites_failed"]["lanzhou"]
    assert record["central_dp"]["sites_averaged"] == 1 and record["central_dp"]["noise_std"] == pytest.approx(0.5)
    assert any("lanzhou" in r.getMessage() and "update norm" in r.getMessage() for r in caplog.records)


def test_epsilon_grows_per_round_and_continues_after_resume(tmp_path, kit):
    sets = ["privacy.central_dp.noise_multiplier=2.0", "privacy.central_dp.clipping_norm=1.0"]
    sites = {1: site(kit, "anzhen", 0.01, 2, clip=1.0), 2: site(kit, "lanzhou", 0.01, 3, clip=1.0)}
    strategy, wrapper = make_dp(tmp_path / "full", sets)
    run(wrapper, strategy, kit.FakeGrid(sites))
    full = [r["central_dp"]["epsilon"] for r in read_history(tmp_path / "full" / "history.jsonl")]
    assert len(full) == 3 and full[0] < full[1] < full[2]

    first, wrapper = make_dp(tmp_path / "cut", sets)
    run(wrapper, first, kit.FakeGrid(sites), rounds=2)
    past = read_history(tmp_path / "cut" / "history.jsonl")
    resumed, wrapper = make_dp(tmp_path / "cut", sets, state=first.global_state, completed=2, past=past)
    run(wrapper, resumed, kit.FakeGrid(sites))
    epsilons = [r["central_dp"]["epsilon"] for r in read_history(tmp_path / "cut" / "history.jsonl")]
    assert epsilons == pytest.approx(full, rel=1e-9)
