"""The run's history: one JSON object per round in `history.jsonl` (phase, sites, metrics, bytes, time).

Non-finite numbers are written as null so that every line is strict JSON. A resumed run first drops the lines of
rounds after its checkpoint, so the file always describes the rounds that produced the current weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def append_round(path: Path, record: dict[str, Any]) -> None:
    """Append one round's record as a line and flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(_finite(record), allow_nan=False) + "\n")
        fh.flush()


def read_history(path: Path) -> list[dict[str, Any]]:
    """Every round record in the file (an empty list when there is none)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_after(path: Path, server_round: int) -> None:
    """Keep only the records of rounds up to and including `server_round`."""
    kept = [r for r in read_history(path) if r["round"] <= server_round]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
