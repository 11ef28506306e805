"""The DICOM writer: classic and enhanced MR files that pydicom reads back with the geometry and values written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage

from cccmr_model.phantom.dicom_writer import Encoding, Geometry, Sampling, SeriesTags, make_uid, write_series

ROW = (0.8, 0.6, 0.0)
COL = (0.0, 0.0, -1.0)


def _series(slices: int = 3, frames: int = 4, size: int = 16) -> tuple[np.ndarray, Geometry, np.ndarray]:
    rng = np.random.default_rng(0)
    array = rng.uniform(0, 900, (slices, frames, size, size + 2)).astype(np.float32)  # S, F, R, C
    geometry = Geometry.stack([10.0, -20.0, 30.0], ROW, COL, slices, 8.5)
    trigger = np.tile(np.arange(frames) * 41.5, (slices, 1)) + np.arange(slices)[:, None] * 0.5
    return array, geometry, trigger


def test_classic_round_trip(tmp_path: Path) -> None:
    array, geometry, trigger = _series()
    tags = SeriesTags(patient_id="SYN42", series_description="cine_sax", manufacturer="GE MEDICAL SYSTEMS")
    paths = write_series(
        tmp_path / "s",
        array,
        Sampling(geometry, (1.4, 1.5), 8.0, trigger),
        tags=tags,
        encoding=Encoding(rescale_slope=0.5, rescale_intercept=-10.0),
    )
    assert len(paths) == 12
    series_uids = set()
    for index, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        s, f = divmod(index, 4)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.SOPClassUID == MRImageStorage == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.PatientID == "SYN42" and ds.Manufacturer == "GE MEDICAL SYSTEMS"
        assert np.allclose(ds.ImagePositionPatient, geometry.positions[s], atol=1e-3)
        assert np.allclose(ds.ImageOrientationPatient, [*ROW, *COL])
        assert float(ds.TriggerTime) == pytest.approx(trigger[s, f])
        assert int(ds.CardiacNumberOfImages) == 4
        assert list(map(float, ds.PixelSpacing)) == [1.4, 1.5]
        values = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.abs(values - array[s, f]).max() <= 0.25 + 1e-4
        series_uids.add(ds.SeriesInstanceUID)
    assert len(series_uids) == 1


def test_positions_follow_the_slice_normal(tmp_path: Path) -> None:
    array, geometry, trigger = _series()
    paths = write_series(tmp_path, array, Sampling(geometry, (1, 1), 8, trigger))
    projected = []
    for path in paths[::4]:
        ds = pydicom.dcmread(path)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        normal = np.cross(iop[:3], iop[3:])
        projected.append(np.asarray(ds.ImagePositionPatient, float) @ normal)
        assert float(ds.SliceLocation) == pytest.approx(projected[-1], abs=1e-3)
    assert np.allclose(np.diff(projected), 8.5, atol=1e-3)
    assert float(pydicom.dcmread(paths[0]).SpacingBetweenSlices) == pytest.approx(8.5)


def test_enhanced_multiframe(tmp_path: Path) -> None:
    array, geometry, trigger = _series()
    path = tmp_path / "enh.dcm"
    (written,) = write_series(
        path,
        array,
        Sampling(geometry, (1.4, 1.5), 8.0, trigger),
        tags=SeriesTags(manufacturer="Philips Medical Systems"),
        encoding=Encoding(enhanced=True, rescale_slope=2.0),
    )
    assert written == path
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == EnhancedMRImageStorage
    assert int(ds.NumberOfFrames) == 12
    assert ds.pixel_array.shape == (12, 16, 18)
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert np.allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient, [*ROW, *COL])
    assert float(shared.PixelValueTransformationSequence[0].RescaleSlope) == 2.0
    assert float(shared.PixelMeasuresSequence[0].SliceThickness) == 8.0
    for index, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        s, f = divmod(index, 4)
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient, geometry.positions[s], atol=1e-3)
        delay = frame.CardiacSynchronizationSequence[0].NominalCardiacTriggerDelayTime
        assert delay == pytest.approx(trigger[s, f])
        assert list(frame.FrameContentSequence[0].DimensionIndexValues) == [1, s + 1, f + 1]
        assert np.abs(ds.pixel_array[index] * 2.0 - array[s, f]).max() <= 1.0 + 1e-4


def test_single_phase_lge_tags(tmp_path: Path) -> None:
    array, geometry, _ = _series(frames=1)
    tags = SeriesTags(inversion_time=310.0, series_description="LGE_PSIR_SAX")
    (classic,) = write_series(
        tmp_path / "c", array[:1], Sampling(Geometry(ROW, COL, geometry.positions[:1]), (1, 1), 8), tags=tags
    )
    ds = pydicom.dcmread(classic)
    assert float(ds.InversionTime) == 310.0 and "TriggerTime" not in ds and "CardiacNumberOfImages" not in ds
    (enh,) = write_series(
        tmp_path / "e.dcm", array, Sampling(geometry, (1, 1), 8), tags=tags, encoding=Encoding(enhanced=True)
    )
    modifier = pydicom.dcmread(enh).SharedFunctionalGroupsSequence[0].MRModifierSequence[0]
    assert float(modifier.InversionTimes) == 310.0 and modifier.InversionRecovery == "YES"


def test_signed_monochrome1_and_planted_faults(tmp_path: Path) -> None:
    array, geometry, trigger = _series(slices=2, frames=2)
    array = array - 450.0  # negative values -> int16
    paths = write_series(
        tmp_path,
        array,
        Sampling(geometry, (1, 1), 8, trigger),
        encoding=Encoding(photometric="MONOCHROME1"),
        per_file_extra={2: {"ImagePositionPatient": None, "Columns": 17}},
    )
    first = pydicom.dcmread(paths[0])
    assert first.PhotometricInterpretation == "MONOCHROME1"
    inverted = -first.pixel_array.astype(float)
    assert np.corrcoef(inverted.ravel(), array[0, 0].ravel())[0, 1] > 0.999
    (signed,) = write_series(
        tmp_path / "signed", array[:1, :1], Sampling(Geometry(ROW, COL, geometry.positions[:1]), (1, 1), 8)
    )
    ds = pydicom.dcmread(signed)
    assert ds.PixelRepresentation == 1 and np.abs(ds.pixel_array - array[0, 0]).max() <= 0.5 + 1e-4
    planted = pydicom.dcmread(paths[2])
    assert "ImagePositionPatient" not in planted and planted.Columns == 17
    assert "ImagePositionPatient" in pydicom.dcmread(paths[3])


def test_rejects_bad_input(tmp_path: Path) -> None:
    array, geometry, trigger = _series()
    with pytest.raises(ValueError, match="orthonormal"):
        Geometry((1, 0, 0), (1, 0, 0), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="trigger_times"):
        write_series(tmp_path, array, Sampling(geometry, (1, 1), 8, trigger[:, :2]))
    with pytest.raises(ValueError, match="16 bits"):
        write_series(tmp_path, array * 1e4, Sampling(geometry, (1, 1), 8))


def test_uids_are_deterministic_and_valid() -> None:
    uid = make_uid("seed", 3, "series")
    assert uid == make_uid("seed", 3, "series") != make_uid("seed", 4, "series")
    assert uid.startswith("2.25.") and len(uid) <= 64 and make_uid() != make_uid()
