"""`flwr run .` on Flower's simulation runtime: two phantom sites (anzhen, lanzhou) through all three phases at the
tiny config, ending with a release. The test starts its own simulation SuperLink (so it knows the pid it stops)
and an offline FLWR_HOME in tmp."""

from __future__ import annotations

import pytest

from cccmr_model.release.load import verify_release
from cccmr_model.run_folder import load_checkpoint, read_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_flwr_run_simulation_trains_three_phases_and_writes_release(tmp_path, phantom_sites, processes, kit):
    port = kit.free_port()
    kit.start_simulation_superlink(processes, port)
    run_dir = tmp_path / "run"
    result = kit.flwr_run(
        processes,
        {
            "config-path": "configs/tiny.yaml",
            "config-overrides": "train.resample_factor=1;federation.round_timeout_s=300",
            "run-dir": str(run_dir),
            "sim-data-dir": str(phantom_sites),
            "sim-cache-dir": str(tmp_path / "cache"),
        },
        timeout=420,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    rounds = read_history(run_dir / "history.jsonl")
    assert [r["phase"] for r in rounds] == ["pretrain", "pretrain", "fim", "fim", "fusion"], output[-4000:]
    assert all(r["sites_replied"] == ["anzhen", "lanzhou"] for r in rounds), rounds
    assert all(r["bytes_sent"] > 0 and r["bytes_received"] > 0 for r in rounds)
    assert set(rounds[2]["sigma"]) and all(k.startswith("sigma:") for k in rounds[2]["sigma"])
    final = rounds[-1]["evaluate_global"]
    assert final["num-examples"] == sum(m["num-examples"] for m in rounds[-1]["evaluate"].values())
    assert load_checkpoint(run_dir / "checkpoints").server_round == 5
    manifest = verify_release(run_dir / "release")
    assert manifest["mode"] == "federated"
    assert not any(f"s{s}-0" in (run_dir / "history.jsonl").read_text() for s in (0, 1))  # no subject IDs
    processes.stop_all()
    assert not kit.listening(port)
