"""Heart localisation: pixel <-> patient geometry, phantom truth, real Sunnybrook studies, fallback, centre crop."""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cccmr_model.config.schema import DataConfig
from cccmr_model.data import ingest_site
from cccmr_model.data.localise import CENTRE_FALLBACK, SAX_MOTION, choose_centre, locate_heart
from cccmr_model.data.preprocess import crop_or_pad, normalise, preprocess_series, resample_inplane, zscore
from cccmr_model.data.series import Series, load_series
from cccmr_model.phantom.cohort import generate_cohort
from cccmr_model.phantom.dicom_writer import Geometry, Sampling, SeriesTags, write_series

SUNNYBROOK = Path("/work/shared/data/sunnybrook-scd")
CONFIG = DataConfig(image_size=32, field_of_view_mm=64.0, frames=4, min_frames=4)


def _oblique(array: np.ndarray, spacing: tuple[float, float] = (1.5, 2.0)) -> Series:
    row, col = np.array([0.6, 0.8, 0.0]), np.array([0.48, -0.36, -0.8])
    normal = np.cross(row, col)
    origins = np.array([-30.0, 10.0, 50.0]) + np.arange(len(array))[:, None] * 8.0 * normal  # S, 3
    return Series(
        array=array.astype(np.float32),
        pixel_spacing=spacing,
        slice_positions=origins @ normal,
        trigger_times=np.tile(np.arange(array.shape[1]) * 50.0, (len(array), 1)),
        orientation=(*row, *col),
        series_uid="1.2.3",
        nominal_interval=math.nan,
        source="/site/series",
        slice_origins=origins,
    )


def test_pixel_patient_mapping_follows_ps3_3() -> None:
    series = _oblique(np.zeros((3, 2, 10, 12)))
    origin = series.slice_origins[1]  # type: ignore[index]
    # IOP[:3] is the direction of increasing column index, scaled by the column spacing PixelSpacing[1]
    assert np.allclose(series.to_patient(1, 0, 1) - origin, 2.0 * np.array([0.6, 0.8, 0.0]))
    assert np.allclose(series.to_patient(1, 1, 0) - origin, 1.5 * np.array([0.48, -0.36, -0.8]))
    point = series.to_patient(1.5, 3.25, 7.5)
    row, col, distance = series.to_pixel(point, 1.5)
    assert (row, col, distance) == pytest.approx((3.25, 7.5, 0.0), abs=1e-9)
    assert series.to_pixel(point, 0)[2] == pytest.approx(12.0)  # 1.5 slices of 8 mm along the normal
    assert series.to_pixel(point, 2)[2] == pytest.approx(-4.0)


def test_assemble_series_keeps_slice_origins(tmp_path: Path) -> None:
    geometry = Geometry.stack([-30.0, 10.0, 50.0], (0.6, 0.8, 0.0), (0.48, -0.36, -0.8), 3, 8.0)
    array = np.ones((3, 2, 8, 8), np.float32)
    write_series(
        tmp_path / "s", array, Sampling(geometry, (2.0, 2.0), 8.0, np.tile([0.0, 50.0], (3, 1))), tags=SeriesTags()
    )
    series = load_series(tmp_path / "s")
    assert series.slice_origins is not None and series.slice_origins.shape == (3, 3)
    assert np.allclose(np.sort(series.slice_origins @ series.normal), series.slice_positions)


def _lv_distances(site: Path) -> list[float]:
    """Distance (mm) of each subject's SAX heart point from the true LV long axis, checking its level too."""
    distances = []
    for row in csv.DictReader((site / "manifest.csv").open()):
        truth = json.loads((site / "ground_truth" / f"{row['subject_id']}.json").read_text())
        centre = locate_heart(load_series(site / row["cine_sax"]))
        assert centre.ok and centre.method == SAX_MOTION, centre.reason
        origin, axis = np.array(truth["heart_origin_mm"]), np.array(truth["lv_axis"])
        offset = np.array(centre.point_mm) - origin
        along = float(offset @ axis)
        assert 0.0 < along < 2 * np.linalg.norm(np.array(truth["lv_centre_mm"]) - origin)  # between base and apex
        distances.append(float(np.linalg.norm(offset - along * axis)))
    return distances


@pytest.mark.slow
def test_phantom_heart_located_on_the_lv_axis(tmp_path: Path) -> None:
    # full size: at the tiny preset's 4.4-5.9 mm pixels the mid-ventricular LV and RV pools merge across the septum
    # and the point drifts 4-16 mm towards it (6 subjects); at 1.3-1.9 mm: 0.4-4.9 mm, mean 1.6
    generate_cohort(tmp_path, ["anzhen", "lanzhou"], 3, seed=11, size="full", workers=1)
    distances = _lv_distances(tmp_path / "anzhen") + _lv_distances(tmp_path / "lanzhou")
    assert max(distances) < 10.0 and float(np.mean(distances)) < 5.0


def _endo_centres(study: str, patient: str) -> list[np.ndarray]:
    """Patient coordinates of the expert endocardial contour centroids of a Sunnybrook study."""
    centres = []
    for file in sorted((SUNNYBROOK / "contours" / patient / "i-contours").glob("*.txt")):
        number = int(file.name.split("-")[2])
        ds = pydicom.dcmread(SUNNYBROOK / study / f"{number}.dcm", stop_before_pixels=True)
        x, y = np.loadtxt(file).mean(axis=0)  # contour points are (column, row)
        iop = np.array(ds.ImageOrientationPatient, float)
        spacing = [float(v) for v in ds.PixelSpacing]
        centres.append(np.array(ds.ImagePositionPatient, float) + x * spacing[1] * iop[:3] + y * spacing[0] * iop[3:])
    return centres


@pytest.mark.slow
@pytest.mark.parametrize(
    ("study", "patient"),
    [
        ("SCD0000101", "SC-HF-I-1"),
        ("SCD0000301", "SC-HF-I-4"),  # dilated, barely moving LV beside a moving RV and bright chest-wall fat
    ],
)
def test_sunnybrook_heart_in_the_lv_blood_pool(study: str, patient: str) -> None:
    if not (SUNNYBROOK / study).is_dir():
        pytest.skip(f"{SUNNYBROOK} not present")
    series = load_series(SUNNYBROOK / study)
    centre = locate_heart(series)
    assert centre.ok, centre.reason
    point = np.array(centre.point_mm)
    near = []
    for endo in _endo_centres(study, patient):
        offset = endo - point
        along = float(offset @ series.normal)
        if abs(along) <= 16.0:  # the expert contours on the slices around the located level
            near.append(float(np.linalg.norm(offset - along * series.normal)))
    assert near and max(near) < 15.0  # an LV cavity radius is 20-35 mm in these dilated hearts


def _static_site(root: Path) -> None:
    """One subject whose cines do not move at all (every frame equal): localisation must fall back."""
    rng = np.random.default_rng(3)
    for name, slices, frames in (("cine4ch", 1, 6), ("cinesax", 5, 6), ("lge", 7, 1)):
        still = rng.gamma(2.0, 80.0, (slices, 1, 20, 20)).repeat(frames, axis=1).astype(np.float32)  # S, F, R, C
        geometry = Geometry.stack([-30.0, 10.0, 50.0], (0.6, 0.8, 0.0), (0.48, -0.36, -0.8), slices, 8.0)
        trigger = np.tile(np.arange(frames) * 60.0, (slices, 1)) if frames > 1 else None
        write_series(
            root / "s1" / name,
            still,
            Sampling(geometry, (2.5, 2.5), 8.0, trigger),
            tags=SeriesTags(series_description=name),
        )
    header = "subject_id,label,subtype,cine_4ch,cine_sax,lge_sax\n"
    (root / "manifest.csv").write_text(header + "s1,0,,s1/cine4ch,s1/cinesax,s1/lge\n")


def test_no_motion_falls_back_to_the_centre_crop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    still = np.ones((4, 6, 24, 24)) * np.linspace(1.0, 2.0, 24)  # S, F, R, C: no change over frames
    centre = locate_heart(_oblique(still))
    assert not centre.ok and centre.method == CENTRE_FALLBACK and "flat" in centre.reason
    _static_site(tmp_path / "site")
    with caplog.at_level(logging.WARNING, logger="cccmr.ingest"):
        report = ingest_site(tmp_path / "site", tmp_path / "cache", CONFIG)
    assert report.usable == ["s1"] and not report.rejections
    for sequence in ("cine_sax", "cine_4ch", "lge_sax"):
        sidecar = json.loads((tmp_path / "cache" / "subjects" / "s1" / f"{sequence}.json").read_text())
        assert sidecar["crop_centre"]["method"] == CENTRE_FALLBACK and len(sidecar["crop_centre"]["patient_mm"]) == 3
        assert any(line.startswith(f"s1 {sequence}: heart not located") for line in report.centre_fallbacks)
    summary = (tmp_path / "cache" / "ingest-summary.txt").read_text()
    assert "heart not located, centre crop used:" in summary and "s1 lge_sax" in summary
    warnings = [r.getMessage() for r in caplog.records if "heart not located in 3 series" in r.getMessage()]
    assert len(warnings) == 1 and "s1" not in warnings[0]  # a site's log may be streamed: no subject, no path
    again = ingest_site(tmp_path / "site", tmp_path / "cache", CONFIG)
    assert again.computed == 0 and again.reused == 3


def test_centre_crop_reproduces_the_old_geometry() -> None:
    rng = np.random.default_rng(0)
    series = _oblique(rng.gamma(2.0, 100.0, (4, 4, 30, 26)), spacing=(1.5, 1.5))
    old = preprocess_series(series, "cine_sax", replace(CONFIG, crop="centre"))
    images = resample_inplane(series.array[0:3].reshape(12, 30, 26), (1.5, 1.5), 2.0)  # 12, 22, 20
    clipped, _ = normalise(images, CONFIG.clip_percentiles)
    expected = zscore(crop_or_pad(clipped, 32, float(clipped.min()))).reshape(3, 4, 32, 32)
    assert np.allclose(old.array, expected, atol=1e-5) and not old.localised
    # crop: heart without a centre is the same centre crop
    assert np.array_equal(preprocess_series(series, "cine_sax", CONFIG).array, old.array)
    # around the image centre, the heart crop samples the same field of view
    middle = series.to_patient(1.0, 14.5, 12.5)  # slices 0-2 chosen: the crop centre lies on slice 1
    heart = preprocess_series(series, "cine_sax", CONFIG, tuple(middle))
    assert heart.localised and heart.crop_centre_px == pytest.approx((14.5, 12.5))
    assert np.allclose(heart.crop_centre_mm, middle, atol=0.01)
    assert old.crop_centre_px == pytest.approx((14.5, 12.5), abs=0.8)


def test_sax_point_carried_to_other_series() -> None:
    rng = np.random.default_rng(1)
    other = _oblique(rng.gamma(2.0, 100.0, (6, 1, 40, 40)))
    point = tuple(other.to_patient(2.5, 22.0, 15.0))
    carried = choose_centre(other, "lge_sax", "heart", point)
    assert carried.ok and carried.method == SAX_MOTION
    assert choose_centre(other, "lge_sax", "heart", None).method == CENTRE_FALLBACK
    assert choose_centre(other, "lge_sax", "centre", point).point_mm is None
    far = tuple(other.to_patient(2.5, 39.0, 0.0))  # beyond 35 % of the field of view from the centre
    assert choose_centre(other, "lge_sax", "heart", far).method == CENTRE_FALLBACK
