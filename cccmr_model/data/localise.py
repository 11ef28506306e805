"""Locate the heart in a cine series: the centre of the LV blood pool, in patient coordinates (mm, DICOM LPS).

Short-axis stack. The LV cavity is the bright blood pool that is round, moves with the heart beat and is ringed by
myocardium; the RV is a crescent, atria and vessels are small or barely move, fat does not move. Each central slice
is put on a grid of at most `WORK_MM` pixels; its blood image (the temporal 75th percentile: the cavity near its
end-diastolic extent) is thresholded at several fractions of its bright level (`LEVELS`) and every connected region
of cavity size is scored by
- roundness: intersection over union with the disc of equal area around its centroid (squared),
- motion: the first temporal harmonic (|DFT over the cycle at the fundamental|, Jolly 2001, Lin et al. 2006) over its
  endocardial band, relative to the slice's moving heart (a dilated, poorly contracting LV still moves enough),
- isolation: the fraction of the ring just outside that is below the threshold (myocardium, not fat or more blood),
- the centre prior: a broad Gaussian around the image centre.
Candidates of all slices are clustered in-plane (`CLUSTER_MM`); the cluster with the largest support (per slice its
best score, summed) is the LV, its score-weighted centroid the point, on the plane through the central slices.

Localisation fails, and callers fall back to the centre crop, when the smoothed first-harmonic map is flat (no
motion, noise only), no convincing cavity is found (`MIN_SCORE`), or the point lies beyond `MAX_OFFSET` of the field
of view from the centre. A long-axis cine (4CH, used without a SAX point) has no round LV: its centre is the
centroid of the whole moving heart (smoothed first harmonic above `HEART_LEVEL` of its peak), between the ventricles.

The SAX cine's point is carried to the other series of a subject (4CH cine, SAX LGE) by projecting it on their
planes; a 4CH cine without a SAX point localises itself, an LGE (no motion) keeps the centre crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cccmr_model.data.orientation import to_display_orientation
from cccmr_model.data.series import Series
from cccmr_model.sequences import CINE_4CH, CINE_SAX

WORK_MM = 2.0  # analysis grid: coarser images are interpolated up to this pixel size (never down-sampled)
SMOOTH_MM = 15.0  # Gaussian sigma of the motion map: the heart region
PRIOR_FRACTION = 0.3  # sigma of the centre prior, as a fraction of the field of view
MAX_OFFSET = 0.35  # a centre further than this fraction of the field of view from the image centre fails
MIN_CONTRAST = 0.6  # (peak - median) / peak of the smoothed motion map below this is "flat"
HEART_LEVEL = 0.3  # long-axis cine: the heart is the connected region above this fraction of the motion peak
LEVELS = (0.3, 0.38, 0.46, 0.54, 0.62, 0.7)  # blood thresholds, fractions of the slice's bright level
MIN_RADIUS_MM, MAX_RADIUS_MM = 7.0, 45.0  # equivalent-disc radius of an LV cavity at end-diastole
RING_MM = (2.0, 7.0)  # the band outside a cavity where the myocardium should be (dark in bSSFP)
EDGE_MM = 4.0  # half-width of the endocardial band whose first harmonic measures the cavity's motion
CLUSTER_MM = 12.0  # candidates of different slices closer than this in-plane are one structure
MIN_SCORE = 0.05  # a best cluster below this (summed over the central slices, per slice up to 1) fails

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


def first_harmonic(frames: np.ndarray) -> np.ndarray:
    """Amplitude (R, C) of the cardiac-cycle fundamental of frames (F, R, C): |DFT over time at 1 / cycle|.

    Jolly 2001, Lin et al. 2006: the fundamental keeps the periodic motion of the ventricles and rejects noise,
    drift and one-off flow artefacts that a plain temporal standard deviation collects.
    """
    count = frames.shape[0]
    phase = np.exp(-2j * np.pi * np.arange(count) / count)  # F
    return np.abs(np.tensordot(phase, frames, axes=(0, 0))) * (2.0 / count)


def motion_map(series: Series, slices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(motion, blood): first-harmonic amplitude and temporal mean (R, C), each slice scaled by its bright level,
    summed over `slices`."""
    motion = np.zeros(series.array.shape[2:], dtype=np.float64)  # R, C
    blood = np.zeros_like(motion)
    for index in slices:
        frames = series.array[index].astype(np.float64)  # F, R, C
        scale = float(np.percentile(frames.mean(axis=0), 99.0))
        if scale > 0:
            motion += first_harmonic(frames) / scale
            blood += frames.mean(axis=0) / scale
    return motion, blood


def centre_prior(shape: tuple[int, int], spacing: tuple[float, float]) -> np.ndarray:
    """Gaussian weight (R, C) around the image centre, sigma PRIOR_FRACTION of the smaller field of view."""
    sigma = PRIOR_FRACTION * min(shape[0] * spacing[0], shape[1] * spacing[1])
    rows = (np.arange(shape[0]) - (shape[0] - 1) / 2.0) * spacing[0]
    cols = (np.arange(shape[1]) - (shape[1] - 1) / 2.0) * spacing[1]
    return np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2) / sigma**2)  # R, C


def peak_centroid(weighted: np.ndarray, fraction: float) -> tuple[float, float]:
    """Weighted centroid (row, col) of the connected region above `fraction` of the peak that holds the peak."""
    peak = np.unravel_index(int(np.argmax(weighted)), weighted.shape)
    level = fraction * float(weighted[peak])
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


@dataclass(frozen=True)
class _Grid:
    """The analysis grid of a series: native pixel = step * grid pixel (per axis), grid pixel size `mm`."""

    step: tuple[float, float]
    shape: tuple[int, int]
    mm: tuple[float, float]

    @classmethod
    def of(cls, series: Series) -> _Grid:
        rows, cols = series.array.shape[2:]
        step = tuple(min(1.0, WORK_MM / s) for s in series.pixel_spacing)
        shape = (int((rows - 1) / step[0]) + 1, int((cols - 1) / step[1]) + 1)
        mm = (step[0] * series.pixel_spacing[0], step[1] * series.pixel_spacing[1])
        return cls(step, shape, mm)  # type: ignore[arg-type]

    def resample(self, frames: np.ndarray) -> np.ndarray:
        """Frames (F, R, C) on the grid (linear interpolation)."""
        if self.step == (1.0, 1.0):
            return frames
        coords = np.indices(self.shape).astype(np.float64)
        coords[0] *= self.step[0]
        coords[1] *= self.step[1]
        return np.stack([ndimage.map_coordinates(f, coords, order=1, mode="nearest") for f in frames])


@dataclass(frozen=True)
class _Candidate:
    slice_index: int
    point: np.ndarray  # 3, patient mm
    score: float


def _disc_agreement(region: np.ndarray, row: float, col: float, mm: tuple[float, float]) -> float:
    """Intersection over union of a region (R, C) with the disc of equal area around its centroid.

    A round cavity scores near 1; the crescent of the RV, an elongated atrium or vessel and a region spilling over
    the septum score low.
    """
    area_mm2 = float(region.sum()) * mm[0] * mm[1]
    radius = np.sqrt(area_mm2 / np.pi)
    rows, cols = np.indices(region.shape)
    disc = ((rows - row) * mm[0]) ** 2 + ((cols - col) * mm[1]) ** 2 <= radius**2
    union = float(np.logical_or(region, disc).sum())
    return float(np.logical_and(region, disc).sum()) / union if union else 0.0


def _slice_candidates(series: Series, index: int, grid: _Grid, prior: np.ndarray) -> list[_Candidate]:
    """Bright, round, moving, myocardium-ringed regions of one slice, each scored 0..1.

    The blood image is the temporal 75th percentile (the cavity near its end-diastolic extent), thresholded at
    several fractions of the slice's bright level; every connected region of plausible cavity size is scored by
    roundness (disc agreement), motion of its border (first harmonic over the endocardial band, relative to the
    slice's moving heart), a dark ring outside (myocardium, not fat or other blood) and the centre prior.
    """
    frames = grid.resample(series.array[index].astype(np.float64))  # F, R, C
    mm = grid.mm
    blood = ndimage.gaussian_filter(np.percentile(frames, 75.0, axis=0), [1.0 / mm[0], 1.0 / mm[1]])  # R, C
    harmonic = ndimage.gaussian_filter(first_harmonic(frames), [2.0 / mm[0], 2.0 / mm[1]])  # R, C
    bright = float(np.percentile(blood[prior > 0.5], 99.0))
    moving = float(np.percentile((harmonic * prior)[prior > 0.3], 99.0))
    if bright <= 0 or moving <= 0:
        return []
    min_area = np.pi * MIN_RADIUS_MM**2 / (mm[0] * mm[1])
    max_area = np.pi * MAX_RADIUS_MM**2 / (mm[0] * mm[1])
    pad = int(np.ceil(RING_MM[1] / min(mm))) + 1
    out: list[_Candidate] = []
    for level in LEVELS:
        mask = blood > level * bright
        labels, count = ndimage.label(mask)
        if count == 0:
            continue
        areas = ndimage.sum_labels(mask, labels, np.arange(1, count + 1))
        for label, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None or not min_area <= areas[label - 1] <= max_area:
                continue
            r0, r1 = max(box[0].start - pad, 0), min(box[0].stop + pad, mask.shape[0])
            c0, c1 = max(box[1].start - pad, 0), min(box[1].stop + pad, mask.shape[1])
            region = labels[r0:r1, c0:c1] == label
            if region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any():
                continue  # touches the image border: body outline, not a cavity
            rows, cols = np.nonzero(region)
            row, col = float(rows.mean()), float(cols.mean())
            if not region[round(row), round(col)]:
                continue  # centroid outside the region: a crescent or a ring
            roundness = _disc_agreement(region, row, col, mm)
            outside = ndimage.distance_transform_edt(~region, sampling=mm)
            inside = ndimage.distance_transform_edt(region, sampling=mm)
            ring = (outside > RING_MM[0]) & (outside <= RING_MM[1])
            band = (outside <= EDGE_MM) & (inside <= EDGE_MM)
            local_blood = blood[r0:r1, c0:c1]
            dark = float(np.mean(local_blood[ring] < level * bright))
            motion = min(1.0, float(harmonic[r0:r1, c0:c1][band].mean()) / (0.5 * moving))
            place = float(prior[r0 + round(row), c0 + round(col)])
            score = roundness**2 * dark * motion * place
            point = series.to_patient(index, (r0 + row) * grid.step[0], (c0 + col) * grid.step[1])
            out.append(_Candidate(index, point, score))
    return out


def _best_cluster(series: Series, candidates: list[_Candidate]) -> tuple[np.ndarray, float]:
    """The in-plane point with the most support over slices, and that support (sum over slices of the best score).

    Candidates are compared after removing their offset along the slice normal, so the LV cavities of neighbouring
    slices (one structure, slightly tilted) fall together while the RV, atria and vessels form their own clusters.
    """
    normal = series.normal
    flat = np.array([c.point - (c.point @ normal) * normal for c in candidates])  # N, 3
    scores = np.array([c.score for c in candidates])
    slices = np.array([c.slice_index for c in candidates])
    best_support, best_members = -1.0, np.zeros(0, dtype=int)
    for i in np.argsort(-scores):
        near = np.linalg.norm(flat - flat[i], axis=1) <= CLUSTER_MM
        members = []
        for index in np.unique(slices[near]):
            pool = np.nonzero(near & (slices == index))[0]
            members.append(int(pool[np.argmax(scores[pool])]))
        support = float(scores[members].sum())
        if support > best_support:
            best_support, best_members = support, np.array(members)
    weights = scores[best_members]
    point = (flat[best_members] * weights[:, None]).sum(axis=0) / max(float(weights.sum()), 1e-12)
    return point, best_support


def locate_heart(series: Series, method: str = SAX_MOTION) -> HeartCentre:
    """The LV centre of a cine series, or a failed HeartCentre (point None) with the reason.

    A short-axis stack (several slices, `SAX_MOTION`): the round, bright, moving, myocardium-ringed region found
    consistently over the central slices. A long-axis cine (`OWN_MOTION`, one slice): the LV is not round there, so
    the centre of the whole moving heart.
    """
    if series.num_frames < 2:
        return HeartCentre(None, CENTRE_FALLBACK, reason="a single frame has no motion")
    slices = central_slices(series.num_slices)
    spacing = series.pixel_spacing
    motion_raw, _ = motion_map(series, slices)
    motion = _smooth(motion_raw, SMOOTH_MM, spacing) * centre_prior(motion_raw.shape, spacing)  # R, C
    peak = float(motion.max())
    contrast = (peak - float(np.median(motion))) / peak if peak > 1e-9 else 0.0
    if contrast < MIN_CONTRAST:
        return HeartCentre(None, CENTRE_FALLBACK, contrast, f"motion map flat (contrast {contrast:.2f})")
    if method == OWN_MOTION:
        return _long_axis_centre(series, slices, motion, contrast, method)
    grid = _Grid.of(series)
    prior = centre_prior(grid.shape, grid.mm)
    candidates = [c for index in slices for c in _slice_candidates(series, index, grid, prior) if c.score > 0]
    if not candidates:
        return HeartCentre(None, CENTRE_FALLBACK, contrast, "no round moving blood pool on the central slices")
    flat, support = _best_cluster(series, candidates)
    level = float(np.mean(slices))
    reference = series.to_patient(level, 0.0, 0.0)
    point = flat + (reference @ series.normal) * series.normal
    row, col, _ = series.to_pixel(point, level)
    confidence = round(min(1.0, support / len(slices)), 3)
    if support < MIN_SCORE * len(slices):
        return HeartCentre(None, CENTRE_FALLBACK, confidence, f"no convincing LV blood pool (support {support:.2f})")
    if not within_field(series, row, col):
        return HeartCentre(None, CENTRE_FALLBACK, confidence, f"LV centre at pixel ({row:.0f}, {col:.0f}) off-centre")
    return HeartCentre(_rounded(point), method, confidence)


def _long_axis_centre(series: Series, slices: Sequence[int], motion: np.ndarray, contrast: float,
                      method: str) -> HeartCentre:  # fmt: skip
    """The centre of the whole moving heart (both ventricles) of a long-axis cine: its crop keeps the heart.

    The LV of a 4CH is neither round nor reliably the brightest or most moving chamber (a dilated RV, the
    descending aorta), so picking one blob lands on the wrong chamber half the time; the weighted centroid of the
    smoothed first-harmonic map above `HEART_LEVEL` of its peak lies between the ventricles, near the septum.
    """
    row, col = peak_centroid(motion, HEART_LEVEL)
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
    """The crop centre of a series: SAX by its motion, 4CH by the SAX point or its own motion, LGE by the SAX point.

    The series is searched in its standard display order (`orientation`), so the point found does not depend on the
    order the scanner stored the pixels in.
    """
    if crop != "heart":
        return HeartCentre(None, CENTRE, reason="crop: centre")
    series, _ = to_display_orientation(series, sequence)
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
