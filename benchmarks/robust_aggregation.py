"""Robust aggregation on the phantom: FedAvg against the coordinate-wise median, honest and with one poisoned site.

`python benchmarks/robust_aggregation.py --out DIR [--sites 3] [--subjects 32] [--test-subjects 48] [--seed 0]
[--quick]`

A phantom cohort of `--sites` sites (the demo's generator) and a held-out test set. Four federations run the real
ServerApp strategy (`PhaseFedAvg`) and the real ClientApp handlers in this process (`InProcessGrid`: only the
network is replaced by a direct call), with `federation.aggregation` fedavg or median, all sites honest or the
last one poisoned. The poisoned site trains like the others, then sends its update sign-flipped and boosted to 95 %
of the round's update-norm bound (`federation.max_update_ratio`), so it passes every check the server makes on a
single reply. Each federation's final global model is scored on the test set (cine-only fused AUC, as the release
screens). Writes `DIR/robust-aggregation.md` and `.json`; `run(quick)` gives rows for `python -m benchmarks`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.supercore.task_identity import TaskIdentity

from cccmr_model.config import ExperimentConfig, load_config
from cccmr_model.demo.evaluate import open_test_set
from cccmr_model.demo.plan import site_names
from cccmr_model.engine import evaluate_model
from cccmr_model.metrics import binary_auc, json_safe
from cccmr_model.model import PHASE_GROUPS
from cccmr_model.release.files import is_release_key
from cccmr_model.run_folder import read_history
from cccmr_model.wire import decode, encode
from client import app as client_app
from server.app import initial_state
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg
from server.validation import l2_norm, update_bound

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: ours, not the `benchmarks` opacus installs
    sys.path.insert(0, str(ROOT))

from benchmarks.support.inprocess_grid import InProcessGrid, node_context  # noqa: E402

log = logging.getLogger("cccmr.bench.robust")

RUNS = (("fedavg", False), ("median", False), ("fedavg", True), ("median", True))  # (aggregation, poisoned)
ATTACK_FRACTION = 0.95  # of the round's update-norm bound
# Schedule (rounds x local epochs): full and --quick.
SCHEDULES = {
    False: {"pretrain": (5, 2), "fim": (2, 1), "fusion": (2, 1)},
    True: {"pretrain": (1, 1), "fim": (1, 1), "fusion": (1, 1)},
}


def federation_overrides(sites: list[str], aggregation: str, seed: int, quick: bool) -> list[str]:
    """The tiny config over `sites` with every site required each round, and the given aggregation."""
    items = [
        f"seed={seed}",
        f"federation.sites=[{','.join(sites)}]",
        f"federation.min_sites={len(sites)}",
        f"federation.aggregation={aggregation}",
        "train.resample_factor=2",
        "federation.evaluate_every=100",  # the final round evaluates; the test set scores each run
    ]
    for phase, (rounds, epochs) in SCHEDULES[quick].items():
        items += [f"federation.phases.{phase}.rounds={rounds}", f"federation.phases.{phase}.local_epochs={epochs}"]
    return items


def poisoned(handler, ratio: float):
    """A ClientApp train handler whose update is sign-flipped and scaled to `ATTACK_FRACTION` of the bound."""

    def train(msg: Message, context: Context) -> Message:
        reply = handler(msg, context)
        if reply.has_error():
            return reply
        sent = decode(msg.content["arrays"].to_numpy_ndarrays(), "sent")
        record_key = next(k for k in reply.content.array_records)
        trained = decode(reply.content[record_key].to_numpy_ndarrays(), "reply")
        expected = {k: sent[k] for k in trained}
        update = {k: trained[k] - expected[k] for k in trained}
        scale = ATTACK_FRACTION * update_bound(expected, None, ratio) / max(l2_norm(update), 1e-12)
        attacked = {k: expected[k] - np.float32(scale) * update[k] for k in trained}
        reply.content[record_key] = ArrayRecord(encode(attacked))
        return reply

    return train


def run_federation(config: ExperimentConfig, data: Path, cache: Path, run_dir: Path, poison_last: bool) -> dict:
    """One federation in-process; returns the final global state and the history's per-round record."""
    start = initial_state(config)
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, PHASE_GROUPS), start,
                           config=config, run_dir=run_dir,
                           eval_keys=[k for k in start if is_release_key(k)])  # fmt: skip
    nodes = {}
    for node_id, name in enumerate(config.federation.sites, 1):
        node_config = {"site": name, "data-path": str(data / name), "cache-path": str(cache / name)}
        train = client_app.train
        if poison_last and name == config.federation.sites[-1]:
            train = poisoned(train, config.federation.max_update_ratio)

        def handler(msg: Message, context: Context, train=train) -> Message:
            return client_app.evaluate(msg, context) if msg.metadata.message_type == "evaluate" else train(msg, context)

        nodes[node_id] = (handler, node_context(node_id, node_config))
    strategy.start(grid=InProcessGrid(nodes), initial_arrays=strategy.global_arrays(),
                   num_rounds=strategy.remaining_rounds(), timeout=config.federation.round_timeout_s)  # fmt: skip
    strategy.checkpoints.wait()
    return {"state": strategy.global_state, "history": read_history(strategy.history_path)}


def score(state: Mapping[str, np.ndarray], test_set: Any, config: ExperimentConfig) -> float:
    """The fused cine-only head's test AUC."""
    result = evaluate_model({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, test_set, config, "cpu")
    return float(binary_auc(result.scores[:, 1], result.labels))


def run_all(out: Path, n_sites: int, subjects: int, test_subjects: int, seed: int, quick: bool) -> dict:
    from cccmr_model.phantom.cohort import generate_cohort

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # a SuperLink sets these
    sites = site_names(n_sites)
    started = time.perf_counter()
    generate_cohort(out / "data", sites, subjects, seed, test_subjects=test_subjects, size="tiny")
    results: dict[str, Any] = {
        "sites": sites, "subjects": subjects, "test_subjects": test_subjects, "seed": seed,
        "schedule": SCHEDULES[quick], "attack_fraction": ATTACK_FRACTION, "runs": [],
    }  # fmt: skip
    test_set = None
    for aggregation, poison in RUNS:
        config = load_config("tiny", federation_overrides(sites, aggregation, seed, quick))
        if test_set is None:
            test_set, _ = open_test_set(out / "data" / "test", out / "cache" / "test", config)
        t0 = time.perf_counter()
        name = f"{aggregation}-{'poisoned' if poison else 'honest'}"
        fed = run_federation(config, out / "data", out / "cache", out / name, poison)
        rounds = fed["history"]
        rejected = sum(len(r["sites_failed"]) for r in rounds)
        auc = score(fed["state"], test_set, config)
        results["runs"].append({"aggregation": aggregation, "poisoned_site": sites[-1] if poison else None,
                                "test_auc": round(auc, 4), "rounds": len(rounds), "replies_rejected": rejected,
                                "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        log.info("%s: test AUC %.3f (%d replies rejected)", name, auc, rejected)
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def render(results: Mapping[str, Any]) -> str:
    sched = ", ".join(f"{p} {r} x {e}" for p, (r, e) in results["schedule"].items())
    lines = [
        "# Robust aggregation on the phantom",
        "",
        f"{len(results['sites'])} sites ({', '.join(results['sites'])}) x {results['subjects']} subjects, "
        f"{results['test_subjects']} held-out test subjects, seed {results['seed']}, tiny config, schedule "
        f"(rounds x local epochs) {sched}. Poisoned: the last site sends its real update sign-flipped and scaled to "
        f"{results['attack_fraction']:.0%} of the round's update-norm bound, so the server accepts it.",
        "",
        "| Aggregation | Sites | Test AUC (fused, cine only) | Replies rejected | Time (s) |",
        "|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        who = f"{run['poisoned_site']} poisoned" if run["poisoned_site"] else "all honest"
        lines.append(f"| {run['aggregation']} | {who} | {run['test_auc']:.3f} | {run['replies_rejected']} | "
                     f"{run['seconds']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run(quick: bool) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="robust-aggregation-") as tmp:
        size = (3, 8, 8) if quick else (3, 32, 48)
        results = run_all(Path(tmp), *size, seed=0, quick=quick)
    return [{"benchmark": "robust_aggregation", "metric": f"test AUC: {r['aggregation']}, "
             f"{'poisoned' if r['poisoned_site'] else 'honest'}", "value": r["test_auc"], "unit": ""}
            for r in results["runs"]]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=32, help="per site")
    parser.add_argument("--test-subjects", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one round per phase (a smoke run, not a result)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results = run_all(args.out, args.sites, args.subjects, args.test_subjects, args.seed, args.quick)
    (args.out / "robust-aggregation.json").write_text(json.dumps(json_safe(results), indent=1) + "\n")
    (args.out / "robust-aggregation.md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
