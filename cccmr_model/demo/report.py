"""The demo's report: `report.md` (Markdown with PNG figures next to it) and the same as a standalone `report.html`.

`render_markdown(summary, histories)` is a pure function of the demo summary (what `run.py` measured, a plain
dict) and the two runs' history records, so it is tested without running anything.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cccmr_model.demo.figures import site_accuracy
from cccmr_model.markdown import escape_markdown
from cccmr_model.rounds import head_aucs, round_warnings
from cccmr_model.run_folder import evaluations, phase_head_aucs

RELEASE, BASELINE = "release", "baseline"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _cell(value: Any) -> str:
    return escape_markdown(_fmt(value))  # FIM terms are named "fsa:a|b"; site names come from outside


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rounds_table(history: Sequence[Mapping[str, Any]]) -> str:
    """One row per server round: phase, sites, training loss, the pooled validation metrics of the round's model
    (which the next round's replies or the final evaluation brought), MB exchanged, seconds."""
    rows = []
    evaluated = {e["round"]: e for e in evaluations(history)}
    for r in history:
        evaluation = evaluated.get(r["round"], {})
        ev, train = evaluation.get("evaluate_global", {}), r.get("train_global", {})
        per_site = ", ".join(
            f"{site} {_fmt(site_accuracy(m), 2)}" for site, m in sorted(evaluation.get("evaluate", {}).items())
        )  # fmt: skip
        mb = (r.get("bytes_sent", 0) + r.get("bytes_received", 0)) / 1e6
        rows.append([r["round"], f"{r['phase']} {r['phase_round']}", ", ".join(r.get("sites_replied", [])),
                     train.get("loss"), ev.get("loss"), ev.get("auc"), head_aucs(ev), per_site or "n/a",
                     f"{mb:.1f}", _fmt(r.get("round_time_s"), 1)])  # fmt: skip
    header = ["round", "phase", "sites replied", "train loss", "val loss", "val AUC (pooled)",
              "val AUC per head 4CH / SAX / LGE", "val accuracy per site", "MB exchanged", "round s"]  # fmt: skip
    return _table(header, rows)


# AUC differences below this are inside the bootstrap noise of a ~50-subject test set and one seed.
NOISE_AUC = 0.05
BENCHMARK_POINTER = (
    "The 3-seed comparison, with a compute-matched control trained as long without LGE, is in "
    '`benchmarks/README.md` ("Table 2 on a phantom cohort").'
)


def lge_verdict(evaluation: Mapping[str, Mapping[str, Any]], names: Mapping[str, str]) -> str:
    """One plain paragraph: did LGE guidance (the FIM) help on this run's held-out test set?"""
    auc = {key: evaluation[names[key]]["metrics"]["auc"] for key in (RELEASE, BASELINE)}
    diff = auc[RELEASE]["value"] - auc[BASELINE]["value"]
    if diff >= NOISE_AUC:
        call = "LGE guidance helped on this run"
    elif diff <= -NOISE_AUC:
        call = "LGE guidance did not help on this run: the baseline without it scored higher"
    else:
        call = "LGE guidance made no clear difference on this run"
    cells = {key: f"{_fmt(a['value'])} (95% CI {_fmt(a['ci_low'])}-{_fmt(a['ci_high'])})" for key, a in auc.items()}
    return (
        f"**{call}**: test AUC {cells[RELEASE]} with it, {cells[BASELINE]} without it (difference "
        f"{diff:+.3f}). One seed on {evaluation[names[RELEASE]].get('n', '?')} test subjects cannot separate "
        f"differences of a few hundredths. {BENCHMARK_POINTER}"
    )


def validation_trend(history: Sequence[Mapping[str, Any]]) -> str:
    """The pooled validation AUC at the first evaluated round and at the end of each phase."""
    points = [(e["round"], e["phase"], e["evaluate_global"].get("auc")) for e in evaluations(history)]
    points = [(n, phase, a) for n, phase, a in points if isinstance(a, int | float)]
    if not points:
        return "No round was evaluated on the validation splits."
    last = {phase: (n, a) for n, phase, a in points}  # the last evaluated round of each phase
    parts = [f"round {points[0][0]} ({points[0][1]}) {_fmt(points[0][2])}"]
    parts += [f"end of {phase} (round {n}) {_fmt(a)}" for phase, (n, a) in last.items()]
    trend = "Pooled validation AUC of the cine-only model, round by round: " + ", ".join(parts) + "."
    heads = phase_head_aucs(history)
    if heads:
        parts = [f"{phase} {head_aucs(aucs, 'val_auc')}" for phase, aucs in heads.items()]
        trend += (" Each sequence head's validation AUC (4CH / SAX / LGE; the sites' AUCs weighted by their "
                  "validation subjects; per phase its latest evaluation that scored the head: an LGE head is scored "
                  "only where the message held its encoder): " + ", ".join(parts) + ".")  # fmt: skip
    return trend


def flagged(histories: Mapping[str, Sequence[Mapping[str, Any]]], names: Mapping[str, str]) -> str:
    """What the server flagged in the runs (sites left out, constant or memorising heads), round by round, or that
    it flagged nothing."""
    items = [f"{names[key]}, round {r['round']}: {warning}" for key, history in histories.items() for r in history
             for warning in round_warnings(r)]  # fmt: skip
    if not items:
        return ("The server flagged nothing: every site replied in every round, no head predicted a constant and "
                "none fit its training subjects while scoring near chance on validation.")  # fmt: skip
    return "The server flagged:\n\n" + "\n".join(f"- {escape_markdown(item)}" for item in items)


def sigma_table(history: Sequence[Mapping[str, Any]]) -> str:
    fim = [r for r in history if r.get("sigma")]
    if not fim:
        return "No FIM rounds.\n"
    last = fim[-1]["sigma"]
    rows = [[k.removeprefix("sigma:"), v, 1.0 / (v * v)] for k, v in sorted(last.items())]
    return _table(["FIM term", "sigma after the last FIM round", "weight 1/sigma^2"], rows)


def bytes_table(histories: Mapping[str, Sequence[Mapping[str, Any]]], names: Mapping[str, str]) -> str:
    rows = []
    for key, history in histories.items():
        for phase in ("pretrain", "fim", "fusion"):
            records = [r for r in history if r["phase"] == phase]
            if not records:
                continue
            sent = sum(r.get("bytes_sent", 0) for r in records) / 1e6
            received = sum(r.get("bytes_received", 0) for r in records) / 1e6
            rows.append([names[key], phase, len(records), f"{sent / len(records):.2f}",
                         f"{received / len(records):.2f}", f"{sent + received:.1f}"])  # fmt: skip
    header = ["run", "phase", "rounds", "MB sent per round", "MB received per round", "MB in the phase"]
    return _table(header, rows)


def settings_section(summary: Mapping[str, Any]) -> list[str]:
    cfg = summary["config"]
    lines = ["## Settings", ""]
    lines.append(_table(["setting", "value"], [[k, v] for k, v in cfg.items()]))
    lines.append("Config overrides on top of the packaged `tiny` config (release run; the baseline differs only in "
                 "`name` and `federation.phases.fim.rounds=0`):\n")  # fmt: skip
    lines.append("```\n" + "\n".join(summary["overrides"][RELEASE]) + "\n```\n")
    site_rows = [[s["name"], s["subjects"], s["patients"], s.get("without_lge", "n/a")] for s in summary["sites"]]
    test = summary["test"]
    site_rows.append(["test (held out)", test["subjects"], test["patients"], test.get("without_lge", "n/a")])
    lines.append("Cohort (synthetic phantom DICOM, `cccmr phantom`; each site splits its subjects into training "
                 f"and validation, `data.val_fraction` = {summary.get('val_fraction', 'n/a')}):\n")  # fmt: skip
    lines.append(_table(["site", "subjects", "patients (label 1)", "subjects without LGE"], site_rows))
    times = [[step, _seconds(sec)] for step, sec in summary["wall_times"].items()]
    if "total_seconds" in summary:
        times.append(["total (including the SuperLink's start and stop)", _seconds(summary["total_seconds"])])
    lines.append("Wall times:\n")
    lines.append(_table(["step", "wall time"], times))
    machine = summary["machine"]
    lines.append(_table(["machine", "value"], [[k, v] for k, v in machine.items()]))
    return lines


def explained_section(examples: Sequence[Mapping[str, Any]]) -> list[str]:
    """One explained held-out subject per class: the release's call and its saliency at ED and ES (mid SAX)."""
    if not examples:
        return []
    lines = [
        "## Where the model looked: one held-out subject per class",
        "",
        "`cccmr predict --explain` on the release: HiResCAM saliency over the SAX cine at end-diastole and "
        "end-systole (the three input slices side by side). It shows what the network used for its call, not a "
        "segmentation of disease (see the model card).",
        "",
    ]
    for ex in examples:
        p = ex.get("p_cardiomyopathy")
        lines += [
            f"**{ex['subject_id']}**: truth {ex['truth']}; P(cardiomyopathy) {_fmt(p)}, call {ex['call']}; "
            f"end-systole frame {ex['es_frame']}; frames weighing most {ex['top_frames']}; "
            f"SAX slices weighing most {ex['top_slices']}.",
            "",
        ]
        lines += [item for figure in ex["figures"] for item in (f"![{ex['subject_id']} saliency]({figure})", "")]
    return lines


def render_markdown(summary: Mapping[str, Any], histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """The whole report as Markdown; figure paths in `summary["figures"]` are relative to the report."""
    names = summary["names"]
    fig = summary["figures"]
    releases = summary["releases"]
    n_sites = len(summary["sites"])
    total = summary.get("total_seconds") or sum(summary["wall_times"].values())
    lines = [
        "# CC-CMR federated demo",
        "",
        f"{n_sites} simulated hospital{'s' if n_sites > 1 else ''}"
        f" ({', '.join(escape_markdown(s['name']) for s in summary['sites'])})"
        " trained CC-CMR together on Flower's simulation runtime (the same ServerApp and ClientApp as a real "
        "deployment): phase 1 pretrains one encoder per sequence, phase 2 (the Feature Interaction Module) aligns "
        "the cine features with LGE, phase 3 fits the cine-only fusion head. The released model needs cine only. "
        "The baseline is the same federation without LGE guidance (no phase 2). "
        f"Whole demo: {_seconds(total)}{' (--quick)' if summary.get('quick') else ''}.",
        "",
        "**The data are synthetic phantoms: these numbers show that the system works end to end, they are not "
        "clinical evidence.**",
        "",
        f"- Release: `{releases[RELEASE]['path']}` (content hash `{releases[RELEASE]['content_hash'][:16]}`)",
        f"- Baseline release: `{releases[BASELINE]['path']}`",
        f"- Round histories: `{summary['history_paths'][RELEASE]}`, `{summary['history_paths'][BASELINE]}`",
        "",
        "## Held-out test set (Table 1 layout)",
        "",
        f"{summary['test']['usable']} held-out subjects, predicted from cine only (4CH + SAX) by each release.",
        "",
        summary["table1"],
        lge_verdict(summary["evaluation"], names),
        "",
        f"![ROC curves]({fig['roc']})",
        "",
        "## Training, round by round",
        "",
        f"Per-site curves of the {names[RELEASE]} run. The training loss is each phase's own objective (FIM: the "
        "uncertainty-weighted sum of six terms), so its level jumps between phases; validation is the cine-only "
        "prediction on each site's validation split (the fusion head is untrained before phase 3).",
        "",
        f"![per-round curves]({fig['rounds']})",
        "",
        validation_trend(histories[RELEASE]),
        "",
        flagged(histories, names),
        "",
        rounds_table(histories[RELEASE]),
        f"Baseline run ({names[BASELINE]}):",
        "",
        rounds_table(histories[BASELINE]),
        "## Feature Interaction Module: uncertainty weights",
        "",
        f"![sigma trajectories]({fig['sigma']})",
        "",
        sigma_table(histories[RELEASE]),
        "## t-SNE of the test set's cine features, before and after phase 2",
        "",
        f"Global model after round {summary['tsne']['before_round']} (end of pretraining) and after round "
        f"{summary['tsne']['after_round']} (end of the FIM), {summary['tsne']['source']}. Ellipses: mean +/- 1 sd "
        "per sequence and class (dashed: healthy, dotted: cardiomyopathy). The FIM should pull the two cine "
        "sequences of a class together and push the classes apart.",
        "",
        f"![t-SNE before and after the FIM]({fig['tsne']})",
        "",
        "## Bytes exchanged",
        "",
        "Each round sends only the parameter groups the phase trains (plus the frozen cine encoders the fusion head "
        "needs) and receives only the trained groups; evaluation sends the cine-only model.",
        "",
        f"![bytes per round]({fig['bytes']})",
        "",
        bytes_table(histories, names),
        *explained_section(summary.get("explained", [])),
        *settings_section(summary),
    ]
    return "\n".join(lines).rstrip() + "\n"


# ---- a small Markdown-to-HTML rendering of exactly what render_markdown writes ----

_IMAGE = re.compile(r"^!\[(.*?)\]\((.*?)\)$")


_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")  # a backslash-escaped ASCII punctuation character
_HELD = re.compile("\x00([0-9]+)\x00")


def _inline(text: str) -> str:
    """Bold and code spans; backslash-escaped characters (`escape_markdown`) stay literal text."""
    text = _ESCAPE.sub(lambda m: f"\x00{ord(m.group(1))}\x00", text.replace("\x00", ""))
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return _HELD.sub(lambda m: html.escape(chr(int(m.group(1))), quote=False), text)


def markdown_to_html(markdown: str, title: str = "CC-CMR federated demo") -> str:
    """Headings, paragraphs, bullet lists, pipe tables, images and fenced code: the subset the report uses."""
    out, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre>" + html.escape("\n".join(lines[i + 1 : j])) + "</pre>")
            i = j + 1
            continue
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = re.split(r"(?<!\\)\|", lines[i].strip()[1:-1])
                block.append([c.strip() for c in cells])
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in block[0])
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block[2:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        if m := re.match(r"^(#{1,3}) (.*)$", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := _IMAGE.match(line):
            alt, src = html.escape(m.group(1)), html.escape(m.group(2))
            out.append(f'<p><img src="{src}" alt="{alt}"></p>')
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
        "table{border-collapse:collapse;margin:0.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:0.9em}th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:0.6em}"
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
    )


def write_report(
    out_dir: Path, summary: Mapping[str, Any], histories: Mapping[str, Sequence[Mapping[str, Any]]]
) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` into `out_dir` (figures already there); returns both paths."""
    markdown = render_markdown(summary, histories)
    md_path, html_path = Path(out_dir) / "report.md", Path(out_dir) / "report.html"
    md_path.write_text(markdown, encoding="utf-8")
    html_path.write_text(markdown_to_html(markdown), encoding="utf-8")
    return md_path, html_path
