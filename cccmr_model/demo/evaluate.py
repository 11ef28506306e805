"""The demo's held-out evaluation: each release's cine-only predictor on the test set, with bootstrap CIs, and the
t-SNE of the test set's cine features from the server's global checkpoints after phase 1 and after phase 2."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.engine import evaluate_model
from cccmr_model.errors import CccmrError
from cccmr_model.metrics import positive_scores, report
from cccmr_model.release import load_release
from cccmr_model.run_folder import load_checkpoint

log = logging.getLogger("cccmr.demo")


@dataclass
class ReleaseEvaluation:
    name: str
    release: Path
    content_hash: str
    report: dict[str, Any]  # cccmr_model.metrics.report plus the loss
    scores: np.ndarray  # N, P(cardiomyopathy)
    labels: np.ndarray  # N


def open_test_set(data_root: Path, cache_dir: Path, config: ExperimentConfig) -> tuple[Dataset, dict[str, int]]:
    """Ingest the held-out DICOM export (cached) and open it; also the ingestion counts for the report."""
    from cccmr_model.data import CachedDataset, ingest_site

    report = ingest_site(data_root, cache_dir, config.data)
    if not report.ok:
        raise CccmrError(f"{data_root}: no usable test subjects (see {cache_dir / 'ingest-report.json'})")
    dataset = CachedDataset(cache_dir, data_config=config.data)
    counts = {"subjects": report.subjects, "usable": len(report.usable), "rejected": len(report.rejected_subjects)}
    return dataset, counts


def evaluate_release(name: str, release_dir: Path, dataset: Dataset) -> ReleaseEvaluation:
    """Load and verify a release, predict the test set from cine only, and compute metrics with bootstrap CIs."""
    release = load_release(release_dir)
    config = release.config
    result = evaluate_model(release.model.state_dict(), dataset, config, "cpu")
    evaluation = report(config.task, result.scores, result.labels, config.evaluation)
    evaluation["loss"] = result.loss
    log.info("%s on the test set: %s", name, _short(evaluation["metrics"]))
    return ReleaseEvaluation(name, release_dir, release.content_hash, evaluation, positive_scores(result.scores),
                             result.labels)  # fmt: skip


def checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """The full global model of one server checkpoint (`cccmr_model.run_folder`), as tensors."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in load_checkpoint(path).state.items()}


def phase_end_rounds(history: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The server round that ended each phase in a run's history ({"pretrain": 2, "fim": 4, ...})."""
    ends: dict[str, int] = {}
    for record in history:
        ends[str(record["phase"])] = int(record["round"])
    return ends


def _short(metrics: Mapping[str, Mapping[str, float]]) -> str:
    return ", ".join(f"{k} {v['value']:.3f}" for k, v in metrics.items())
