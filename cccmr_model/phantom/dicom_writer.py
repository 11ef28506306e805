"""Write an image series as real MR DICOM: classic (one file per frame) or one enhanced multi-frame file.

Used by the synthetic cohort generator (`cccmr_model.phantom.cohort`) and by the ingestion tests, which plant
faults through `extra` / `per_file_extra`. Files are Explicit VR Little Endian with a valid file meta header
(PS3.10 section 7.1).

- Classic MR Image Storage (1.2.840.10008.5.1.4.1.1.4): one file per (slice, frame), each with
  ImagePositionPatient, ImageOrientationPatient, SliceLocation, TriggerTime, InstanceNumber.
- Enhanced MR Image Storage (1.2.840.10008.5.1.4.1.1.4.1, PS3.3 C.8.13): one file; shared functional groups hold
  PixelMeasures, PlaneOrientation, PixelValueTransformation (Rescale*), MRTimingAndRelatedParameters and
  MRModifier (InversionTimes); per-frame groups hold FrameContent (StackID, InStackPositionNumber,
  TemporalPositionIndex, DimensionIndexValues), PlanePosition and CardiacSynchronization
  (NominalCardiacTriggerDelayTime). Frames are ordered slice-major, then by time.

Pixel values: a float `array` holds real-world values and is stored as round((value - intercept) / slope); an
integer `array` is written as stored values unchanged. MONOCHROME1 stores `max - value`, so a reader that inverts
MONOCHROME1 recovers the input up to a constant. Speed: one template dataset per series, mutated per file.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import itertools
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

UID_ROOT = "2.25."


def make_uid(*parts: object) -> str:
    """A deterministic UID (2.25 root, derived from `parts`) or a random one when no parts are given."""
    if not parts:
        return generate_uid(prefix=None)
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return f"{UID_ROOT}{int(digest[:32], 16)}"  # a 128-bit integer under 2.25 (PS3.5 B.2)


@dataclass(frozen=True)
class Geometry:
    """Patient-space geometry of a series (LPS, mm).

    `row_cosines` is the direction of increasing column index (ImageOrientationPatient[0:3]), `col_cosines` the
    direction of increasing row index (ImageOrientationPatient[3:6]), `positions` (slices, 3) the
    ImagePositionPatient (centre of the first transmitted pixel) of each slice.
    """

    row_cosines: tuple[float, float, float]
    col_cosines: tuple[float, float, float]
    positions: np.ndarray  # S, 3

    def __post_init__(self) -> None:
        row, col = np.asarray(self.row_cosines, float), np.asarray(self.col_cosines, float)
        if abs(np.linalg.norm(row) - 1) > 1e-4 or abs(np.linalg.norm(col) - 1) > 1e-4 or abs(row @ col) > 1e-4:
            raise ValueError("row_cosines and col_cosines must be orthonormal")
        positions = np.asarray(self.positions, float)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions must be (slices, 3), got {positions.shape}")
        object.__setattr__(self, "positions", positions)

    @property
    def normal(self) -> np.ndarray:
        """Slice normal row x col (the direction `slice_positions` are measured along)."""
        return np.cross(self.row_cosines, self.col_cosines)

    @property
    def orientation(self) -> list[float]:
        return [float(v) for v in (*self.row_cosines, *self.col_cosines)]

    @classmethod
    def stack(
        cls,
        origin: Sequence[float],
        row_cosines: Sequence[float],
        col_cosines: Sequence[float],
        n_slices: int,
        spacing: float,
    ) -> Geometry:
        """Slices `spacing` mm apart along the normal, the first at `origin`."""
        row, col = np.asarray(row_cosines, float), np.asarray(col_cosines, float)
        normal = np.cross(row, col)
        positions = np.asarray(origin, float)[None] + np.arange(n_slices)[:, None] * spacing * normal[None]
        return cls(tuple(row), tuple(col), positions)


@dataclass(frozen=True)
class SeriesTags:
    """Who, where and how: patient/study identity, vendor tags and acquisition parameters of one series."""

    patient_name: str = "Synthetic^Subject"
    patient_id: str = "SYN0000"
    study_uid: str | None = None  # None: a new random UID
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    series_number: int = 1
    series_description: str = "cine"
    protocol_name: str | None = None  # None: series_description
    manufacturer: str = "SIEMENS"
    model_name: str = "MAGNETOM Aera"
    institution: str = "Synthetic Hospital"
    field_strength: float = 1.5
    study_date: str = "20240101"
    study_time: str = "090000"
    patient_sex: str = "O"
    patient_age: str | None = None  # e.g. "054Y"
    repetition_time: float = 3.0
    echo_time: float = 1.5
    flip_angle: float = 60.0
    scanning_sequence: str = "GR"
    sequence_variant: str = "SS"
    inversion_time: float | None = None  # LGE
    heart_rate: float | None = None
    cardiac_number_of_images: int | None = None  # None: frames of the series when it has more than one


@dataclass(frozen=True)
class Sampling:
    """Where each pixel lies and when each frame was acquired: geometry, pixel and slice spacing, trigger times."""

    geometry: Geometry
    pixel_spacing: tuple[float, float]  # mm, (row spacing, column spacing)
    slice_thickness: float  # mm
    trigger_times: np.ndarray | None = None  # (slices, frames) ms; None for a single-phase series
    spacing_between_slices: float | None = None  # mm; None: the median step between the slice positions


@dataclass(frozen=True)
class Encoding:
    """How the values and files are written: classic or enhanced, rescale, photometric, classic file names."""

    enhanced: bool = False  # one Enhanced MR file instead of one classic file per (slice, frame)
    rescale_slope: float | None = None  # slope and intercept None: no Rescale tags (slope 1, intercept 0)
    rescale_intercept: float | None = None
    photometric: str = "MONOCHROME2"
    filename: str = "IM{index:05d}.dcm"  # classic files, formatted with the 0-based file index, slice and frame


def write_series(
    out: str | Path,
    array: np.ndarray,
    sampling: Sampling,
    tags: SeriesTags | None = None,
    encoding: Encoding | None = None,
    *,
    extra: Mapping[str, Any] | None = None,
    per_file_extra: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Write `array` (slices, frames, rows, cols) as one MR series; returns the files written.

    `out` is a directory for classic files (created; files named by `encoding.filename`) or the path of the single
    enhanced file. `extra` sets or, with value None, deletes top-level keywords in every file; `per_file_extra`
    does so for one classic file index (slice * frames + frame). Enhanced files keep timing in the functional
    groups only.
    """
    array = np.asarray(array)
    if array.ndim != 4:
        raise ValueError(f"array must be (slices, frames, rows, cols), got shape {array.shape}")
    sampling = _checked_sampling(sampling, *array.shape[:2])
    tags = tags or SeriesTags()
    encoding = encoding or Encoding()
    stored, signed = _stored_values(array, encoding.rescale_slope, encoding.rescale_intercept, encoding.photometric)
    uids = _Uids(tags)
    frames = array.shape[1] if sampling.trigger_times is not None else 1
    base = _base_dataset(tags, uids, stored, signed, encoding.photometric, frames)
    out = Path(out)
    if encoding.enhanced:
        return [_write_enhanced(out, base, stored, sampling, encoding, tags, extra)]
    return _write_classic(out, base, stored, sampling, encoding, uids, extra, per_file_extra)


def _checked_sampling(sampling: Sampling, n_slices: int, n_frames: int) -> Sampling:
    """The sampling with float trigger times checked against the array and the slice spacing filled in."""
    geometry, trigger_times, spacing = sampling.geometry, sampling.trigger_times, sampling.spacing_between_slices
    if geometry.positions.shape[0] != n_slices:
        raise ValueError(f"geometry has {geometry.positions.shape[0]} positions for {n_slices} slices")
    if trigger_times is not None:
        trigger_times = np.asarray(trigger_times, float)
        if trigger_times.shape != (n_slices, n_frames):
            raise ValueError(f"trigger_times must be {(n_slices, n_frames)}, got {trigger_times.shape}")
    if spacing is None and n_slices > 1:
        spacing = float(np.median(np.abs(np.diff(geometry.positions @ geometry.normal))))
    return replace(sampling, trigger_times=trigger_times, spacing_between_slices=spacing)


class _Uids:
    def __init__(self, tags: SeriesTags) -> None:
        self.study = tags.study_uid or make_uid()
        self.series = tags.series_uid or make_uid()
        self.frame_of_reference = tags.frame_of_reference_uid or make_uid(self.study, "for")

    def instance(self, index: int) -> str:
        uid = f"{self.series}.{index + 1}"
        return uid if len(uid) <= 64 else make_uid(self.series, index)


def _stored_values(
    array: np.ndarray, slope: float | None, intercept: float | None, photometric: str
) -> tuple[np.ndarray, bool]:
    """Stored pixel values as uint16 or int16 and whether they are signed."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    if np.issubdtype(array.dtype, np.integer):
        values = array.astype(np.int64)
    else:
        scaled = array.astype(np.float32 if array.dtype.itemsize <= 4 else np.float64)
        if intercept:
            scaled = scaled - np.float32(intercept)
        if slope and slope != 1.0:
            scaled = scaled / np.float32(slope)
        values = np.rint(scaled)
    if photometric == "MONOCHROME1":
        values = values.max() - values
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi <= 65535:
        return values.astype(np.uint16), False
    if lo >= -32768 and hi <= 32767:
        return values.astype(np.int16), True
    raise ValueError(f"stored values span [{lo}, {hi}]: outside 16 bits; choose a larger rescale_slope")


def _base_dataset(
    tags: SeriesTags, uids: _Uids, stored: np.ndarray, signed: bool, photometric: str, n_frames: int
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.FileMetaInformationVersion = b"\x00\x01"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "CCCMR_PHANTOM"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = "MR"
    ds.PatientName = tags.patient_name
    ds.PatientID = tags.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = tags.patient_sex
    if tags.patient_age:
        ds.PatientAge = tags.patient_age
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "HEART"
    ds.StudyInstanceUID = uids.study
    ds.SeriesInstanceUID = uids.series
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "CMR^Cardiomyopathy"
    for prefix in ("Study", "Series", "Acquisition", "Content"):
        setattr(ds, f"{prefix}Date", tags.study_date)
        setattr(ds, f"{prefix}Time", tags.study_time)
    ds.SeriesNumber = tags.series_number
    ds.SeriesDescription = tags.series_description
    ds.ProtocolName = tags.protocol_name or tags.series_description
    ds.Manufacturer = tags.manufacturer
    ds.ManufacturerModelName = tags.model_name
    ds.InstitutionName = tags.institution
    ds.StationName = "SYNTH-MR"
    ds.SoftwareVersions = "cccmr-phantom"
    ds.MagneticFieldStrength = tags.field_strength
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = tags.repetition_time
    ds.EchoTime = tags.echo_time
    ds.FlipAngle = tags.flip_angle
    ds.ScanningSequence = tags.scanning_sequence
    ds.SequenceVariant = tags.sequence_variant
    ds.ScanOptions = "CG"  # cardiac gating
    ds.ImagingFrequency = 42.58 * tags.field_strength
    ds.ImagedNucleus = "1H"
    cardiac_images = tags.cardiac_number_of_images or (n_frames if n_frames > 1 else None)
    if cardiac_images:
        ds.CardiacNumberOfImages = cardiac_images
    if tags.heart_rate:
        ds.HeartRate = round(tags.heart_rate)
        ds.NominalInterval = round(60000.0 / tags.heart_rate)
    if tags.inversion_time is not None:
        ds.InversionTime = tags.inversion_time
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = int(stored.shape[2]), int(stored.shape[3])
    ds.BitsAllocated = 16
    high = int(stored.max()) if stored.size else 0
    ds.BitsStored = 16 if signed or high >= 4096 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    lo, hi = np.percentile(stored[:, :: max(1, stored.shape[1] // 4), ::2, ::2], [1, 99.5])
    ds.WindowCenter = round(float(lo + hi) / 2, 1)
    ds.WindowWidth = max(1.0, round(float(hi - lo), 1))
    return ds


def _apply_extra(ds: Dataset, extra: Mapping[str, Any] | None) -> None:
    for keyword, value in (extra or {}).items():
        if value is None:
            if keyword in ds:
                del ds[keyword]
        else:
            setattr(ds, keyword, value)


def _write_classic(
    out: Path,
    ds: Dataset,
    stored: np.ndarray,
    sampling: Sampling,
    encoding: Encoding,
    uids: _Uids,
    extra: Mapping[str, Any] | None,
    per_file_extra: Mapping[int, Mapping[str, Any]] | None,
) -> list[Path]:
    geometry, trigger_times = sampling.geometry, sampling.trigger_times
    slope, intercept = encoding.rescale_slope, encoding.rescale_intercept
    ds.SOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ImageOrientationPatient = geometry.orientation
    ds.PixelSpacing = [float(sampling.pixel_spacing[0]), float(sampling.pixel_spacing[1])]
    ds.SliceThickness = float(sampling.slice_thickness)
    if sampling.spacing_between_slices is not None:
        ds.SpacingBetweenSlices = round(float(sampling.spacing_between_slices), 4)
    if slope is not None or intercept is not None:
        ds.RescaleSlope = float(slope if slope is not None else 1.0)
        ds.RescaleIntercept = float(intercept if intercept is not None else 0.0)
        ds.RescaleType = "US"
    ds.AcquisitionNumber = 1
    _apply_extra(ds, extra)
    out.mkdir(parents=True, exist_ok=True)
    n_slices, n_frames = stored.shape[:2]
    normal = geometry.normal
    fast = _FastClassic(ds) if not (set(extra or {}) & _VARYING_KEYWORDS) else None
    paths: list[Path] = []
    for s in range(n_slices):
        position = [round(float(v), 4) for v in geometry.positions[s]]
        location = round(float(geometry.positions[s] @ normal), 4)
        for f in range(n_frames):
            index = s * n_frames + f
            trigger = round(float(trigger_times[s, f]), 2) if trigger_times is not None else None
            path = out / encoding.filename.format(index=index, slice=s, frame=f)
            varying = {
                "SOPInstanceUID": uids.instance(index),
                "InstanceNumber": index + 1,
                "ImagePositionPatient": position,
                "SliceLocation": location,
                "TriggerTime": trigger,
            }
            if fast is not None and not (per_file_extra and index in per_file_extra):
                path.write_bytes(fast.encode(varying, stored[s, f]))
            else:
                target = copy.deepcopy(ds)
                _apply_extra(target, {k: v for k, v in varying.items() if v is not None})
                target.file_meta.MediaStorageSOPInstanceUID = target.SOPInstanceUID
                target.PixelData = stored[s, f].tobytes()
                _apply_extra(target, (extra or {}) | dict((per_file_extra or {}).get(index, {})))
                target.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


# Per-file attributes of a classic series, in tag order; everything else is encoded once per series.
_VARYING = (
    (0x00080018, "SOPInstanceUID", b"UI"),
    (0x00181060, "TriggerTime", b"DS"),
    (0x00200013, "InstanceNumber", b"IS"),
    (0x00200032, "ImagePositionPatient", b"DS"),
    (0x00201041, "SliceLocation", b"DS"),
    (0x7FE00010, "PixelData", b"OW"),
)
_VARYING_KEYWORDS = {keyword for _, keyword, _ in _VARYING}


def _encode_dataset(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _text(value: object, vr: bytes) -> bytes:
    if vr == b"UI":
        raw = str(value).encode("ascii")
        return raw + b"\0" * (len(raw) % 2)
    values = value if isinstance(value, list) else [value]
    raw = "\\".join(_number(v, vr) for v in values).encode("ascii")
    return raw + b" " * (len(raw) % 2)


def _number(value: object, vr: bytes) -> str:
    if vr == b"IS":
        return str(int(value))  # type: ignore[call-overload]
    text = repr(float(value))  # type: ignore[arg-type]
    return text if len(text) <= 16 else f"{float(value):.8g}"  # type: ignore[arg-type]


class _FastClassic:
    """A classic MR file as pre-encoded static chunks with the per-file elements spliced in (PS3.5 7.1.2)."""

    def __init__(self, ds: Dataset) -> None:
        meta = ds.file_meta
        self.meta_head = _encode_dataset(
            _sub(meta, lambda tag: tag < 0x00020003 and tag != 0x00020000, FileMetaDataset)
        )
        self.meta_tail = _encode_dataset(_sub(meta, lambda tag: tag > 0x00020003, FileMetaDataset))
        bounds = [0, *(tag for tag, _, _ in _VARYING), 0xFFFFFFFF]
        self.chunks = [
            _encode_dataset(_sub(ds, lambda tag, lo=lo, hi=hi: lo < tag < hi, Dataset))
            for lo, hi in itertools.pairwise(bounds)
        ]

    def encode(self, varying: Mapping[str, Any], pixels: np.ndarray) -> bytes:
        uid = _element(0x00020003, b"UI", _text(varying["SOPInstanceUID"], b"UI"))
        meta_length = len(self.meta_head) + len(uid) + len(self.meta_tail)
        parts = [
            b"\0" * 128 + b"DICM",
            _element(0x00020000, b"UL", struct.pack("<I", meta_length)),
            self.meta_head,
            uid,
            self.meta_tail,
            self.chunks[0],
        ]
        for (tag, keyword, vr), chunk in zip(_VARYING, self.chunks[1:], strict=True):
            if keyword == "PixelData":
                parts.append(_element(tag, vr, pixels.tobytes()))
            elif varying.get(keyword) is not None:
                parts.append(_element(tag, vr, _text(varying[keyword], vr)))
            parts.append(chunk)
        return b"".join(parts)


def _sub(ds: Dataset, keep: Any, cls: type) -> Dataset:
    sub = cls()
    for element in ds:
        if keep(int(element.tag)):
            sub.add(element)
    return sub


def _item(**keywords: Any) -> Dataset:
    item = Dataset()
    for key, value in keywords.items():
        setattr(item, key, value)
    return item


def _write_enhanced(
    out: Path,
    ds: Dataset,
    stored: np.ndarray,
    sampling: Sampling,
    encoding: Encoding,
    tags: SeriesTags,
    extra: Mapping[str, Any] | None,
) -> Path:
    geometry, trigger_times = sampling.geometry, sampling.trigger_times
    slope, intercept = encoding.rescale_slope, encoding.rescale_intercept
    n_slices, n_frames = stored.shape[:2]
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = f"{ds.SeriesInstanceUID}.1"[:64]
    ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n_slices * n_frames
    ds.AcquisitionDateTime = f"{tags.study_date}{tags.study_time}"
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = "T1" if tags.inversion_time is not None else "MIXED"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY" if ds.PhotometricInterpretation == "MONOCHROME2" else "INVERSE"
    for keyword in ("RepetitionTime", "EchoTime", "FlipAngle", "InversionTime", "ScanOptions", "SequenceVariant"):
        if keyword in ds:  # classic-only attributes: their enhanced counterparts are in the functional groups
            del ds[keyword]
    organization = make_uid(ds.SeriesInstanceUID, "dimension-organization")
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=organization)])
    dims = [(0x00209056, "Stack ID"), (0x00209057, "In-Stack Position Number")]
    if trigger_times is not None:
        dims.append((0x00209128, "Temporal Position Index"))
    ds.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=organization,
                DimensionIndexPointer=Tag(pointer),
                FunctionalGroupPointer=Tag(0x00209111),  # FrameContentSequence
                DimensionDescriptionLabel=label,
            )
            for pointer, label in dims
        ]
    )
    spacing = [float(sampling.pixel_spacing[0]), float(sampling.pixel_spacing[1])]
    measures = _item(PixelSpacing=spacing, SliceThickness=sampling.slice_thickness)
    if sampling.spacing_between_slices is not None:
        measures.SpacingBetweenSlices = round(float(sampling.spacing_between_slices), 4)
    shared = _item(
        PixelMeasuresSequence=DicomSequence([measures]),
        PlaneOrientationSequence=DicomSequence([_item(ImageOrientationPatient=geometry.orientation)]),
        PixelValueTransformationSequence=DicomSequence(
            [
                _item(
                    RescaleIntercept=float(intercept or 0.0),
                    RescaleSlope=float(slope if slope is not None else 1.0),
                    RescaleType="US",
                )
            ]
        ),
        MRTimingAndRelatedParametersSequence=DicomSequence(
            [_item(RepetitionTime=tags.repetition_time, FlipAngle=tags.flip_angle, EchoTrainLength=1)]
        ),
        MREchoSequence=DicomSequence([_item(EffectiveEchoTime=tags.echo_time)]),
        MRModifierSequence=DicomSequence([_mr_modifier(tags.inversion_time)]),
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    start = _dt.datetime.strptime(tags.study_date + tags.study_time[:6], "%Y%m%d%H%M%S")
    frames = []
    for s in range(n_slices):
        position = [round(float(v), 4) for v in geometry.positions[s]]
        for f in range(n_frames):
            content = _item(
                StackID="1",
                InStackPositionNumber=s + 1,
                FrameAcquisitionDateTime=(start + _dt.timedelta(seconds=s * 12)).strftime("%Y%m%d%H%M%S.%f"),
                FrameReferenceDateTime=(start + _dt.timedelta(seconds=s * 12)).strftime("%Y%m%d%H%M%S.%f"),
                FrameAcquisitionDuration=tags.repetition_time,
                DimensionIndexValues=[1, s + 1, f + 1] if trigger_times is not None else [1, s + 1],
            )
            group = _item(
                FrameContentSequence=DicomSequence([content]),
                PlanePositionSequence=DicomSequence([_item(ImagePositionPatient=position)]),
            )
            if trigger_times is not None:
                content.TemporalPositionIndex = f + 1
                group.CardiacSynchronizationSequence = DicomSequence(
                    [_item(NominalCardiacTriggerDelayTime=round(float(trigger_times[s, f]), 2))]
                )
            frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(frames)
    ds.PixelData = np.ascontiguousarray(stored.reshape(-1, *stored.shape[2:])).tobytes()
    _apply_extra(ds, extra)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def _mr_modifier(inversion_time: float | None) -> Dataset:
    item = _item(
        InversionRecovery="YES" if inversion_time is not None else "NO",
        FlowCompensation="NONE",
        Spoiling="NONE",
        T2Preparation="NO",
        SpectrallySelectedExcitation="NONE",
        SpatialPresaturation="NONE",
        PartialFourier="NO",
    )
    if inversion_time is not None:
        item.InversionTimes = [float(inversion_time)]
    return item
