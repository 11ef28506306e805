"""The federation's message format: parameters through Flower's own record calls and back, the orders' config
fields, and clear errors for what does not follow the format."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord

from cccmr_model.config import load_config
from cccmr_model.packing import PackingError, pack
from cccmr_model.wire import (
    EvaluateOrder,
    OrderError,
    TrainOrder,
    decode,
    encode,
    experiment_from_json,
    experiment_to_json,
    order_wire,
    split_evaluation,
    with_evaluation,
)


def state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"encoders.a.w": (4, 3), "heads.a.w": (2,), "uncertainty.s": ()}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_parameters_round_trip_through_a_flower_record_as_two_arrays():
    record = ArrayRecord(encode(state()))
    wire = ArrayRecord.inflate(record.deflate(), {a.object_id: a for a in record.values()})  # as a message carries it
    assert list(wire) == ["0", "1"]  # two arrays on the wire, not one per parameter
    back = decode(wire.to_numpy_ndarrays(), "test")
    assert list(back) == list(state())
    for key, value in state().items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == value.dtype


@pytest.mark.parametrize(
    "arrays, message",
    [
        (lambda s: [], r"expected the arrays 'manifest' and 'packed', got 0 arrays \(\)"),
        (lambda s: list(s.values()), r"expected the arrays 'manifest' and 'packed', got 3 arrays \(float32\[4, 3\]"),
        (lambda s: list(s.values())[:2], r"got 2 arrays \(float32\[4, 3\], float32\[2\]\)"),  # one per parameter
        (lambda s: encode(s)[::-1], r"got 2 arrays \(float32\[15\], uint8"),  # swapped
        (lambda s: [encode(s)[0], encode(s)[1][:-1]], "the manifest describes 15 values, the buffer holds 14"),
        (lambda s: [np.frombuffer(b"not json", np.uint8), encode(s)[1]], "unreadable manifest"),
    ],
)
def test_arrays_not_in_the_wire_form_are_refused_naming_the_source(arrays, message):
    with pytest.raises(PackingError, match=f"reply of anzhen: .*{message}"):
        decode(arrays(state()), "reply of anzhen")


def test_a_flower_record_of_one_array_per_parameter_is_refused():
    record = ArrayRecord({k: Array(v) for k, v in state().items()})
    with pytest.raises(PackingError, match="expected the arrays"):
        decode(record.to_numpy_ndarrays(), "reply")


def test_encode_is_pack_in_manifest_then_values_order():
    packed = pack(state())
    for sent, expected in zip(encode(state()), (packed["manifest"], packed["packed"]), strict=True):
        np.testing.assert_array_equal(sent, expected)


TRAIN = TrainOrder("fim", 2, (0.25, 0.5), 7, 3, '{"a": 1}')
EVALUATE = EvaluateOrder("fusion", 9, True, '{"a": 1}')


TRAIN_EVALUATING = TrainOrder("fim", 2, (0.25, 0.5), 7, 3, '{"a": 1}', evaluate_round=6, share_scores=True)


def test_orders_round_trip_through_a_flower_config_record():
    for order in (TRAIN, EVALUATE, TRAIN_EVALUATING):
        assert type(order).from_config(ConfigRecord(order.to_config())) == order


def test_order_fields_on_the_wire():
    assert TRAIN.to_config() == {"phase": "fim", "local-epochs": 2, "lr-window-start": 0.25, "lr-window-end": 0.5,
                                 "server-round": 7, "seed": 3, "experiment": '{"a": 1}', "wire": "fp32",
                                 "run-key": ""}  # fmt: skip
    assert EVALUATE.to_config() == {"phase": "fusion", "server-round": 9, "share-subject-scores": True,
                                    "experiment": '{"a": 1}', "wire": "fp32"}  # fmt: skip
    assert TRAIN_EVALUATING.to_config() == {**TRAIN.to_config(), "evaluate-round": 6, "share-subject-scores": True}


def test_a_train_reply_carries_its_evaluation_under_eval():
    train, evaluation = {"num-examples": 8, "loss": 0.5}, {"num-examples": 2, "loss": 0.7, "confusion": [1, 0, 0, 1]}
    metrics = with_evaluation(train, evaluation)
    assert metrics["eval:confusion"] == [1, 0, 0, 1] and metrics["loss"] == 0.5
    assert split_evaluation(metrics) == (train, evaluation)


def test_orders_carry_the_wire_format_and_one_without_it_is_fp32():
    train = TrainOrder("fim", 2, (0.25, 0.5), 7, 3, "{}", wire="int8", run_key="r1")
    assert TrainOrder.from_config(ConfigRecord(train.to_config())) == train
    evaluate = EvaluateOrder("fusion", 9, True, "{}", wire="bf16")
    assert EvaluateOrder.from_config(evaluate.to_config()).wire == "bf16"
    older = {k: v for k, v in train.to_config().items() if k not in ("wire", "run-key")}
    assert TrainOrder.from_config(older).wire == "fp32" and order_wire({}, "train") == "fp32"


def test_fields_an_order_does_not_know_pass_and_integer_windows_read_as_numbers():
    config = {**TRAIN.to_config(), "clipping_norm": 1.5, "lr-window-start": 0}
    order = TrainOrder.from_config(config)
    assert order.lr_window == (0.0, 0.5) and isinstance(order.lr_window[0], float)


@pytest.mark.parametrize(
    "order, change, message",
    [
        (TRAIN, {"local-epochs": None}, "train message: config field 'local-epochs' is missing"),
        (TRAIN, {"seed": "3"}, "train message: config field 'seed' must be an integer, got '3'"),
        (TRAIN, {"local-epochs": True}, "config field 'local-epochs' must be an integer, got True"),
        (TRAIN, {"lr-window-end": "1"}, "config field 'lr-window-end' must be a number"),
        (TRAIN, {"phase": 1}, "config field 'phase' must be a string"),
        (TRAIN_EVALUATING, {"evaluate-round": "6"}, "config field 'evaluate-round' must be an integer"),
        (TRAIN_EVALUATING, {"share-subject-scores": None}, "config field 'share-subject-scores' is missing"),
        (EVALUATE, {"share-subject-scores": 1}, "evaluate message: config field 'share-subject-scores' must be true"),
        (EVALUATE, {"experiment": None}, "evaluate message: config field 'experiment' is missing"),
        (TRAIN, {"wire": "fp16"}, "train message: config field 'wire' must be one of fp32, bf16, int8, got 'fp16'"),
        (EVALUATE, {"wire": 8}, "evaluate message: config field 'wire' must be a string, got 8"),
        (TRAIN, {"run-key": 1}, "config field 'run-key' must be a string"),
    ],
)
def test_a_missing_or_mistyped_field_is_named(order, change, message):
    config = {k: v for k, v in {**order.to_config(), **change}.items() if v is not None}
    with pytest.raises(OrderError, match=message):
        type(order).from_config(config)


def test_experiment_config_round_trips_and_bad_json_is_named():
    config = load_config("tiny")
    assert experiment_from_json(experiment_to_json(config)) == config
    with pytest.raises(OrderError, match="config field 'experiment' is not JSON"):
        experiment_from_json("{")
    with pytest.raises(OrderError, match="must be a JSON object, got list"):
        experiment_from_json("[]")
