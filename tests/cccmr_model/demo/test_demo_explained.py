"""The demo's explained subjects: one held-out phantom subject per class through `--explain`'s code."""

from __future__ import annotations

from pathlib import Path

import torch

from cccmr_model.config import load_config
from cccmr_model.demo.explained import explain_examples
from cccmr_model.model import build_model
from cccmr_model.phantom.cohort import generate_cohort
from cccmr_model.release import write_release

TRAINING = {"mode": "central", "sites": {"demo": {"subjects": 4}}, "phases": {"fusion": {"epochs": 1}}}


def test_one_explained_subject_per_class(tmp_path: Path) -> None:
    generate_cohort(tmp_path / "data", ["anzhen"], subjects=1, test_subjects=2, size="tiny", seed=0)
    config = load_config("tiny")
    torch.manual_seed(0)
    release = write_release(tmp_path / "release", state=build_model(config).state_dict(), config=config,
                            metrics={}, training_info=TRAINING)  # fmt: skip
    examples = explain_examples(release, tmp_path / "data" / "test", tmp_path / "figures" / "explained", tmp_path)
    assert sorted(e["truth"].split(" ")[0] for e in examples) == ["cardiomyopathy", "healthy"]
    for example in examples:
        assert example["call"] in ("healthy", "cardiomyopathy") and 0 <= example["p_cardiomyopathy"] <= 1
        assert len(example["top_frames"]) == 3 and len(example["top_slices"]) == 3
        assert all((tmp_path / figure).is_file() for figure in example["figures"])
