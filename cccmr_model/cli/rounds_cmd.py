"""`cccmr rounds`: a federated run's rounds, one line each, from its `history.jsonl`; `--follow` watches a run."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cccmr_model import run_folder
from cccmr_model.errors import CccmrError
from cccmr_model.rounds import round_line, round_warnings

HELP = "show a federated run's rounds (sites, losses, validation AUC per head, warnings); --follow watches it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="the run's run-dir (or its history.jsonl)")
    parser.add_argument("--follow", action="store_true", help="keep printing new rounds until the release is written")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between reads with --follow (default 5)")


def run(args: argparse.Namespace) -> int:
    from cccmr_model.release.files import MANIFEST_FILE  # the release package imports torch: not at `cccmr` start

    if args.interval <= 0:
        raise CccmrError(f"--interval {args.interval}: must be positive")
    history = args.run_dir if args.run_dir.suffix == ".jsonl" else run_folder.history_path(args.run_dir)
    release = history.parent / "release" / MANIFEST_FILE
    if not history.is_file() and not args.follow:
        raise CccmrError(f"{history}: no round history here (is {args.run_dir} the run's run-dir?)")
    shown = 0
    while True:  # Ctrl-C ends a --follow (the `cccmr` entry point turns it into exit code 130)
        released = release.is_file()  # before reading: the server writes the last round's line before the release
        records = _read(history)
        for record in records[shown:]:
            _show(record)
        shown = max(shown, len(records))
        if not args.follow:
            return 0
        if released:
            print(f"release written: {release.parent}", flush=True)
            return 0
        time.sleep(args.interval)


def _read(history: Path) -> list[dict]:
    try:
        return run_folder.read_history(history)
    except json.JSONDecodeError as err:
        raise CccmrError(f"{history}: not a round history (a line is not JSON: {err})") from None


def _show(record: dict) -> None:
    try:
        lines = [round_line(record), *(f"  ! {w}" for w in round_warnings(record))]
    except (KeyError, TypeError, AttributeError) as err:
        raise CccmrError(f"a history line is not a round record ({type(err).__name__}: {err})") from None
    print("\n".join(lines), flush=True)
