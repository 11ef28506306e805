"""The demo keeps every round checkpoint the ServerApp writes (which keeps only its newest) and reads them back."""

from __future__ import annotations

import numpy as np
import torch

from cccmr_model import run_folder
from cccmr_model.demo.evaluate import checkpoint_state
from cccmr_model.demo.keeper import CheckpointKeeper


def test_keeper_keeps_rotated_checkpoints_and_skips_unfinished_files(tmp_path) -> None:
    source, target = run_folder.checkpoint_dir(tmp_path / "run"), tmp_path / "kept"
    state = {"w": np.arange(4, dtype=np.float32)}
    keeper = CheckpointKeeper(source, target)
    target.mkdir()
    for server_round in (1, 2):
        run_folder.save_checkpoint(source, server_round, {"w": state["w"] * server_round}, {}, keep=1)
        keeper.sweep()
    (source / "round-0003.safetensors.tmp").write_bytes(b"half")  # a write in progress
    keeper.sweep()
    assert sorted(p.name for p in target.iterdir()) == ["round-0001.safetensors", "round-0002.safetensors"]
    assert keeper.path(3) is None
    kept = checkpoint_state(keeper.path(1))
    assert isinstance(kept["w"], torch.Tensor) and torch.equal(kept["w"], torch.arange(4, dtype=torch.float32))
