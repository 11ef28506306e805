"""The demo's report and figures from a small fake history (records shaped like the ServerApp's history.jsonl)."""

from __future__ import annotations

import numpy as np
import pytest

from cccmr_model.demo import figures
from cccmr_model.demo.evaluate import phase_end_rounds
from cccmr_model.demo.plan import overrides, site_names
from cccmr_model.demo.report import (
    BASELINE,
    RELEASE,
    flagged,
    lge_verdict,
    markdown_to_html,
    render_markdown,
    rounds_table,
    validation_trend,
    write_report,
)
from cccmr_model.errors import ConfigError
from cccmr_model.metrics import evaluation_report, markdown_table
from cccmr_model.run_folder import evaluations

TERMS = ("cls:cine_4ch", "cls:cine_sax", "cls:lge_sax", "fsa:cine_4ch|cine_sax", "fsa:cine_4ch|lge_sax",
         "fsa:cine_sax|lge_sax")  # fmt: skip


def fake_evaluation(rnd: int, sites, lge: bool = True) -> dict:
    """The evaluation of round `rnd`'s model (validation AUC 0.5 + 0.05 x rnd; heads 4CH 0.6 + 0.05 x rnd, SAX
    0.55, LGE 0.8 when the message held it), as a history line holds it."""
    heads = {"auc:cine_4ch": 0.6 + 0.05 * rnd, "auc:cine_sax": 0.55, **({"auc:lge_sax": 0.8} if lge else {})}
    return {
        "evaluated_round": rnd,
        "evaluate": {s: {"loss": 0.7 - 0.01 * rnd, "confusion": [2, 1, 1, 2], "num-examples": 6} for s in sites},
        "evaluate_global": {"loss": 0.69, "auc": 0.5 + 0.05 * rnd, "balanced_accuracy": 0.6, "sensitivity": 0.5,
                            "specificity": 0.7, "num-examples": 12, **heads},
    }  # fmt: skip


def fake_history(phases: dict[str, int], sites=("anzhen", "lanzhou")) -> list[dict]:
    """As the ServerApp writes it with evaluate_every 1: round t's line holds the evaluation of round t-1's model
    (its train replies carried it); the last line the final evaluation and, as `previous_evaluation`, the one
    before."""
    records, rnd, last = [], 0, sum(phases.values())
    for phase, rounds in phases.items():
        for k in range(1, rounds + 1):
            rnd += 1
            sigma = {f"sigma:{t}": 1.0 + 0.01 * rnd * (i - 2.5) for i, t in enumerate(TERMS)} if phase == "fim" else {}
            evaluation = (
                fake_evaluation(rnd if rnd == last else rnd - 1, sites, lge=phase != "fusion")
                if rnd > 1
                else {"evaluated_round": None, "evaluate": {}, "evaluate_global": {}}
            )
            records.append({
                "round": rnd, "phase": phase, "phase_round": k, "sites_replied": list(sites),
                "train": {s: {"loss": 1.0 / rnd + i, "num-examples": 10} for i, s in enumerate(sites)},
                "train_global": {"loss": 1.0 / rnd, **sigma},
                "sigma": sigma,
                **evaluation,
                **({"previous_evaluation": fake_evaluation(rnd - 1, sites)} if rnd == last else {}),
                "bytes_sent": 14_000_000 if phase != "fusion" else 12_000_000,
                "bytes_received": 9_000_000 if phase != "fusion" else 70_000,
                "round_time_s": 1.5,
            })  # fmt: skip
    return records


def test_evaluations_are_read_by_the_round_whose_model_was_evaluated(histories):
    evaluated = evaluations(histories[RELEASE])
    assert [(e["round"], e["phase"]) for e in evaluated] == [(1, "pretrain"), (2, "pretrain"), (3, "fim"),
                                                             (4, "fim"), (5, "fusion")]  # fmt: skip
    assert [e["evaluate_global"]["auc"] for e in evaluated] == pytest.approx([0.55, 0.6, 0.65, 0.7, 0.75])
    older = [{"round": n, "phase": "pretrain", "evaluate_global": {"auc": 0.5}} for n in (1, 2)]  # no field
    assert [e["round"] for e in evaluations(older)] == [1, 2]


def test_the_validation_trend_and_the_rounds_table_follow_the_evaluated_round(histories):
    trend = validation_trend(histories[RELEASE])
    assert "round 1 (pretrain) 0.550" in trend and "end of fim (round 4) 0.700" in trend
    assert "end of fusion (round 5) 0.750" in trend
    rows = [line for line in rounds_table(histories[RELEASE]).splitlines() if line.startswith("| 1 ")]
    assert "0.550" in rows[0]  # round 1's model, evaluated in round 2
    assert "0.650 / 0.550 / 0.800" in rows[0]  # its heads 4CH / SAX / LGE
    last = [line for line in rounds_table(histories[RELEASE]).splitlines() if line.startswith("| 5 ")]
    assert "0.850 / 0.550 / n/a" in last[0]  # a fusion round's message holds no LGE encoder
    assert "pretrain 0.700 / 0.550 / 0.800" in trend  # round 2's model, evaluated in round 3 (FIM)
    assert "fim 0.800 / 0.550 / 0.800" in trend  # round 4's cine heads; its LGE head unscored (a fusion message)
    assert "fusion 0.850 / 0.550 / n/a" in trend


@pytest.fixture
def histories() -> dict[str, list[dict]]:
    return {
        RELEASE: fake_history({"pretrain": 2, "fim": 2, "fusion": 1}),
        BASELINE: fake_history({"pretrain": 2, "fusion": 1}),
    }


def fake_summary(evaluations: dict[str, dict]) -> dict:
    names = {RELEASE: "CC-CMR (federated)", BASELINE: "Baseline (no FIM)"}
    return {
        "quick": True,
        "names": names,
        "sites": [
            {"name": "anzhen", "subjects": 12, "patients": 6, "without_lge": 1},
            {"name": "lanzhou", "subjects": 12, "patients": 5, "without_lge": 0},
        ],
        "test": {"subjects": 16, "patients": 8, "without_lge": 0, "usable": 16},
        "val_fraction": 0.2,
        "config": {"config": "configs/tiny.yaml", "task": "screening"},
        "overrides": {RELEASE: ["seed=0"], BASELINE: ["seed=0", "federation.phases.fim.rounds=0"]},
        "table1": markdown_table({names[k]: v for k, v in evaluations.items()}),
        "evaluation": {names[k]: v for k, v in evaluations.items()},
        "releases": {
            RELEASE: {"path": "/x/run/release", "content_hash": "ab" * 32},
            BASELINE: {"path": "/x/baseline/release", "content_hash": "cd" * 32},
        },
        "history_paths": {RELEASE: "/x/run/history.jsonl", BASELINE: "/x/baseline/history.jsonl"},
        "tsne": {"before_round": 2, "after_round": 4, "source": "checkpoints of the release run"},
        "figures": {k: f"figures/{k}.png" for k in ("roc", "rounds", "sigma", "tsne", "bytes")},
        "wall_times": {"phantom cohort": 9.2, "federated CC-CMR": 61.0},
        "total_seconds": 75.0,
        "machine": {"CPU cores": 2},
    }


def scores_and_labels(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.array([0, 1] * 10)
    return np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.2, 20), 0, 1), labels


def test_report_has_every_section_and_escapes_pipes(tmp_path, histories):
    evaluations = {k: evaluation_report("screening", *scores_and_labels(i), resamples=20) for i, k in
                   enumerate((RELEASE, BASELINE))}  # fmt: skip
    md = render_markdown(fake_summary(evaluations), histories)
    for heading in ("Held-out test set (Table 1 layout)", "Training, round by round", "uncertainty weights",
                    "t-SNE", "Bytes exchanged", "Settings"):  # fmt: skip
        assert heading in md
    for figure in ("roc", "rounds", "sigma", "tsne", "bytes"):
        assert f"](figures/{figure}.png)" in md
    assert "| CC-CMR (federated) |" in md and "| Baseline (no FIM) |" in md
    assert "fsa:cine_4ch\\|cine_sax" in md  # a pipe inside a cell would split the Markdown table
    assert md.count("| 5 | fusion 1 |") == 1 and "| 3 | fusion 1 |" in md
    assert "synthetic" in md and "Whole demo: 75 s (--quick)" in md
    assert "Pooled validation AUC of the cine-only model, round by round: round 1" in md
    assert "benchmarks/README.md" in md and "on this run" in md
    md_path, html_path = write_report(tmp_path, fake_summary(evaluations), histories)
    assert md_path.read_text() == md
    page = html_path.read_text()
    assert page.count("<table>") == sum(line.startswith("|---") for line in md.splitlines())
    assert "<td>fsa:cine_4ch|cine_sax</td>" in page and '<img src="figures/roc.png"' in page


def test_markdown_to_html_subset():
    page = markdown_to_html("# T\n\ntext with `code` and **bold**\n\n- a\n- b\n\n| x | y |\n|---|---|\n| 1 | a\\|b |\n")
    assert "<h1>T</h1>" in page and "<code>code</code>" in page and "<strong>bold</strong>" in page
    assert "<ul><li>a</li><li>b</li></ul>" in page
    assert "<th>x</th><th>y</th>" in page and "<td>a|b</td>" in page


def test_figures_are_written(tmp_path, histories):
    scores, labels = scores_and_labels(0)
    auc = {"value": 0.8, "ci_low": 0.6, "ci_high": 0.95}
    paths = [
        figures.roc_figure({"a": (scores, labels, auc), "b": (1 - scores, labels, auc)}, tmp_path / "roc.png"),
        figures.rounds_figure(histories[RELEASE], tmp_path / "rounds.png"),
        figures.sigma_figure(histories[RELEASE], tmp_path / "sigma.png"),
        figures.sigma_figure(histories[BASELINE], tmp_path / "no-sigma.png"),
        figures.bytes_figure(histories, tmp_path / "bytes.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_roc_points_match_sklearn():
    from sklearn.metrics import auc, roc_curve

    scores, labels = scores_and_labels(3)
    scores = np.round(scores, 1)  # ties
    fpr, tpr = figures.roc_points(scores, labels)
    ref_fpr, ref_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert auc(fpr, tpr) == pytest.approx(auc(ref_fpr, ref_tpr))


def test_site_accuracy_from_confusion():
    assert figures.site_accuracy({"confusion": [3, 1, 0, 4]}) == pytest.approx(7 / 8)
    assert figures.site_accuracy({}) is None


def test_phase_end_rounds(histories):
    assert phase_end_rounds(histories[RELEASE]) == {"pretrain": 2, "fim": 4, "fusion": 5}
    assert phase_end_rounds(histories[BASELINE]) == {"pretrain": 2, "fusion": 3}


def test_plan_overrides_differ_only_in_the_fim_phase():
    from cccmr_model.config import load_config
    from cccmr_model.demo.plan import CONFIG_NAME, QUICK

    sites = site_names(2)
    release = load_config(CONFIG_NAME, overrides(QUICK, sites, 0, baseline=False))
    baseline = load_config(CONFIG_NAME, overrides(QUICK, sites, 0, baseline=True))
    assert release.federation.sites == ("anzhen", "lanzhou")
    assert (
        release.federation.phases["fim"].rounds == QUICK.rounds["fim"] and baseline.federation.phases["fim"].rounds == 0
    )
    assert release.train == baseline.train and release.model == baseline.model and release.data == baseline.data
    assert release.federation.phases["pretrain"] == baseline.federation.phases["pretrain"]
    # two sites: pretraining batches of 4 (central's steps per epoch), FIM batches of 8, a server step of 2
    batches = {phase: release.train.phase_batch_size(phase) for phase in ("pretrain", "fim", "fusion")}
    assert (batches, release.federation.server_lr) == ({"pretrain": 4, "fim": 8, "fusion": 8}, 2.0)
    alone = load_config(CONFIG_NAME, overrides(QUICK, site_names(1), 0, baseline=False))  # one site: as configured
    assert (alone.train.phase_batch_size("pretrain"), alone.federation.server_lr) == (8, 1.0)
    assert site_names(3) == ["anzhen", "lanzhou", "site3"]
    with pytest.raises(ConfigError):
        site_names(0)


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    from cccmr_model.demo import DemoOptions, run_demo

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.dcm").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not written by cccmr demo"):
        run_demo(DemoOptions(out=tmp_path))
    assert (tmp_path / "data" / "precious.dcm").is_file()


def _auc_report(value: float) -> dict:
    return {"n": 48, "metrics": {"auc": {"value": value, "ci_low": value - 0.1, "ci_high": value + 0.05}}}


@pytest.mark.parametrize(
    ("release", "baseline", "call"),
    [
        (0.93, 0.85, "LGE guidance helped on this run"),
        (0.90, 0.89, "LGE guidance made no clear difference on this run"),
        (0.80, 0.90, "LGE guidance did not help on this run"),
    ],
)
def test_lge_verdict_says_plainly_what_this_run_shows(release: float, baseline: float, call: str) -> None:
    names = {RELEASE: "CC-CMR", BASELINE: "Baseline"}
    text = lge_verdict({"CC-CMR": _auc_report(release), "Baseline": _auc_report(baseline)}, names)
    assert text.startswith(f"**{call}") and f"{release - baseline:+.3f}" in text and "3-seed" in text


def test_report_shows_one_explained_subject_per_class(histories):
    evaluations = {k: evaluation_report("screening", *scores_and_labels(i), resamples=20) for i, k in
                   enumerate((RELEASE, BASELINE))}  # fmt: skip
    summary = fake_summary(evaluations)
    assert "Where the model looked" not in render_markdown(summary, histories)  # older summaries: no section
    summary["explained"] = [
        {"subject_id": f"test-000{i}", "truth": truth, "p_cardiomyopathy": p, "call": call, "es_frame": 3,
         "top_frames": [3, 2, 4], "top_slices": [5, 4, 6],
         "figures": [f"figures/explained/test-000{i}/cine_sax_{ph}.png" for ph in ("ed", "es")]}
        for i, (truth, p, call) in enumerate([("healthy", 0.2, "healthy"),
                                              ("cardiomyopathy (HCM)", 0.8, "cardiomyopathy")])
    ]  # fmt: skip
    md = render_markdown(summary, histories)
    assert "## Where the model looked: one held-out subject per class" in md and "not a segmentation" in md
    assert "**test-0001**: truth cardiomyopathy (HCM); P(cardiomyopathy) 0.800, call cardiomyopathy" in md
    assert "](figures/explained/test-0000/cine_sax_es.png)" in md


def test_the_report_says_what_the_server_flagged(histories) -> None:
    names = {RELEASE: "CC-CMR", BASELINE: "Baseline"}
    assert flagged(histories, names).startswith("The server flagged nothing")
    histories[BASELINE][1]["sites_failed"] = {"lanzhou": "no reply before the round timeout"}
    histories[RELEASE][2]["memorising_heads"] = {"cine_sax": {"train_auc": 0.99, "val_auc": 0.5}}
    text = flagged(histories, names)
    assert "- CC-CMR, round 3: head cine_sax fits its training subjects (training AUC 0.990)" in text
    assert "- Baseline, round 2: site lanzhou left out: no reply before the round timeout" in text
