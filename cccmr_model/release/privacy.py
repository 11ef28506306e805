"""The privacy a release claims: only what training applied and measured, never a setting it did not apply.

`training.json` holds `privacy = {"dp_sgd": {...}, "central_dp": {...}}`, each with `applied`. An applied mechanism
carries its settings and the epsilon it achieved at its delta: DP-SGD per site (from the sites' privacy ledgers),
central DP for the run (from the server's history). A config that enables a mechanism the training did not
report, or a report of a mechanism the config does not enable, is refused: the release would claim privacy that
did not happen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cccmr_model.config import ExperimentConfig, config_to_dict
from cccmr_model.errors import CccmrError
from cccmr_model.markdown import escape_markdown

MECHANISMS = ("dp_sgd", "central_dp")
# What each mechanism's report must hold: DP-SGD an epsilon per site, central DP one epsilon for the run.
REPORTED = {"dp_sgd": "epsilon_by_site", "central_dp": "epsilon"}


def privacy_record(config: ExperimentConfig, achieved: Mapping[str, Any]) -> dict[str, Any]:
    """`training.json`'s privacy: per mechanism `applied`, and for an applied one its settings and epsilons."""
    unknown = sorted(set(achieved) - set(MECHANISMS))
    if unknown:
        raise CccmrError(f"write_release: training_info['privacy'] has unknown mechanism(s) {unknown}")
    settings = config_to_dict(config.privacy)
    record: dict[str, Any] = {}
    for name in MECHANISMS:
        enabled = bool(settings[name]["enabled"])
        report = achieved.get(name)
        if enabled and not (isinstance(report, Mapping) and REPORTED[name] in report):
            raise CccmrError(
                f"write_release: privacy.{name}.enabled is set but the training reports no {name} "
                f"{REPORTED[name]}; a release never claims privacy that was not applied"
            )
        if not enabled and report:
            raise CccmrError(f"write_release: training reports {name} but privacy.{name}.enabled is false")
        if not enabled:
            record[name] = {"applied": False}
            continue
        options = {k: v for k, v in settings[name].items() if k != "enabled"}
        record[name] = {"applied": True, **options, **dict(report)}  # type: ignore[arg-type]
    return record


def privacy_lines(privacy: Mapping[str, Any], mode: str) -> list[str]:
    """The model card's privacy section: what was achieved, in words when nothing was."""
    dp_sgd, central = privacy.get("dp_sgd") or {}, privacy.get("central_dp") or {}
    lines = []
    if dp_sgd.get("applied"):
        lines.append(_dp_sgd_line(dp_sgd))
    if central.get("applied"):
        lines.append(_central_line(central))
    if not lines:
        where = (
            "the training data were pooled in one place"
            if mode == "central"
            else "the sites kept their images, but the model updates they sent carry no formal guarantee"
        )
        return [
            f"No differential privacy was applied to this model: {where}. It gives no bound (no epsilon) on what "
            "it reveals about any training subject."
        ]
    lines += ["", "Training and evaluation metrics in this release are released as computed: no epsilon covers them."]
    return lines


def _dp_sgd_line(report: Mapping[str, Any]) -> str:
    sites = report.get("epsilon_by_site") or {}
    spent = ", ".join(f"{escape_markdown(site)} {_epsilon(eps)}" for site, eps in sorted(sites.items()))
    spent = spent or "no site reported one"
    return (
        f"- Sample-level DP-SGD at each site (noise multiplier {report.get('noise_multiplier')}, per-sample "
        f"clipping {report.get('max_grad_norm')}, budget epsilon {report.get('epsilon_budget')}): epsilon at delta "
        f"{report.get('delta')} per site: {spent}. From each site's privacy ledger, which counts every DP-SGD step "
        "the site has taken; it bounds what the model reveals about one subject."
    )


def _central_line(report: Mapping[str, Any]) -> str:
    rounds = report.get("rounds")
    over = f" over {rounds} round(s)" if rounds is not None else ""
    return (
        f"- Site-level (central) DP on the server (noise multiplier {report.get('noise_multiplier')}, clipping norm "
        f"{report.get('clipping_norm')}): epsilon {_epsilon(report.get('epsilon'))} at delta {report.get('delta')}"
        f"{over}, from the run's history. It bounds what the model reveals about one site's whole contribution."
    )


def _epsilon(value: Any) -> str:
    """An epsilon in words: rounded, or why there is none."""
    if value is None:
        return "not recorded (no finite bound)"
    value = float(value)
    if not math.isfinite(value):
        return "infinite (no noise: no guarantee)"
    return f"{value:.3g}"
