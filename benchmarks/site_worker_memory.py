"""The warm site worker over many rounds: its memory stays flat and each message costs no process start-up.

`python benchmarks/site_worker_memory.py [--rounds 50] [--subjects 12] [--out FILE.json]`

Starts a real `cccmr site-worker` (one thread) on a phantom site (tiny config), then sends it `--rounds` train
messages over the local channel exactly as the ClientApp forwards them (pretrain, one local epoch, the returned
groups become the next round's model, an evaluate message every 10 rounds), and reads the worker's resident
memory (VmRSS, /proc) after each. Prints one JSON row per figure: RSS after round 1, 10 and the last, the growth
per round over rounds 10..last (least squares), and the median seconds per message.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks.support.site_worker import wait_for_socket, write_site_file  # noqa: E402
from cccmr_model.channel import app_fingerprint, request  # noqa: E402
from cccmr_model.config import load_config  # noqa: E402
from cccmr_model.processes import stop  # noqa: E402
from cccmr_model.wire import EvaluateOrder, TrainOrder, decode, encode, experiment_to_json  # noqa: E402

CCCMR = str(Path(sys.executable).parent / "cccmr")


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def start_worker(work: Path, data: Path) -> tuple[subprocess.Popen, Path]:
    socket = work / "worker.sock"
    site = write_site_file(work / "site.toml", site="anzhen", data=data, cache=work / "cache", socket=socket)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = work / "worker.log"
    worker = subprocess.Popen([CCCMR, "site-worker", "--site-config", str(site)], env=env, stdout=log.open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    wait_for_socket(worker, socket, log, timeout_s=120)
    return worker, socket


def run_rounds(rounds: int, subjects: int) -> dict:
    from cccmr_model.phantom.cohort import generate_cohort
    from server.app import initial_state

    config = load_config("tiny", ["federation.sites=[anzhen]", "train.resample_factor=1"])
    experiment = experiment_to_json(config)
    state = initial_state(config)
    with tempfile.TemporaryDirectory(prefix="site-worker-memory-") as tmp:
        work = Path(tmp)
        generate_cohort(work / "data", ["anzhen"], subjects, 0, size="tiny")
        worker, socket = start_worker(work, work / "data" / "anzhen")
        fingerprint = app_fingerprint()
        rss, seconds = [], []
        try:
            for rnd in range(1, rounds + 1):
                order = TrainOrder("pretrain", 1, ((rnd - 1) / rounds, rnd / rounds), rnd, rnd, experiment)
                sends = {k: v for k, v in state.items() if k.startswith(("encoders.", "heads."))}
                started = time.perf_counter()
                reply, arrays = request(socket, {"kind": "train", "fingerprint": fingerprint,
                                                 "config": order.to_config(), "site": "anzhen"},
                                        encode(sends), 600)  # fmt: skip
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                state.update(decode(arrays, "worker reply"))
                if rnd % 10 == 0:
                    ev = EvaluateOrder("pretrain", rnd, False, experiment)
                    evaluated = {k: v for k, v in state.items() if k.startswith(("encoders.cine", "fusion."))}
                    reply, _ = request(socket, {"kind": "evaluate", "fingerprint": fingerprint,
                                                "config": ev.to_config(), "site": "anzhen"},
                                       encode(evaluated), 600)  # fmt: skip
                    if "error" in reply:
                        raise RuntimeError(reply["error"])
                seconds.append(time.perf_counter() - started)
                rss.append(rss_mb(worker.pid))
        finally:
            stop(worker)
    tail = np.arange(10, rounds + 1) if rounds >= 20 else np.arange(1, rounds + 1)
    slope = float(np.polyfit(tail, np.asarray(rss)[tail - 1], 1)[0])
    return {"rss_mb": rss, "seconds": seconds, "growth_mb_per_round": slope}


def rows(result: dict) -> list[dict]:
    rss = result["rss_mb"]
    tenth = min(10, len(rss))
    base = {"benchmark": "site_worker_memory", "unit": "MB"}
    return [
        {**base, "metric": "worker RSS after round 1", "value": round(rss[0], 1)},
        {**base, "metric": f"worker RSS after round {tenth}", "value": round(rss[tenth - 1], 1)},
        {**base, "metric": f"worker RSS after round {len(rss)}", "value": round(rss[-1], 1)},
        {**base, "metric": "RSS growth per round (rounds 10..last, least squares)",
         "value": round(result["growth_mb_per_round"], 3), "unit": "MB/round"},
        {"benchmark": "site_worker_memory", "metric": "median seconds per message (tiny, 1 local epoch)",
         "value": round(statistics.median(result["seconds"]), 2), "unit": "s"},
    ]  # fmt: skip


def run(quick: bool) -> list[dict]:
    return rows(run_rounds(5 if quick else 50, 6 if quick else 12))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run_rounds(args.rounds, args.subjects)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    for row in rows(result):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
