"""Reading DICOM MR files into per-frame records: pixels plus the geometry and timing tags that place them.

A classic MR file (one frame) yields one `FrameRecord`; an enhanced multi-frame MR file yields one record per
frame, with geometry and timing taken from the Per-Frame Functional Groups and, where a macro is absent there,
from the Shared Functional Groups (DICOM PS3.3 C.7.6.16). Stored values become real-world values through
RescaleSlope/RescaleIntercept (PS3.3 C.11.1.1.2, or the Pixel Value Transformation macro in enhanced files);
MONOCHROME1 pixels are inverted first so that a higher value is always brighter (PS3.3 C.7.6.3.1.2).

Reading a file is kept apart from turning frames into a series (`cccmr_model.data.series`). Every failure is a
`DicomReadError` whose message names the file; patient identity tags are never read into a record.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from cccmr_model.errors import DataError

# Files in a series folder that are not images of the series and are skipped rather than rejected.
IGNORED_NAMES = frozenset({"DICOMDIR", "Thumbs.db", "manifest.csv"})
# Enhanced MR Image Storage, Enhanced MR Color (rejected later as colour), Legacy Converted Enhanced MR.
ENHANCED_SOP_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.3", "1.2.840.10008.5.1.4.1.1.4.4"}
)


class DicomReadError(DataError):
    """A file that cannot be used as an MR image; `file` names it."""

    def __init__(self, file: Path | str, problem: str) -> None:
        problem = " ".join(problem.split())  # one line, whatever the underlying exception printed
        super().__init__(f"{file}: {problem}")
        self.file = str(file)
        self.problem = problem


@dataclass(frozen=True)
class FrameRecord:
    """One image frame with the tags that place it in space and in the cardiac cycle."""

    file: str
    frame_index: int  # 0 for a classic file, the frame number (from 0) in a multi-frame file
    series_uid: str
    position: tuple[float, float, float]  # ImagePositionPatient, mm
    orientation: tuple[float, float, float, float, float, float]  # ImageOrientationPatient (row, column cosines)
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing), mm
    trigger_time: float  # ms after the R wave; nan when the file has none
    order: int  # InstanceNumber or frame number: orders frames when TriggerTime is missing
    nominal_interval: float  # R-R interval in ms; nan when absent
    pixels: np.ndarray | None  # (rows, cols) float32, None when read without pixels
    rows: int
    cols: int
    sop_uid: str = ""  # SOPInstanceUID of the file: with frame_index, what makes a frame unique


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's value validation (real data has e.g. UIDs with leading zeros) while reading."""
    previous = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        pydicom_config.settings.reading_validation_mode = previous


def read_dataset(path: Path, *, with_pixels: bool = True) -> Dataset:
    """Parse one file; a file without the DICOM preamble is accepted only if it still parses as an image."""
    with quiet_pydicom():
        try:
            return pydicom.dcmread(path, stop_before_pixels=not with_pixels)
        except InvalidDicomError:
            pass
        except Exception as exc:
            raise DicomReadError(path, f"unreadable DICOM file ({type(exc).__name__}: {exc})") from exc
        try:  # no preamble/"DICM" prefix: some exporters omit it
            ds = pydicom.dcmread(path, stop_before_pixels=not with_pixels, force=True)
        except Exception as exc:
            raise DicomReadError(path, "not a DICOM file") from exc
    if "SOPClassUID" not in ds or "Rows" not in ds:
        raise DicomReadError(path, "not a DICOM file")
    return ds


def _float(value: object, default: float = math.nan) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _macro(ds: Dataset, frame_item: Dataset | None, sequence: str) -> Dataset | None:
    """A functional-group macro for one frame: per-frame first, then shared."""
    for holder in (frame_item, ds.get("SharedFunctionalGroupsSequence", [None])[0]):
        if holder is not None and sequence in holder and len(holder[sequence].value) > 0:
            return holder[sequence].value[0]
    return None


def _required(path: Path, holder: Dataset | None, keyword: str, count: int) -> tuple[float, ...]:
    value = None if holder is None else holder.get(keyword)
    if value is None:
        raise DicomReadError(path, f"missing {keyword}")
    values = tuple(_float(v) for v in (value if count > 1 else [value]))
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise DicomReadError(path, f"invalid {keyword} {list(values)}")
    return values


def _stored_pixels(ds: Dataset, path: Path) -> np.ndarray:
    """The stored values, (frames, rows, cols) or (rows, cols); decoding errors become a DicomReadError."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DicomReadError(path, "no pixel data")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        with quiet_pydicom():
            return ds.pixel_array
    except Exception as exc:
        if syntax is not None and syntax.is_compressed and not _decoder_available(syntax):
            raise DicomReadError(
                path,
                f"pixel data in {syntax.name} cannot be decoded: no decoder installed "
                "(install a decoder package such as pylibjpeg[all], pyjpegls or python-gdcm)",
            ) from exc
        raise DicomReadError(path, f"pixel data cannot be read ({type(exc).__name__}: {exc})") from exc


def _decoder_available(syntax: UID) -> bool:
    try:
        return bool(get_decoder(syntax).is_available)
    except (NotImplementedError, ValueError):
        return False


def _invert_monochrome1(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip() != "MONOCHROME1":
        return stored
    bits = int(ds.get("BitsStored", 16))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -1 - stored.astype(np.int64)  # bitwise inversion of signed values
    return (2**bits - 1) - stored.astype(np.int64)


def _rescale(holder: Dataset | None, ds: Dataset) -> tuple[float, float]:
    source = holder if holder is not None and "RescaleSlope" in holder else ds
    return _float(source.get("RescaleSlope"), 1.0), _float(source.get("RescaleIntercept"), 0.0)


def _real_world(stored: np.ndarray, slope: float, intercept: float, path: Path, where: str = "") -> np.ndarray:
    """Stored values times slope plus intercept, float32; a non-finite slope, intercept or pixel is refused."""
    prefix = f"{where}: " if where else ""
    if not (math.isfinite(slope) and math.isfinite(intercept)):
        raise DicomReadError(path, f"{prefix}non-finite RescaleSlope {slope} or RescaleIntercept {intercept}")
    with np.errstate(over="ignore", invalid="ignore"):
        pixels = (stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)
    bad = int(np.count_nonzero(~np.isfinite(pixels)))
    if bad:
        raise DicomReadError(path, f"{prefix}{bad} non-finite pixel value(s) (NaN or Inf) after rescale")
    return pixels


def _check_image(ds: Dataset, path: Path) -> None:
    modality = str(ds.get("Modality", "MR"))
    if modality != "MR":
        raise DicomReadError(path, f"modality {modality}, expected MR")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise DicomReadError(path, "colour image (SamplesPerPixel > 1), expected a greyscale MR image")
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomReadError(path, "missing Rows/Columns")


def read_frames(path: Path, *, with_pixels: bool = True) -> list[FrameRecord]:
    """All frames of one DICOM file as records (pixels as float32 real-world values when `with_pixels`)."""
    with quiet_pydicom():  # values are converted lazily, on first access: keep validation off until done
        return _read_frames(path, with_pixels)


def _read_frames(path: Path, with_pixels: bool) -> list[FrameRecord]:
    return frames_from_dataset(read_dataset(path, with_pixels=with_pixels), path, with_pixels)


def frames_from_dataset(ds: Dataset, path: Path, with_pixels: bool) -> list[FrameRecord]:
    """The frame records of a parsed dataset (call inside `quiet_pydicom()`)."""
    _check_image(ds, path)
    multi_frame = int(ds.get("NumberOfFrames", 1) or 1) > 1 or str(ds.get("SOPClassUID", "")) in ENHANCED_SOP_CLASSES
    if not multi_frame:
        # Classic MR; some exporters (the Sunnybrook GE files) add an empty per-frame group that is ignored.
        return [_classic_frame(ds, path, with_pixels)]
    if "PerFrameFunctionalGroupsSequence" not in ds:
        raise DicomReadError(path, "multi-frame file without per-frame functional groups (not an enhanced MR image)")
    return _enhanced_frames(ds, path, with_pixels)


def _classic_frame(ds: Dataset, path: Path, with_pixels: bool) -> FrameRecord:
    position = _required(path, ds, "ImagePositionPatient", 3)
    orientation = _required(path, ds, "ImageOrientationPatient", 6)
    spacing = _required(path, ds, "PixelSpacing", 2)
    pixels = None
    if with_pixels:
        stored = _invert_monochrome1(_stored_pixels(ds, path), ds)
        pixels = _real_world(stored, *_rescale(None, ds), path)
    return FrameRecord(
        file=str(path),
        frame_index=0,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        position=position,  # type: ignore[arg-type]
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        trigger_time=_float(ds.get("TriggerTime", ds.get("NominalCardiacTriggerDelayTime"))),
        order=int(_float(ds.get("InstanceNumber"), 0.0)),
        nominal_interval=_float(ds.get("NominalInterval")),
        pixels=pixels,
        rows=int(ds.Rows),
        cols=int(ds.Columns),
        sop_uid=str(ds.get("SOPInstanceUID", "")),
    )


def _enhanced_frames(ds: Dataset, path: Path, with_pixels: bool) -> list[FrameRecord]:
    items = list(ds.PerFrameFunctionalGroupsSequence)
    n_frames = int(ds.get("NumberOfFrames", len(items)) or len(items))
    if len(items) != n_frames:
        raise DicomReadError(path, f"{len(items)} per-frame functional groups for {n_frames} frames")
    stack = None
    if with_pixels:
        stack = _invert_monochrome1(_stored_pixels(ds, path), ds)
        stack = stack.reshape(n_frames, int(ds.Rows), int(ds.Columns))
    records = []
    for index, item in enumerate(items):
        where = f"frame {index + 1}"
        try:
            position = _required(path, _macro(ds, item, "PlanePositionSequence"), "ImagePositionPatient", 3)
            orientation = _required(path, _macro(ds, item, "PlaneOrientationSequence"), "ImageOrientationPatient", 6)
            spacing = _required(path, _macro(ds, item, "PixelMeasuresSequence"), "PixelSpacing", 2)
        except DicomReadError as exc:
            raise DicomReadError(path, f"{where}: {exc.problem}") from exc
        cardiac = _macro(ds, item, "CardiacSynchronizationSequence")
        content = _macro(ds, item, "FrameContentSequence")
        trigger = _float(cardiac.get("NominalCardiacTriggerDelayTime")) if cardiac is not None else math.nan
        if not math.isfinite(trigger):
            trigger = _float(item.get("TriggerTime", ds.get("TriggerTime")))
        order = int(_float(content.get("TemporalPositionIndex"), index)) if content is not None else index
        interval = _float(cardiac.get("RRIntervalTimeNominal")) if cardiac is not None else math.nan
        pixels = None
        if stack is not None:
            slope, intercept = _rescale(_macro(ds, item, "PixelValueTransformationSequence"), ds)
            pixels = _real_world(stack[index], slope, intercept, path, where)
        records.append(
            FrameRecord(
                file=str(path),
                frame_index=index,
                series_uid=str(ds.get("SeriesInstanceUID", "")),
                position=position,  # type: ignore[arg-type]
                orientation=orientation,  # type: ignore[arg-type]
                pixel_spacing=spacing,  # type: ignore[arg-type]
                trigger_time=trigger,
                order=order,
                nominal_interval=interval if math.isfinite(interval) else _float(ds.get("NominalInterval")),
                pixels=pixels,
                rows=int(ds.Rows),
                cols=int(ds.Columns),
                sop_uid=str(ds.get("SOPInstanceUID", "")),
            )
        )
    return records


def list_series_files(path: Path) -> list[Path]:
    """The files of a series: `path` itself, or every file below the folder (hidden files and DICOMDIR skipped)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        if p.name not in IGNORED_NAMES
    )
    if not files:
        raise DataError(f"{path}: folder holds no files")
    return files
