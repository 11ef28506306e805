"""Ingest a site: every subject of the manifest read, preprocessed and cached, every failure reported.

One bad series never stops a site: a failure rejects that subject's sequence with a one-line reason naming the
file, and every other sequence and subject is still processed. A bad manifest row likewise rejects only its
subject, its reason naming the manifest's line, unless the manifest is read strictly. A subject is usable when both
cine sequences are; a missing or rejected LGE leaves it usable, cine-only. Work whose inputs (file list, sizes,
mtimes) and settings have not changed is skipped. Sequences run in worker processes
(`concurrent.futures.ProcessPoolExecutor`), in two stages: the SAX cines first, which locate each subject's heart
(`localise`), then the 4CH cines and LGEs, cropped around that point (its coordinates are part of their input
hash). Each sidecar records its crop centre.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cccmr_model.config.schema import DataConfig
from cccmr_model.console import progress
from cccmr_model.data import cache
from cccmr_model.data.localise import CENTRE_FALLBACK, choose_centre
from cccmr_model.data.manifest import (
    MANIFEST_NAME,
    REQUIRED_SEQUENCES,
    SUBTYPES,
    Manifest,
    ManifestEntry,
    load_manifest,
)
from cccmr_model.data.orientation import DisplayOrder
from cccmr_model.data.preprocess import preprocess_series
from cccmr_model.data.series import load_series
from cccmr_model.errors import DataError
from cccmr_model.sequences import CINE_4CH, CINE_SAX, LGE_SAX, SEQUENCES

log = logging.getLogger("cccmr.ingest")

MANIFEST_ROW = "manifest"  # the `sequence` of a rejection for a bad manifest row


@dataclass(frozen=True)
class Rejection:
    subject_id: str
    sequence: str
    file: str  # relative to the data root where possible
    reason: str  # one line

    def line(self) -> str:
        return f"{self.subject_id} {self.sequence}: {self.reason}"


@dataclass
class IngestReport:
    """What an ingestion run did; `usable` subjects have both cine sequences cached."""

    data_root: str
    cache_dir: str
    subjects: int = 0
    usable: list[str] = field(default_factory=list)
    cine_only: list[str] = field(default_factory=list)  # usable, without a cached LGE
    rejected_subjects: list[str] = field(default_factory=list)  # not usable
    rejections: list[Rejection] = field(default_factory=list)
    centre_fallbacks: list[str] = field(default_factory=list)  # sequences whose heart was not located
    reordered: int = 0  # cached sequences stored in another pixel order than the standard display (orientation.py)
    computed: int = 0  # sequences preprocessed in this run
    reused: int = 0  # sequences (or remembered rejections) taken from the cache
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.usable)

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["rejections"] = [asdict(r) for r in self.rejections]
        return payload

    def summary(self) -> str:
        lines = [
            f"ingest {self.data_root} -> {self.cache_dir}: {self.subjects} subjects, {len(self.usable)} usable "
            f"({len(self.cine_only)} cine-only), {len(self.rejected_subjects)} rejected; "
            f"{self.computed} sequences computed, {self.reused} reused, {self.seconds:.1f} s",
        ]
        if self.rejected_subjects:
            lines.append("rejected subjects: " + ", ".join(self.rejected_subjects))
        for rejection in self.rejections:
            lines.append(f"  {rejection.line()}")
        if self.reordered:
            lines.append(
                f"{self.reordered} series stored in another pixel order, reordered to the standard display "
                "(each sidecar's display_order)"
            )
        if self.centre_fallbacks:
            lines.append("heart not located, centre crop used:")
            lines += [f"  {line}" for line in self.centre_fallbacks]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Task:
    subject_id: str
    sequence: str
    path: str
    series_uid: str | None
    digest: str
    cache_dir: str
    config: DataConfig
    heart_point: tuple[float, float, float] | None = None  # the subject's SAX heart point (4CH, LGE)
    long_axis: tuple[float, float, float] | None = None  # the subject's SAX slice normal (4CH alignment)


def _relative(file: str, root: Path) -> str:
    try:
        return Path(file).resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return file


def process_sequence(task: _Task) -> dict[str, Any]:
    """Read, preprocess and cache one sequence (runs in a worker); returns its sidecar."""
    array_path, sidecar_path = cache.sequence_paths(Path(task.cache_dir), task.subject_id, task.sequence)
    sidecar: dict[str, Any] = {"subject_id": task.subject_id, "sequence": task.sequence, "input_hash": task.digest}
    try:
        series = load_series(task.path, task.series_uid)
        centre = choose_centre(series, task.sequence, task.config.crop, task.heart_point)
        result = preprocess_series(series, task.sequence, task.config, centre.point_mm, task.long_axis)
        sidecar.update(
            crop_centre={
                "patient_mm": list(result.crop_centre_mm or ()),
                "pixel": list(result.crop_centre_px or ()),
                "method": centre.method,
                "confidence": centre.confidence,
                "reason": centre.reason,
            },
            heart_point_mm=list(centre.point_mm) if centre.ok and task.sequence == CINE_SAX else None,
            long_axis=list(result.slice_normal or ()) if task.sequence == CINE_SAX else None,
        )
        sidecar.update(
            status="ok",
            series_uid=series.series_uid,
            original_pixel_spacing_mm=list(series.pixel_spacing),
            original_shape=list(series.array.shape),
            duplicate_images_dropped=series.duplicates,
            display_order=asdict(result.display_order),  # stored pixels to the standard display (orientation.py)
            slice_positions_mm=result.slice_positions,
            slice_spacing_mm=_median_step(series.slice_positions),
            frame_times_ms=result.frame_times,
            clip_range=list(result.clip_range),
            shape=list(result.array.shape),
            settings=cache.preprocessing_settings(task.config, task.sequence),
        )
        sidecar["array_sha256"] = cache.write_array(array_path, result.array)
    except DataError as exc:
        sidecar.update(status="rejected", file=getattr(exc, "file", task.path), reason=str(exc))
    except Exception as exc:  # a bug or an unforeseen file must not stop the site
        sidecar.update(status="rejected", file=task.path, reason=f"{task.path}: {type(exc).__name__}: {exc}")
    if sidecar["status"] == "rejected":
        array_path.unlink(missing_ok=True)
    cache.write_json(sidecar_path, sidecar)
    return sidecar


def _median_step(positions: Any) -> float | None:
    if len(positions) < 2:
        return None
    return round(float(np.median(np.diff(positions))), 3)


def _plan(
    entries: list[ManifestEntry],
    manifest: Path,
    cache_dir: Path,
    config: DataConfig,
    sequences: tuple[str, ...] = SEQUENCES,
    heart_points: dict[str, tuple[float, float, float] | None] | None = None,
    long_axes: dict[str, tuple[float, float, float] | None] | None = None,
) -> tuple[list[_Task], dict[tuple[str, str], dict[str, Any]]]:
    """Split the work on `sequences` into tasks to run and results already known (cached, missing, unreadable)."""
    tasks, known = [], {}
    for entry in entries:
        point = (heart_points or {}).get(entry.subject_id) if config.crop == "heart" else None
        axis = (long_axes or {}).get(entry.subject_id) if point is not None and config.align_4ch else None
        for sequence in sequences:
            ref = entry.series[sequence]
            key = (entry.subject_id, sequence)
            if ref is None:
                if sequence in REQUIRED_SEQUENCES:
                    reason = f"{manifest}: no {sequence} series given for {entry.subject_id}"
                    known[key] = {"status": "rejected", "file": str(manifest), "reason": reason}
                else:
                    known[key] = {"status": "absent"}
                continue
            four_axis = axis if sequence == CINE_4CH else None
            try:
                digest = cache.input_hash(ref, config, sequence, point, four_axis)
            except (DataError, OSError) as exc:
                known[key] = {"status": "rejected", "file": str(ref.path), "reason": str(exc)}
                continue
            sidecar = cache.cached_sidecar(cache_dir, entry.subject_id, sequence, digest)
            if sidecar is not None:
                known[key] = {**sidecar, "reused": True}
            else:
                tasks.append(
                    _Task(
                        entry.subject_id,
                        sequence,
                        str(ref.path),
                        ref.series_uid,
                        digest,
                        str(cache_dir),
                        config,
                        point,
                        four_axis,
                    )
                )
    return tasks, known


def _run(tasks: list[_Task], workers: int) -> dict[tuple[str, str], dict[str, Any]]:
    results: dict[tuple[str, str], dict[str, Any]] = {}
    if workers <= 1 or len(tasks) <= 1:
        for task in progress(tasks, "ingest"):
            results[(task.subject_id, task.sequence)] = process_sequence(task)
        return results
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(process_sequence, task): task for task in tasks}
        for future in progress(as_completed(futures), "ingest", total=len(futures)):
            task = futures[future]
            results[(task.subject_id, task.sequence)] = future.result()
    return results


def ingest_site(
    data_root: str | Path,
    cache_dir: str | Path,
    data_config: DataConfig,
    workers: int = 1,
    *,
    strict: bool = False,
    allow_outside_paths: bool = False,
) -> IngestReport:
    """Cache every subject of `data_root/manifest.csv` in `cache_dir`; returns (and writes) the report.

    Raises DataError only for a missing or malformed manifest, or (`strict`) one with a bad row; bad rows and
    series problems otherwise become rejections. `allow_outside_paths` lets series paths leave the data root.
    """
    started = time.perf_counter()
    root, cache_dir = Path(data_root), Path(cache_dir)
    manifest = root / MANIFEST_NAME
    read = load_manifest(manifest, strict=strict, allow_outside_paths=allow_outside_paths)
    entries = read.entries
    cache_dir.mkdir(parents=True, exist_ok=True)
    report = IngestReport(data_root=str(root), cache_dir=str(cache_dir))
    _reject_rows(read, root, report)
    report.subjects = len(entries) + len(report.rejected_subjects)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    points: dict[str, tuple[float, float, float] | None] = {}
    axes: dict[str, tuple[float, float, float] | None] = {}
    for stage in ((CINE_SAX,), (CINE_4CH, LGE_SAX)):  # the SAX heart points (and long axes) first
        tasks, known = _plan(entries, manifest, cache_dir, data_config, stage, points, axes)
        report.reused += sum(1 for r in known.values() if r.get("reused"))
        report.computed += len(tasks)
        computed = _run(tasks, workers)
        results.update(known)
        results.update(computed)
        if stage == (CINE_SAX,):
            points = {e.subject_id: _heart_point(results[(e.subject_id, CINE_SAX)]) for e in entries}
            axes = {e.subject_id: _long_axis(results[(e.subject_id, CINE_SAX)]) for e in entries}
    index = _build_index(entries, results, root, report, data_config)
    report.centre_fallbacks = _centre_fallbacks(entries, results, root)
    report.reordered = sum(1 for r in results.values() if r.get("status") == "ok" and _reordered(r))
    if report.centre_fallbacks:  # no subject or path in the log: a federated site's log may be streamed
        log.warning(
            "heart not located in %d series; centre crop used for them (named in the cache's %s)",
            len(report.centre_fallbacks), cache.SUMMARY_NAME,
        )  # fmt: skip
    cache.write_json(cache_dir / cache.INDEX_NAME, index)
    report.seconds = round(time.perf_counter() - started, 3)
    cache.write_json(cache_dir / cache.REPORT_NAME, report.to_dict())
    (cache_dir / cache.SUMMARY_NAME).write_text(report.summary() + "\n", encoding="utf-8")
    return report


def _reject_rows(manifest: Manifest, root: Path, report: IngestReport) -> None:
    """Record each refused manifest row as a rejected subject (named by its line when its id is bad)."""
    for problem in manifest.problems:
        subject = problem.subject_id or f"(line {problem.line})"
        reason = problem.reason.replace(f"{root}/", "")
        rejection = Rejection(subject, MANIFEST_ROW, _relative(str(manifest.path), root), reason)
        report.rejections.append(rejection)
        log.warning("rejected %s", rejection.line())
        if subject not in report.rejected_subjects:
            report.rejected_subjects.append(subject)


def _heart_point(sidecar: dict[str, Any]) -> tuple[float, float, float] | None:
    point = sidecar.get("heart_point_mm") if sidecar.get("status") == "ok" else None
    return (float(point[0]), float(point[1]), float(point[2])) if point else None


def _long_axis(sidecar: dict[str, Any]) -> tuple[float, float, float] | None:
    axis = sidecar.get("long_axis") if sidecar.get("status") == "ok" else None
    return (float(axis[0]), float(axis[1]), float(axis[2])) if axis else None


def _reordered(sidecar: dict[str, Any]) -> bool:
    return not DisplayOrder(**(sidecar.get("display_order") or {})).identity


def _centre_fallbacks(
    entries: list[ManifestEntry], results: dict[tuple[str, str], dict[str, Any]], root: Path
) -> list[str]:
    """One line per cached sequence whose heart localisation failed (its crop fell back to the image centre)."""
    lines = []
    for entry in entries:
        for sequence in SEQUENCES:
            sidecar = results.get((entry.subject_id, sequence), {})
            crop = sidecar.get("crop_centre") or {}
            if sidecar.get("status") == "ok" and crop.get("method") == CENTRE_FALLBACK:
                ref = entry.series[sequence]
                where = _relative(str(ref.path), root) if ref is not None else "?"
                lines.append(f"{entry.subject_id} {sequence}: heart not located ({crop.get('reason')}): {where}")
    return lines


def _build_index(
    entries: list[ManifestEntry],
    results: dict[tuple[str, str], dict[str, Any]],
    root: Path,
    report: IngestReport,
    config: DataConfig,
) -> dict[str, Any]:
    subjects = {}
    for entry in entries:
        cached = {}
        for sequence in SEQUENCES:
            result = results[(entry.subject_id, sequence)]
            if result["status"] == "ok":
                cached[sequence] = f"subjects/{entry.subject_id}/{sequence}.npy"
            elif result["status"] == "rejected":
                reason = " ".join(str(result["reason"]).replace(f"{root}/", "").split())  # one line, root-relative
                rejection = Rejection(entry.subject_id, sequence, _relative(result["file"], root), reason)
                report.rejections.append(rejection)
                log.warning("rejected %s", rejection.line())
        usable = all(seq in cached for seq in REQUIRED_SEQUENCES)
        if usable:
            report.usable.append(entry.subject_id)
            if "lge_sax" not in cached:
                report.cine_only.append(entry.subject_id)
        else:
            report.rejected_subjects.append(entry.subject_id)
        subjects[entry.subject_id] = {
            "label": entry.label,
            "subtype": entry.subtype,
            "usable": usable,
            "has_lge": "lge_sax" in cached,
            "sequences": cached,
        }
    return {
        "version": cache.CACHE_VERSION,
        "settings": cache.cache_settings(config),
        "subtypes": list(SUBTYPES),
        "subjects": subjects,
    }
