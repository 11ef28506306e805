"""What the federation adds on top of local training: bytes per round per site, round time against pure training
time, and the ServerApp's memory over 50 rounds.

- Bytes: the exact array payload (`ArrayRecord.count_bytes`) each round sends to and receives from one site per
  phase, from the round plan and the model of the config (default and tiny).
- Overhead: one round per phase run in-process through `PhaseFedAvg`, Flower records and the client's own
  `train_round` on a synthetic cohort; the overhead is round wall time minus the engine's training time. The
  network and Flower's polling (the SuperNode and the Grid poll every 3 s, measured on loopback in the deployment
  test) come on top and are not included here.
- Memory: the strategy's process RSS across 50 rounds with two instant sites answering with the full phase
  groups of the model (tiny when `quick`); flat means no growth from the first ten to the last ten rounds.

Standalone: `python -m benchmarks.federation_overhead [--quick]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from cccmr_model.config import ExperimentConfig, load_config
from cccmr_model.engine.datasets import LabelledSubset
from cccmr_model.model import PHASE_GROUPS
from cccmr_model.release.files import is_release_key
from cccmr_model.site.data import SiteData
from cccmr_model.site.tasks import train_round
from cccmr_model.wire import ARRAYS, CONFIG, TrainOrder, decode, encode
from server.app import initial_state
from server.schedule import plan_rounds, select
from server.strategy import PhaseFedAvg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: ours, not the `benchmarks` opacus installs
    sys.path.insert(0, str(ROOT))

from benchmarks.support.inprocess_grid import InProcessGrid, node_context  # noqa: E402
from benchmarks.support.synthetic import SyntheticCohort  # noqa: E402


def payload_rows(config: ExperimentConfig) -> list[dict]:
    state = initial_state(config)
    rows = []
    for plan in plan_rounds(config.federation.phases, PHASE_GROUPS):
        if plan.phase_round != 1:
            continue
        sent = ArrayRecord(encode(select(state, plan.sends))).count_bytes()
        received = ArrayRecord(encode(select(state, plan.trains))).count_bytes()
        for direction, value in (("sent", sent), ("received", received)):
            rows.append(_row(f"{plan.phase} bytes {direction} per site per round", value / 1e6, "MB", config))
    evaluate = ArrayRecord(encode({k: v for k, v in state.items() if is_release_key(k)})).count_bytes()
    rows.append(_row("evaluate bytes sent per site per round", evaluate / 1e6, "MB", config))
    return rows


def overhead_rows(config: ExperimentConfig, subjects: int) -> list[dict]:
    cohort = SyntheticCohort(subjects, config.data, seed=0)
    data = SiteData(LabelledSubset(cohort, range(subjects)), LabelledSubset(cohort, range(0)))
    train_seconds: list[float] = []

    def site(msg: Message, context: Context) -> Message:
        if msg.metadata.message_type == MessageType.EVALUATE:
            return _counts_reply(msg, "bench")
        order = TrainOrder.from_config(msg.content[CONFIG])
        start = time.perf_counter()
        trained, metrics = train_round(
            {k: torch.from_numpy(v) for k, v in decode(msg.content[ARRAYS].to_numpy_ndarrays(), "bench").items()},
            order.phase, data, config,
            epochs=order.local_epochs, lr_window=order.lr_window, device="cpu", seed=order.seed,
        )  # fmt: skip
        train_seconds.append(time.perf_counter() - start)
        arrays = ArrayRecord(encode({k: v.numpy() for k, v in trained.items()}))
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics),
                                   "site": ConfigRecord({"name": "bench"})}), reply_to=msg)  # fmt: skip

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        strategy = _strategy(config, Path(tmp))
        grid = InProcessGrid({1: (site, node_context(1, {"site": "bench"}))}, raise_errors=True)
        for server_round, plan in enumerate(strategy.plan, start=1):
            start = time.perf_counter()
            msgs = strategy.configure_train(server_round, strategy.global_arrays(), ConfigRecord(), grid)
            strategy.aggregate_train(server_round, grid.send_and_receive(msgs))
            _evaluate(strategy, server_round, grid)
            wall = time.perf_counter() - start
            overhead = wall - train_seconds[-1]
            rows.append(_row(f"{plan.phase} round overhead (in-process)", overhead, "s", config,
                             round_s=round(wall, 3), train_s=round(train_seconds[-1], 3),
                             overhead_pct=round(100 * overhead / train_seconds[-1], 1)))  # fmt: skip
    return rows


def memory_rows(config: ExperimentConfig, rounds: int = 50) -> list[dict]:
    def site(msg: Message, context: Context) -> Message:
        if msg.metadata.message_type == MessageType.EVALUATE:
            return _counts_reply(msg, context.node_config["site"])
        phase = str(msg.content["config"]["phase"])
        received = decode(msg.content["arrays"].to_numpy_ndarrays(), "bench")
        arrays = {k: v for k, v in received.items() if k.startswith(PHASE_GROUPS[phase])}
        return Message(RecordDict({"arrays": ArrayRecord(encode({k: v + np.float32(1e-3) for k, v in arrays.items()})),
                                   "metrics": MetricRecord({"num-examples": 8, "loss": 0.5}),
                                   "site": ConfigRecord({"name": context.node_config["site"]})}),
                       reply_to=msg)  # fmt: skip

    rss = []
    with tempfile.TemporaryDirectory() as tmp:
        strategy = _strategy(config, Path(tmp))
        first_fim = next(p for p in strategy.plan if p.phase == "fim")  # the largest exchange
        strategy.plan = [dataclasses.replace(first_fim, server_round=r) for r in range(1, rounds + 1)]
        sites = {n: (site, node_context(n, {"site": name})) for n, name in enumerate(config.federation.sites, 1)}
        grid = InProcessGrid(sites, raise_errors=True)
        strategy.expected_sites = len(grid.get_node_ids())
        for server_round in range(1, rounds + 1):
            msgs = strategy.configure_train(server_round, strategy.global_arrays(), ConfigRecord(), grid)
            strategy.aggregate_train(server_round, grid.send_and_receive(msgs))
            _evaluate(strategy, server_round, grid)
            rss.append(_rss_mb())
    # round 1 allocates the model copies once (warm-up); flat means rounds 2-11 and the last 10 agree
    first, last = float(np.mean(rss[1:11])), float(np.mean(rss[-10:]))
    return [_row(f"ServerApp RSS growth over {rounds} rounds", last - first, "MB", config,
                 rss_rounds2to11_mb=round(first, 1), rss_last10_mb=round(last, 1))]  # fmt: skip


def run(quick: bool) -> list[dict]:
    _task_identity()
    tiny = load_config("tiny", ["train.resample_factor=1", "federation.sites=[bench]"])
    rows = payload_rows(tiny) + payload_rows(load_config("default"))
    rows += overhead_rows(tiny, subjects=8 if quick else 24)
    default = load_config("default", ["federation.sites=[bench1, bench2]", "federation.min_sites=2"])
    two_tiny = load_config("tiny", ["federation.sites=[bench1, bench2]", "federation.min_sites=2"])
    rows += memory_rows(two_tiny if quick else default, rounds=20 if quick else 50)
    return rows


def _evaluate(strategy: PhaseFedAvg, server_round: int, grid: InProcessGrid) -> None:
    """The end of a round as `Strategy.start` runs it: the evaluation exchange when due, history and checkpoint."""
    msgs = list(strategy.configure_evaluate(server_round, ArrayRecord(), ConfigRecord(), grid))
    strategy.aggregate_evaluate(server_round, grid.send_and_receive(msgs) if msgs else [])


def _counts_reply(msg: Message, name: str) -> Message:
    """A stand-in evaluation reply (fixed counts: these benchmarks time the exchange, not the evaluation)."""
    metrics = MetricRecord({"num-examples": 2, "loss": 0.5, "confusion": [1, 0, 0, 1]})
    return Message(RecordDict({"metrics": metrics, "site": ConfigRecord({"name": name})}), reply_to=msg)


def _strategy(config: ExperimentConfig, run_dir: Path) -> PhaseFedAvg:
    state = initial_state(config)
    return PhaseFedAvg(
        plan_rounds(config.federation.phases, PHASE_GROUPS),
        state,
        config=config,
        run_dir=run_dir,
        eval_keys=[k for k in state if is_release_key(k)],
        checkpoint_keep=1,
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def _row(metric: str, value: float, unit: str, config: ExperimentConfig, **extra: object) -> dict:
    return {"benchmark": "federation_overhead", "metric": metric, "value": value, "unit": unit,
            "config": config.name, **extra}  # fmt: skip


def _task_identity() -> None:
    """Messages need a run identity; the SuperLink sets it in a real ServerApp process."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    for row in run(args.quick):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
