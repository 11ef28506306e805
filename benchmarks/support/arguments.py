"""The command line shared by the benchmarks that score the releases of a finished `phantom_ablation.py` folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def release_benchmark_parser(description: str | None, *, several_runs: bool = False) -> argparse.ArgumentParser:
    """`--ablation DIR`, `--seeds` (0 1 2) and `--run` (one run's release, fim-ua) or, with `several_runs`, `--runs`."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ablation", required=True, type=Path, help="a finished phantom_ablation.py --out folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    if several_runs:
        parser.add_argument("--runs", nargs="+", default=["fim-ua"], help="runs whose release to score")
    else:
        parser.add_argument("--run", default="fim-ua", help="the run whose release to score")
    return parser
