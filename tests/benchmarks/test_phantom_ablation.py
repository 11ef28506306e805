"""The phantom ablation benchmark's table assembly and run plan (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.phantom_ablation import (
    BENCH,
    ROW_NAMES,
    assemble_table,
    auc_table,
    central_overrides,
    federated_overrides,
    long_pretrain,
    subtype_table,
)
from cccmr_model.config import load_config
from cccmr_model.metrics import evaluation_report


def _report(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 10 + [1] * 10)
    p = np.clip(labels * 0.4 + rng.uniform(0, 0.6, size=20), 0, 1)
    return evaluation_report("screening", np.stack([1 - p, p], axis=1), labels, resamples=50, seed=0)


def _row(table: str, name: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table_has_table2_layout_with_cis() -> None:
    reports = {name: _report(k) for k, name in enumerate(ROW_NAMES)}
    table = assemble_table(reports, "## Central")
    assert table.startswith("## Central\n")
    header = _row(table, "Row")
    assert header[:5] == ["Row", "4CH cine", "SAX cine", "FIM w/o U-A", "FIM w U-A"]
    assert header[5:] == ["Accuracy", "F1-score", "Sensitivity", "Specificity", "AUC"]
    assert _row(table, "4CH cine only")[1:5] == ["✓", "", "", ""]
    assert _row(table, "FIM w U-A")[1:5] == ["✓", "✓", "", "✓"]
    auc = reports["FIM w/o U-A"]["metrics"]["auc"]
    assert _row(table, "FIM w/o U-A")[-1] == f"{auc['value']:.3f} ({auc['ci_low']:.3f}, {auc['ci_high']:.3f})"
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ")][1:] == list(ROW_NAMES)


def test_missing_rows_read_na_in_place() -> None:
    reports = {ROW_NAMES[2]: _report(1), ROW_NAMES[4]: _report(2)}
    table = assemble_table(reports, "## Federated")
    assert _row(table, ROW_NAMES[0])[5:] == ["n/a"] * 5
    assert _row(table, ROW_NAMES[3])[5:] == ["n/a"] * 5
    assert "n/a" not in _row(table, ROW_NAMES[4])
    with pytest.raises(ValueError):
        assemble_table({}, "x")


def test_auc_and_subtype_tables() -> None:
    entry = {"value": 0.8, "ci_low": 0.7, "ci_high": 0.9}
    text = auc_table({"after pretraining": {"cine_4ch": entry}}, ("cine_4ch", "lge_sax"))
    assert "| after pretraining | 0.800 (0.700, 0.900) | n/a |" in text
    labels = np.array([0, 0, 1, 1, 1])
    subtypes = np.array([-1, -1, 2, 2, 0])
    scar = np.array([False, False, True, False, True])
    text = subtype_table({"r": np.array([0.1, 0.9, 0.6, 0.2, 0.7])}, labels, subtypes, scar)
    cells = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    # healthy 1/2 called healthy; HCM 1/1; DCM none; NDLVC 1/2; RCM, ARVC none; scar 2/2; no scar 0/1
    assert cells == ["r", "0.50", "1.00", "n/a", "0.50", "n/a", "n/a", "1.00", "0.00"]


def test_runs_differ_only_in_what_the_row_changes() -> None:
    sites = ["anzhen", "lanzhou"]
    runs = {k: load_config("tiny", v) for k, v in federated_overrides(BENCH, sites, 0).items()}
    assert runs["fused"].federation.phases["fim"].rounds == 0
    assert runs["fim-ua"].federation.phases["fim"].rounds == BENCH.rounds["fim"]
    assert runs["fim-fixed"].train.uncertainty_weighting is False
    assert runs["fim-ua"].train.uncertainty_weighting is True
    for config in runs.values():
        assert config.federation.phases["pretrain"].rounds == BENCH.rounds["pretrain"]
    central = load_config("tiny", central_overrides(BENCH, 0))
    for phase in ("pretrain", "fim", "fusion"):
        assert central.train.phases[phase].epochs == BENCH.rounds[phase] * BENCH.local_epochs[phase]
    assert central.train.resample_factor == runs["fim-ua"].train.resample_factor


def test_control_trains_as_long_without_the_fim() -> None:
    sites = ["anzhen", "lanzhou"]
    runs = federated_overrides(BENCH, sites, 0, control=True)
    assert set(runs) == {"fused", "fim-fixed", "fim-ua", "control"}
    control, full = load_config("tiny", runs["control"]), load_config("tiny", runs["fim-ua"])
    assert control.federation.phases["fim"].rounds == 0
    rounds = {p: f.rounds * f.local_epochs for p, f in control.federation.phases.items()}
    full_rounds = {p: f.rounds * f.local_epochs for p, f in full.federation.phases.items()}
    assert rounds["pretrain"] == full_rounds["pretrain"] + full_rounds["fim"]
    assert rounds["fusion"] == full_rounds["fusion"]
    central = load_config("tiny", central_overrides(long_pretrain(BENCH), 0))
    assert central.train.phases["pretrain"].epochs == full_rounds["pretrain"] + full_rounds["fim"]
