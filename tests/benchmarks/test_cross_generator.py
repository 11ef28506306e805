"""benchmarks/cross_generator.py and the foreign cohort it reads: the other generator's DICOM goes through the
project's own reading path, and the metrics count what they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.cross_generator import cohort_metrics, read_cohort, score
from benchmarks.support.foreign_cohort import write_cohort
from cccmr_model.config import load_config
from cccmr_model.data.ingest import ingest_site
from cccmr_model.model import build_model
from cccmr_model.predict import Predictor
from cccmr_model.release import load_release, write_release


def test_cohort_metrics_count_calls_per_subtype() -> None:
    rows = [{"label": "0", "subtype": ""}] * 2 + [{"label": "1", "subtype": "HCM"}, {"label": "1", "subtype": "DCM"}]
    metrics = cohort_metrics(np.array([0.1, 0.6, 0.7, 0.4]), rows, threshold=0.5)
    assert metrics["auc"] == pytest.approx(0.75) and metrics["specificity"] == pytest.approx(0.5)
    assert metrics["sensitivity HCM"] == 1.0 and metrics["sensitivity DCM"] == 0.0
    assert "sensitivity ARVC" not in metrics
    assert metrics["mean score, healthy"] == pytest.approx(0.35)


@pytest.mark.slow
def test_foreign_cohort_is_read_by_ingestion_and_prediction(tmp_path: Path) -> None:
    rows = write_cohort(tmp_path / "cohort", subjects=2, seed=3)
    assert sorted(int(r["label"]) for r in rows) == [0, 1]
    config = load_config("tiny", ["data.image_size=32"])
    report = ingest_site(tmp_path / "cohort", tmp_path / "cache", config.data)
    assert report.ok and not report.rejected_subjects and not report.centre_fallbacks, report.summary()
    torch.manual_seed(0)
    release = write_release(
        tmp_path / "release", state=build_model(config).state_dict(), config=config, metrics={},
        training_info={"mode": "central", "sites": {"x": {"subjects": 2}}, "phases": {"fusion": {"epochs": 1}}},
    )  # fmt: skip
    predictor = Predictor(load_release(release), device="cpu", precision="fp32")
    inputs, _rows, skipped = read_cohort(predictor, tmp_path / "cohort")
    assert not skipped and len(inputs) == 2 and all(s.cine_sax.localised for s in inputs)
    assert inputs[0].cine_4ch.array.shape == (1, 8, 32, 32) and inputs[0].cine_sax.array.shape == (3, 8, 32, 32)
    scores = score(predictor, inputs)
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))
