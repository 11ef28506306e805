"""`federation.wire` formats through Flower's own records: the model down, the update up, the server's sum with its
fp32 master copy, the payload sizes, clear errors for malformed encodings, and clipping of the update as sent."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cccmr_model.compression import INT8_BLOCK, round_bf16, to_bf16
from cccmr_model.packing import PackingError
from cccmr_model.wire import encode
from cccmr_model.wire_codec import (
    clip_update,
    decode_model,
    decode_reply,
    decode_update,
    encode_difference,
    encode_model,
    encode_update,
    residual_path,
)

SHAPES = {"encoders.a.w": (64, 40), "heads.a.w": (2, 40), "heads.a.b": (2,)}


def master() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}


def carried(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """What the other side reads: the arrays through an ArrayRecord, deflated and inflated as a message carries it."""
    record = ArrayRecord(arrays)
    return ArrayRecord.inflate(record.deflate(), {a.object_id: a for a in record.values()}).to_numpy_ndarrays()


def trained_from(received: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {k: v + rng.normal(scale=1e-2, size=v.shape).astype(np.float32) for k, v in received.items()}


@pytest.mark.parametrize("wire", ["fp32", "bf16", "int8"])
def test_the_model_goes_down_as_float32_or_bf16_bits(wire):
    sent = encode_model(master(), wire)
    received = decode_model(carried(sent), wire, "message from the server")
    assert list(received) == list(SHAPES)
    for key, value in master().items():
        expected = value if wire == "fp32" else round_bf16(value.ravel()).reshape(value.shape)
        np.testing.assert_array_equal(received[key], expected)
        assert received[key].dtype == np.float32
    assert sent[1].dtype == (np.float32 if wire == "fp32" else np.uint16)


def test_fp32_replies_are_the_trained_weights_unchanged():
    received = master()
    trained = trained_from(received)
    sent = encode_update(trained, received, "fp32")
    for got, expected in zip(sent, encode(trained), strict=True):
        np.testing.assert_array_equal(got, expected)  # bit for bit what fp32 always sent
    back = decode_reply(carried(sent), "fp32", "reply of a", master())
    for key, value in trained.items():
        np.testing.assert_array_equal(back[key], value)


@pytest.mark.parametrize("wire", ["bf16", "int8"])
def test_an_update_goes_up_and_the_server_adds_it_to_its_fp32_master(wire, tmp_path):
    received = decode_model(encode_model(master(), wire), wire, "down")
    trained = trained_from(received)
    sent = encode_update(trained, received, wire, residuals=residual_path(tmp_path), run_key="r")
    back = decode_reply(carried(sent), wire, "reply of a", master())
    largest = max(np.abs(trained[k] - received[k]).max() for k in trained)  # int8 blocks span parameters
    for key, value in master().items():
        update = trained[key] - received[key]
        # int8: half a step of a block's scale (at most max|update| / 127); bf16: half an ulp, <= 2^-8 |update|
        bound = largest / 254 if wire == "int8" else np.abs(update) * 2.0**-8
        assert np.all(np.abs(back[key] - (value + update)) <= bound * 1.01 + 1e-6), key
        assert back[key].dtype == np.float32
    assert residual_path(tmp_path).is_file() == (wire == "int8")


def test_payload_sizes_per_format():
    received = master()
    values = sum(v.size for v in received.values())
    trained = trained_from(received)
    size = {w: ArrayRecord(encode_update(trained, received, w)).count_bytes() for w in ("fp32", "bf16", "int8")}
    down = {w: ArrayRecord(encode_model(received, w)).count_bytes() for w in ("fp32", "bf16")}
    assert values * 4 < size["fp32"] < values * 4 + 1000
    assert values * 2 < size["bf16"] < values * 2 + 1000 and values * 2 < down["bf16"] < values * 2 + 1000
    assert values * (1 + 4 / INT8_BLOCK) < size["int8"] < values * (1 + 4 / INT8_BLOCK) + 1500


def good_update(wire: str) -> list[np.ndarray]:
    return encode_difference({"a": np.linspace(-1, 1, 300, dtype=np.float32)}, wire)


@pytest.mark.parametrize(
    "wire, broken, message",
    [
        ("bf16", lambda a: [a[0], a[1].astype(np.float32)], r"expected the arrays \(uint8\[n\], uint16\[n\]\), got 2"),
        ("bf16", lambda a: a[:1], r"got 1 arrays \(uint8\[\d+\]\)"),
        ("bf16", lambda a: [a[0], a[1][:-1]], "the manifest describes 300 values, the buffer holds 299"),
        ("bf16", lambda a: [a[0], a[1].reshape(2, 150)], r"got 2 arrays \(uint8\[\d+\], uint16\[2, 150\]\)"),
        ("int8", lambda a: a[:2], r"expected the arrays \(uint8\[n\], int8\[n\], float32\[n\]\)"),
        ("int8", lambda a: [a[0], a[1], a[2][:1]], "int8 scales must be float32 \\[2\\]"),
        ("int8", lambda a: [a[0], a[1], -a[2]], "int8 scales must be finite and non-negative"),
        ("int8", lambda a: [a[0], a[1], np.full(2, np.nan, np.float32)], "finite and non-negative"),
        ("int8", lambda a: [np.frombuffer(b"[1", np.uint8), a[1], a[2]], "unreadable manifest"),
        ("int8", lambda a: [a[0], a[1][:-1], a[2]], "the manifest describes 300 values, the buffer holds 299"),
    ],
)
def test_a_malformed_update_is_refused_naming_the_site(wire, broken, message):
    with pytest.raises(PackingError, match=f"^reply of anzhen: .*{message}"):
        decode_reply(broken(good_update(wire)), wire, "reply of anzhen", {"a": np.zeros(300, np.float32)})


def test_a_reply_in_another_format_is_refused():
    fp32 = encode({"a": np.zeros(300, np.float32)})
    for wire in ("bf16", "int8"):
        with pytest.raises(PackingError, match="reply of x: expected the arrays"):
            decode_reply(fp32, wire, "reply of x", {"a": np.zeros(300, np.float32)})
    with pytest.raises(PackingError, match="message from the server: expected the arrays"):
        decode_model(fp32, "bf16", "message from the server")


def test_names_and_shapes_the_master_lacks_are_left_for_the_reply_checks():
    update = {"a": np.ones(4, np.float32), "b": np.ones(3, np.float32)}
    back = decode_reply(encode_difference(update, "bf16"), "bf16", "r", {"a": np.ones((2, 2), np.float32)})
    np.testing.assert_array_equal(back["a"], np.ones(4))  # shape differs from the master: as sent
    np.testing.assert_array_equal(back["b"], np.ones(3))  # not in the master: as sent


def test_a_trained_parameter_that_was_not_received_is_an_error():
    with pytest.raises(Exception, match="trained parameter b was not received"):
        encode_update({"b": np.ones(2, np.float32)}, {"a": np.ones(2, np.float32)}, "bf16")


UPDATES = arrays(np.float32, st.integers(1, 3 * INT8_BLOCK + 7), elements=st.floats(-1e3, 1e3, width=32))


@settings(max_examples=150, deadline=None)
@given(update=UPDATES, wire=st.sampled_from(["bf16", "int8"]), fraction=st.floats(1e-4, 2.0))
def test_clipping_bounds_the_decoded_update_by_the_clipping_norm(update, wire, fraction):
    sent = encode_difference({"a": update}, wire)
    before = decode_update(sent, wire, "r")["a"].astype(np.float64)
    norm = float(np.linalg.norm(before))
    clipping_norm = max(norm * fraction, 1e-6)
    clipped, measured = clip_update(sent, wire, clipping_norm)
    after = decode_update(clipped, wire, "r")["a"].astype(np.float64)
    assert measured == pytest.approx(norm)
    assert np.linalg.norm(after) <= clipping_norm
    if norm > clipping_norm:
        assert np.linalg.norm(after) >= clipping_norm * (1 - 2**-7)  # bf16 rounds each value down by < 2^-8
        assert np.all(np.sign(after) * np.sign(before) >= 0)  # the direction is kept
    else:
        np.testing.assert_array_equal(after, before)


def test_a_non_finite_update_is_not_clipped():
    sent = encode_difference({"a": np.array([np.inf, 1.0], np.float32)}, "bf16")
    clipped, norm = clip_update(sent, "bf16", 1.0)
    assert norm == np.inf and clipped[1] is sent[1]
    assert to_bf16(np.array([np.inf], np.float32))[0] == clipped[1][0]
