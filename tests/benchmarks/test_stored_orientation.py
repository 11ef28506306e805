"""benchmarks/stored_orientation.py: a study stored a quarter turn away scores as stored in display order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.stored_orientation import SETTINGS, TURNS, orientation_scores, table
from cccmr_model.config import load_config
from cccmr_model.model import build_model
from cccmr_model.release import write_release

TURNED_BACK, AS_STORED = SETTINGS


@pytest.mark.slow
def test_turned_back_scores_do_not_depend_on_the_stored_turn_and_stored_ones_do(tmp_path: Path) -> None:
    from cccmr_model.phantom.cohort import generate_cohort

    generate_cohort(tmp_path / "data", ["anzhen"], 2, seed=4, test_subjects=4, size="tiny", workers=1)
    config = load_config("tiny", ["data.image_size=32"])
    torch.manual_seed(0)  # an untrained model: its scores still depend on every pixel of its input
    release = write_release(
        tmp_path / "release", state=build_model(config).state_dict(), config=config, metrics={},
        training_info={"mode": "central", "sites": {"anzhen": {"subjects": 2}}, "phases": {"fusion": {"epochs": 1}}},
    )  # fmt: skip
    scores, labels = orientation_scores(release, tmp_path / "data" / "test")
    assert len(labels) == 4
    for k in TURNS:
        assert np.allclose(scores[TURNED_BACK][k], scores[TURNED_BACK][0], atol=1e-5)
    assert np.array_equal(scores[AS_STORED][0], scores[TURNED_BACK][0])  # the phantom is stored in display order
    assert not np.allclose(scores[AS_STORED][1], scores[AS_STORED][0], atol=1e-4)


def test_the_table_has_a_row_per_setting_and_turn_with_the_seed_mean() -> None:
    results = {s: {name: {k: 0.5 + 0.1 * s + 0.01 * k for k in TURNS} for name in SETTINGS} for s in (0, 1)}
    text = table(results)
    assert text.count("\n") == 2 + len(SETTINGS) * len(TURNS)
    assert f"| {AS_STORED} | 270 deg | 0.530 / 0.630 | 0.580 |" in text
