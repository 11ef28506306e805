"""MODEL_CARD.md of a release: intended use and its limits, training sites, phases, metrics with CIs, privacy."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cccmr_model.config import ExperimentConfig
from cccmr_model.markdown import escape_markdown
from cccmr_model.metrics import SUBTYPE_NAMES, markdown_table
from cccmr_model.release.privacy import privacy_lines

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

_OVERLAYS = """`cccmr predict --explain DIR` draws a saliency map over each cine sequence (PNG at end-diastole and
end-systole, an animated GIF over the cycle) and names the frames and short-axis slices that weigh most;
`--dicom-out DIR` puts the same overlays on a DICOM result page next to the probability.

What the overlays are: evidence of which parts of the model's own input (the cropped, resampled, normalised frames in
the standard display order, SAX with the RV on the left and 4CH with the apex up, which may be turned or mirrored from
the order the scanner stored; not the original images) the network used for its call. The map is HiResCAM (gradient
times activation at the penultimate Swin stage, positive part, computed with captum)
on a grid of {grid}, upsampled smoothly.
A slice's weight is how much the probability of the call drops when that slice is blanked.
Sanity checks run as tests: the map changes when the weights are randomised, and on synthetic subjects with a
lesion in a known place a trained model's map puts its mass there well above chance.

What they are not:
- not a segmentation or a localisation of disease: a bright region is where the network looked, which may be
  normal anatomy, blood pool, an artefact or a shortcut learnt from the training data, and a dark region is not
  evidence of normal myocardium;
- not calibrated across subjects: each map is scaled to its own maximum, so colours do not compare between
  patients or between the 4CH and the SAX;
- not a reason to trust the call: a plausible-looking map does not make the probability more accurate, and the
  map explains the call even when the call is wrong;
- not finer than the network sees: the map cannot separate the three SAX slices (that is the ablation's job)
  nor show detail smaller than a map cell.

The result is a screening aid, not a diagnosis."""


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
        "## Saliency overlays: what they are and are not",
        "",
        _overlays(config),
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
        *privacy_lines(training.get("privacy") or {}, str(training.get("mode", ""))),
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


def _overlays(config: ExperimentConfig) -> str:
    """The overlays section, with the size of a map cell for this release's encoder and input size."""
    encoder = config.model.encoder
    patch = encoder.patch_size or (2, 4, 4)
    stages = len(encoder.depths or (2, 2, 6, 2))
    cell = patch[1] * 2 ** (stages - 2)  # input pixels per cell at the penultimate stage
    side = config.data.image_size // cell
    grid = f"{side} x {side} cells of {cell} x {cell} input pixels and {patch[0]} frames"
    return _OVERLAYS.replace("{grid}", grid)


def _task_outputs(config: ExperimentConfig) -> str:
    if config.task == "screening":
        return "P(cardiomyopathy) from two classes, healthy and cardiomyopathy"
    return "probabilities of the five ESC subtypes " + ", ".join(SUBTYPE_NAMES)


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
        lines += [f"| {escape_markdown(site)} | {escape_markdown(readable(count))} |" for site, count in sites.items()]
        return lines
    lines = ["| site | " + " | ".join(c.replace("_", " ") for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for site, value in sites.items():
        cells = [escape_markdown(readable(value.get(c))) if isinstance(value, Mapping) else "" for c in columns]
        lines.append(f"| {escape_markdown(site)} | " + " | ".join(cells) + " |")
    return lines


# The rows of the phase table first, in this order; any other recorded key follows in name order.
PHASE_ROWS = ("rounds", "local_epochs", "epochs", "num_examples", "loss")
PHASE_LABELS = {
    "rounds": "rounds",
    "local_epochs": "local epochs per round",
    "epochs": "epochs",
    "num_examples": "training samples seen",
    "loss": "final training loss",
    "lr": "final learning rate",
    "samples_per_s": "throughput (samples/s)",
    "train_seconds": "training time (s)",
}
PHASE_PREFIXES = {"acc": "accuracy", "auc": "AUC", "constant": "constant prediction", "sigma": "uncertainty σ",
                  "val_auc": "validation AUC"}  # fmt: skip


def _phases(phases: Mapping[str, Any]) -> list[str]:
    """One row per recorded quantity, one column per phase, every number rounded (`readable`)."""
    if not phases:
        return ["No phase information was recorded."]
    names = list(phases)
    keys = {key for value in phases.values() if isinstance(value, Mapping) for key in value}
    ordered = [k for k in PHASE_ROWS if k in keys] + sorted(keys - set(PHASE_ROWS), key=_phase_key_order)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in ordered:
        cells = [_phase_cell(key, value.get(key)) if isinstance(value, Mapping) else "" for value in phases.values()]
        lines.append(f"| {_phase_label(key)} | " + " | ".join(cells) + " |")
    return lines


def _phase_key_order(key: str) -> tuple[int, str, str]:
    """Loss terms, then per-head scores (head by head: training, then validation), then sigmas, then timing and
    learning rate."""
    prefix, name = (key.split(":", 1)[0], key.split(":", 1)[1]) if ":" in key else ("", key)
    group = 3 if key in PHASE_LABELS else {"acc": 1, "auc": 1, "constant": 1, "val_auc": 1, "sigma": 2}.get(prefix, 0)
    return (group, name, prefix)


def _phase_cell(key: str, value: Any) -> str:
    if key.startswith("constant:"):
        return "yes" if value else "–"
    return readable(value)


def _phase_label(key: str) -> str:
    if key in PHASE_LABELS:
        return PHASE_LABELS[key]
    prefix, _, name = key.partition(":")
    if name and prefix in PHASE_PREFIXES:
        return f"{PHASE_PREFIXES[prefix]}, {name}"
    if name:
        return f"loss term {prefix} ({name})"
    return key.replace("_", " ")


def readable(value: Any) -> str:
    """A table cell: whole numbers without decimals, other numbers to 3 significant digits, nothing as '–'."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        return "–" if math.isnan(number) else str(number)
    if number.is_integer() and abs(number) < 1e9:
        return str(int(number))
    if abs(number) >= 100:
        return f"{number:.0f}"
    if abs(number) >= 0.001:
        return f"{number:.3g}"
    return f"{number:.2e}"


def _metrics(metrics: Mapping[str, Any], confidence: float) -> list[str]:
    """Table 1 layout for `cccmr_model.metrics.evaluation_report` results (pooled, each site); else one table per
    group of metrics, each value with its CI when one is given."""
    reports = _reports(metrics, "")
    if reports:
        counts = ", ".join(f"{name}: {escape_markdown(report.get('n', '?'))}" for name, report in reports.items())
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
            found.update(_reports(value, f"{path} / {escape_markdown(key)}" if path else escape_markdown(key)))
    return found


def _metric_groups(data: Mapping[str, Any], path: str) -> list[tuple[str, list[tuple[str, Any]]]]:
    entries = [(escape_markdown(k), v) for k, v in data.items() if _is_entry(v)]
    groups = [(path, entries)] if entries else []
    for key, value in data.items():
        if isinstance(value, Mapping) and not _is_entry(value):
            groups += _metric_groups(value, f"{path} / {escape_markdown(key)}" if path else escape_markdown(key))
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
