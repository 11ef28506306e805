"""Central (pooled) training: ingest sites, split each one, run the three phases, write the output.

`train_centrally` is `cccmr train`; the pieces are what it and `cccmr ablation` share. The federation runs the
same `train_phase` per site instead.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

from cccmr_model.config import PHASES
from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.engine.datasets import LabelledSubset, PooledDataset
from cccmr_model.engine.evaluate import evaluate_heads, evaluate_model
from cccmr_model.engine.train import PhaseResult, train_phase
from cccmr_model.errors import DataError
from cccmr_model.metrics import json_safe, markdown_table, roc_auc
from cccmr_model.model import PHASE_GROUPS
from cccmr_model.release import write_release
from cccmr_model.splits import split_site

log = logging.getLogger(__name__)


@dataclass
class Site:
    name: str
    dataset: Any  # CachedDataset


def site_names(roots: Sequence[Path]) -> list[str]:
    """A unique name per data root (its folder name, numbered when two roots share one)."""
    names: list[str] = []
    for root in roots:
        base = Path(root).resolve().name or "site"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def ingest_sites(
    roots: Sequence[Path],
    cache_root: Path,
    config: ExperimentConfig,
    workers: int = 1,
    allow_outside_paths: bool = False,
) -> list[Site]:
    """Ingest each data root into `cache_root/<site>` (reusing what is cached) and open it as a dataset."""
    from cccmr_model.data import CachedDataset, ingest_site

    sites = []
    for root, name in zip(roots, site_names(roots), strict=True):
        report = ingest_site(root, cache_root / name, config.data, workers, allow_outside_paths=allow_outside_paths)
        log.info(
            "site %s: %d subjects, %d usable (%d cine-only), %d rejected",
            name,
            report.subjects,
            len(report.usable),
            len(report.cine_only),
            len(report.rejected_subjects),
        )
        if not report.ok:
            raise DataError(f"{root}: no usable subjects (see {cache_root / name / 'ingest-report.json'})")
        sites.append(Site(name, CachedDataset(cache_root / name, data_config=config.data)))
    return sites


def split_sites(sites: Sequence[Site], config: ExperimentConfig) -> tuple[PooledDataset, PooledDataset | None, dict]:
    """Split each site as a federated site does (`split_site`) and pool the parts; also a per-site summary."""
    train_parts, val_parts, summary = [], [], {}
    for site in sites:
        train_idx, val_idx = split_site(site.dataset, config)
        train_parts.append(LabelledSubset(site.dataset, train_idx))
        if len(val_idx):
            val_parts.append(LabelledSubset(site.dataset, val_idx))
        summary[site.name] = {"subjects": len(site.dataset), "train": len(train_idx), "val": len(val_idx)}
    return PooledDataset(train_parts), (PooledDataset(val_parts) if val_parts else None), summary


def pool(sites: Sequence[Site]) -> PooledDataset:
    return PooledDataset([site.dataset for site in sites])


PhaseHook = Callable[[str, PhaseResult], None]


def train_phases(
    train_set: Any,
    config: ExperimentConfig,
    *,
    phases: Sequence[str] = PHASES,
    state: Mapping[str, Tensor] | None = None,
    device: str = "cpu",
    checkpoint_dir: Path | None = None,
    on_phase: PhaseHook | None = None,
) -> dict[str, PhaseResult]:
    """Run `phases` in order, each for its configured epochs, each from the previous phase's weights."""
    results: dict[str, PhaseResult] = {}
    for phase in phases:
        epochs = config.train.phases[phase].epochs
        log.info("phase %s: %d epochs on %d subjects", phase, epochs, len(train_set))
        result = train_phase(
            state,
            phase,
            train_set,
            config,
            epochs=epochs,
            device=device,
            seed=config.seed + PHASES.index(phase),
            checkpoint_dir=checkpoint_dir,
        )
        results[phase], state = result, result.state
        if on_phase is not None:
            on_phase(phase, result)
    return results


def head_validation(
    state: Mapping[str, Tensor], val_set: Dataset, config: ExperimentConfig, device: str
) -> dict[str, float]:
    """`val_auc:<seq>` of each sequence head of a phase's model on the validation parts (logged): the model card's
    evidence that every head learned more than its training subjects."""
    aucs = {}
    for seq, result in evaluate_heads(state, val_set, config, device).items():
        auc = roc_auc(result.scores, result.labels)
        if math.isfinite(auc):
            aucs[f"val_auc:{seq}"] = auc
    log.info("validation AUC per head: %s", ", ".join(f"{k.split(':')[1]} {v:.3f}" for k, v in aucs.items()))
    return aucs


@dataclass
class CentralTraining:
    release: Path  # the release folder
    table: str | None  # metrics.md's validation table (None: data.val_fraction is 0)
    tsne: Path | None  # Fig. 3, when asked for and there is a validation set


def train_centrally(
    data: Sequence[Path],
    out: Path,
    config: ExperimentConfig,
    *,
    cache: Path | None = None,
    device: str | None = None,
    workers: int = 1,
    tsne: bool = False,
    allow_outside_paths: bool = False,
) -> CentralTraining:
    """`cccmr train`: ingest the sites (cache default `out/cache`), split each, train the three phases
    (checkpoints in `out/checkpoints`), score the validation parts (metrics.json, metrics.md, optional Fig. 3)
    and write the release `out/release` (cine-only weights, resolved config, metrics, model card, hashes).
    `allow_outside_paths`: manifest series paths may leave the data root."""
    device = device or config.train.device
    out.mkdir(parents=True, exist_ok=True)
    sites = ingest_sites(data, cache or out / "cache", config, workers, allow_outside_paths=allow_outside_paths)
    train_set, val_set, site_summary = split_sites(sites, config)
    results = train_phases(train_set, config, device=device, checkpoint_dir=out / "checkpoints")
    state = results["fusion"].state

    metrics: dict[str, Any] = {}
    table = figure = None
    if val_set is not None:
        metrics["validation"] = evaluate_model(state, val_set, config, device).report(config)
        (out / "metrics.json").write_text(json.dumps(json_safe(metrics), indent=2, allow_nan=False) + "\n")
        table = markdown_table({"CC-CMR (validation)": metrics["validation"]})
        (out / "metrics.md").write_text(table)
        if tsne:
            from cccmr_model.tsne import write_fig3

            before, after = results["pretrain"].state, results["fim"].state
            figure = write_fig3(before, after, val_set, config, out / "fig3_tsne.png", device)
    else:
        log.warning("data.val_fraction is 0: no validation metrics")

    heads: dict[str, dict[str, float]] = {}
    last: dict[str, float] = {}  # fusion leaves the heads as the phase before it left them: scored once
    for phase, result in results.items() if val_set is not None else ():
        if "heads." in PHASE_GROUPS[phase]:
            last = head_validation(result.state, val_set, config, device)
        heads[phase] = last
    training_info = {
        "mode": "central",
        "sites": site_summary,
        "phases": {
            phase: {
                "epochs": config.train.phases[phase].epochs,
                "num_examples": r.num_examples,
                **r.metrics,
                **heads.get(phase, {}),
            }
            for phase, r in results.items()
        },
    }
    release = write_release(out / "release", state=state, config=config, metrics=metrics, training_info=training_info)
    return CentralTraining(release, table, figure)
