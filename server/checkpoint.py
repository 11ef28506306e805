"""Checkpoints of a federated run: the full global model plus the strategy state, written after every round.

The file format (`checkpoints/round-0007.safetensors`, its header, reading it back) is `cccmr_model.run_folder`'s;
here are the strategy's metadata in it, the background writer the strategy uses and the check that a checkpoint
can be resumed from.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cccmr_model.config import ExperimentConfig, config_to_dict
from cccmr_model.run_folder import Checkpoint, CheckpointError, save_checkpoint


def strategy_meta(config: ExperimentConfig, sites: Mapping[int, str]) -> dict[str, Any]:
    """The metadata the strategy writes with every checkpoint: the resolved config (`check_resumable` compares it)
    and the strategy state, the site name of each node id (`known_sites` reads it back)."""
    return {"config": config_to_dict(config), "strategy": {"sites": {str(k): v for k, v in sites.items()}}}


def known_sites(checkpoint: Checkpoint) -> dict[int, str]:
    """The node id -> site name map of a checkpoint's `strategy_meta` (empty when it has none)."""
    return {int(k): v for k, v in checkpoint.meta.get("strategy", {}).get("sites", {}).items()}


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
