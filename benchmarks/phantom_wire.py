"""The wire formats' effect on accuracy: the release federation (FIM w U-A) per `federation.wire`, over seeds.

`python benchmarks/phantom_ablation.py --out DIR --seeds 0 1 2 --wires fp32 bf16 int8`

Per seed, on that seed's phantom cohort (`DIR/seed-S/data`, generated when missing), the federated FIM w U-A run
of `phantom_ablation` (same schedule, seed and sites) once per wire format, into `DIR/seed-S/fim-ua-WIRE`. fp32 is
the default wire, so its run is the ablation's own `DIR/seed-S/fim-ua` when that holds a release (nothing is
retrained). Each run is scored on the seed's held-out test set: the release's test AUC, each head's (4CH, SAX,
LGE) test AUC after pretraining and after the FIM, and the bytes per site and training round (down, up) from the
run's history. Writes `DIR/phantom-wire.md` (mean ± SD over seeds, and each wire − fp32 paired by seed) and
`DIR/phantom-wire.json`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cccmr_model.metrics import json_safe
from cccmr_model.run_folder import bytes_per_site
from cccmr_model.sequences import CINE_4CH, CINE_SAX, LGE_SAX

log = logging.getLogger("cccmr.bench.wire")

RELEASE = "FIM w U-A (release)"
HEADS = {f"{seq} head after {stage}": (stage, seq) for stage in ("pretraining", "the FIM (w U-A)")
         for seq in (CINE_4CH, CINE_SAX, LGE_SAX)}  # fmt: skip
BYTES = ("MB down per site per round", "MB up per site per round")


def run_folder_name(wire: str) -> str:
    """The run folder of the release federation with this wire (fp32: the ablation's own run)."""
    return "fim-ua" if wire == "fp32" else f"fim-ua-{wire}"


def wire_run(seed_dir: Path, seed: int, wire: str, items: Sequence[str], num_sites: int) -> dict[str, Any]:
    """Federate FIM w U-A with `wire` (unless its release exists), then score it: AUCs and bytes per round."""
    from benchmarks.phantom_ablation import federate_keeping_checkpoints, kept_state, sequence_aucs
    from cccmr_model.config import load_config
    from cccmr_model.demo.evaluate import evaluate_release, open_test_set
    from cccmr_model.demo.flower import FlowerSimulation
    from cccmr_model.run_folder import history_path, read_history, release_dir

    folder = run_folder_name(wire)
    run_dir = seed_dir / folder
    items = [*items, f"federation.wire={wire}", f"name=phantom-ablation-{folder}"]
    seconds = None
    if not release_dir(run_dir).is_dir():
        start = time.perf_counter()
        log.info("seed %d, wire %s: federating into %s", seed, wire, run_dir)
        with FlowerSimulation(seed_dir / "flower") as sim:
            federate_keeping_checkpoints(sim, seed_dir, folder, items, num_sites)
        seconds = round(time.perf_counter() - start, 1)
    config = load_config("tiny", items)
    test_set, _ = open_test_set(seed_dir / "data" / "test", seed_dir / "cache" / "test" / "test", config)
    history = read_history(history_path(run_dir))
    pretrained, after_fim = kept_state(run_dir, "pretrain"), kept_state(run_dir, "fim")

    release = evaluate_release(RELEASE, release_dir(run_dir), test_set).report["metrics"]["auc"]["value"]
    aucs = sequence_aucs({"pretraining": pretrained, "the FIM (w U-A)": after_fim}, test_set, config)
    rows: dict[str, float] = {RELEASE: release}
    for name, (stage, seq) in HEADS.items():
        rows[name] = aucs[stage][seq]["value"]
    rows.update(dict(zip(BYTES, round_bytes(history), strict=True)))
    return {"seed": seed, "wire": wire, "run": str(run_dir), "federated_s": seconds, "rows": rows}


def round_bytes(history: Sequence[Mapping[str, Any]]) -> tuple[float, float]:
    """(MB down, MB up) per site, mean over the pretrain and FIM rounds (what a training round sends)."""
    per_round = [bytes_per_site(r) for r in history if r["phase"] in ("pretrain", "fim")]
    down, up = (sum(values) / len(per_round) / 1e6 for values in zip(*per_round, strict=True))
    return down, up


def aggregate(runs: Sequence[Mapping[str, Any]], wires: Sequence[str]) -> dict[str, Any]:
    """Per row and wire: mean ± SD over seeds; per other wire: its difference to the first wire, paired by seed."""
    from benchmarks.phantom_ablation import spread

    seeds = sorted({r["seed"] for r in runs})
    value = {(r["wire"], r["seed"]): r["rows"] for r in runs}
    names = list(runs[0]["rows"])
    base = wires[0]
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        per_wire = {w: [value[(w, s)][name] for s in seeds] for w in wires}
        table[name] = {w: spread(v) for w, v in per_wire.items()}
        for w in wires[1:]:
            table[name][f"{w} − {base}"] = spread([a - b for a, b in zip(per_wire[w], per_wire[base], strict=True)])
    return {"seeds": seeds, "wires": list(wires), "rows": table}


def render(agg: Mapping[str, Any]) -> str:
    wires, base = agg["wires"], agg["wires"][0]
    columns = [*wires, *(f"{w} − {base}" for w in wires[1:])]
    lines = ["| Row | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for name, cells in agg["rows"].items():
        digits = 1 if name in BYTES else 3
        out = []
        for column in columns:
            s = cells[column]
            sign = "+" if "−" in column else ""
            out.append(f"{s['mean']:{sign}.{digits}f} ± {s['sd']:.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(out) + " |")
    seeds = ", ".join(map(str, agg["seeds"]))
    return (
        f"# Wire formats on the phantom cohort, seeds {seeds}\n\n"
        "The federated FIM w U-A run (the release) of `benchmarks/phantom_ablation.py`, once per "
        "`federation.wire`, scored on each seed's held-out test set: test AUC, mean ± SD over the seeds; "
        f"differences to {base} paired by seed. Bytes: per site and pretrain/FIM round.\n\n" + "\n".join(lines) + "\n"
    )


def run_wires(
    out: Path, seeds: Sequence[int], wires: Sequence[str], runs_for_seed, cohort_for_seed, num_sites: int
) -> dict[str, Any]:
    """Every (seed, wire) run (the cohort made first where missing), then `DIR/phantom-wire.md` / `.json`."""
    out = Path(out).resolve()
    runs = []
    for seed in seeds:
        seed_dir = out / f"seed-{seed}"
        if not (seed_dir / "data" / "test").is_dir():
            cohort_for_seed(seed_dir, seed)
        for wire in wires:
            runs.append(json_safe(wire_run(seed_dir, seed, wire, runs_for_seed(seed), num_sites)))
            log.info("seed %d, wire %s: %s", seed, wire, runs[-1]["rows"])
    agg = aggregate(runs, wires)
    (out / "phantom-wire.md").write_text(render(agg))
    payload = {"summary": agg, "runs": runs}
    (out / "phantom-wire.json").write_text(json.dumps(json_safe(payload), indent=1, allow_nan=False) + "\n")
    return payload
