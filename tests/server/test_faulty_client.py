"""The server defends the global model (issue 9, point 4): a reply with unexpected or missing keys, wrong shapes or
dtypes, NaN/Inf, an update norm beyond `federation.max_update_norm` or unusable metrics is rejected, logged with
the site's name, and never averaged in: the global model equals what the honest site alone sent. First with
hand-made replies through `PhaseFedAvg`, then with faulty Flower ClientApp objects (handlers and mods run by
Flower's dispatch) next to an honest one."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from benchmarks.support.inprocess_grid import InProcessGrid, node_context
from cccmr_model.config import load_config
from cccmr_model.packing import manifest_array
from cccmr_model.run_folder import read_history
from cccmr_model.wire import decode, encode, with_evaluation
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg

GROUPS = {"pretrain": ("encoders.", "heads."), "fim": ("encoders.", "heads.", "uncertainty."), "fusion": ("fusion.",)}
BOUND = 50.0


def make_strategy(tmp_path) -> tuple[PhaseFedAvg, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    shapes = {"encoders.cine_4ch.w": (4, 3), "heads.cine_4ch.w": (2,), "uncertainty.s": (6,), "fusion.w": (3, 2)}
    start = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    config = load_config("tiny", [f"federation.max_update_norm={BOUND}", "federation.phases.pretrain.rounds=1"])
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, GROUPS), {k: v.copy() for k, v in start.items()},
                           config=config, run_dir=tmp_path, eval_keys=["fusion.w"])  # fmt: skip
    return strategy, start


def poison(arrays: dict[str, np.ndarray], where: str, value: float) -> dict[str, np.ndarray]:
    out = {k: v.copy() for k, v in arrays.items()}
    out[where].flat[1] = value
    return out


CORRUPTIONS = {
    "extra key": (lambda a: {**a, "fusion.w": np.zeros((3, 2), np.float32)}, {}, "unexpected parameter names"),
    "unknown key": (lambda a: {**a, "features.cine_4ch": np.zeros((8, 16), np.float32)}, {}, "unexpected"),
    "missing key": (lambda a: {k: v for k, v in a.items() if k.startswith("encoders.")}, {}, "missing heads."),
    "wrong shape": (lambda a: {**a, "heads.cine_4ch.w": np.zeros((3,), np.float32)}, {}, "expected float32[2]"),
    "wrong dtype": (lambda a: {k: v.astype(np.float64) for k, v in a.items()}, {}, "expected float32"),
    "one NaN": (lambda a: poison(a, "encoders.cine_4ch.w", np.nan), {}, "NaN or infinite"),
    "one +Inf": (lambda a: poison(a, "heads.cine_4ch.w", np.inf), {}, "NaN or infinite"),
    "one -Inf": (lambda a: poison(a, "encoders.cine_4ch.w", -np.inf), {}, "NaN or infinite"),
    "update norm": (lambda a: poison(a, "heads.cine_4ch.w", 1e3), {}, "exceeds max_update_norm"),
    "zero examples": (lambda a: a, {"num-examples": 0}, "num-examples must be a positive"),
    "NaN metric": (lambda a: a, {"loss": float("nan")}, "metric loss is not a finite number"),
}


def honest_update(msg: Message, step: float) -> dict[str, np.ndarray]:
    phase = msg.content["config"]["phase"]
    return {
        k: v + np.float32(step)
        for k, v in decode(msg.content["arrays"].to_numpy_ndarrays(), "test").items()
        if k.startswith(GROUPS[phase])
    }


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_hand_made_faulty_reply_is_rejected_logged_by_name_and_not_averaged(case, tmp_path, kit, caplog):
    corrupt, metrics, reason = CORRUPTIONS[case]
    strategy, start = make_strategy(tmp_path)

    def honest(msg):
        if msg.metadata.message_type == "evaluate":
            return kit.eval_reply("lanzhou", [1, 0, 0, 1], 0.3)
        return kit.train_reply("lanzhou", honest_update(msg, 0.5), 3, loss=0.3)

    def faulty(msg):
        if msg.metadata.message_type == "evaluate":
            return kit.eval_reply("anzhen", [1, 0, 0, 1], 0.3)
        reply = kit.train_reply("anzhen", corrupt(honest_update(msg, -2.0)), 1000, loss=0.1)
        reply["metrics"] = MetricRecord({**dict(reply["metrics"]), **metrics})
        return reply

    caplog.set_level(logging.WARNING, logger="cccmr.server")
    strategy.start(grid=kit.FakeGrid({1: faulty, 2: honest}), initial_arrays=strategy.global_arrays(), num_rounds=1,
                   timeout=5)  # fmt: skip
    for key in ("encoders.cine_4ch.w", "heads.cine_4ch.w"):  # the honest site's values exactly
        np.testing.assert_array_equal(strategy.global_state[key], start[key] + np.float32(0.5))
    for key in ("uncertainty.s", "fusion.w"):
        np.testing.assert_array_equal(strategy.global_state[key], start[key])
    record = read_history(tmp_path / "history.jsonl")[0]
    assert record["sites_replied"] == ["lanzhou"] and reason in record["sites_failed"]["anzhen"]
    lines = [r.getMessage() for r in caplog.records if "anzhen" in r.getMessage()]
    assert any("left out" in line and reason in line for line in lines), lines


WIRE_FAULTS = {
    "one array per parameter": (lambda a: ArrayRecord({k: Array(v) for k, v in a.items()}), "expected the arrays"),
    "manifest longer than the buffer": (
        lambda a: ArrayRecord([manifest_array({**a, "heads.extra": np.zeros(5, np.float32)}), encode(a)[1]]),
        "the manifest describes",
    ),
}


@pytest.mark.parametrize("case", list(WIRE_FAULTS))
def test_reply_not_in_the_wire_format_is_rejected_by_name(case, tmp_path, kit, caplog):
    encode, reason = WIRE_FAULTS[case]
    strategy, start = make_strategy(tmp_path)

    def site(name: str, step: float, faulty: bool):
        def reply(msg):
            if msg.metadata.message_type == "evaluate":
                return kit.eval_reply(name, [1, 0, 0, 1], 0.3)
            content = kit.train_reply(name, honest_update(msg, step), 3, loss=0.3)
            if faulty:
                content["arrays"] = encode(honest_update(msg, step))
            return content

        return reply

    caplog.set_level(logging.WARNING, logger="cccmr.server")
    strategy.start(grid=kit.FakeGrid({1: site("anzhen", -2.0, True), 2: site("lanzhou", 0.5, False)}),
                   initial_arrays=strategy.global_arrays(), num_rounds=1, timeout=5)  # fmt: skip
    np.testing.assert_array_equal(strategy.global_state["heads.cine_4ch.w"], start["heads.cine_4ch.w"] + 0.5)
    record = read_history(tmp_path / "history.jsonl")[0]
    assert record["sites_replied"] == ["lanzhou"] and reason in record["sites_failed"]["anzhen"]
    assert "reply of anzhen" in record["sites_failed"]["anzhen"]


def client_app(site: str, step: float, tamper=None) -> ClientApp:
    """A ClientApp whose train handlers add `step` to the trained groups; `tamper` (a mod) corrupts its replies."""
    app = ClientApp(mods=[tamper] if tamper else [])

    def train(msg: Message, context: Context) -> Message:
        arrays = ArrayRecord(encode(honest_update(msg, step)))
        metrics = {"num-examples": 4, "loss": 0.2}
        if "evaluate-round" in msg.content["config"]:  # the previous round's model, evaluated before training
            metrics = with_evaluation(metrics, {"num-examples": 2, "loss": 0.4, "confusion": [1, 0, 0, 1]})
        content = {"arrays": arrays, "metrics": MetricRecord(metrics), "site": ConfigRecord({"name": site})}
        return Message(RecordDict(content), reply_to=msg)

    def evaluate(msg: Message, context: Context) -> Message:
        metrics = MetricRecord({"num-examples": 2, "loss": 0.4, "confusion": [1, 0, 0, 1]})
        return Message(RecordDict({"metrics": metrics, "site": ConfigRecord({"name": site})}), reply_to=msg)

    for phase in GROUPS:
        app.train(phase)(train)
    app.evaluate()(evaluate)
    return app


def nan_mod(msg, context, call_next):
    reply = call_next(msg, context)
    if reply.has_error() or not reply.content.array_records:
        return reply
    arrays = {k: v.copy() for k, v in decode(reply.content["arrays"].to_numpy_ndarrays(), "test").items()}
    next(iter(arrays.values())).flat[0] = np.nan
    reply.content["arrays"] = ArrayRecord(encode(arrays))
    return reply


def boost_mod(msg, context, call_next):  # model replacement: scale the update 1000x
    reply = call_next(msg, context)
    if reply.has_error() or not reply.content.array_records:
        return reply
    sent = decode(msg.content["arrays"].to_numpy_ndarrays(), "test")
    arrays = {
        k: sent[k] + 1000 * (v - sent[k])
        for k, v in decode(reply.content["arrays"].to_numpy_ndarrays(), "test").items()
    }
    reply.content["arrays"] = ArrayRecord(encode(arrays))
    return reply


@pytest.mark.parametrize("tamper, reason", [(nan_mod, "NaN or infinite"), (boost_mod, "exceeds max_update_norm")])
def test_faulty_client_app_is_left_out_of_every_round(tamper, reason, tmp_path, kit, caplog):
    strategy, start = make_strategy(tmp_path)
    caplog.set_level(logging.WARNING, logger="cccmr.server")
    grid = InProcessGrid({1: (client_app("anzhen", 0.5), node_context(1, {"site": "anzhen"})),
                          2: (client_app("rogue", 0.1, tamper), node_context(2, {"site": "rogue"}))})  # fmt: skip
    strategy.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=strategy.remaining_rounds(),
                   timeout=5)  # fmt: skip
    rounds = read_history(tmp_path / "history.jsonl")
    assert len(rounds) == 4 and all(r["sites_replied"] == ["anzhen"] for r in rounds)
    assert all(reason in r["sites_failed"]["rogue"] for r in rounds)
    np.testing.assert_allclose(strategy.global_state["heads.cine_4ch.w"], start["heads.cine_4ch.w"] + 1.5, rtol=1e-6)
    assert sum("site rogue left out" in r.getMessage() for r in caplog.records) == 4
