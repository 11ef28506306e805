"""End-to-end central training on a synthetic cohort: three phases, evaluation with CIs, release, t-SNE."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.support.synthetic import SyntheticCohort
from cccmr_model.config import load_config
from cccmr_model.engine import evaluate_model
from cccmr_model.engine.central import Site, site_names, split_sites, train_phases
from cccmr_model.metrics import evaluation_report, markdown_table
from cccmr_model.release import load_release, write_release
from cccmr_model.tsne import write_fig3

FAST = ["data.image_size=32", "data.frames=4", "data.min_frames=4", "train.batch_size=4", "train.resample_factor=1"]


@pytest.mark.slow
def test_three_phases_then_evaluate_release_and_tsne(tmp_path) -> None:
    one_epoch = [f"train.phases.{p}.epochs=1" for p in ("pretrain", "fim", "fusion")]
    config = load_config("tiny", [*FAST, *one_epoch, "data.val_fraction=0.3", "evaluation.bootstrap_resamples=50"])
    sites = [Site("a", SyntheticCohort(10, config.data, seed=1)), Site("b", SyntheticCohort(6, config.data, seed=2))]
    train_set, val_set, summary = split_sites(sites, config)
    assert summary["a"]["train"] + summary["a"]["val"] == 10 and val_set is not None
    assert len(train_set) + len(val_set) == 16

    seen = []
    results = train_phases(train_set, config, checkpoint_dir=tmp_path / "ckpt", on_phase=lambda p, r: seen.append(p))
    assert seen == ["pretrain", "fim", "fusion"]
    assert {p: r.num_examples for p, r in results.items()} == {p: len(train_set) for p in seen}  # samples, not batches
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [f"{p}-last.pt" for p in sorted(seen)]

    evaluated = evaluate_model(results["fusion"].state, val_set, config, "cpu")
    report = evaluation_report("screening", evaluated.scores, evaluated.labels, resamples=50)
    assert report["n"] == len(val_set)
    for entry in report["metrics"].values():
        assert entry["ci_low"] <= entry["value"] + 1e-9 and entry["value"] <= entry["ci_high"] + 1e-9
    assert "| CC-CMR |" in markdown_table({"CC-CMR": report})

    info = {"mode": "central", "sites": summary, "phases": {p: {"epochs": 1} for p in seen}}
    release_dir = write_release(
        tmp_path / "out" / "release",
        state=results["fusion"].state,
        config=config,
        metrics={"validation": report},
        training_info=info,
    )
    release = load_release(release_dir)
    again = evaluate_model(release.model.state_dict(), val_set, release.config, "cpu")
    assert np.allclose(again.scores, evaluated.scores, atol=1e-6)  # the release predicts like the trained model

    png = write_fig3(results["pretrain"].state, results["fim"].state, val_set, config, tmp_path / "fig3.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_site_names_are_unique(tmp_path) -> None:
    assert site_names([tmp_path / "x", tmp_path / "y" / "x", tmp_path / "z"]) == ["x", "x-2", "z"]


def test_ablation_table_has_check_mark_columns() -> None:
    from cccmr_model.engine.ablation import MARK_COLUMNS, ROWS

    y = np.array([0, 0, 1, 1, 0, 1])
    report = evaluation_report("screening", np.array([0.2, 0.4, 0.7, 0.9, 0.6, 0.3]), y, resamples=20)
    table = markdown_table(dict.fromkeys(ROWS, report), first_column="Row", leading=ROWS, leading_columns=MARK_COLUMNS)
    lines = table.strip().splitlines()
    assert lines[2].startswith("| Row | 4CH cine | SAX cine | FIM w/o U-A | FIM w U-A | Accuracy |")
    assert lines[4].startswith("| 4CH cine only | ✓ |  |  |  | 0.667 (")
    assert len(lines) == 4 + len(ROWS)


@pytest.mark.parametrize("train_split", [False, True])
def test_ablation_trains_on_what_a_federated_site_trains_on_with_train_split(
    train_split, tmp_path, monkeypatch
) -> None:
    """`cccmr ablation --train-split` holds out each site's validation part, as a federated site does."""
    import argparse

    from cccmr_model.cli import ablation_cmd
    from cccmr_model.engine import ablation
    from cccmr_model.splits import split_site

    config = load_config("tiny", [*FAST, "data.val_fraction=0.25"])
    sites = [Site("a", SyntheticCohort(12, config.data, seed=1)), Site("b", SyntheticCohort(8, config.data, seed=2))]
    seen: list = []

    class StopError(Exception):
        pass

    def record(train_set, *args, **kwargs):
        seen.append(train_set)
        raise StopError

    monkeypatch.setattr(ablation, "ingest_sites", lambda roots, cache, cfg, **kwargs: sites)
    monkeypatch.setattr(ablation, "train_phases", record)
    args = argparse.Namespace(
        config="tiny", overrides=[*FAST, "data.val_fraction=0.25"], data=[tmp_path / "a", tmp_path / "b"],
        test=[tmp_path / "t"], out=tmp_path / "out", cache=None, device="cpu", no_tsne=True, train_split=train_split,
        allow_outside_paths=False,
    )  # fmt: skip
    with pytest.raises(StopError):
        ablation_cmd.run(args)
    site_train = [split_site(s.dataset, config)[0] for s in sites]  # a site's split
    expected = sum(len(idx) for idx in site_train) if train_split else 20
    assert len(seen[0]) == expected and (expected < 20) == train_split
