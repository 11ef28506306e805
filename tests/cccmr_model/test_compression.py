"""bf16 and int8 encodings (property tests against torch's bfloat16 and the int8 error bound) and error feedback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cccmr_model.compression import (
    INT8_BLOCK,
    ErrorFeedback,
    check_int8,
    dequantize_int8,
    from_bf16,
    quantize_int8,
    round_bf16,
    to_bf16,
)

BIG = float(np.float32(1e30))
FINITE = st.floats(-BIG, BIG, allow_nan=False, width=32)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.integers(1, 600), elements=FINITE))
def test_bf16_rounds_exactly_as_torch_does(values) -> None:
    expected = torch.from_numpy(values).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(round_bf16(values), expected)
    assert to_bf16(values).dtype == np.uint16 and to_bf16(values).nbytes * 2 == values.nbytes


def test_bf16_keeps_nan_and_inf() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    back = from_bf16(to_bf16(values))
    assert np.isnan(back[0]) and back[1] == np.inf and back[2] == -np.inf and back[3] == 0.0


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, st.integers(1, 3 * INT8_BLOCK + 5), elements=st.floats(-1e6, 1e6, width=32)))
def test_int8_error_is_at_most_half_a_step_per_block(values) -> None:
    encoded = quantize_int8(values)
    back = dequantize_int8(encoded)
    assert encoded.codes.dtype == np.int8 and back.shape == values.shape
    step = np.repeat(encoded.scales, INT8_BLOCK)[: values.size]
    assert np.all(np.abs(back - values) <= 0.5 * step * (1 + 1e-5) + 1e-30)


def test_int8_all_zero_block_and_validation() -> None:
    values = np.zeros(2 * INT8_BLOCK, np.float32)
    values[INT8_BLOCK + 3] = 2.0
    encoded = quantize_int8(values)
    assert encoded.scales[0] == 0 and dequantize_int8(encoded)[INT8_BLOCK + 3] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="reply of x: int8 scales must be float32"):
        check_int8(encoded.codes, encoded.scales[:1], "reply of x")
    with pytest.raises(ValueError, match="finite and non-negative"):
        check_int8(encoded.codes, -encoded.scales, "reply of x")


def test_error_feedback_sends_the_whole_update_over_rounds(tmp_path) -> None:
    rng = np.random.default_rng(0)
    layout = [("a", 300), ("b", 17)]
    update = rng.normal(scale=1e-3, size=317).astype(np.float32)
    update[5] = 1.0  # one large value: the rest of its block is mostly rounded away in a single round
    feedback = ErrorFeedback(tmp_path / "residual.npz")
    sent = np.zeros(317, np.float64)
    rounds = 50
    for _ in range(rounds):
        sent += dequantize_int8(feedback.compress(update, layout))
    without = dequantize_int8(quantize_int8(update)).astype(np.float64) * rounds
    error_with = np.abs(sent - update * rounds).max()
    error_without = np.abs(without - update * rounds).max()
    half_step = 0.5 * 1.0 / 127  # the largest scale: block 0, max |x| = 1.0
    assert error_with <= half_step * 1.01  # what is owed is one residual, however many rounds
    assert error_without > 30 * error_with  # without feedback the rounding error adds up each round
    again = ErrorFeedback(tmp_path / "residual.npz")  # a fresh ClientApp process reads it back
    np.testing.assert_array_equal(again.residuals["b"], feedback.residuals["b"])
    with pytest.raises(ValueError, match="the layout covers 10 values, the update has 317"):
        feedback.compress(update, [("a", 10)])


def test_error_feedback_of_another_run_is_not_used(tmp_path) -> None:
    path = tmp_path / "wire" / "residual.npz"  # the folder is made on the first save
    update = np.full(300, 1e-3, np.float32)
    update[0] = 1.0
    first = ErrorFeedback(path, tag="run-a")
    first.compress(update, [("a", 300)])
    assert np.abs(first.residuals["a"]).max() > 0
    np.testing.assert_array_equal(ErrorFeedback(path, tag="run-a").residuals["a"], first.residuals["a"])
    assert ErrorFeedback(path, tag="run-b").residuals == {}  # a new run at the same site starts from zero
    assert ErrorFeedback(path).residuals == {}
