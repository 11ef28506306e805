"""Checkpoints of a federated run: the full global model plus the strategy state, written after every round.

One safetensors file per round, `checkpoints/round-0007.safetensors`; its header metadata holds the round, the
fully resolved config and the strategy state as JSON. The file is written to a temporary name and renamed, so a
killed ServerApp leaves either the old or the new checkpoint, never half of one. Only the newest `keep` are kept.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from cccmr_model.config import ExperimentConfig, config_to_dict
from cccmr_model.errors import CccmrError

_NAME = re.compile(r"round-(\d+)\.safetensors$")
_META_KEY = "cccmr"


@dataclass(frozen=True)
class Checkpoint:
    server_round: int  # the last completed round
    state: dict[str, np.ndarray]  # the full global model, in the model's parameter order
    meta: dict[str, Any]  # config, strategy state (`strategy_meta`)


def strategy_meta(config: ExperimentConfig, sites: Mapping[int, str]) -> dict[str, Any]:
    """The metadata the strategy writes with every checkpoint: the resolved config (`check_resumable` compares it)
    and the strategy state, the site name of each node id (`known_sites` reads it back)."""
    return {"config": config_to_dict(config), "strategy": {"sites": {str(k): v for k, v in sites.items()}}}


def known_sites(checkpoint: Checkpoint) -> dict[int, str]:
    """The node id -> site name map of a checkpoint's `strategy_meta` (empty when it has none)."""
    return {int(k): v for k, v in checkpoint.meta.get("strategy", {}).get("sites", {}).items()}


def save_checkpoint(
    directory: Path, server_round: int, state: Mapping[str, np.ndarray], meta: Mapping[str, Any], keep: int = 2
) -> Path:
    """Write the checkpoint of `server_round` and delete all but the newest `keep` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"round-{server_round:04d}.safetensors"
    header = {"round": server_round, "keys": list(state), **meta}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp, metadata={_META_KEY: json.dumps(header)})
    tmp.replace(path)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink()
    return path


class BackgroundCheckpoints:
    """Writes each round's checkpoint in a thread while the next round trains (a few seconds of every round at the
    default size), one write at a time and in round order. `save(..., wait=True)` and `wait()` return once the
    file is on disk. A ServerApp killed during a write leaves the previous round's checkpoint, and a resumed run
    then redoes that one round."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(
        self, directory: Path, server_round: int, state: Mapping[str, np.ndarray], meta: Mapping[str, Any], *,
        keep: int = 2, wait: bool = False,
    ) -> None:  # fmt: skip
        """Start writing round `server_round`. The strategy replaces its global arrays and never changes them in
        place, so a shallow copy of `state` is a snapshot."""
        self.wait()
        snapshot, meta = dict(state), dict(meta)

        def write() -> None:
            try:
                save_checkpoint(directory, server_round, snapshot, meta, keep=keep)
            except BaseException as err:  # re-raised by the next save() or wait()
                self._error = err

        self._thread = threading.Thread(target=write, name=f"checkpoint-round-{server_round}")
        self._thread.start()
        if wait:
            self.wait()

    def wait(self) -> None:
        """Block until the last write is done; raise CheckpointError if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(f"writing a checkpoint failed: {err}") from err


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
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.search(p.name))]
    return [p for _, p in sorted(found)]


class CheckpointError(CccmrError):
    """A checkpoint that cannot be resumed from."""


# Config sections that must match for a resumed run to continue the same training.
_RESUME_KEYS = ("task", "seed", "model", "data", "train")


def check_resumable(checkpoint: Checkpoint, config: Mapping[str, Any], source: Path) -> None:
    """Refuse a checkpoint whose model, data, training settings or phase plan differ from `config`."""
    saved = checkpoint.meta.get("config", {})
    differ = [key for key in _RESUME_KEYS if saved.get(key) != config.get(key)]
    if saved.get("federation", {}).get("phases") != config["federation"]["phases"]:
        differ.append("federation.phases")
    if differ:
        raise CheckpointError(f"{source}: written with different settings ({', '.join(differ)}); cannot resume")
