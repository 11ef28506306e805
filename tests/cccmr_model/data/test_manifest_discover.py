"""The site manifest and `cccmr ingest --discover` on a raw export of mixed series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cccmr_model.cli import main
from cccmr_model.config.schema import DataConfig
from cccmr_model.data import discover_series, ingest_site, read_manifest
from cccmr_model.errors import DataError
from cccmr_model.phantom.dicom_writer import Encoding, Geometry, Sampling, SeriesTags, write_series

CONFIG = DataConfig(image_size=32, field_of_view_mm=64.0, frames=4, min_frames=4)
HEADER = "subject_id,label,subtype,cine_4ch,cine_sax,lge_sax\n"
ROW, COL = np.array([0.6, 0.8, 0.0]), np.array([0.48, -0.36, -0.8])
SAX_NORMAL = np.cross(ROW, COL)


def test_manifest_parses_labels_subtypes_and_paths(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text(
        "# site A\n" + HEADER + "a1,1,hcm,x/4ch,x/sax,x/lge\na2,healthy,,y/4ch,y/sax#1.2.3,\n"
    )
    first, second = read_manifest(tmp_path)
    assert (first.subject_id, first.label, first.subtype) == ("a1", 1, 0)
    assert first.series["cine_sax"].path == tmp_path / "x" / "sax"
    assert (second.label, second.subtype, second.series["lge_sax"]) == (0, -1, None)
    assert second.series["cine_sax"].series_uid == "1.2.3"


def test_manifest_without_subtype_column(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("subject_id,label,cine_4ch,cine_sax,lge_sax\nb1,0,a,b,\n")
    assert read_manifest(tmp_path / "manifest.csv")[0].subtype == -1


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("a1,2,,x,y,\n", r"line 2: label '2' must be 0"),
        ("a1,1,XYZ,x,y,\n", r"line 2: subtype 'XYZ' must be one of HCM"),
        ("a1,0,DCM,x,y,\n", r"line 2: subtype DCM given for a healthy subject"),
        ("Doe Jane,1,,x,y,\n", r"line 2: subject_id must be .* \(a pseudonym\)$"),
        ("a1,1,,x,y,\na1,0,,x,y,\n", r"line 3: duplicate subject_id a1"),
        ("a1,,,x,y,\n", r"line 2: label '' must be 0"),
        ("", r"manifest lists no subjects"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path: Path, rows: str, message: str) -> None:
    (tmp_path / "manifest.csv").write_text(HEADER + rows)
    with pytest.raises(DataError, match=message):
        read_manifest(tmp_path / "manifest.csv")


def test_manifest_rejects_unknown_columns(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("subject_id,label,cine_4ch,cine_sax,lge_sax,patient_name\n")
    with pytest.raises(DataError, match=r"unknown \['patient_name'\]"):
        read_manifest(tmp_path / "manifest.csv")


def _series(
    out: Path,
    slices: int,
    frames: int,
    tags: SeriesTags,
    lax: bool = False,
    per_file_extra: dict[int, dict[str, object]] | None = None,
    **encoding: object,
) -> None:
    row, col = (SAX_NORMAL, COL) if lax else (ROW, COL)
    geometry = Geometry.stack([-30.0, 10.0, 50.0], tuple(row), tuple(col), slices, 8.0)
    array = np.random.default_rng(slices * frames).gamma(2.0, 80.0, (slices, frames, 20, 20)).astype(np.float32)
    trigger = np.tile(np.arange(frames) * 60.0, (slices, 1)) if frames > 1 else None
    sampling = Sampling(geometry, (2.5, 2.5), 8.0, trigger)
    encoded = Encoding(**encoding)  # type: ignore[arg-type]
    write_series(out, array, sampling, tags, encoded, per_file_extra=per_file_extra)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    """Study A: one folder per series, with descriptions; study B: every file in one folder, no descriptions."""
    root = tmp_path / "export"
    a = {"study_uid": "1.2.826.0.1.1", "patient_id": "MRN1"}
    _series(root / "A" / "s1", 5, 6, SeriesTags(**a, series_number=1, series_description=""))
    _series(root / "A" / "s2", 1, 6, SeriesTags(**a, series_number=2, series_description="CINE 4CH"), lax=True)
    _series(root / "A" / "s3", 1, 6, SeriesTags(**a, series_number=3, series_description="cine 2ch"), lax=True)
    lge = SeriesTags(**a, series_number=4, series_description="", inversion_time=300.0)
    _series(root / "A" / "s4", 7, 1, lge, enhanced=True)
    molli = SeriesTags(**a, series_number=5, series_description="MOLLI")
    _series(root / "A" / "s5", 1, 4, molli, per_file_extra={i: {"InversionTime": 100.0 + 80 * i} for i in range(4)})
    localizer = SeriesTags(**a, series_number=6, series_description="survey")
    _series(root / "A" / "s6", 1, 1, localizer)
    b = {"study_uid": "1.2.826.0.1.2", "patient_id": "MRN2", "series_description": ""}
    _series(root / "B", 4, 6, SeriesTags(**b, series_number=1), filename="X{index:05d}.dcm")
    _series(root / "B", 1, 6, SeriesTags(**b, series_number=2), lax=True, filename="Y{index:05d}.dcm")
    (root / "A" / "readme.bin").write_bytes(b"\x00" * 300)
    return root


def test_discover_classifies_series_and_drafts_manifest(export: Path) -> None:
    discovery = discover_series(export, CONFIG)
    by_number = {(s.study_uid[-1], s.series_number): s for s in discovery.series}
    assert by_number[("1", 1)].sequence == "cine_sax"  # a stack, no description
    assert by_number[("1", 2)].sequence == "cine_4ch"  # by description
    assert by_number[("1", 3)].sequence is None and "2CH/3CH/4CH" in by_number[("1", 3)].note
    assert by_number[("1", 4)].sequence == "lge_sax"  # enhanced, InversionTime in the functional groups
    assert by_number[("1", 5)].sequence is None and "inversion times" in by_number[("1", 5)].note
    assert by_number[("1", 6)].sequence is None and "single phase" in by_number[("1", 6)].note
    assert by_number[("2", 2)].sequence == "cine_4ch" and "check the view" in by_number[("2", 2)].note
    assert discovery.unreadable == [("A/readme.bin", "not a DICOM file")]
    rows = {r["subject_id"]: r for r in discovery.rows}
    assert rows["subject-001"]["cine_sax"] == "A/s1" and rows["subject-001"]["lge_sax"] == "A/s4"  # the enhanced file
    assert rows["subject-002"]["cine_sax"] == f"B#{by_number[('2', 1)].series_uid}"
    assert rows["subject-002"]["lge_sax"] == "" and all(r["label"] == "" for r in rows.values())
    assert "MRN" not in discovery.summary()


def test_discover_cli_then_ingest(export: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "-q", "--discover", "--data", str(export)]) == 0
    out = capsys.readouterr().out
    assert "2 studies" in out and "unclassified" in out
    draft = (export / "manifest.draft.csv").read_text()
    assert "MRN" not in draft
    with pytest.raises(DataError, match="label '' must be 0"):
        read_manifest(export / "manifest.draft.csv")
    filled = draft.replace("subject-001,,", "subject-001,1,").replace("subject-002,,", "subject-002,0,")
    (export / "manifest.csv").write_text(filled)
    report = ingest_site(export, export.parent / "cache", CONFIG)
    assert report.usable == ["subject-001", "subject-002"] and not report.rejections
    assert report.cine_only == ["subject-002"]
