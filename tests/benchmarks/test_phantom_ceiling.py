"""The phantom learnability ceiling: image features, the summary table, and one run on a tiny cohort."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks.phantom_ceiling import (
    ROWS,
    ceiling,
    cine_features,
    lge_features,
    main,
    markdown,
    summarise,
)
from cccmr_model.config import load_config
from cccmr_model.metrics import SUBTYPE_NAMES


def _beating_disc(ef: float, size: int = 32, frames: int = 8) -> np.ndarray:
    """A (1, T, H, W) z-scored-like cine: a bright disc whose area falls by `ef` at end-systole and recovers."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - (size - 1) / 2, xx - (size - 1) / 2)
    out = np.full((1, frames, size, size), -1.0, dtype=np.float32)
    for t in range(frames):
        scale = 1 - ef * np.sin(np.pi * t / (frames - 1))  # area fraction of end-diastole
        out[0, t][r < 0.25 * size * math.sqrt(scale)] = 2.0
    return out


def test_cine_area_curve_tracks_ejection_fraction() -> None:
    weak, strong = cine_features(_beating_disc(0.2), 0.4), cine_features(_beating_disc(0.6), 0.4)
    assert weak["area_max"] == pytest.approx(strong["area_max"])
    assert 0.1 < weak["area_ef"] < 0.3 and 0.5 < strong["area_ef"] < 0.7
    assert strong["tstd_mean"] > weak["tstd_mean"]


def test_lge_features_zero_without_series_and_see_bright_ring() -> None:
    none = lge_features(None)
    assert set(none.values()) == {0.0}
    size = 32
    dark = np.full((6, size, size), -0.5, dtype=np.float32)
    bright = dark.copy()
    bright[:, 10:14, 8:24] = 4.0  # inside the annulus
    a, b = lge_features(dark), lge_features(bright)
    assert a.keys() == none.keys() and a["has_lge"] == 1.0
    assert b["bright_2.5"] > a["bright_2.5"] == 0.0 and b["p99"] > a["p99"]


def _run(auc: float) -> dict:
    subtypes = dict.fromkeys(SUBTYPE_NAMES, auc)
    subtypes["RCM"] = math.nan  # a subtype absent from a test set
    rows = {name: {"auc": auc, "subtypes": subtypes, "features": []} for name in ROWS}
    counts = dict.fromkeys(SUBTYPE_NAMES, 2)
    return {"rows": rows, "n_train": 20, "n_test": 10, "train_sites": ["a", "b"], "test_subtypes": counts}


def test_summary_and_table_over_seeds() -> None:
    runs = {0: _run(0.6), 1: _run(0.8)}
    summary = summarise(runs)
    auc = summary["truth: EF"]["auc"]
    assert auc["mean"] == pytest.approx(0.7) and auc["min"] == 0.6 and auc["max"] == 0.8 and auc["n"] == 2
    assert summary["truth: EF"]["subtypes"]["RCM"]["n"] == 0
    table = markdown(summary, runs)
    assert table.splitlines()[0].startswith("| Features | AUC mean ± SD | range | seed 0 | seed 1 | HCM")
    assert "| truth: EF | 0.70 ± 0.14 | 0.60–0.80 | 0.60 | 0.80 | 0.70 | 0.70 | 0.70 | – | 0.70 |" in table


@pytest.mark.slow
def test_ceiling_on_a_tiny_cohort(tmp_path) -> None:
    from cccmr_model.phantom.cohort import generate_cohort

    cohort = tmp_path / "data"
    generate_cohort(cohort, ["anzhen", "lanzhou"], 12, seed=3, test_subjects=16, size="tiny", workers=2)
    result = ceiling(cohort, tmp_path / "cache", load_config("tiny"))
    assert result["n_train"] == 24 and result["n_test"] == 16 and result["train_sites"] == ["anzhen", "lanzhou"]
    assert set(result["rows"]) == set(ROWS)
    for row in result["rows"].values():
        assert 0.0 <= row["auc"] <= 1.0 and row["features"]
    # EF alone ranks DCM (low EF) above healthy but HCM (hyperdynamic) below: well above chance only per subtype.
    assert result["rows"]["truth: EF"]["subtypes"]["DCM"] > 0.8
    assert result["rows"]["truth: cine (EF, volumes, wall)"]["auc"] > 0.8
    assert result["rows"]["truth: all"]["auc"] > 0.8

    out = tmp_path / "out"  # the CLI on the same cohort (its own cache under --out)
    assert main(["--out", str(out), "--cohort", str(cohort)]) == 0
    saved = json.loads((out / "phantom-ceiling.json").read_text())
    assert saved["settings"]["cohort"] == str(cohort)
    assert (out / "phantom-ceiling.md").read_text().startswith("# Learnability ceiling on the phantom")
