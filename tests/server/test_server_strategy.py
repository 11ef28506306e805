"""PhaseFedAvg with hand-made replies: schedule, weighted merge, failures, rejections, history, checkpoints, resume."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Error, Message

from cccmr_model.config import ExperimentConfig, load_config
from cccmr_model.run_folder import list_checkpoints, load_checkpoint, read_history
from cccmr_model.wire import decode
from server.schedule import plan_rounds
from server.strategy import FederationError, PhaseFedAvg

GROUPS = {"pretrain": ("encoders.", "heads."), "fim": ("encoders.", "heads.", "uncertainty."), "fusion": ("fusion.",)}
EVAL_KEYS = ["encoders.cine_4ch.w", "encoders.cine_sax.w", "fusion.w"]


def make_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {
        "encoders.cine_4ch.w": (2, 3),
        "encoders.cine_sax.w": (2, 3),
        "encoders.lge_sax.w": (2, 3),
        "heads.cine_4ch.w": (2,),
        "uncertainty.log_var": (6,),
        "fusion.w": (3, 2),
    }
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def experiment(**overrides: object) -> ExperimentConfig:
    """The tiny config; toy updates (+step on every entry of tiny arrays) are unbounded unless a test sets one."""
    overrides = {"federation__max_update_ratio": "null", **overrides}
    sets = [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    return load_config("tiny", sets)


def make_strategy(tmp_path, exp=None, state=None, completed=0) -> PhaseFedAvg:
    exp = exp or experiment()
    plan = plan_rounds(load_config("tiny").federation.phases, GROUPS)
    return PhaseFedAvg(
        plan,
        state if state is not None else make_state(),
        config=exp,
        run_dir=tmp_path,
        eval_keys=EVAL_KEYS,
        completed_rounds=completed,
    )


def honest_site(kit, name: str, step: float, num_examples: int, fail_rounds=()):
    """Trains by adding `step * server-round` to every sent trained array; evaluates with fixed counts."""

    def site(msg):
        config = msg.content["config"]
        if msg.metadata.message_type == "evaluate":
            return kit.eval_reply(name, [3, 1, 0, 4], 0.5)
        if config["server-round"] in fail_rounds:
            return RuntimeError(f"{name} crashed")
        phase = config["phase"]
        arrays = {
            k: v
            for k, v in decode(msg.content["arrays"].to_numpy_ndarrays(), "test").items()
            if k.startswith(GROUPS[phase])
        }
        delta = np.float32(step * config["server-round"])
        return kit.train_reply(name, {k: v + delta for k, v in arrays.items()}, num_examples, loss=step)

    return site


def run(strategy, grid, rounds=None):
    return strategy.start(
        grid=grid,
        initial_arrays=strategy.global_arrays(),
        num_rounds=rounds or strategy.remaining_rounds(),
        timeout=5,
    )


def test_each_round_sends_its_phase_groups_and_schedule(tmp_path, kit):
    strategy = make_strategy(tmp_path)
    grid = kit.FakeGrid({1: honest_site(kit, "anzhen", 1.0, 4), 2: honest_site(kit, "lanzhou", 1.0, 4)})
    run(strategy, grid)
    train = [m for m in grid.sent if m.metadata.message_type.startswith("train")]
    assert [m.metadata.message_type for m in train[::2]] == ["train.pretrain"] * 2 + ["train.fim"] * 2 + [
        "train.fusion"
    ]
    first, fusion = train[0], train[-1]
    sent_first = set(decode(first.content["arrays"].to_numpy_ndarrays(), "test"))
    assert sent_first == {"encoders.cine_4ch.w", "encoders.cine_sax.w", "encoders.lge_sax.w", "heads.cine_4ch.w"}
    sent_fusion = set(decode(fusion.content["arrays"].to_numpy_ndarrays(), "test"))
    assert sent_fusion == {"fusion.w", "encoders.cine_4ch.w", "encoders.cine_sax.w"}
    assert list(first.content["arrays"]) == [
        "0",
        "1",
    ]  # two arrays on the wire (manifest, packed), not one per parameter
    windows = [(m.content["config"]["lr-window-start"], m.content["config"]["lr-window-end"]) for m in train[::2]]
    assert windows == [(0.0, 0.5), (0.5, 1.0), (0.0, 0.5), (0.5, 1.0), (0.0, 1.0)]
    assert [m.content["config"]["local-epochs"] for m in train[::2]] == [1, 1, 1, 1, 2]
    evaluate = [m for m in grid.sent if m.metadata.message_type == "evaluate"]
    assert set(decode(evaluate[0].content["arrays"].to_numpy_ndarrays(), "test")) == set(EVAL_KEYS)


def test_merge_is_num_examples_weighted_and_only_touches_trained_groups(tmp_path, kit):
    start = make_state()
    strategy = make_strategy(tmp_path, state=start)
    grid = kit.FakeGrid({1: honest_site(kit, "anzhen", 1.0, 1), 2: honest_site(kit, "lanzhou", 5.0, 3)})
    run(strategy, grid, rounds=1)
    final = strategy.global_state
    np.testing.assert_allclose(final["encoders.lge_sax.w"], start["encoders.lge_sax.w"] + 4.0, rtol=1e-6)
    np.testing.assert_array_equal(final["uncertainty.log_var"], start["uncertainty.log_var"])
    np.testing.assert_array_equal(final["fusion.w"], start["fusion.w"])
    assert final["fusion.w"].dtype == np.float32


def test_failed_and_silent_sites_are_left_out_by_name(tmp_path, kit):
    strategy = make_strategy(tmp_path)
    start = {k: v.copy() for k, v in strategy.global_state.items()}
    grid = kit.FakeGrid(
        {
            1: honest_site(kit, "anzhen", 1.0, 2),
            2: honest_site(kit, "lanzhou", 7.0, 2, fail_rounds=(2,)),
            3: lambda msg: None,  # never answers
        }
    )
    strategy.expected_sites = 3
    run(strategy, grid, rounds=3)
    # round 1: mean of +1 and +7; round 2: anzhen alone (+2); round 3: mean of +3 and +21
    np.testing.assert_allclose(strategy.global_state["heads.cine_4ch.w"], start["heads.cine_4ch.w"] + 4 + 2 + 12)
    rounds = read_history(tmp_path / "history.jsonl")
    assert rounds[0]["sites_failed"] == {"node-3": "no reply before the round timeout"}
    assert rounds[1]["sites_replied"] == ["anzhen"]
    assert "lanzhou crashed" in rounds[1]["sites_failed"]["lanzhou"]
    assert rounds[2]["sites_replied"] == ["anzhen", "lanzhou"]  # back in the next round


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda a: {**a, "fusion.w": np.zeros((3, 2), np.float32)}, "unexpected parameter names"),
        (lambda a: {k: v[:1] for k, v in a.items()}, "expected float32"),
        (lambda a: {k: np.full_like(v, np.nan) for k, v in a.items()}, "NaN"),
        (lambda a: {k: v + 1e4 for k, v in a.items()}, "update norm"),
    ],
)
def test_bad_replies_are_rejected(tmp_path, kit, corrupt, reason):
    strategy = make_strategy(tmp_path, exp=experiment(federation__max_update_norm=100.0))
    start = {k: v.copy() for k, v in strategy.global_state.items()}
    honest = honest_site(kit, "lanzhou", 1.0, 2)

    def bad(msg):
        content = honest(msg)
        if msg.metadata.message_type.startswith("train"):
            arrays = corrupt(dict(decode(content["arrays"].to_numpy_ndarrays(), "test")))
            return kit.train_reply("anzhen", arrays, 50)
        return kit.eval_reply("anzhen", [1, 0, 0, 1], 0.1)

    run(strategy, kit.FakeGrid({1: bad, 2: honest}), rounds=1)
    np.testing.assert_allclose(strategy.global_state["heads.cine_4ch.w"], start["heads.cine_4ch.w"] + 1.0)
    assert reason in read_history(tmp_path / "history.jsonl")[0]["sites_failed"]["anzhen"]


def test_too_few_sites_stops_the_run_after_the_last_checkpoint(tmp_path, kit):
    strategy = make_strategy(tmp_path, exp=experiment(federation__min_sites=2))
    grid = kit.FakeGrid(
        {1: honest_site(kit, "anzhen", 1.0, 2), 2: honest_site(kit, "lanzhou", 1.0, 2, fail_rounds=(2,))}
    )
    with pytest.raises(FederationError, match="round 2: 1 usable replies"):
        run(strategy, grid)
    assert [p.name for p in list_checkpoints(tmp_path / "checkpoints")] == ["round-0001.safetensors"]


def test_history_and_global_metrics_from_counts(tmp_path, kit):
    strategy = make_strategy(tmp_path)

    def site(name, confusion, loss):
        train = honest_site(kit, name, 1.0, 3)
        return lambda m: kit.eval_reply(name, confusion, loss) if m.metadata.message_type == "evaluate" else train(m)

    grid = kit.FakeGrid({1: site("anzhen", [3, 1, 0, 4], 0.2), 2: site("lanzhou", [1, 1, 2, 6], 0.8)})
    run(strategy, grid)
    rounds = read_history(tmp_path / "history.jsonl")
    assert [r["round"] for r in rounds] == [1, 2, 3, 4, 5]
    assert [r["phase"] for r in rounds] == ["pretrain", "pretrain", "fim", "fim", "fusion"]
    last = rounds[-1]
    g = last["evaluate_global"]
    assert g["num-examples"] == 18
    assert g["accuracy"] == pytest.approx((3 + 4 + 1 + 6) / 18)
    assert g["sensitivity"] == pytest.approx(10 / 12) and g["specificity"] == pytest.approx(4 / 6)
    assert g["loss"] == pytest.approx((0.2 * 8 + 0.8 * 10) / 18)
    assert last["evaluate"]["anzhen"]["confusion"] == [3, 1, 0, 4]
    assert last["bytes_sent"] > 0 and last["bytes_received"] > 0 and last["round_time_s"] >= 0
    assert last["train_global"]["num-examples"] == 6


def test_resume_continues_at_the_next_round_with_identical_weights(tmp_path, kit):
    sites = {1: honest_site(kit, "anzhen", 0.5, 2), 2: honest_site(kit, "lanzhou", 1.5, 5)}
    full = make_strategy(tmp_path / "full")
    run(full, kit.FakeGrid(sites))

    broken = {1: sites[1], 2: honest_site(kit, "lanzhou", 1.5, 5, fail_rounds=(4,))}
    first = make_strategy(tmp_path / "cut", exp=experiment(federation__min_sites=2))
    with pytest.raises(FederationError):
        run(first, kit.FakeGrid(broken))
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoints")
    assert ckpt.server_round == 3
    resumed = make_strategy(tmp_path / "cut", exp=experiment(federation__min_sites=2), state=ckpt.state, completed=3)
    grid = kit.FakeGrid(sites)
    run(resumed, grid)
    assert grid.sent[0].content["config"]["server-round"] == 4
    for key, value in full.global_state.items():
        np.testing.assert_array_equal(resumed.global_state[key], value)
    assert [r["round"] for r in read_history(tmp_path / "cut" / "history.jsonl")] == [1, 2, 3, 4, 5]


def test_rounds_without_evaluation_log_no_failures(tmp_path, kit):
    strategy = make_strategy(tmp_path, exp=experiment(federation__evaluate_every=10))
    grid = kit.FakeGrid({1: honest_site(kit, "anzhen", 1.0, 2), 2: honest_site(kit, "lanzhou", 1.0, 2)})
    run(strategy, grid)
    rounds = read_history(tmp_path / "history.jsonl")
    assert [bool(r["evaluate_global"]) for r in rounds] == [False] * 4 + [True]  # the last round always evaluates
    assert all(r["sites_failed"] == {} for r in rounds)


def test_superlink_error_reply_is_named_after_the_node_it_was_sent_to(tmp_path, kit):
    """A "Node Unavailable" error comes from the SuperLink (src node 1), not from the dead site: the strategy maps
    it back through the message id the grid set when pushing, so history names the site, not "node-1"."""

    class UnavailableGrid(kit.FakeGrid):
        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            for index, msg in enumerate(messages):
                msg.metadata.__dict__["_message_id"] = f"msg-{index}"  # as a real grid does on push
            replies = super().send_and_receive([m for m in messages if m.metadata.dst_node_id != 3], timeout=timeout)
            for msg in messages:
                if msg.metadata.dst_node_id == 3:
                    error = Message(Error(code=0, reason="Node Unavailable"), reply_to=msg)
                    error.metadata.__dict__["_src_node_id"] = 1  # the SuperLink answers for the dead node
                    replies.append(error)
            return replies

    strategy = make_strategy(tmp_path)
    grid = UnavailableGrid({2: honest_site(kit, "anzhen", 1.0, 2), 3: honest_site(kit, "lanzhou", 1.0, 2)})
    strategy.sites[3] = "lanzhou"  # learnt from an earlier round
    strategy.expected_sites = 2
    run(strategy, grid, rounds=1)
    failed = read_history(tmp_path / "history.jsonl")[0]["sites_failed"]
    assert failed == {"lanzhou": "error: Node Unavailable"}
