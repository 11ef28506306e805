"""A release holds only the cine encoders and the fusion MLP, and loading refuses anything tampered or foreign."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cccmr_model.config import load_config
from cccmr_model.engine.loading import without_pretrained
from cccmr_model.errors import CccmrError
from cccmr_model.metrics import evaluation_report
from cccmr_model.model import build_model
from cccmr_model.release import RELEASE_PREFIXES, load_release, write_release

METRICS = {
    "pooled": {"auc": {"value": 0.81, "ci_low": 0.7, "ci_high": 0.9}, "accuracy": 0.75, "n": 40},
    "sites": {"anzhen": {"auc": {"value": 0.8, "ci_low": 0.6, "ci_high": 0.95}}, "lanzhou": {"auc": 0.83}},
}
TRAINING = {
    "mode": "federated",
    "sites": {"anzhen": {"subjects": 30, "with_lge": 25}, "lanzhou": {"subjects": 20, "with_lge": 12}},
    "phases": {"pretrain": {"rounds": 2, "local_epochs": 1}, "fusion": {"rounds": 1, "local_epochs": 2}},
}


@pytest.fixture(scope="module")
def config():
    return load_config("tiny")


@pytest.fixture(scope="module")
def full_state(config) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(config, with_lge=True).state_dict()


@pytest.fixture()
def release_dir(tmp_path: Path, config, full_state) -> Path:
    return write_release(tmp_path / "release", state=full_state, config=config, metrics=METRICS, training_info=TRAINING)


def test_release_keeps_only_cine_encoders_and_fusion(release_dir: Path, full_state) -> None:
    weights = load_file(str(release_dir / "model.safetensors"))
    assert all(k.startswith(RELEASE_PREFIXES) for k in weights)
    for prefix in RELEASE_PREFIXES:
        assert any(k.startswith(prefix) for k in weights), prefix
    assert not any(k.startswith(("encoders.lge_sax.", "heads.", "uncertainty.")) for k in weights)
    assert any(k.startswith("encoders.lge_sax.") for k in full_state)  # the filter had something to drop
    for key, tensor in weights.items():
        torch.testing.assert_close(tensor, full_state[key].float())


def test_release_files_and_card(release_dir: Path) -> None:
    names = {p.name for p in release_dir.iterdir()}
    expected = {"model.safetensors", "config.yaml", "metrics.json", "training.json", "MODEL_CARD.md", "release.json"}
    assert names == expected
    manifest = json.loads((release_dir / "release.json").read_text())
    assert manifest["format_version"] == 1 and manifest["config_version"] == 1
    assert len(manifest["content_hash"]) == 64
    card = (release_dir / "MODEL_CARD.md").read_text()
    for text in ("Intended use", "Limits", "anzhen", "lanzhou", "| 30 |", "pretrain", "0.810", "0.700 - 0.900"):
        assert text in card, text
    assert "No differential privacy was applied to this model" in card and "no epsilon" in card
    assert "| n | 40 |" in card
    assert "## Saliency overlays: what they are and are not" in card and "not a segmentation" in card
    assert "grid of 4 x 4 cells of 16 x 16 input pixels" in card or "grid of 14 x 14 cells" in card
    umask = os.umask(0)
    os.umask(umask)
    assert (release_dir / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not owner-only
    assert json.loads((release_dir / "metrics.json").read_text()) == METRICS


def test_load_release_roundtrip(release_dir: Path, config, full_state) -> None:
    release = load_release(release_dir)
    assert release.config == config
    assert release.metrics == METRICS
    assert not any(k.startswith("encoders.lge_sax.") for k in release.model.state_dict())
    for key, tensor in release.model.state_dict().items():
        if key.startswith(RELEASE_PREFIXES):
            torch.testing.assert_close(tensor, full_state[key])
    x4 = torch.randn(2, 1, config.data.frames, config.data.image_size, config.data.image_size)  # B, C, T, H, W
    xs = torch.randn(2, 3, config.data.frames, config.data.image_size, config.data.image_size)
    reference = build_model(config, with_lge=True).eval()
    reference.load_state_dict(full_state)
    with torch.no_grad():
        torch.testing.assert_close(release.model.predict(x4, xs), reference.predict(x4, xs))


def test_rewrite_replaces_release(release_dir: Path, config, full_state) -> None:
    write_release(
        release_dir, state=full_state, config=config, metrics={"pooled": {"auc": 0.5}}, training_info=TRAINING
    )
    assert load_release(release_dir).metrics == {"pooled": {"auc": 0.5}}
    assert sorted(p.name for p in release_dir.parent.iterdir()) == ["release"]  # no temporary folders left


def test_refuses_to_overwrite_other_folder(tmp_path: Path, config, full_state) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(CccmrError, match="not a release"):
        write_release(tmp_path, state=full_state, config=config, metrics=METRICS, training_info=TRAINING)


@pytest.mark.parametrize("name", ["model.safetensors", "config.yaml", "metrics.json", "MODEL_CARD.md"])
def test_tampered_file_is_named(release_dir: Path, name: str) -> None:
    file = release_dir / name
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    with pytest.raises(CccmrError, match=rf"{name}: sha256 does not match .*corrupt or was modified"):
        load_release(release_dir)


def test_missing_file_is_named(release_dir: Path) -> None:
    (release_dir / "config.yaml").unlink()
    with pytest.raises(CccmrError, match=r"config.yaml: missing"):
        load_release(release_dir)


def test_not_a_release(tmp_path: Path) -> None:
    with pytest.raises(CccmrError, match=r"release.json: missing"):
        load_release(tmp_path)
    with pytest.raises(CccmrError, match="release folder not found"):
        load_release(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("field", "message"), [("format_version", "release format version 99"), ("config_version", "config version 99")]
)
def test_unsupported_version(release_dir: Path, field: str, message: str) -> None:
    manifest = json.loads((release_dir / "release.json").read_text())
    manifest[field] = 99
    (release_dir / "release.json").write_text(json.dumps(manifest))
    with pytest.raises(CccmrError, match=rf"release.json: {message} is not supported"):
        load_release(release_dir)


def _rewrite_weights(release_dir: Path, weights: dict[str, torch.Tensor]) -> None:
    """Replace the weights and re-sign the manifest, as a careless or malicious publisher would."""
    from cccmr_model.release.files import content_hash, file_sha256

    save_file(weights, str(release_dir / "model.safetensors"))
    manifest = json.loads((release_dir / "release.json").read_text())
    manifest["files"]["model.safetensors"] = file_sha256(release_dir / "model.safetensors")
    manifest["content_hash"] = content_hash(manifest["files"])
    (release_dir / "release.json").write_text(json.dumps(manifest))


def test_edited_manifest_hash_is_caught(release_dir: Path) -> None:
    manifest = json.loads((release_dir / "release.json").read_text())
    manifest["content_hash"] = "0" * 64
    (release_dir / "release.json").write_text(json.dumps(manifest))
    with pytest.raises(CccmrError, match="content_hash does not match"):
        load_release(release_dir)


def test_weight_key_problems_are_named(release_dir: Path) -> None:
    weights = load_file(str(release_dir / "model.safetensors"))
    fusion_key = next(k for k in weights if k.startswith("fusion."))
    missing = {k: v for k, v in weights.items() if k != fusion_key}
    _rewrite_weights(release_dir, missing)
    with pytest.raises(CccmrError, match=rf"model.safetensors: 1 weight\(s\) missing, e.g. {fusion_key}"):
        load_release(release_dir)
    _rewrite_weights(release_dir, {**weights, "heads.lge_sax.weight": torch.zeros(2, 2)})
    with pytest.raises(CccmrError, match=r"unexpected weight\(s\), e.g. heads.lge_sax.weight"):
        load_release(release_dir)
    _rewrite_weights(release_dir, {**weights, fusion_key: torch.zeros(*weights[fusion_key].shape, 2)})
    with pytest.raises(CccmrError, match=rf"wrong shape, e.g. {fusion_key}"):
        load_release(release_dir)


def test_write_rejects_incomplete_state(tmp_path: Path, config, full_state) -> None:
    lge_only = {k: v for k, v in full_state.items() if not k.startswith("fusion.")}
    with pytest.raises(CccmrError, match=r"write_release: .*missing, e.g. fusion\."):
        write_release(tmp_path / "r", state=lge_only, config=config, metrics=METRICS, training_info=TRAINING)
    with pytest.raises(CccmrError, match=r"training_info\['mode'\]"):
        write_release(tmp_path / "r", state=full_state, config=config, metrics=METRICS, training_info={})
    assert not (tmp_path / "r").exists()


def test_card_lays_out_evaluation_reports(tmp_path: Path, config, full_state) -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 1] * 10)
    scores = np.clip(labels * 0.4 + rng.random(20) * 0.6, 0, 1)
    report = evaluation_report("screening", np.stack([1 - scores, scores], 1), labels, resamples=20)
    metrics = {"pooled": report, "sites": {"anzhen": report}}
    out = write_release(tmp_path / "r", state=full_state, config=config, metrics=metrics, training_info=TRAINING)
    card = (out / "MODEL_CARD.md").read_text()
    auc = report["metrics"]["auc"]
    assert f"{auc['value']:.3f} ({auc['ci_low']:.3f}, {auc['ci_high']:.3f})" in card
    assert "| pooled |" in card and "| sites / anzhen |" in card and "Subjects evaluated: pooled: 20" in card


def test_release_loads_without_the_training_sites_pretrained_files(tmp_path: Path) -> None:
    config = load_config(
        "tiny", ["model.encoder.stem=patch", "model.encoder.pretrained.cine_4ch=/training/site/only/swin_k600.pth"]
    )
    torch.manual_seed(0)
    patch_state = build_model(without_pretrained(config)).state_dict()  # published weights need the patch stem
    out = write_release(tmp_path / "r", state=patch_state, config=config, metrics=METRICS, training_info=TRAINING)
    release = load_release(out)
    assert release.config.model.encoder.pretrained["cine_4ch"] == "/training/site/only/swin_k600.pth"
    key = next(k for k in patch_state if k.startswith("encoders.cine_4ch."))
    torch.testing.assert_close(release.model.state_dict()[key], patch_state[key])


DP_SETS = ["privacy.dp_sgd.enabled=true", "privacy.central_dp.enabled=true", "federation.phases.fim.rounds=0"]


def test_card_states_the_privacy_achieved(tmp_path: Path, full_state) -> None:
    config = load_config("tiny", DP_SETS)
    achieved = {
        "dp_sgd": {"epsilon_by_site": {"anzhen": 2.3456789012, "lanzhou": 1.9012345678}},
        "central_dp": {"epsilon": 4.56789012345, "rounds": 3},
    }
    training = {**TRAINING, "privacy": achieved}
    out = write_release(tmp_path / "r", state=full_state, config=config, metrics=METRICS, training_info=training)
    card = (out / "MODEL_CARD.md").read_text()
    assert "epsilon at delta 1e-05 per site: anzhen 2.35, lanzhou 1.9." in card
    assert "epsilon 4.57 at delta 1e-05 over 3 round(s)" in card
    assert "No differential privacy" not in card and "2.3456789" not in card
    privacy = json.loads((out / "training.json").read_text())["privacy"]
    assert privacy["dp_sgd"]["applied"] and privacy["dp_sgd"]["epsilon_by_site"]["anzhen"] == 2.3456789012
    assert privacy["central_dp"]["applied"] and privacy["central_dp"]["noise_multiplier"] == 1.0


@pytest.mark.parametrize(
    ("sets", "privacy", "message"),
    [
        (["privacy.dp_sgd.enabled=true"], {}, r"privacy\.dp_sgd\.enabled is set but the training reports no dp_sgd"),
        (["privacy.central_dp.enabled=true"], {}, r"privacy\.central_dp\.enabled is set but .* no central_dp"),
        ([], {"dp_sgd": {"epsilon_by_site": {"anzhen": 1.0}}}, r"reports dp_sgd but privacy\.dp_sgd\.enabled is false"),
    ],
)
def test_privacy_not_applied_is_never_claimed(tmp_path: Path, full_state, sets, privacy, message) -> None:
    config = load_config("tiny", sets)
    training = {**TRAINING, "privacy": privacy}
    with pytest.raises(CccmrError, match=message):
        write_release(tmp_path / "r", state=full_state, config=config, metrics=METRICS, training_info=training)
    assert not (tmp_path / "r").exists()


def test_card_phase_table_is_rounded_and_one_row_per_quantity(tmp_path: Path, config, full_state) -> None:
    phase = {
        "epochs": 2, "num_examples": 48, "loss": 0.6931471805599453, "cls:cine_4ch": 0.7012345678901234,
        "acc:cine_4ch": 0.5416666666666666, "auc:cine_4ch": 0.6180555555555556, "constant:cine_sax": 1.0,
        "lr": 3.0000000000000004e-05, "samples_per_s": 12.345678901234, "train_seconds": 3.888888888888,
        "val_auc:cine_4ch": 0.5833333333333334,
    }  # fmt: skip
    phases = {"pretrain": phase, "fim": {**phase, "sigma:cine_4ch": 1.0123456789}, "fusion": {"epochs": 1}}
    training = {**TRAINING, "mode": "central", "phases": phases}
    out = write_release(tmp_path / "r", state=full_state, config=config, metrics=METRICS, training_info=training)
    card = (out / "MODEL_CARD.md").read_text()
    table = card.split("## Training phases")[1].split("##")[0].strip().splitlines()
    assert table[0] == "| | pretrain | fim | fusion |"
    assert all(row.count("|") == 5 for row in table)
    for row in (
        "| epochs | 2 | 2 | 1 |",
        "| training samples seen | 48 | 48 | – |",
        "| final training loss | 0.693 | 0.693 | – |",
        "| accuracy, cine_4ch | 0.542 | 0.542 | – |",
        "| validation AUC, cine_4ch | 0.583 | 0.583 | – |",
        "| constant prediction, cine_sax | yes | yes | – |",
        "| uncertainty σ, cine_4ch | – | 1.01 | – |",
        "| final learning rate | 3.00e-05 | 3.00e-05 | – |",
    ):
        assert row in table, row
    assert not any(len(part) > 10 for row in table for part in row.split("|")[2:])  # no 16-digit floats
    assert "central" in card and "pooled in one place" in card
