"""`cccmr ablation`: the five rows of the paper's Table 2, trained on the same data and scored on the same test set.

Phase 1 (single-sequence pretraining) is shared: rows 1 and 2 score the 4CH and SAX cine encoders through their
own heads; row 3 trains the fusion MLP directly on the pretrained encoders (no FIM); rows 4 and 5 run the FIM
with fixed weights (w/o U-A) or learnable uncertainties (w U-A), then the fusion. Writes ablation.md (one table
with CIs), ablation.json and Fig. 3 (t-SNE before/after the FIM of row 5).
"""

from __future__ import annotations

import argparse
import dataclasses
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

HELP = "Table 2: 4CH only, SAX only, fused w/o FIM, FIM w/o U-A, FIM w U-A, on one split, one table with CIs"

log = logging.getLogger("cccmr.ablation")
MARK_COLUMNS = ("4CH cine", "SAX cine", "FIM w/o U-A", "FIM w U-A")
ROWS = {  # row name -> Table 2 check marks
    "4CH cine only": ("✓", "", "", ""),
    "SAX cine only": ("", "✓", "", ""),
    "4CH + SAX fused": ("✓", "✓", "", ""),
    "FIM w/o U-A": ("✓", "✓", "✓", ""),
    "FIM w U-A": ("✓", "✓", "", "✓"),
}


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
    from cccmr_model.engine import evaluate_model
    from cccmr_model.engine.central import ingest_sites, pool, split_sites, train_phases
    from cccmr_model.metrics import json_safe, markdown_table, report

    config = load_config(args.config, args.overrides)
    refuse_unapplied_privacy(config, args, "trains centrally on pooled data")
    device = args.device or config.train.device
    out: Path = args.out
    cache = args.cache or out / "cache"
    check_writable_folder(out, "--out")
    check_writable_folder(cache, "--cache")
    outside = args.allow_outside_paths
    sites = ingest_sites(args.data, cache / "train", config, allow_outside_paths=outside)
    train_set = split_sites(sites, config)[0] if getattr(args, "train_split", False) else pool(sites)
    test_set = pool(ingest_sites(args.test, cache / "test", config, allow_outside_paths=outside))
    ckpt = out / "checkpoints"

    def score(state, cfg, source="fusion"):
        result = evaluate_model(state, test_set, cfg, device, source=source)
        return {**report(cfg.task, result.scores, result.labels, config.evaluation), "loss": result.loss}

    pre = train_phases(train_set, config, phases=("pretrain",), device=device, checkpoint_dir=ckpt / "pretrain")
    pre_state = pre["pretrain"].state
    reports = {
        "4CH cine only": score(pre_state, config, "cine_4ch"),
        "SAX cine only": score(pre_state, config, "cine_sax"),
    }
    fused = train_phases(
        train_set, config, phases=("fusion",), state=pre_state, device=device, checkpoint_dir=ckpt / "fused"
    )
    reports["4CH + SAX fused"] = score(fused["fusion"].state, config)
    fixed = dataclasses.replace(config, train=dataclasses.replace(config.train, uncertainty_weighting=False))
    fixed_start = {k: v for k, v in pre_state.items() if not k.startswith("uncertainty.")}  # no sigmas to load
    row4 = train_phases(
        train_set, fixed, phases=("fim", "fusion"), state=fixed_start, device=device, checkpoint_dir=ckpt / "fim-fixed"
    )
    reports["FIM w/o U-A"] = score(row4["fusion"].state, fixed)
    row5 = train_phases(
        train_set, config, phases=("fim", "fusion"), state=pre_state, device=device, checkpoint_dir=ckpt / "fim-ua"
    )
    reports["FIM w U-A"] = score(row5["fusion"].state, config)

    table = markdown_table(reports, first_column="Row", leading=ROWS, leading_columns=MARK_COLUMNS)
    (out / "ablation.md").write_text("Table 2: ablation on input sequences and model components\n\n" + table)
    (out / "ablation.json").write_text(json.dumps(json_safe(reports), indent=2, allow_nan=False) + "\n")
    print(table)
    if not args.no_tsne:
        from cccmr_model.tsne import write_fig3

        path = write_fig3(pre_state, row5["fim"].state, test_set, config, out / "fig3_tsne.png", device)
        print(f"t-SNE: {path}")
    return 0
