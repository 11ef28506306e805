"""benchmarks/stored_orientation.py: a study stored turned or mirrored scores as in display order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.stored_orientation import SETTINGS, order_name, orientation_scores, table
from cccmr_model.config import load_config
from cccmr_model.data.orientation import ORDERS
from cccmr_model.model import build_model
from cccmr_model.release import write_release

DISPLAY, AS_STORED = SETTINGS
NAMES = [order_name(o) for o in ORDERS]


@pytest.mark.slow
def test_display_order_scores_do_not_depend_on_the_stored_order_and_stored_ones_do(tmp_path: Path) -> None:
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
    as_written = scores[DISPLAY]["0 deg"]
    for name in NAMES:
        assert np.allclose(scores[DISPLAY][name], as_written, atol=1e-5), name
    assert np.array_equal(scores[AS_STORED]["0 deg"], as_written)  # the phantom is stored in display order
    for name in NAMES[1:]:
        assert not np.allclose(scores[AS_STORED][name], as_written, atol=1e-4), name


def test_the_table_has_a_row_per_setting_and_order_with_the_seed_mean() -> None:
    results = {
        s: {name: {o: 0.5 + 0.1 * s + 0.01 * i for i, o in enumerate(NAMES)} for name in SETTINGS} for s in (0, 1)
    }
    text = table(results)
    assert text.count("\n") == 2 + len(SETTINGS) * len(ORDERS)
    assert f"| {AS_STORED} | 270 deg, mirrored | 0.570 / 0.670 | 0.620 |" in text
