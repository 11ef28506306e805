"""The demo report's figures (matplotlib, Agg backend, PNG): ROC curves, per-round curves per site, the FIM's
sigma trajectories and the bytes exchanged per round. Inputs are plain data: history records (`history.jsonl` of
the ServerApp) and score arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cccmr_model.run_folder import evaluations
from cccmr_model.sequences import SEQUENCES

PHASE_COLOURS = {"pretrain": "#dbe9f6", "fim": "#fde6cf", "fusion": "#dff2dc"}
PHASE_TITLES = {"pretrain": "phase 1: pretrain", "fim": "phase 2: FIM", "fusion": "phase 3: fusion"}
DPI = 130


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) over all thresholds, from (0, 0) to (1, 1); ties move together."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each distinct score
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray, Mapping[str, float]]], path: Path) -> Path:
    """One ROC curve per model: `curves[name] = (scores, labels, auc entry {value, ci_low, ci_high})`."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    for (name, (scores, labels, auc)), style in zip(curves.items(), ("-", "--", ":", "-."), strict=False):
        fpr, tpr = roc_points(scores, labels)
        label = f"{name}\nAUC {auc['value']:.3f} (95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f})"
        ax.step(fpr, tpr, where="post", lw=2, ls=style, label=label)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="chance")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="1 - specificity (false positive rate)",
           ylabel="sensitivity (true positive rate)", title="ROC on the held-out test set (cine only)")  # fmt: skip
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def _phase_bands(ax, history: Sequence[Mapping[str, Any]], labels: bool) -> None:
    """Shade each phase's rounds; name the phase at the top of the axes."""
    spans: dict[str, list[int]] = {}
    for record in history:
        spans.setdefault(record["phase"], []).append(int(record["round"]))
    for phase, rounds in spans.items():
        lo, hi = min(rounds) - 0.5, max(rounds) + 0.5
        ax.axvspan(lo, hi, color=PHASE_COLOURS.get(phase, "#eeeeee"), zorder=0)
        if labels:
            ax.text((lo + hi) / 2, 1.01, PHASE_TITLES.get(phase, phase), transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8)  # fmt: skip


def _sites(history: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    return sorted({site for record in history for site in record.get(key, {})})


def _series(history: Sequence[Mapping[str, Any]], get) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for record in history:
        value = get(record)
        if value is not None:
            xs.append(int(record["round"]))
            ys.append(float(value))
    return xs, ys


def site_accuracy(metrics: Mapping[str, Any]) -> float | None:
    """Accuracy from a site's flattened confusion counts (rows = true class)."""
    confusion = metrics.get("confusion")
    if not confusion:
        return None
    k = round(len(confusion) ** 0.5)
    counts = np.asarray(confusion, dtype=float).reshape(k, k)
    return float(np.trace(counts) / counts.sum()) if counts.sum() else None


def rounds_figure(history: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Per round and site: training loss, validation loss, validation accuracy; pooled validation metrics and each
    sequence head's validation AUC (rounds whose message held the heads)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    rounds = [int(r["round"]) for r in history]
    evaluated = evaluations(history)  # x: the round whose model was evaluated
    train_sites, eval_sites = _sites(history, "train"), _sites(evaluated, "evaluate")
    panels = [
        (axes[0, 0], "training loss (objective of the round's phase)", history, train_sites, "train",
         lambda m: m.get("loss")),
        (axes[0, 1], "validation loss (cine-only prediction)", evaluated, eval_sites, "evaluate",
         lambda m: m.get("loss")),
        (axes[1, 0], "validation accuracy (cine-only prediction)", evaluated, eval_sites, "evaluate", site_accuracy),
    ]  # fmt: skip
    for ax, title, records, sites, key, get in panels:
        _phase_bands(ax, history, labels=True)
        for site in sites:
            xs, ys = _series(records, lambda r, s=site, k=key, g=get: g(r[k][s]) if s in r.get(k, {}) else None)
            ax.plot(xs, ys, marker="o", lw=1.5, label=site)
        ax.set_title(title, pad=14)
        ax.legend(fontsize=8, title="site", title_fontsize=8)
    axes[0, 0].set_yscale("log")
    _plain_log_ticks(axes[0, 0])
    ax = axes[1, 1]
    _phase_bands(ax, history, labels=True)
    for metric, style in (("auc", "-"), ("balanced_accuracy", "--"), ("sensitivity", ":"), ("specificity", "-.")):
        xs, ys = _series(evaluated, lambda r, m=metric: r.get("evaluate_global", {}).get(m))
        if xs:
            ax.plot(xs, ys, marker="o", ls=style, lw=1.5, label=metric.replace("_", " "))
    for seq, marker in zip(SEQUENCES, "^sD", strict=True):
        xs, ys = _series(evaluated, lambda r, s=seq: r.get("evaluate_global", {}).get(f"auc:{s}"))
        if xs:
            ax.plot(xs, ys, marker=marker, markersize=4, ls="-", lw=0.8, alpha=0.8, label=f"AUC, {seq} head")
    ax.set_title("pooled validation metrics (all sites)", pad=14)
    ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("server round")
    for ax in (axes[1, 0], axes[1, 1]):
        ax.set_ylim(-0.03, 1.03)
    for ax in axes.ravel():
        ax.set_xticks(rounds)
    fig.tight_layout()
    return _save(fig, path)


def sigma_figure(history: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The six FIM terms' learned sigma per FIM round (1 at initialisation, before the first FIM round)."""
    plt = _pyplot()
    fim = [r for r in history if r.get("sigma")]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    if not fim:
        ax.text(0.5, 0.5, "no FIM rounds in this run", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    start = int(fim[0]["round"]) - 1
    terms = sorted({k for r in fim for k in r["sigma"]}, key=lambda k: (not k.startswith("sigma:cls"), k))
    for i, term in enumerate(terms):
        xs, ys = _series(fim, lambda r, t=term: r["sigma"].get(t))
        style = "-" if term.startswith("sigma:cls") else "--"
        size = (10, 7, 4)[i % 3]  # equal values stay visible as concentric markers
        ax.plot([start, *xs], [1.0, *ys], marker="os^D"[i // 3], markersize=size, ls=style, lw=1.5,
                label=term.removeprefix("sigma:"), alpha=0.85)  # fmt: skip
    ax.set_xticks([start, *[int(r["round"]) for r in fim]])
    ax.set_xticklabels(["init", *[f"{r['round']}" for r in fim]])
    ax.set(xlabel="server round (FIM phase)", ylabel="sigma (larger = term weighted less)",
           title="Uncertainty weights of the six FIM loss terms (mean over sites)")  # fmt: skip
    ax.legend(fontsize=8, ncol=2, title="term: cls = focal loss, fsa = feature alignment", title_fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def bytes_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> Path:
    """Megabytes sent to and received from the sites per round, one panel per run, bars coloured by phase."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4.0), squeeze=False, sharey=True)
    for ax, (name, history) in zip(axes[0], runs.items(), strict=True):
        rounds = np.array([int(r["round"]) for r in history])
        sent = np.array([r.get("bytes_sent", 0) for r in history]) / 1e6
        received = np.array([r.get("bytes_received", 0) for r in history]) / 1e6
        edge = [_phase_edge(r["phase"]) for r in history]
        ax.bar(rounds - 0.2, sent, 0.4, color=[PHASE_COLOURS[r["phase"]] for r in history], edgecolor=edge,
               hatch="//", label="server -> sites")  # fmt: skip
        ax.bar(rounds + 0.2, received, 0.4, color=[PHASE_COLOURS[r["phase"]] for r in history], edgecolor=edge,
               label="sites -> server")  # fmt: skip
        ax.set_xticks(rounds)
        ax.set(xlabel="server round", title=f"{name}: {sent.sum() + received.sum():.1f} MB in total")
    from matplotlib.patches import Patch

    axes[0, 0].set_ylabel("MB per round (all sites)")
    handles = [Patch(facecolor="white", edgecolor="#444444", hatch="//", label="server -> sites"),
               Patch(facecolor="white", edgecolor="#444444", label="sites -> server")]  # fmt: skip
    phases = {r["phase"] for history in runs.values() for r in history}
    handles += [Patch(facecolor=PHASE_COLOURS[p], edgecolor=_phase_edge(p), label=PHASE_TITLES[p])
                for p in PHASE_TITLES if p in phases]  # fmt: skip
    fig.legend(handles=handles, fontsize=8, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path)


def _plain_log_ticks(ax) -> None:
    """Log axis ticks at 1, 2, 5 x 10^k written as plain numbers, no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _phase_edge(phase: str) -> str:
    return {"pretrain": "#3b75af", "fim": "#d9822b", "fusion": "#4a9a44"}.get(phase, "#444444")
