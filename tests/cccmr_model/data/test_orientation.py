from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cccmr_model.config.schema import DataConfig
from cccmr_model.data import load_series, preprocess_series
from cccmr_model.data.localise import choose_centre
from cccmr_model.data.orientation import ORDERS, DisplayOrder, display_order, order_scores, reorder_pixels
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


@pytest.mark.parametrize("order", ORDERS[1:], ids=str)
@pytest.mark.parametrize("with_origins", [True, False])
def test_reordered_pixels_keep_their_patient_positions(order: DisplayOrder, with_origins: bool) -> None:
    series = _random_series(order.turns + 4 * order.mirrored, with_origins)
    moved = reorder_pixels(series, order)
    assert moved.array.shape[-2:] == (series.array.shape[-2:] if order.turns % 2 == 0 else (7, 5))
    assert np.allclose(moved.normal, -series.normal if order.mirrored else series.normal)
    assert np.all(np.diff(moved.slice_positions) > 0)  # still ascending along its own normal
    for s in range(series.num_slices):
        original = series.num_slices - 1 - s if order.mirrored else s  # a mirror reverses the slices
        expected = -series.slice_positions[original] if order.mirrored else series.slice_positions[original]
        assert np.isclose(moved.slice_positions[s], expected)
        assert np.isclose(moved.origin(s) @ moved.normal, moved.slice_positions[s])
        assert np.array_equal(moved.trigger_times[s], series.trigger_times[original])
        for i in range(moved.array.shape[-2]):
            for j in range(moved.array.shape[-1]):
                point = moved.to_patient(s, i, j)
                row, col, off_plane = series.to_pixel(point, original)
                assert abs(off_plane) < 1e-6
                r, c = round(row), round(col)
                assert abs(row - r) < 1e-6 and abs(col - c) < 1e-6
                assert np.array_equal(moved.array[s, :, i, j], series.array[original, :, r, c])


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
            scores = order_scores(plane.row, plane.col, sequence)
            assert scores[0] > max(scores[1:]) + 0.2, (i, sequence, scores)


def test_sunnybrook_feet_first_study_is_turned_to_the_head_first_studys_display(sunnybrook_dir: Path) -> None:
    feet_first = load_series(sunnybrook_dir / "SCD0000101")
    head_first = load_series(sunnybrook_dir / "SCD0000301")
    assert display_order(head_first, "cine_sax") == DisplayOrder()
    assert display_order(feet_first, "cine_sax") == DisplayOrder(turns=3)  # stored a quarter turn away
    for series in (reorder_pixels(feet_first, DisplayOrder(turns=3)), head_first):
        assert series.row_cosine[0] > 0.6  # image right = patient left
        assert series.col_cosine[2] < -0.6  # image down = inferior


def _inverse(order: DisplayOrder) -> DisplayOrder:
    """The order that undoes `order` (a mirror after turns equals the mirror before the opposite turns)."""
    return DisplayOrder(order.turns % 4 if order.mirrored else (4 - order.turns) % 4, order.mirrored)


@pytest.mark.parametrize("order", ORDERS[1:], ids=str)
def test_model_input_does_not_depend_on_the_stored_pixel_order(sunnybrook_dir: Path, order: DisplayOrder) -> None:
    """A scanner that stores the same study turned or mirrored (geometry saying so) gives the same model input."""
    config = DataConfig(image_size=48, field_of_view_mm=160.0, frames=8)
    series = load_series(sunnybrook_dir / "SCD0000301")
    stored = reorder_pixels(series, order)
    a = preprocess_series(series, "cine_sax", config, choose_centre(series, "cine_sax", config.crop).point_mm)
    centre = choose_centre(stored, "cine_sax", config.crop).point_mm  # found in display order: the same point
    b = preprocess_series(stored, "cine_sax", config, centre)
    assert (a.display_order, b.display_order) == (DisplayOrder(), _inverse(order))
    assert np.allclose(a.array, b.array, atol=1e-4)
    # without the reordering the network would see a turned or mirrored heart
    raw = replace(config, display_orientation=False)
    c = preprocess_series(stored, "cine_sax", raw, centre)
    assert not np.allclose(a.array, c.array, atol=0.1)
