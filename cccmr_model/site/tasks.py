"""What a site does for one message, with plain tensors in and plain dicts out (no Flower types).

Training replies carry the trained parameter groups and aggregate metrics only: `num-examples` (training samples
seen, the FedAvg weight), losses, each head's training accuracy and AUC (`acc:<head>`, `auc:<head>`) with a
`constant:<head>` flag for a head that predicted a constant, throughput and (FIM) the learned sigmas, all of the
last local epoch. Evaluation replies carry the confusion
counts and the mean loss of the cine-only prediction on the site's validation split, each received sequence head's
validation accuracy, AUC and loss, and per-subject scores and labels (no identifiers) only when the run allows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.engine import train_phase
from cccmr_model.engine.evaluate import evaluate_sources, state_sources
from cccmr_model.engine.train import head_metrics
from cccmr_model.errors import CccmrError
from cccmr_model.metrics import calls, confusion_counts
from cccmr_model.model import build_model, phase_state
from cccmr_model.site.budget import train_dp_sgd
from cccmr_model.site.data import SiteData
from cccmr_model.wire import NUM_EXAMPLES


def full_state(received: Mapping[str, Tensor], config: ExperimentConfig) -> dict[str, Tensor]:
    """The model's full state with the received groups in place. Groups the server did not send are never used by
    the round's phase (it sends every group the phase trains or needs for its forward pass), so they are zeros:
    names and shapes come from a model built on the meta device, without the cost of initialising it."""
    with torch.device("meta"):
        own = build_model(config).state_dict()
    unexpected = sorted(set(received) - set(own))
    if unexpected:
        raise CccmrError(f"server sent parameters this config's model lacks, e.g. {unexpected[:3]}")
    return {k: received[k] if k in received else torch.zeros(v.shape, dtype=v.dtype) for k, v in own.items()}


def train_round(
    received: Mapping[str, Tensor],
    phase: str,
    data: SiteData,
    config: ExperimentConfig,
    *,
    epochs: int,
    lr_window: tuple[float, float],
    device: str,
    seed: int,
    ledger_path: Path | None = None,
) -> tuple[dict[str, Tensor], dict[str, int | float]]:
    """Train `phase` locally from the received groups; returns (the trained groups, reply metrics). With
    `privacy.dp_sgd.enabled`, DP-SGD spending the budget recorded in `ledger_path` (see client/privacy.py)."""
    dp_sgd = config.privacy.dp_sgd.enabled
    train = partial(train_dp_sgd, ledger_path=ledger_path) if dp_sgd else train_phase
    result = train(
        full_state(received, config),
        phase,
        data.train,
        config,
        epochs=epochs,
        lr_window=lr_window,
        device=device,
        seed=seed,
    )
    metrics: dict[str, int | float] = {NUM_EXAMPLES: int(result.num_examples)}
    metrics.update({k: float(v) for k, v in result.metrics.items()})
    return phase_state(result.state, phase), metrics


def evaluate_round(
    received: Mapping[str, Tensor], data: SiteData, config: ExperimentConfig, *, device: str, share_scores: bool
) -> dict[str, int | float | list[int] | list[float]]:
    """Cine-only prediction on the validation split: counts and loss (plus scores/labels when shared). Each sequence
    head whose encoder and head `received` holds (pretraining and FIM rounds send them) is scored in the same pass:
    `acc:<seq>`, `auc:<seq>` (when defined), `loss:<seq>` and `examples:<seq>` (the LGE head: subjects with LGE)."""
    results = evaluate_sources(received, data.val, config, device, state_sources(received))
    result = results["fusion"]
    predicted = calls(config.task, result.scores, config.evaluation.threshold)
    confusion = confusion_counts(result.labels, predicted, config.num_classes)
    metrics: dict[str, int | float | list[int] | list[float]] = {
        NUM_EXAMPLES: len(result.labels),
        "loss": float(result.loss),
        "confusion": confusion.ravel().tolist(),
    }
    for head, scored in results.items():
        if head != "fusion":
            validation = {**head_metrics(scored.scores, scored.labels), "loss": float(scored.loss)}
            metrics.update({f"{key}:{head}": value for key, value in validation.items()})
            metrics[f"examples:{head}"] = len(scored.labels)
    if share_scores:
        scores = result.scores[:, 1] if config.num_classes == 2 else result.scores.ravel()
        metrics["scores"] = [float(s) for s in scores]
        metrics["labels"] = [int(y) for y in result.labels]
    return metrics
