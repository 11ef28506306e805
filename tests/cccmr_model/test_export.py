"""`cccmr export --format onnx`: the cine-only predictor in ONNX agrees with PyTorch (onnxruntime, <= 1e-4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cccmr_model.cli import main
from cccmr_model.config import load_config
from cccmr_model.export import TOLERANCE, check_onnx, example_inputs
from cccmr_model.model import build_model
from cccmr_model.predict import CinePredictor
from cccmr_model.release import load_release, write_release

pytestmark = pytest.mark.slow  # each export traces the tiny model (~5-10 s on 2 shared cores)

TRAINING = {"mode": "central", "sites": {"demo": {"subjects": 4}}, "phases": {"fusion": {"epochs": 1}}}


def _release(root: Path, task: str = "screening") -> Path:
    config = load_config("tiny", [f"task={task}"])
    torch.manual_seed(1)
    state = build_model(config).state_dict()
    return write_release(root / f"release-{task}", state=state, config=config, metrics={}, training_info=TRAINING)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    release_dir = _release(root)
    assert main(["export", "--release", str(release_dir), "--format", "onnx"]) == 0
    return release_dir, root / "release-screening.onnx"


def test_onnx_matches_pytorch(exported: tuple[Path, Path]) -> None:
    release_dir, onnx_path = exported
    release = load_release(release_dir)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["cine_4ch", "cine_sax"]
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    predictor = CinePredictor(release.model).eval()
    for batch in (1, 2, 4):  # dynamic batch
        cine_4ch, cine_sax = example_inputs(release, batch, seed=10 + batch)
        with torch.no_grad():
            expected = predictor(cine_4ch, cine_sax).numpy()
        (got,) = session.run(None, {"cine_4ch": cine_4ch.numpy(), "cine_sax": cine_sax.numpy()})
        assert got.shape == (batch, 2)
        assert np.abs(got - expected).max() <= TOLERANCE
        assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_onnx_metadata_names_the_release(exported: tuple[Path, Path]) -> None:
    release_dir, onnx_path = exported
    release = load_release(release_dir)
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["cccmr_release_content_hash"] == release.content_hash
    assert meta["task"] == "screening" and json.loads(meta["classes"]) == ["healthy", "cardiomyopathy"]
    assert json.loads(meta["input_shape_cine_sax"]) == ["batch", 3, 8, 64, 64]
    assert float(meta["threshold"]) == release.config.evaluation.threshold


def test_parity_check_can_fail(exported: tuple[Path, Path]) -> None:
    """The check is not vacuous: against other weights the same graph differs by far more than the tolerance."""
    release_dir, onnx_path = exported
    other = load_release(release_dir)
    with torch.no_grad():
        for parameter in other.model.fusion.parameters():
            parameter.add_(0.5)
    assert check_onnx(onnx_path, other) > 100 * TOLERANCE


def test_subtyping_export_has_five_outputs(tmp_path: Path) -> None:
    release_dir = _release(tmp_path, task="subtyping")
    out = tmp_path / "sub.onnx"
    assert main(["export", "--release", str(release_dir), "--out", str(out)]) == 0
    release = load_release(release_dir)
    assert check_onnx(out, release, batches=(2,)) <= TOLERANCE
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == ["HCM", "DCM", "NDLVC", "RCM", "ARVC"]


def test_export_refuses_a_tampered_release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release_dir = _release(tmp_path)
    weights = release_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    assert main(["export", "--release", str(release_dir), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "model.safetensors: sha256 does not match" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
