"""How far does a release's test AUC fall when the images differ the way another generator's or scanner's would?

`python benchmarks/shift_robustness.py --ablation DIR [--seeds 0 1 2] [--runs fim-ua]`

The model is judged on a cohort no one here generated. This benchmark stands in for it with the phantom's held-out
test set (`DIR/seed-S/cache/test/test` of a finished `phantom_ablation.py` folder), changed after preprocessing by
one image property at a time, each at a level a different renderer or protocol could plausibly differ by:
contrast (a gamma on the clipped intensities: myocardium darker or brighter against blood), resolution (a Gaussian
blur), noise (lower SNR), a smooth intensity ramp (coil shading), heart size in the field of view (zoom), an
off-centre heart (localisation error), a rotation beyond training's, and cardiac timing (systole shorter or longer:
a smooth warp of cycle time). Every cine slice of one subject gets the same change; each changed image is z-scored
again, as ingestion would. The release (`DIR/seed-S/<run>/release`, cine only) scores every version; the table
gives test AUC per shift and seed, and the drop from the unchanged images. Writes `DIR/shift-robustness.md` and
`.json`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.support.arguments import release_benchmark_parser  # noqa: E402
from benchmarks.support.report import write_report  # noqa: E402
from cccmr_model.data.preprocess import zscore  # noqa: E402
from cccmr_model.engine.augment import affine_warp  # noqa: E402
from cccmr_model.sequences import CINE_SEQUENCES  # noqa: E402

Shift = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]  # (S, T, H, W) z-scored -> same shape


def zscored(x: torch.Tensor) -> torch.Tensor:
    """Ingestion's z-score, on a tensor."""
    return torch.from_numpy(zscore(x.numpy()))


def unit_range(x: torch.Tensor) -> torch.Tensor:
    """Rescaled to [0, 1] (the clipped intensities' range, up to the z-score's affine map)."""
    low, high = float(x.min()), float(x.max())
    return (x - low) / max(high - low, 1e-6)


def gamma(power: float) -> Shift:
    return lambda x, rng: zscored(unit_range(x) ** power)


def blur(sigma_px: float) -> Shift:
    """An in-plane Gaussian blur of `sigma_px` pixels (edges repeated)."""
    return lambda x, rng: zscored(
        torch.from_numpy(ndimage.gaussian_filter(x.numpy(), (0, 0, sigma_px, sigma_px), mode="nearest"))
    )


def noise(std: float) -> Shift:
    return lambda x, rng: zscored(x + std * torch.from_numpy(rng.standard_normal(x.shape).astype(np.float32)))


def ramp(strength: float) -> Shift:
    """A linear intensity ramp 1 +- strength across the image, in a random direction (same for every slice)."""

    def apply(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        gain = 1 + strength * (math.cos(angle) * xx + math.sin(angle) * yy) / math.sqrt(2)  # H, W
        return zscored(unit_range(x) * gain)

    return apply


def warp(zoom: float = 1.0, angle_deg: float = 0.0, offset_fraction: float = 0.0) -> Shift:
    """Zoom (>1: the heart larger) and rotate about the centre, then move by `offset_fraction` of the side."""

    def apply(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        direction = rng.uniform(0, 2 * math.pi)
        shift = (offset_fraction * w * math.cos(direction), offset_fraction * h * math.sin(direction))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return zscored(affine_warp(x, sign * angle_deg, shift, zoom))

    return apply


def time_warp(amount: float) -> Shift:
    """Resample the cycle at phase u + amount * sin(2 pi u) / (2 pi): one part of the cycle faster, the other slower."""

    def apply(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        t = x.shape[1]
        u = np.arange(t) / t
        source = (u + amount * np.sin(2 * np.pi * u) / (2 * np.pi)) * t  # frame positions, cyclic
        low = np.floor(source).astype(int) % t
        high = (low + 1) % t
        frac = torch.tensor(source - np.floor(source), dtype=torch.float32).view(1, t, 1, 1)
        return zscored(x[:, low] * (1 - frac) + x[:, high] * frac)

    return apply


SHIFTS: dict[str, Shift] = {
    "none": lambda x, rng: x,
    "contrast: gamma 0.6": gamma(0.6),
    "contrast: gamma 1.6": gamma(1.6),
    "resolution: blur 1 px": blur(1.0),
    "noise: +0.3 sd": noise(0.3),
    "shading: ramp +-30 %": ramp(0.3),
    "heart size: zoom 0.85": warp(zoom=0.85),
    "heart size: zoom 1.15": warp(zoom=1.15),
    "off-centre: 10 % of the side": warp(offset_fraction=0.1),
    "rotation: 25 deg": warp(angle_deg=25.0),
    "timing: cycle warp 0.6": time_warp(0.6),
}


class ShiftedDataset(Dataset):
    """`base` with `shift` applied to every cine sequence of each sample (LGE untouched: the release never reads it)."""

    def __init__(self, base: Dataset, shift: Shift, seed: int) -> None:
        self.base, self.shift, self.seed = base, shift, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.base[index])
        rng = np.random.default_rng([self.seed, index])
        for seq in CINE_SEQUENCES:
            sample[seq] = self.shift(sample[seq].float(), rng)
        return sample


def shift_aucs(release_dir: Path, test_dir: Path, seed: int) -> dict[str, float]:
    """Test AUC of the release at `release_dir` on the test cache at `test_dir`, per entry of `SHIFTS`."""
    from cccmr_model.data import CachedDataset
    from cccmr_model.engine.evaluate import evaluate_model
    from cccmr_model.metrics import roc_auc
    from cccmr_model.release import load_release

    release = load_release(release_dir)
    config, state = release.config, release.model.state_dict()
    test = CachedDataset(test_dir, data_config=config.data)
    aucs = {}
    for name, shift in SHIFTS.items():
        result = evaluate_model(state, ShiftedDataset(test, shift, seed), config, "cpu")
        aucs[name] = roc_auc(result.scores[:, 1], result.labels)
    return aucs


def table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    """Markdown: one row per shift, per run the AUC of each seed, the mean and the mean drop from 'none'."""
    runs = list(results)
    head = "| shift | " + " | ".join(f"{run}: AUC per seed, mean (drop)" for run in runs) + " |"
    lines = [head, "|---|" + "---|" * len(runs)]
    for name in SHIFTS:
        cells = []
        for run in runs:
            per_seed = [results[run][seed][name] for seed in sorted(results[run])]
            base = [results[run][seed]["none"] for seed in sorted(results[run])]
            mean, drop = float(np.mean(per_seed)), float(np.mean(per_seed) - np.mean(base))
            cells.append(f"{' / '.join(f'{a:.3f}' for a in per_seed)}, {mean:.3f} ({drop:+.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = release_benchmark_parser(__doc__, several_runs=True).parse_args(argv)
    results: dict[str, dict[int, dict[str, float]]] = {run: {} for run in args.runs}
    for seed in args.seeds:
        seed_dir = args.ablation / f"seed-{seed}"
        for run in args.runs:
            results[run][seed] = shift_aucs(seed_dir / run / "release", seed_dir / "cache" / "test" / "test", seed)
            print(f"seed {seed} {run}: " + ", ".join(f"{k} {v:.3f}" for k, v in results[run][seed].items()), flush=True)
    write_report(args.ablation, "shift-robustness", table(results), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
