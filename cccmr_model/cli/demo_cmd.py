"""`cccmr demo`: the whole system on one machine (phantom sites, Flower simulation, release, report)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

HELP = "run the whole system on this machine: phantom hospitals, federated training on Flower, release, report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: %(default)s)")
    parser.add_argument("--sites", type=int, default=2, help="simulated hospitals (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smaller cohort and schedule (about 3 minutes)")
    parser.add_argument("--seed", type=int, default=0, help="cohort and training seed (default: %(default)s)")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace) -> int:
    from cccmr_model.demo.run import DemoOptions, run_demo

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:  # SIGTERM/SIGHUP unwind like Ctrl-C, so the local SuperLink and its workers are always stopped
        result = run_demo(DemoOptions(out=args.out, sites=args.sites, quick=args.quick, seed=args.seed))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"report:           {result.report}")
    print(f"report (HTML):    {result.html}")
    print(f"release:          {result.release}")
    print(f"baseline release: {result.baseline_release}")
    print(f"wall time:        {result.seconds:.0f} s")
    return 0
