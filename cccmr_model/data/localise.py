"""Locate the heart in a cine series: the centre of its motion, in patient coordinates (mm, DICOM LPS).

The beating ventricles are what changes most over the cardiac cycle, so the temporal standard deviation of each
pixel, summed over the middle slices, is a map of the heart. The map is smoothed (about an LV radius, so the moving
endocardial ring becomes one blob), weighted by a broad Gaussian prior around the image centre (chest wall,
diaphragm and great-vessel motion far out lose) and the weighted centroid of its top region (the connected part
above half the peak) is the heart centre. Localisation fails, and callers fall back to the centre crop, when the
map is flat (no motion, noise only) or the point lies beyond `MAX_OFFSET` of the field of view from the centre.

The SAX cine's point is carried to the other series of a subject (4CH cine, SAX LGE) by projecting it on their
planes; a 4CH cine without a SAX point localises itself, an LGE (no motion) keeps the centre crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cccmr_model.data.series import Series
from cccmr_model.sequences import CINE_4CH, CINE_SAX

SMOOTH_MM = 15.0  # Gaussian sigma of the motion map: the heart region
BLOOD_MM = 8.0  # Gaussian sigma of the always-bright map: blobs the size of an LV cavity in systole
MOVING_LEVEL = 0.5  # motion above this fraction of the peak counts fully (the RV moves as much as the LV)
PRIOR_FRACTION = 0.3  # sigma of the centre prior, as a fraction of the field of view
MAX_OFFSET = 0.35  # a centre further than this fraction of the field of view from the image centre fails
MIN_CONTRAST = 0.6  # (peak - median) / peak of the smoothed map below this is "flat"
TOP_LEVEL = 0.7  # the centroid is taken over the connected region above this fraction of the peak

SAX_MOTION = "sax-motion"  # the SAX cine's own motion, or its point projected on another series
OWN_MOTION = "own-motion"  # a 4CH cine located by its own motion (no SAX point)
CENTRE_FALLBACK = "centre-fallback"  # crop: heart, localisation failed: the image centre
CENTRE = "centre"  # crop: centre configured


@dataclass(frozen=True)
class HeartCentre:
    """Where to centre a crop: a patient point (None = the image centre), how it was found, and why not."""

    point_mm: tuple[float, float, float] | None  # LPS, mm
    method: str  # SAX_MOTION | OWN_MOTION | CENTRE_FALLBACK | CENTRE
    confidence: float = 0.0  # the motion map's contrast, 0..1
    reason: str = ""  # why localisation failed

    @property
    def ok(self) -> bool:
        return self.point_mm is not None


def central_slices(num_slices: int) -> list[int]:
    """The middle half of a stack (at least one slice): mid-ventricular on a base-to-apex SAX stack."""
    count = max(1, round(num_slices / 2))
    start = (num_slices - count) // 2
    return list(range(start, start + count))


def motion_map(series: Series, slices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(motion, blood): temporal std and temporal minimum (R, C), each slice scaled by its bright level, summed.

    The minimum over the cycle is bright where blood stays all the time: the core of the LV cavity (the RV shrinks
    to a thin crescent in systole).
    """
    motion = np.zeros(series.array.shape[2:], dtype=np.float64)  # R, C
    blood = np.zeros_like(motion)
    for index in slices:
        frames = series.array[index].astype(np.float64)  # F, R, C
        scale = float(np.percentile(frames.mean(axis=0), 99.0))
        if scale > 0:
            motion += frames.std(axis=0) / scale
            blood += frames.min(axis=0) / scale
    return motion, blood


def centre_prior(shape: tuple[int, int], spacing: tuple[float, float]) -> np.ndarray:
    """Gaussian weight (R, C) around the image centre, sigma PRIOR_FRACTION of the smaller field of view."""
    sigma = PRIOR_FRACTION * min(shape[0] * spacing[0], shape[1] * spacing[1])
    rows = (np.arange(shape[0]) - (shape[0] - 1) / 2.0) * spacing[0]
    cols = (np.arange(shape[1]) - (shape[1] - 1) / 2.0) * spacing[1]
    return np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2) / sigma**2)  # R, C


def peak_centroid(weighted: np.ndarray) -> tuple[float, float]:
    """Weighted centroid (row, col) of the connected region above TOP_LEVEL of the peak that holds the peak."""
    peak = np.unravel_index(int(np.argmax(weighted)), weighted.shape)
    level = TOP_LEVEL * float(weighted[peak])
    labels, _ = ndimage.label(weighted > level)
    region = labels == labels[peak]
    weights = np.where(region, weighted - level, 0.0)  # R, C
    rows, cols = np.indices(weighted.shape)
    total = float(weights.sum())
    return float((rows * weights).sum() / total), float((cols * weights).sum() / total)


def within_field(series: Series, row: float, col: float) -> bool:
    """Whether (row, col) lies within MAX_OFFSET of the field of view from the image centre, on both axes."""
    rows, cols = series.array.shape[2:]
    return abs(row - (rows - 1) / 2.0) <= MAX_OFFSET * rows and abs(col - (cols - 1) / 2.0) <= MAX_OFFSET * cols


def locate_heart(series: Series, method: str = SAX_MOTION) -> HeartCentre:
    """The heart centre of a cine series from its motion, or a failed HeartCentre (point None) with the reason."""
    if series.num_frames < 2:
        return HeartCentre(None, CENTRE_FALLBACK, reason="a single frame has no motion")
    slices = central_slices(series.num_slices)
    spacing = series.pixel_spacing
    motion_raw, blood = motion_map(series, slices)
    motion = _smooth(motion_raw, SMOOTH_MM, spacing) * centre_prior(motion_raw.shape, spacing)  # R, C
    peak = float(motion.max())
    contrast = (peak - float(np.median(motion))) / peak if peak > 1e-9 else 0.0
    if contrast < MIN_CONTRAST:
        return HeartCentre(None, CENTRE_FALLBACK, contrast, f"motion map flat (contrast {contrast:.2f})")
    moving = np.clip(motion / (MOVING_LEVEL * peak), 0.0, 1.0)  # R, C: 1 over the beating heart, 0 far out
    score = moving * np.clip(_smooth(blood, BLOOD_MM, spacing), 0.0, None)  # R, C: the biggest always-bright blob
    row, col = peak_centroid(score)
    if not within_field(series, row, col):
        return HeartCentre(None, CENTRE_FALLBACK, contrast, f"motion centre at pixel ({row:.0f}, {col:.0f}) off-centre")
    point = series.to_patient(float(np.mean(slices)), row, col)
    return HeartCentre(_rounded(point), method, round(contrast, 3))


def _smooth(image: np.ndarray, sigma_mm: float, spacing: tuple[float, float]) -> np.ndarray:
    return ndimage.gaussian_filter(image, sigma=[sigma_mm / spacing[0], sigma_mm / spacing[1]], mode="nearest")


def project(series: Series, point: Sequence[float], slices: Sequence[int]) -> tuple[float, float]:
    """(row, col) of a patient point on the plane through the mean of `slices` (fractional pixels)."""
    row, col, _ = series.to_pixel(point, float(np.mean(slices)))
    return row, col


def carry_point(series: Series, point: Sequence[float] | None) -> HeartCentre | None:
    """Another subject series' SAX point, when it projects within the field of view; None otherwise."""
    if point is None:
        return None
    row, col = project(series, point, central_slices(series.num_slices))
    if not within_field(series, row, col):
        return None
    return HeartCentre(_rounded(point), SAX_MOTION, 1.0)


def choose_centre(series: Series, sequence: str, crop: str, sax_point: Sequence[float] | None = None) -> HeartCentre:
    """The crop centre of a series: SAX by its motion, 4CH by the SAX point or its own motion, LGE by the SAX point."""
    if crop != "heart":
        return HeartCentre(None, CENTRE, reason="crop: centre")
    if sequence == CINE_SAX:
        return locate_heart(series, SAX_MOTION)
    carried = carry_point(series, sax_point)
    if carried is not None:
        return carried
    missing = "no SAX heart point" if sax_point is None else "the SAX heart point projects outside this series"
    if sequence == CINE_4CH:
        own = locate_heart(series, OWN_MOTION)
        return own if own.ok else HeartCentre(None, CENTRE_FALLBACK, own.confidence, f"{missing}; {own.reason}")
    return HeartCentre(None, CENTRE_FALLBACK, reason=missing)


def _rounded(point: Sequence[float]) -> tuple[float, float, float]:
    """Rounded to 0.01 mm: stable in JSON sidecars and input hashes."""
    x, y, z = (round(float(v), 2) for v in point)
    return (x, y, z)


__all__ = [
    "CENTRE",
    "CENTRE_FALLBACK",
    "OWN_MOTION",
    "SAX_MOTION",
    "HeartCentre",
    "choose_centre",
    "locate_heart",
    "motion_map",
    "project",
]
