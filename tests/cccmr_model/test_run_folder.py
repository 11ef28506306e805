"""The run folder's format: the history file, the checkpoint files and their names."""

from __future__ import annotations

import numpy as np
import pytest

from cccmr_model import run_folder
from cccmr_model.run_folder import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint


def test_history_append_truncate_and_nan(tmp_path):
    path = tmp_path / "history.jsonl"
    for r in range(1, 5):
        run_folder.append_round(path, {"round": r, "loss": float("nan") if r == 2 else 0.1 * r})
    assert run_folder.read_history(path)[1]["loss"] is None
    run_folder.truncate_after(path, 2)
    assert [r["round"] for r in run_folder.read_history(path)] == [1, 2]


def test_checkpoint_roundtrip_keeps_order_meta_and_the_newest(tmp_path):
    state = {"z.w": np.arange(6, dtype=np.float32).reshape(2, 3), "a.b": np.ones(2, np.float32)}
    for r in (1, 2, 3):
        save_checkpoint(tmp_path, r, state, {"config": {"seed": r}}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["round-0002.safetensors", "round-0003.safetensors"]
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.server_round == 3 and ckpt.meta["config"] == {"seed": 3}
    assert list(ckpt.state) == ["z.w", "a.b"]
    np.testing.assert_array_equal(ckpt.state["z.w"], state["z.w"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no round-"):
        load_checkpoint(tmp_path / "empty")


def test_history_read_while_written_leaves_out_the_unfinished_line(tmp_path):
    path = run_folder.history_path(tmp_path)
    run_folder.append_round(path, {"round": 1, "phase": "pretrain"})
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"round": 2, "phase": "pre')  # a writer mid-append
    assert run_folder.read_history(path) == [{"round": 1, "phase": "pretrain"}]
    assert run_folder.read_history(tmp_path / "none.jsonl") == []


def test_file_names(tmp_path):
    assert run_folder.history_path(tmp_path) == tmp_path / "history.jsonl"
    assert run_folder.release_dir(tmp_path) == tmp_path / "release"
    folder = run_folder.checkpoint_dir(tmp_path)
    assert folder == tmp_path / "checkpoints"
    assert run_folder.checkpoint_file(folder, 7) == folder / "round-0007.safetensors"
    assert run_folder.CHECKPOINT_NAME.match("round-0007.safetensors")
    assert not run_folder.CHECKPOINT_NAME.match("round-0007.safetensors.tmp")
