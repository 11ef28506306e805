"""Checks on a site's replies before they may enter the average or the global metrics.

A training reply is rejected, with a one-line reason, when its arrays are not exactly the groups the round trains,
when a shape or dtype differs from the global model, when a value is NaN or infinite, when its update (reply minus
what was sent) has an L2 norm above the round's bound (`update_bound`), or when an allow-listed metric has the wrong
type; metrics that are not on the allow-list are dropped (`split_metrics`). An evaluation reply is rejected unless
its confusion counts are non-negative integers summing to `num-examples`, its shared scores and labels (if any)
match them in length, range and per-class counts, and its per-head metrics (if any) are in range; the evaluation a
train reply carries (`eval:`) is checked the same way, apart from the training part. The strategy bounds each
claimed `num-examples` across the round's replies, training and evaluation apart (`examples_bound`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence

import numpy as np

from cccmr_model.model import FIM_TERMS
from cccmr_model.sequences import SEQUENCES
from cccmr_model.wire import EVAL_PREFIX, NUM_EXAMPLES

HEADS = (*SEQUENCES, "fusion")
# Every scalar metric an honest training reply carries (cccmr_model/site/tasks.py and timing.py, the engine, DP-SGD).
TRAIN_METRICS = frozenset(
    {NUM_EXAMPLES, "loss", "lr", "epochs", "samples_per_s"}
    | {"train_seconds", "task_seconds", "startup_seconds", "evaluate_seconds"}
    | {"dp_epsilon", "dp_delta", "dp_steps", "dp_stopped", "cls:fusion"}
    | {f"cls:{seq}" for seq in SEQUENCES}
    | set(FIM_TERMS)
    | {f"sigma:{term}" for term in FIM_TERMS}
    | {f"{kind}:{head}" for kind in ("acc", "auc", "constant") for head in HEADS}
)
# Per sequence head, what an evaluation reply may add (each head the evaluated message held): see `check_head_metrics`.
HEAD_EVAL_KINDS = ("acc", "auc", "loss", "examples")
EVAL_METRICS = frozenset(
    {NUM_EXAMPLES, "loss", "confusion", "scores", "labels"}
    | {f"{kind}:{seq}" for kind in HEAD_EVAL_KINDS for seq in SEQUENCES}
)
# A train reply may also carry the evaluation its order asked for (`eval:<evaluation metric>`, checked apart).
TRAIN_REPLY_METRICS = TRAIN_METRICS | {EVAL_PREFIX + name for name in EVAL_METRICS}
INT64 = 2**63
SITE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # what a reply may call its site


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
    """None when `num-examples` is a positive integer and every metric is a finite scalar (training replies)."""
    reason = _check_count(metrics)
    if reason is not None:
        return reason
    for key, value in metrics.items():
        if not _is_finite_number(value):
            return f"metric {key} is not a finite number"
    return None


def split_metrics(metrics: Mapping[str, object], allowed: frozenset[str]) -> tuple[dict[str, object], list[str]]:
    """(the allow-listed metrics, the names of the others, sorted)."""
    kept = {k: v for k, v in metrics.items() if k in allowed}
    return kept, sorted(k for k in metrics if k not in allowed)


def check_eval_metrics(metrics: Mapping[str, object], num_classes: int) -> str | None:
    """None when an evaluation reply's counts, loss and shared scores/labels are consistent, else why not."""
    reason = _check_count(metrics)
    if reason is not None:
        return reason
    count = int(metrics[NUM_EXAMPLES])
    if not _is_finite_number(metrics.get("loss")):
        return "metric loss is not a finite number"
    confusion = metrics.get("confusion")
    if not _is_list_of(confusion, int) or len(confusion) != num_classes**2 or min(confusion) < 0:
        return f"confusion must be {num_classes**2} non-negative integer counts"
    if sum(confusion) != count:
        return f"confusion counts sum to {sum(confusion)}, not num-examples {count}"
    if ("scores" in metrics) != ("labels" in metrics):
        return "scores and labels must be shared together"
    if "labels" in metrics:
        reason = _check_scores(metrics["scores"], metrics["labels"], confusion, num_classes)
        if reason is not None:
            return reason
    return check_head_metrics(metrics)


def check_head_metrics(metrics: Mapping[str, object]) -> str | None:
    """None when every sequence head's validation metrics are consistent: `examples:<seq>` a positive count no larger
    than num-examples, given with `loss:<seq>` (finite, >= 0) and `acc:<seq>` (in [0, 1]); `auc:<seq>` (in [0, 1])
    only with them."""
    count = int(metrics[NUM_EXAMPLES])
    for seq in SEQUENCES:
        given = {kind for kind in HEAD_EVAL_KINDS if f"{kind}:{seq}" in metrics}
        if not given:
            continue
        if not {"examples", "loss", "acc"} <= given:
            return f"head {seq}: examples, loss and acc must be given together, got {sorted(given)}"
        examples = metrics[f"examples:{seq}"]
        if not isinstance(examples, int) or isinstance(examples, bool) or not 0 < examples <= count:
            return f"metric examples:{seq} must be an integer in 1..{count}, got {short_repr(examples)}"
        loss = metrics[f"loss:{seq}"]
        if not _is_finite_number(loss) or loss < 0:
            return f"metric loss:{seq} must be a finite number >= 0, got {short_repr(loss)}"
        for kind in ("acc", "auc"):
            value = metrics.get(f"{kind}:{seq}", 0.0)
            if not _is_finite_number(value) or not 0.0 <= value <= 1.0:
                return f"metric {kind}:{seq} must lie in [0, 1], got {short_repr(value)}"
    return None


def update_norm(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """L2 norm of (arrays - reference) over all entries, in float64."""
    total = sum(float(np.sum((arrays[k].astype(np.float64) - reference[k].astype(np.float64)) ** 2)) for k in reference)
    return math.sqrt(total)


def l2_norm(arrays: Mapping[str, np.ndarray]) -> float:
    """L2 norm over all entries of `arrays`, in float64."""
    return math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in arrays.values()))


def update_bound(sent: Mapping[str, np.ndarray], max_norm: float | None, max_ratio: float | None) -> float | None:
    """The round's update-norm bound: `max_norm` when set, else `max_ratio` x max(1, L2 norm of the sent groups)."""
    if max_norm is not None:
        return float(max_norm)
    if max_ratio is not None:
        return float(max_ratio) * max(1.0, l2_norm(sent))
    return None


def examples_bound(claims: Sequence[int], max_examples: int | None, max_ratio: float) -> float:
    """The largest `num-examples` a reply of the round may claim: `max_examples` when set, else `max_ratio` x the
    lower median of the round's claims (with two sites: the smaller one)."""
    if max_examples is not None:
        return float(max_examples)
    return max_ratio * statistics.median_low(claims) if claims else math.inf


def _check_count(metrics: Mapping[str, object]) -> str | None:
    count = metrics.get(NUM_EXAMPLES)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 < count < INT64:
        return f"metric {NUM_EXAMPLES} must be a positive integer, got {short_repr(count)}"
    return None


def _check_scores(scores: object, labels: object, confusion: Sequence[int], num_classes: int) -> str | None:
    """Shared per-subject labels match the confusion rows; scores are probabilities, one (binary) or C per label."""
    count = sum(confusion)
    if not _is_list_of(labels, int) or len(labels) != count:
        return f"labels must be {count} integers (num-examples)"
    if min(labels) < 0 or max(labels) >= num_classes:
        return f"labels must lie in 0..{num_classes - 1}"
    per_class = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist()
    rows = np.asarray(confusion, dtype=np.int64).reshape(num_classes, num_classes).sum(axis=1).tolist()
    if per_class != rows:
        return f"labels count {per_class} per class, the confusion rows {rows}"
    width = 1 if num_classes == 2 else num_classes
    if not _is_list_of(scores, int | float) or len(scores) != count * width:
        return f"scores must be {count * width} numbers"
    if not all(_is_finite_number(s) and 0.0 <= s <= 1.0 for s in scores):
        return "scores must be probabilities in [0, 1]"
    return None


def _is_finite_number(value: object) -> bool:
    """A finite float or an int within int64 (what the wire carries), bools excluded."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -INT64 <= value < INT64
    return isinstance(value, float) and math.isfinite(value)


def _is_list_of(value: object, kind: type | tuple[type, ...]) -> bool:
    """A non-empty list of `kind` values (bools excluded)."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    )


def short_repr(value: object, limit: int = 40) -> str:
    """repr(value) cut to `limit` characters: for names and values a reply chose, in logs and the history."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _few(keys: list[str], limit: int = 3) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
