"""Checks on a site's training reply before it may enter the average.

A reply is rejected, with a one-line reason, when its arrays are not exactly the groups the round trains, when a
shape or dtype differs from the global model, when a value is NaN or infinite, when its update (reply minus what
was sent) has an L2 norm above `federation.max_update_norm`, or when its metrics are unusable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

NUM_EXAMPLES = "num-examples"


def check_train_reply(
    arrays: Mapping[str, np.ndarray],
    metrics: Mapping[str, object],
    expected: Mapping[str, np.ndarray],
    max_update_norm: float | None = None,
) -> str | None:
    """None when the reply can be averaged, else why not. `expected` holds the sent values of the trained groups."""
    missing = [k for k in expected if k not in arrays]
    unexpected = [k for k in arrays if k not in expected]
    if missing or unexpected:
        return f"unexpected parameter names (missing {_few(missing)}, unexpected {_few(unexpected)})"
    for key, ref in expected.items():
        value = arrays[key]
        if value.shape != ref.shape or value.dtype != ref.dtype:
            return f"{key}: got {value.dtype}{list(value.shape)}, expected {ref.dtype}{list(ref.shape)}"
        if not np.all(np.isfinite(value)):
            return f"{key}: NaN or infinite values"
    if max_update_norm is not None:
        norm = update_norm(arrays, expected)
        if norm > max_update_norm:
            return f"update norm {norm:.4g} exceeds max_update_norm {max_update_norm:.4g}"
    return check_metrics(metrics)


def check_metrics(metrics: Mapping[str, object]) -> str | None:
    """None when `num-examples` is a positive count and every metric is finite."""
    count = metrics.get(NUM_EXAMPLES)
    if not isinstance(count, int | float) or isinstance(count, bool) or not count > 0:
        return f"metric {NUM_EXAMPLES} must be a positive number, got {count!r}"
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            return f"metric {key} is not finite"
    return None


def update_norm(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """L2 norm of (arrays - reference) over all entries, in float64."""
    total = sum(float(np.sum((arrays[k].astype(np.float64) - reference[k].astype(np.float64)) ** 2)) for k in reference)
    return math.sqrt(total)


def _few(keys: list[str], limit: int = 3) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
