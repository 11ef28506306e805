"""The release written at the end of a federated run: cine-only weights, resolved config, final metrics.

This is the one place the ServerApp hands its final model to the release package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cccmr_model.config import ExperimentConfig
from cccmr_model.release.write import write_release as write_release_folder
from cccmr_model.run_folder import phase_head_aucs
from cccmr_model.wire import NUM_EXAMPLES
from server.evaluation import release_reports


def write_release(
    out_dir: Path,
    state: Mapping[str, np.ndarray],
    config: ExperimentConfig,
    rounds: Sequence[Mapping[str, Any]],
    final_evaluation: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write `out_dir` from the final global `state` and the run's history `rounds` (for metrics and sites).

    Metrics: Table-1 reports with bootstrap CIs (pooled and per site) of the last evaluated round, from
    `final_evaluation` (the sites' replies of that round, with per-subject scores when they were shared, so AUC
    gets its CI) or else from the counts in the history (AUC unavailable). Each phase's row in the model card adds
    its heads' validation AUCs (`phase_head_aucs`).
    """
    evaluated = [r for r in rounds if r.get("evaluate_global")]
    site_metrics = final_evaluation or (evaluated[-1]["evaluate"] if evaluated else {})
    metrics = release_reports(site_metrics, config) if site_metrics else {}
    sites: dict[str, dict[str, Any]] = {}
    for record in rounds:
        for site in record.get("sites_replied", []):
            sites.setdefault(site, {"rounds": 0})["rounds"] += 1
        for site, m in record.get("evaluate", {}).items():
            sites.setdefault(site, {"rounds": 0})["validation_subjects"] = m.get(NUM_EXAMPLES)
    phases = config.federation.phases
    training = {
        "mode": "federated",
        "sites": sites or {name: {"rounds": 0} for name in config.federation.sites},
        "phases": {
            p: {"rounds": f.rounds, "local_epochs": f.local_epochs, **phase_head_aucs(rounds).get(p, {})}
            for p, f in phases.items()
        },
        "rounds_completed": len(rounds),
        "privacy": achieved_privacy(config, rounds),
    }
    torch_state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}
    return write_release_folder(out_dir, state=torch_state, config=config, metrics=metrics, training_info=training)


def achieved_privacy(config: ExperimentConfig, rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The epsilons the run's history records, for the mechanisms the config enables (`cccmr_model.release.privacy`).

    DP-SGD: each site's last reported `dp_epsilon` (its ledger, cumulative); central DP: the last round's epsilon.
    """
    achieved: dict[str, Any] = {}
    if config.privacy.dp_sgd.enabled:
        by_site: dict[str, Any] = {}
        for record in rounds:
            for site, metrics in (record.get("train") or {}).items():
                if isinstance(metrics, Mapping) and metrics.get("dp_epsilon") is not None:
                    by_site[site] = metrics["dp_epsilon"]
        achieved["dp_sgd"] = {"epsilon_by_site": by_site}
    if config.privacy.central_dp.enabled:
        noised = [r["central_dp"] for r in rounds if isinstance(r.get("central_dp"), Mapping)]
        achieved["central_dp"] = {"epsilon": noised[-1].get("epsilon") if noised else None, "rounds": len(noised)}
    return achieved
