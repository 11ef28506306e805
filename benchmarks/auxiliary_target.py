"""Does an auxiliary target help the cine encoders? A blood-pool area curve regressed from each cine's features.

`python benchmarks/auxiliary_target.py --out DIR [--seeds 0 1 2] [--weight 0.5] [--shape]`

Issue 15 names auxiliary targets as one way to give a network trained from scratch on ~100 subjects a stronger
prior. The one measured here needs no label and no phantom truth, so a site could compute it on any cohort: the
fraction of bright (blood, z > 1) pixels inside a central disc of each frame of the heart-centred cine, the area
curve whose range is the ejection-fraction proxy of `phantom_ceiling.py`'s image features (SAX disc 0.3, 4CH 0.4
of the image side). During pretraining a linear layer per cine sequence regresses the curve (T values, standardised
over the batch; `--shape`: each curve divided by its maximum first, so only its shape counts) from the pooled
encoder features, and `--weight` x its mean squared error joins the three focal terms.

It is an experiment, not a feature: the layers are attached for this process only (`auxiliary_target_patch`), and
the rest is `federation_gap.py`'s `central` variant on its cohorts (pooled training subjects, 15 epochs, test AUC
of the 4CH, SAX and LGE heads), so its rows compare with that table's `central` row. Writes
`DIR/auxiliary-target.md` and `.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.federation_gap import BENCH, HEADS, cohort, head_aucs, site_train_sets, train_variant  # noqa: E402
from benchmarks.phantom_ceiling import BLOOD_Z, DISC  # noqa: E402  (the image features' disc and blood level)

log = logging.getLogger("cccmr.bench.auxiliary")


def area_curve(clip: Tensor, radius: float) -> Tensor:
    """(B, C, T, H, W) z-scored cine -> (B, T): fraction of the central disc's pixels above BLOOD_Z, mean over C."""
    h, w = clip.shape[-2:]
    rows = torch.arange(h, device=clip.device).view(-1, 1) - (h - 1) / 2
    cols = torch.arange(w, device=clip.device).view(1, -1) - (w - 1) / 2
    disc = rows**2 + cols**2 <= (radius * min(h, w)) ** 2  # H, W
    bright = (clip > BLOOD_Z) & disc
    return bright.float().sum((-2, -1)).mean(1) / disc.sum()  # B, T


def auxiliary_term(features: Tensor, clip: Tensor, layer: nn.Module, radius: float, shape: bool) -> Tensor:
    """Mean squared error of `layer(features)` (B, T) against the standardised area curve of `clip`."""
    target = area_curve(clip.float(), radius)  # B, T
    if shape:
        target = target / target.amax(1, keepdim=True).clamp_min(1e-3)
    target = (target - target.mean()) / (target.std() + 1e-3)
    return F.mse_loss(layer(features).float(), target)


@contextlib.contextmanager
def auxiliary_target_patch(weight: float, frames: int, *, shape: bool) -> Iterator[None]:
    """For the duration: every CCCMRModel gets `aux.<cine>` linear layers (trained with the pretraining groups),
    and the encoder runner's pretraining loss gets `weight` x the auxiliary terms (logged as `aux:<cine>`)."""
    from cccmr_model import model as model_module
    from cccmr_model.engine import runners

    model_class, runner_class = model_module.CCCMRModel, runners.EncoderRunner
    saved = model_class.__init__, model_class.forward, runner_class.loss, dict(model_module.PHASE_GROUPS)
    init, forward, loss = saved[:3]

    def patched_init(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.aux = nn.ModuleDict({seq: nn.Linear(self.num_features, frames) for seq in DISC})

    def patched_forward(self, batch):
        output = forward(self, batch)
        self.last_features = output.features  # seq -> B, D, read by the loss below
        return output

    def patched_loss(self, batch):
        out = loss(self, batch)
        if self.phase != "pretrain":
            return out
        terms, total = dict(out.terms), out.loss
        for seq, radius in DISC.items():
            term = auxiliary_term(self.model.last_features[seq], batch[seq], self.model.aux[seq], radius, shape)
            terms[f"aux:{seq}"] = term
            total = total + weight * term
        return runners.StepOutput(total, terms, out.heads)

    model_class.__init__, model_class.forward, runner_class.loss = patched_init, patched_forward, patched_loss
    model_module.PHASE_GROUPS["pretrain"] = (*saved[3]["pretrain"], "aux.")
    try:
        yield
    finally:
        model_class.__init__, model_class.forward, runner_class.loss = init, forward, loss
        model_module.PHASE_GROUPS.clear()
        model_module.PHASE_GROUPS.update(saved[3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--weight", type=float, default=0.5, help="weight of the auxiliary terms (default 0.5)")
    parser.add_argument("--shape", action="store_true", help="regress each curve divided by its maximum")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    name = f"central-aux{'shape' if args.shape else ''}{args.weight:g}"
    per_seed = {}
    for seed in args.seeds:
        per_seed[seed] = train_and_score(args.out / f"seed-{seed}", seed, args.weight, args.shape)
        log.info("seed %d %s: %s", seed, name, per_seed[seed])
    lines = [f"# {name}: test AUC per head (mean ± SD over seeds; per seed)", "", "| head | AUC |", "|---|---|"]
    for head in HEADS:
        values = [per_seed[s][head] for s in per_seed]
        lines.append(
            f"| {head} | {np.mean(values):.3f} ± {np.std(values):.3f} ({', '.join(f'{v:.3f}' for v in values)}) |"
        )
    (args.out / "auxiliary-target.md").write_text("\n".join(lines) + "\n")
    (args.out / "auxiliary-target.json").write_text(json.dumps({name: per_seed}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


def train_and_score(seed_dir: Path, seed: int, weight: float, shape: bool) -> dict[str, float]:
    """federation_gap's `central` variant with the auxiliary target on the seed's cohort (made when missing): test
    AUC per head (the auxiliary layers left out) and the wall time."""
    from cccmr_model.config import load_config
    from cccmr_model.demo.evaluate import open_test_set
    from cccmr_model.demo.plan import site_names
    from cccmr_model.engine.datasets import PooledDataset

    config = load_config("tiny", [f"seed={seed}", f"train.resample_factor={BENCH.resample_factor}"])
    cohort(seed_dir, seed, site_names(2))
    sites = site_train_sets(seed_dir, site_names(2), config)
    test_set, _ = open_test_set(seed_dir / "data" / "test", seed_dir / "cache" / "test" / "test", config)
    started = time.perf_counter()
    with auxiliary_target_patch(weight, config.data.frames, shape=shape):
        state = train_variant("central", sites, PooledDataset(list(sites)), config)
    state = {key: value for key, value in state.items() if not key.startswith("aux.")}
    return {**head_aucs(state, test_set, config), "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    raise SystemExit(main())
