"""`cccmr train`, `cccmr evaluate` and `cccmr ablation` on a tiny phantom cohort written as DICOM."""

from __future__ import annotations

import json

import pytest

from cccmr_model import phantom
from cccmr_model.cli import main
from cccmr_model.config.loader import CONFIG_DIR

SMALL = [
    "data.image_size=32",
    "data.frames=4",
    "data.min_frames=4",
    "train.batch_size=4",
    "train.resample_factor=1",
    "evaluation.bootstrap_resamples=30",
    *(f"train.phases.{p}.epochs=1" for p in ("pretrain", "fim", "fusion")),
]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    phantom.generate_cohort(root, ["anzhen", "lanzhou"], 5, seed=0, test_subjects=4, size="tiny")
    return root


@pytest.mark.slow
def test_train_then_evaluate_release(cohort, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["train", "-q", "--config", "tiny", *_sets([*SMALL, "data.val_fraction=0.4"])]
    code = main([*args, "--data", str(cohort / "anzhen"), str(cohort / "lanzhou"), "--out", str(out)])
    assert code == 0
    assert (out / "release" / "release.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["n"] == 4 and set(metrics["validation"]["metrics"]) >= {"accuracy", "auc"}
    assert "| CC-CMR (validation) |" in (out / "metrics.md").read_text()
    training = json.loads((out / "release" / "training.json").read_text())
    assert training["sites"]["anzhen"] == {"subjects": 5, "train": 3, "val": 2}
    assert training["phases"]["fim"]["num_examples"] == 6
    heads = {p: {k: v for k, v in phase.items() if k.startswith("val_auc:")} for p, phase in training["phases"].items()}
    assert set(heads["pretrain"]) == {"val_auc:cine_4ch", "val_auc:cine_sax", "val_auc:lge_sax"}, heads
    assert all(0.0 <= v <= 1.0 for phase in heads.values() for v in phase.values())
    assert heads["fusion"] == heads["fim"]  # fusion trains the fusion MLP only
    assert "| validation AUC, lge_sax |" in (out / "release" / "MODEL_CARD.md").read_text()

    ev = tmp_path / "eval"
    assert (
        main(["evaluate", "-q", "--release", str(out / "release"), "--data", str(cohort / "test"), "--out", str(ev)])
        == 0
    )
    report = json.loads((ev / "evaluation.json").read_text())
    assert report["n"] == 4 and report["bootstrap"]["resamples"] == 30
    assert report["metrics"]["accuracy"]["ci_low"] <= report["metrics"]["accuracy"]["ci_high"]
    assert "| CC-CMR |" in capsys.readouterr().out


@pytest.mark.slow
def test_ablation_writes_the_five_rows(cohort, tmp_path) -> None:
    out = tmp_path / "abl"
    args = ["ablation", "-q", "--config", "tiny", *_sets(SMALL), "--no-tsne"]
    assert main([*args, "--data", str(cohort / "anzhen"), "--test", str(cohort / "test"), "--out", str(out)]) == 0
    rows = json.loads((out / "ablation.json").read_text())
    assert list(rows) == ["4CH cine only", "SAX cine only", "4CH + SAX fused", "FIM w/o U-A", "FIM w U-A"]
    assert all(r["n"] == 4 for r in rows.values())
    assert (out / "ablation.md").read_text().count("\n| ") == 6  # header + five rows


@pytest.mark.parametrize("command", ["train", "ablation"])
def test_central_training_refuses_privacy_it_does_not_apply(command, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    data = ["--data", str(tmp_path), *(["--test", str(tmp_path)] if command == "ablation" else []), "--out", str(out)]
    assert main([command, "--config", "tiny", "--set", "privacy.dp_sgd.enabled=true", *data]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cccmr {command}: error: --set privacy.dp_sgd.enabled=true: " in err
    assert "applies no DP-SGD" in err and not out.exists()
    config = tmp_path / "dp.yaml"
    config.write_text(f"base: {CONFIG_DIR / 'tiny.yaml'}\nprivacy:\n  central_dp:\n    enabled: true\n")
    assert main([command, "--config", str(config), *data]) == 2
    err = capsys.readouterr().err
    assert f"{config}: key 'privacy.central_dp.enabled'" in err and "applies no central DP" in err
