"""A DICOM series as a (slices, frames, rows, cols) array placed in space and in the cardiac cycle.

Slices are ordered and spaced by ImagePositionPatient projected on the slice normal, the cross product of the
ImageOrientationPatient row and column cosines (PS3.3 C.7.6.2.1.1). SliceLocation is never used: it is optional,
vendor-defined and wrong on real data (the Sunnybrook studies step it by 6.72 mm on a 10 mm stack). MONAI's
reader sorts by InstanceNumber and spaces by the z coordinate, which breaks oblique cardiac stacks and cine, where
many frames share one position. Within a slice, frames are ordered by TriggerTime (then InstanceNumber).

An image found twice (the same SOPInstanceUID, e.g. a file copied into the folder again) is read once; the same
SOPInstanceUID with other content, or a second image at one position and TriggerTime, is an error that names the
later file, the extra one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cccmr_model.data.dicom_reader import DicomReadError, FrameRecord, list_series_files, read_frames
from cccmr_model.errors import DataError

ORIENTATION_TOLERANCE = 1e-3  # max difference of direction cosines within one series
SPACING_TOLERANCE = 1e-3  # relative difference of pixel spacings within one series
POSITION_TOLERANCE_MM = 0.1  # frames closer than this along the normal belong to one slice


class SeriesError(DataError):
    """A series whose files cannot form one stack; `file` names the file that shows the problem."""

    def __init__(self, file: str, problem: str) -> None:
        problem = " ".join(problem.split())
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem


@dataclass
class Series:
    """Pixels and geometry of one series. A single-phase series (LGE) has one frame per slice."""

    array: np.ndarray  # S, F, R, C float32 real-world values
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing) in mm
    slice_positions: np.ndarray  # S, mm along the slice normal, ascending
    trigger_times: np.ndarray  # S, F ms after the R wave (nan where the files carry none)
    orientation: tuple[float, ...]  # ImageOrientationPatient shared by all frames
    series_uid: str
    nominal_interval: float  # median R-R interval in ms, nan when absent
    source: str  # the folder or file read
    slice_origins: np.ndarray | None = None  # S, 3 ImagePositionPatient (mm, LPS) of pixel (0, 0) per slice
    duplicates: int = 0  # images found twice (same SOPInstanceUID and content) and read once

    @property
    def normal(self) -> np.ndarray:
        return slice_normal(self.orientation)

    @property
    def row_cosine(self) -> np.ndarray:
        """IOP first triplet: the patient direction of increasing column index (along a row)."""
        return np.asarray(self.orientation[:3], dtype=np.float64)

    @property
    def col_cosine(self) -> np.ndarray:
        """IOP second triplet: the patient direction of increasing row index (down a column)."""
        return np.asarray(self.orientation[3:6], dtype=np.float64)

    def origin(self, index: int) -> np.ndarray:
        """Patient position (mm) of pixel (0, 0) of slice `index`; on the normal through 0 when origins are unknown."""
        if self.slice_origins is not None:
            return np.asarray(self.slice_origins[index], dtype=np.float64)
        return float(self.slice_positions[index]) * self.normal

    def to_patient(self, index: float, row: float, col: float) -> np.ndarray:
        """Patient coordinates (mm, LPS) of pixel (row, col) of slice `index` (fractional slice: interpolated).

        PS3.3 C.7.6.2.1.1: P = IPP + col * PixelSpacing[1] * IOP[:3] + row * PixelSpacing[0] * IOP[3:].
        """
        low = int(np.clip(np.floor(index), 0, self.num_slices - 1))
        high = min(low + 1, self.num_slices - 1)
        weight = float(index) - low if high > low else 0.0
        origin = (1.0 - weight) * self.origin(low) + weight * self.origin(high)
        return origin + col * self.pixel_spacing[1] * self.row_cosine + row * self.pixel_spacing[0] * self.col_cosine

    def to_pixel(self, point: Sequence[float], index: float) -> tuple[float, float, float]:
        """(row, col, distance along the normal in mm) of a patient point projected on the plane of slice `index`."""
        low = int(np.clip(np.floor(index), 0, self.num_slices - 1))
        high = min(low + 1, self.num_slices - 1)
        weight = float(index) - low if high > low else 0.0
        origin = (1.0 - weight) * self.origin(low) + weight * self.origin(high)
        offset = np.asarray(point, dtype=np.float64) - origin
        row = float(offset @ self.col_cosine) / self.pixel_spacing[0]
        col = float(offset @ self.row_cosine) / self.pixel_spacing[1]
        return row, col, float(offset @ self.normal)

    @property
    def num_slices(self) -> int:
        return int(self.array.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.array.shape[1])


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the image plane: row cosines x column cosines."""
    row, col = np.asarray(orientation[:3], dtype=np.float64), np.asarray(orientation[3:6], dtype=np.float64)
    normal = np.cross(row, col)
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        raise ValueError(f"degenerate ImageOrientationPatient {list(orientation)}")
    return normal / norm


def _check_consistent(records: Sequence[FrameRecord]) -> None:
    first = records[0]
    for record in records[1:]:
        where = record.file if record.frame_index == 0 else f"{record.file} frame {record.frame_index + 1}"
        if (record.rows, record.cols) != (first.rows, first.cols):
            raise SeriesError(
                where,
                f"mixed matrix sizes in one series: {record.rows}x{record.cols} here, "
                f"{first.rows}x{first.cols} in {Path(first.file).name}",
            )
        if np.max(np.abs(np.subtract(record.orientation, first.orientation))) > ORIENTATION_TOLERANCE:
            raise SeriesError(where, f"mixed orientations in one series (differs from {Path(first.file).name})")
        if np.max(np.abs(np.subtract(record.pixel_spacing, first.pixel_spacing))) > SPACING_TOLERANCE * max(
            first.pixel_spacing
        ):
            raise SeriesError(
                where,
                f"mixed pixel spacings in one series: {list(record.pixel_spacing)} here, "
                f"{list(first.pixel_spacing)} in {Path(first.file).name}",
            )
    uids = {r.series_uid for r in records}
    if len(uids) > 1:
        raise SeriesError(records[-1].file, f"files of {len(uids)} different SeriesInstanceUIDs in one series")


def _where(record: FrameRecord) -> str:
    return record.file if record.frame_index == 0 else f"{record.file} frame {record.frame_index + 1}"


def _difference(first: FrameRecord, other: FrameRecord) -> str | None:
    """What differs between two frames with one SOPInstanceUID (None when they are the same image)."""
    if not np.allclose(first.position, other.position, atol=POSITION_TOLERANCE_MM):
        return "position"
    if not np.allclose(first.orientation, other.orientation, atol=ORIENTATION_TOLERANCE):
        return "orientation"
    if first.trigger_time != other.trigger_time and not (
        math.isnan(first.trigger_time) and math.isnan(other.trigger_time)
    ):
        return "TriggerTime"
    if first.pixels is not None and other.pixels is not None and not np.array_equal(first.pixels, other.pixels):
        return "pixels"
    return None


def drop_duplicates(records: Sequence[FrameRecord]) -> tuple[list[FrameRecord], int]:
    """The records with each image once (first file in listing order kept) and how many copies were dropped.

    A SeriesError names the later file when one SOPInstanceUID holds different images.
    """
    kept: dict[tuple[str, int], FrameRecord] = {}
    unique: list[FrameRecord] = []
    for record in records:
        key = (record.sop_uid, record.frame_index)
        first = kept.get(key) if record.sop_uid else None
        if first is None:
            kept[key] = record
            unique.append(record)
            continue
        difference = _difference(first, record)
        if difference is not None:
            raise SeriesError(
                _where(record),
                f"SOPInstanceUID also in {Path(first.file).name}, with other {difference}: "
                "two different images cannot share one SOPInstanceUID (remove the one that does not belong)",
            )
    return unique, len(records) - len(unique)


def _group_slices(records: Sequence[FrameRecord], normal: np.ndarray) -> list[list[FrameRecord]]:
    """Group frames by their distance along the normal; groups in ascending position."""
    distances = np.array([float(np.dot(r.position, normal)) for r in records])
    order = np.argsort(distances, kind="stable")
    groups: list[list[int]] = [[int(order[0])]]
    for index in order[1:]:
        if distances[index] - distances[groups[-1][0]] > POSITION_TOLERANCE_MM:
            groups.append([int(index)])
        else:
            groups[-1].append(int(index))
    return [[records[i] for i in group] for group in groups]


def _time_key(record: FrameRecord) -> tuple[float, int, int]:
    time = record.trigger_time if math.isfinite(record.trigger_time) else math.inf
    return (time, record.order, record.frame_index)


def _check_trigger_times(group: Sequence[FrameRecord]) -> None:
    """Refuse a second frame at one slice position and TriggerTime, naming it (the later one) as the extra."""
    seen: dict[float, FrameRecord] = {}
    for record in group:
        if not math.isfinite(record.trigger_time):
            continue
        first = seen.setdefault(record.trigger_time, record)
        if first is not record:
            raise SeriesError(
                _where(record),
                f"an extra frame: TriggerTime {record.trigger_time:g} ms at this slice position is also in "
                f"{Path(first.file).name}",
            )


def _check_frame_counts(slices: Sequence[Sequence[FrameRecord]]) -> None:
    """Every slice must have as many frames as the others; the error names the odd slice (its last frame when it
    has too many, its first when too few)."""
    counts = [len(s) for s in slices]
    if len(set(counts)) == 1:
        return
    usual = Counter(counts).most_common(1)[0][0]
    odd = next(i for i, count in enumerate(counts) if count != usual)
    group = slices[odd]
    detail = f"slices have different frame counts {sorted(set(counts))}; this slice has {counts[odd]}"
    if counts[odd] > usual:
        raise SeriesError(_where(group[-1]), f"an extra frame: {detail}, the others {usual}")
    raise SeriesError(group[0].file, detail)


def assemble_series(records: Sequence[FrameRecord], source: str) -> Series:
    """Stack frame records into a Series, or raise SeriesError naming the file at fault."""
    if not records:
        raise SeriesError(source, "no image frames")
    records, duplicates = drop_duplicates(records)
    _check_consistent(records)
    normal = slice_normal(records[0].orientation)
    slices = [sorted(group, key=_time_key) for group in _group_slices(records, normal)]
    for group in slices:
        _check_trigger_times(group)
    _check_frame_counts(slices)
    array = np.stack([np.stack([r.pixels for r in group]) for group in slices]).astype(np.float32, copy=False)
    positions = np.array([np.mean([np.dot(r.position, normal) for r in group]) for group in slices])
    origins = np.array([np.mean([r.position for r in group], axis=0) for group in slices])  # S, 3
    intervals = [r.nominal_interval for r in records if math.isfinite(r.nominal_interval)]
    return Series(
        array=array,  # S, F, R, C
        pixel_spacing=tuple(float(v) for v in records[0].pixel_spacing),  # type: ignore[arg-type]
        slice_positions=positions.astype(np.float64),
        trigger_times=np.array([[r.trigger_time for r in group] for group in slices], dtype=np.float64),
        orientation=tuple(float(v) for v in records[0].orientation),
        series_uid=records[0].series_uid,
        nominal_interval=float(np.median(intervals)) if intervals else math.nan,
        source=source,
        slice_origins=origins.astype(np.float64),
        duplicates=duplicates,
    )


def load_series(path: str | Path, series_uid: str | None = None) -> Series:
    """Read a series folder (one file per frame, or enhanced multi-frame files) or one multi-frame file.

    With `series_uid`, files of other series in the folder are skipped. Raises `DataError` (a `DicomReadError`
    or `SeriesError` with `.file`) naming the file at fault.
    """
    path = Path(path)
    records: list[FrameRecord] = []
    for file in list_series_files(path):
        frames = read_frames(file)
        if series_uid is not None:
            frames = [f for f in frames if f.series_uid == series_uid]
        records.extend(frames)
    if not records:
        raise SeriesError(str(path), f"no frames of series {series_uid}" if series_uid else "no image frames")
    return assemble_series(records, str(path))


__all__ = ["DicomReadError", "Series", "SeriesError", "assemble_series", "load_series", "slice_normal"]
