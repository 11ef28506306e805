"""The synthetic cohort: manifests, ground truth, DICOM tags, determinism, and that it ingests with no rejection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cccmr_model.cli import main
from cccmr_model.config import load_config
from cccmr_model.data import load_series, preprocess_series
from cccmr_model.data.manifest import COLUMNS
from cccmr_model.data.series import SeriesError
from cccmr_model.phantom.cohort import SIZES, generate_cohort, subject_specs, write_subject
from cccmr_model.phantom.sites import SUBTYPES, site_profile


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(out, ["anzhen", "lanzhou"], 3, seed=5, test_subjects=2, size="tiny", workers=1)
    return out


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_manifest_and_ground_truth(cohort: Path) -> None:
    for group, count in (("anzhen", 3), ("lanzhou", 3), ("test", 2)):
        rows = _rows(cohort / group / "manifest.csv")
        assert len(rows) == count
        assert {r["label"] for r in rows} == {"0", "1"}  # both classes even in a tiny cohort
        for row in rows:
            assert row["subtype"] in ("", *SUBTYPES) and (row["subtype"] != "") == (row["label"] == "1")
            for sequence in ("cine_4ch", "cine_sax", "lge_sax"):
                assert not Path(row[sequence]).is_absolute() and (cohort / group / row[sequence]).exists()
            truth = json.loads((cohort / group / "ground_truth" / f"{row['subject_id']}.json").read_text())
            assert truth["subtype"] == row["subtype"] and truth["label"] == int(row["label"])
            assert 0.1 < truth["ef"] < 0.9 and truth["esv_ml"] < truth["edv_ml"]
            assert truth["max_wall_thickness_mm"] >= truth["mean_wall_thickness_mm"] > 3.0
            if not truth["lge_positive"]:
                assert truth["lge_burden"] == 0.0


def test_dicom_tags_and_geometry(cohort: Path) -> None:
    rows = _rows(cohort / "anzhen" / "manifest.csv") + _rows(cohort / "lanzhou" / "manifest.csv")
    seen_enhanced = seen_classic = False
    for row in rows:
        for sequence in ("cine_sax", "lge_sax"):
            path = cohort / ("anzhen" if row["subject_id"].startswith("anzhen") else "lanzhou") / row[sequence]
            if path.is_file():
                seen_enhanced = True
                ds = pydicom.dcmread(path)
                iop = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
                positions = [
                    f.PlanePositionSequence[0].ImagePositionPatient for f in ds.PerFrameFunctionalGroupsSequence
                ]
                assert ds.pixel_array.shape[0] == int(ds.NumberOfFrames)
                first = ds
            else:
                seen_classic = True
                files = sorted(path.iterdir())
                datasets = [pydicom.dcmread(f) for f in files]
                iop = datasets[0].ImageOrientationPatient
                positions = [d.ImagePositionPatient for d in datasets]
                first = datasets[0]
                assert all(d.ImageOrientationPatient == iop for d in datasets)
                if sequence == "cine_sax":
                    per_slice = len(datasets) // len({tuple(d.ImagePositionPatient) for d in datasets})
                    assert int(first.CardiacNumberOfImages) == per_slice >= 8
                else:
                    assert 250 <= float(first.InversionTime) <= 340
            assert first.PatientName and first.PatientID.startswith("SYN") and first.Manufacturer
            assert first.SeriesDescription and first.ManufacturerModelName
            iop = np.asarray(iop, float)
            normal = np.cross(iop[:3], iop[3:])
            along = np.unique(np.round(np.asarray(positions, float) @ normal, 3))
            steps = np.diff(along)
            assert len(along) >= 5 and np.all(steps > 0) and np.allclose(steps, steps[0], atol=1e-2)
            # every position lies on the stack line: no in-plane drift between slices
            centred = np.asarray(positions, float) - np.asarray(positions, float)[0]
            in_plane = centred - np.outer(centred @ normal, normal)
            assert np.abs(in_plane).max() < 1e-2
    assert seen_enhanced or seen_classic


def test_deterministic_per_seed(tmp_path: Path) -> None:
    site = site_profile("lanzhou")
    spec = subject_specs(site, 2, seed=3, size=SIZES["tiny"])[1]
    other = subject_specs(site, 2, seed=4, size=SIZES["tiny"])[1]
    a = write_subject(spec, tmp_path / "a")
    b = write_subject(spec, tmp_path / "b")
    c = write_subject(other, tmp_path / "c")
    assert a == b and a["truth"] != c["truth"]
    path = a["row"]["cine_sax"]
    files_a = (
        sorted((tmp_path / "a" / path).rglob("*")) if (tmp_path / "a" / path).is_dir() else [tmp_path / "a" / path]
    )
    for file_a in files_a:
        file_b = tmp_path / "b" / file_a.relative_to(tmp_path / "a")
        assert file_a.read_bytes() == file_b.read_bytes()


def test_sites_are_non_iid() -> None:
    a, b = site_profile("anzhen"), site_profile("lanzhou")
    assert a.prevalence != b.prevalence and a.subtype_mix != b.subtype_mix and a.vendor_mix != b.vendor_mix
    assert site_profile("elsewhere") == site_profile("elsewhere")  # unknown names get a stable profile


def test_cohort_ingests_without_rejection(cohort: Path, tmp_path: Path) -> None:
    from cccmr_model.data import ingest_site

    config = load_config("tiny")
    for group in ("anzhen", "lanzhou", "test"):
        report = ingest_site(cohort / group, tmp_path / group, config.data, workers=1)
        assert report.rejections == [] and report.rejected_subjects == []
        assert len(report.usable) == report.subjects == len(_rows(cohort / group / "manifest.csv"))


def test_cli_generate_and_preview(tmp_path: Path) -> None:
    out = tmp_path / "c"
    args = ["phantom", "--out", str(out), "--sites", "x", "--subjects", "2", "--size", "tiny", "--workers", "1"]
    assert main([*args, "--quiet"]) == 0
    assert (out / "x" / "manifest.csv").is_file() and (out / "cohort.json").is_file()
    assert main(["phantom", "--preview", str(out), "--quiet"]) == 0
    assert (out / "preview.png").stat().st_size > 10_000
    assert main(["phantom", "--quiet"]) == 2  # neither --out nor --preview


def test_phantom_4ch_is_one_plane_and_its_sax_stack_is_no_4ch(cohort: Path) -> None:
    config = load_config("tiny").data
    for group in ("anzhen", "lanzhou", "test"):
        row = _rows(cohort / group / "manifest.csv")[0]
        four = load_series(cohort / group / row["cine_4ch"])
        assert four.num_slices == 1 and preprocess_series(four, "cine_4ch", config).array.shape[0] == 1
        sax = load_series(cohort / group / row["cine_sax"])
        with pytest.raises(SeriesError, match=rf"cine_4ch: {sax.num_slices} slice positions .* a stack"):
            preprocess_series(sax, "cine_4ch", config)
