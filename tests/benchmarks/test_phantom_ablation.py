"""The phantom ablation benchmark's table assembly, run plan and multi-seed summary (no training)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import benchmarks.phantom_ablation as pab
from benchmarks.phantom_ablation import (
    BENCH,
    CONTROL_FUSED,
    DIFF,
    ROW_NAMES,
    SUMMARY_ROWS,
    aggregate,
    assemble_table,
    auc_table,
    central_overrides,
    detection_counts,
    federated_overrides,
    long_pretrain,
    render_seeds,
    subtype_table,
)
from benchmarks.phantom_ceiling import ROWS as CEILING_ROWS
from cccmr_model.config import load_config
from cccmr_model.demo.plan import FULL
from cccmr_model.metrics import SUBTYPE_NAMES, evaluation_report


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


def test_bench_is_the_demo_schedule_on_the_demo_cohort() -> None:
    assert (BENCH.subjects, BENCH.test_subjects) == (48, 48)
    assert (BENCH.rounds, BENCH.local_epochs, BENCH.resample_factor) == (
        FULL.rounds, FULL.local_epochs, FULL.resample_factor
    )  # fmt: skip


# ------------------------------------------------------------------------------------- several seeds (fake runs)


def _auc(value: float | None) -> dict:
    return {"metrics": {"auc": {"value": value, "ci_low": 0.0, "ci_high": 1.0}}}


def _fake_seed(seed: int, modes=("central", "federated"), with_ceiling: bool = True) -> dict:
    """A per-seed summary as `benchmark` writes it (JSON form): AUC = base + 0.01 x seed (+ 0.02 if federated)."""
    base = dict(zip(SUMMARY_ROWS, (0.80, 0.70, 0.50, 0.75, 0.78, 0.82, 0.80), strict=True))
    out = {"seed": seed, "size": {"rounds": {"pretrain": 5}, "local_epochs": {"pretrain": 3}, "resample_factor": 2},
           "cohort": {"sites": [{"subjects": 48}, {"subjects": 48}], "test": {"subjects": 48}}, "config": "tiny",
           "times": {"total": 600.0 + seed}, "modes": {}, "ceiling": None}  # fmt: skip
    for mode in modes:
        shift = 0.01 * seed + (0.02 if mode == "federated" else 0.0)
        v = {row: base[row] + shift for row in base}
        reports = {name: _auc(v[row]) for row, (where, name) in SUMMARY_ROWS.items() if where == "reports"}
        out["modes"][mode] = {
            "reports": reports,
            "controls": {CONTROL_FUSED: _auc(v["control: no FIM/LGE, same epochs"])},
            "aucs": {"after pretraining": {"lge_sax": {"value": v["LGE head (after pretraining)"]}}},
            "detection": {"FIM w U-A": {"healthy": [10 + seed, 20], "NDLVC": [seed, 4]}},
        }
    if with_ceiling:
        rows = {
            name: {"auc": 0.90 + 0.02 * seed, "subtypes": dict.fromkeys(SUBTYPE_NAMES, 0.9)} for name in CEILING_ROWS
        }
        out["ceiling"] = {"rows": rows}
    return out


def test_aggregate_over_seeds() -> None:
    agg = aggregate({s: _fake_seed(s) for s in (0, 1, 2)})
    four = agg["rows"]["4CH head"]
    assert four["central"]["mean"] == pytest.approx(0.81)
    assert four["central"]["sd"] == pytest.approx(0.01)
    assert (four["central"]["min"], four["central"]["max"]) == pytest.approx((0.80, 0.82))
    assert four["federated"]["mean"] == pytest.approx(0.83)
    assert four[DIFF]["mean"] == pytest.approx(0.02) and four[DIFF]["sd"] == pytest.approx(0.0, abs=1e-12)
    assert agg["rows"]["LGE head (after pretraining)"]["central"]["mean"] == pytest.approx(0.51)
    for mode in ("central", "federated"):  # FIM w U-A 0.82 vs control 0.80, every seed
        assert agg["lge_guidance"][mode]["mean"] == pytest.approx(0.02)
        assert agg["lge_guidance"][mode]["n"] == 3
    assert agg["ceiling"]["image: LGE"]["mean"] == pytest.approx(0.92)
    assert agg["detection"]["central"]["FIM w U-A"] == {"healthy": [33, 60], "NDLVC": [3, 12]}
    assert agg["times"] == {0: 600.0, 1: 601.0, 2: 602.0}


def test_aggregate_tolerates_missing_modes_and_values() -> None:
    seeds = {0: _fake_seed(0, modes=("central",), with_ceiling=False), 1: _fake_seed(1)}
    seeds[1]["modes"]["central"]["reports"]["FIM w U-A"]["metrics"]["auc"]["value"] = None  # NaN in the JSON
    agg = aggregate(seeds)
    fim = agg["rows"]["FIM w U-A"]
    assert fim["central"]["n"] == 1 and fim["central"]["sd"] == 0.0
    assert fim["federated"]["n"] == 1 and fim[DIFF]["n"] == 0
    assert agg["ceiling"]["image: LGE"]["n"] == 1
    text = render_seeds(agg, seeds)
    assert "| FIM w U-A | 0.820 ± 0.000 (0.82–0.82) | 0.850 ± 0.000 (0.85–0.85) | n/a |" in text


def test_summary_table_and_plain_lines() -> None:
    seeds = {s: _fake_seed(s) for s in (0, 1, 2)}
    text = render_seeds(aggregate(seeds), seeds)
    assert text.startswith("# Table 2 on the phantom cohort, 3 seeds (0, 1, 2)\n")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("| Row |"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Row", "central", "federated", DIFF, "ceiling (image / truth)"
    ]  # fmt: skip
    rows = [line.split("|")[1].strip() for line in lines[lines.index(header) + 2 :] if line.startswith("| ")]
    assert rows[: len(SUMMARY_ROWS)] == list(SUMMARY_ROWS)
    four = "| 4CH head | 0.810 ± 0.010 (0.80–0.82) | 0.830 ± 0.010 (0.82–0.84) | +0.020 ± 0.000 (+0.02–+0.02) |"
    assert four + " 0.92 / 0.92 |" in text
    assert "LGE guidance (FIM w U-A − control): central +0.020 ± 0.000, federated +0.020 ± 0.000" in text
    assert "federated − central (FIM w U-A): +0.020 ± 0.000 (per seed +0.020, +0.020, +0.020)" in text
    assert "| LGE | 0.920 ± 0.020 (0.90–0.94) | 0.920 ± 0.020 (0.90–0.94) |" in text
    assert "| FIM w U-A | 0.55 | 0.25 |" in text  # pooled: 33/60 healthy, 3/12 NDLVC
    assert "- 4CH head ≥ 0.85: central 0.810 (no), federated 0.830 (no)" in text
    assert "- FIM w U-A beats the compute-matched control: central +0.020 ± 0.000 (yes)" in text
    assert "federated within 0.02 AUC of central (FIM w U-A): +0.020 ± 0.000 (yes)" in text


def test_run_seeds_writes_one_summary_and_reuses_finished_seeds(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_benchmark(out, *, seed, **kwargs):
        calls.append((out.name, seed, kwargs["mode"]))
        out.mkdir(parents=True)
        summary = _fake_seed(seed)
        summary["ceiling"]["rows"]["image: LGE"]["auc"] = math.nan  # json_safe makes it None
        (out / "phantom-ablation.json").write_text(json.dumps(pab.json_safe(summary)))
        return summary

    monkeypatch.setattr(pab, "benchmark", fake_benchmark)
    pab.run_seeds(tmp_path, [0, 1], mode="both")
    assert calls == [("seed-0", 0, "both"), ("seed-1", 1, "both")]
    payload = json.loads((tmp_path / "phantom-ablation.json").read_text())
    assert set(payload["per_seed"]) == {"0", "1"}
    assert payload["summary"]["rows"]["FIM w U-A"]["central"]["values"] == pytest.approx([0.82, 0.83])
    assert "| 4CH head | 0.805 ± 0.007 (0.80–0.81)" in (tmp_path / "phantom-ablation.md").read_text()
    calls.clear()
    pab.main(["--out", str(tmp_path), "--seeds", "0", "1", "2", "--reuse", "--mode", "central"])
    assert calls == [("seed-2", 2, "central")]
    assert json.loads((tmp_path / "phantom-ablation.json").read_text())["summary"]["seeds"] == [0, 1, 2]


def test_detection_counts_match_the_rate_table() -> None:
    labels = np.array([0, 0, 1, 1])
    subtypes = np.array([-1, -1, 2, 2])
    counts = detection_counts({"r": np.array([0.1, 0.9, 0.6, 0.2])}, labels, subtypes, np.array([0, 0, 1, 0]) > 0)
    assert counts["r"]["healthy"] == [1, 2] and counts["r"]["NDLVC"] == [1, 2] and counts["r"]["HCM"] == [0, 0]
    assert counts["r"]["patients, scar on LGE"] == [1, 1]


def test_ceiling_reads_the_central_caches_and_never_fails_the_run(tmp_path, monkeypatch) -> None:
    seen = {}

    def fake_ceiling(cohort, cache_root, config):
        seen.update({g: (cache_root / g).resolve() for g in ("anzhen", "lanzhou", "test")})
        return {"rows": {}}

    monkeypatch.setattr(pab, "ceiling", fake_ceiling)
    assert pab.cohort_ceiling(tmp_path, ["anzhen", "lanzhou"], None) == {"rows": {}}
    assert seen["anzhen"] == (tmp_path / "cache" / "train" / "anzhen").resolve()
    assert seen["test"] == (tmp_path / "cache" / "test" / "test").resolve()
    assert pab.cohort_ceiling(tmp_path, ["anzhen", "lanzhou"], None) == {"rows": {}}  # links exist: reused

    def broken(*args):
        raise ValueError("no test export")

    monkeypatch.setattr(pab, "ceiling", broken)
    assert pab.cohort_ceiling(tmp_path, ["anzhen", "lanzhou"], None) is None


def test_schedule_override_changes_only_the_named_phase() -> None:
    size = pab.with_schedule(pab.BENCH, ["pretrain=15x1"])
    assert size.rounds == {**pab.BENCH.rounds, "pretrain": 15}
    assert size.local_epochs == {**pab.BENCH.local_epochs, "pretrain": 1}
    assert "train.phases.pretrain.epochs=15" in pab.central_overrides(size, 0)  # central epochs follow
    assert "control" not in pab.federated_overrides(size, ["anzhen", "lanzhou"], 0)  # no control: epochs may differ
    with pytest.raises(SystemExit, match="PHASE=ROUNDSxEPOCHS"):
        pab.with_schedule(pab.BENCH, ["warmup=3x1"])
