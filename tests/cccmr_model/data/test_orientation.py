from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cccmr_model.config.schema import DataConfig
from cccmr_model.data import load_series, preprocess_series
from cccmr_model.data.localise import choose_centre
from cccmr_model.data.orientation import display_turns, quarter_turn_scores, rotate_quarter_turns
from cccmr_model.data.series import Series
from cccmr_model.phantom import cohort
from cccmr_model.phantom.cohort import four_chamber_plane, sample_layout, sample_protocol, sax_planes
from cccmr_model.phantom.sites import SITES
from cccmr_model.phantom.subjects import sample_heart


def _random_series(seed: int, with_origins: bool = True) -> Series:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    row, col = basis[:, 0], basis[:, 1]
    normal = np.cross(row, col)
    positions = np.array([0.0, 8.0, 16.0]) + rng.normal()
    in_plane = rng.normal(0, 50, 3)
    origins = positions[:, None] * normal + (in_plane - (in_plane @ normal) * normal)  # S, 3
    return Series(
        array=rng.normal(size=(3, 2, 5, 7)).astype(np.float32),  # S, F, R, C: not square
        pixel_spacing=(1.3, 1.7),
        slice_positions=positions,
        trigger_times=np.zeros((3, 2)),
        orientation=tuple(float(v) for v in (*row, *col)),
        series_uid="1.2.3",
        nominal_interval=1000.0,
        source="synthetic",
        slice_origins=origins if with_origins else None,
    )


@pytest.mark.parametrize("turns", [1, 2, 3])
@pytest.mark.parametrize("with_origins", [True, False])
def test_turned_pixels_keep_their_patient_positions(turns: int, with_origins: bool) -> None:
    series = _random_series(turns, with_origins)
    turned = rotate_quarter_turns(series, turns)
    assert turned.array.shape[-2:] == (series.array.shape[-2:] if turns == 2 else series.array.shape[-2:][::-1])
    assert np.allclose(turned.normal, series.normal)  # a proper rotation: slice order and positions kept
    assert np.array_equal(turned.slice_positions, series.slice_positions)
    for s in range(series.num_slices):
        for i in range(turned.array.shape[-2]):
            for j in range(turned.array.shape[-1]):
                point = turned.to_patient(s, i, j)
                row, col, off_plane = series.to_pixel(point, s)
                assert abs(off_plane) < 1e-6
                r, c = round(row), round(col)
                assert abs(row - r) < 1e-6 and abs(col - c) < 1e-6
                assert np.array_equal(turned.array[s, :, i, j], series.array[s, :, r, c])


def test_every_plane_the_phantom_writes_is_already_in_display_order() -> None:
    """The phantom writes the standard display, so its caches (and every figure measured on them) are unchanged."""
    rng = np.random.default_rng(0)
    sites = list(SITES.values())
    for i in range(500):
        heart, _ = sample_heart(rng, None)
        layout = sample_layout(rng, heart)
        protocol = sample_protocol(rng, sites[i % len(sites)], cohort.SIZES["tiny"], heart)
        sax = sax_planes(layout, heart, protocol, rng, 5, 8.0)[0]
        four = four_chamber_plane(layout, heart, protocol)
        for plane, sequence in ((sax, "cine_sax"), (sax, "lge_sax"), (four, "cine_4ch")):
            scores = quarter_turn_scores(plane.row, plane.col, sequence)
            assert scores[0] > max(scores[1:]) + 0.2, (i, sequence, scores)


def test_sunnybrook_feet_first_study_is_turned_to_the_head_first_studys_display(sunnybrook_dir: Path) -> None:
    feet_first = load_series(sunnybrook_dir / "SCD0000101")
    head_first = load_series(sunnybrook_dir / "SCD0000301")
    assert display_turns(head_first, "cine_sax") == 0
    assert display_turns(feet_first, "cine_sax") == 3  # stored a quarter turn away
    for series in (rotate_quarter_turns(feet_first, 3), head_first):
        assert series.row_cosine[0] > 0.6  # image right = patient left
        assert series.col_cosine[2] < -0.6  # image down = inferior


@pytest.mark.parametrize("turns", [1, 2, 3])
def test_model_input_does_not_depend_on_the_stored_pixel_order(sunnybrook_dir: Path, turns: int) -> None:
    """A scanner that stores the same study turned (geometry saying so) gives the same model input."""
    config = DataConfig(image_size=48, field_of_view_mm=160.0, frames=8)
    series = load_series(sunnybrook_dir / "SCD0000301")
    stored_turned = rotate_quarter_turns(series, turns)
    centre = choose_centre(series, "cine_sax", config.crop).point_mm
    a = preprocess_series(series, "cine_sax", config, centre)
    b = preprocess_series(stored_turned, "cine_sax", config, centre)
    assert (a.quarter_turns, b.quarter_turns) == (0, (4 - turns) % 4)
    assert np.allclose(a.array, b.array, atol=1e-4)
    # without the turn the network would see a rotated heart
    raw = replace(config, display_orientation=False)
    c = preprocess_series(stored_turned, "cine_sax", raw, centre)
    assert not np.allclose(a.array, c.array, atol=0.1)
