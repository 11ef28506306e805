"""Draft a site manifest from a raw PACS export: group files into series, classify each series, list the rest.

Files are grouped by SeriesInstanceUID (headers only, no pixels). Each series is classified:
- cine vs LGE from timing: a cine has several frames per slice position spread over the cycle (TriggerTime
  spread, CardiacNumberOfImages); an LGE has one phase and an InversionTime (or an LGE-like description).
  Several inversion times per position (T1 mapping) or neither pattern leaves a series unclassified.
- short axis vs 4-chamber from geometry and `DataConfig.*_description_patterns`: a description pattern decides
  when one matches; otherwise a stack of 3 or more positions is short axis and 1-2 positions is long axis.
  A long-axis cine is taken as the 4CH only when it is the study's single long-axis cine and its plane contains
  the short-axis normal; 2CH/3CH views cannot be told apart from geometry alone, so such picks are flagged.
Series are grouped into subjects by StudyInstanceUID; subject ids are pseudonyms (`subject-001`, ...), and labels
are left empty: labels always come from the hospital.
"""

from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from cccmr_model.config.schema import DataConfig
from cccmr_model.data.dicom_reader import (
    DicomReadError,
    frames_from_dataset,
    list_series_files,
    quiet_pydicom,
    read_dataset,
)
from cccmr_model.data.manifest import MANIFEST_NAME, SUBTYPES, write_manifest
from cccmr_model.data.series import POSITION_TOLERANCE_MM, slice_normal
from cccmr_model.errors import DataError
from cccmr_model.sequences import CINE_4CH, CINE_SAX, LGE_SAX

MIN_STACK_POSITIONS = 3  # a series with this many slice positions is a stack (short axis)


@dataclass
class SeriesInfo:
    """Header facts of one series and its classification."""

    series_uid: str
    study_uid: str
    series_number: int
    description: str  # SeriesDescription and ProtocolName, lower case
    files: list[Path] = field(default_factory=list)
    positions: list[float] = field(default_factory=list)  # distance along the normal of every frame
    trigger_times: list[float] = field(default_factory=list)
    inversion_times: set[float] = field(default_factory=set)
    cardiac_images: int = 0  # CardiacNumberOfImages (max seen)
    orientation: tuple[float, ...] = ()
    sequence: str | None = None  # cine_4ch, cine_sax, lge_sax or None
    note: str = ""  # why unclassified, or a caveat on the classification

    @property
    def normal(self) -> np.ndarray:
        return slice_normal(self.orientation)

    @property
    def num_positions(self) -> int:
        ordered = sorted(self.positions)
        return 1 + sum(1 for a, b in itertools.pairwise(ordered) if b - a > POSITION_TOLERANCE_MM)

    @property
    def frames_per_position(self) -> int:
        return max(1, round(len(self.positions) / max(1, self.num_positions)))

    @property
    def trigger_spread(self) -> float:
        finite = [t for t in self.trigger_times if math.isfinite(t)]
        return max(finite) - min(finite) if finite else 0.0


@dataclass
class Discovery:
    """The result of `discover_series`: every series, unreadable files, and a draft manifest."""

    root: Path
    series: list[SeriesInfo]
    unreadable: list[tuple[str, str]]  # (file relative to root, reason)
    rows: list[dict[str, str]]  # draft manifest rows

    @property
    def unclassified(self) -> list[SeriesInfo]:
        return [s for s in self.series if s.sequence is None]

    def summary(self) -> str:
        lines = [
            f"discover {self.root}: {len(self.series)} series in {len(self.rows)} studies, "
            f"{len(self.unclassified)} unclassified, {len(self.unreadable)} unreadable files"
        ]
        for row in self.rows:
            lines.append(f"  {row['subject_id']}: " + ", ".join(f"{k}={row[k] or '-'}" for k in _SEQ_COLUMNS))
        for info in self.series:
            if info.sequence is None or info.note:
                status = info.sequence or "unclassified"
                lines.append(f"  series {info.series_number} in {self._where(info)}: {status}: {info.note}")
        lines.extend(f"  unreadable {file}: {reason}" for file, reason in self.unreadable)
        return "\n".join(lines)

    def _where(self, info: SeriesInfo) -> str:
        return series_reference(info, self.root, self.series)


_SEQ_COLUMNS = (CINE_4CH, CINE_SAX, LGE_SAX)


def _matches(text: str, patterns: tuple[str, ...]) -> bool:
    return any(p.lower() in text for p in patterns)


def _inversion_times(ds: Dataset) -> set[float]:
    values = set()
    if "InversionTime" in ds:
        values.add(float(ds.InversionTime))
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in ds.get(group, []):
            for modifier in item.get("MRModifierSequence", []):
                for value in np.atleast_1d(modifier.get("InversionTimes", [])):
                    values.add(float(value))
    return {v for v in values if math.isfinite(v) and v > 0}


def _scan(root: Path) -> tuple[dict[str, SeriesInfo], list[tuple[str, str]]]:
    found: dict[str, SeriesInfo] = {}
    unreadable = []
    for file in list_series_files(root):
        relative = file.relative_to(root).as_posix()
        if file.suffix.lower() in {".csv", ".txt", ".md", ".json"}:
            continue
        try:
            with quiet_pydicom():
                ds = read_dataset(file, with_pixels=False)
                records = frames_from_dataset(ds, file, with_pixels=False)
                uid = str(ds.get("SeriesInstanceUID", ""))
                info = found.get(uid)
                if info is None:
                    text = f"{ds.get('SeriesDescription', '')} {ds.get('ProtocolName', '')}".lower().strip()
                    number = int(ds.get("SeriesNumber", 0) or 0)
                    info = found[uid] = SeriesInfo(uid, str(ds.get("StudyInstanceUID", "")), number, text)
                    info.orientation = records[0].orientation
                info.inversion_times |= _inversion_times(ds)
                info.cardiac_images = max(info.cardiac_images, int(ds.get("CardiacNumberOfImages", 0) or 0))
        except DicomReadError as exc:
            unreadable.append((relative, exc.problem))
            continue
        info.files.append(file)
        normal = info.normal
        info.positions.extend(float(np.dot(r.position, normal)) for r in records)
        info.trigger_times.extend(r.trigger_time for r in records)
    return found, unreadable


def classify(info: SeriesInfo, config: DataConfig) -> tuple[str | None, str, str]:
    """(kind, view, note): kind cine/lge/None, view sax/4ch/lax."""
    text = info.description
    if _matches(text, config.fourch_description_patterns):
        view = "4ch"
    elif _matches(text, config.sax_description_patterns):
        view = "sax"
    else:
        view = "sax" if info.num_positions >= MIN_STACK_POSITIONS else "lax"
    multi_phase = info.frames_per_position >= 2
    if multi_phase and len(info.inversion_times) > 1:
        return None, view, f"{len(info.inversion_times)} inversion times per position (mapping?), not a cine"
    if multi_phase and (info.trigger_spread > 0 or info.cardiac_images > 1):
        return "cine", view, ""
    if not multi_phase and (info.inversion_times or _matches(text, config.lge_description_patterns)):
        return "lge", view, ""
    if multi_phase:
        return None, view, "several frames per position without cardiac timing (TriggerTime, CardiacNumberOfImages)"
    return None, view, "single phase without InversionTime or an LGE-like description"


def _assign(study: list[SeriesInfo], config: DataConfig) -> None:
    """Classify a study's series and pick at most one per manifest column (the others get a note)."""
    candidates: dict[str, list[SeriesInfo]] = defaultdict(list)
    long_axis: list[SeriesInfo] = []
    for info in study:
        kind, view, note = classify(info, config)
        info.note = note
        if kind == "cine" and view == "sax":
            candidates[CINE_SAX].append(info)
        elif kind == "cine" and view == "4ch":
            candidates[CINE_4CH].append(info)
        elif kind == "cine":
            long_axis.append(info)
        elif kind == "lge" and view == "sax":
            candidates[LGE_SAX].append(info)
        elif kind == "lge":
            info.note = "long-axis LGE (only the short-axis LGE is used)"
    sax = max(candidates[CINE_SAX], key=_stack_rank) if candidates[CINE_SAX] else None
    for info in long_axis:
        info.note = "long-axis cine without a 4CH description (2CH/3CH/4CH cannot be told apart from geometry)"
    if not candidates[CINE_4CH] and len(long_axis) == 1:
        only = long_axis[0]
        if sax is None or abs(float(np.dot(only.normal, sax.normal))) < 0.5:
            candidates[CINE_4CH].append(only)
            only.note = "taken as 4CH: the study's only long-axis cine (no 4CH description); check the view"
    for sequence, options in candidates.items():
        chosen = max(options, key=_stack_rank)
        chosen.sequence = sequence
        for other in options:
            if other is not chosen:
                other.note = f"another {sequence} candidate; series {chosen.series_number} was chosen"


def _stack_rank(info: SeriesInfo) -> tuple[int, int, int]:
    return (info.num_positions, info.frames_per_position, info.series_number)


def series_reference(info: SeriesInfo, root: Path, all_series: list[SeriesInfo]) -> str:
    """The manifest path of a series: its folder, its single file, or `folder#uid` when the folder is shared."""
    folders = {f.parent for f in info.files}
    if len(info.files) == 1:
        return info.files[0].relative_to(root).as_posix()
    if len(folders) == 1:
        folder = folders.pop()
        shared = any(o is not info and any(f.parent == folder for f in o.files) for o in all_series)
        relative = folder.relative_to(root).as_posix()
        return f"{relative}#{info.series_uid}" if shared else relative
    common = Path(os.path.commonpath([f.parent for f in info.files]))
    return f"{common.relative_to(root).as_posix()}#{info.series_uid}"


def discover_series(root: str | Path, config: DataConfig) -> Discovery:
    """Scan `root`, classify every series and draft manifest rows (labels empty, pseudonymous subject ids)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    found, unreadable = _scan(root)
    series = sorted(found.values(), key=lambda s: (s.study_uid, s.series_number, s.series_uid))
    studies: dict[str, list[SeriesInfo]] = defaultdict(list)
    for info in series:
        studies[info.study_uid].append(info)
    rows = []
    ordered = sorted(studies.values(), key=lambda study: min(str(f) for s in study for f in s.files))
    for number, study in enumerate(ordered, start=1):
        _assign(study, config)
        row = {"subject_id": f"subject-{number:03d}", "label": "", "subtype": ""}
        for sequence in _SEQ_COLUMNS:
            chosen = [s for s in study if s.sequence == sequence]
            row[sequence] = series_reference(chosen[0], root, series) if chosen else ""
        rows.append(row)
    return Discovery(root, series, unreadable, rows)


def write_draft(discovery: Discovery, path: Path | None = None) -> Path:
    """Write the draft manifest (default `ROOT/manifest.draft.csv`); labels are left for the hospital."""
    path = path or discovery.root / MANIFEST_NAME.replace(".csv", ".draft.csv")
    comments = [
        "Draft written by `cccmr ingest --discover`: check every row, fill label (0 healthy, 1 cardiomyopathy)",
        f"and subtype ({', '.join(SUBTYPES)} or empty), then save as manifest.csv.",
    ]
    write_manifest(path, discovery.rows, comments)
    return path
