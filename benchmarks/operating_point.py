"""Would a threshold chosen on the sites' validation subjects make better calls than 0.5?

`python benchmarks/operating_point.py --ablation DIR [--seeds 0 1 2] [--runs fim-ua control]`

Reads a finished `phantom_ablation.py --mode federated|both` folder: per seed, each federated run's release
(`DIR/seed-S/<run>/release`) scores the validation fifth of each site (the same `split_site` the federation used,
from `DIR/seed-S/flower/site-cache/<site>`) and the held-out test set (`DIR/seed-S/cache/test/test`). Three
thresholds are set on the pooled validation scores and applied to the test set: 0.5 (the release's), Youden's J
(the cut with the largest sensitivity + specificity - 1, midway between two validation scores) and the highest cut
that keeps validation sensitivity >= 0.9 (a screening aid should miss few patients). Prints and writes
`DIR/operating-point.md`: test sensitivity, specificity and accuracy per seed and threshold, and where the test
patients that every threshold misses score.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

TARGET_SENSITIVITY = 0.9


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The cut with the largest sensitivity + specificity - 1 on (scores, labels), midway to the next lower score."""
    values = np.unique(scores)
    best, cut = -np.inf, 0.5
    for i, value in enumerate(values):
        j = (scores[labels == 1] >= value).mean() - (scores[labels == 0] >= value).mean()
        if j > best + 1e-12:
            best, cut = j, (value + (values[i - 1] if i else 0.0)) / 2
    return float(cut)


def sensitivity_threshold(scores: np.ndarray, labels: np.ndarray, target: float = TARGET_SENSITIVITY) -> float:
    """The highest cut with sensitivity >= `target` on (scores, labels), midway to the next lower score."""
    positives = np.sort(scores[labels == 1])
    allowed_misses = int(np.floor((1 - target) * len(positives) + 1e-9))
    value = positives[allowed_misses]
    below = scores[scores < value]
    return float((value + (below.max() if below.size else 0.0)) / 2)


def calls_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity and accuracy of the calls P >= threshold."""
    called = scores >= threshold
    return {
        "sensitivity": float(called[labels == 1].mean()),
        "specificity": float((~called[labels == 0]).mean()),
        "accuracy": float((called == (labels == 1)).mean()),
    }


RULES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "0.5": lambda scores, labels: 0.5,
    "Youden": youden_threshold,
    f"sensitivity >= {TARGET_SENSITIVITY}": sensitivity_threshold,
}


def release_scores(seed_dir: Path, run: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(validation scores, labels, test scores, labels) of one run's release: P(cardiomyopathy) per subject."""
    from cccmr_model.data import CachedDataset
    from cccmr_model.engine.datasets import LabelledSubset
    from cccmr_model.engine.evaluate import evaluate_model
    from cccmr_model.release import load_release
    from cccmr_model.splits import split_site

    release = load_release(seed_dir / run / "release")
    config, state = release.config, release.model.state_dict()
    scores, labels = [], []
    for site in config.federation.sites:
        dataset = CachedDataset(seed_dir / "flower" / "site-cache" / site, data_config=config.data)
        _, val_idx = split_site(dataset, config)
        result = evaluate_model(state, LabelledSubset(dataset, val_idx), config, "cpu")
        scores.append(result.scores[:, 1])
        labels.append(result.labels)
    test = CachedDataset(seed_dir / "cache" / "test" / "test", data_config=config.data)
    result = evaluate_model(state, test, config, "cpu")
    return np.concatenate(scores), np.concatenate(labels), result.scores[:, 1], result.labels


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablation", required=True, type=Path, help="a finished phantom_ablation.py --out folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", nargs="+", default=["fim-ua", "control"], help="federated runs to read")
    args = parser.parse_args(argv)
    lines = [
        "| seed | run | validation (patients / all) | threshold rule: cut, test sensitivity / specificity / accuracy |"
        " test patients missed at every cut: their scores |",
        "|---|---|---|---|---|",
    ]
    for seed in args.seeds:
        for run in args.runs:
            val_scores, val_labels, test_scores, test_labels = release_scores(args.ablation / f"seed-{seed}", run)
            cells, cuts = [], []
            for rule, choose in RULES.items():
                cut = choose(val_scores, val_labels)
                cuts.append(cut)
                m = calls_at(test_scores, test_labels, cut)
                cells.append(
                    f"{rule}: {cut:.2f}, {m['sensitivity']:.2f} / {m['specificity']:.2f} / {m['accuracy']:.2f}"
                )
            missed = np.sort(test_scores[(test_labels == 1) & (test_scores < min(cuts))])
            lines.append(
                f"| {seed} | {run} | {int(val_labels.sum())} / {len(val_labels)} | {'; '.join(cells)} | "
                f"{', '.join(f'{s:.2f}' for s in missed) or 'none'} |"
            )
    table = "\n".join(lines) + "\n"
    (args.ablation / "operating-point.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
