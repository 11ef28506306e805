"""Per-epoch training checkpoints of one phase and exact resumption.

A checkpoint holds (nanoGPT style) the model weights, the optimizer state, the scheduler position (epoch and step),
the RNG states (python, numpy, torch, cuda), the fully resolved config and a `run` signature (phase, epochs,
lr_window, seed, training-set size); a checkpoint with another signature is refused, never silently mixed.
Writes are atomic (temporary file, then rename), so an interrupted write leaves the previous epoch intact.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cccmr_model.errors import CccmrError

CHECKPOINT_VERSION = 1


def checkpoint_path(checkpoint_dir: Path, phase: str) -> Path:
    return Path(checkpoint_dir) / f"{phase}-last.pt"


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` (+ version and RNG states) atomically to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"version": CHECKPOINT_VERSION, "rng": rng_states(), **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` if there is one; raises if it belongs to another run signature."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise CccmrError(f"{path}: cannot read checkpoint ({exc})") from None
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise CccmrError(f"{path}: checkpoint version {ckpt.get('version')} is not {CHECKPOINT_VERSION}")
    if ckpt.get("run") != run:
        raise CccmrError(
            f"{path}: checkpoint belongs to another run ({ckpt.get('run')}), not {run}; use a fresh checkpoint dir"
        )
    return ckpt
