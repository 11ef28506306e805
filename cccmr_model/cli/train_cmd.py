"""`cccmr train`: the three phases centrally on one or more sites' data (`engine.central.train_centrally`);
writes a release and its validation metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from cccmr_model.cli import add_config_arguments, add_manifest_arguments, central_training_setup

HELP = "train all three phases centrally on pooled site data and write a release with validation metrics"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--data", required=True, nargs="+", type=Path, help="site data root(s) with manifest.csv")
    parser.add_argument("--out", required=True, type=Path, help="output folder (release/, checkpoints/, metrics)")
    parser.add_argument("--cache", type=Path, help="ingestion cache root (default OUT/cache)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: the config's train.device)")
    parser.add_argument("--workers", type=int, default=1, help="ingestion worker processes (default 1)")
    parser.add_argument("--tsne", action="store_true", help="also write Fig. 3 (t-SNE before/after phase 2)")
    add_manifest_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cccmr_model.engine.central import train_centrally

    config, cache = central_training_setup(args)
    result = train_centrally(
        args.data, args.out, config, cache=cache, device=args.device, workers=args.workers, tsne=args.tsne,
        allow_outside_paths=args.allow_outside_paths,
    )  # fmt: skip
    if result.table is not None:
        print(result.table)
    if result.tsne is not None:
        print(f"t-SNE: {result.tsne}")
    print(f"release: {result.release}")
    return 0
