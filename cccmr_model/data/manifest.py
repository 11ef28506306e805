"""The site manifest, `manifest.csv` at the data root: which series of which subject, and the hospital's labels.

Columns: `subject_id,label[,subtype],cine_4ch,cine_sax,lge_sax`. `label` is 0 / healthy or 1 / cardiomyopathy;
`subtype` one of HCM, DCM, NDLVC, RCM, ARVC (ESC 2023) or empty; each sequence column a path relative to the root
to a series folder or a multi-frame file, optionally `PATH#SeriesInstanceUID` to pick one series out of a folder
that holds several. `lge_sax` may be empty. Lines starting with `#` are comments. `subject_id` is the only name a
subject has downstream, so it must be a pseudonym, never a patient name or ID.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cccmr_model.errors import DataError, not_utf8
from cccmr_model.sequences import CINE_SEQUENCES, SEQUENCES

MANIFEST_NAME = "manifest.csv"
SUBTYPES: tuple[str, ...] = ("HCM", "DCM", "NDLVC", "RCM", "ARVC")
LABELS = {"0": 0, "healthy": 0, "control": 0, "1": 1, "cardiomyopathy": 1, "patient": 1}
REQUIRED_COLUMNS = ("subject_id", "label", *SEQUENCES)
COLUMNS = ("subject_id", "label", "subtype", *SEQUENCES)
SUBJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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


def _parse_ref(root: Path, text: str) -> SeriesRef | None:
    text = text.strip()
    if not text:
        return None
    path_text, _, uid = text.partition("#")
    path = Path(path_text)
    return SeriesRef(path=path if path.is_absolute() else root / path, series_uid=uid.strip() or None, text=text)


def _parse_row(row: dict[str, str], where: str, root: Path) -> ManifestEntry:
    subject = (row.get("subject_id") or "").strip()
    if not SUBJECT_ID.match(subject):
        raise DataError(f"{where}: subject_id {subject!r} must be 1-64 letters, digits, '.', '_' or '-'")
    label_text = (row.get("label") or "").strip().lower()
    if label_text not in LABELS:
        raise DataError(f"{where}: label {label_text!r} must be 0 (healthy) or 1 (cardiomyopathy)")
    subtype_text = (row.get("subtype") or "").strip().upper()
    if subtype_text and subtype_text not in SUBTYPES:
        raise DataError(f"{where}: subtype {subtype_text!r} must be one of {', '.join(SUBTYPES)} or empty")
    label = LABELS[label_text]
    if subtype_text and label == 0:
        raise DataError(f"{where}: subtype {subtype_text} given for a healthy subject (label 0)")
    series = {seq: _parse_ref(root, row.get(seq) or "") for seq in SEQUENCES}
    return ManifestEntry(subject, label, SUBTYPES.index(subtype_text) if subtype_text else -1, series)


def read_manifest(path: str | Path) -> list[ManifestEntry]:
    """Parse and check a manifest; a DataError names the file, the line and the problem."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (write one, or draft it with `cccmr ingest --discover`)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            lines = [line for line in handle if line.strip() and not line.lstrip().startswith("#")]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: manifest is not {not_utf8(exc)}; save it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read manifest ({exc.strerror})") from None
    reader = csv.DictReader(lines)
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in COLUMNS]
    if missing or unknown:
        raise DataError(
            f"{path}: columns must be {','.join(COLUMNS)} (subtype optional); missing {missing}, unknown {unknown}"
        )
    entries, seen = [], set()
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip(): v for k, v in row.items()}
        entry = _parse_row(row, f"{path} line {number}", path.parent)
        if entry.subject_id in seen:
            raise DataError(f"{path} line {number}: duplicate subject_id {entry.subject_id}")
        seen.add(entry.subject_id)
        entries.append(entry)
    if not entries:
        raise DataError(f"{path}: manifest lists no subjects")
    return entries


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
