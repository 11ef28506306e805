"""The paper's Table 2: five rows trained on the same data and scored on the same test set.

Phase 1 (single-sequence pretraining) is shared: rows 1 and 2 score the 4CH and SAX cine encoders through their
own heads; row 3 trains the fusion MLP directly on the pretrained encoders (no FIM); rows 4 and 5 run the FIM
with fixed weights (w/o U-A) or learnable uncertainties (w U-A), then the fusion. `ablate` runs the recipe on two
datasets; `run_ablation` is `cccmr ablation`: ingest, ablate, write ablation.md (one table with CIs),
ablation.json and Fig. 3 (t-SNE before/after the FIM of row 5).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.engine.central import ingest_sites, pool, split_sites, train_phases
from cccmr_model.engine.evaluate import evaluate_model
from cccmr_model.metrics import json_safe, markdown_table

log = logging.getLogger(__name__)

MARK_COLUMNS = ("4CH cine", "SAX cine", "FIM w/o U-A", "FIM w U-A")
ROWS = {  # row name -> Table 2 check marks
    "4CH cine only": ("✓", "", "", ""),
    "SAX cine only": ("", "✓", "", ""),
    "4CH + SAX fused": ("✓", "✓", "", ""),
    "FIM w/o U-A": ("✓", "✓", "✓", ""),
    "FIM w U-A": ("✓", "✓", "", "✓"),
}
TITLE = "Table 2: ablation on input sequences and model components"


@dataclass
class Ablation:
    reports: dict[str, dict[str, Any]]  # row name -> test report with CIs and loss, in ROWS order
    pretrain_state: dict[str, Tensor]  # after the shared phase 1 (Fig. 3, before)
    fim_state: dict[str, Tensor]  # row 5 after the FIM (Fig. 3, after)


@dataclass
class AblationOutput:
    table: str  # ablation.md's table
    tsne: Path | None  # Fig. 3, when asked for


def ablate(
    train_set: Dataset,
    test_set: Dataset,
    config: ExperimentConfig,
    *,
    checkpoint_dir: Path,
    device: str = "cpu",
) -> Ablation:
    """Train the five rows on `train_set` (checkpoints in `checkpoint_dir/<run>`) and score each on `test_set`."""
    ckpt = checkpoint_dir

    def score(state: dict[str, Tensor], cfg: ExperimentConfig, source: str = "fusion") -> dict[str, Any]:
        return evaluate_model(state, test_set, cfg, device, source=source).report(cfg)

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
    return Ablation(reports, pre_state, row5["fim"].state)


def ablation_table(reports: dict[str, dict[str, Any]]) -> str:
    """Table 2's layout: the check-mark columns, then every metric with its CI."""
    return markdown_table(reports, first_column="Row", leading=ROWS, leading_columns=MARK_COLUMNS)


def run_ablation(
    data: Sequence[Path],
    test: Sequence[Path],
    out: Path,
    config: ExperimentConfig,
    *,
    cache: Path | None = None,
    device: str | None = None,
    train_split: bool = False,
    tsne: bool = True,
    allow_outside_paths: bool = False,
) -> AblationOutput:
    """Ingest the training and test sites (cache default `out/cache`), ablate, write the table, JSON and Fig. 3.

    `train_split`: train on each site's training part only (`data.val_fraction` held out, the subjects a
    federated site trains on) instead of every subject. `allow_outside_paths`: manifest series paths may leave
    the data root.
    """
    device = device or config.train.device
    cache = cache or out / "cache"
    out.mkdir(parents=True, exist_ok=True)
    sites = ingest_sites(data, cache / "train", config, allow_outside_paths=allow_outside_paths)
    train_set = split_sites(sites, config)[0] if train_split else pool(sites)
    test_set = pool(ingest_sites(test, cache / "test", config, allow_outside_paths=allow_outside_paths))
    result = ablate(train_set, test_set, config, checkpoint_dir=out / "checkpoints", device=device)
    table = ablation_table(result.reports)
    (out / "ablation.md").write_text(f"{TITLE}\n\n{table}")
    (out / "ablation.json").write_text(json.dumps(json_safe(result.reports), indent=2, allow_nan=False) + "\n")
    figure = None
    if tsne:
        from cccmr_model.tsne import write_fig3

        figure = write_fig3(result.pretrain_state, result.fim_state, test_set, config, out / "fig3_tsne.png", device)
    return AblationOutput(table, figure)
