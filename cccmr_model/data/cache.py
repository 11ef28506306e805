"""Layout and bookkeeping of the ingestion cache.

    CACHE/index.json                      subjects, labels, usable sequences, preprocessing settings
    CACHE/subjects/<subject>/<seq>.npy    float16 model input (cine: S, T, H, W; LGE: S, H, W)
    CACHE/subjects/<subject>/<seq>.json   sidecar: status, series UID, spacing, slices, frame times, hashes
    CACHE/ingest-report.json, CACHE/ingest-summary.txt

Whether a sequence must be redone is decided from an input hash over the series' file list with each file's
size and modification time plus the preprocessing settings: cheap (no pixels read), so a warm re-run only stats
files. Patient names, IDs and birth dates are never written here; subjects are known by the manifest's id.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cccmr_model.config.schema import DataConfig
from cccmr_model.data.dicom_reader import list_series_files
from cccmr_model.data.manifest import SeriesRef

CACHE_VERSION = 1
# Bump when preprocessing changes what it writes or accepts (3: a stacked 4CH is refused; 4: series are reordered
# to the standard display, `data.display_orientation`; 5: the 4CH crop turned to the SAX long axis, `data.align_4ch`,
# and `data.resolution_mm`).
PIPELINE_VERSION = 5
INDEX_NAME = "index.json"
REPORT_NAME = "ingest-report.json"
SUMMARY_NAME = "ingest-summary.txt"


def preprocessing_settings(config: DataConfig, sequence: str) -> dict[str, Any]:
    """The settings that determine a sequence's cached output."""
    return {
        "pipeline": PIPELINE_VERSION,
        "sequence": sequence,
        "image_size": config.image_size,
        "crop": config.crop,
        "field_of_view_mm": config.field_of_view_mm,
        "display_orientation": config.display_orientation,
        "frames": config.frames,
        "slices": config.slices[sequence],
        "clip_percentiles": list(config.clip_percentiles),
        "min_frames": config.min_frames,
        "align_4ch": config.align_4ch,
        "resolution_mm": config.resolution_mm,
    }


def cache_settings(config: DataConfig) -> dict[str, Any]:
    """What the index records about the whole cache (the dataset checks shapes against it)."""
    settings = asdict(config)
    keys = ("image_size", "crop", "field_of_view_mm", "frames", "slices", "clip_percentiles")
    return {**{k: settings[k] for k in keys}, "pixel_spacing_mm": config.pixel_spacing_mm}


def input_hash(
    ref: SeriesRef, config: DataConfig, sequence: str, heart_point: Any = None, long_axis: Any = None
) -> str:
    """sha256 over (relative path, size, mtime) of every file of the series, the preprocessing settings, the SAX
    heart point a 4CH/LGE crop is centred on and the SAX long axis a 4CH is turned to (so a changed SAX re-runs
    them)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(preprocessing_settings(config, sequence), sort_keys=True).encode())
    if heart_point is not None:
        digest.update(f"heart={list(heart_point)}\n".encode())
    if long_axis is not None:
        digest.update(f"axis={list(long_axis)}\n".encode())
    digest.update(f"uid={ref.series_uid}\n".encode())
    for file in list_series_files(ref.path):
        stat = file.stat()
        relative = file.relative_to(ref.path).as_posix() if file != ref.path else file.name
        digest.update(f"{relative}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def sequence_paths(cache_dir: Path, subject_id: str, sequence: str) -> tuple[Path, Path]:
    """(array file, sidecar file) of one subject's sequence."""
    folder = cache_dir / "subjects" / subject_id
    return folder / f"{sequence}.npy", folder / f"{sequence}.json"


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def write_array(path: Path, array: np.ndarray) -> str:
    """Save as float16 .npy atomically; returns the sha256 of the stored bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(array, dtype=np.float16)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(temporary, data)
    os.replace(temporary, path)
    return hashlib.sha256(data.tobytes()).hexdigest()


def read_json(path: Path) -> Any | None:
    """Parsed JSON, or None when the file is missing or damaged."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cached_sidecar(cache_dir: Path, subject_id: str, sequence: str, digest: str) -> dict[str, Any] | None:
    """The sidecar of an up-to-date cached result (ok with its array present, or a remembered rejection)."""
    array_path, sidecar_path = sequence_paths(cache_dir, subject_id, sequence)
    sidecar = read_json(sidecar_path)
    if not isinstance(sidecar, dict) or sidecar.get("input_hash") != digest:
        return None
    if sidecar.get("status") == "ok" and not array_path.is_file():
        return None
    return sidecar
