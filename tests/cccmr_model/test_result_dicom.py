"""`cccmr predict --dicom-out`: a Secondary Capture result page and an SR in the input's study, via highdicom."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage
from test_explain import PATIENT, _cine, _release

from cccmr_model.cli import main
from cccmr_model.cli.predict_cmd import frames_note
from cccmr_model.data.orientation import DisplayOrder
from cccmr_model.phantom.dicom_writer import SeriesTags
from cccmr_model.predict import Predictor
from cccmr_model.release import load_release
from cccmr_model.result_dicom import DISCLAIMER, page_lines, release_id


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("study")
    other = SeriesTags(patient_name="Roe^Richard", patient_id="MRN-0077", study_uid="1.2.826.0.1.3680043.8.498.2")
    return {
        "cine_4ch": _cine(root / "a" / "cine_4ch", 1, PATIENT, seed=1),
        "cine_sax": _cine(root / "a" / "cine_sax", 5, PATIENT, seed=2),
        "b_4ch": _cine(root / "b" / "cine_4ch", 1, other, seed=3),
        "b_sax": _cine(root / "b" / "cine_sax", 5, other, seed=4),
        "root": root,
        "release": _release(root),
    }


def _input_header(folder: Path) -> pydicom.Dataset:
    return pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True)


def _check_result(out: Path, source: Path, p_cardiomyopathy: float, content_hash: str) -> None:
    """Both objects read back, pass highdicom's parsing, sit in the input's study with its patient, new UIDs."""
    ref = _input_header(source)
    page, sr = pydicom.dcmread(out / "result_page.dcm"), pydicom.dcmread(out / "result_sr.dcm")
    for ds in (page, sr):
        assert ds.StudyInstanceUID == ref.StudyInstanceUID
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
            assert ds.get(keyword) == ref.get(keyword)
        assert ds.SeriesInstanceUID != ref.SeriesInstanceUID and ds.SOPInstanceUID != ref.SOPInstanceUID
    assert page.SeriesInstanceUID != sr.SeriesInstanceUID
    assert page.SOPClassUID == SecondaryCaptureImageStorage and page.BurnedInAnnotation == "NO"
    assert page.pixel_array.ndim == 3 and page.pixel_array.shape[2] == 3
    assert hd.imread(out / "result_page.dcm").SOPInstanceUID == page.SOPInstanceUID
    parsed = hd.sr.srread(out / "result_sr.dcm")
    report = hd.sr.MeasurementReport.from_sequence([parsed])
    (group,) = report.get_image_measurement_groups()
    (measurement,) = group.get_measurements()
    assert measurement.name.meaning == "Probability of cardiomyopathy"
    assert measurement.value == pytest.approx(p_cardiomyopathy, abs=1e-6) and measurement.unit.value == "1"
    texts = [e.value for e in sr.iterall() if e.keyword == "TextValue"]
    assert f"content_hash={content_hash}" in texts and any(t.startswith("CC-CMR ") for t in texts)
    evidence = {series for _, series in parsed.get_evidence_series()}
    assert ref.SeriesInstanceUID in evidence


def test_dicom_out_single_subject(study, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dicom"
    argv = ["predict", "--release", str(study["release"]), "--cine-4ch", str(study["cine_4ch"]), "--json"]
    assert main([*argv, "--cine-sax", str(study["cine_sax"]), "--dicom-out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    _check_result(out, study["cine_sax"], result["p_cardiomyopathy"], result["release_content_hash"])


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) not installed")
def test_dicom_out_passes_dciodvfy(study, tmp_path: Path) -> None:
    """David Clunie's IOD checker (dicom3tools): no errors. Warnings about our private coding scheme 99CCCMR stay."""
    out = tmp_path / "dicom"
    argv = ["predict", "--release", str(study["release"]), "--cine-4ch", str(study["cine_4ch"])]
    assert main([*argv, "--cine-sax", str(study["cine_sax"]), "--dicom-out", str(out)]) == 0
    for name, iod in (("result_page.dcm", "SCImage"), ("result_sr.dcm", "Comprehensive3DSR")):
        checked = subprocess.run(["dciodvfy", "-new", str(out / name)], capture_output=True, text=True, timeout=60)
        lines = (checked.stdout + checked.stderr).splitlines()
        assert lines and lines[0] == iod, lines
        assert not [line for line in lines if line.startswith("Error")], lines
        assert all("99CCCMR" in line for line in lines if line.startswith("Warning")), lines


def test_dicom_out_batch_per_subject(study, tmp_path: Path, caplog) -> None:
    manifest = study["root"] / "predict.csv"
    manifest.write_text("subject_id,cine_4ch,cine_sax\na,a/cine_4ch,a/cine_sax\nb,b/cine_4ch,b/cine_sax\n")
    out, dicom, explain = tmp_path / "p.csv", tmp_path / "dicom", tmp_path / "explain"
    argv = ["predict", "--release", str(study["release"]), "--manifest", str(manifest), "--out", str(out)]
    assert main([*argv, "--dicom-out", str(dicom), "--explain", str(explain)]) == 0
    rows = {row["subject_id"]: row for row in csv.DictReader(out.open())}
    content_hash = load_release(study["release"]).content_hash
    _check_result(dicom / "a", study["cine_sax"], float(rows["a"]["p_cardiomyopathy"]), content_hash)
    _check_result(dicom / "b", study["b_sax"], float(rows["b"]["p_cardiomyopathy"]), content_hash)
    assert pydicom.dcmread(dicom / "b" / "result_sr.dcm").PatientName == "Roe^Richard"
    assert (explain / "a" / "cine_sax_es.png").is_file() and (explain / "b" / "explanation.json").is_file()
    logged = caplog.text
    assert "Doe" not in logged and "MRN-00" not in logged and PATIENT.study_uid not in logged


def test_page_text_names_the_release_and_the_disclaimer(study) -> None:
    identity = release_id(load_release(study["release"]).manifest)
    lines = page_lines({"cardiomyopathy": 0.73}, "cardiomyopathy", 0.5, identity)
    assert DISCLAIMER in lines and "P(cardiomyopathy): 0.7300" in lines and "Threshold: 0.5" in lines
    assert any(identity.content_hash in line for line in lines) and any("cccmr 0.1.0" in line for line in lines)
    assert not any(line.startswith("Frames:") for line in lines)
    noted = page_lines({"cardiomyopathy": 0.73}, "cardiomyopathy", 0.5, identity, "standard display; SAX as stored")
    assert "Frames: standard display; SAX as stored" in noted


def test_the_frames_note_says_how_each_series_was_reordered(study) -> None:
    release = load_release(study["release"])
    inputs = Predictor(release).read_subject(study["cine_4ch"], study["cine_sax"])
    turned = replace(inputs, cine_sax=replace(inputs.cine_sax, display_order=DisplayOrder(3, True)))
    assert frames_note(turned, release).endswith(
        f"SAX turned 270 deg, mirrored, 4CH {inputs.cine_4ch.display_order.describe()}"
    )
    assert DisplayOrder().describe() == "as stored" and DisplayOrder(2).describe() == "turned 180 deg"
    assert DisplayOrder(0, True).describe() == "mirrored"
    raw = replace(release, config=replace(release.config, data=replace(release.config.data, display_orientation=False)))
    assert frames_note(inputs, raw) == "in the scanner's stored pixel order"


def test_unwritable_output_folder_is_refused_before_scoring(study, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = ["predict", "--release", str(study["release"]), "--cine-4ch", str(study["cine_4ch"])]
    assert main([*argv, "--cine-sax", str(study["cine_sax"]), "--dicom-out", str(blocker)]) == 2
    assert "--dicom-out" in capsys.readouterr().err
