"""`cccmr predict`: DICOM cine in, the release's preprocessing, P(cardiomyopathy) and the call out; LGE never read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cccmr_model.cli import main
from cccmr_model.config import load_config
from cccmr_model.data import load_series, preprocess_series
from cccmr_model.data.localise import choose_centre
from cccmr_model.data.orientation import display_order
from cccmr_model.model import build_model
from cccmr_model.phantom.dicom_writer import Encoding, Geometry, Sampling, SeriesTags, write_series
from cccmr_model.predict import Predictor
from cccmr_model.release import load_release, write_release

TRAINING = {"mode": "central", "sites": {"demo": {"subjects": 4}}, "phases": {"fusion": {"epochs": 1}}}
ROW, COL = (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)


def _cine(out: Path, slices: int, frames: int = 10, size: int = 72, seed: int = 0, enhanced: bool = False) -> Path:
    """A beating-disc cine series (S, F, size, size) at 3 mm pixels, 8 mm apart, 40 ms per frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    radius = 10 + 4 * np.sin(2 * np.pi * np.arange(frames) / frames)  # F
    disc = (np.hypot(yy, xx)[None] < radius[:, None, None]).astype(np.float32)  # F, R, C
    array = 200 + 600 * disc[None] + rng.normal(0, 20, (slices, frames, size, size))  # S, F, R, C
    trigger = np.tile(np.arange(frames) * 40.0, (slices, 1))
    write_series(
        out,
        array.astype(np.float32),
        Sampling(Geometry.stack([0, 0, 0], ROW, COL, slices, 8.0), (3.0, 3.0), 8.0, trigger),
        tags=SeriesTags(series_description="cine"),
        encoding=Encoding(enhanced=enhanced),
    )
    return out


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("subject")
    return {
        "cine_4ch": _cine(root / "s1" / "cine_4ch", slices=1, seed=1),
        "cine_sax": _cine(root / "s1" / "cine_sax.dcm", slices=5, seed=2, enhanced=True),
        "bad_sax": _cine(root / "s2" / "cine_sax", slices=2, seed=3),  # too few slices for 3 SAX channels
        "root": root,
    }


def _release(root: Path, task: str = "screening", threshold: float = 0.5) -> Path:
    config = load_config("tiny", [f"task={task}", f"evaluation.threshold={threshold}"])
    torch.manual_seed(0)
    state = build_model(config).state_dict()
    return write_release(
        root / f"release-{task}-{threshold}", state=state, config=config, metrics={}, training_info=TRAINING
    )


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _release(tmp_path_factory.mktemp("rel"))


def test_predict_matches_release_preprocessing_and_model(release_dir: Path, subject, capsys) -> None:
    release = load_release(release_dir)
    data = release.config.data
    sax = load_series(subject["cine_sax"])
    centre = choose_centre(sax, "cine_sax", data.crop)  # the SAX heart point centres the 4CH too
    four = load_series(subject["cine_4ch"])
    four_centre = choose_centre(four, "cine_4ch", data.crop, centre.point_mm)
    sax_input = preprocess_series(sax, "cine_sax", data, centre.point_mm)  # its normal turns the 4CH
    inputs = [
        preprocess_series(four, "cine_4ch", data, four_centre.point_mm, sax_input.slice_normal).array[None],
        sax_input.array[None],  # 1, S, T, H, W
    ]
    assert inputs[0].shape == (1, 1, 8, 64, 64) and inputs[1].shape == (1, 3, 8, 64, 64)
    with torch.no_grad():
        logits = release.model.predict(torch.from_numpy(inputs[0]), torch.from_numpy(inputs[1]))
    expected = torch.softmax(logits, dim=1)[0, 1].item()

    prediction = Predictor(release).predict_files(subject["cine_4ch"], subject["cine_sax"])
    assert prediction.p_cardiomyopathy == pytest.approx(expected, abs=1e-6)
    assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-6)

    argv = ["predict", "--release", str(release_dir), "--cine-4ch", str(subject["cine_4ch"])]
    assert main([*argv, "--cine-sax", str(subject["cine_sax"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["p_cardiomyopathy"] == pytest.approx(expected, abs=1e-6)
    assert out["call"] == ("cardiomyopathy" if expected >= 0.5 else "healthy")
    assert out["release_content_hash"] == release.content_hash
    # both series are stored with rows left-right and columns head-feet: the SAX display, not the 4CH's (apex up)
    assert out["display_order"] == {
        "cine_4ch": {"turns": 2, "mirrored": True, "described": "turned 180 deg, mirrored"},
        "cine_sax": {"turns": 0, "mirrored": False, "described": "as stored"},
    }
    assert out["display_order"]["cine_4ch"]["turns"] == display_order(four, "cine_4ch").turns
    assert main([*argv, "--cine-sax", str(subject["cine_sax"])]) == 0
    text = capsys.readouterr().out
    assert f"P(cardiomyopathy): {expected:.4f}" in text and "threshold 0.5" in text


def test_threshold_comes_from_the_release(tmp_path: Path, subject) -> None:
    p = Predictor(load_release(_release(tmp_path, threshold=0.01))).predict_files(
        subject["cine_4ch"], subject["cine_sax"]
    )
    assert p.threshold == 0.01 and p.call == ("cardiomyopathy" if p.probabilities[1] >= 0.01 else "healthy")
    high = Predictor(load_release(_release(tmp_path, threshold=0.99))).predict_files(
        subject["cine_4ch"], subject["cine_sax"]
    )
    assert high.probabilities == p.probabilities
    assert (p.call, high.call) == ("cardiomyopathy", "healthy")  # random tiny weights give a p far from 0 and 1


def test_subtyping_release(tmp_path: Path, subject, capsys) -> None:
    release_dir = _release(tmp_path, task="subtyping")
    argv = ["predict", "--release", str(release_dir), "--cine-4ch", str(subject["cine_4ch"])]
    assert main([*argv, "--cine-sax", str(subject["cine_sax"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    probabilities = out["subtype_probabilities"]
    assert list(probabilities) == ["HCM", "DCM", "NDLVC", "RCM", "ARVC"]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert out["call"] == max(probabilities, key=probabilities.get)
    assert "p_cardiomyopathy" not in out


def test_unusable_series_gives_ingestion_reason(release_dir: Path, subject, capsys) -> None:
    argv = ["predict", "--quiet", "--release", str(release_dir), "--cine-4ch", str(subject["cine_4ch"])]
    assert main([*argv, "--cine-sax", str(subject["bad_sax"])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("cccmr predict: error: ")
    assert str(subject["bad_sax"]) in err and "too few slices for cine_sax: 2 < 3" in err
    assert main([*argv, "--cine-sax", str(subject["root"] / "nowhere")]) == 2
    assert "cine_sax series not found" in capsys.readouterr().err


def test_a_sax_stack_given_as_the_4ch_gives_no_prediction(release_dir: Path, subject, capsys) -> None:
    sax = str(subject["cine_sax"])
    assert main(["predict", "--quiet", "--release", str(release_dir), "--cine-4ch", sax, "--cine-sax", sax]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{sax}: cine_4ch: 5 slice positions 8 mm apart" in err


def test_no_lge_option_and_argument_errors(release_dir: Path, subject, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "--release", str(release_dir), "--lge-sax", str(subject["cine_sax"])])
    capsys.readouterr()
    assert main(["predict", "--release", str(release_dir), "--cine-4ch", str(subject["cine_4ch"])]) == 2
    assert "both --cine-4ch and --cine-sax" in capsys.readouterr().err
    assert main(["predict", "--release", str(release_dir), "--manifest", "m.csv"]) == 2
    assert "--manifest needs --out" in capsys.readouterr().err


def test_tampered_release_is_refused(tmp_path: Path, subject, capsys) -> None:
    release_dir = _release(tmp_path)
    (release_dir / "config.yaml").write_text((release_dir / "config.yaml").read_text().replace("0.5", "0.05"))
    argv = ["predict", "--release", str(release_dir), "--cine-4ch", str(subject["cine_4ch"])]
    assert main([*argv, "--cine-sax", str(subject["cine_sax"])]) == 2
    assert "config.yaml: sha256 does not match" in capsys.readouterr().err


def test_batch_manifest(release_dir: Path, subject, tmp_path: Path, capsys) -> None:
    root = subject["root"]
    manifest = root / "predict.csv"
    manifest.write_text(
        "# a comment line\nsubject_id,cine_4ch,cine_sax,lge_sax\n"
        "s1,s1/cine_4ch,s1/cine_sax.dcm,s1/never_read\n"
        "s2,s1/cine_4ch,s2/cine_sax,\n"
    )
    out = tmp_path / "results" / "predictions.csv"
    assert main(["predict", "--release", str(release_dir), "--manifest", str(manifest), "--out", str(out)]) == 2
    assert "1 of 2 subject(s) could not be scored" in capsys.readouterr().out
    rows = list(csv.DictReader(out.open()))
    assert [r["subject_id"] for r in rows] == ["s1", "s2"]
    assert rows[0]["status"] == "ok" and rows[0]["reason"] == ""
    single = Predictor(load_release(release_dir)).predict_files(subject["cine_4ch"], subject["cine_sax"])
    assert float(rows[0]["p_cardiomyopathy"]) == pytest.approx(single.p_cardiomyopathy, abs=1e-6)
    assert rows[0]["call"] == single.call
    assert rows[1]["status"] == "rejected" and "too few slices" in rows[1]["reason"]
    assert rows[1]["p_cardiomyopathy"] == ""


def test_batch_manifest_errors(release_dir: Path, tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject_id,cine_4ch\ns1,a\n")
    assert main(["predict", "--release", str(release_dir), "--manifest", str(manifest), "--out", "o.csv"]) == 2
    assert "m.csv: manifest lacks column(s) cine_sax" in capsys.readouterr().err
    manifest.write_text("subject_id,cine_4ch,cine_sax\ns1,a,b\ns1,a,b\n")
    assert main(["predict", "--release", str(release_dir), "--manifest", str(manifest), "--out", "o.csv"]) == 2
    assert "subject_id s1 appears twice" in capsys.readouterr().err


def test_cuda_request_without_cuda(release_dir: Path, subject, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    argv = ["predict", "--release", str(release_dir), "--cine-4ch", str(subject["cine_4ch"])]
    assert main([*argv, "--cine-sax", str(subject["cine_sax"]), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.gpu
def test_predict_on_cuda_matches_cpu(release_dir: Path, subject) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    release = load_release(release_dir)
    cpu = Predictor(release, "cpu").predict_files(subject["cine_4ch"], subject["cine_sax"])
    gpu = Predictor(load_release(release_dir), "cuda")
    assert gpu.bf16  # the default on CUDA
    bf16 = gpu.predict_files(subject["cine_4ch"], subject["cine_sax"])
    fp32 = Predictor(load_release(release_dir), "cuda", "fp32").predict_files(subject["cine_4ch"], subject["cine_sax"])
    assert np.allclose(cpu.probabilities, fp32.probabilities, atol=1e-4)
    assert np.allclose(cpu.probabilities, bf16.probabilities, atol=0.02)


def test_bf16_autocast_scores_like_fp32(release_dir: Path, subject) -> None:
    """The bf16 path that CUDA takes by default, run under CPU autocast: the same model, the same call."""
    release = load_release(release_dir)
    assert not Predictor(release, "cpu").bf16  # auto: fp32 on the CPU
    fp32 = Predictor(release, "cpu", "fp32").predict_files(subject["cine_4ch"], subject["cine_sax"])
    predictor = Predictor(load_release(release_dir), "cpu", "bf16")
    inputs = predictor.read_subject(subject["cine_4ch"], subject["cine_sax"])
    four, sax = inputs.cine_4ch.array[None], inputs.cine_sax.array[None]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):  # proves autocast reaches the model's matmuls
        logits = predictor.module.model.predict(torch.from_numpy(four), torch.from_numpy(sax))
    assert logits.dtype == torch.bfloat16
    bf16 = predictor.predict_inputs(inputs)
    assert bf16.probabilities != fp32.probabilities  # it did run in bf16
    assert np.allclose(bf16.probabilities, fp32.probabilities, atol=0.02)
    assert bf16.call == fp32.call or abs(fp32.p_cardiomyopathy - fp32.threshold) < 0.02


def test_unknown_precision_is_refused(release_dir: Path, subject, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "--release", str(release_dir), "--cine-4ch", "a", "--cine-sax", "b", "--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def test_non_finite_probability_is_refused(tmp_path: Path, subject, capsys) -> None:
    config = load_config("tiny")
    torch.manual_seed(0)
    state = build_model(config).state_dict()
    name = next(k for k in state if k.startswith("fusion.") and k.endswith("weight"))
    state[name] = torch.full_like(state[name], float("nan"))
    release_dir = write_release(tmp_path / "nan", state=state, config=config, metrics={}, training_info=TRAINING)
    argv = ["predict", "--quiet", "--release", str(release_dir), "--cine-4ch", str(subject["cine_4ch"])]
    assert main([*argv, "--cine-sax", str(subject["cine_sax"]), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "non-finite probability" in captured.err and str(release_dir) in captured.err
    manifest = subject["root"] / "predict-nan.csv"
    manifest.write_text("subject_id,cine_4ch,cine_sax\ns1,s1/cine_4ch,s1/cine_sax.dcm\n")
    out = tmp_path / "predictions.csv"
    assert (
        main(["predict", "--quiet", "--release", str(release_dir), "--manifest", str(manifest), "--out", str(out)]) == 2
    )
    rows = list(csv.DictReader(out.open()))
    assert rows[0]["status"] == "rejected" and "non-finite probability" in rows[0]["reason"]
    assert "nan" not in rows[0]["p_cardiomyopathy"].lower() and rows[0]["call"] == ""


def test_non_utf8_batch_manifest_is_one_line(tmp_path: Path) -> None:
    from cccmr_model.errors import DataError
    from cccmr_model.predict import read_predict_manifest

    manifest = tmp_path / "batch.csv"
    manifest.write_bytes("subject_id,cine_4ch,cine_sax\ns1,Ménard/4ch,Ménard/sax\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"batch\.csv: manifest is not UTF-8 text \(byte 0xe9"):
        read_predict_manifest(manifest)
