"""`cccmr evaluate`: a release's metrics with bootstrap confidence intervals on one or more sites' data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

from cccmr_model.cli import add_manifest_arguments, check_writable_folder
from cccmr_model.errors import CccmrError

MIN_RESAMPLES = 10  # as evaluation.bootstrap_resamples
HELP = "evaluate a release on site data: metrics with bootstrap confidence intervals, as JSON and Markdown"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", required=True, type=Path, help="release folder (from cccmr train or the server)")
    parser.add_argument("--data", required=True, nargs="+", type=Path, help="site data root(s) with manifest.csv")
    parser.add_argument("--out", type=Path, help="folder for evaluation.json and evaluation.md (default: stdout only)")
    parser.add_argument("--cache", type=Path, help="ingestion cache root (default OUT/cache, or a temporary folder)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto (default cpu)")
    parser.add_argument("--resamples", type=int, help="bootstrap resamples (default: the release config's)")
    parser.add_argument("--seed", type=int, help="bootstrap seed (default: the release config's)")
    parser.add_argument("--name", default="CC-CMR", help="row name in the Markdown table")
    add_manifest_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cccmr_model.engine import evaluate_model
    from cccmr_model.engine.central import ingest_sites, pool
    from cccmr_model.metrics import json_safe, markdown_table, report
    from cccmr_model.release import load_release

    if args.resamples is not None and args.resamples < MIN_RESAMPLES:
        raise CccmrError(f"--resamples {args.resamples}: must be at least {MIN_RESAMPLES}")
    if args.out is not None:
        check_writable_folder(args.out, "--out")
    if args.cache is not None:
        check_writable_folder(args.cache, "--cache")
    release = load_release(args.release)
    config = release.config
    state = release.model.state_dict()
    with tempfile.TemporaryDirectory(prefix="cccmr-eval-") as tmp:
        cache = args.cache or (args.out / "cache" if args.out else Path(tmp))
        sites = ingest_sites(args.data, cache, config, allow_outside_paths=args.allow_outside_paths)
        evaluated = evaluate_model(state, pool(sites), config, args.device)
    ev = config.evaluation
    ev = dataclasses.replace(
        ev,
        bootstrap_resamples=ev.bootstrap_resamples if args.resamples is None else args.resamples,
        seed=ev.seed if args.seed is None else args.seed,
    )  # --resamples / --seed override the release's settings
    result = report(config.task, evaluated.scores, evaluated.labels, ev)
    result["loss"] = evaluated.loss
    result["release"] = {"path": str(args.release), "content_hash": release.content_hash}
    result["sites"] = [site.name for site in sites]
    table = markdown_table({args.name: result})
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "evaluation.json").write_text(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
        (args.out / "evaluation.md").write_text(table)
        print(f"written: {args.out / 'evaluation.json'}, {args.out / 'evaluation.md'}")
    return 0
