"""Shared engine-test fixtures: a config smaller than tiny.yaml (32 px, 4 frames, batches of 4, no resampling, so
each training call takes a second or two) and an 8-subject synthetic cohort at that config."""

from __future__ import annotations

import pytest

from benchmarks.support.synthetic import SyntheticCohort
from cccmr_model.config import load_config

FAST_SETTINGS = ("data.image_size=32", "data.frames=4", "data.min_frames=4", "train.batch_size=4",
                 "train.resample_factor=1")  # fmt: skip


@pytest.fixture(scope="module")
def fast() -> list[str]:
    """The fast settings, to extend with a test's own `--set` items."""
    return list(FAST_SETTINGS)


@pytest.fixture(scope="module")
def config(fast):
    return load_config("tiny", fast)


@pytest.fixture(scope="module")
def cohort(config):
    return SyntheticCohort(8, config.data, seed=1)
