"""`cccmr train`: the three phases centrally on one or more sites' data; writes a release and its metrics."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from cccmr_model.cli import (
    add_config_arguments,
    add_manifest_arguments,
    check_writable_folder,
    refuse_unapplied_privacy,
)
from cccmr_model.config import load_config

HELP = "train all three phases centrally on pooled site data and write a release with validation metrics"

log = logging.getLogger("cccmr.train")


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
    from cccmr_model.engine import evaluate_model
    from cccmr_model.engine.central import ingest_sites, split_sites, train_phases, write_training_output
    from cccmr_model.metrics import json_safe, markdown_table, report

    config = load_config(args.config, args.overrides)
    refuse_unapplied_privacy(config, args, "trains centrally on pooled data")
    device = args.device or config.train.device
    out: Path = args.out
    check_writable_folder(out, "--out")
    cache = args.cache or out / "cache"
    check_writable_folder(cache, "--cache")
    sites = ingest_sites(args.data, cache, config, args.workers, allow_outside_paths=args.allow_outside_paths)
    train_set, val_set, site_summary = split_sites(sites, config)
    results = train_phases(train_set, config, device=device, checkpoint_dir=out / "checkpoints")
    state = results["fusion"].state

    metrics: dict = {}
    if val_set is not None:
        evaluated = evaluate_model(state, val_set, config, device)
        metrics["validation"] = report(config.task, evaluated.scores, evaluated.labels, config.evaluation)
        metrics["validation"]["loss"] = evaluated.loss
        (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n")
        table = markdown_table({"CC-CMR (validation)": metrics["validation"]})
        (out / "metrics.md").write_text(table)
        print(table)
    else:
        log.warning("data.val_fraction is 0: no validation metrics")
    if args.tsne and val_set is not None:
        from cccmr_model.tsne import write_fig3

        path = write_fig3(
            results["pretrain"].state, results["fim"].state, val_set, config, out / "fig3_tsne.png", device
        )
        print(f"t-SNE: {path}")

    training_info = {
        "mode": "central",
        "sites": site_summary,
        "phases": {
            phase: {"epochs": config.train.phases[phase].epochs, "num_examples": r.num_examples, **r.metrics}
            for phase, r in results.items()
        },
    }
    release = write_training_output(out, state=state, config=config, metrics=metrics, training_info=training_info)
    print(f"release: {release}")
    return 0
