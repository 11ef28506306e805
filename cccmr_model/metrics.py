"""Classification metrics with Efron bootstrap confidence intervals (paper section 3.2, Table 1).

Screening (healthy 0 vs cardiomyopathy 1): accuracy, F1, sensitivity, specificity, AUC. Subtyping (five ESC
subtypes): accuracy, macro-F1, per-class recall and one-vs-rest AUC. Confidence intervals are percentile intervals of
the metric over bootstrap resamples; each resample is drawn within each class (stratified), so every resample
holds every class and the AUC is always defined. Results are plain dicts for JSON and a Markdown table laid out
like Table 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import rankdata

if TYPE_CHECKING:
    from cccmr_model.config.schema import EvaluationConfig

SUBTYPE_NAMES: tuple[str, ...] = ("HCM", "DCM", "NDLVC", "RCM", "ARVC")  # ESC 2023; subtype index = position
SCREENING_CLASSES: tuple[str, ...] = ("healthy", "cardiomyopathy")  # label index = position
SCREENING_COLUMNS: dict[str, str] = {
    "accuracy": "Accuracy",
    "f1": "F1-score",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "auc": "AUC",
}
MetricFn = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def class_names(task: str) -> tuple[str, ...]:
    """The classes a task's model outputs, in output order."""
    if task == "screening":
        return SCREENING_CLASSES
    if task == "subtyping":
        return SUBTYPE_NAMES
    raise ValueError(f"unknown task {task!r}")


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of `scores` for positives `labels == 1` (Mann-Whitney U, ties counted half); NaN if a class is absent."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """`binary_auc` of P(cardiomyopathy) for (N,) or (N, 2) scores; for (N, C > 2) the one-vs-rest macro mean over
    the C classes. NaN when a class is absent."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim == 1 or scores.shape[1] == 2:
        return binary_auc(positive_scores(scores), labels)
    return float(np.mean([binary_auc(scores[:, cls], labels == cls) for cls in range(scores.shape[1])]))


def _safe_div(num: float, den: float) -> float:
    return float(num / den) if den > 0 else math.nan


def positive_scores(scores: np.ndarray) -> np.ndarray:
    """P(cardiomyopathy): column 1 of (N, 2) probabilities, or the (N,) array as given."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores[:, 1] if scores.ndim == 2 else scores


def calls(task: str, scores: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The predicted class per subject (int64): screening 1 (cardiomyopathy) when P(cardiomyopathy) >= `threshold`,
    else 0; subtyping the most probable subtype. `scores` as `positive_scores` reads them (screening) or (N, C)."""
    if task == "screening":
        return (positive_scores(scores) >= threshold).astype(np.int64)
    if task == "subtyping":
        return np.asarray(scores).argmax(axis=1).astype(np.int64)
    raise ValueError(f"unknown task {task!r}")


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts, row = true class, column = predicted class."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    for name, values in (("labels", labels), ("predicted", predicted)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must be class indices in [0, {num_classes})")
    flat = np.bincount(labels * num_classes + predicted, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def confusion_metrics(confusion: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy; for two classes also sensitivity (class 1) and specificity (class 0)."""
    confusion = np.asarray(confusion)
    total = confusion.sum()
    per_class = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), per_class, out=np.full(len(per_class), np.nan), where=per_class > 0)
    out = {
        "accuracy": float(np.trace(confusion) / total) if total else float("nan"),
        "balanced_accuracy": float(np.nanmean(recall)) if np.any(per_class > 0) else float("nan"),
    }
    if confusion.shape == (2, 2):
        out["specificity"], out["sensitivity"] = float(recall[0]), float(recall[1])
    return out


def screening_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, F1, sensitivity, specificity (call: P(cardiomyopathy) >= threshold) and AUC."""
    p = positive_scores(scores)
    y = np.asarray(labels).astype(bool)
    (tn, fp), (fn, tp) = confusion_counts(y, calls("screening", p, threshold), 2).tolist()
    return {
        "accuracy": _safe_div(tp + tn, len(y)),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "sensitivity": _safe_div(tp, tp + fn),
        "specificity": _safe_div(tn, tn + fp),
        "auc": binary_auc(p, y),
    }


def subtyping_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and macro AUC, plus recall and one-vs-rest AUC per subtype (classes present only)."""
    scores = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    pred = calls("subtyping", scores)
    confusion = confusion_counts(y, pred, scores.shape[1])
    out: dict[str, float] = {"accuracy": float((pred == y).mean())}
    f1s, aucs = [], []
    for cls in range(scores.shape[1]):
        name = SUBTYPE_NAMES[cls] if cls < len(SUBTYPE_NAMES) else str(cls)
        tp = int(confusion[cls, cls])
        fp, fn = int(confusion[:, cls].sum()) - tp, int(confusion[cls].sum()) - tp
        if tp + fn > 0:
            f1s.append(_safe_div(2 * tp, 2 * tp + fp + fn))
            out[f"recall_{name}"] = _safe_div(tp, tp + fn)
            out[f"auc_{name}"] = binary_auc(scores[:, cls], y == cls)
            aucs.append(out[f"auc_{name}"])
    out["macro_f1"] = float(np.mean(f1s)) if f1s else math.nan
    out["macro_auc"] = float(np.nanmean(aucs)) if aucs and not np.all(np.isnan(aucs)) else math.nan
    return out


def metric_fn(task: str, threshold: float = 0.5) -> MetricFn:
    if task == "screening":
        return lambda s, y: screening_metrics(s, y, threshold)
    if task == "subtyping":
        return subtyping_metrics
    raise ValueError(f"unknown task {task!r}")


def stratified_bootstrap_indices(labels: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """(resamples, N) indices: per resample, each class's n_c members drawn with replacement from that class.

    Draw order (what a reimplementation must follow to match): one generator `np.random.default_rng(seed)`; for each
    class in ascending order, `rng.integers(0, n_c, size=(resamples, n_c))` indexes that class's members (ascending
    index order); the class blocks are concatenated in class order.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    blocks = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        blocks.append(members[rng.integers(0, len(members), size=(resamples, len(members)))])
    return np.concatenate(blocks, axis=1)


def bootstrap_ci(
    fn: MetricFn,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """{metric: {value, ci_low, ci_high}}: the metric on all data and Efron's percentile interval over resamples."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    point = fn(scores, labels)
    draws: dict[str, list[float]] = {name: [] for name in point}
    for idx in stratified_bootstrap_indices(labels, resamples, seed):
        values = fn(scores[idx], labels[idx])
        for name in point:
            draws[name].append(values.get(name, math.nan))
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for name, value in point.items():
        sample = np.asarray(draws[name], dtype=np.float64)
        sample = sample[~np.isnan(sample)]
        low, high = np.quantile(sample, [alpha, 1.0 - alpha]) if len(sample) else (math.nan, math.nan)
        out[name] = {"value": float(value), "ci_low": float(low), "ci_high": float(high)}
    return out


def evaluation_report(
    task: str,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """JSON-ready report: task, counts per class, bootstrap settings and every metric with its interval."""
    fn = metric_fn(task, threshold)
    return _report(task, fn, scores, labels, resamples=resamples, confidence=confidence, seed=seed, threshold=threshold)


def _report(
    task: str,
    fn: MetricFn,
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    resamples: int,
    confidence: float,
    seed: int,
    threshold: float,
) -> dict[str, Any]:
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    return {
        "task": task,
        "n": len(labels),
        "class_counts": {str(int(c)): int(n) for c, n in zip(classes, counts, strict=True)},
        "bootstrap": {"resamples": resamples, "confidence": confidence, "seed": seed, "stratified": True},
        "threshold": threshold if task == "screening" else None,
        "metrics": bootstrap_ci(fn, scores, labels, resamples=resamples, confidence=confidence, seed=seed),
    }


def outcomes_from_confusion(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predicted) per subject, expanded from (C, C) counts (row = true class, column = predicted).

    Subjects come in row-major order of the counts: all of class 0 (predicted 0, then 1, ...), then class 1, ...
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    classes = np.arange(confusion.shape[0])
    labels = np.repeat(np.repeat(classes, confusion.shape[1]), confusion.ravel())
    predicted = np.repeat(np.tile(classes, confusion.shape[0]), confusion.ravel())
    return labels, predicted


def count_report(
    task: str,
    confusion: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """`evaluation_report` from confusion counts alone: every metric that depends only on (label, predicted class).

    The counts are expanded to per-subject outcomes and bootstrapped like per-subject results (stratified by true
    class), so the intervals are those `evaluation_report` gives for the same calls. AUC needs per-subject scores: it
    is left out and named in `unavailable`. `threshold` is the one the sites used for their calls (recorded only).
    """
    labels, predicted = outcomes_from_confusion(confusion)
    one_hot = np.eye(np.asarray(confusion).shape[0])[predicted]  # N, C: the call as a score
    fn = metric_fn(task, 0.5)

    def without_auc(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return {k: v for k, v in fn(scores, y).items() if "auc" not in k}

    report = _report(
        task, without_auc, one_hot, labels, resamples=resamples, confidence=confidence, seed=seed, threshold=threshold
    )
    return {**report, "unavailable": {"auc": "needs per-subject scores; only confusion counts were shared"}}


def report(task: str, scores: np.ndarray, labels: np.ndarray, evaluation: EvaluationConfig) -> dict[str, Any]:
    """`evaluation_report` at a run's evaluation settings (bootstrap resamples, confidence, seed, threshold)."""
    return evaluation_report(task, scores, labels, **_settings(evaluation))


def confusion_report(task: str, confusion: np.ndarray, evaluation: EvaluationConfig) -> dict[str, Any]:
    """`count_report` at a run's evaluation settings: the report when only confusion counts were shared."""
    return count_report(task, confusion, **_settings(evaluation))


def _settings(evaluation: EvaluationConfig) -> dict[str, Any]:
    return {
        "resamples": evaluation.bootstrap_resamples,
        "confidence": evaluation.confidence,
        "seed": evaluation.seed,
        "threshold": evaluation.threshold,
    }


def _cell(entry: Mapping[str, float]) -> str:
    if math.isnan(entry["value"]):
        return "n/a"
    return f"{entry['value']:.3f} ({entry['ci_low']:.3f}, {entry['ci_high']:.3f})"


def table_columns(task: str, reports: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Metric key -> column title: Table 1's columns (screening); accuracy, macro-F1/AUC, per class (subtyping)."""
    if task == "screening":
        return dict(SCREENING_COLUMNS)
    columns = {"accuracy": "Accuracy", "macro_f1": "Macro-F1", "macro_auc": "Macro-AUC"}
    keys = {key for report in reports.values() for key in report["metrics"]}
    for name in SUBTYPE_NAMES:
        for prefix, title in (("recall", "Recall"), ("auc", "AUC")):
            if f"{prefix}_{name}" in keys:
                columns[f"{prefix}_{name}"] = f"{title} {name}"
    return columns


def markdown_table(
    reports: Mapping[str, Mapping[str, Any]],
    *,
    first_column: str = "Method",
    leading: Mapping[str, Sequence[str]] | None = None,
    leading_columns: Sequence[str] = (),
) -> str:
    """One row per named report, cells `value (low, high)`, laid out like the paper's Table 1.

    `leading_columns` / `leading[name]` add cells before the metrics (Table 2's check marks per row).
    """
    if not reports:
        raise ValueError("markdown_table needs at least one report")
    first = next(iter(reports.values()))
    task, confidence = first["task"], first["bootstrap"]["confidence"]
    columns = table_columns(task, reports)
    header = [first_column, *leading_columns, *columns.values()]
    lines = [
        f"Metrics (CI: {confidence:.0%}, {first['bootstrap']['resamples']} stratified bootstrap resamples)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for name, report in reports.items():
        marks = list((leading or {}).get(name, [""] * len(leading_columns)))
        cells = [_cell(report["metrics"][key]) if key in report["metrics"] else "n/a" for key in columns]
        lines.append("| " + " | ".join([name, *marks, *cells]) + " |")
    return "\n".join(lines) + "\n"


def json_safe(value: Any) -> Any:
    """`value` with NaN/inf floats replaced by None (strict JSON) and numpy scalars made plain."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
