"""The site manifest, `manifest.csv` at the data root: which series of which subject, and the hospital's labels.

Columns: `subject_id,label[,subtype],cine_4ch,cine_sax,lge_sax`. `label` is 0 / healthy or 1 / cardiomyopathy;
`subtype` one of the five ESC 2023 subtypes (`SUBTYPES`) or empty (`healthy`, `normal` or `none` on a label-0 row
also mean no subtype); each sequence column a path relative to the root to a series folder or a multi-frame file,
optionally `PATH#SeriesInstanceUID` to pick one series out of a folder that holds several. A path must stay inside
the data root (no absolute path, no `..` that leaves it) unless `allow_outside_paths`. `lge_sax` may be empty.
Lines starting with `#` are comments. `subject_id` is the only name a subject has downstream, so it must be a
pseudonym, never a patient name or ID.

A bad row (wrong label, unknown subtype, a path outside the root, more fields than the header, a repeated
subject_id) rejects only its subject, with a one-line reason naming the file and the line (`load_manifest`);
read strictly (`strict=True`, `cccmr ingest --strict`), the first bad row refuses the whole manifest.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cccmr_model.errors import DataError, not_utf8
from cccmr_model.metrics import SUBTYPE_NAMES as SUBTYPES
from cccmr_model.sequences import CINE_SEQUENCES, SEQUENCES

MANIFEST_NAME = "manifest.csv"
NO_SUBTYPE = frozenset({"HEALTHY", "NORMAL", "NONE"})  # read as an empty subtype on a label-0 row
LABELS = {"0": 0, "healthy": 0, "control": 0, "1": 1, "cardiomyopathy": 1, "patient": 1}
REQUIRED_COLUMNS = ("subject_id", "label", *SEQUENCES)
COLUMNS = ("subject_id", "label", "subtype", *SEQUENCES)
SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
OUTSIDE_OPTION = "--allow-outside-paths"


@dataclass(frozen=True)
class SeriesRef:
    """Where one sequence of a subject lives: a path (absolute) and, optionally, one SeriesInstanceUID in it."""

    path: Path
    series_uid: str | None = None
    text: str = ""  # as written in the manifest (relative), used in messages


@dataclass(frozen=True)
class ManifestEntry:
    subject_id: str
    label: int  # 0 healthy, 1 cardiomyopathy
    subtype: int  # index into SUBTYPES, -1 when none
    series: dict[str, SeriesRef | None]  # sequence -> reference; None when the column is empty


@dataclass(frozen=True)
class RowProblem:
    """A manifest row that was not read: its line, its subject (None when the id itself is bad) and why."""

    line: int
    subject_id: str | None
    reason: str  # one line: "MANIFEST line N: what is wrong"


@dataclass(frozen=True)
class Manifest:
    """The good rows of a manifest, and the rows rejected with their reasons."""

    path: Path
    entries: list[ManifestEntry]
    problems: list[RowProblem]


class _RowError(DataError):
    def __init__(self, where: str, problem: str, subject_id: str | None) -> None:
        super().__init__(f"{where}: {problem}")
        self.subject_id = subject_id


def _outside(text: str) -> bool:
    """Whether a manifest path leaves the data root: absolute, or more `..` than folders before them."""
    normal = os.path.normpath(text)
    return os.path.isabs(normal) or normal == ".." or normal.startswith(f"..{os.sep}")


def _parse_ref(root: Path, sequence: str, text: str, allow_outside: bool) -> SeriesRef | None:
    """One sequence cell as a SeriesRef; ValueError when its path leaves the root and that is not allowed."""
    text = text.strip()
    if not text:
        return None
    path_text, _, uid = text.partition("#")
    path_text = path_text.strip()
    if not allow_outside and _outside(path_text):
        raise ValueError(
            f"{sequence} path {path_text!r} is outside the data root (the manifest's folder); give it relative to "
            f"the root (or allow it with {OUTSIDE_OPTION})"
        )
    path = Path(path_text)
    return SeriesRef(path=path if path.is_absolute() else root / path, series_uid=uid.strip() or None, text=text)


def _label(row: dict[str, str]) -> int:
    text = (row.get("label") or "").strip().lower()
    if text not in LABELS:
        raise ValueError(f"label {text!r} must be 0 (healthy) or 1 (cardiomyopathy)")
    return LABELS[text]


def _subtype(row: dict[str, str], label: int) -> int:
    text = (row.get("subtype") or "").strip().upper()
    if text in NO_SUBTYPE and label == 0:
        return -1
    if text in NO_SUBTYPE:
        raise ValueError(f"subtype {text} contradicts label {label} (cardiomyopathy); give a subtype or leave it empty")
    if text and text not in SUBTYPES:
        raise ValueError(f"subtype {text!r} must be one of {', '.join(SUBTYPES)} or empty")
    if text and label == 0:
        raise ValueError(f"subtype {text} given for a healthy subject (label 0)")
    return SUBTYPES.index(text) if text else -1


def _parse_row(row: dict[str, str], where: str, root: Path, allow_outside: bool) -> ManifestEntry:
    """One row as an entry; a _RowError names the row (and its subject when the id is valid)."""
    subject = (row.get("subject_id") or "").strip()
    if not SUBJECT_ID.match(subject):  # the value is not repeated: it may be a patient name
        raise _RowError(where, "subject_id must be 1-64 letters, digits, '.', '_' or '-' (a pseudonym)", None)
    try:
        label = _label(row)
        subtype = _subtype(row, label)
        series = {seq: _parse_ref(root, seq, row.get(seq) or "", allow_outside) for seq in SEQUENCES}
    except ValueError as exc:
        raise _RowError(where, str(exc), subject) from None
    return ManifestEntry(subject, label, subtype, series)


def _read_lines(path: Path) -> list[str]:
    """The manifest's lines, comments and blank lines kept as empty lines so that line numbers stay true."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = list(handle)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: manifest is not {not_utf8(exc)}; save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read manifest ({exc.strerror})") from None
    return ["\n" if not line.strip() or line.lstrip().startswith("#") else line for line in lines]


def _check_columns(path: Path, fieldnames: Sequence[str] | None) -> list[str]:
    columns = [c.strip() for c in fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in COLUMNS]
    if missing or unknown:
        raise DataError(
            f"{path}: columns must be {','.join(COLUMNS)} (subtype optional); missing {missing}, unknown {unknown}"
        )
    return columns


def _rows(path: Path, root: Path, allow_outside: bool) -> Iterator[tuple[int, ManifestEntry | _RowError]]:
    """(line, entry or the reason it was refused) for every data row."""
    lines = _read_lines(path)
    skipped = next((i for i, line in enumerate(lines) if line != "\n"), len(lines))  # before the header
    reader = csv.DictReader(lines[skipped:])
    columns = _check_columns(path, reader.fieldnames)
    for row in reader:
        line = skipped + reader.line_num
        where = f"{path} line {line}"
        clean = {k.strip(): v for k, v in row.items() if k is not None}
        if None in row:  # csv.DictReader puts the fields beyond the header under the key None
            count = len(columns) + len(row[None])  # type: ignore[index, arg-type]
            problem = f"{count} fields, the header has {len(columns)} (quote a value that holds a comma)"
            subject = (clean.get("subject_id") or "").strip()
            yield line, _RowError(where, problem, subject if SUBJECT_ID.match(subject) else None)
            continue
        try:
            yield line, _parse_row(clean, where, root, allow_outside)
        except _RowError as exc:
            yield line, exc


def _problems_and_entries(
    path: Path, rows: list[tuple[int, ManifestEntry | _RowError]]
) -> tuple[list[ManifestEntry], list[RowProblem]]:
    """Split rows into good entries and problems; every row of a repeated or refused subject_id is rejected."""
    problems: list[RowProblem] = []
    first: dict[str, int] = {}
    for line, item in rows:
        subject = item.subject_id
        if isinstance(item, _RowError):
            problems.append(RowProblem(line, subject, str(item)))
        elif subject in first:
            also = f"also on line {first[subject]}"
            reason = f"{path} line {line}: duplicate subject_id {subject} ({also}); every row of {subject} rejected"
            problems.append(RowProblem(line, subject, reason))
        if subject is not None:
            first.setdefault(subject, line)
    refused = {p.subject_id for p in problems}
    entries = [item for _, item in rows if isinstance(item, ManifestEntry) and item.subject_id not in refused]
    return entries, problems


def load_manifest(path: str | Path, *, strict: bool = False, allow_outside_paths: bool = False) -> Manifest:
    """Parse and check a manifest: its good rows and its refused rows, each refusal naming the file and line.

    A DataError for a manifest that cannot be used at all (missing, not UTF-8, wrong columns, no rows) and, when
    `strict`, for the first bad row.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (write one, or draft it with `cccmr ingest --discover`)")
    rows = list(_rows(path, path.parent, allow_outside_paths))
    if not rows:
        raise DataError(f"{path}: manifest lists no subjects")
    entries, problems = _problems_and_entries(path, rows)
    if strict and problems:
        more = len(problems) - 1
        raise DataError(problems[0].reason + (f" (and {more} more bad row{'s' * (more > 1)})" if more else ""))
    return Manifest(path, entries, problems)


def read_manifest(path: str | Path, *, allow_outside_paths: bool = False) -> list[ManifestEntry]:
    """The entries of a manifest read strictly: a DataError names the file, the line and the problem."""
    return load_manifest(path, strict=True, allow_outside_paths=allow_outside_paths).entries


def write_manifest(path: Path, rows: Sequence[dict[str, str]], comments: Sequence[str] = ()) -> None:
    """Write manifest rows (dicts over COLUMNS), with leading `#` comment lines."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        for comment in comments:
            handle.write(f"# {comment}\n")
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COLUMNS})


REQUIRED_SEQUENCES: tuple[str, ...] = CINE_SEQUENCES  # a subject without both cines cannot train
