"""Paper section 3.1 preprocessing: a Series becomes the model input of one sequence.

Steps, all set by `DataConfig`: the series' pixels reordered (quarter turns, mirror) to the standard display
(`orientation`, from ImageOrientationPatient); the middle slices (1 of the 4CH cine, 3 of the SAX cine, 6 of the
SAX LGE); frames resampled to a fixed count over one cardiac cycle (linear in time, periodic); each image blurred
to `resolution_mm` when finer; a `field_of_view_mm` square around the heart (`crop: heart` with a centre from
`localise`; a 4CH turned so that the SAX's long axis points down, `align_4ch`) or around the image centre,
resampled to `image_size` pixels; intensities clipped at the configured percentiles and z-scored over the whole
sequence.
Output: cine (S, T, H, W), LGE (S, H, W), float32. A 4CH cine must be one plane: a stack given as the 4CH (the
SAX cine in the wrong column) is refused rather than cut to its middle slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from cccmr_model.config.schema import DataConfig
from cccmr_model.data.orientation import TOWARDS_BASE, DisplayOrder, to_display_orientation
from cccmr_model.data.series import Series, SeriesError
from cccmr_model.sequences import CINE_4CH, CINE_SEQUENCES, SEQUENCES

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.355
MIN_IN_PLANE = 0.5  # a long axis with less than this in the 4CH plane (over 60 deg out of it) leaves the crop unturned


@dataclass(frozen=True)
class Preprocessed:
    """A model-ready sequence and what was chosen to make it."""

    array: np.ndarray  # S, T, H, W (cine) or S, H, W (LGE), float32, mean 0, std 1
    slice_indices: list[int]  # into the series' ascending slices
    slice_positions: list[float]  # mm along the normal
    frame_times: list[list[float]]  # per chosen slice, ms after the R wave of each output frame
    clip_range: tuple[float, float]  # intensity bounds before z-scoring
    crop_centre_mm: tuple[float, float, float] | None = None  # patient LPS mm of the crop centre (mid chosen slice)
    crop_centre_px: tuple[float, float] | None = None  # (row, col) of the crop centre, in display-order pixels
    localised: bool = False  # True when cropped around a given heart centre, False for the image centre
    display_order: DisplayOrder = field(default_factory=DisplayOrder)  # stored pixels -> standard display
    slice_normal: tuple[float, float, float] | None = None  # patient direction; a SAX stack's is the LV long axis


def middle_slices(num_slices: int, count: int) -> list[int]:
    """Indices of the `count` middle slices (the lower middle when the parity differs)."""
    start = (num_slices - count) // 2
    return list(range(start, start + count))


def cycle_times(times: np.ndarray) -> tuple[np.ndarray, float]:
    """Trigger times made usable: (times, cycle length). Missing times become evenly spaced frames."""
    if len(times) == 1:
        return np.zeros(1), 1.0
    if not np.all(np.isfinite(times)):
        times = np.arange(len(times), dtype=np.float64)
    step = float(np.median(np.diff(times)))
    return times, float(times[-1] - times[0] + step)


def resample_cycle(frames: np.ndarray, times: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample F frames (F, R, C) over one periodic cardiac cycle to `count` frames; returns (frames, times)."""
    times, cycle = cycle_times(np.asarray(times, dtype=np.float64))
    targets = times[0] + np.arange(count) * cycle / count
    knots = np.append(times, times[0] + cycle)  # F + 1: the cycle wraps to the first frame
    upper = np.clip(np.searchsorted(knots, targets, side="right"), 1, len(knots) - 1)
    lower = upper - 1
    weight = ((targets - knots[lower]) / (knots[upper] - knots[lower])).astype(np.float32)
    wrapped = np.concatenate([frames, frames[:1]], axis=0)  # F + 1, R, C
    w = weight[:, None, None]
    out = (1.0 - w) * wrapped[lower] + w * wrapped[upper]  # count, R, C
    return out.astype(np.float32), targets


def resample_inplane(images: np.ndarray, spacing: tuple[float, float], target_mm: float) -> np.ndarray:
    """Resample (N, R, C) images to `target_mm` pixels: linear, with a Gaussian anti-alias filter when shrinking.

    scipy rather than torch, so that forked ingestion workers never touch torch's OpenMP pool.
    """
    rows, cols = images.shape[-2:]
    size = (max(1, round(rows * spacing[0] / target_mm)), max(1, round(cols * spacing[1] / target_mm)))
    if size == (rows, cols):
        return images
    factors = (size[0] / rows, size[1] / cols)
    sigma = [0.0] + [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
    if any(sigma):
        images = ndimage.gaussian_filter(images, sigma=sigma, mode="nearest")
    out = ndimage.zoom(images, (1.0, *factors), order=1, mode="nearest", grid_mode=True)
    return out.astype(np.float32, copy=False)


def harmonise_resolution(images: np.ndarray, spacing: tuple[float, float], resolution_mm: float) -> np.ndarray:
    """Blur (N, R, C) images of `spacing` (row, col mm) to an in-plane resolution of `resolution_mm` (FWHM).

    A pixel counts as a resolution of its own size; the Gaussian added has FWHM sqrt(resolution_mm^2 - spacing^2)
    per axis, so an image already that coarse is returned as it is.
    """
    fwhm = [math.sqrt(max(resolution_mm**2 - p**2, 0.0)) for p in spacing]
    if resolution_mm <= 0 or not any(fwhm):
        return images
    sigma = [0.0] + [f / FWHM_PER_SIGMA / p for f, p in zip(fwhm, spacing, strict=True)]  # pixels
    return ndimage.gaussian_filter(images, sigma=sigma, mode="nearest").astype(np.float32, copy=False)


def crop_or_pad(images: np.ndarray, size: int, fill: float) -> np.ndarray:
    """Centred crop or pad of the last two axes to size x size."""
    out = np.full((*images.shape[:-2], size, size), fill, dtype=np.float32)
    src, dst = [], []
    for length in images.shape[-2:]:
        if length >= size:
            start = (length - size) // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
        else:
            start = (size - length) // 2
            src.append(slice(0, length))
            dst.append(slice(start, start + length))
    out[..., dst[0], dst[1]] = images[..., src[0], src[1]]
    return out


def crop_around(
    images: np.ndarray,
    spacing: tuple[float, float],
    centre: tuple[float, float],
    fov_mm: float,
    size: int,
    down: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """A fov_mm square of (N, R, C) images around centre (row, col), resampled to (N, size, size); nan outside.

    `down` is the in-plane direction (along the image right, along the image down; any length) that becomes the
    output's down: (0, 1) keeps the image as it is, another turns the crop about its centre (no mirror).
    """
    step = fov_mm / size
    factors = (spacing[0] / step, spacing[1] / step)  # output pixels per input pixel
    sigma = [0.0] + [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
    if any(sigma):
        images = ndimage.gaussian_filter(images, sigma=sigma, mode="nearest")
    half = (size - 1) / 2.0
    right_part, down_part = down[0] / math.hypot(*down), down[1] / math.hypot(*down)
    if right_part == 0.0 and down_part > 0.0:  # no turn: the diagonal form
        matrix = np.array([1.0, step / spacing[0], step / spacing[1]])
        offset = np.array([0.0, centre[0] - half * matrix[1], centre[1] - half * matrix[2]])
    else:  # output (i, j) -> input (row, col): the output's down axis along `down`, its right axis turned with it
        turn = np.array([[down_part, -right_part], [right_part, down_part]])  # (row, col) mm <- (i, j) mm
        matrix = np.eye(3)
        matrix[1:, 1:] = np.diag([step / spacing[0], step / spacing[1]]) @ turn
        offset = np.array([0.0, *(np.asarray(centre, dtype=np.float64) - matrix[1:, 1:] @ np.array([half, half]))])
    out = ndimage.affine_transform(
        images.astype(np.float32, copy=False), matrix, offset=offset, output_shape=(len(images), size, size),
        order=1, mode="constant", cval=np.nan,
    )  # fmt: skip
    return out.astype(np.float32, copy=False)  # N, size, size


def centre_crop_pixel(length: int, resampled: int, size: int) -> float:
    """Where the centre of `crop_or_pad` lies in the original pixels of one axis (`length` resampled to `resampled`)."""
    centre = (size - 1) / 2.0 + ((resampled - size) // 2 if resampled >= size else -((size - resampled) // 2))
    return (centre + 0.5) * length / resampled - 0.5


def normalise(images: np.ndarray, percentiles: tuple[float, float]) -> tuple[np.ndarray, tuple[float, float]]:
    """Clip at the percentiles of `images`; returns (clipped, (low, high))."""
    low, high = (float(v) for v in np.percentile(images, percentiles))
    return np.clip(images, low, high), (low, high)


def zscore(images: np.ndarray) -> np.ndarray:
    std = float(images.std())
    return ((images - images.mean()) / (std if std > 1e-6 else 1.0)).astype(np.float32)


def check_view(series: Series, sequence: str) -> None:
    """Refuse a series that cannot be the view its column names: a 4CH cine is one long-axis plane, so frames at
    several positions along the slice normal are a stack (typically the SAX cine given in the 4CH column)."""
    if sequence != CINE_4CH or series.num_slices == 1:
        return
    step = float(np.median(np.diff(series.slice_positions)))
    raise SeriesError(
        series.source,
        f"{sequence}: {series.num_slices} slice positions {round(step, 1):g} mm apart along the slice normal, "
        "a stack such as a SAX cine; a 4CH cine is one long-axis plane",
    )


def long_axis_down(series: Series, long_axis: Sequence[float]) -> tuple[float, float] | None:
    """The in-plane direction (image right, image down components) of the LV long axis towards the base, or None
    when the axis is too steep to the plane to give one (a 4CH contains the long axis: this is not a 4CH of it)."""
    axis = np.asarray(long_axis, dtype=np.float64)
    axis = axis / max(float(np.linalg.norm(axis)), 1e-12)
    if axis @ TOWARDS_BASE < 0:  # the SAX normal may point either way along the axis
        axis = -axis
    right, down = float(axis @ series.row_cosine), float(axis @ series.col_cosine)
    return (right, down) if math.hypot(right, down) >= MIN_IN_PLANE else None


def preprocess_series(
    series: Series,
    sequence: str,
    config: DataConfig,
    centre: Sequence[float] | None = None,
    long_axis: Sequence[float] | None = None,
) -> Preprocessed:
    """Turn a series into the model input of `sequence`; SeriesError for the wrong view (`check_view`) or too few
    slices or frames.

    With `config.crop == "heart"` and a `centre` (patient mm), the crop is a field_of_view_mm square around the
    centre projected on the chosen slices; otherwise around the image centre. A 4CH cropped so, given the LV
    `long_axis` (patient direction, the SAX stack's normal) and `config.align_4ch`, is turned so that the axis
    points down to the base.
    """
    if sequence not in SEQUENCES:
        raise ValueError(f"unknown sequence {sequence!r}")
    check_view(series, sequence)
    order = DisplayOrder()
    if config.display_orientation:
        series, order = to_display_orientation(series, sequence)
    count = config.slices[sequence]
    if series.num_slices < count:
        raise SeriesError(series.source, f"too few slices for {sequence}: {series.num_slices} < {count}")
    chosen = middle_slices(series.num_slices, count)
    cine = sequence in CINE_SEQUENCES
    if cine and series.num_frames < config.min_frames:
        raise SeriesError(
            series.source, f"too few frames for {sequence}: {series.num_frames} < min_frames {config.min_frames}"
        )
    stacks, frame_times = [], []
    for index in chosen:
        if cine:
            frames, targets = resample_cycle(series.array[index], series.trigger_times[index], config.frames)
        else:  # single phase: the earliest frame when a series holds several
            frames, targets = series.array[index, :1], series.trigger_times[index, :1]
        stacks.append(frames)
        frame_times.append([round(float(t), 3) if math.isfinite(t) else None for t in targets])
    volume = np.stack(stacks)  # S, T, R, C
    s, t, rows, cols = volume.shape
    flat = harmonise_resolution(volume.reshape(s * t, rows, cols), series.pixel_spacing, config.resolution_mm)
    mid = float(np.mean(chosen))
    size = config.image_size
    localised = config.crop == "heart" and centre is not None
    if localised:
        row, col, _ = series.to_pixel(centre, mid)  # type: ignore[arg-type]
        down = (0.0, 1.0)
        if sequence == CINE_4CH and config.align_4ch and long_axis is not None:
            down = long_axis_down(series, long_axis) or down
        cropped = crop_around(flat, series.pixel_spacing, (row, col), config.field_of_view_mm, size, down)
        valid = np.isfinite(cropped)
        clipped, clip_range = normalise(cropped[valid] if valid.any() else np.zeros(1), config.clip_percentiles)
        fitted = np.where(valid, np.clip(cropped, *clip_range), clip_range[0]).astype(np.float32)  # S*T, H, W
    else:
        images = resample_inplane(flat, series.pixel_spacing, config.pixel_spacing_mm)
        row = centre_crop_pixel(rows, images.shape[-2], size)
        col = centre_crop_pixel(cols, images.shape[-1], size)
        clipped, clip_range = normalise(images, config.clip_percentiles)
        fitted = crop_or_pad(clipped, size, fill=clip_range[0])  # S*T, H, W
    array = zscore(fitted).reshape(s, t, size, size)  # S, T, H, W
    if not np.isfinite(array).all():  # e.g. intensities so large that their spread overflows float32
        raise SeriesError(series.source, f"{sequence}: non-finite values after intensity normalisation")
    if not cine:
        array = array[:, 0]  # S, H, W
    point = series.to_patient(mid, row, col)
    return Preprocessed(
        array=array,
        slice_indices=chosen,
        slice_positions=[round(float(series.slice_positions[i]), 3) for i in chosen],
        frame_times=frame_times,  # type: ignore[arg-type]
        clip_range=clip_range,
        crop_centre_mm=(round(float(point[0]), 2), round(float(point[1]), 2), round(float(point[2]), 2)),
        crop_centre_px=(round(row, 2), round(col, 2)),
        localised=localised,
        display_order=order,
        slice_normal=tuple(round(float(v), 6) for v in series.normal),  # type: ignore[arg-type]
    )
