"""Manifest rows (issue 16, point 11): paths stay in the data root, extra fields are refused, and one bad row
rejects only its subject, naming its line, unless the whole manifest is read strictly."""

from __future__ import annotations

from pathlib import Path

import pytest

from cccmr_model.data.manifest import load_manifest, read_manifest
from cccmr_model.errors import DataError

HEADER = "subject_id,label,subtype,cine_4ch,cine_sax,lge_sax\n"


def _write(root: Path, rows: str, header: str = HEADER) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text(header + rows)
    return root / "manifest.csv"


@pytest.mark.parametrize("path", ["../other/sax", "x/../../other/sax", "/srv/elsewhere/sax", "../other/sax#1.2.3"])
def test_paths_outside_the_data_root_are_refused(tmp_path: Path, path: str) -> None:
    manifest = _write(tmp_path / "site", f"a1,1,,a1/4ch,{path},\na2,0,,a2/4ch,a2/sax,\n")
    loaded = load_manifest(manifest)
    assert [e.subject_id for e in loaded.entries] == ["a2"]
    (problem,) = loaded.problems
    assert (problem.line, problem.subject_id) == (2, "a1")
    assert problem.reason.startswith(f"{manifest} line 2: cine_sax path ")
    assert "outside the data root" in problem.reason and "--allow-outside-paths" in problem.reason
    with pytest.raises(DataError, match=r"manifest\.csv line 2: cine_sax path .* outside the data root"):
        read_manifest(manifest)


def test_outside_paths_are_read_when_allowed(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "site", "a1,1,,../other/4ch,/srv/elsewhere/sax,\n")
    (entry,) = read_manifest(manifest, allow_outside_paths=True)
    assert entry.series["cine_4ch"].path == tmp_path / "site" / ".." / "other" / "4ch"
    assert entry.series["cine_sax"].path == Path("/srv/elsewhere/sax")


def test_a_path_that_only_passes_through_a_parent_stays_inside(tmp_path: Path) -> None:
    (entry,) = read_manifest(_write(tmp_path, "a1,1,,x/../y/4ch,y/sax,\n"))
    assert entry.series["cine_4ch"].text == "x/../y/4ch"


def test_a_row_with_more_fields_than_the_header_is_refused(tmp_path: Path) -> None:
    manifest = _write(tmp_path, "a1,1,,a1/4ch,a1/sax,a1/lge,a1/extra\na2,0,,a2/4ch,a2/sax,\n")
    loaded = load_manifest(manifest)
    assert [e.subject_id for e in loaded.entries] == ["a2"]
    assert [p.reason for p in loaded.problems] == [
        f"{manifest} line 2: 7 fields, the header has 6 (quote a value that holds a comma)"
    ]
    with pytest.raises(DataError, match=r"line 2: 7 fields, the header has 6"):
        read_manifest(manifest)


@pytest.mark.parametrize("word", ["healthy", "Normal", "NONE", " none "])
def test_no_subtype_words_on_a_healthy_row(tmp_path: Path, word: str) -> None:
    (entry,) = read_manifest(_write(tmp_path, f"a1,0,{word},a1/4ch,a1/sax,\n"))
    assert (entry.label, entry.subtype) == (0, -1)


def test_healthy_subtype_on_a_cardiomyopathy_row_is_refused(tmp_path: Path) -> None:
    loaded = load_manifest(_write(tmp_path, "a1,1,healthy,a1/4ch,a1/sax,\n"))
    assert not loaded.entries
    assert "line 2: subtype HEALTHY contradicts label 1" in loaded.problems[0].reason


def test_one_bad_row_rejects_only_its_subject(tmp_path: Path) -> None:
    rows = "a1,1,HCM,a1/4ch,a1/sax,\na2,2,,a2/4ch,a2/sax,\na3,0,DCM,a3/4ch,a3/sax,\na4,0,,a4/4ch,a4/sax,\n"
    manifest = _write(tmp_path, rows)
    loaded = load_manifest(manifest)
    assert [e.subject_id for e in loaded.entries] == ["a1", "a4"]
    assert [(p.line, p.subject_id) for p in loaded.problems] == [(3, "a2"), (4, "a3")]
    assert "line 3: label '2' must be 0" in loaded.problems[0].reason
    assert "line 4: subtype DCM given for a healthy subject" in loaded.problems[1].reason
    with pytest.raises(DataError, match=r"line 3: label '2' must be 0 .*\(and 1 more bad row\)"):
        load_manifest(manifest, strict=True)


def test_line_numbers_count_comments_and_blank_lines(tmp_path: Path) -> None:
    manifest = _write(tmp_path, "a1,1,,a1/4ch,a1/sax,\n\n# a comment\na2,7,,a2/4ch,a2/sax,\n", "# site A\n" + HEADER)
    (problem,) = load_manifest(manifest).problems
    assert problem.line == 6 and problem.reason.startswith(f"{manifest} line 6: label '7'")


def test_a_duplicate_subject_rejects_every_row_of_it(tmp_path: Path) -> None:
    manifest = _write(tmp_path, "a1,1,,x/4ch,x/sax,\na2,0,,y/4ch,y/sax,\na1,0,,z/4ch,z/sax,\n")
    loaded = load_manifest(manifest)
    assert [e.subject_id for e in loaded.entries] == ["a2"]
    (problem,) = loaded.problems
    assert (problem.line, problem.subject_id) == (4, "a1")
    assert problem.reason == f"{manifest} line 4: duplicate subject_id a1 (also on line 2); every row of a1 rejected"


def test_a_bad_subject_id_is_not_repeated(tmp_path: Path) -> None:
    loaded = load_manifest(_write(tmp_path, "Doe Jane,1,,x/4ch,x/sax,\na2,0,,y/4ch,y/sax,\n"))
    (problem,) = loaded.problems
    assert problem.subject_id is None and problem.line == 2
    assert "line 2: subject_id must be" in problem.reason and "Doe" not in problem.reason


def test_every_row_bad_is_not_a_manifest_error(tmp_path: Path) -> None:
    loaded = load_manifest(_write(tmp_path, "a1,9,,x/4ch,x/sax,\n"))
    assert not loaded.entries and len(loaded.problems) == 1
