"""The demo's explained subjects: one held-out test subject per class, through `cccmr predict --explain`'s code."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from cccmr_model.errors import DataError
from cccmr_model.explain import explain_subject
from cccmr_model.predict import Predictor
from cccmr_model.release import load_release
from cccmr_model.sequences import CINE_SAX

log = logging.getLogger(__name__)
CLASSES = {"0": "healthy", "1": "cardiomyopathy"}


def first_per_class(manifest: Path) -> list[dict[str, str]]:
    """The first manifest row of each label, in label order."""
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen: dict[str, dict[str, str]] = {}
    for row in rows:
        chosen.setdefault(row["label"], row)
    return [chosen[label] for label in sorted(chosen)]


def explain_examples(release_dir: Path, test_dir: Path, out: Path, report_dir: Path) -> list[dict[str, Any]]:
    """Explain one test subject per class into `out/<subject>`; figure paths relative to `report_dir`."""
    release = load_release(release_dir)
    predictor = Predictor(release)
    examples = []
    for row in first_per_class(test_dir / "manifest.csv"):
        subject = row["subject_id"]
        try:
            inputs = predictor.read_subject(row["cine_4ch"], row["cine_sax"], base=test_dir)
        except DataError as exc:
            log.warning("explained subject %s skipped: %s", subject, exc)
            continue
        prediction = predictor.predict_inputs(inputs)
        folder = out / subject
        summary = explain_subject(release.model, inputs, prediction, folder)
        sax = summary["sequences"][CINE_SAX]
        examples.append({
            "subject_id": subject,
            "truth": CLASSES.get(row["label"], row["label"]) + (f" ({row['subtype']})" if row.get("subtype") else ""),
            "p_cardiomyopathy": prediction.p_cardiomyopathy,
            "call": prediction.call,
            "es_frame": summary["es_frame"],
            "top_frames": [f["frame"] for f in sax["top_frames"]],
            "top_slices": [s["series_slice"] for s in sax.get("top_slices", [])],
            "figures": [str((folder / f"{CINE_SAX}_{phase}.png").relative_to(report_dir)) for phase in ("ed", "es")],
        })  # fmt: skip
    return examples
