"""Packing parameters for the wire: exact round trip, views not copies, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cccmr_model.packing import MANIFEST, PACKED, PackingError, manifest_array, pack, unpack, weighted_average


def state(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"encoders.a.w": (4, 3), "encoders.a.b": (3,), "heads.a.w": (2, 3, 1), "uncertainty.s": ()}
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_round_trip_is_exact_and_keeps_names_order_and_shapes():
    original = state()
    packed = pack(original)
    assert set(packed) == {MANIFEST, PACKED} and packed[PACKED].shape == (12 + 3 + 6 + 1,)
    back = unpack(packed, "test")
    assert list(back) == list(original)
    for k, v in original.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)
        assert np.shares_memory(back[k], packed[PACKED])  # a view, no copy


def test_manifest_array_equals_the_packed_one():
    np.testing.assert_array_equal(manifest_array(state()), pack(state())[MANIFEST])


def test_weighted_average_of_packed_buffers_equals_the_average_array_by_array():
    a, b = state(1), state(2)
    averaged = unpack({MANIFEST: manifest_array(a), PACKED: weighted_average([pack(a)[PACKED], pack(b)[PACKED]],
                                                                            [3.0, 1.0])}, "t")  # fmt: skip
    for k in a:  # the formula of Flower's aggregate_arrayrecords, array by array: bit for bit the same
        expected = a[k] * (3.0 / 4.0)
        expected += b[k] * (1.0 / 4.0)
        np.testing.assert_array_equal(averaged[k], expected)


@pytest.mark.parametrize(
    "broken, message",
    [
        (lambda p: {PACKED: p[PACKED]}, "expected the arrays"),
        (lambda p: {**p, "extra": p[PACKED]}, "expected the arrays"),
        (lambda p: {**p, PACKED: p[PACKED][:-1]}, "buffer holds 21"),
        (lambda p: {**p, PACKED: p[PACKED].reshape(2, 11)}, "must be 1-D"),
        (lambda p: {**p, MANIFEST: np.frombuffer(b"not json", np.uint8)}, "unreadable manifest"),
        (lambda p: {**p, MANIFEST: np.frombuffer(b'[["a",[2]],["a",[20]]]', np.uint8)}, "appears twice"),
        (lambda p: {**p, MANIFEST: np.frombuffer(b'[["a",[-22]]]', np.uint8)}, "negative dimension"),
    ],
)
def test_bad_packed_input_names_its_source(broken, message):
    with pytest.raises(PackingError, match=f"reply of anzhen: .*{message}"):
        unpack(broken(pack(state())), "reply of anzhen")


def test_mixed_dtypes_are_refused():
    with pytest.raises(PackingError, match=r"uncertainty\.s: dtype float64"):
        pack({**state(), "uncertainty.s": np.zeros((), np.float64)})
