"""A model that cannot learn must not go unnoticed: from scratch, without augmentation or weight decay, the tiny
model fits 16 phantom subjects (training accuracy 1.0 in eval mode, every sequence head) within a bounded number
of epochs. Measured with the heart-centred crop: train seeds 0-3 need 10-16 epochs (12 for seed 0, this test's),
about 0.5 s an epoch on one core; the bound leaves a margin."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from cccmr_model.config import load_config
from cccmr_model.data import CachedDataset, ingest_site
from cccmr_model.engine import train_phase
from cccmr_model.engine.evaluate import evaluate_heads
from cccmr_model.phantom.cohort import generate_cohort

EPOCHS = 20  # the bound


def no_augmentation() -> list[str]:
    """Overrides that switch every augmentation off (each setting false or 0, whatever the settings are)."""
    augment = load_config("tiny").train.augment
    sets = [f"train.augment.{f.name}={'false' if f.type in (bool, 'bool') else 0}" for f in fields(augment)]
    return [*sets, "train.resample_factor=1", "train.weight_decay=0"]


@pytest.fixture(scope="module")
def config():
    return load_config("tiny", no_augmentation())


@pytest.fixture(scope="module")
def training_set(tmp_path_factory: pytest.TempPathFactory, config) -> CachedDataset:
    root = tmp_path_factory.mktemp("learns")
    generate_cohort(root / "cohort", ["anzhen"], 16, seed=0, size="tiny", workers=1)
    report = ingest_site(root / "cohort" / "anzhen", root / "cache", config.data, workers=1)
    assert len(report.usable) == 16
    return CachedDataset(root / "cache", data_config=config.data)


def training_accuracy(state, dataset, config) -> dict[str, float]:
    """Per sequence head: accuracy in eval mode on the un-augmented training set."""
    heads = evaluate_heads(state, dataset, config)
    return {head: float(np.mean(r.scores.argmax(axis=1) == r.labels)) for head, r in heads.items()}


@pytest.mark.slow
def test_tiny_model_fits_its_training_set(config, training_set) -> None:
    labels = [int(training_set[i]["label"]) for i in range(len(training_set))]
    assert 0 < sum(labels) < len(labels)  # both classes
    result = train_phase(None, "pretrain", training_set, config, epochs=EPOCHS, seed=0)
    accuracy = training_accuracy(result.state, training_set, config)
    assert set(accuracy) == {"cine_4ch", "cine_sax", "lge_sax"}
    assert accuracy == {head: 1.0 for head in accuracy}, f"after {EPOCHS} epochs: {accuracy}, {result.metrics}"
