"""Wall time of `cccmr demo` (targets on 2 CPU cores: `--quick` under 3 minutes, the full demo under 10).

Runs the demo in a subprocess into a temporary folder and reads the per-step times from its `summary.json`. The
machine's load average is reported next to the time: the demo's numbers only mean something on an idle machine.
`run(quick=True)` times `cccmr demo --quick`; `run(quick=False)` also times the full demo.
Standalone: `python -m benchmarks.demo_time [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS_S = {"quick": 180.0, "full": 600.0}


def time_demo(quick: bool) -> list[dict]:
    mode = "quick" if quick else "full"
    with tempfile.TemporaryDirectory(prefix="cccmr-demo-bench-") as tmp:
        out = Path(tmp) / "demo"
        args = [sys.executable, "-m", "cccmr_model", "demo", "--out", str(out), *(["--quick"] if quick else [])]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"cccmr demo {mode} failed ({result.returncode}): {result.stderr[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
    rows = [
        {
            "benchmark": "demo_time",
            "metric": f"cccmr demo {'--quick ' if quick else ''}wall time",
            "value": seconds,
            "unit": "s",
            "target_s": TARGETS_S[mode],
            "load_1min_at_start": round(load, 1),
        }
    ]
    for step, step_seconds in summary["wall_times"].items():
        rows.append({"benchmark": "demo_time", "metric": f"{mode}: {step}", "value": step_seconds, "unit": "s"})
    return rows


def run(quick: bool) -> list[dict]:
    rows = time_demo(quick=True)
    if not quick:
        rows += time_demo(quick=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="only `cccmr demo --quick`")
    args = parser.parse_args()
    for row in run(args.quick):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
