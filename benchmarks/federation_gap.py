"""Why federated pretraining ends below central pretraining: the same phase under controlled variants.

`python benchmarks/federation_gap.py --out DIR [--seeds 0 1 2] [--variants central sliced fedavg ...]`

Table 2 on the phantom (`benchmarks/phantom_ablation.py`) shows the heads that end on pretraining 2-4 points of
test AUC below central training with the same patients and epochs. This benchmark trains only the pretraining
phase of the tiny config on one phantom cohort per seed (the benchmark's: 2 sites x 48 subjects, 48 test subjects,
each site's validation fifth held out), in-process and without Flower, with the exact calls a site makes
(`train_phase` with the round's `lr_window` and seed, FedAvg weighted by `num-examples`), and scores the 4CH, SAX
and LGE heads on the test set. A variant is a base and optional modifiers, each changing one thing, joined by
`-` (`fedavg-srvlr2-wu20`):

- `central`: one call over the pooled training subjects, 15 epochs (what `cccmr ablation --train-split` does);
- `sliced`: the pooled subjects, but as 5 calls of 3 epochs, each with a fresh optimizer and its slice of the
  schedule: a federation of one site (the round mechanics without averaging);
- `fedavg`: 2 sites, 5 rounds x 3 local epochs, FedAvg (what the federation does);
- `srvlr<K>` (fedavg): the server's step scaled, global += K x (average - global) (`federation.server_lr`,
  FedOpt's server learning rate, Reddi et al. 2021);
- `mom<B>` (fedavg): server momentum B (FedAvgM, Hsu et al. 2019);
- `<R>x<E>`: R rounds x E local epochs instead of 5 x 3 (central: one call of R x E epochs);
- `lr<K>`: the learning rate K times `train.lr`;
- `bs<N>`: batch size N (`train.batch_size`; `central-bs16` takes as many optimizer steps as one site does);
- `wu<N>`: N warm-up steps (`train.warmup_steps`).

Writes `DIR/federation-gap.md` and `.json` (per seed and variant: each head's test AUC, the wall time); a variant
already in `DIR/seed-S/federation-gap.json` is taken from there, so later calls add variants to one table.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.phantom_ablation import BENCH, head_scores  # noqa: E402
from cccmr_model.demo.plan import site_names  # noqa: E402
from cccmr_model.metrics import binary_auc, json_safe  # noqa: E402
from cccmr_model.sequences import CINE_4CH, CINE_SAX, LGE_SAX  # noqa: E402

log = logging.getLogger("federation_gap")

PHASE = "pretrain"
ROUNDS, LOCAL_EPOCHS = 5, 3  # the schedule of the table in benchmarks/README.md; the demo now pretrains 8 x 3 (`-8x3`)
HEADS = (CINE_4CH, CINE_SAX, LGE_SAX)
VARIANTS = ("central", "central-bs16", "sliced", "fedavg", "fedavg-srvlr2", "fedavg-lr2", "fedavg-15x1")
BASES = ("central", "sliced", "fedavg")


@dataclass(frozen=True)
class Variant:
    """One variant's settings (see the module docstring); the defaults are the benchmark's federation."""

    base: str
    server_lr: float = 1.0
    momentum: float = 0.0
    rounds: int = ROUNDS
    local_epochs: int = LOCAL_EPOCHS
    lr_factor: float = 1.0
    batch_size: int | None = None  # None: the config's
    warmup_steps: int | None = None


# Modifier prefix -> (Variant field, number type, bases it applies to). "srvlr" is tried before "lr".
MODIFIERS: dict[str, tuple[str, type, tuple[str, ...]]] = {
    "srvlr": ("server_lr", float, ("fedavg",)),
    "mom": ("momentum", float, ("fedavg",)),
    "lr": ("lr_factor", float, BASES),
    "bs": ("batch_size", int, BASES),
    "wu": ("warmup_steps", int, BASES),
}
SCHEDULE = re.compile(r"(\d+)x(\d+)")


def parse_variant(name: str) -> Variant:
    """The settings of a variant name such as `fedavg-srvlr2-wu20`; ValueError for anything else."""
    base, *parts = name.split("-")
    if base not in BASES:
        raise ValueError(f"unknown variant {name!r}: it must start with one of {', '.join(BASES)}")
    changes: dict[str, Any] = {}
    for part in parts:
        schedule = SCHEDULE.fullmatch(part)
        if schedule and int(schedule[1]) > 0 and int(schedule[2]) > 0:
            changes.update(rounds=int(schedule[1]), local_epochs=int(schedule[2]))
            continue
        prefix = next((p for p in MODIFIERS if part.startswith(p)), None)
        if prefix is None or base not in MODIFIERS[prefix][2]:
            raise ValueError(f"unknown variant {name!r}: {part!r} does not apply to {base}")
        field, kind, _ = MODIFIERS[prefix]
        try:
            value = kind(part.removeprefix(prefix))
        except ValueError:
            raise ValueError(f"unknown variant {name!r}: {part!r} needs a number after {prefix}") from None
        if value < 0 or (value == 0 and field != "warmup_steps"):
            raise ValueError(f"unknown variant {name!r}: {part!r} is out of range")
        changes[field] = value
    return Variant(base, **changes)


def cohort(seed_dir: Path, seed: int, names: Sequence[str]) -> None:
    """The phantom cohort of `seed` in `seed_dir/data` (kept when it is there already)."""
    from cccmr_model.demo.run import DemoOptions, _phantom

    if not (seed_dir / "data" / "test").is_dir():
        _phantom(seed_dir / "data", list(names), BENCH, DemoOptions(out=seed_dir, seed=seed))


def site_train_sets(seed_dir: Path, names: Sequence[str], config) -> list:
    """Each site's training subjects (its validation fifth held out as the federated site does)."""
    from cccmr_model.engine.central import ingest_sites, split_sites

    sites = ingest_sites([seed_dir / "data" / n for n in names], seed_dir / "cache" / "train", config)
    return [split_sites([site], config)[0] for site in sites]


def fedavg(
    global_state: dict, sites: Sequence, config, *, rounds: int = ROUNDS, local_epochs: int = LOCAL_EPOCHS,
    server_lr: float = 1.0, momentum: float = 0.0,
) -> dict:  # fmt: skip
    """`rounds` rounds of local `train_phase` at every site from the global model, then the weighted mean; the
    server step is `server_lr` x (mean - global), plus `momentum` x the previous step (FedAvgM, Hsu et al. 2019)."""
    from cccmr_model.engine import train_phase
    from cccmr_model.model import phase_state

    state = dict(global_state)
    velocity: dict = {}
    for k in range(1, rounds + 1):
        window = ((k - 1) / rounds, k / rounds)
        updates, weights = [], []
        for data in sites:
            result = train_phase(
                state, PHASE, data, config, epochs=local_epochs, lr_window=window, seed=config.seed + k - 1
            )
            updates.append(phase_state(result.state, PHASE))
            weights.append(float(result.num_examples))
        total = sum(weights)
        for name in updates[0]:
            mean = sum(w * u[name].double() for w, u in zip(weights, updates, strict=True)) / total
            old = state[name].double()
            velocity[name] = server_lr * (mean - old) + momentum * velocity.get(name, 0.0)
            state[name] = (old + velocity[name]).to(state[name].dtype)
        log.info("round %d/%d done", k, rounds)
    return state


def with_train(config, **changes):
    """`config` with `changes` to its train section."""
    import dataclasses

    return dataclasses.replace(config, train=dataclasses.replace(config.train, **changes))


def train_variant(variant: str, sites: Sequence, pooled, config) -> dict:
    """The pretraining phase's final weights under `variant` (see the module docstring)."""
    import torch

    from cccmr_model.engine import train_phase
    from server.app import initial_state

    settings = parse_variant(variant)
    start = {k: torch.from_numpy(v.copy()) for k, v in initial_state(config).items()}
    config = with_train(
        config,
        lr=settings.lr_factor * config.train.lr,
        batch_size=settings.batch_size or config.train.batch_size,
        warmup_steps=config.train.warmup_steps if settings.warmup_steps is None else settings.warmup_steps,
    )
    if settings.base == "central":
        epochs = settings.rounds * settings.local_epochs
        return train_phase(start, PHASE, pooled, config, epochs=epochs, seed=config.seed).state
    return fedavg(
        start, [pooled] if settings.base == "sliced" else sites, config, rounds=settings.rounds,
        local_epochs=settings.local_epochs, server_lr=settings.server_lr, momentum=settings.momentum,
    )  # fmt: skip


def variant_name(text: str) -> str:
    """argparse type: a variant name that `parse_variant` reads."""
    try:
        parse_variant(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error}; for example {', '.join(VARIANTS)}") from None
    return text


def head_aucs(state: Mapping[str, Any], test_set, config) -> dict[str, float]:
    """Test AUC of each sequence head."""
    out = {}
    for head in HEADS:
        scores, labels = head_scores(state, test_set, config, head)
        out[head] = float(binary_auc(scores[:, 1], labels))
    return out


def run_seed(out: Path, seed: int, variants: Sequence[str], extra: Sequence[str]) -> dict[str, dict[str, float]]:
    from cccmr_model.config import load_config
    from cccmr_model.demo.evaluate import open_test_set
    from cccmr_model.engine.datasets import PooledDataset

    names = site_names(2)
    seed_dir = out / f"seed-{seed}"
    cohort(seed_dir, seed, names)
    items = [f"seed={seed}", f"train.resample_factor={BENCH.resample_factor}", *extra]
    config = load_config("tiny", items)
    sites = site_train_sets(seed_dir, names, config)
    pooled = PooledDataset(list(sites))
    test_set, _ = open_test_set(seed_dir / "data" / "test", seed_dir / "cache" / "test" / "test", config)
    kept = seed_dir / "federation-gap.json"
    rows = json.loads(kept.read_text()) if kept.is_file() else {}  # variants run before on this cohort are kept
    for variant in (v for v in variants if v not in rows):
        started = time.perf_counter()
        state = train_variant(variant, sites, pooled, config)
        rows[variant] = {**head_aucs(state, test_set, config), "seconds": round(time.perf_counter() - started, 1)}
        log.info("seed %d %s: %s", seed, variant, rows[variant])
        kept.write_text(json.dumps(json_safe(rows), indent=1) + "\n")
    return rows


def render(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]], variants: Sequence[str]) -> str:
    lines = ["# Federated vs central pretraining: test AUC per head (mean ± SD over seeds; per seed)", ""]
    header = ["variant", *HEADS, "minus central (4CH / SAX / LGE)", "s per seed"]
    rows = []
    for variant in variants:
        cells = [variant]
        for head in HEADS:
            values = [per_seed[s][variant][head] for s in per_seed]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")
        if all("central" in per_seed[s] for s in per_seed):
            diffs = [np.mean([per_seed[s][variant][h] - per_seed[s]["central"][h] for s in per_seed]) for h in HEADS]
            cells.append(" / ".join(f"{d:+.3f}" for d in diffs))
        else:
            cells.append("n/a")
        cells.append(f"{np.mean([per_seed[s][variant]['seconds'] for s in per_seed]):.0f}")
        rows.append(cells)
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", type=variant_name, default=list(VARIANTS), help=", ".join(VARIANTS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value config override")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    per_seed = {seed: run_seed(args.out, seed, args.variants, args.overrides) for seed in args.seeds}
    (args.out / "federation-gap.json").write_text(json.dumps(json_safe(per_seed), indent=1) + "\n")
    shown = [v for v in per_seed[args.seeds[0]] if all(v in rows for rows in per_seed.values())]
    (args.out / "federation-gap.md").write_text(render(per_seed, shown))
    print((args.out / "federation-gap.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
