"""`cccmr ablation`: the five rows of the paper's Table 2 (`cccmr_model.engine.ablation`), trained on the same data
and scored on the same test set; writes ablation.md, ablation.json and Fig. 3."""

from __future__ import annotations

import argparse
from pathlib import Path

from cccmr_model.cli import add_config_arguments, add_manifest_arguments, central_training_setup

HELP = "Table 2: 4CH only, SAX only, fused w/o FIM, FIM w/o U-A, FIM w U-A, on one split, one table with CIs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--data", required=True, nargs="+", type=Path, help="training site root(s)")
    parser.add_argument("--test", required=True, nargs="+", type=Path, help="test site root(s)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--cache", type=Path, help="ingestion cache root (default OUT/cache)")
    parser.add_argument("--device", help="cpu | cuda | cuda:N (default: the config's train.device)")
    parser.add_argument("--no-tsne", action="store_true", help="skip Fig. 3")
    parser.add_argument(
        "--train-split",
        action="store_true",
        help="train on each site's training part only (data.val_fraction held out per site, the subjects a "
        "federated site trains on), so central and federated runs see the same training subjects",
    )
    add_manifest_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cccmr_model.engine.ablation import run_ablation

    config, cache = central_training_setup(args)
    result = run_ablation(
        args.data, args.test, args.out, config, cache=cache, device=args.device, train_split=args.train_split,
        tsne=not args.no_tsne, allow_outside_paths=args.allow_outside_paths,
    )  # fmt: skip
    print(result.table)
    if result.tsne is not None:
        print(f"t-SNE: {result.tsne}")
    return 0
