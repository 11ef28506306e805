"""`federation.wire` through the strategy: bytes per site per round in the history for fp32, bf16 and int8, the fp32
master copy kept on the server, a reply in the wrong format refused in one line naming the site, and central DP
through ClientApps that run the real `clip_update_mod` (the update is clipped as sent and passes the server's
check in every format)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from benchmarks.support.inprocess_grid import InProcessGrid, node_context
from cccmr_model.compression import INT8_BLOCK, round_bf16
from cccmr_model.config import load_config
from cccmr_model.run_folder import read_history
from cccmr_model.wire import encode, with_evaluation
from cccmr_model.wire_codec import decode_model, encode_update
from client.privacy import clip_update_mod
from server.privacy import with_central_dp
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg

GROUPS = {"pretrain": ("encoders.", "heads."), "fim": ("encoders.", "heads.", "uncertainty."), "fusion": ("fusion.",)}
SHAPES = {"encoders.a.w": (300, 400), "heads.a.w": (2, 400), "uncertainty.s": (6,), "fusion.w": (200, 50)}
PRETRAIN = ("encoders.a.w", "heads.a.w")
ONE_ROUND = ["federation.phases.pretrain.rounds=1", "federation.phases.fim.rounds=0",
             "federation.phases.fusion.rounds=0", "federation.evaluate_every=1"]  # fmt: skip


def start_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def make_strategy(tmp_path, wire: str, sets=()) -> tuple[PhaseFedAvg, object]:
    config = load_config("tiny", [*ONE_ROUND, f"federation.wire={wire}", *sets])
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, GROUPS), start_state(), config=config,
                           run_dir=tmp_path / wire, eval_keys=["fusion.w"])  # fmt: skip
    strategy.expected_sites = 1  # the first round waits for no more nodes than the grid has
    return strategy, with_central_dp(strategy, config)


def site(kit, name: str, step: float, wire_of_reply: str | None = None):
    """Decodes what it receives, adds `step` to the trained groups and replies as the site's handler encodes it (in
    `wire_of_reply` instead of the round's format when given); answers an evaluation riding a train message."""

    def reply(msg):
        if msg.metadata.message_type == "evaluate":
            return kit.eval_reply(name, [1, 0, 0, 1], 0.5)
        config = msg.content["config"]
        received = decode_model(msg.content["arrays"].to_numpy_ndarrays(), config["wire"], "test")
        trained = {k: v + np.float32(step) for k, v in received.items() if k.startswith(GROUPS["pretrain"])}
        evaluation = {"num-examples": 2, "loss": 0.5, "confusion": [1, 0, 0, 1]} if "evaluate-round" in config else {}
        content = kit.train_reply(name, {}, 10)
        content["metrics"] = MetricRecord(with_evaluation({"num-examples": 10}, evaluation))
        content["arrays"] = ArrayRecord(encode_update(trained, received, wire_of_reply or config["wire"]))
        return content

    return reply


def run(runner, strategy, grid) -> dict:
    runner.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=1, timeout=5)
    strategy.checkpoints.wait()
    (record,) = read_history(strategy.history_path)
    return record


def test_bytes_per_site_per_round_halve_with_bf16_and_int8_updates_are_a_quarter(tmp_path, kit):
    per_site = {}
    for wire in ("fp32", "bf16", "int8"):
        strategy, runner = make_strategy(tmp_path, wire)
        grid = kit.FakeGrid({1: site(kit, "a", 0.01), 2: site(kit, "b", -0.02)})
        record = run(runner, strategy, grid)
        assert record["sites_replied"] == ["a", "b"] and not record["sites_failed"]
        per_site[wire] = {"down": record["bytes_sent"] / 2, "up": record["bytes_received"] / 2}
    sent = sum(np.prod(SHAPES[k]) for k in PRETRAIN) + np.prod(SHAPES["fusion.w"])  # train + evaluate messages
    trained = sum(np.prod(SHAPES[k]) for k in PRETRAIN)
    assert per_site["fp32"]["down"] == pytest.approx(4 * sent, rel=2e-3)
    assert per_site["fp32"]["up"] == pytest.approx(4 * trained, rel=2e-3)
    for wire in ("bf16", "int8"):
        assert per_site[wire]["down"] / per_site["fp32"]["down"] == pytest.approx(0.5, rel=2e-3)
    assert per_site["bf16"]["up"] / per_site["fp32"]["up"] == pytest.approx(0.5, rel=2e-3)
    int8_up = (1 + 4 / INT8_BLOCK) / 4  # one byte per value and a float32 scale per block, against four bytes
    assert per_site["int8"]["up"] / per_site["fp32"]["up"] == pytest.approx(int8_up, rel=5e-3)  # + array headers
    print({w: {k: int(v) for k, v in b.items()} for w, b in per_site.items()})  # with pytest -s: the numbers


@pytest.mark.parametrize("wire", ["bf16", "int8"])
def test_the_server_sends_bf16_and_keeps_its_fp32_master(tmp_path, kit, wire):
    strategy, runner = make_strategy(tmp_path, wire)
    grid = kit.FakeGrid({1: site(kit, "a", 0.01)})
    run(runner, strategy, grid)
    start = start_state()
    down = [m.content["arrays"].to_numpy_ndarrays() for m in grid.sent]
    assert all(arrays[1].dtype == np.uint16 for arrays in down)  # train and evaluate messages
    for key in PRETRAIN:
        assert strategy.global_state[key].dtype == np.float32
        expected = start[key] + np.float32(0.01)  # the update on the fp32 master, not on the rounded copy sent
        np.testing.assert_allclose(strategy.global_state[key], expected, atol=0.01 / 127 + 1e-6)
        assert np.abs(strategy.global_state[key] - round_bf16(expected.ravel()).reshape(expected.shape)).max() > 1e-4


@pytest.mark.parametrize("wire", ["bf16", "int8"])
def test_an_evaluation_riding_a_train_message_gets_the_bf16_model(tmp_path, kit, wire):
    config = load_config("tiny", [*ONE_ROUND, "federation.phases.pretrain.rounds=2", f"federation.wire={wire}"])
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, GROUPS), start_state(), config=config,
                           run_dir=tmp_path, eval_keys=["fusion.w"])  # fmt: skip
    strategy.expected_sites = 1
    grid = kit.FakeGrid({1: site(kit, "a", 0.01)})
    strategy.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=2, timeout=5)
    strategy.checkpoints.wait()
    records = read_history(strategy.history_path)
    assert [r["sites_failed"] for r in records] == [{}, {}]
    assert records[1]["evaluated_round"] == 2  # the final evaluation, its own exchange
    assert records[1]["previous_evaluation"]["evaluated_round"] == 1  # round 1's rode round 2's train message
    assert records[1]["previous_evaluation"]["evaluate"]["a"]["num-examples"] == 2
    second = grid.sent[1]
    assert second.content["config"]["evaluate-round"] == 1
    sent = decode_model(second.content["arrays"].to_numpy_ndarrays(), wire, "test")
    assert set(sent) == {*PRETRAIN, "fusion.w"} and second.content["arrays"].to_numpy_ndarrays()[1].dtype == np.uint16


def test_a_reply_in_the_wrong_format_is_refused_in_one_line_naming_the_site(tmp_path, kit):
    strategy, runner = make_strategy(tmp_path, "bf16")
    grid = kit.FakeGrid({1: site(kit, "a", 0.01), 2: site(kit, "b", 0.01, wire_of_reply="fp32")})
    record = run(runner, strategy, grid)
    reason = record["sites_failed"]["b"]
    assert record["sites_replied"] == ["a"] and "\n" not in reason
    assert reason.startswith("rejected: reply of b: expected the arrays (uint8[n], uint16[n]), got 2 arrays (uint8[")


def dp_node(node_id: int, name: str, step: float) -> tuple[ClientApp, Context]:
    """A ClientApp with the real clip_update_mod whose training adds `step` (like client/app.py, without data)."""
    app = ClientApp(mods=[clip_update_mod])

    @app.train("pretrain")
    def train(msg: Message, context: Context) -> Message:
        wire = msg.content["config"]["wire"]
        received = decode_model(msg.content["arrays"].to_numpy_ndarrays(), wire, "test")
        trained = {k: v + np.float32(step) for k, v in received.items() if k.startswith(GROUPS["pretrain"])}
        arrays = ArrayRecord(encode_update(trained, received, wire))
        content = {"arrays": arrays, "metrics": MetricRecord({"num-examples": 10})}
        return Message(RecordDict({**content, "site": ConfigRecord({"name": name})}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        metrics = {"num-examples": 2, "loss": 0.5, "confusion": [1, 0, 0, 1]}
        return Message(RecordDict({"metrics": MetricRecord(metrics), "site": ConfigRecord({"name": name})}),
                       reply_to=msg)  # fmt: skip

    return app, node_context(node_id, {"site": name})


@pytest.mark.parametrize("wire", ["fp32", "bf16", "int8"])
def test_central_dp_clips_the_update_as_sent_and_the_server_accepts_it(tmp_path, kit, wire):
    clipping_norm = 0.5  # the steps' norms are about 3.5 and 7: both sites clip
    sets = ["privacy.central_dp.enabled=true", f"privacy.central_dp.clipping_norm={clipping_norm}",
            "privacy.central_dp.noise_multiplier=0.0"]  # fmt: skip
    strategy, runner = make_strategy(tmp_path, wire, sets)
    grid = InProcessGrid({1: dp_node(1, "a", 0.01), 2: dp_node(2, "b", -0.02)}, raise_errors=True)
    record = run(runner, strategy, grid)
    assert record["sites_replied"] == ["a", "b"], record["sites_failed"]
    assert all(norm <= clipping_norm * (1 + 1e-4) for norm in record["update_norms"].values()), record
    assert min(record["update_norms"].values()) > clipping_norm * 0.99
    assert record["central_dp"]["sites_averaged"] == 2


def test_fp32_replies_are_what_fp32_always_sent(tmp_path, kit):
    strategy, runner = make_strategy(tmp_path, "fp32")
    grid = kit.FakeGrid({1: site(kit, "a", 0.01)})
    run(runner, strategy, grid)
    train = grid.sent[0].content["arrays"].to_numpy_ndarrays()
    start = start_state()
    for got, expected in zip(train, encode({k: start[k] for k in PRETRAIN}), strict=True):
        np.testing.assert_array_equal(got, expected)  # the float32 values, bit for bit
