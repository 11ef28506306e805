"""Bring a series to the standard cardiac display, from its geometry: quarter turns and a mirror of the pixels.

Scanners store the same view in different pixel orders: the Sunnybrook study SCD0000101 (feet-first) has the image
rows running head to feet, SCD0000301 (head-first, same scanner) left to right, so the same short-axis anatomy
arrives a quarter turn apart; a mirrored order is as valid DICOM. A network trained on one order sees another as a
rotation or reflection far beyond its augmentation. ImageOrientationPatient says where each pixel axis points in
the patient (DICOM LPS), so the pixels can be reordered, losslessly (`np.rot90`, `np.flip`), to the order
radiologists read and the phantom writes:

- short axis (SAX cine, SAX LGE): the patient's left towards the image right, inferior towards the image bottom
  (RV on the image left, inferior wall at the bottom);
- four-chamber (4CH cine): the patient's left towards the image right, the base (atria: right, posterior and
  superior of the apex) towards the bottom, so the apex points up.

Of the eight reorderings (four quarter turns, each with or without a left-right mirror) the one whose (row, column)
directions agree best with these targets (sum of the two dot products) is taken; the geometry moves with the
pixels, so every patient-coordinate step after it (the heart point, the crop) is unchanged. A mirror reverses the
slice normal, so the slices are reversed with it: a stack then runs the same way through the heart (ascending along
the display normal) whatever order the scanner wrote, and the model's slice channels keep their anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cccmr_model.data.series import Series
from cccmr_model.sequences import CINE_4CH, SEQUENCES

PATIENT_LEFT = np.array([1.0, 0.0, 0.0])  # LPS +x
PATIENT_INFERIOR = np.array([0.0, 0.0, -1.0])  # LPS -z
# The heart's base as seen from its apex: the LV long axis points left, anterior and inferior, so the base lies
# right, posterior and superior of the apex (about equally; the phantom's axis is (0.55, -0.45, -0.68)).
TOWARDS_BASE = np.array([-1.0, 1.0, 1.0]) / np.sqrt(3.0)


@dataclass(frozen=True)
class DisplayOrder:
    """A pixel reordering: mirror left-right first (`np.flip` of the columns) when `mirrored`, then `turns` x
    `np.rot90`."""

    turns: int = 0
    mirrored: bool = False

    @property
    def identity(self) -> bool:
        return self.turns % 4 == 0 and not self.mirrored

    def describe(self) -> str:
        """In words, for a reader comparing with the stored images: "as stored", "turned 270 deg, mirrored"."""
        if self.identity:
            return "as stored"
        turned = f"turned {90 * (self.turns % 4)} deg" if self.turns % 4 else ""
        return ", ".join(part for part in (turned, "mirrored" if self.mirrored else "") if part)


ORDERS: tuple[DisplayOrder, ...] = tuple(DisplayOrder(k, m) for m in (False, True) for k in range(4))


def display_targets(sequence: str) -> tuple[np.ndarray, np.ndarray]:
    """(image right, image down) as patient directions for `sequence`'s standard display."""
    if sequence not in SEQUENCES:
        raise ValueError(f"unknown sequence {sequence!r}")
    return PATIENT_LEFT, (TOWARDS_BASE if sequence == CINE_4CH else PATIENT_INFERIOR)


def reordered_axes(row_cosine: np.ndarray, col_cosine: np.ndarray, order: DisplayOrder) -> tuple[np.ndarray, ...]:
    """(row, column) cosines after `order`: a mirror negates the row cosine, a turn maps (row, col) to (col, -row)."""
    row, col = np.asarray(row_cosine, dtype=np.float64), np.asarray(col_cosine, dtype=np.float64)
    if order.mirrored:
        row = -row
    for _ in range(order.turns % 4):
        row, col = col, -row
    return row, col


def order_scores(row_cosine: np.ndarray, col_cosine: np.ndarray, sequence: str) -> list[float]:
    """Agreement with the display targets of every order in `ORDERS`."""
    right, down = display_targets(sequence)
    scores = []
    for order in ORDERS:
        row, col = reordered_axes(row_cosine, col_cosine, order)
        scores.append(float(row @ right + col @ down))
    return scores


def display_order(series: Series, sequence: str) -> DisplayOrder:
    """The reordering that brings `series` to `sequence`'s standard display (identity = as stored)."""
    scores = order_scores(series.row_cosine, series.col_cosine, sequence)
    return ORDERS[int(np.argmax(scores))]  # ties keep the earlier order: as stored, then fewer turns, unmirrored


def _reorder(order: DisplayOrder, images: np.ndarray) -> np.ndarray:
    """The pixels of `images` (..., R, C) in `order`: the columns mirrored first, then the quarter turns."""
    if order.mirrored:
        images = np.flip(images, axis=-1)
    return np.rot90(images, order.turns % 4, axes=(-2, -1))


def reorder_pixels(series: Series, order: DisplayOrder) -> Series:
    """`series` with every image reordered by `order` and its geometry moved with the pixels.

    The axes follow `reordered_axes`, the spacings swap with an odd number of turns, and each slice's origin moves
    to the stored pixel that the reordering puts at (0, 0). A mirror flips the normal, so the slices are reversed to
    stay ascending along it.
    """
    if order.identity:
        return series
    rows, cols = series.array.shape[-2:]
    origins = (
        np.asarray(series.slice_origins, dtype=np.float64)
        if series.slice_origins is not None
        else np.asarray(series.slice_positions, dtype=np.float64)[:, None] * series.normal  # S, 3
    )
    corner_row, corner_col = divmod(int(_reorder(order, np.arange(rows * cols).reshape(rows, cols))[0, 0]), cols)
    row_spacing, col_spacing = series.pixel_spacing
    origins = origins + corner_col * col_spacing * series.row_cosine + corner_row * row_spacing * series.col_cosine
    row, col = reordered_axes(series.row_cosine, series.col_cosine, order)
    spacing = (col_spacing, row_spacing) if order.turns % 2 else (row_spacing, col_spacing)
    array, positions, times = _reorder(order, series.array), np.asarray(series.slice_positions), series.trigger_times
    if order.mirrored:  # S first: the slices reversed along the flipped normal
        array, origins, times, positions = array[::-1], origins[::-1], times[::-1], -positions[::-1]
    return replace(
        series,
        array=np.ascontiguousarray(array),  # S, F, R', C'
        pixel_spacing=spacing,
        slice_positions=np.ascontiguousarray(positions),
        trigger_times=np.ascontiguousarray(times),
        orientation=tuple(float(v) for v in (*row, *col)),
        slice_origins=np.ascontiguousarray(origins),
    )


def to_display_orientation(series: Series, sequence: str) -> tuple[Series, DisplayOrder]:
    """`series` reordered to `sequence`'s standard display, and the reordering applied."""
    order = display_order(series, sequence)
    return reorder_pixels(series, order), order
