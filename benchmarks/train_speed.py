"""Training throughput per phase (samples/s) on a synthetic cohort.

`run(quick)` measures the tiny config on the CPU (and, when a GPU is present and not `quick`, the default config on
it). Standalone: `python -m benchmarks.train_speed [--config default --device cuda] [--subjects N] [--epochs E]`.
Fusion throughput counts the MLP epochs only; its one-off feature caching is reported separately.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from cccmr_model.config import PHASES, load_config
from cccmr_model.engine import train_phase

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: ours, not the `benchmarks` opacus installs
    sys.path.insert(0, str(ROOT))

from benchmarks.support.synthetic import SyntheticCohort  # noqa: E402


def measure(
    config_name: str, device: str, subjects: int, epochs: int, overrides: list[str] | None = None
) -> list[dict]:
    config = load_config(config_name, overrides or [])
    cohort = SyntheticCohort(subjects, config.data, seed=0)
    rows, state = [], None
    for phase in PHASES:
        start = time.perf_counter()
        result = train_phase(state, phase, cohort, config, epochs=epochs, device=device, seed=0)
        wall = time.perf_counter() - start
        state = result.state
        rows.append(
            {
                "benchmark": "train_speed",
                "metric": f"{phase} samples/s",
                "value": result.metrics["samples_per_s"],
                "unit": "samples/s",
                "config": config.name,
                "device": device,
                "subjects": subjects,
                "epochs": epochs,
                "batch": config.train.batch_size,
                "threads": torch.get_num_threads(),
                "samples": result.num_examples,
                "wall_s": round(wall, 2),  # includes model build, loading and (fusion) feature caching
            }
        )
    return rows


def run(quick: bool) -> list[dict]:
    rows = measure("tiny", "cpu", subjects=8 if quick else 16, epochs=1)
    if torch.cuda.is_available() and not quick:
        rows += measure("default", "cuda", subjects=32, epochs=2)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", help="config name or path (default: tiny on cpu, default on cuda)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--subjects", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = args.config or ("default" if args.device.startswith("cuda") else "tiny")
    for row in measure(config, args.device, args.subjects, args.epochs, args.overrides):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
