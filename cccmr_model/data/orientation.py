"""Turn a series in-plane by a multiple of 90 degrees to the standard cardiac display, from its geometry.

Scanners store the same view in different pixel orders: the Sunnybrook study SCD0000101 (feet-first) has the image
rows running head to feet, SCD0000301 (head-first, same scanner) left to right, so the same short-axis anatomy
arrives a quarter turn apart. A network trained on one order sees the other as a 90-degree rotation, far beyond
its augmentation. ImageOrientationPatient says where each pixel axis points in the patient (DICOM LPS), so the
pixels can be turned, losslessly (`np.rot90`), to the order radiologists read and the phantom writes:

- short axis (SAX cine, SAX LGE): the patient's left towards the image right, inferior towards the image bottom
  (RV on the image left, inferior wall at the bottom);
- four-chamber (4CH cine): the patient's left towards the image right, the base (atria: right, posterior and
  superior of the apex) towards the bottom, so the apex points up.

Of the four quarter turns the one whose (row, column) directions agree best with these targets (sum of the two
dot products) is taken; the geometry moves with the pixels, so every patient-coordinate step after it (the heart
point, the crop) is unchanged. Only proper rotations are used: the slice normal, and so the slice order and
positions, stay as they are. A left-right mirror is not undone; training flips left-right at random (augment).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cccmr_model.data.series import Series
from cccmr_model.sequences import CINE_4CH, SEQUENCES

PATIENT_LEFT = np.array([1.0, 0.0, 0.0])  # LPS +x
PATIENT_INFERIOR = np.array([0.0, 0.0, -1.0])  # LPS -z
# The heart's base as seen from its apex: the LV long axis points left, anterior and inferior, so the base lies
# right, posterior and superior of the apex (about equally; the phantom's axis is (0.55, -0.45, -0.68)).
TOWARDS_BASE = np.array([-1.0, 1.0, 1.0]) / np.sqrt(3.0)


def display_targets(sequence: str) -> tuple[np.ndarray, np.ndarray]:
    """(image right, image down) as patient directions for `sequence`'s standard display."""
    if sequence not in SEQUENCES:
        raise ValueError(f"unknown sequence {sequence!r}")
    return PATIENT_LEFT, (TOWARDS_BASE if sequence == CINE_4CH else PATIENT_INFERIOR)


def quarter_turn_scores(row_cosine: np.ndarray, col_cosine: np.ndarray, sequence: str) -> list[float]:
    """Agreement with the display targets after k = 0..3 turns of `np.rot90` (k=1: (row, col) -> (col, -row))."""
    right, down = display_targets(sequence)
    scores = []
    row, col = np.asarray(row_cosine, dtype=np.float64), np.asarray(col_cosine, dtype=np.float64)
    for _ in range(4):
        scores.append(float(row @ right + col @ down))
        row, col = col, -row
    return scores


def display_turns(series: Series, sequence: str) -> int:
    """How many `np.rot90` quarter turns bring `series` to `sequence`'s standard display (0 = as stored)."""
    scores = quarter_turn_scores(series.row_cosine, series.col_cosine, sequence)
    return int(np.argmax(scores))  # ties keep the smaller turn, the stored order first


def rotate_quarter_turns(series: Series, turns: int) -> Series:
    """`series` with every image turned by `np.rot90(image, turns)` and its geometry moved with the pixels.

    One turn maps pixel (i, j) of the new image to (j, C - 1 - i) of the old: the new row cosine is the old column
    cosine, the new column cosine the negated old row cosine, the spacings swap and pixel (0, 0) is the old
    (0, C - 1).
    """
    turns %= 4
    if turns == 0:
        return series
    row, col = series.row_cosine, series.col_cosine
    row_spacing, col_spacing = series.pixel_spacing
    origins = (
        np.asarray(series.slice_origins, dtype=np.float64)
        if series.slice_origins is not None
        else np.asarray(series.slice_positions, dtype=np.float64)[:, None] * series.normal  # S, 3
    )
    rows, cols = series.array.shape[-2:]
    for _ in range(turns):
        origins = origins + (cols - 1) * col_spacing * row  # S, 3: the old last column's first pixel
        rows, cols = cols, rows
        row, col = col, -row
        row_spacing, col_spacing = col_spacing, row_spacing
    array = np.ascontiguousarray(np.rot90(series.array, turns, axes=(-2, -1)))  # S, F, R', C'
    return replace(
        series,
        array=array,
        pixel_spacing=(row_spacing, col_spacing),
        orientation=tuple(float(v) for v in (*row, *col)),
        slice_origins=origins,
    )


def to_display_orientation(series: Series, sequence: str) -> tuple[Series, int]:
    """`series` turned to `sequence`'s standard display, and the number of quarter turns applied."""
    turns = display_turns(series, sequence)
    return rotate_quarter_turns(series, turns), turns
