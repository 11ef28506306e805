"""The run folder of a federated run: what the ServerApp writes there and the demo and benchmarks read back.

- `history.jsonl`: one JSON object per round (phase, sites, metrics, bytes, time). Non-finite numbers are written
  as null so that every line is strict JSON. A resumed run first drops the lines of rounds after its checkpoint, so
  the file always describes the rounds that produced the current weights.
- `checkpoints/round-0007.safetensors`: the full global model after a round; its header metadata holds the round,
  the fully resolved config and the strategy state as JSON. A file is written to a temporary name and renamed, so
  a killed ServerApp leaves either the old or the new checkpoint, never half of one. Only the newest `keep` stay.
- `release/`: the release written at the end of the run.

No flwr here: the demo reads these files without importing the server. The background writer is `server.checkpoint`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from cccmr_model.errors import CccmrError
from cccmr_model.sequences import SEQUENCES

HISTORY = "history.jsonl"
CHECKPOINTS = "checkpoints"
RELEASE = "release"
CHECKPOINT_NAME = re.compile(r"^round-(\d+)\.safetensors$")
_META_KEY = "cccmr"


def history_path(run_dir: Path) -> Path:
    return Path(run_dir) / HISTORY


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def release_dir(run_dir: Path) -> Path:
    return Path(run_dir) / RELEASE


def checkpoint_file(directory: Path, server_round: int) -> Path:
    """Where the checkpoint of `server_round` is (or would be) in a checkpoints folder."""
    return Path(directory) / f"round-{server_round:04d}.safetensors"


# ------------------------------------------------------------------------------------------------------ history


def append_round(path: Path, record: dict[str, Any]) -> None:
    """Append one round's record as a line and flush it to disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(_finite(record), allow_nan=False) + "\n")
        fh.flush()


def read_history(path: Path) -> list[dict[str, Any]]:
    """Every round record in the file (an empty list when there is none). A last line without its newline is a
    record still being written (the file is read while the server runs) and is left out."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the piece after the last newline is empty or unfinished
    return [json.loads(line) for line in lines if line.strip()]


def evaluations(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every evaluation the history records, as {"round", "phase", "evaluate", "evaluate_global"} of the round whose
    model it evaluated, in round order. A line holds the evaluation that arrived in its round (`evaluated_round`:
    the round before, whose model its train messages carried, or its own after the last round; a history without
    the field: its own), the last line possibly one more (`previous_evaluation`)."""
    phases = {int(r["round"]): r["phase"] for r in history}
    found: dict[int, dict[str, Any]] = {}
    for record in history:
        for ev in (record.get("previous_evaluation") or {}, record):
            if ev.get("evaluate_global"):
                n = int(ev.get("evaluated_round") or record["round"])
                found[n] = {"round": n, "phase": phases.get(n, record["phase"]), "evaluate": ev.get("evaluate", {}),
                            "evaluate_global": ev["evaluate_global"]}  # fmt: skip
    return [found[n] for n in sorted(found)]


def phase_head_aucs(rounds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per phase, `val_auc:<seq>` of each sequence head: the latest evaluation of a model of that phase that scored
    the head (the LGE head is scored only where the evaluating message held its encoder, so its FIM value may be
    from the FIM's second-to-last round)."""
    out: dict[str, dict[str, float]] = {}
    for evaluation in evaluations(rounds):  # round order: later evaluations overwrite earlier ones
        for seq in SEQUENCES:
            auc = evaluation["evaluate_global"].get(f"auc:{seq}")
            if isinstance(auc, int | float):
                out.setdefault(evaluation["phase"], {})[f"val_auc:{seq}"] = float(auc)
    return out


def bytes_per_site(record: Mapping[str, Any]) -> tuple[float, float]:
    """(bytes sent to each site, bytes received from each replying site) in one history line's round."""
    down = record["bytes_sent"] / max(1, len(record["sites_sent"]))
    return down, record.get("bytes_received", 0) / max(1, len(record["train"]))


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


# -------------------------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    server_round: int  # the last completed round
    state: dict[str, np.ndarray]  # the full global model, in the model's parameter order
    meta: dict[str, Any]  # config, strategy state (`server.checkpoint.strategy_meta`)


class CheckpointError(CccmrError):
    """A checkpoint that cannot be read or resumed from."""


def save_checkpoint(
    directory: Path, server_round: int, state: Mapping[str, np.ndarray], meta: Mapping[str, Any], keep: int = 2
) -> Path:
    """Write the checkpoint of `server_round` and delete all but the newest `keep` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_file(directory, server_round)
    header = {"round": server_round, "keys": list(state), **meta}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp, metadata={_META_KEY: json.dumps(header)})
    tmp.replace(path)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; a directory means its newest checkpoint."""
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"{path}: no round-*.safetensors checkpoint in this directory")
        path = found[-1]
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    with safe_open(str(path), framework="numpy") as fh:
        header_text = (fh.metadata() or {}).get(_META_KEY)
    if header_text is None:
        raise CheckpointError(f"{path}: not a federated checkpoint (no '{_META_KEY}' metadata)")
    header = json.loads(header_text)
    arrays = load_file(str(path))
    keys = header.pop("keys")
    if set(keys) != set(arrays):
        raise CheckpointError(f"{path}: stored arrays do not match the recorded parameter names")
    server_round = header.pop("round")
    return Checkpoint(server_round=server_round, state={k: arrays[k] for k in keys}, meta=header)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in `directory`, oldest round first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    return [p for _, p in sorted(found)]
