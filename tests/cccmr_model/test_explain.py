"""`cccmr predict --explain`: saliency overlays per cine sequence, what weighs most, Adebayo-style sanity checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cccmr_model.cli import main
from cccmr_model.config import load_config
from cccmr_model.explain.overlays import end_systole
from cccmr_model.explain.saliency import (
    FromProbes,
    below_probe,
    explain_arrays,
    hires_cam,
    mass_fraction,
    rank_correlation,
)
from cccmr_model.model import build_model
from cccmr_model.phantom.dicom_writer import Geometry, Sampling, SeriesTags, write_series
from cccmr_model.release import write_release
from cccmr_model.sequences import CINE_4CH, CINE_SAX, CINE_SEQUENCES

TRAINING = {"mode": "central", "sites": {"demo": {"subjects": 4}}, "phases": {"fusion": {"epochs": 1}}}
ROW, COL = (1.0, 0.0, 0.0), (0.0, 0.0, -1.0)
PATIENT = SeriesTags(patient_name="Doe^Jane", patient_id="MRN-0042", study_uid="1.2.826.0.1.3680043.8.498.1")


def _cine(out: Path, slices: int, tags: SeriesTags, frames: int = 10, size: int = 72, seed: int = 0) -> Path:
    """A beating-disc cine series (S, F, size, size): 3 mm pixels, 8 mm apart, 40 ms per frame."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    radius = 10 + 4 * np.cos(2 * np.pi * np.arange(frames) / frames)  # F: largest at frame 0 (ED)
    disc = (np.hypot(yy, xx)[None] < radius[:, None, None]).astype(np.float32)  # F, R, C
    array = 200 + 600 * disc[None] + rng.normal(0, 20, (slices, frames, size, size))  # S, F, R, C
    write_series(
        out,
        array.astype(np.float32),
        Sampling(
            Geometry.stack([0, 0, 0], ROW, COL, slices, 8.0),
            (3.0, 3.0),
            8.0,
            np.tile(np.arange(frames) * 40.0, (slices, 1)),
        ),
        tags=tags,
    )
    return out


def _release(root: Path, seed: int = 0) -> Path:
    config = load_config("tiny")
    torch.manual_seed(seed)
    state = build_model(config).state_dict()
    return write_release(root / f"release-{seed}", state=state, config=config, metrics={}, training_info=TRAINING)


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("subject")
    return {
        CINE_4CH: _cine(root / "s1" / "cine_4ch", 1, PATIENT, seed=1),
        CINE_SAX: _cine(root / "s1" / "cine_sax", 5, PATIENT, seed=2),
        "root": root,
    }


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _release(tmp_path_factory.mktemp("rel"))


def _argv(release_dir: Path, subject: dict[str, Path]) -> list[str]:
    return ["predict", "--release", str(release_dir), "--cine-4ch", str(subject[CINE_4CH]),
            "--cine-sax", str(subject[CINE_SAX])]  # fmt: skip


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_probed_model_is_the_released_model(stage: int) -> None:
    torch.manual_seed(0)
    model = build_model(load_config("tiny"), with_lge=False).eval()
    x = {CINE_4CH: torch.randn(2, 1, 8, 64, 64), CINE_SAX: torch.randn(2, 3, 8, 64, 64)}
    tokens = {seq: below_probe(model.encoders[seq], x[seq], stage) for seq in CINE_SEQUENCES}
    with torch.no_grad():
        expected = torch.log_softmax(model.predict(x[CINE_4CH], x[CINE_SAX]), dim=1)  # 2, C
        got = FromProbes(model, stage)(tokens[CINE_4CH], tokens[CINE_SAX])
    assert torch.allclose(got, expected, atol=1e-5)


def test_explain_writes_overlays_and_names_frames_and_slices(release_dir: Path, subject, tmp_path: Path) -> None:
    out = tmp_path / "explain"
    assert main([*_argv(release_dir, subject), "--explain", str(out)]) == 0
    summary = json.loads((out / "explanation.json").read_text())
    for seq in CINE_SEQUENCES:
        for phase in ("ed", "es"):
            with Image.open(out / f"{seq}_{phase}.png") as png:
                assert png.mode == "RGB" and png.height >= 256
        with Image.open(out / f"{seq}.gif") as gif:
            assert gif.n_frames == 8  # the tiny config's frames
        entry = summary["sequences"][seq]
        assert len(entry["top_frames"]) == 3 and sum(entry["frame_share"]) == pytest.approx(1, abs=1e-3)
        shares = [f["share"] for f in entry["top_frames"]]
        assert shares == sorted(shares, reverse=True) and all(f["ms_after_r"] is not None for f in entry["top_frames"])
    slices = summary["sequences"][CINE_SAX]["top_slices"]
    assert sorted(s["series_slice"] for s in slices) == [1, 2, 3]  # the 3 middle slices of 5
    assert summary["explained_class"] in ("healthy", "cardiomyopathy") and summary["ed_frame"] == 0
    text = (out / "explanation.json").read_text()
    assert "Doe" not in text and "MRN-0042" not in text  # no patient identifiers


def test_end_systole_is_the_smallest_blood_pool() -> None:
    frames = np.full((3, 8, 32, 32), -1.0, np.float32)  # S, T, H, W
    yy, xx = np.mgrid[:32, :32] - 15.5
    for t, radius in enumerate([7, 6, 5, 3, 4, 5, 6, 7]):
        frames[:, t][:, np.hypot(yy, xx) < radius] = 2.0
    assert end_systole(frames) == 3


def test_randomised_weights_change_the_map() -> None:
    """Adebayo et al. 2018, model randomisation: a map that survives re-initialised weights explains nothing."""
    config = load_config("tiny")
    x4, xs = _localised_inputs(np.random.default_rng(0), abnormal=True, quadrant=2)
    torch.manual_seed(0)
    model = build_model(config, with_lge=False).eval()
    torch.manual_seed(1)
    randomised = build_model(config, with_lge=False).eval()
    a = explain_arrays(model, x4, xs, 1, "cardiomyopathy", slices=False)
    b = explain_arrays(randomised, x4, xs, 1, "cardiomyopathy", slices=False)
    for seq in CINE_SEQUENCES:
        assert rank_correlation(a.sequences[seq].cam, b.sequences[seq].cam) < 0.5


# ---- phantom subjects with a known localised abnormality ----

SIZE, FRAMES = 64, 8


def _localised_inputs(rng: np.random.Generator, abnormal: bool, quadrant: int) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (1, T, H, W), (3, T, H, W): a beating ventricle; abnormal subjects add a bright lesion in one
    in-plane quadrant of every SAX slice (0: top left, 1: top right, 2: bottom left, 3: bottom right)."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    radius = 9 + 3 * np.cos(2 * np.pi * np.arange(FRAMES) / FRAMES)  # T
    ring = np.abs(np.hypot(yy, xx)[None] - radius[:, None, None] - 4) < 3  # T, H, W
    base = np.where(ring, 1.0, 0.0)[None] + rng.normal(0, 0.3, (4, FRAMES, SIZE, SIZE))  # 4, T, H, W
    if abnormal:
        row = (SIZE // 4) + (quadrant // 2) * (SIZE // 2) + rng.integers(-4, 5)
        col = (SIZE // 4) + (quadrant % 2) * (SIZE // 2) + rng.integers(-4, 5)
        lesion = np.hypot(np.arange(SIZE)[:, None] - row, np.arange(SIZE)[None] - col) < 5  # H, W
        base[1:, :, lesion] += 2.0
    base = ((base - 0.3) / 0.6).astype(np.float32)  # fixed scaling: no global cue of the lesion
    return base[:1], base[1:]


def _quadrant_mask(quadrant: int) -> np.ndarray:
    mask = np.zeros((FRAMES, SIZE, SIZE), bool)
    r, c = (quadrant // 2) * (SIZE // 2), (quadrant % 2) * (SIZE // 2)
    mask[:, r : r + SIZE // 2, c : c + SIZE // 2] = True
    return mask


def _train_on_lesions(steps: int, seed: int = 0) -> torch.nn.Module:
    """The tiny cine model trained (fusion path, cross-entropy) to call the lesion subjects."""
    torch.manual_seed(seed)
    model = build_model(load_config("tiny"), with_lge=False)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        labels = rng.integers(0, 2, 8)
        pairs = [_localised_inputs(rng, bool(y), int(rng.integers(4))) for y in labels]
        x4 = torch.from_numpy(np.stack([p[0] for p in pairs]))  # B, 1, T, H, W
        xs = torch.from_numpy(np.stack([p[1] for p in pairs]))  # B, 3, T, H, W
        loss = torch.nn.functional.cross_entropy(model.predict(x4, xs), torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.mark.slow
def test_map_mass_lies_in_the_known_abnormality() -> None:
    """On subjects with a lesion in a known quadrant, the SAX map's mass there beats chance (1/4) and beats the same
    model with randomised weights; the trained map also differs from the randomised one (Adebayo et al.)."""
    model = _train_on_lesions(steps=120)
    torch.manual_seed(7)
    randomised = build_model(load_config("tiny"), with_lge=False).eval()
    rng = np.random.default_rng(123)
    trained_mass, random_mass, correlations, correct = [], [], [], 0
    for quadrant in (0, 1, 2, 3, 0, 1, 2, 3):
        x4, xs = _localised_inputs(rng, abnormal=True, quadrant=quadrant)
        region = _quadrant_mask(quadrant)
        trained = explain_arrays(model, x4, xs, 1, "cardiomyopathy", slices=False)
        shuffled = explain_arrays(randomised, x4, xs, 1, "cardiomyopathy", slices=False)
        correct += trained.probability > 0.5
        cam = trained.sequences[CINE_SAX].cam
        trained_mass.append(mass_fraction(cam, region))
        random_cam = shuffled.sequences[CINE_SAX].cam
        random_mass.append(mass_fraction(random_cam, region))
        correlations.append(rank_correlation(cam, random_cam))
    assert correct >= 7  # the model learnt the lesion
    assert np.mean(trained_mass) > 0.4 and np.mean(trained_mass) > np.mean(random_mass) + 0.1
    assert np.mean(correlations) < 0.5
    # cascading randomisation from the top: re-initialising the fusion head alone already changes the map
    top = build_model(load_config("tiny"), with_lge=False)
    top.load_state_dict({**model.state_dict(), **{k: v for k, v in randomised.state_dict().items() if "fusion" in k}})
    x4, xs = _localised_inputs(np.random.default_rng(5), abnormal=True, quadrant=1)
    cams = [explain_arrays(m.eval(), x4, xs, 1, "cardiomyopathy", slices=False).sequences[CINE_SAX].cam
            for m in (model, top)]  # fmt: skip
    assert rank_correlation(*cams) < 0.5
    maps, _ = hires_cam(model, {CINE_4CH: torch.from_numpy(x4)[None], CINE_SAX: torch.from_numpy(xs)[None]}, 1)
    assert maps[CINE_SAX].shape == (FRAMES, SIZE, SIZE)
