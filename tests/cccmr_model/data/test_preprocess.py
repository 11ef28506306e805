"""Section 3.1 preprocessing: slice choice, cycle resampling, in-plane resampling, crop/pad, normalisation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from cccmr_model.config.schema import DataConfig
from cccmr_model.data.preprocess import (
    crop_or_pad,
    middle_slices,
    preprocess_series,
    resample_cycle,
    resample_inplane,
)
from cccmr_model.data.series import Series, SeriesError

CONFIG = DataConfig(image_size=32, field_of_view_mm=64.0, frames=4, min_frames=4)


def _series(slices: int, frames: int, size: int = 24, spacing: float = 1.0) -> Series:
    rng = np.random.default_rng(0)
    return Series(
        array=rng.gamma(2.0, 100.0, (slices, frames, size, size)).astype(np.float32),
        pixel_spacing=(spacing, spacing),
        slice_positions=np.arange(slices) * 8.0,
        trigger_times=np.tile(np.arange(frames) * 40.0 + 12.0, (slices, 1)),
        orientation=(1, 0, 0, 0, 1, 0),
        series_uid="1.2.3",
        nominal_interval=math.nan,
        source="/site/series",
    )


def test_middle_slices() -> None:
    assert middle_slices(12, 3) == [4, 5, 6]
    assert middle_slices(10, 6) == [2, 3, 4, 5, 6, 7]
    assert middle_slices(5, 1) == [2]
    assert middle_slices(6, 6) == list(range(6))


def test_resample_cycle_is_periodic_linear_interpolation() -> None:
    times = np.arange(10) * 80.0 + 20.0  # 10 frames over an 800 ms cycle
    frames = np.sin(2 * np.pi * (times - 20.0) / 800.0)[:, None, None] * np.ones((10, 2, 2))
    out, targets = resample_cycle(frames.astype(np.float32), times, 4)
    assert np.allclose(targets, [20.0, 220.0, 420.0, 620.0])
    assert out.shape == (4, 2, 2)
    # 220 ms lies between frames at 180 and 260: linear between sin(0.2*2pi) and sin(0.3*2pi)
    expected = 0.5 * (np.sin(2 * np.pi * 0.2) + np.sin(2 * np.pi * 0.3))
    assert out[1, 0, 0] == pytest.approx(expected, abs=1e-5)
    up, _ = resample_cycle(frames.astype(np.float32), times, 20)  # between the last frame and the wrap
    assert up[19, 0, 0] == pytest.approx(0.5 * np.sin(2 * np.pi * 0.9), abs=1e-5)


def test_resample_cycle_without_trigger_times_spaces_frames_evenly() -> None:
    frames = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 1, 1), np.float32)
    out, _ = resample_cycle(frames, np.full(4, np.nan), 8)
    assert np.allclose(out[:, 0, 0], [0, 0.5, 1, 1.5, 2, 2.5, 3, 1.5])


def test_inplane_resampling_keeps_field_of_view() -> None:
    images = np.ones((2, 40, 30), np.float32)
    out = resample_inplane(images, (1.5, 1.0), 3.0)
    assert out.shape == (2, 20, 10)
    assert np.allclose(out, 1.0, atol=1e-5)


def test_crop_or_pad_is_centred() -> None:
    images = np.arange(6 * 10, dtype=np.float32).reshape(1, 6, 10)
    out = crop_or_pad(images, 8, fill=-1.0)
    assert out.shape == (1, 8, 8)
    assert np.all(out[0, 0] == -1) and np.all(out[0, 7] == -1)
    assert np.array_equal(out[0, 1:7], images[0, :, 1:9])


@pytest.mark.parametrize(
    ("sequence", "slices", "shape"), [("cine_4ch", 1, (1, 4, 32, 32)), ("cine_sax", 7, (3, 4, 32, 32))]
)
def test_cine_output_shape_and_zscore(sequence: str, slices: int, shape: tuple[int, ...]) -> None:
    result = preprocess_series(_series(slices, 6), sequence, CONFIG)
    assert result.array.shape == shape and result.array.dtype == np.float32
    assert abs(float(result.array.mean())) < 1e-4 and float(result.array.std()) == pytest.approx(1.0, abs=1e-4)
    assert result.slice_indices == middle_slices(slices, shape[0])
    assert result.slice_positions == [8.0 * i for i in result.slice_indices]
    assert len(result.frame_times[0]) == 4


def test_clipping_bounds_outliers() -> None:
    series = _series(3, 4)
    series.array[1, 0, 5, 5] = 1e7  # one hot pixel
    result = preprocess_series(series, "cine_sax", replace(CONFIG, field_of_view_mm=32.0))
    assert result.clip_range[1] < 1e6
    assert float(result.array.max()) < 10.0


def test_lge_output_shape() -> None:
    result = preprocess_series(_series(8, 1), "lge_sax", CONFIG)
    assert result.array.shape == (6, 32, 32)


@pytest.mark.parametrize(
    ("sequence", "slices", "frames", "message"),
    [
        ("cine_sax", 2, 6, "too few slices for cine_sax: 2 < 3"),
        ("lge_sax", 5, 1, "too few slices for lge_sax: 5 < 6"),
        ("cine_sax", 4, 3, "too few frames for cine_sax: 3 < min_frames 4"),
    ],
)
def test_too_few_slices_or_frames(sequence: str, slices: int, frames: int, message: str) -> None:
    with pytest.raises(SeriesError, match=f"^/site/series: {message}$"):
        preprocess_series(_series(slices, frames), sequence, CONFIG)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("fault", ["nan", "overflow"])
def test_non_finite_output_is_refused(fault: str) -> None:
    series = _series(3, 4)
    if fault == "nan":
        series.array[1, 0, 5, 5] = np.nan
    else:
        series.array *= np.float32(1e35)  # finite pixels whose mean and spread overflow float32
    with pytest.raises(SeriesError, match=r"^/site/series: cine_sax: non-finite values"):
        preprocess_series(series, "cine_sax", replace(CONFIG, crop="centre"))


def _four_chamber_bar(angle_deg: float) -> tuple[Series, np.ndarray]:
    """A 4CH whose only bright structure is a bar through the centre along the long axis, `angle_deg` from the
    image's down direction towards its right; and that axis as a patient direction."""
    size, angle = 64, math.radians(angle_deg)
    rows, cols = np.indices((size, size)) - (size - 1) / 2.0
    along_right, along_down = math.sin(angle), math.cos(angle)
    distance = np.abs(rows * along_right - cols * along_down)  # from the line through the centre
    image = np.where(distance < 2.0, 1000.0, 100.0).astype(np.float32)
    row_cosine, col_cosine = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])  # right: left, down: superior
    series = Series(
        array=np.tile(image, (1, 4, 1, 1)),
        pixel_spacing=(1.0, 1.0),
        slice_positions=np.zeros(1),
        trigger_times=np.arange(4.0)[None] * 40.0,
        orientation=(*row_cosine, *col_cosine),
        series_uid="1.2.4",
        nominal_interval=math.nan,
        source="/site/4ch",
    )
    return series, along_right * row_cosine + along_down * col_cosine


def _bar_columns(array: np.ndarray) -> np.ndarray:
    """Column of every bright pixel of the first frame."""
    frame = array[0, 0]
    return np.nonzero(frame > frame.mean() + frame.std())[1]


@pytest.mark.parametrize("angle", [40.0, -50.0])
def test_four_chamber_is_turned_so_that_the_long_axis_points_down(angle: float) -> None:
    series, axis = _four_chamber_bar(angle)
    config = replace(CONFIG, image_size=32, field_of_view_mm=40.0)
    centre = series.to_patient(0, 31.5, 31.5)
    aligned = preprocess_series(series, "cine_4ch", config, centre, axis)
    assert np.std(_bar_columns(aligned.array)) < 1.5  # one vertical bar, 3-4 pixels wide
    assert np.std(_bar_columns(preprocess_series(series, "cine_4ch", config, centre).array)) > 4.0  # diagonal
    unaligned = preprocess_series(series, "cine_4ch", replace(config, align_4ch=False), centre, axis)
    assert np.std(_bar_columns(unaligned.array)) > 4.0
    sax_config = replace(config, slices={**config.slices, "cine_sax": 1})  # a SAX is never turned
    with_axis = preprocess_series(series, "cine_sax", sax_config, centre, axis).array
    assert np.array_equal(with_axis, preprocess_series(series, "cine_sax", sax_config, centre).array)
