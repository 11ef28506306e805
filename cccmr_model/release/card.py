"""MODEL_CARD.md of a release: intended use and its limits, training sites, phases, metrics with CIs, privacy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cccmr_model.config import ExperimentConfig
from cccmr_model.metrics import markdown_table

SUBTYPES = ("HCM", "DCM", "NDLVC", "RCM", "ARVC")

_LIMITS = """\
- Research use only. This model is not a medical device, is not cleared by any regulator, and must not be used
  to diagnose, rule out or treat a patient. A cardiologist reading the full CMR study stays the reference.
- It screens from cine CMR alone: one 4-chamber cine plane and a short-axis cine stack. It never sees LGE, so it
  cannot show scar or fibrosis; LGE was used only as a teacher during training.
- Its performance holds only for data like its training data: the sites, scanner vendors, field strengths,
  sequences and patient populations listed below. Expect it to be worse at a new site, on other vendors or
  protocols, in children, and on series with artefacts, arrhythmia gating errors or incomplete coverage.
- The confidence intervals below come from a bootstrap over the evaluation subjects; they do not cover a shift
  to another population.
- Inputs must go through the preprocessing in `config.yaml` (`cccmr predict` does this); any other
  preprocessing gives meaningless scores."""


def render_card(
    config: ExperimentConfig,
    metrics: Mapping[str, Any],
    training: Mapping[str, Any],
    *,
    created: str,
    cccmr_version: str,
) -> str:
    """The model card as Markdown text."""
    parts = [
        f"# Model card: {config.name}",
        "",
        f"Release of CC-CMR Federated {cccmr_version}, created {created}. Task: **{config.task}**"
        f" ({_task_outputs(config)}). Training mode: **{training.get('mode', 'unknown')}**.",
        "",
        "## Intended use",
        "",
        "Screening support for cardiomyopathy in adults from routine cine cardiac MR, for research into",
        "gadolinium-free screening: it flags studies whose cine images look like cardiomyopathy so that a reader",
        f"looks at them first. The call is P(cardiomyopathy) >= {config.evaluation.threshold:g}.",
        "",
        "## Limits",
        "",
        _LIMITS,
        "",
        "## Inputs and preprocessing",
        "",
        *_inputs(config),
        "",
        "## Training data",
        "",
        *_sites(training.get("sites", {})),
        "",
        "## Training phases",
        "",
        *_phases(training.get("phases", {})),
        "",
        "## Privacy",
        "",
        *_privacy(training.get("privacy", {})),
        "",
        "## Evaluation",
        "",
        *_metrics(metrics, config.evaluation.confidence),
        "",
        "## Files",
        "",
        "`model.safetensors` (the two cine encoders and the fusion MLP), `config.yaml` (the resolved config,",
        "preprocessing included), `metrics.json`, `training.json`, this card, and `release.json` with the sha256 of",
        "every file. `cccmr predict` and `cccmr export` refuse a release whose files do not match `release.json`.",
        "",
    ]
    return "\n".join(parts)


def _task_outputs(config: ExperimentConfig) -> str:
    if config.task == "screening":
        return "P(cardiomyopathy) from two classes, healthy and cardiomyopathy"
    return "probabilities of the five ESC subtypes " + ", ".join(SUBTYPES)


def _inputs(config: ExperimentConfig) -> list[str]:
    data = config.data
    slices = data.slices
    return [
        f"- 4-chamber cine: {slices['cine_4ch']} mid-ventricular plane;"
        f" short-axis cine: {slices['cine_sax']} mid slices.",
        f"- Each series resampled to {data.frames} frames over one cardiac cycle"
        f" (at least {data.min_frames} acquired),",
        f"  resampled to {data.pixel_spacing_mm:g} mm pixels on a {data.image_size}x{data.image_size} grid,"
        f" intensities clipped at percentiles {data.clip_percentiles[0]:g} and {data.clip_percentiles[1]:g}.",
        f"- Encoder: {config.model.encoder.arch}; fusion MLP with {config.model.fusion_hidden} hidden units.",
    ]


def _sites(sites: Mapping[str, Any]) -> list[str]:
    if not sites:
        return ["No site information was recorded."]
    columns = sorted({key for value in sites.values() if isinstance(value, Mapping) for key in value})
    if not columns:
        lines = ["| site | subjects |", "|---|---|"]
        lines += [f"| {site} | {count} |" for site, count in sites.items()]
        return lines
    lines = ["| site | " + " | ".join(c.replace("_", " ") for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for site, value in sites.items():
        cells = [str(value.get(c, "")) if isinstance(value, Mapping) else "" for c in columns]
        lines.append(f"| {site} | " + " | ".join(cells) + " |")
    return lines


def _phases(phases: Mapping[str, Any]) -> list[str]:
    if not phases:
        return ["No phase information was recorded."]
    columns = sorted({key for value in phases.values() if isinstance(value, Mapping) for key in value})
    lines = ["| phase | " + " | ".join(c.replace("_", " ") for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for phase, value in phases.items():
        cells = [str(value.get(c, "")) if isinstance(value, Mapping) else str(value) for c in columns]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    return lines


def _privacy(privacy: Mapping[str, Any]) -> list[str]:
    lines = []
    for key, value in _flatten(privacy):
        lines.append(f"- `{key}`: {value}")
    return lines or ["No privacy settings were recorded."]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items += _flatten(value, f"{name}.")
        else:
            items.append((name, value))
    return items


def _metrics(metrics: Mapping[str, Any], confidence: float) -> list[str]:
    """Table 1 layout for `cccmr_model.metrics.evaluation_report` results (pooled, each site); else one table per
    group of metrics, each value with its CI when one is given."""
    reports = _reports(metrics, "")
    if reports:
        counts = ", ".join(f"{name}: {report.get('n', '?')}" for name, report in reports.items())
        return [markdown_table(reports, first_column="Evaluated on").rstrip("\n"), "", f"Subjects evaluated: {counts}."]
    groups = _metric_groups(metrics, "")
    if not groups:
        return ["No evaluation metrics were recorded."]
    lines = [f"Values with {confidence:.0%} bootstrap confidence intervals where computed."]
    for title, entries in groups:
        lines += ["", f"### {title or 'overall'}", "", "| metric | value | CI |", "|---|---|---|"]
        for name, entry in entries:
            value, low, high = metric_value(entry)
            ci = f"{_num(low)} - {_num(high)}" if low is not None and high is not None else ""
            lines.append(f"| {name} | {_num(value)} | {ci} |")
    return lines


def _reports(data: Mapping[str, Any], path: str) -> dict[str, Mapping[str, Any]]:
    """Every evaluation report (a mapping with `task`, `bootstrap` and `metrics`) in `data`, named by its path."""
    if {"task", "bootstrap", "metrics"} <= set(data):
        return {path or "overall": data}
    found: dict[str, Mapping[str, Any]] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            found.update(_reports(value, f"{path} / {key}" if path else str(key)))
    return found


def _metric_groups(data: Mapping[str, Any], path: str) -> list[tuple[str, list[tuple[str, Any]]]]:
    entries = [(str(k), v) for k, v in data.items() if _is_entry(v)]
    groups = [(path, entries)] if entries else []
    for key, value in data.items():
        if isinstance(value, Mapping) and not _is_entry(value):
            groups += _metric_groups(value, f"{path} / {key}" if path else str(key))
    return groups


def _is_entry(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, Mapping) and any(k in value for k in ("value", "estimate", "mean", "point"))


def metric_value(entry: Any) -> tuple[float | None, float | None, float | None]:
    """(value, ci_low, ci_high) of a plain number or a dict such as {value, ci_low, ci_high} or {value, ci: [l, h]}."""
    if not isinstance(entry, Mapping):
        return _float(entry), None, None
    value = next((entry[k] for k in ("value", "estimate", "mean", "point") if k in entry), None)
    low, high = entry.get("ci_low", entry.get("low")), entry.get("ci_high", entry.get("high"))
    ci = entry.get("ci")
    if isinstance(ci, list | tuple) and len(ci) == 2:
        low, high = ci
    return _float(value), _float(low), _float(high)


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return str(int(value)) if float(value).is_integer() and abs(value) >= 2 else f"{value:.3f}"
