"""Resume after the ServerApp dies mid-run, on Flower's simulation runtime.

In simulation the ServerApp runs inside the `flwr-simulation` process the SuperLink starts for the run (with the
ClientApps on Ray in the same process tree). The test SIGKILLs that process once round 2's checkpoint is on disk,
a crash without any clean-up, then starts a new run with `resume-from` pointing at the checkpoints folder. The
resumed run must continue at round 3 and end with the same global weights as an uninterrupted run (same seed).

A SuperNode killed and restarted mid-run is tested in tests/integration/test_supernode_restart.py (loopback, TLS,
SuperNode authentication).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from cccmr_model.release.files import METRICS_FILE
from cccmr_model.run_folder import list_checkpoints, load_checkpoint, read_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITES = ("anzhen", "lanzhou")
# Four rounds: pretrain 1, fim 2 (the kill falls between them), fusion 1.
OVERRIDES = ";".join(
    [
        "train.resample_factor=1",
        "federation.round_timeout_s=300",
        "federation.phases.pretrain.rounds=1",
        "federation.phases.fim.rounds=2",
        "federation.phases.fusion.rounds=1",
        "federation.phases.fusion.local_epochs=1",
    ]
)
PHASES = ["pretrain", "fim", "fim", "fusion"]
KILL_AFTER = 2


def run_config(tmp_path: Path, sites: Path, run_dir: Path, resume_from: Path | None = None) -> dict[str, str]:
    config = {
        "config-path": "configs/tiny.yaml",
        "config-overrides": OVERRIDES,
        "run-dir": str(run_dir),
        "sim-data-dir": str(sites),
        "sim-cache-dir": str(tmp_path / "cache"),  # ingested once, reused by every run
    }
    if resume_from is not None:
        config["resume-from"] = str(resume_from)
    return config


def test_run_killed_mid_run_resumes_at_next_round_with_same_final_weights(tmp_path, processes, kit):
    sites = tmp_path / "sites"
    for seed, site in enumerate(SITES):
        kit.write_site(sites / site, 4, seed)
    port = kit.free_port()
    superlink = kit.start_simulation_superlink(processes, port)

    # Uninterrupted reference run.
    reference = tmp_path / "reference"
    result = kit.flwr_run(processes, run_config(tmp_path, sites, reference), timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert [r["phase"] for r in read_history(reference / "history.jsonl")] == PHASES

    # The same run, killed once round KILL_AFTER's checkpoint exists.
    crashed = tmp_path / "crashed"
    submitted = kit.flwr_run(processes, run_config(tmp_path, sites, crashed), timeout=120, stream=False)
    assert submitted.returncode == 0, (submitted.stdout + submitted.stderr)[-4000:]
    run_id = re.search(r"Successfully started run (\d+)", submitted.stdout + submitted.stderr)
    assert run_id, submitted.stdout + submitted.stderr
    checkpoint = crashed / "checkpoints" / f"round-{KILL_AFTER:04d}.safetensors"
    kit.wait_for(checkpoint.is_file, 240, f"round {KILL_AFTER}'s checkpoint")
    serverapps = kit.descendants_named(superlink.pid, "flwr-simulation")
    assert len(serverapps) == 1, serverapps
    kit.kill_tree(serverapps[0])
    assert not kit.descendants_named(superlink.pid, "flwr-simulation")
    killed_at = load_checkpoint(crashed / "checkpoints").server_round
    assert KILL_AFTER <= killed_at < len(PHASES), "the run was not interrupted mid-run"
    assert [r["round"] for r in read_history(crashed / "history.jsonl")][-1] >= killed_at
    assert not (crashed / "release").exists()
    before = read_history(crashed / "history.jsonl")[:killed_at]

    # A new run resumes from the checkpoints folder (its newest checkpoint).
    result = kit.flwr_run(processes, run_config(tmp_path, sites, crashed, crashed / "checkpoints"), timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    remaining = len(PHASES) - killed_at
    assert f"[ROUND {remaining}/{remaining}]" in output and "[ROUND 1/" in output, output[-4000:]
    assert f"[ROUND {remaining + 1}/" not in output, output[-4000:]  # Flower counts the remaining rounds only
    rounds = read_history(crashed / "history.jsonl")
    assert rounds[:killed_at] == before  # rounds before the crash were not run again
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert [r["phase"] for r in rounds] == PHASES
    assert all(r["sites_replied"] == list(SITES) for r in rounds)
    assert [p.name for p in list_checkpoints(crashed / "checkpoints")][-1] == "round-0004.safetensors"

    expected = load_checkpoint(reference / "checkpoints")
    resumed = load_checkpoint(crashed / "checkpoints")
    assert expected.server_round == resumed.server_round == len(PHASES)
    assert list(resumed.state) == list(expected.state)
    for key, value in expected.state.items():
        np.testing.assert_allclose(resumed.state[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert rounds[-1]["evaluate_global"]["accuracy"] == pytest.approx(
        read_history(reference / "history.jsonl")[-1]["evaluate_global"]["accuracy"]
    )
    metrics = json.loads((crashed / "release" / METRICS_FILE).read_text())  # Table-1 reports with CIs
    assert metrics["pooled"]["n"] == rounds[-1]["evaluate_global"]["num-examples"]
    assert {"value", "ci_low", "ci_high"} <= set(metrics["pooled"]["metrics"]["accuracy"])
    assert set(metrics["sites"]) == set(SITES) and "auc" in metrics["pooled"]["unavailable"]  # scores not shared
    processes.stop_all()
    assert not kit.listening(port)
