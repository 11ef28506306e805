"""Checkpoints written in the background: the file is the snapshot taken at save time, writes keep their order,
and a failed write is raised, not lost."""

from __future__ import annotations

import numpy as np
import pytest

from cccmr_model.run_folder import CheckpointError, list_checkpoints, load_checkpoint
from server.checkpoint import BackgroundCheckpoints


def test_each_round_is_written_as_it_was_when_saved(tmp_path):
    writer = BackgroundCheckpoints()
    state = {"w": np.zeros(3, np.float32)}
    writer.save(tmp_path, 1, state, {"note": "first"}, keep=5)
    state["w"] = np.ones(3, np.float32)  # the strategy replaces arrays; the pending write keeps round 1's
    writer.save(tmp_path, 2, state, {"note": "second"}, keep=5, wait=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["round-0001.safetensors", "round-0002.safetensors"]
    first, second = load_checkpoint(tmp_path / "round-0001.safetensors"), load_checkpoint(tmp_path)
    np.testing.assert_array_equal(first.state["w"], 0.0)
    np.testing.assert_array_equal(second.state["w"], 1.0)
    assert (first.meta["note"], second.server_round) == ("first", 2)


def test_a_failed_write_is_raised_by_the_next_call(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the checkpoint folder should be")
    writer = BackgroundCheckpoints()
    writer.save(blocker, 1, {"w": np.zeros(2, np.float32)}, {})
    with pytest.raises(CheckpointError, match="writing a checkpoint failed"):
        writer.wait()
    writer.wait()  # reported once
