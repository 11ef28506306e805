"""Table 2 on a phantom cohort, centralized and federated, scored on one held-out phantom test set with bootstrap CIs.

`python benchmarks/phantom_ablation.py --out DIR [--seed S | --seeds 0 1 2] [--subjects N] [--test-subjects N]
[--mode central|federated|both] [--config tiny] [--set key=value ...] [--no-control] [--no-ceiling] [--reuse]
[--wires fp32 bf16 int8]`

1. a phantom DICOM cohort (`DIR/data`: one export per site and a held-out `test` export), as `cccmr demo` writes it;
2. central: `cccmr ablation --train-split` on the pooled sites (its five rows; `DIR/central`): the same training
   subjects as the federated sites (each site's `data.val_fraction` held out), per-phase epochs equal to the
   federation's rounds x local epochs;
3. federated (Flower simulation runtime, the demo's driver): row 3 = pretrain + fusion (`fim.rounds=0`), row 4 =
   FIM with fixed weights (`train.uncertainty_weighting=false`), row 5 = FIM with U-A; rows 1-2 score the 4CH and
   SAX heads of row 3's global checkpoint at the end of pretraining (the same encoders row 3 fuses);
4. per-sequence AUCs (4CH, SAX and LGE heads after pretraining and after the FIM) and per-subtype detection rates,
   which say where LGE guidance could help on the phantom and whether it did;
5. a compute-matched control per mode (skip with --no-control): no FIM, pretraining as long as pretraining + FIM,
   then fusion, so that "the FIM helped" can be told apart from "more cine training helped";
6. the learnability ceiling of the cohort (`benchmarks/phantom_ceiling.py`: logistic regression on simple image
   features and on the phantom's ground truth, per sequence; skip with --no-ceiling).

One seed (`--seed`, default 0) writes `DIR/phantom-ablation.md` (one Table-2 style table per mode, the diagnostics,
settings and wall times) and `DIR/phantom-ablation.json`. `--seeds 0 1 2` runs all of it once per seed (cohort
generated with that seed) into `DIR/seed-S/` (the same per-seed files) and writes one summary over the seeds to
`DIR/phantom-ablation.md` / `.json`: per row the test AUC as mean ± SD (min–max), central | federated |
federated − central, next to the ceiling; `--reuse` takes a seed whose `DIR/seed-S/phantom-ablation.json` exists
from there instead of rerunning it. `--wires fp32 bf16 int8` runs only the release federation once per wire
format and seed and compares them (`benchmarks/phantom_wire.py`, `DIR/phantom-wire.md`). `run(quick)` gives rows
for `python -m benchmarks`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.phantom_ceiling import ROWS as CEILING_ROWS  # noqa: E402
from benchmarks.phantom_ceiling import ceiling  # noqa: E402
from cccmr_model.demo.plan import FULL, QUICK, DemoSize, overrides, site_names  # noqa: E402
from cccmr_model.engine.ablation import ROWS, ablation_table  # noqa: E402
from cccmr_model.metrics import SUBTYPE_NAMES, json_safe, markdown_table, positive_scores, report  # noqa: E402
from cccmr_model.sequences import CINE_4CH, CINE_SAX, LGE_SAX  # noqa: E402

log = logging.getLogger("cccmr.bench.ablation")

ROW_NAMES = tuple(ROWS)  # "4CH cine only", "SAX cine only", "4CH + SAX fused", "FIM w/o U-A", "FIM w U-A"
# Central ablation checkpoint folder -> (row fed by it, phase whose final weights it holds).
CENTRAL_STATES = {"pretrain": "pretrain", "fused": "fusion", "fim-fixed": "fusion", "fim-ua": "fusion"}
# Federated runs: folder -> rows it gives.
FEDERATED_RUNS = {"fused": ROW_NAMES[2], "fim-fixed": ROW_NAMES[3], "fim-ua": ROW_NAMES[4]}
BOOTSTRAP = 1000
# Compute-matched controls (not Table 2 rows): no FIM, pretraining extended by the FIM's epochs (or rounds).
CONTROL_FUSED = "control: fused, pretrain + FIM's epochs, no LGE"
CONTROL_4CH = "control: 4CH head, pretrain + FIM's epochs"
# The benchmark's full size: the demo's full schedule and cohort (2 sites x 48 subjects, 48 test subjects).
BENCH = dataclasses.replace(FULL, subjects=48, test_subjects=48)
MODES = ("central", "federated")
DIFF = "federated − central"
# Multi-seed summary rows -> (where in a mode's results, key): a report's AUC, or the LGE head's AUC (aucs).
SUMMARY_ROWS = {
    "4CH head": ("reports", ROW_NAMES[0]),
    "SAX head": ("reports", ROW_NAMES[1]),
    "LGE head (after pretraining)": ("aucs", "after pretraining"),
    "4CH+SAX fused (no FIM)": ("reports", ROW_NAMES[2]),
    "FIM w/o U-A": ("reports", ROW_NAMES[3]),
    "FIM w U-A": ("reports", ROW_NAMES[4]),
    "control: no FIM/LGE, same epochs": ("controls", CONTROL_FUSED),
}
# Ceiling per sequence -> (image-feature row, ground-truth row) of phantom_ceiling.
TRUTH_CINE, TRUTH_LGE = "truth: cine (EF, volumes, wall)", "truth: LGE burden"
CEILING_SEQUENCES = {
    "4CH cine": ("image: 4CH cine", TRUTH_CINE),
    "SAX cine": ("image: SAX cine", TRUTH_CINE),
    "cine both (4CH + SAX)": ("image: cine both (4CH + SAX)", TRUTH_CINE),
    "LGE": ("image: LGE", TRUTH_LGE),
}
CEILING_OF = {  # summary row -> its ceiling sequence (every fused row scores cine only)
    "4CH head": "4CH cine", "SAX head": "SAX cine", "LGE head (after pretraining)": "LGE",
    **{row: "cine both (4CH + SAX)" for row in list(SUMMARY_ROWS)[3:]},
}  # fmt: skip
TARGETS = {"cine head": 0.85, "LGE head": 0.90, "LGE head within the ceiling": 0.05, "release": 0.90, "federated": 0.02}


def central_overrides(size: DemoSize, seed: int) -> list[str]:
    """Central epochs per phase = the federation's rounds x local epochs (the same number of passes per phase)."""
    items = [f"seed={seed}", f"train.resample_factor={size.resample_factor}"]
    items += [f"train.phases.{p}.epochs={size.rounds[p] * size.local_epochs[p]}" for p in size.rounds]
    return items


def long_pretrain(size: DemoSize) -> DemoSize:
    """The control's schedule: no FIM, pretraining as long as pretraining + FIM (same local epochs per round)."""
    if size.local_epochs["pretrain"] != size.local_epochs["fim"]:
        raise ValueError("the control needs equal local epochs in pretrain and fim")
    return dataclasses.replace(size, rounds={**size.rounds, "pretrain": size.rounds["pretrain"] + size.rounds["fim"]})


def federated_overrides(size: DemoSize, sites: list[str], seed: int, control: bool = False) -> dict[str, list[str]]:
    """Config overrides of the three federations (rows 3, 4, 5), built on the demo's; optionally the control."""
    extra = {}
    if control:
        long = overrides(long_pretrain(size), sites, seed, baseline=True)
        extra["control"] = [*long, "name=phantom-ablation-control"]
    return {
        "fused": [*overrides(size, sites, seed, baseline=True), "name=phantom-ablation-fused"],
        "fim-fixed": [
            *overrides(size, sites, seed, baseline=False),
            "train.uncertainty_weighting=false",
            "name=phantom-ablation-fim-fixed",
        ],
        "fim-ua": [*overrides(size, sites, seed, baseline=False), "name=phantom-ablation-fim-ua"],
        **extra,
    }


def empty_report(like: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """A row without results (cells 'n/a'), with the task and bootstrap settings of `like` for the table header."""
    return {"task": like["task"], "bootstrap": like["bootstrap"], "metrics": {}, "unavailable": reason}


def assemble_table(reports: Mapping[str, Mapping[str, Any] | None], title: str) -> str:
    """Table 2's layout (check-mark columns, then metrics with CIs) for the five rows; a missing row reads n/a."""
    present = [r for r in reports.values() if r is not None]
    if not present:
        raise ValueError("assemble_table: no row has results")
    rows = {name: reports.get(name) or empty_report(present[0], "not run") for name in ROW_NAMES}
    return f"{title}\n\n{ablation_table(rows)}"


def auc_table(aucs: Mapping[str, Mapping[str, Mapping[str, float]]], columns: Sequence[str]) -> str:
    """Rows = model state, columns = head; cells `AUC (low, high)`."""
    lines = ["| State | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for state, row in aucs.items():
        cells = [_ci(row[c]) if c in row else "n/a" for c in columns]
        lines.append(f"| {state} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def detection_counts(
    scores: Mapping[str, np.ndarray], labels: np.ndarray, subtypes: np.ndarray, lge_pos: np.ndarray
) -> dict[str, dict[str, list[int]]]:
    """Per row and group, [subjects called right, subjects]: healthy called healthy, patients called positive."""
    groups = {"healthy": labels == 0}
    groups.update({name: (labels == 1) & (subtypes == k) for k, name in enumerate(SUBTYPE_NAMES)})
    groups["patients, scar on LGE"] = (labels == 1) & lge_pos
    groups["patients, no scar"] = (labels == 1) & ~lge_pos
    out = {}
    for row, s in scores.items():
        called = np.asarray(s) >= 0.5
        out[row] = {
            g: [int((~called[m]).sum() if g == "healthy" else called[m].sum()), int(m.sum())] for g, m in groups.items()
        }
    return out


def counts_table(counts: Mapping[str, Mapping[str, Sequence[int]]]) -> str:
    """Rows x groups of `detection_counts` (or their sums over seeds) as rates; header `group (n=...)`."""
    first = next(iter(counts.values()))
    header = [f"{g} (n={n})" for g, (_, n) in first.items()]
    lines = ["| Row | " + " | ".join(header) + " |", "|" + "---|" * (len(header) + 1)]
    for row, groups in counts.items():
        cells = [f"{k / n:.2f}" if n else "n/a" for k, n in groups.values()]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def subtype_table(
    scores: Mapping[str, np.ndarray], labels: np.ndarray, subtypes: np.ndarray, lge_pos: np.ndarray
) -> str:
    """Fraction called positive (score >= 0.5) per row: healthy (specificity) and each subtype (its sensitivity)."""
    return counts_table(detection_counts(scores, labels, subtypes, lge_pos))


def _ci(entry: Mapping[str, float]) -> str:
    return f"{entry['value']:.3f} ({entry['ci_low']:.3f}, {entry['ci_high']:.3f})"


# ----------------------------------------------------------------------------------------------- evaluation


def head_scores(state, test_set, config, source: str) -> tuple[np.ndarray, np.ndarray]:
    """P(cardiomyopathy) of one head (fusion, a cine head, or the LGE head on every subject's LGE) and labels."""
    if source != LGE_SAX:
        from cccmr_model.engine import evaluate_model

        result = evaluate_model(state, test_set, config, "cpu", source=source)
        return result.scores, result.labels
    import torch

    from cccmr_model.engine.evaluate import eval_loader, eval_model
    from cccmr_model.engine.loading import to_device

    model = eval_model(state, config, torch.device("cpu"), (f"encoders.{LGE_SAX}.", f"heads.{LGE_SAX}."))
    probs, labels = [], []
    with torch.inference_mode():
        for batch in eval_loader(test_set, config, torch.device("cpu")):
            batch = to_device(batch, torch.device("cpu"))
            logits = model.heads[LGE_SAX](model.encode(LGE_SAX, batch[LGE_SAX]))  # B, C
            probs.append(torch.softmax(logits.float(), dim=1))
            labels.append(batch["label"])
    return torch.cat(probs).numpy(), torch.cat(labels).numpy().astype(np.int64)


def sequence_aucs(states: Mapping[str, Any], test_set, config) -> dict[str, dict[str, dict[str, float]]]:
    """AUC with CI of each head (4CH, SAX, LGE) for each named state (after pretraining, after the FIM)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, state in states.items():
        out[name] = {}
        for seq in (CINE_4CH, CINE_SAX, LGE_SAX):
            scores, labels = head_scores(state, test_set, config, seq)
            out[name][seq] = report(config.task, scores, labels, config.evaluation)["metrics"]["auc"]
    return out


def test_truth(data_root: Path, test_set) -> np.ndarray:
    """Per test subject (dataset order): does the phantom heart carry scar (visible on LGE)? Ground truth files."""
    gt = data_root / "ground_truth"
    return np.array(
        [bool(json.loads((gt / f"{sid}.json").read_text())["lge_positive"]) for sid in test_set.subject_ids]
    )


# -------------------------------------------------------------------------------------------------- modes


def run_central(
    out: Path, sites: list[str], config_name: str, items: list[str], control: list[str] | None = None
) -> dict[str, Any]:
    """`cccmr ablation --train-split` on the pooled sites; then every row's test scores and heads' AUCs."""
    import torch

    from cccmr_model.config import load_config
    from cccmr_model.demo.evaluate import open_test_set
    from cccmr_model.engine.ablation import run_ablation
    from cccmr_model.engine.checkpoint import checkpoint_path

    central = out / "central"
    config = load_config(config_name, items)
    run_ablation(
        [out / "data" / s for s in sites], [out / "data" / "test"], central, config, cache=out / "cache",
        device="cpu", train_split=True, tsne=False,
    )  # fmt: skip
    reports = json.loads((central / "ablation.json").read_text())
    test_set, _ = open_test_set(out / "data" / "test", out / "cache" / "test" / "test", config)  # the ablation's cache

    def final(folder: str, phase: str) -> dict:  # the ablation's own last-epoch checkpoint (holds RNG states)
        path = checkpoint_path(central / "checkpoints" / folder, phase)
        return torch.load(path, map_location="cpu", weights_only=False)["model"]

    states = {folder: final(folder, phase) for folder, phase in CENTRAL_STATES.items()}
    fim_state = final("fim-ua", "fim")
    scores = {}
    for row, (folder, source) in zip(
        ROW_NAMES, [("pretrain", CINE_4CH), ("pretrain", CINE_SAX), ("fused", "fusion"), ("fim-fixed", "fusion"),
                    ("fim-ua", "fusion")], strict=True,
    ):  # fmt: skip
        cfg = config if folder != "fim-fixed" else _fixed(config)
        scores[row] = positive_scores(head_scores(states[folder], test_set, cfg, source)[0])
    aucs = sequence_aucs(
        {"after pretraining": states["pretrain"], "after the FIM (w U-A)": fim_state}, test_set, config
    )
    controls = {}
    if control is not None:
        from cccmr_model.engine.central import ingest_sites, split_sites, train_phases

        cfg = load_config(config_name, control)
        train_set = split_sites(ingest_sites([out / "data" / s for s in sites], out / "cache" / "train", cfg), cfg)[0]
        res = train_phases(
            train_set, cfg, phases=("pretrain", "fusion"), checkpoint_dir=central / "checkpoints" / "control"
        )
        for name, state, source in (
            (CONTROL_4CH, res["pretrain"].state, CINE_4CH),
            (CONTROL_FUSED, res["fusion"].state, "fusion"),
        ):
            s, labels = head_scores(state, test_set, cfg, source)
            controls[name], scores[name] = report(cfg.task, s, labels, cfg.evaluation), positive_scores(s)
    return {"reports": reports, "controls": controls, "scores": scores, "aucs": aucs, "test_set": test_set}


def _fixed(config):
    return dataclasses.replace(config, train=dataclasses.replace(config.train, uncertainty_weighting=False))


def federate_keeping_checkpoints(sim, out: Path, folder: str, items: Sequence[str], num_sites: int) -> None:
    """One federation on the simulation `sim` into `out/folder`, every round's checkpoint kept (`kept_state`)."""
    from cccmr_model.demo.keeper import CheckpointKeeper
    from cccmr_model.demo.run import _federate
    from cccmr_model.run_folder import checkpoint_dir

    with CheckpointKeeper(checkpoint_dir(out / folder), out / folder / "kept-checkpoints"):
        _federate(sim, out, folder, list(items), num_sites)


def kept_state(run_dir: Path, phase: str) -> dict:
    """The global model at the end of `phase` of a run federated by `federate_keeping_checkpoints`."""
    from cccmr_model.demo.evaluate import checkpoint_state, phase_end_rounds
    from cccmr_model.demo.run import _history
    from cccmr_model.run_folder import checkpoint_file

    end = phase_end_rounds(_history(run_dir))[phase]
    return checkpoint_state(checkpoint_file(run_dir / "kept-checkpoints", end))


def run_federated(out: Path, sites: list[str], runs: Mapping[str, list[str]], config_name: str) -> dict[str, Any]:
    """The three federations on one simulation SuperLink, then rows 1-5 on the test set."""
    from cccmr_model.config import load_config
    from cccmr_model.demo.evaluate import evaluate_release, open_test_set
    from cccmr_model.demo.flower import FlowerSimulation
    from cccmr_model.run_folder import release_dir

    times: dict[str, float] = {}
    with FlowerSimulation(out / "flower") as sim:
        for folder in runs:
            start = time.perf_counter()
            log.info("federation %s: %s", folder, "; ".join(runs[folder]))
            federate_keeping_checkpoints(sim, out, folder, runs[folder], len(sites))
            times[f"federated {folder}"] = round(time.perf_counter() - start, 1)
            log.info("federation %s done in %.0f s", folder, times[f"federated {folder}"])
    start = time.perf_counter()
    first = "fused" if "fused" in runs else next(iter(runs))  # every run pretrains alike: rows 1-2 from any
    config = load_config(config_name, runs[first])
    test_set, _ = open_test_set(out / "data" / "test", out / "cache" / "test" / "test", config)
    reports, scores = {}, {}
    for folder, row in FEDERATED_RUNS.items():
        if folder in runs:
            ev = evaluate_release(row, release_dir(out / folder), test_set)
            reports[row], scores[row] = {**ev.report}, ev.scores

    def kept(folder: str, phase: str):
        return kept_state(out / folder, phase)

    pre = kept(first, "pretrain")
    for row, seq in zip(ROW_NAMES[:2], (CINE_4CH, CINE_SAX), strict=True):
        s, labels = head_scores(pre, test_set, config, seq)
        reports[row], scores[row] = report(config.task, s, labels, config.evaluation), positive_scores(s)
    states = {
        "after pretraining": pre,
        **({"after the FIM (w U-A)": kept("fim-ua", "fim")} if "fim-ua" in runs else {}),
    }
    aucs = sequence_aucs(states, test_set, config)
    reports = {r: reports[r] for r in ROW_NAMES if r in reports}  # Table 2's order
    scores = {r: scores[r] for r in ROW_NAMES if r in scores}
    controls = {}
    if "control" in runs:
        s, labels = head_scores(kept("control", "pretrain"), test_set, config, CINE_4CH)
        controls[CONTROL_4CH] = report(config.task, s, labels, config.evaluation)
        scores[CONTROL_4CH] = positive_scores(s)
        ev = evaluate_release(CONTROL_FUSED, release_dir(out / "control"), test_set)
        controls[CONTROL_FUSED], scores[CONTROL_FUSED] = {**ev.report}, ev.scores
    times["federated evaluation"] = round(time.perf_counter() - start, 1)
    return {"reports": reports, "controls": controls, "scores": scores, "aucs": aucs, "test_set": test_set,
            "times": times}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- main


def cohort_ceiling(out: Path, names: Sequence[str], config) -> dict[str, Any] | None:
    """`phantom_ceiling.ceiling` of this seed's cohort, on the central ablation's ingestion caches (the same data
    settings: `cache/train/<site>`, `cache/test/test`, linked from `cache/ceiling/`; ingested here when missing).
    A failure is logged and gives None: it must not cost the training runs' results."""
    root = out / "cache" / "ceiling"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for group, target in [
            *((n, out / "cache" / "train" / n) for n in names),
            ("test", out / "cache" / "test" / "test"),
        ]:
            target.mkdir(parents=True, exist_ok=True)
            link = root / group
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)
        return ceiling(out / "data", root, config)
    except Exception:  # reported, not fatal
        log.exception("learnability ceiling failed; the tables go without it")
        return None


def benchmark(
    out: Path, *, size: DemoSize, mode: str = "both", config_name: str = "tiny", extra: Sequence[str] = (),
    seed: int = 0, sites: int = 2, control: bool = True, ceiling_rows: bool = True,
    federated_runs: Sequence[str] = tuple(FEDERATED_RUNS),
) -> dict[str, Any]:  # fmt: skip
    """Generate the cohort, run the modes and the ceiling, write the Markdown and JSON; returns the summary."""
    from cccmr_model.demo.run import DemoOptions, _phantom
    from cccmr_model.errors import ConfigError

    if mode != "central" and config_name not in ("tiny", "configs/tiny.yaml"):
        raise ConfigError(f"phantom_ablation: the federated mode runs the demo's app config (tiny), not {config_name}")
    names = site_names(sites)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    started = time.perf_counter()
    cohort = _phantom(out / "data", names, size, DemoOptions(out=out, seed=seed))
    times["phantom cohort"] = round(time.perf_counter() - started, 1)
    common = [f"evaluation.bootstrap_resamples={BOOTSTRAP}", *extra]
    central_items = [*central_overrides(size, seed), *common]
    chosen = {*federated_runs, *(("control",) if control else ())}
    fed_runs = {k: [*v, *common] for k, v in federated_overrides(size, names, seed, control).items() if k in chosen}
    control_items = [*central_overrides(long_pretrain(size), seed), *common] if control else None
    cohort_rows = None
    if ceiling_rows:
        from cccmr_model.config import load_config

        start = time.perf_counter()
        cohort_rows = cohort_ceiling(out, names, load_config(config_name, central_items))
        times["ceiling (ingestion + fits)"] = round(time.perf_counter() - start, 1)
    results: dict[str, dict[str, Any]] = {}
    if mode in ("central", "both"):
        start = time.perf_counter()
        results["central"] = run_central(out, names, config_name, central_items, control_items)
        times["central (ablation + evaluation)"] = round(time.perf_counter() - start, 1)
    if mode in ("federated", "both"):
        results["federated"] = run_federated(out, names, fed_runs, config_name)
        times.update(results["federated"].pop("times"))
    times["total"] = round(time.perf_counter() - started, 1)
    test_root = out / "data" / "test"
    modes = {}
    for m, r in results.items():
        ts = r["test_set"]
        modes[m] = {k: r[k] for k in ("reports", "controls", "aucs")}
        modes[m]["detection"] = detection_counts(
            r["scores"], np.asarray(ts.labels), np.asarray(ts.subtypes), test_truth(test_root, ts)
        )
    summary = {
        "seed": seed, "cohort": cohort, "mode": mode, "config": config_name, "size": dataclasses.asdict(size),
        "central_overrides": central_items, "central_control_overrides": control_items,
        "federated_overrides": fed_runs, "times": times, "modes": modes, "ceiling": cohort_rows,
    }  # fmt: skip
    (out / "phantom-ablation.md").write_text(render(summary, results))
    (out / "phantom-ablation.json").write_text(json.dumps(json_safe(summary), indent=1, allow_nan=False) + "\n")
    return summary


def render(summary: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]) -> str:
    size, cohort = summary["size"], summary["cohort"]
    sites = ", ".join(f"{s['name']} {s['subjects']} ({s['patients']} patients)" for s in cohort["sites"])
    schedule = ", ".join(f"{p} {size['rounds'][p]} x {size['local_epochs'][p]}" for p in size["rounds"])
    parts = [
        "# Table 2 on the phantom cohort\n",
        f"Cohort: {sites}; test {cohort['test']['subjects']} ({cohort['test']['patients']} patients). "
        f"Config `{summary['config']}`; schedule (rounds x local epochs; central epochs = their product): "
        f"{schedule}; resample factor {size['resample_factor']}.\n",
    ]
    for mode, result in results.items():
        title = f"## {mode.capitalize()}"
        if mode == "federated":
            title += " (rows 1-2: the 4CH and SAX heads of row 3's global model at the end of pretraining)"
        parts.append(assemble_table(result["reports"], title))
        if result["controls"]:
            parts.append(
                "Compute-matched control (not a Table 2 row): no FIM, pretraining as long as pretraining + FIM "
                f"({mode}); same test set.\n\n" + markdown_table(result["controls"], first_column="Control")
            )
        parts.append(f"Per-sequence AUC ({mode}):\n\n" + auc_table(result["aucs"], ("cine_4ch", "cine_sax", "lge_sax")))
        parts.append(
            f"Fraction called positive (score >= 0.5) per group ({mode}; healthy: fraction called healthy):\n\n"
            + counts_table(summary["modes"][mode]["detection"])
        )
    if summary.get("ceiling"):
        rows = summary["ceiling"]["rows"]
        lines = ["| Features | AUC | " + " | ".join(SUBTYPE_NAMES) + " |", "|" + "---|" * (len(SUBTYPE_NAMES) + 2)]
        for name in CEILING_ROWS:
            cells = [_num(rows[name]["auc"]), *(_num(rows[name]["subtypes"][t]) for t in SUBTYPE_NAMES)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append(
            "Learnability ceiling of this cohort (`benchmarks/phantom_ceiling.py`: logistic regression on the "
            "training sites, test AUC; subtype columns: that subtype's test patients vs all healthy):\n\n"
            + "\n".join(lines) + "\n"
        )  # fmt: skip
    parts.append("Wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["times"].items()) + "\n")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- several seeds


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:+.3f}"


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, SD (ddof 1; 0 for one value), min and max of the finite values (None counts as missing)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"values": list(values), "n": 0, "mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan}
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"values": list(values), "n": int(v.size), "mean": float(v.mean()), "sd": sd, "min": float(v.min()),
            "max": float(v.max())}  # fmt: skip


def seed_auc(summary: Mapping[str, Any], mode: str, row: str) -> float:
    """Test AUC of a summary row in one seed's summary (NaN where the mode, row or value is missing)."""
    data = summary["modes"].get(mode)
    if data is None:
        return math.nan
    where, key = SUMMARY_ROWS[row]
    if where == "aucs":
        entry = (data["aucs"].get(key) or {}).get(LGE_SAX)
    else:
        entry = ((data[where].get(key) or {}).get("metrics") or {}).get("auc")
    value = entry.get("value") if entry else None
    return math.nan if value is None else float(value)


def _minus(a: Sequence[float], b: Sequence[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]  # NaN where either is missing


def aggregate(per_seed: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Over seeds: each summary row's AUC per mode and federated − central (paired by seed), the ceiling rows, the
    LGE-guidance contrast (FIM w U-A − compute-matched control, paired), and detection counts summed over seeds."""
    seeds = list(per_seed)
    rows: dict[str, dict[str, Any]] = {}
    for row in SUMMARY_ROWS:
        values = {m: [seed_auc(per_seed[s], m, row) for s in seeds] for m in MODES}
        rows[row] = {
            **{m: spread(values[m]) for m in MODES},
            DIFF: spread(_minus(values["federated"], values["central"])),
        }
    fim, control = "FIM w U-A", "control: no FIM/LGE, same epochs"
    guidance = {m: spread(_minus(rows[fim][m]["values"], rows[control][m]["values"])) for m in MODES}
    ceilings = [per_seed[s].get("ceiling") for s in seeds]
    ceiling_rows = {name: spread([c["rows"][name]["auc"] if c else None for c in ceilings]) for name in CEILING_ROWS}
    detection: dict[str, dict[str, dict[str, list[int]]]] = {}
    for mode in MODES:
        for s in seeds:
            counts = (per_seed[s]["modes"].get(mode) or {}).get("detection") or {}
            for row, groups in counts.items():
                target = detection.setdefault(mode, {}).setdefault(row, {})
                for group, (k, n) in groups.items():
                    total = target.setdefault(group, [0, 0])
                    total[0], total[1] = total[0] + k, total[1] + n
    times = {s: per_seed[s]["times"].get("total") for s in seeds}
    return {"seeds": seeds, "rows": rows, "lge_guidance": guidance, "ceiling": ceiling_rows,
            "detection": detection, "times": times}  # fmt: skip


def _cell(stats: Mapping[str, Any], signed: bool = False) -> str:
    if not stats["n"]:
        return "n/a"
    sign = "+" if signed else ""
    return f"{stats['mean']:{sign}.3f} ± {stats['sd']:.3f} ({stats['min']:{sign}.2f}–{stats['max']:{sign}.2f})"


def _pair(stats: Mapping[str, Any]) -> str:
    return "n/a" if not stats["n"] else f"{stats['mean']:+.3f} ± {stats['sd']:.3f}"


def ceiling_value(agg: Mapping[str, Any], sequence: str) -> tuple[float, float]:
    """(image-feature, ground-truth) ceiling AUC of a sequence, mean over seeds."""
    image, truth = CEILING_SEQUENCES[sequence]
    return agg["ceiling"][image]["mean"], agg["ceiling"][truth]["mean"]


def target_lines(agg: Mapping[str, Any]) -> list[str]:
    """The issue's targets, read off the seed means (yes / no per mode)."""
    rows, lines = agg["rows"], []

    def per_mode(row: str, test) -> str:
        cells = []
        for m in MODES:
            mean = rows[row][m]["mean"]
            cells.append(f"{m} {_num(mean, 3)} ({'n/a' if math.isnan(mean) else 'yes' if test(mean) else 'no'})")
        return ", ".join(cells)

    for row in ("4CH head", "SAX head"):
        lines.append(f"- {row} ≥ {TARGETS['cine head']:.2f}: " + per_mode(row, lambda v: v >= TARGETS["cine head"]))
    lge_ceiling = max(ceiling_value(agg, "LGE"))
    near = TARGETS["LGE head within the ceiling"]
    lines.append(
        f"- LGE head ≥ {TARGETS['LGE head']:.2f} or within {near:.2f} of the LGE ceiling ({_num(lge_ceiling)}): "
        + per_mode(
            "LGE head (after pretraining)",
            lambda v: v >= TARGETS["LGE head"] or (math.isfinite(lge_ceiling) and v >= lge_ceiling - near),
        )
    )  # fmt: skip
    for row in ("4CH+SAX fused (no FIM)", "FIM w U-A"):
        lines.append(f"- {row} ≥ {TARGETS['release']:.2f}: " + per_mode(row, lambda v: v >= TARGETS["release"]))
    g = agg["lge_guidance"]
    lines.append("- FIM w U-A beats the compute-matched control: " + ", ".join(
        f"{m} {_pair(g[m])} ({'n/a' if not g[m]['n'] else 'yes' if g[m]['mean'] > 0 else 'no'})" for m in MODES
    ))  # fmt: skip
    d = agg["rows"]["FIM w U-A"][DIFF]
    ok = "n/a" if not d["n"] else "yes" if round(abs(d["mean"]), 3) <= TARGETS["federated"] else "no"
    lines.append(f"- federated within {TARGETS['federated']:.2f} AUC of central (FIM w U-A): {_pair(d)} ({ok})")
    return lines


def render_seeds(agg: Mapping[str, Any], per_seed: Mapping[int, Mapping[str, Any]]) -> str:
    """The summary over seeds: one AUC table, the two contrasts, the ceiling, pooled detection rates, targets."""
    seeds = agg["seeds"]
    first = per_seed[seeds[0]]
    size, cohort = first["size"], first["cohort"]
    schedule = ", ".join(f"{p} {size['rounds'][p]} x {size['local_epochs'][p]}" for p in size["rounds"])
    sites = " + ".join(str(s["subjects"]) for s in cohort["sites"])
    n = len(seeds)
    parts = [
        f"# Table 2 on the phantom cohort, {n} seed{'s' * (n > 1)} ({', '.join(map(str, seeds))})\n",
        f"Per seed: a phantom cohort generated with that seed ({sites} training subjects, {cohort['test']['subjects']} "
        f"held-out test subjects), config `{first['config']}`, schedule (rounds x local epochs; central epochs = "
        f"their product) {schedule}, resample factor {size['resample_factor']}; the model's seed = the cohort's. "
        f"Per-seed tables with CIs: `seed-S/phantom-ablation.md`.\n",
        f"Test AUC, mean ± SD over the seeds (min–max). `{DIFF}` is paired by seed. Ceiling: logistic regression on "
        "simple image features / on the phantom's ground truth (`benchmarks/phantom_ceiling.py`, same cohorts, "
        "mean over seeds; the fused rows score cine only, so their ceiling is `cine both`).\n",
    ]  # fmt: skip
    head = ["Row", "central", "federated", DIFF, "ceiling (image / truth)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, stats in agg["rows"].items():
        image, truth = ceiling_value(agg, CEILING_OF[row])
        cells = [row, _cell(stats["central"]), _cell(stats["federated"]), _cell(stats[DIFF], signed=True),
                 f"{_num(image)} / {_num(truth)}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    parts.append("\n".join(lines) + "\n")
    g, d = agg["lge_guidance"], agg["rows"]["FIM w U-A"][DIFF]
    parts.append(
        "LGE guidance (FIM w U-A − control): " + ", ".join(f"{m} {_pair(g[m])}" for m in MODES) + " (paired by seed; "
        + "; ".join(f"{m} per seed " + ", ".join(map(_signed, g[m]["values"])) for m in MODES) + ")\n\n"
        f"federated − central (FIM w U-A): {_pair(d)} (per seed " + ", ".join(map(_signed, d["values"])) + ")\n"
    )  # fmt: skip
    lines = ["| Sequence | image features | ground truth |", "|---|---|---|"]
    for sequence, (image, truth) in CEILING_SEQUENCES.items():
        lines.append(f"| {sequence} | {_cell(agg['ceiling'][image])} | {_cell(agg['ceiling'][truth])} |")
    parts.append(
        f"Learnability ceiling per sequence (test AUC, mean ± SD (min–max); ground truth: `{TRUTH_CINE}` for the "
        f"cine views, `{TRUTH_LGE}` for LGE):\n\n" + "\n".join(lines) + "\n"
    )
    for mode, counts in agg["detection"].items():
        parts.append(
            f"Fraction called positive (score >= 0.5) per group, pooled over the seeds ({mode}; healthy: fraction "
            "called healthy):\n\n" + counts_table(counts)
        )
    parts.append("Targets (seed means):\n\n" + "\n".join(target_lines(agg)) + "\n")
    parts.append(
        "Wall time per seed (s): " + ", ".join(f"seed {s} {_num(t, 0)}" for s, t in agg["times"].items()) + "\n"
    )
    return "\n".join(parts)


def run_seeds(out: Path, seeds: Sequence[int], *, reuse: bool = False, **kwargs: Any) -> dict[str, Any]:
    """`benchmark` once per seed into `out/seed-S` (or its JSON, with `reuse`), then the summary over seeds."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        folder = out / f"seed-{seed}"
        done = folder / "phantom-ablation.json"
        if reuse and done.is_file():
            log.info("seed %d: reusing %s", seed, done)
            per_seed[seed] = json.loads(done.read_text())
            continue
        log.info("seed %d: starting", seed)
        per_seed[seed] = json_safe(benchmark(folder, seed=seed, **kwargs))
        log.info("seed %d done in %.0f s", seed, per_seed[seed]["times"]["total"])
    agg = aggregate(per_seed)
    (out / "phantom-ablation.md").write_text(render_seeds(agg, per_seed))
    payload = {"summary": agg, "per_seed": {str(s): v for s, v in per_seed.items()}}
    (out / "phantom-ablation.json").write_text(json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n")
    return payload


def run(quick: bool) -> list[dict]:
    """Rows for `python -m benchmarks`: AUC with CI of the five rows per mode (quick: the demo's quick size)."""
    size = QUICK if quick else BENCH
    with tempfile.TemporaryDirectory(prefix="phantom-ablation-") as tmp:
        summary = benchmark(Path(tmp), size=size)
    rows = []
    for mode, data in summary["modes"].items():
        for name in ROW_NAMES:
            auc = data["reports"][name]["metrics"]["auc"]
            rows.append({
                "benchmark": "phantom_ablation", "metric": f"{mode} AUC: {name}", "value": auc["value"], "unit": "",
                "note": f"95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f}; {size.subjects}/site x 2, "
                        f"test {size.test_subjects}",
            })  # fmt: skip
        for name, control in data["controls"].items():
            auc = control["metrics"]["auc"]
            rows.append({"benchmark": "phantom_ablation", "metric": f"{mode} AUC: {name}", "value": auc["value"],
                         "unit": "", "note": f"95% CI {auc['ci_low']:.3f}-{auc['ci_high']:.3f}"})  # fmt: skip
    rows.append({"benchmark": "phantom_ablation", "metric": "wall time", "value": summary["times"]["total"],
                 "unit": "s", "note": "cohort + both modes"})  # fmt: skip
    return rows


def with_schedule(size: DemoSize, items: Sequence[str]) -> DemoSize:
    """`size` with `PHASE=ROUNDSxEPOCHS` items applied (e.g. `pretrain=15x1`)."""
    rounds, epochs = dict(size.rounds), dict(size.local_epochs)
    for item in items:
        phase, _, value = item.partition("=")
        r, _, e = value.partition("x")
        if phase not in rounds or not (r.isdigit() and e.isdigit()):
            raise SystemExit(f"--schedule {item!r}: expected PHASE=ROUNDSxEPOCHS with PHASE one of {sorted(rounds)}")
        rounds[phase], epochs[phase] = int(r), int(e)
    return dataclasses.replace(size, rounds=rounds, local_epochs=epochs)


def compare_wires(
    out: Path, seeds: Sequence[int], wires: Sequence[str], size: DemoSize, sites: int, extra: Sequence[str]
) -> dict[str, Any]:
    """`phantom_wire.run_wires` with this benchmark's release federation and cohorts."""
    from benchmarks.phantom_wire import run_wires
    from cccmr_model.demo.run import DemoOptions, _phantom

    names = site_names(sites)

    def runs_for_seed(seed: int) -> list[str]:  # as `benchmark` runs FIM w U-A
        items = federated_overrides(size, names, seed)["fim-ua"]
        return [*items, f"evaluation.bootstrap_resamples={BOOTSTRAP}", *extra]

    def cohort_for_seed(seed_dir: Path, seed: int) -> None:
        _phantom(seed_dir / "data", names, size, DemoOptions(out=seed_dir, seed=seed))

    return run_wires(Path(out), seeds, wires, runs_for_seed, cohort_for_seed, len(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--subjects", type=int, default=BENCH.subjects, help="per site")
    parser.add_argument("--test-subjects", type=int, default=BENCH.test_subjects)
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--mode", choices=("central", "federated", "both"), default="both")
    parser.add_argument("--config", default="tiny", help="config name (configs/NAME.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="key=value, both modes")
    parser.add_argument("--quick", action="store_true", help="the demo's quick schedule")
    parser.add_argument("--seed", type=int, default=0, help="one seed (cohort and model), files in DIR")
    parser.add_argument("--seeds", type=int, nargs="+", help="one run per seed in DIR/seed-S, summary in DIR")
    parser.add_argument("--reuse", action="store_true", help="--seeds: take finished seeds from their JSON")
    parser.add_argument("--no-control", action="store_true", help="skip the compute-matched no-FIM control")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the learnability ceiling")
    parser.add_argument(
        "--federated-runs",
        nargs="+",
        choices=tuple(FEDERATED_RUNS),
        default=list(FEDERATED_RUNS),
        help="federated mode: only these of the three runs (their rows; the rest read n/a)",
    )
    parser.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="PHASE=ROUNDSxEPOCHS",
        help="override one phase's rounds x local epochs (central epochs follow), e.g. pretrain=15x1",
    )
    parser.add_argument("--wires", nargs="+", choices=("fp32", "bf16", "int8"),
                        help="only the release federation, once per wire format (first = reference)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    base = QUICK if args.quick else BENCH
    size = with_schedule(dataclasses.replace(base, subjects=args.subjects, test_subjects=args.test_subjects),
                         args.schedule)  # fmt: skip
    if args.wires:
        compare_wires(args.out, args.seeds or [args.seed], args.wires, size, args.sites, args.overrides)
        print((Path(args.out) / "phantom-wire.md").read_text())
        return 0
    kwargs = {"size": size, "mode": args.mode, "config_name": args.config, "extra": args.overrides,
              "sites": args.sites, "control": not args.no_control, "ceiling_rows": not args.no_ceiling,
              "federated_runs": args.federated_runs}  # fmt: skip
    if args.seeds:
        payload = run_seeds(args.out, args.seeds, reuse=args.reuse, **kwargs)
        times = payload["summary"]["times"]
    else:
        times = benchmark(args.out, seed=args.seed, **kwargs)["times"]
    print((Path(args.out) / "phantom-ablation.md").read_text())
    print(f"wall times: {times}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
