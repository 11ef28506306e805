"""Global evaluation metrics computed exactly from the sites' confusion counts (and pooled scores when shared),
and the release's reports with bootstrap confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.metrics import confusion_metrics, confusion_report, report, roc_auc
from cccmr_model.sequences import SEQUENCES
from cccmr_model.wire import NUM_EXAMPLES


def global_eval_metrics(site_metrics: Mapping[str, Mapping[str, object]], num_classes: int) -> dict[str, float]:
    """Pool per-site `confusion` (row = true class, column = predicted, flattened) and `loss` into global metrics.

    Counts add exactly, so the global accuracy, sensitivity and specificity equal those of one evaluation on all
    sites' validation subjects. With shared `scores`/`labels` the pooled AUC is added; per sequence head the sites
    scored, `head_eval_metrics`.
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    loss_sum, count = 0.0, 0
    for metrics in site_metrics.values():
        confusion += np.asarray(metrics["confusion"], dtype=np.int64).reshape(num_classes, num_classes)
        n = int(metrics[NUM_EXAMPLES])
        loss_sum += float(metrics["loss"]) * n
        count += n
    out = {NUM_EXAMPLES: count, "loss": loss_sum / count if count else float("nan")}
    out.update(confusion_metrics(confusion))
    auc = pooled_auc(site_metrics, num_classes)
    if auc is not None:
        out["auc"] = auc
    out.update(head_eval_metrics(site_metrics))
    return out


def head_eval_metrics(site_metrics: Mapping[str, Mapping[str, object]]) -> dict[str, float]:
    """Per sequence head the sites scored: `loss:<seq>` (exact mean over their subjects), `acc:<seq>` (exact, the
    head's accuracy is a count), `auc:<seq>` (the sites' AUCs averaged with their subject counts as weights: per-site
    AUCs do not pool exactly) and `examples:<seq>`."""
    out: dict[str, float] = {}
    for seq in SEQUENCES:
        scored = [m for m in site_metrics.values() if f"examples:{seq}" in m]
        if not scored:
            continue
        weights = np.asarray([int(m[f"examples:{seq}"]) for m in scored], dtype=np.float64)
        for kind in ("loss", "acc"):
            out[f"{kind}:{seq}"] = float(np.average([float(m[f"{kind}:{seq}"]) for m in scored], weights=weights))
        with_auc = [(float(m[f"auc:{seq}"]), w) for m, w in zip(scored, weights, strict=True) if f"auc:{seq}" in m]
        if with_auc:
            out[f"auc:{seq}"] = float(np.average([a for a, _ in with_auc], weights=[w for _, w in with_auc]))
        out[f"examples:{seq}"] = int(weights.sum())
    return out


# A head whose training AUC reaches TRAIN_FIT while its validation AUC stays at or below NEAR_CHANCE has learned its
# training subjects, not the task (e.g. training without augmentation). On ~20 validation subjects an AUC of 0.6 is
# within chance; the pair is a warning, not a verdict.
TRAIN_FIT, NEAR_CHANCE = 0.9, 0.6


def memorising_heads(train_global: Mapping[str, object], evaluate_global: Mapping[str, object]) -> dict[str, dict]:
    """The sequence heads of one model whose training AUC (`train_global`, the round that trained it) is at least
    `TRAIN_FIT` and whose validation AUC (`evaluate_global`, its evaluation) is at most `NEAR_CHANCE`:
    {seq: {"train_auc", "val_auc"}}."""
    found = {}
    for seq in SEQUENCES:
        train, val = train_global.get(f"auc:{seq}"), evaluate_global.get(f"auc:{seq}")
        if not (isinstance(train, int | float) and isinstance(val, int | float)):
            continue  # a head not trained in that round (fusion) or not scored
        if train >= TRAIN_FIT and val <= NEAR_CHANCE:
            found[seq] = {"train_auc": float(train), "val_auc": float(val)}
    return found


def pooled_auc(site_metrics: Mapping[str, Mapping[str, object]], num_classes: int) -> float | None:
    """AUC over every site's shared subject scores (one-vs-rest macro for subtypes); None when not computable."""
    shared = [m for m in site_metrics.values() if "scores" in m and "labels" in m]
    if not shared or len(shared) != len(site_metrics):
        return None
    labels = np.concatenate([np.asarray(m["labels"], dtype=np.int64) for m in shared])
    scores = np.concatenate([np.asarray(m["scores"], dtype=np.float64) for m in shared])
    value = roc_auc(scores if num_classes == 2 else scores.reshape(len(labels), num_classes), labels)
    return None if math.isnan(value) else value


def release_reports(site_metrics: Mapping[str, Mapping[str, object]], config: ExperimentConfig) -> dict[str, Any]:
    """Table-1 reports with bootstrap CIs for the release: {"pooled": report, "sites": {site: report}}.

    A site that shared per-subject scores gets `report` on them (AUC included); otherwise `confusion_report` on its
    confusion counts (AUC unavailable). The pooled report uses the scores only when every site shared them.
    """
    task, evaluation, num_classes = config.task, config.evaluation, config.num_classes

    def report_of(metrics: Sequence[Mapping[str, object]]) -> dict[str, Any]:
        if all("scores" in m and "labels" in m for m in metrics):
            labels = np.concatenate([np.asarray(m["labels"], dtype=np.int64) for m in metrics])
            scores = np.concatenate([np.asarray(m["scores"], dtype=np.float64) for m in metrics])
            scores = scores if num_classes == 2 else scores.reshape(len(labels), num_classes)
            out = report(task, scores, labels, evaluation)
        else:
            shape = (num_classes, num_classes)
            confusion = sum(np.asarray(m["confusion"], dtype=np.int64).reshape(shape) for m in metrics)
            out = confusion_report(task, confusion, evaluation)
        count = max(sum(int(m[NUM_EXAMPLES]) for m in metrics), 1)
        losses = [math.nan if m["loss"] is None else float(m["loss"]) for m in metrics]  # history: NaN as null
        out["loss"] = sum(x * int(m[NUM_EXAMPLES]) for x, m in zip(losses, metrics, strict=True)) / count
        return out

    ordered = dict(sorted(site_metrics.items()))
    return {"pooled": report_of(list(ordered.values())), "sites": {site: report_of([m]) for site, m in ordered.items()}}
