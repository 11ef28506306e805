"""Does a release trained on the project's phantom screen a cohort from another generator?

`python benchmarks/cross_generator.py --ablation DIR --cohort COHORT [--seeds 0 1 2] [--run fim-ua] [--montage PNG]`

The releases of a finished `phantom_ablation.py` folder (`DIR/seed-S/<run>/release`) learned from the project's own
phantom only. `COHORT` is a site data root (`manifest.csv` and DICOM) written by a generator that shares no code
with it: `python -m benchmarks.support.foreign_cohort --out COHORT --subjects 96 --seed 0` (another torso, field of
view, matrix, frame count, intensity scale, heart position and disease model). Every subject is read through
prediction's own path (`Predictor.read_subject`: display order, localisation, preprocessing with the release's
config), once for all seeds when their data configs agree, and scored by each seed's release. For each seed: test
AUC, accuracy / sensitivity / specificity at the release's threshold, sensitivity per subtype; for the cohort: how
many SAX cines the heart was located in. The held-out phantom test set of each seed is scored the same way for the
comparison. Writes `DIR/cross-generator.md` and `.json`; `--montage` saves the model's input (mid frame of the
middle SAX slice and the 4CH) of the first subjects, to see what the crop holds.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.support.arguments import release_benchmark_parser  # noqa: E402
from benchmarks.support.report import write_report  # noqa: E402
from cccmr_model.metrics import SUBTYPE_NAMES, screening_metrics  # noqa: E402
from cccmr_model.predict import Predictor, SubjectInputs  # noqa: E402
from cccmr_model.sequences import CINE_4CH, CINE_SAX  # noqa: E402

MONTAGE_SUBJECTS = 8


def read_rows(data: Path) -> list[dict[str, str]]:
    with (data / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_cohort(predictor: Predictor, data: Path) -> tuple[list[SubjectInputs], list[dict[str, str]], list[str]]:
    """Every subject of `data` read as `cccmr predict` reads it: (inputs, their manifest rows, skipped with why)."""
    inputs, rows, skipped = [], [], []
    for row in read_rows(data):
        try:
            inputs.append(predictor.read_subject(row[CINE_4CH], row[CINE_SAX], base=data))
            rows.append(row)
        except Exception as error:  # a subject the pipeline refuses is reported, not fatal
            skipped.append(f"{row['subject_id']}: {error}")
    return inputs, rows, skipped


def score(predictor: Predictor, inputs: Sequence[SubjectInputs]) -> np.ndarray:
    """P(cardiomyopathy) per subject, as `cccmr predict` scores it."""
    return np.array([predictor.predict_inputs(subject).p_cardiomyopathy for subject in inputs])


def cohort_metrics(scores: np.ndarray, rows: Sequence[dict[str, str]], threshold: float) -> dict[str, float]:
    """AUC, screening metrics at `threshold`, and the share of each subtype called cardiomyopathy."""
    labels = np.array([int(row["label"]) for row in rows])
    metrics = screening_metrics(scores, labels, threshold)
    metrics["mean score, healthy"] = float(scores[labels == 0].mean())
    metrics["mean score, cardiomyopathy"] = float(scores[labels == 1].mean())
    for name in SUBTYPE_NAMES:
        chosen = np.array([row.get("subtype", "").upper() == name for row in rows])
        if chosen.any():
            metrics[f"sensitivity {name}"] = float((scores[chosen] >= threshold).mean())
    return metrics


def save_montage(inputs: Sequence[SubjectInputs], rows: Sequence[dict[str, str]], path: Path) -> None:
    """The model's inputs of the first subjects: middle SAX slice and the 4CH at frame 0 and mid-cycle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(zip(inputs, rows, strict=True))[:MONTAGE_SUBJECTS]
    figure, axes = plt.subplots(len(shown), 4, figsize=(8, 2 * len(shown)), squeeze=False)
    for (subject, row), line in zip(shown, axes, strict=True):
        sax, four = subject.cine_sax.array, subject.cine_4ch.array  # S, T, H, W
        mid_t = sax.shape[1] // 2
        panels = (sax[sax.shape[0] // 2, 0], sax[sax.shape[0] // 2, mid_t], four[0, 0], four[0, mid_t])
        for axis, image, title in zip(line, panels, ("SAX t0", "SAX mid", "4CH t0", "4CH mid"), strict=True):
            axis.imshow(image, cmap="gray")
            axis.set_title(f"{row['subject_id']} {row.get('subtype') or 'healthy'}: {title}", fontsize=6)
            axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def table(results: dict[str, dict]) -> str:
    """Markdown: per seed the cohort's and the phantom test set's AUC and calls."""
    seeds = sorted(results["seeds"], key=int)
    keys = ["auc", "accuracy", "sensitivity", "specificity", "mean score, healthy", "mean score, cardiomyopathy"]
    keys += [k for k in results["seeds"][seeds[0]]["cohort"] if k.startswith("sensitivity ")]
    lines = [
        f"Cohort {results['cohort']}: {results['subjects']} subjects read, {len(results['skipped'])} refused; "
        f"heart located in {results['located']} of {results['subjects']} SAX cines.",
        "",
        "| metric | cohort, per seed | cohort, mean | phantom test, per seed | phantom test, mean |",
        "|---|---|---|---|---|",
    ]
    for key in keys:
        cells = []
        for part in ("cohort", "phantom"):
            values = [results["seeds"][s][part].get(key, float("nan")) for s in seeds]
            cells += [" / ".join(f"{v:.3f}" for v in values), f"{np.nanmean(values):.3f}"]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from cccmr_model.release import load_release

    parser = release_benchmark_parser(__doc__)
    parser.add_argument("--cohort", required=True, type=Path, help="site data root from another generator")
    parser.add_argument("--montage", type=Path, help="PNG of the model inputs of the first cohort subjects")
    parser.add_argument(
        "--resolution-mm", type=float, help="data.resolution_mm at inference, instead of the release's own"
    )
    args = parser.parse_args(argv)
    results: dict = {"cohort": str(args.cohort), "resolution_mm": args.resolution_mm, "seeds": {}}
    cohort: tuple | None = None
    data_config = None
    for seed in args.seeds:
        seed_dir = args.ablation / f"seed-{seed}"
        predictor = Predictor(load_release(seed_dir / args.run / "release"), device="cpu", precision="fp32")
        if args.resolution_mm is not None:
            data = replace(predictor.config.data, resolution_mm=args.resolution_mm)
            predictor.config = replace(predictor.config, data=data)
        if cohort is None or predictor.config.data != data_config:
            cohort, data_config = read_cohort(predictor, args.cohort), predictor.config.data
            if args.montage and seed == args.seeds[0]:
                save_montage(cohort[0], cohort[1], args.montage)
        inputs, rows, skipped = cohort
        results.update(
            subjects=len(inputs),
            skipped=skipped,
            located=sum(s.cine_sax.localised for s in inputs),
        )
        threshold = predictor.config.evaluation.threshold
        phantom_inputs, phantom_rows, _ = read_cohort(predictor, seed_dir / "data" / "test")
        results["seeds"][str(seed)] = {
            "cohort": cohort_metrics(score(predictor, inputs), rows, threshold),
            "phantom": cohort_metrics(score(predictor, phantom_inputs), phantom_rows, threshold),
        }
        print(f"seed {seed}: {json.dumps(results['seeds'][str(seed)])}", flush=True)
    write_report(args.ablation, "cross-generator", table(results), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
