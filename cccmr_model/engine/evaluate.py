"""`evaluate_model`: cine-only predictions of a model state on a dataset (no augmentation, no LGE).

By default the prediction is the fused path `model.predict(cine_4ch, cine_sax)`, the one a release ships; the
ablation also scores a single cine sequence through its own head (`source="cine_4ch"` or `"cine_sax"`).
`evaluate_heads` scores every sequence head of the full model (LGE included) in one pass, e.g. to check that the
training set is learned. `EvalResult.report` is the report with bootstrap CIs that the tables show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cccmr_model import metrics
from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.engine.datasets import task_dataset
from cccmr_model.engine.loading import model_holding, resolve_device, to_device, without_pretrained
from cccmr_model.engine.train import autocast_for
from cccmr_model.errors import DataError
from cccmr_model.model import CCCMRModel, build_model
from cccmr_model.sequences import CINE_4CH, CINE_SAX, CINE_SEQUENCES, LGE_SAX

SOURCES = ("fusion", *CINE_SEQUENCES)


@dataclass
class EvalResult:
    scores: np.ndarray  # N, C softmax probabilities
    labels: np.ndarray  # N, int
    loss: float  # mean cross-entropy

    def report(self, config: ExperimentConfig) -> dict[str, Any]:
        """The report with bootstrap CIs (the config's `evaluation` settings) of these scores, plus the loss."""
        return {**metrics.report(config.task, self.scores, self.labels, config.evaluation), "loss": self.loss}


def required_prefixes(source: str) -> tuple[str, ...]:
    """The parameter prefixes a prediction path reads: what a state must hold to be evaluated that way."""
    if source == "fusion":
        return (f"encoders.{CINE_4CH}.", f"encoders.{CINE_SAX}.", "fusion.")
    if source in CINE_SEQUENCES:
        return (f"encoders.{source}.", f"heads.{source}.")
    raise ValueError(f"unknown source {source!r}; expected one of {list(SOURCES)}")


def eval_model(
    state: Mapping[str, Tensor], config: ExperimentConfig, device: torch.device, required: tuple[str, ...]
) -> CCCMRModel:
    """The model of `config` (with LGE only if the state has it) holding `state`, on `device`, in eval mode."""
    with_lge = any(k.startswith(f"encoders.{LGE_SAX}.") for k in state)
    model = model_holding(state, lambda: build_model(without_pretrained(config), with_lge=with_lge), required)
    return model.to(device).eval()


def eval_loader(data: Dataset, config: ExperimentConfig, device: torch.device) -> DataLoader:
    """Sequential batches, no augmentation."""
    return DataLoader(
        data,
        batch_size=config.train.batch_size,
        shuffle=False,
        num_workers=config.train.num_workers,
        pin_memory=device.type == "cuda",
    )


def evaluate_model(
    state: Mapping[str, Tensor],
    dataset: Dataset,
    config: ExperimentConfig,
    device: str | torch.device = "cpu",
    *,
    source: str = "fusion",
) -> EvalResult:
    """Scores (N, C), labels (N,) and mean cross-entropy of `state` on `dataset` (task view of the config)."""
    data = task_dataset(dataset, config.task)
    if len(data) == 0:
        raise DataError(f"no evaluation samples for task {config.task}")
    dev = resolve_device(device)
    model = eval_model(state, config, dev, required_prefixes(source))
    autocast = autocast_for(dev, config)
    logits, labels = [], []
    with torch.inference_mode():
        for batch in eval_loader(data, config, dev):
            batch = to_device(batch, dev)
            with autocast():
                if source == "fusion":
                    out = model.predict(batch[CINE_4CH], batch[CINE_SAX])  # B, C
                else:
                    out = model.heads[source](model.encode(source, batch[source]))  # B, C
            logits.append(out.float())
            labels.append(batch["label"])
    all_logits, all_labels = torch.cat(logits), torch.cat(labels)
    loss = F.cross_entropy(all_logits, all_labels).item()
    scores = torch.softmax(all_logits, dim=1).cpu().numpy()
    return EvalResult(scores=scores, labels=all_labels.cpu().numpy().astype(np.int64), loss=float(loss))


def evaluate_heads(
    state: Mapping[str, Tensor], dataset: Dataset, config: ExperimentConfig, device: str | torch.device = "cpu"
) -> dict[str, EvalResult]:
    """Per sequence head (LGE only if the state has it): scores, labels and mean cross-entropy on `dataset`, in eval
    mode without augmentation; the LGE head over the subjects with LGE only (left out when there are none)."""
    data = task_dataset(dataset, config.task)
    if len(data) == 0:
        raise DataError(f"no evaluation samples for task {config.task}")
    dev = resolve_device(device)
    model = eval_model(state, config, dev, ())
    autocast = autocast_for(dev, config)
    logits: dict[str, list[Tensor]] = {}
    labels, has_lge = [], []
    with torch.inference_mode():
        for batch in eval_loader(data, config, dev):
            batch = to_device(batch, dev)
            with autocast():
                output = model(batch)
            for seq, out in output.logits.items():
                logits.setdefault(seq, []).append(out.float())
            labels.append(batch["label"])
            has_lge.append(batch["has_lge"].bool())
    all_labels, lge_rows = torch.cat(labels), torch.cat(has_lge)
    results = {}
    for seq, parts in logits.items():
        rows = lge_rows if seq == LGE_SAX else torch.ones_like(lge_rows)
        if rows.any():
            results[seq] = _result(torch.cat(parts)[rows], all_labels[rows])
    return results


def _result(logits: Tensor, labels: Tensor) -> EvalResult:
    return EvalResult(
        scores=torch.softmax(logits, dim=1).cpu().numpy(),
        labels=labels.cpu().numpy().astype(np.int64),
        loss=float(F.cross_entropy(logits, labels).item()),
    )
