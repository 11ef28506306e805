"""Does averaging the release over a few views of each cine (test-time augmentation) buy robustness to shift?

`python benchmarks/view_averaging.py --ablation DIR [--seeds 0 1 2] [--run fim-ua]`

The shift-robustness benchmark (`shift_robustness.py`) found geometry the release's weak side: an off-centre heart, a
larger heart, an in-plane rotation beyond training's. Training-time augmentation that covers them did not pay at 96
subjects. This benchmark asks the inference-time question: score each shifted test set of `shift_robustness.SHIFTS`
(`DIR/seed-S/cache/test/test`, the release `DIR/seed-S/<run>/release`) in every view of `VIEWS` (the image as it is,
moved by training's largest shift along each axis, turned by training's largest rotation each way, each also
mirrored left-right as training does half the time), then average P(cardiomyopathy) over each set of `VIEW_SETS`.
Test AUC per shift and view set, mean over seeds; writes `DIR/view-averaging.md` and `.json` (the per-view
probabilities, so other sets can be scored without the model).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.shift_robustness import SHIFTS, ShiftedDataset  # noqa: E402
from benchmarks.support.arguments import release_benchmark_parser  # noqa: E402
from benchmarks.support.report import write_report  # noqa: E402
from cccmr_model.engine.augment import affine_warp  # noqa: E402

View = Callable[[torch.Tensor], torch.Tensor]  # (S, T, H, W) -> same shape

# The augmentation bounds of the releases this was measured on (benchmarks/README.md): max_shift_fraction, and
# max_rotation_deg as it was before the default became 20.
MAX_SHIFT = 0.036
MAX_ROTATION = 10.0


def view(angle_deg: float = 0.0, shift_fraction: tuple[float, float] = (0.0, 0.0), mirrored: bool = False) -> View:
    """Turn by `angle_deg` and move by `shift_fraction` of the side (as training's augmentation), then mirror."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if angle_deg or shift_fraction != (0.0, 0.0):
            x = affine_warp(x, angle_deg, (shift_fraction[0] * w, shift_fraction[1] * h))
        return torch.flip(x, dims=(-1,)) if mirrored else x

    return apply


_PLACEMENTS: dict[str, tuple[float, tuple[float, float]]] = {
    "as is": (0.0, (0.0, 0.0)),
    "right": (0.0, (MAX_SHIFT, 0.0)),
    "left": (0.0, (-MAX_SHIFT, 0.0)),
    "down": (0.0, (0.0, MAX_SHIFT)),
    "up": (0.0, (0.0, -MAX_SHIFT)),
    f"+{MAX_ROTATION:g} deg": (MAX_ROTATION, (0.0, 0.0)),
    f"-{MAX_ROTATION:g} deg": (-MAX_ROTATION, (0.0, 0.0)),
}
VIEWS: dict[str, View] = {
    name + (", mirrored" if mirrored else ""): view(angle, shift, mirrored)
    for mirrored in (False, True)
    for name, (angle, shift) in _PLACEMENTS.items()
}
_MOVES = ["as is", "right", "left", "down", "up"]
_TURNS = ["as is", f"+{MAX_ROTATION:g} deg", f"-{MAX_ROTATION:g} deg"]
VIEW_SETS: dict[str, list[str]] = {
    "one view": ["as is"],
    "+ mirror": ["as is", "as is, mirrored"],
    "4 shifts": _MOVES,
    "4 shifts, mirrored": _MOVES + [f"{m}, mirrored" for m in _MOVES],
    "2 turns": _TURNS,
    "2 turns, mirrored": _TURNS + [f"{t}, mirrored" for t in _TURNS],
    "all 14": list(VIEWS),
}


class ViewedDataset(ShiftedDataset):
    """`base` with `view` applied to every cine sequence of each sample (a shift that draws nothing)."""

    def __init__(self, base: Sequence[dict], view: View) -> None:
        super().__init__(base, lambda x, rng: view(x), seed=0)


def view_scores(release_dir: Path, test_dir: Path, seed: int) -> dict[str, dict[str, list]]:
    """Per shift of `SHIFTS`: P(cardiomyopathy) per view of `VIEWS` (test subjects in cache order) and "labels"."""
    from cccmr_model.data import CachedDataset
    from cccmr_model.engine.evaluate import evaluate_model
    from cccmr_model.release import load_release

    release = load_release(release_dir)
    config, state = release.config, release.model.state_dict()
    test = CachedDataset(test_dir, data_config=config.data)
    out: dict[str, dict[str, list]] = {}
    for shift_name, shift in SHIFTS.items():
        shifted = ShiftedDataset(test, shift, seed)
        samples = [shifted[i] for i in range(len(shifted))]  # the shift drawn once, every view sees the same images
        out[shift_name] = {}
        for view_name, apply in VIEWS.items():
            result = evaluate_model(state, ViewedDataset(samples, apply), config, "cpu")
            out[shift_name][view_name] = result.scores[:, 1].tolist()
        out[shift_name]["labels"] = result.labels.tolist()  # the same subjects in every view
    return out


def set_aucs(scores: dict[str, list]) -> dict[str, float]:
    """Test AUC of P(cardiomyopathy) averaged over each view set, from one shift's per-view scores."""
    from cccmr_model.metrics import roc_auc

    labels = np.asarray(scores["labels"])
    return {name: roc_auc(np.mean([scores[v] for v in views], axis=0), labels) for name, views in VIEW_SETS.items()}


def table(results: dict[int, dict[str, dict[str, list]]]) -> str:
    """Markdown: per shift the seed-mean AUC of each view set, then the mean and the worst over the shifts."""
    seeds = sorted(results)
    aucs = {shift: [set_aucs(results[s][shift]) for s in seeds] for shift in SHIFTS}
    mean = {shift: {k: float(np.mean([a[k] for a in aucs[shift]])) for k in VIEW_SETS} for shift in SHIFTS}
    lines = [
        f"Test AUC, mean over seeds {', '.join(map(str, seeds))}; P(cardiomyopathy) averaged over the set's views",
        "",
        "| shift | " + " | ".join(VIEW_SETS) + " |",
        "|---|" + "---|" * len(VIEW_SETS),
    ]
    lines += [f"| {shift} | " + " | ".join(f"{mean[shift][k]:.3f}" for k in VIEW_SETS) + " |" for shift in SHIFTS]
    changed = [shift for shift in SHIFTS if shift != "none"]
    for label, reduce in (("mean of the shifts", np.mean), ("worst shift", np.min)):
        cells = [f"{float(reduce([mean[s][k] for s in changed])):.3f}" for k in VIEW_SETS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = release_benchmark_parser(__doc__).parse_args(argv)
    results = {}
    for seed in args.seeds:
        seed_dir = args.ablation / f"seed-{seed}"
        results[seed] = view_scores(seed_dir / args.run / "release", seed_dir / "cache" / "test" / "test", seed)
        print(f"seed {seed}: done", flush=True)
    write_report(args.ablation, "view-averaging", table(results), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
