"""PhaseFedAvg with hand-made replies: schedule, weighted merge, failures, rejections, history, checkpoints, resume."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Error, Message, MetricRecord

from cccmr_model.config import ExperimentConfig, load_config
from cccmr_model.run_folder import list_checkpoints, load_checkpoint, read_history
from cccmr_model.wire import decode, split_evaluation, with_evaluation
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

    def evaluation(msg):
        return kit.eval_reply(name, [3, 1, 0, 4], 0.5)["metrics"]

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
        reply = kit.train_reply(name, {k: v + delta for k, v in arrays.items()}, num_examples, loss=step)
        if "evaluate-round" in config:  # the evaluation of the received model, before training
            reply["metrics"] = MetricRecord(with_evaluation(dict(reply["metrics"]), dict(evaluation(msg))))
        return reply

    return site


def piggyback(kit, site, evaluation):
    """`site`, answering the evaluations its train messages ask for with `evaluation(msg)` (also its final one)."""

    def reply(msg):
        content = site(msg)
        if msg.metadata.message_type == "evaluate":
            content["metrics"] = MetricRecord(evaluation(msg))
        elif "evaluate-round" in msg.content["config"] and not isinstance(content, Exception):
            train, _ = split_evaluation(dict(content["metrics"]))
            content["metrics"] = MetricRecord(with_evaluation(train, evaluation(msg)))
        return content

    return reply


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
    assert grid.sent[0].content["config"]["evaluate-round"] == 3  # the checkpoint's round, evaluated after resuming
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


# ---- issue 17 point 3: evaluation without its own exchange ----


def by_round(grid) -> dict[int, list[str]]:
    """The message types sent, per server round."""
    out: dict[int, list[str]] = {}
    for msg in grid.sent:
        out.setdefault(msg.content["config"]["server-round"], []).append(msg.metadata.message_type)
    return out


def model_evaluation(kit, name: str):
    """Evaluation metrics that name the evaluated model: its loss is the first entry of encoders.cine_4ch.w."""

    def evaluation(msg):
        sent = decode(msg.content["arrays"].to_numpy_ndarrays(), "test")
        return {"num-examples": 4, "loss": float(sent["encoders.cine_4ch.w"].flat[0]), "confusion": [2, 0, 1, 1]}

    return piggyback(kit, honest_site(kit, name, 1.0, 2), evaluation)


@pytest.mark.parametrize(
    "every, evaluated, previous",
    [(1, [None, 1, 2, 3, 5], 4), (2, [None, None, 2, None, 5], 4), (3, [None] * 3 + [3, 5], None)],
)
def test_a_rounds_evaluation_arrives_with_the_next_train_reply(tmp_path, kit, every, evaluated, previous):
    strategy = make_strategy(tmp_path, exp=experiment(federation__evaluate_every=every))
    start = strategy.global_state["encoders.cine_4ch.w"].flat[0]
    grid = kit.FakeGrid({1: model_evaluation(kit, "anzhen"), 2: model_evaluation(kit, "lanzhou")})
    run(strategy, grid)
    rounds = read_history(tmp_path / "history.jsonl")
    assert [r["evaluated_round"] for r in rounds] == evaluated
    for record in rounds:  # the global model after the evaluated round: +1, +2, ... per round of pretrain and fim
        if record["evaluated_round"] is not None:
            t = min(record["evaluated_round"], 4)
            assert record["evaluate_global"]["loss"] == pytest.approx(start + t * (t + 1) / 2, rel=1e-6)
    assert rounds[-1].get("previous_evaluation", {}).get("evaluated_round") == previous
    for msg in grid.sent:  # a train message that asks for an evaluation also carries the cine-only model
        config = msg.content["config"]
        if "evaluate-round" in config:
            assert config["evaluate-round"] == config["server-round"] - 1
            assert set(EVAL_KEYS) <= set(decode(msg.content["arrays"].to_numpy_ndarrays(), "test"))


def test_a_non_final_round_makes_one_exchange_even_when_it_evaluates(tmp_path, kit):
    strategy = make_strategy(tmp_path)  # tiny: evaluate_every 1
    grid = kit.FakeGrid({1: model_evaluation(kit, "anzhen"), 2: model_evaluation(kit, "lanzhou")})
    run(strategy, grid)
    sent = by_round(grid)
    assert [sent[r] for r in (1, 2, 3, 4)] == [["train.pretrain"] * 2] * 2 + [["train.fim"] * 2] * 2
    assert sent[5] == ["train.fusion"] * 2 + ["evaluate"] * 2  # the last round still evaluates in its own exchange
    rounds = read_history(tmp_path / "history.jsonl")
    assert [sorted(r["exchange_s"]) for r in rounds] == [["train"]] * 4 + [["evaluate", "train"]]
    train_bytes = [m.content["arrays"].count_bytes() for m in grid.sent if m.metadata.message_type != "evaluate"]
    assert [r["bytes_sent"] for r in rounds[:4]] == [train_bytes[i] + train_bytes[i + 1] for i in range(0, 8, 2)]
    assert all(r["sites_failed"] == {} for r in rounds)
    final = rounds[-1]
    assert final["evaluated_round"] == 5 and set(final["evaluate"]) == {"anzhen", "lanzhou"}
    assert set(strategy.final_evaluation) == {"anzhen", "lanzhou"}
    assert strategy.final_evaluation["anzhen"]["loss"] == final["evaluate"]["anzhen"]["loss"]


@pytest.mark.parametrize(
    "bad, reason",
    [
        ({"num-examples": 4, "loss": 0.1, "confusion": [9, 0, 0, 1]}, "sum to 10, not num-examples 4"),
        ({"num-examples": 4, "loss": float("nan"), "confusion": [2, 0, 1, 1]}, "loss is not a finite number"),
        ({}, "num-examples must be a positive integer"),  # asked, but no evaluation in the reply
    ],
)
def test_a_malformed_piggybacked_evaluation_rejects_only_the_evaluation(tmp_path, kit, bad, reason):
    strategy = make_strategy(tmp_path)
    start = {k: v.copy() for k, v in strategy.global_state.items()}
    good = {"num-examples": 4, "loss": 0.3, "confusion": [2, 0, 1, 1]}
    grid = kit.FakeGrid({1: piggyback(kit, honest_site(kit, "anzhen", 1.0, 2), lambda m: good),
                         2: piggyback(kit, honest_site(kit, "lanzhou", 3.0, 2), lambda m: bad)})  # fmt: skip
    run(strategy, grid, rounds=2)
    record = read_history(tmp_path / "history.jsonl")[1]
    assert record["sites_replied"] == ["anzhen", "lanzhou"]  # the training update is averaged in
    np.testing.assert_allclose(strategy.global_state["heads.cine_4ch.w"], start["heads.cine_4ch.w"] + 2 + 4, rtol=1e-6)
    assert record["evaluated_round"] == 1 and set(record["evaluate"]) == {"anzhen"}
    assert set(record["sites_failed"]) == {"lanzhou"}
    assert record["sites_failed"]["lanzhou"].startswith("evaluation of round 1 rejected: ")
    assert reason in record["sites_failed"]["lanzhou"]
    assert record["evaluate_global"]["num-examples"] == 4 and set(strategy.final_evaluation) == {"anzhen"}
    assert set(record["train"]["lanzhou"]) == {"num-examples", "loss"}  # no eval: metrics in the training record


def test_an_evaluation_nobody_asked_for_is_dropped(tmp_path, kit):
    strategy = make_strategy(tmp_path)
    extra = {"num-examples": 4, "loss": 0.3, "confusion": [2, 0, 1, 1]}
    site = honest_site(kit, "anzhen", 1.0, 2)

    def eager(msg):
        content = site(msg)
        if msg.metadata.message_type != "evaluate":
            content["metrics"] = MetricRecord(with_evaluation(dict(content["metrics"]), extra))
        return content

    run(strategy, kit.FakeGrid({1: eager, 2: honest_site(kit, "lanzhou", 1.0, 2)}), rounds=1)
    (record,) = read_history(tmp_path / "history.jsonl")
    assert record["evaluated_round"] is None and record["evaluate"] == {}
    assert record["metrics_dropped"] == {"anzhen": ["'eval:confusion'", "'eval:loss'", "'eval:num-examples'"]}
