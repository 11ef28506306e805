"""`evaluate_model`: cine-only predictions of a model state on a dataset (no augmentation, no LGE).

By default the prediction is the fused path `model.predict(cine_4ch, cine_sax)`, the one a release ships; the
ablation also scores a single cine sequence through its own head (`source="cine_4ch"` or `"cine_sax"`).
`evaluate_sources` scores several paths in one pass, each sequence encoded once: `evaluate_heads` every sequence
head of the full model (LGE included), e.g. to check that the training set is learned; a site's validation every
path the received state holds (`state_sources`). `EvalResult.report` is the report with bootstrap CIs that the
tables show.
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
from cccmr_model.errors import CccmrError, DataError
from cccmr_model.model import CCCMRModel, build_model
from cccmr_model.sequences import CINE_4CH, CINE_SAX, CINE_SEQUENCES, LGE_SAX

SOURCES = ("fusion", *CINE_SEQUENCES)  # what a release's model can score
EVAL_SOURCES = (*SOURCES, LGE_SAX)  # what the full training model can score


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
    if source in EVAL_SOURCES:
        return (f"encoders.{source}.", f"heads.{source}.")
    raise ValueError(f"unknown source {source!r}; expected one of {list(EVAL_SOURCES)}")


def holds_lge(state: Mapping[str, Tensor]) -> bool:
    """Whether `state` holds the LGE encoder (a training state; a release's does not)."""
    return any(k.startswith(f"encoders.{LGE_SAX}.") for k in state)


def eval_model(
    state: Mapping[str, Tensor], config: ExperimentConfig, device: torch.device, required: tuple[str, ...]
) -> CCCMRModel:
    """The model of `config` (with LGE only if the state has it) holding `state`, on `device`, in eval mode."""
    with_lge = holds_lge(state)
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
    return evaluate_sources(state, dataset, config, device, (source,))[source]


def evaluate_heads(
    state: Mapping[str, Tensor], dataset: Dataset, config: ExperimentConfig, device: str | torch.device = "cpu"
) -> dict[str, EvalResult]:
    """Per sequence head (LGE only if the state has it): scores, labels and mean cross-entropy on `dataset`, in eval
    mode without augmentation; the LGE head over the subjects with LGE only (left out when there are none)."""
    heads = (*CINE_SEQUENCES, LGE_SAX) if holds_lge(state) else CINE_SEQUENCES
    return evaluate_sources(state, dataset, config, device, heads)


def state_sources(state: Mapping[str, Tensor]) -> tuple[str, ...]:
    """The prediction paths (`EVAL_SOURCES` order) whose parameters `state` holds."""
    return tuple(s for s in EVAL_SOURCES if all(any(k.startswith(p) for k in state) for p in required_prefixes(s)))


def evaluate_sources(
    state: Mapping[str, Tensor],
    dataset: Dataset,
    config: ExperimentConfig,
    device: str | torch.device,
    sources: tuple[str, ...],
) -> dict[str, EvalResult]:
    """Per path in `sources` ("fusion" or a sequence head): scores, labels and mean cross-entropy on `dataset`, in
    one pass (each sequence encoded once), eval mode, no augmentation. The LGE head is scored over the subjects
    with LGE only and left out when there are none."""
    unknown = [s for s in sources if s not in EVAL_SOURCES]
    if unknown or not sources:
        raise ValueError(f"unknown sources {unknown}; expected some of {list(EVAL_SOURCES)}")
    absent = [s for s in sources if s not in state_sources(state)]
    if absent:
        raise CccmrError(f"the weights hold no parameters for {absent}")
    data = task_dataset(dataset, config.task)
    if len(data) == 0:
        raise DataError(f"no evaluation samples for task {config.task}")
    dev = resolve_device(device)
    required = tuple(dict.fromkeys(p for s in sources for p in required_prefixes(s)))
    model = eval_model(state, config, dev, required)
    encoded = tuple(dict.fromkeys(seq for s in sources for seq in _source_sequences(s)))
    autocast = autocast_for(dev, config)
    logits: dict[str, list[Tensor]] = {source: [] for source in sources}
    labels, has_lge = [], []
    with torch.inference_mode():
        for batch in eval_loader(data, config, dev):
            batch = to_device(batch, dev)
            with autocast():
                features = {seq: model.encode(seq, batch[seq]) for seq in encoded}  # seq -> B, D
                for source in sources:
                    if source == "fusion":
                        out = model.fuse(features[CINE_4CH], features[CINE_SAX])  # B, C
                    else:
                        out = model.heads[source](features[source])  # B, C
                    logits[source].append(out.float())
            labels.append(batch["label"])
            has_lge.append(batch["has_lge"].bool() if LGE_SAX in sources else torch.ones_like(batch["label"]).bool())
    all_labels, lge_rows = torch.cat(labels), torch.cat(has_lge)
    results = {}
    for source, parts in logits.items():
        rows = lge_rows if source == LGE_SAX else torch.ones_like(lge_rows)
        if rows.any():
            results[source] = _result(torch.cat(parts)[rows], all_labels[rows])
    return results


def _source_sequences(source: str) -> tuple[str, ...]:
    return (CINE_4CH, CINE_SAX) if source == "fusion" else (source,)


def _result(logits: Tensor, labels: Tensor) -> EvalResult:
    return EvalResult(
        scores=torch.softmax(logits, dim=1).cpu().numpy(),
        labels=labels.cpu().numpy().astype(np.int64),
        loss=float(F.cross_entropy(logits, labels).item()),
    )
