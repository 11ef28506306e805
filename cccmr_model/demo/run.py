"""`run_demo`: the whole system on one machine, step by step, ending in a readable report.

1. a phantom DICOM cohort: one export per site plus a held-out test set (`DIR/data`);
2. the federated CC-CMR run through all three phases on Flower's simulation runtime (`DIR/run`);
3. the baseline: the same federation without LGE guidance, no FIM phase (`DIR/baseline`);
4. both releases on the held-out test set (metrics with bootstrap CIs), the t-SNE before/after phase 2;
5. figures and `DIR/report.md` + `DIR/report.html`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from cccmr_model import run_folder
from cccmr_model.config import config_to_dict, load_config
from cccmr_model.config.schema import PHASES, ExperimentConfig
from cccmr_model.console import progress
from cccmr_model.demo import figures
from cccmr_model.demo.evaluate import checkpoint_state, evaluate_release, open_test_set, phase_end_rounds
from cccmr_model.demo.explained import explain_examples
from cccmr_model.demo.flower import FlowerSimulation
from cccmr_model.demo.keeper import CheckpointKeeper
from cccmr_model.demo.plan import CONFIG, CONFIG_NAME, DemoSize, demo_size, overrides, site_names
from cccmr_model.demo.report import BASELINE, RELEASE, write_report
from cccmr_model.errors import ConfigError
from cccmr_model.metrics import json_safe, markdown_table
from cccmr_model.rounds import round_line

log = logging.getLogger("cccmr.demo")

NAMES = {RELEASE: "CC-CMR (federated, LGE-guided FIM)", BASELINE: "Baseline (federated, cine only, no FIM)"}
FOLDERS = {RELEASE: "run", BASELINE: "baseline"}  # run folder of each federation in DIR
MARKER = ".cccmr-demo"  # marks a folder the demo may clean
OUTPUTS = ("data", "run", "baseline", "flower", "test-cache", "figures", "report.md", "report.html", "summary.json")


@dataclass(frozen=True)
class DemoOptions:
    out: Path
    sites: int = 2
    quick: bool = False
    seed: int = 0
    workers: int = 2  # phantom generation processes


@dataclass(frozen=True)
class DemoResult:
    report: Path
    html: Path
    release: Path
    baseline_release: Path
    seconds: float


class _Clock:
    """Wall time per step, logged as each step starts and ends."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.times = total, 0, {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.done += 1
        log.info("step %d/%d: %s", self.done, self.total, name)
        start = time.perf_counter()
        yield
        self.times[name] = round(time.perf_counter() - start, 1)
        log.info("step %d/%d done in %.1f s", self.done, self.total, self.times[name])


def run_demo(options: DemoOptions) -> DemoResult:
    out = Path(options.out).resolve()
    size, sites = demo_size(options.quick), site_names(options.sites)
    load_start = os.getloadavg()
    _clean(out)
    clock = _Clock(total=5)
    started = time.perf_counter()
    with clock.step(f"phantom cohort: {len(sites)} sites x {size.subjects} subjects + {size.test_subjects} test"):
        cohort = _phantom(out / "data", sites, size, options)
    runs = {key: overrides(size, sites, options.seed, baseline=key == BASELINE) for key in (RELEASE, BASELINE)}
    config = load_config(CONFIG_NAME, runs[RELEASE])  # the release run's resolved config (checks the overrides early)
    with FlowerSimulation(out / "flower") as sim:
        keeper = CheckpointKeeper(run_folder.checkpoint_dir(out / "run"), out / "run" / "kept-checkpoints")
        with clock.step(f"federated CC-CMR: {_schedule(config)}"), keeper:
            _federate(sim, out, "run", runs[RELEASE], len(sites))
        baseline_config = load_config(CONFIG_NAME, runs[BASELINE])
        with clock.step(f"federated baseline without LGE guidance: {_schedule(baseline_config)}"):
            _federate(sim, out, "baseline", runs[BASELINE], len(sites))
    histories = {key: _history(out / folder) for key, folder in FOLDERS.items()}
    with clock.step("evaluation of both releases on the held-out test set, t-SNE, explained subjects"):
        test_set, test_counts = open_test_set(out / "data" / "test", out / "test-cache", config)
        evaluations = {
            key: evaluate_release(NAMES[key], run_folder.release_dir(out / folder), test_set)
            for key, folder in FOLDERS.items()
        }
        tsne = _tsne(keeper, out, histories, test_set, config)
        release = run_folder.release_dir(out / "run")
        explained = explain_examples(release, out / "data" / "test", out / "figures" / "explained", out)
    with clock.step("figures"):
        fig = _figures(out / "figures", evaluations, histories, tsne.pop("figure"))
        summary = {
            "quick": options.quick,
            "names": NAMES,
            "sites": cohort["sites"],
            "test": {**cohort["test"], **test_counts},
            "val_fraction": config.data.val_fraction,
            "config": _config_summary(config),
            "overrides": runs,
            "table1": markdown_table({NAMES[k]: e.report for k, e in evaluations.items()}),
            "evaluation": {NAMES[k]: e.report for k, e in evaluations.items()},
            "releases": {k: {"path": str(e.release), "content_hash": e.content_hash} for k, e in evaluations.items()},
            "history_paths": {key: str(run_folder.history_path(out / folder)) for key, folder in FOLDERS.items()},
            "tsne": tsne,
            "explained": explained,
            "figures": {k: str(p.relative_to(out)) for k, p in fig.items()},
            "wall_times": {},
            "machine": {},
        }
    seconds = time.perf_counter() - started
    summary["wall_times"] = dict(clock.times)
    summary["total_seconds"] = round(seconds, 1)
    summary["machine"] = _machine(load_start)
    md, html = write_report(out, summary, histories)
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=1) + "\n")
    log.info("demo finished in %.1f s", seconds)
    return DemoResult(md, html, run_folder.release_dir(out / "run"), run_folder.release_dir(out / "baseline"), seconds)


def _clean(out: Path) -> None:
    """Remove what an earlier demo wrote into `out` (only the demo's own outputs: histories append); refuse a
    non-empty folder that no demo wrote, so that `--out` never deletes someone's `data/`."""
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConfigError(f"{out}: folder is not empty and was not written by cccmr demo; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by cccmr demo; its next run replaces this folder's outputs\n")
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _phantom(data: Path, sites: list[str], size: DemoSize, options: DemoOptions) -> dict[str, Any]:
    from cccmr_model.phantom.cohort import generate_cohort

    truths = generate_cohort(
        data, sites, size.subjects, options.seed, test_subjects=size.test_subjects, size="tiny",
        workers=options.workers, progress=progress,
    )  # fmt: skip

    def counts(name: str) -> dict[str, Any]:
        items = truths[name]
        return {"name": name, "subjects": len(items), "patients": sum(int(t["label"]) for t in items),
                "without_lge": sum(not t.get("has_lge", True) for t in items)}  # fmt: skip

    return {"sites": [counts(s) for s in sites], "test": counts("test")}


def _federate(sim: FlowerSimulation, out: Path, folder: str, items: list[str], num_sites: int) -> None:
    run_dir = out / folder
    shown = _RoundPrinter(run_folder.history_path(run_dir))
    sim.run_app(
        {
            "config-path": CONFIG,
            "config-overrides": ";".join(items),
            "run-dir": str(run_dir),
            "sim-data-dir": str(out / "data"),
            "sim-cache-dir": str(out / "flower" / "site-cache"),  # both runs share the sites' ingestion
        },
        num_supernodes=num_sites,
        name=folder,
        timeout=1800,
        on_line=shown,
    )
    shown.flush()


_FLOWER_LINE = re.compile(r"^INFO\s*:\s+\[ROUND|ERROR|Traceback|Exception")  # Flower's round starts, failures


class _RoundPrinter:
    """Shows Flower's streamed round lines and, as each round's history line appears, a one-line summary."""

    def __init__(self, history: Path) -> None:
        self.history, self.seen = history, 0

    def __call__(self, line: str) -> None:
        if _FLOWER_LINE.search(line):
            log.info("flower: %s", line.strip())
        self.flush()

    def flush(self) -> None:
        for record in run_folder.read_history(self.history)[self.seen :]:
            self.seen += 1
            log.info("%s", round_line(record))


def _history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_folder.history_path(run_dir)
    records = run_folder.read_history(path)
    if not records:
        raise RuntimeError(f"{path}: the federation wrote no rounds")
    return records


def _tsne(keeper: CheckpointKeeper, out: Path, histories, test_set, config: ExperimentConfig) -> dict[str, Any]:
    """Fig. 3 from the release run's own global checkpoints at the end of pretrain and of the FIM."""
    from cccmr_model.tsne import write_fig3

    ends = phase_end_rounds(histories[RELEASE])
    before, after = keeper.path(ends["pretrain"]), keeper.path(ends["fim"])
    source = "checkpoints of the release run"
    if before is None:  # not kept (extreme load): the baseline ran the identical pretraining schedule
        baseline_end = phase_end_rounds(histories[BASELINE])["pretrain"]
        before = run_folder.checkpoint_file(run_folder.checkpoint_dir(out / "baseline"), baseline_end)
        source = "after-pretrain checkpoint from the baseline run (identical pretraining schedule)"
    if after is None:
        raise RuntimeError(f"checkpoint of round {ends['fim']} (end of the FIM) was not kept")
    path = write_fig3(checkpoint_state(before), checkpoint_state(after), test_set, config,
                      out / "figures" / "tsne.png")  # fmt: skip
    return {"before_round": ends["pretrain"], "after_round": ends["fim"], "source": source, "figure": path}


def _figures(fig_dir: Path, evaluations, histories, tsne_path: Path) -> dict[str, Path]:
    curves = {NAMES[k]: (e.scores, e.labels, e.report["metrics"]["auc"]) for k, e in evaluations.items()}
    return {
        "roc": figures.roc_figure(curves, fig_dir / "roc.png"),
        "rounds": figures.rounds_figure(histories[RELEASE], fig_dir / "rounds.png"),
        "sigma": figures.sigma_figure(histories[RELEASE], fig_dir / "sigma.png"),
        "tsne": tsne_path,
        "bytes": figures.bytes_figure({NAMES[k]: h for k, h in histories.items()}, fig_dir / "bytes.png"),
    }


def _schedule(config: ExperimentConfig) -> str:
    phases = config.federation.phases
    return ", ".join(f"{p} {f.rounds} x {f.local_epochs} ep" for p, f in phases.items() if f.rounds)


def _config_summary(config: ExperimentConfig) -> dict[str, Any]:
    raw = config_to_dict(config)
    enc = raw["model"]["encoder"]
    return {
        "config": f"{CONFIG} (name {config.name})",
        "task": config.task,
        "encoder": f"{enc['arch']} embed_dim {enc['embed_dim']}, depths {enc['depths']}, window {enc['window_size']}",
        "input": f"{config.data.image_size} px, {config.data.frames} frames, slices {raw['data']['slices']}",
        "batch size per phase / lr": (
            " / ".join(str(config.train.phase_batch_size(p)) for p in PHASES) + f" / {config.train.lr}"
        ),
        "resample factor": config.train.resample_factor,
        "uncertainty weighting": config.train.uncertainty_weighting,
        "schedule (rounds x local epochs)": _schedule(config),
        "sites": ", ".join(config.federation.sites),
        "bootstrap": f"{config.evaluation.bootstrap_resamples} resamples, {config.evaluation.confidence:.0%} CI",
        "seed": config.seed,
    }


def _machine(load_start: tuple[float, float, float]) -> dict[str, Any]:
    import torch

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "CPU cores": os.cpu_count(),
        "load average at start (1/5/15 min)": " / ".join(f"{x:.1f}" for x in load_start),
        "load average at end": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
        "platform": platform.platform(),
        "python / torch / flwr": f"{platform.python_version()} / {torch.__version__} / {version('flwr')}",
        "cccmr": version("cccmr-federated"),
    }
