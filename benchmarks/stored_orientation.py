"""Does a release still screen when a scanner stores the same study turned or mirrored?

`python benchmarks/stored_orientation.py --ablation DIR [--seeds 0 1 2] [--run fim-ua]`

Scanners store one view in different pixel orders (the Sunnybrook feet-first study arrives a quarter turn from the
head-first one; a mirrored order is as valid DICOM). This benchmark reads the phantom's held-out test subjects of a
finished `phantom_ablation.py` folder (`DIR/seed-S/data/test`), stores both cine series in each of the eight pixel
orders (0-3 quarter turns, with or without a mirror; `reorder_pixels`: pixels, slice order and
ImageOrientationPatient / ImagePositionPatient together, as such a scanner writes them), and scores each version
with the release (`DIR/seed-S/<run>/release`) through prediction's own path (localisation, `preprocess_series`, the
release's config) twice: with `data.display_orientation` (ingestion reorders the series to the standard display)
and without it (the stored pixel order). Test AUC per order, setting and seed; writes `DIR/stored-orientation.md`
and `.json`.
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
from cccmr_model.data import load_series  # noqa: E402
from cccmr_model.data.orientation import ORDERS, DisplayOrder, reorder_pixels  # noqa: E402
from cccmr_model.data.series import Series  # noqa: E402
from cccmr_model.metrics import roc_auc  # noqa: E402
from cccmr_model.predict import Predictor, parse_series_ref, predict_arrays, prepare_cine  # noqa: E402
from cccmr_model.sequences import CINE_4CH, CINE_SAX  # noqa: E402

SETTINGS = {"display order (display_orientation)": True, "as stored": False}


def order_name(order: DisplayOrder) -> str:
    return f"{90 * order.turns} deg" + (", mirrored" if order.mirrored else "")


def subject_inputs(predictor: Predictor, sax: Series, four: Series, display: bool) -> tuple[np.ndarray, np.ndarray]:
    """(4CH (1, 1, T, H, W), SAX (1, 3, T, H, W)) as `cccmr predict` makes them, with `display_orientation`."""
    data = replace(predictor.config.data, display_orientation=display)
    x_sax, centre = prepare_cine(sax, CINE_SAX, data)
    x_four, _ = prepare_cine(four, CINE_4CH, data, centre.point_mm if centre.ok else None, x_sax.slice_normal)
    return x_four.array[None], x_sax.array[None]


def orientation_scores(release_dir: Path, test_data: Path) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
    """P(cardiomyopathy) per setting and stored order (subjects in manifest order), and the labels, for the release
    at `release_dir` on the test site at `test_data`."""
    from cccmr_model.release import load_release

    predictor = Predictor(load_release(release_dir), device="cpu", precision="fp32")
    with (test_data / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([int(row["label"]) for row in rows])
    scores = {name: {order_name(o): np.zeros(len(rows)) for o in ORDERS} for name in SETTINGS}
    for i, row in enumerate(rows):
        sax = load_series(*parse_series_ref(row[CINE_SAX], test_data))
        four = load_series(*parse_series_ref(row[CINE_4CH], test_data))
        for order in ORDERS:
            stored_sax, stored_four = reorder_pixels(sax, order), reorder_pixels(four, order)
            for name, display in SETTINGS.items():
                x_four, x_sax = subject_inputs(predictor, stored_sax, stored_four, display)
                p = predict_arrays(predictor.module, x_four, x_sax, predictor.device)[0, 1]
                scores[name][order_name(order)][i] = p
    return scores, labels


def orientation_aucs(release_dir: Path, test_data: Path) -> dict[str, dict[str, float]]:
    """Test AUC per setting and stored order (`orientation_scores`)."""
    scores, labels = orientation_scores(release_dir, test_data)
    return {name: {o: roc_auc(s, labels) for o, s in per_order.items()} for name, per_order in scores.items()}


def table(results: dict[int, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per (setting, stored order), the AUC of each seed and the mean."""
    seeds = sorted(results)
    lines = ["| model input | study stored | AUC per seed | mean |", "|---|---|---|---|"]
    for name in SETTINGS:
        for order in ORDERS:
            per_seed = [results[s][name][order_name(order)] for s in seeds]
            cells = " / ".join(f"{a:.3f}" for a in per_seed)
            lines.append(f"| {name} | {order_name(order)} | {cells} | {np.mean(per_seed):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = release_benchmark_parser(__doc__).parse_args(argv)
    results: dict[int, dict[str, dict[str, float]]] = {}
    for seed in args.seeds:
        seed_dir = args.ablation / f"seed-{seed}"
        results[seed] = orientation_aucs(seed_dir / args.run / "release", seed_dir / "data" / "test")
        print(f"seed {seed}: {json.dumps(results[seed])}", flush=True)
    write_report(args.ablation, "stored-orientation", table(results), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
