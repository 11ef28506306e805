"""Site ingestion end to end: synthetic site with planted faults, cache reuse, CLI exit codes, dataset, Sunnybrook."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from cccmr_model.cli import main
from cccmr_model.config import load_config
from cccmr_model.config.schema import DataConfig
from cccmr_model.data import CachedDataset, ingest_site
from cccmr_model.errors import DataError
from cccmr_model.phantom.dicom_writer import Geometry, Sampling, SeriesTags, write_series

CONFIG = DataConfig(image_size=32, field_of_view_mm=64.0, frames=4, min_frames=4)
PATIENT = {"patient_name": "Doe^Jane", "patient_id": "MRN7654321"}
HEADER = "subject_id,label,subtype,cine_4ch,cine_sax,lge_sax\n"


def _write(folder: Path, slices: int, frames: int, seed: int, **tags: object) -> list[Path]:
    rng = np.random.default_rng(seed)
    array = rng.gamma(2.0, 80.0, (slices, frames, 20, 20)).astype(np.float32)  # S, F, R, C
    normal_offset = Geometry.stack([-30.0, 10.0, 50.0], (0.6, 0.8, 0.0), (0.48, -0.36, -0.8), slices, 8.0)
    trigger = np.tile(np.arange(frames) * 60.0, (slices, 1)) if frames > 1 else None
    series_tags = SeriesTags(**{**PATIENT, **tags})  # type: ignore[arg-type]
    return write_series(folder, array, Sampling(normal_offset, (2.5, 2.5), 8.0, trigger), tags=series_tags)


def _subject(root: Path, name: str, seed: int, lge_slices: int | None = 7) -> None:
    _write(root / name / "cine4ch", 1, 6, seed, series_description="cine 4ch")
    _write(root / name / "cinesax", 5, 6, seed + 1, series_description="cine sax")
    if lge_slices:
        _write(root / name / "lge", lge_slices, 1, seed + 2, series_description="LGE", inversion_time=280.0)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """s1 complete; s2 without LGE; s3 with a non-DICOM file in its SAX cine; s4 with a 5-slice LGE."""
    root = tmp_path / "site"
    for index, name in enumerate(("s1", "s2", "s3", "s4")):
        _subject(root, name, 10 * index, lge_slices={"s2": None, "s4": 5}.get(name, 7))
    (root / "s3" / "cinesax" / "report.pdf").write_bytes(b"%PDF-1.4 not an image")
    rows = [
        "s1,1,HCM,s1/cine4ch,s1/cinesax,s1/lge",
        "s2,0,,s2/cine4ch,s2/cinesax,",
        "s3,1,,s3/cine4ch,s3/cinesax,s3/lge",
        "s4,1,DCM,s4/cine4ch,s4/cinesax,s4/lge",
    ]
    (root / "manifest.csv").write_text(HEADER + "\n".join(rows) + "\n")
    return root


def test_site_ingest_reports_and_caches(site: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    report = ingest_site(site, cache_dir, CONFIG)
    assert report.usable == ["s1", "s2", "s4"] and report.cine_only == ["s2", "s4"]
    assert report.rejected_subjects == ["s3"]
    reasons = {(r.subject_id, r.sequence): r for r in report.rejections}
    assert set(reasons) == {("s3", "cine_sax"), ("s4", "lge_sax")}
    assert reasons[("s3", "cine_sax")].reason == "s3/cinesax/report.pdf: not a DICOM file"
    assert reasons[("s3", "cine_sax")].file == "s3/cinesax/report.pdf"
    assert reasons[("s4", "lge_sax")].reason == "s4/lge: too few slices for lge_sax: 5 < 6"
    saved = json.loads((cache_dir / "ingest-report.json").read_text())
    assert saved["usable"] == ["s1", "s2", "s4"] and len(saved["rejections"]) == 2
    assert "s3 cine_sax: s3/cinesax/report.pdf: not a DICOM file" in (cache_dir / "ingest-summary.txt").read_text()

    array = np.load(cache_dir / "subjects" / "s1" / "cine_sax.npy")
    assert array.dtype == np.float16 and array.shape == (3, 4, 32, 32)
    sidecar = json.loads((cache_dir / "subjects" / "s1" / "cine_sax.json").read_text())
    assert sidecar["slice_positions_mm"][1] - sidecar["slice_positions_mm"][0] == pytest.approx(8.0)
    assert sidecar["original_pixel_spacing_mm"] == [2.5, 2.5] and len(sidecar["frame_times_ms"]) == 3
    assert sidecar["series_uid"] == pydicom.dcmread(next((site / "s1" / "cinesax").iterdir())).SeriesInstanceUID
    for file in cache_dir.rglob("*"):  # no patient identity anywhere in the cache
        if file.is_file():
            data = file.read_bytes()
            assert b"Doe" not in data and b"MRN7654321" not in data, file


def test_warm_rerun_skips_unchanged_work(site: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cold = ingest_site(site, cache_dir, CONFIG)
    assert cold.computed == 11 and cold.reused == 0  # 4 subjects x 3 series, minus s2's absent LGE
    before = (cache_dir / "subjects" / "s1" / "cine_4ch.npy").stat().st_mtime_ns
    warm = ingest_site(site, cache_dir, CONFIG)
    assert warm.computed == 0 and warm.reused == 11  # rejections are remembered too
    assert [r.line() for r in warm.rejections] == [r.line() for r in cold.rejections]
    assert (cache_dir / "subjects" / "s1" / "cine_4ch.npy").stat().st_mtime_ns == before
    touched = next((site / "s2" / "cinesax").iterdir())
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    assert ingest_site(site, cache_dir, CONFIG).computed == 1
    resized = DataConfig(image_size=36, field_of_view_mm=64.0, frames=4, min_frames=4)
    assert ingest_site(site, cache_dir, resized).computed == 11


def test_two_workers_give_the_same_cache(site: Path, tmp_path: Path) -> None:
    one = ingest_site(site, tmp_path / "one", CONFIG, workers=1)
    two = ingest_site(site, tmp_path / "two", CONFIG, workers=2)
    assert one.usable == two.usable and [r.line() for r in one.rejections] == [r.line() for r in two.rejections]
    for file in (tmp_path / "one" / "subjects").rglob("*.npy"):
        assert np.array_equal(np.load(file), np.load(tmp_path / "two" / file.relative_to(tmp_path / "one")))


def test_cached_dataset_items(site: Path, tmp_path: Path) -> None:
    ingest_site(site, tmp_path / "cache", CONFIG)
    dataset = CachedDataset(tmp_path / "cache")
    assert dataset.subject_ids == ["s1", "s2", "s4"] and len(dataset) == 3
    assert dataset.labels.tolist() == [1, 0, 1] and dataset.subtypes.tolist() == [0, -1, 1]
    item = dataset[0]
    assert item["cine_4ch"].shape == (1, 4, 32, 32) and item["cine_4ch"].dtype == torch.float32
    assert item["cine_sax"].shape == (3, 4, 32, 32) and item["lge_sax"].shape == (6, 32, 32)
    assert bool(item["has_lge"]) and item["label"].dtype == torch.int64 and int(item["subtype"]) == 0
    no_lge = dataset[1]
    assert not bool(no_lge["has_lge"]) and torch.count_nonzero(no_lge["lge_sax"]) == 0
    only = CachedDataset(tmp_path / "cache", subjects=["s4"], transform=lambda x: {**x, "seen": torch.tensor(1)})
    assert len(only) == 1 and int(only[0]["seen"]) == 1
    with pytest.raises(DataError, match="s3"):
        CachedDataset(tmp_path / "cache", subjects=["s3"])
    with pytest.raises(DataError, match=r"image_size=32.*re-run"):
        CachedDataset(tmp_path / "cache", data_config=DataConfig())


def test_cli_exit_codes(site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["ingest", "-q", "--data", str(site), "--cache", str(tmp_path / "c"), "--config", "tiny"]
    sets = ["--set", "data.image_size=32", "--set", "data.frames=4", "--set", "data.min_frames=4"]
    assert main([*args, *sets]) == 0
    assert "3 usable" in capsys.readouterr().out
    assert main([*args, *sets, "--strict"]) == 1
    (site / "manifest.csv").write_text(HEADER + "s3,1,,s3/cine4ch,s3/cinesax,\n")
    assert main([*args, *sets]) == 1  # no usable subject left
    (site / "manifest.csv").write_text("subject_id,label,cine_4ch\n")
    assert main([*args, *sets]) == 2  # a malformed manifest is a user error
    assert "manifest.csv: columns must be" in capsys.readouterr().err


def test_missing_required_sequence_rejects_subject(site: Path, tmp_path: Path) -> None:
    (site / "manifest.csv").write_text(HEADER + "s1,1,,,s1/cinesax,s1/lge\ns2,0,,s2/cine4ch,s2/cinesax,\n")
    report = ingest_site(site, tmp_path / "cache", CONFIG)
    assert report.usable == ["s2"]
    assert [r.line() for r in report.rejections] == ["s1 cine_4ch: manifest.csv: no cine_4ch series given for s1"]


def _one_slice(study: Path, slice_index: int, out: Path) -> Path:
    """A folder of links to the 20 phase files of one Sunnybrook slice (`N.dcm`: slice (N-1)//20)."""
    out.mkdir(parents=True)
    for number in range(slice_index * 20 + 1, slice_index * 20 + 21):
        (out / f"{number}.dcm").symlink_to(study / f"{number}.dcm")
    return out


def test_sunnybrook_ingests_at_paper_settings(sunnybrook_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "site"
    a, b = sunnybrook_dir / "SCD0000101", sunnybrook_dir / "SCD0000301"
    # The studies hold short-axis cine only: one slice of the SAX stack stands in for the 4CH (the whole stack is
    # refused as a 4CH), the stack for the LGE. The studies lie outside the data root: allowed explicitly.
    _one_slice(a, 5, root / "sb1-4ch")
    _one_slice(b, 4, root / "sb3-4ch")
    (root / "manifest.csv").write_text(HEADER + f"sb1,1,,sb1-4ch,{a},{a}\nsb3,1,,sb3-4ch,{b},{b}\n")
    config = load_config("default").data
    report = ingest_site(root, tmp_path / "cache", config, allow_outside_paths=True)
    assert report.usable == ["sb1", "sb3"] and not report.rejections
    dataset = CachedDataset(tmp_path / "cache", data_config=config)
    for item in (dataset[0], dataset[1]):
        assert item["cine_4ch"].shape == (1, 16, 224, 224)
        assert item["cine_sax"].shape == (3, 16, 224, 224)
        assert item["lge_sax"].shape == (6, 224, 224)
        for sequence in ("cine_4ch", "cine_sax", "lge_sax"):
            assert abs(float(item[sequence].mean())) < 0.01
            assert float(item[sequence].std()) == pytest.approx(1.0, abs=0.01)
    sidecar = json.loads((tmp_path / "cache" / "subjects" / "sb1" / "cine_sax.json").read_text())
    assert sidecar["slice_spacing_mm"] == pytest.approx(10.0, abs=0.01)
    assert sidecar["original_shape"] == [12, 20, 256, 256]
    # the feet-first study is stored a quarter turn from the standard display, the head-first one in it
    assert sidecar["display_order"] == {"turns": 3, "mirrored": False}
    other = json.loads((tmp_path / "cache" / "subjects" / "sb3" / "cine_sax.json").read_text())
    assert other["display_order"] == {"turns": 0, "mirrored": False}
    assert report.reordered >= 2  # sb1's SAX cine and the same stack as its LGE
    assert (
        f"{report.reordered} series stored in another pixel order"
        in (tmp_path / "cache" / "ingest-summary.txt").read_text()
    )


def _mixed_manifest(site: Path) -> None:
    """s1 good; s2 healthy with subtype `healthy`; s3 a bad label; s4 an absolute path (outside the root)."""
    rows = [
        "s1,1,HCM,s1/cine4ch,s1/cinesax,s1/lge",
        "s2,0,healthy,s2/cine4ch,s2/cinesax,",
        "s3,2,,s3/cine4ch,s3/cinesax,",
        f"s4,1,DCM,{site / 's4' / 'cine4ch'},s4/cinesax,",
    ]
    (site / "manifest.csv").write_text(HEADER + "\n".join(rows) + "\n")


def test_a_bad_manifest_row_rejects_only_its_subject(site: Path, tmp_path: Path) -> None:
    _mixed_manifest(site)
    report = ingest_site(site, tmp_path / "cache", CONFIG)
    assert report.usable == ["s1", "s2"] and report.rejected_subjects == ["s3", "s4"] and report.subjects == 4
    lines = [r.line() for r in report.rejections]
    assert lines[0] == "s3 manifest: manifest.csv line 4: label '2' must be 0 (healthy) or 1 (cardiomyopathy)"
    assert lines[1].startswith("s4 manifest: manifest.csv line 5: cine_4ch path ")
    assert "outside the data root" in lines[1]
    assert {r.file for r in report.rejections} == {"manifest.csv"}
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert sorted(index["subjects"]) == ["s1", "s2"]
    assert "s3 manifest: manifest.csv line 4" in (tmp_path / "cache" / "ingest-summary.txt").read_text()


def test_outside_paths_are_ingested_when_allowed(site: Path, tmp_path: Path) -> None:
    _mixed_manifest(site)
    report = ingest_site(site, tmp_path / "cache", CONFIG, allow_outside_paths=True)
    assert report.usable == ["s1", "s2", "s4"] and report.rejected_subjects == ["s3"]


def test_cli_strict_refuses_a_manifest_with_a_bad_row(
    site: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _mixed_manifest(site)
    args = ["ingest", "-q", "--data", str(site), "--cache", str(tmp_path / "c"), "--config", "tiny"]
    sets = ["--set", "data.image_size=32", "--set", "data.frames=4", "--set", "data.min_frames=4"]
    assert main([*args, *sets, "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{site / 'manifest.csv'} line 4: label '2' must be 0" in err
    assert "(and 1 more bad row)" in err and not (tmp_path / "c" / "index.json").exists()
    assert main([*args, *sets]) == 0
    assert "2 usable" in capsys.readouterr().out
    assert main([*args, *sets, "--allow-outside-paths"]) == 0
    assert "3 usable" in capsys.readouterr().out


def test_sunnybrook_sax_stack_given_as_the_4ch_is_rejected(sunnybrook_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "sb1").symlink_to(sunnybrook_dir / "SCD0000101")
    (root / "manifest.csv").write_text(HEADER + "sb1,1,,sb1,sb1,\n")
    report = ingest_site(root, tmp_path / "cache", CONFIG)
    assert report.rejected_subjects == ["sb1"]
    (rejection,) = report.rejections
    assert rejection.sequence == "cine_4ch"
    assert rejection.reason == (
        "sb1: cine_4ch: 12 slice positions 10 mm apart along the slice normal, a stack such as a SAX cine; "
        "a 4CH cine is one long-axis plane"
    )


def test_a_sax_stack_given_as_the_4ch_is_rejected(site: Path, tmp_path: Path) -> None:
    (site / "manifest.csv").write_text(HEADER + "s1,1,,s1/cinesax,s1/cinesax,\ns2,0,,s2/cine4ch,s2/cinesax,\n")
    report = ingest_site(site, tmp_path / "cache", CONFIG)
    assert report.usable == ["s2"] and report.rejected_subjects == ["s1"]
    assert [r.line() for r in report.rejections] == [
        "s1 cine_4ch: s1/cinesax: cine_4ch: 5 slice positions 8 mm apart along the slice normal, a stack such as "
        "a SAX cine; a 4CH cine is one long-axis plane"
    ]
