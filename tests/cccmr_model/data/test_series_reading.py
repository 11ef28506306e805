"""Reading DICOM into a Series: real Sunnybrook studies, synthetic classic and enhanced series, planted faults."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import HTJ2KLossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from cccmr_model.data import load_series
from cccmr_model.data.series import SeriesError
from cccmr_model.errors import DataError
from cccmr_model.phantom.dicom_writer import Encoding, Geometry, Sampling, SeriesTags, write_series

# An oblique short-axis-like plane: neither axis-aligned nor with z as the slice direction.
ROW = (0.6, 0.8, 0.0)
COL = (0.48, -0.36, -0.8)


def _synthetic(slices: int = 4, frames: int = 5, size: int = 12) -> tuple[np.ndarray, Geometry, np.ndarray]:
    rng = np.random.default_rng(1)
    array = rng.uniform(0, 500, (slices, frames, size, size + 3)).round().astype(np.float32)  # S, F, R, C
    geometry = Geometry.stack([-40.0, 12.0, 80.0], ROW, COL, slices, 7.5)
    trigger = np.arange(frames)[None] * 50.0 + np.arange(slices)[:, None] * 3.0  # each slice its own offset
    return array, geometry, trigger


def _write(
    folder: Path, enhanced: bool = False, tags: SeriesTags | None = None, **encoding: object
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    array, geometry, trigger = _synthetic()
    sampling = Sampling(geometry, (1.5, 1.25), 7.0, trigger)
    out = folder / "series.dcm" if enhanced else folder
    paths = write_series(out, array, sampling, tags, Encoding(enhanced=enhanced, **encoding))  # type: ignore[arg-type]
    return array, trigger, paths


def test_sunnybrook_feet_first_stack(sunnybrook_dir: Path) -> None:
    series = load_series(sunnybrook_dir / "SCD0000101")
    assert series.array.shape == (12, 20, 256, 256) and series.array.dtype == np.float32
    assert np.allclose(np.diff(series.slice_positions), 10.0, atol=0.01)  # SliceLocation steps 6.72 mm: ignored
    assert series.pixel_spacing == pytest.approx((1.367188, 1.367188))
    assert np.all(np.diff(series.trigger_times, axis=1) > 0)  # frames in time order, per slice
    assert not np.allclose(series.trigger_times[0], series.trigger_times[1])  # each slice its own breath-hold
    # file N holds slice (N-1)//20, phase (N-1)%20; check two frames land where the file numbering puts them
    for number in (1, 47, 240):
        ds = pydicom.dcmread(sunnybrook_dir / "SCD0000101" / f"{number}.dcm")
        normal = series.normal
        slice_index = int(np.argmin(np.abs(series.slice_positions - np.dot(ds.ImagePositionPatient, normal))))
        frame_index = int(np.argmin(np.abs(series.trigger_times[slice_index] - float(ds.TriggerTime))))
        assert np.array_equal(series.array[slice_index, frame_index], ds.pixel_array.astype(np.float32))


def test_sunnybrook_head_first_stack(sunnybrook_dir: Path) -> None:
    series = load_series(sunnybrook_dir / "SCD0000301")
    assert series.array.shape == (10, 20, 256, 256)
    assert np.allclose(np.diff(series.slice_positions), 8.0, atol=0.01)
    assert np.all(np.diff(series.trigger_times, axis=1) > 0)


def test_oblique_classic_series_in_shuffled_file_order(tmp_path: Path) -> None:
    array, trigger, paths = _write(tmp_path / "written", rescale_slope=2.0, rescale_intercept=-100.0)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    names = [f"{i:03d}.dcm" for i in range(len(paths))]
    random.Random(3).shuffle(names)
    for path, name in zip(paths, names, strict=True):
        shutil.copy(path, shuffled / name)
    series = load_series(shuffled)
    assert series.array.shape == array.shape
    assert np.allclose(series.array, array, atol=1.0)  # rescale applied (stored = (v + 100) / 2, rounded)
    assert np.allclose(np.diff(series.slice_positions), 7.5, atol=1e-3)
    assert np.allclose(series.trigger_times, trigger)
    assert series.pixel_spacing == (1.5, 1.25)


def test_reversed_normal_orders_slices_by_projection(tmp_path: Path) -> None:
    array, _, trigger = _synthetic()
    flipped = Geometry.stack([-40.0, 12.0, 80.0], ROW, COL, 4, -7.5)  # slices written against the normal
    write_series(tmp_path, array, Sampling(flipped, (1, 1), 7, trigger))
    series = load_series(tmp_path)
    assert np.all(np.diff(series.slice_positions) > 0)
    assert np.array_equal(series.array, array[::-1])


def test_enhanced_multiframe_matches_classic(tmp_path: Path) -> None:
    array, trigger, _ = _write(tmp_path / "classic", rescale_slope=0.5, rescale_intercept=10.0)
    _write(tmp_path / "enhanced", enhanced=True, rescale_slope=0.5, rescale_intercept=10.0)
    classic, enhanced = load_series(tmp_path / "classic"), load_series(tmp_path / "enhanced" / "series.dcm")
    assert enhanced.array.shape == classic.array.shape == array.shape
    assert np.array_equal(enhanced.array, classic.array)
    assert np.allclose(enhanced.slice_positions, classic.slice_positions)
    assert np.allclose(enhanced.trigger_times, trigger)
    assert enhanced.pixel_spacing == classic.pixel_spacing


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    array, _, _ = _write(tmp_path, photometric="MONOCHROME1")
    series = load_series(tmp_path)
    offset = series.array - array  # inverted back: equal up to a constant
    assert np.allclose(offset, offset.flat[0])


def test_single_phase_series_has_one_frame(tmp_path: Path) -> None:
    array, geometry, _ = _synthetic(slices=6, frames=1)
    tags = SeriesTags(series_description="LGE PSIR", inversion_time=300.0)
    write_series(tmp_path, array, Sampling(geometry, (1, 1), 8), tags=tags)
    series = load_series(tmp_path)
    assert series.array.shape == (6, 1, *array.shape[2:])
    assert np.isnan(series.trigger_times).all()


def test_rle_compressed_series_is_decoded(tmp_path: Path) -> None:
    array, _, paths = _write(tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    assert np.array_equal(load_series(tmp_path).array, array)


def test_undecodable_transfer_syntax_is_a_clear_error(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from pydicom.pixels import get_decoder

    # highdicom brings pyjpegls (a JPEG-LS decoder): use the first of these syntaxes nothing here decodes
    candidates = (JPEGLSLossless, HTJ2KLossless, JPEGLosslessSV1)
    syntax = next((uid for uid in candidates if not get_decoder(uid).is_available), None)
    if syntax is None:
        pytest.skip("a decoder for every candidate transfer syntax is installed")
    _, _, paths = _write(tmp_path)
    ds = pydicom.dcmread(paths[0])
    ds.PixelData = encapsulate([b"\xff\xd8not-really-compressed\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(paths[0], enforce_file_format=True)
    with pytest.raises(DataError, match=r"IM00000\.dcm: pixel data in .* cannot be decoded.*install"):
        load_series(tmp_path)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("non_dicom", r"notes\.txt: not a DICOM file"),
        ("no_pixels", r"IM00003\.dcm: no pixel data"),
        ("no_position", r"IM00003\.dcm: missing ImagePositionPatient"),
        ("no_spacing", r"IM00003\.dcm: missing PixelSpacing"),
        ("orientation", r"IM00003\.dcm: mixed orientations"),
        ("matrix", r"IM00003\.dcm: mixed matrix sizes"),
        ("missing_frame", r"slices have different frame counts"),
    ],
)
def test_planted_faults_name_the_file(tmp_path: Path, fault: str, message: str) -> None:
    _, _, paths = _write(tmp_path)
    target = paths[3]
    if fault == "non_dicom":
        (tmp_path / "notes.txt").write_text("exported by PACS\n")
    elif fault == "missing_frame":
        paths[6].unlink()
    else:
        ds = pydicom.dcmread(target)
        if fault == "no_pixels":
            del ds.PixelData
        elif fault == "no_position":
            del ds.ImagePositionPatient
        elif fault == "no_spacing":
            del ds.PixelSpacing
        elif fault == "orientation":
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        elif fault == "matrix":
            ds.Rows, ds.Columns = 6, ds.Columns * 2
        ds.save_as(target)
    with pytest.raises(DataError, match=message) as info:
        load_series(tmp_path)
    assert "\n" not in str(info.value)
    if fault != "missing_frame":
        assert getattr(info.value, "file", "").endswith(("IM00003.dcm", "notes.txt"))


def test_enhanced_frame_without_position_is_rejected(tmp_path: Path) -> None:
    _, _, paths = _write(tmp_path, enhanced=True)
    ds = pydicom.dcmread(paths[0])
    del ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence
    ds.save_as(paths[0])
    with pytest.raises(DataError, match=r"series\.dcm: frame 3: missing ImagePositionPatient"):
        load_series(paths[0])


def test_two_series_in_one_folder_need_a_uid(tmp_path: Path) -> None:
    array, _, _ = _write(tmp_path, tags=SeriesTags(series_uid="1.2.3.1"))
    _write(tmp_path, filename="B{index:05d}.dcm", tags=SeriesTags(series_uid="1.2.3.2"))
    with pytest.raises(SeriesError, match="different SeriesInstanceUIDs"):
        load_series(tmp_path)
    assert np.array_equal(load_series(tmp_path, series_uid="1.2.3.1").array, array)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize(("slope", "intercept"), [("NaN", "0"), ("1", "inf"), ("1e38", "0")])
def test_non_finite_pixels_are_refused_naming_the_file(tmp_path: Path, slope: str, intercept: str) -> None:
    _, _, paths = _write(tmp_path, rescale_slope=1.0, rescale_intercept=0.0)
    ds = pydicom.dcmread(paths[2])
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.save_as(paths[2])
    with pytest.raises(DataError, match=r"IM00002\.dcm: .*non-finite") as info:
        load_series(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_non_finite_rescale_in_an_enhanced_frame_is_refused(tmp_path: Path) -> None:
    _, _, paths = _write(tmp_path, enhanced=True, rescale_slope=0.5, rescale_intercept=10.0)
    ds = pydicom.dcmread(paths[0])
    groups = ds.PerFrameFunctionalGroupsSequence[4]
    holder = groups if "PixelValueTransformationSequence" in groups else ds.SharedFunctionalGroupsSequence[0]
    holder.PixelValueTransformationSequence[0].RescaleSlope = "NaN"
    ds.save_as(paths[0])
    with pytest.raises(DataError, match=r"series\.dcm: frame \d+: non-finite RescaleSlope"):
        load_series(paths[0])


def test_a_copied_image_is_dropped(tmp_path: Path) -> None:
    array, _, paths = _write(tmp_path / "series")
    shutil.copy(paths[7], tmp_path / "series" / "IM00007_copy.dcm")  # the same SOPInstanceUID twice
    (tmp_path / "series" / "sub").mkdir()
    shutil.copy(paths[12], tmp_path / "series" / "sub" / "IM00012.dcm")
    series = load_series(tmp_path / "series")
    assert np.array_equal(series.array, array) and series.duplicates == 2


def test_a_repeated_sop_instance_uid_with_other_pixels_names_the_extra_file(tmp_path: Path) -> None:
    _, _, paths = _write(tmp_path)
    ds = pydicom.dcmread(paths[7])
    ds.PixelData = bytes(len(ds.PixelData))  # other pixels under the same SOPInstanceUID
    ds.save_as(tmp_path / "IM00007_other.dcm")
    with pytest.raises(SeriesError, match=r"IM00007_other\.dcm: SOPInstanceUID also in IM00007\.dcm, with") as info:
        load_series(tmp_path)
    assert info.value.file.endswith("IM00007_other.dcm")


def test_an_extra_frame_is_named_not_a_slice_with_the_right_count(tmp_path: Path) -> None:
    _, _, paths = _write(tmp_path)
    ds = pydicom.dcmread(paths[7])
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"  # a second image at the same place and time
    ds.save_as(tmp_path / "IM00007_again.dcm")
    with pytest.raises(SeriesError, match=r"IM00007_again\.dcm: an extra frame") as info:
        load_series(tmp_path)
    assert info.value.file.endswith("IM00007_again.dcm") and "IM00007.dcm" in str(info.value)
