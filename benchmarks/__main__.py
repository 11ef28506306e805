"""`python -m benchmarks [--quick] [--only NAME ...]`: run every benchmark and print one table.

Each benchmark module exposes `run(quick: bool) -> list[dict]`; every dict is one row of the table. Rows hold at
least `benchmark`, `metric`, `value` (and optionally `unit`, `note`); other keys are shown in the note column.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

MODULES = (
    "encoder_speed",
    "explain_speed",
    "ingest_speed",
    "train_speed",
    "federation_overhead",
    "federation_loopback",
    "demo_time",
    "phantom_ablation",
    "robust_aggregation",
)
CORE_KEYS = ("benchmark", "metric", "value", "unit", "note")


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


def format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def to_row(module: str, row: dict) -> dict:
    extra = {k: v for k, v in row.items() if k not in CORE_KEYS}
    note = row.get("note", "")
    if extra:
        note = (note + "; " if note else "") + ", ".join(f"{k}={format_value(v)}" for k, v in extra.items())
    return {
        "benchmark": row.get("benchmark", module),
        "metric": row.get("metric", ""),
        "value": format_value(row.get("value", "")),
        "unit": row.get("unit", ""),
        "note": note,
    }


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(CORE_KEYS) + " |", "|" + "---|" * len(CORE_KEYS)]
    lines += ["| " + " | ".join(str(r[k]) for k in CORE_KEYS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--only", nargs="*", choices=MODULES, help="run only these benchmarks")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows: list[dict] = []
    failed = []
    for name in args.only or MODULES:
        start = time.perf_counter()
        print(f"[benchmarks] {name} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            rows += [to_row(name, r) for r in module.run(quick=args.quick)]
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
        print(f"[benchmarks] {name} took {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    print(f"Machine: {machine()}\n")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
