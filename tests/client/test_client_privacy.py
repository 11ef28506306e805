"""`clip_update_mod`: the site clips its update to the server's clipping norm in train replies only, over the
groups it returns (a phase also receives frozen inputs it does not send back)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, get_norm
from flwr.supercore.task_identity import TaskIdentity

from cccmr_model.site.budget import dp_ledger_path
from cccmr_model.wire import decode, encode
from cccmr_model.wire_codec import decode_model, decode_update, encode_model, encode_update
from client.privacy import clip_update_mod


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


RECEIVED = {"encoders.a": np.zeros((3, 4), np.float32), "fusion.w": np.ones((4,), np.float32)}


def make_app(returned: dict[str, np.ndarray]) -> ClientApp:
    app = ClientApp(mods=[clip_update_mod])

    @app.train("fusion")
    def train(msg: Message, context: Context) -> Message:
        arrays = ArrayRecord(encode(returned))
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 3})}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 3})}), reply_to=msg)

    return app


def message(message_type: str, clip: float | None) -> Message:
    config = ConfigRecord({"phase": "fusion"} | ({KEY_CLIPPING_NORM: clip} if clip is not None else {}))
    arrays = ArrayRecord(encode(RECEIVED))
    return Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=1, message_type=message_type)


def context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def test_train_update_of_the_returned_groups_is_clipped():
    app = make_app({"fusion.w": np.full((4,), 4.0, np.float32)})  # update 3 per entry: norm 6
    reply = app(message("train.fusion", 1.5), context())
    returned = decode(reply.content["arrays"].to_numpy_ndarrays(), "reply")
    sent = returned["fusion.w"]
    assert list(returned) == ["fusion.w"]
    assert get_norm([sent - RECEIVED["fusion.w"]]) == pytest.approx(1.5, rel=1e-6)
    np.testing.assert_allclose(sent, 1.0 + 0.75)  # direction kept


def test_without_a_clipping_norm_or_outside_training_nothing_changes():
    app = make_app({"fusion.w": np.full((4,), 4.0, np.float32)})
    reply = app(message("train.fusion", None), context())
    np.testing.assert_array_equal(decode(reply.content["arrays"].to_numpy_ndarrays(), "reply")["fusion.w"], 4.0)
    assert not app(message("evaluate", 1.0), context()).has_error()


def test_a_reply_with_arrays_not_received_is_replaced_by_an_error():
    app = make_app({"fusion.w": np.ones((4,), np.float32), "secret.features": np.ones((2,), np.float32)})
    reply = app(message("train.fusion", 1.0), context())
    assert reply.has_error() and "not a subset" in reply.error.reason


def wire_app(step: np.ndarray) -> ClientApp:
    """A site that adds `step` to the received `fusion.w` and replies in the order's wire format, as client/app.py."""
    app = ClientApp(mods=[clip_update_mod])

    @app.train("fusion")
    def train(msg: Message, context: Context) -> Message:
        wire = msg.content["config"]["wire"]
        received = decode_model(msg.content["arrays"].to_numpy_ndarrays(), wire, "message from the server")
        arrays = ArrayRecord(encode_update({"fusion.w": received["fusion.w"] + step}, received, wire))
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 3})}), reply_to=msg)

    return app


@pytest.mark.parametrize("wire", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("clip", [0.05, 1.5, 100.0])
def test_the_update_as_sent_is_clipped_in_every_wire_format(wire, clip):
    """Central DP clips after quantising: the update the server decodes has norm <= the clipping norm (fp32: up to
    float32 rounding of received + clipped update, as Flower's own clipping)."""
    rng = np.random.default_rng(3)
    received = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in RECEIVED.items()}
    step = rng.normal(scale=2.0, size=4).astype(np.float32)
    config = ConfigRecord({"phase": "fusion", "wire": wire, KEY_CLIPPING_NORM: clip})
    arrays = ArrayRecord(encode_model(received, wire))
    msg = Message(RecordDict({"arrays": arrays, "config": config}), dst_node_id=1, message_type="train.fusion")
    reply = wire_app(step)(msg, context())
    sent = reply.content["arrays"].to_numpy_ndarrays()
    down = decode_model(encode_model(received, wire), wire, "down")["fusion.w"]
    if wire == "fp32":
        update = decode(sent, "reply")["fusion.w"].astype(np.float64) - down
    else:
        update = decode_update(sent, wire, "reply")["fusion.w"].astype(np.float64)
    norm, unclipped = np.linalg.norm(update), np.linalg.norm(step.astype(np.float64))
    assert norm <= clip * (1 + 1e-6 if wire == "fp32" else 1)
    assert norm == pytest.approx(min(clip, unclipped), rel=1e-2)  # bf16 and int8 round the update


def test_ledger_lives_in_the_site_cache(tmp_path):
    assert dp_ledger_path(tmp_path).parent == tmp_path / "privacy"
