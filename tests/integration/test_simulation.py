"""`flwr run .` on Flower's simulation runtime: two phantom sites (anzhen, lanzhou) through all three phases at the
tiny config, ending with a release. The test starts its own simulation SuperLink (so it knows the pid it stops)
and an offline FLWR_HOME in tmp."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cccmr_model.release.load import verify_release
from server.checkpoint import load_checkpoint
from server.history import read_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
FLWR = str(Path(sys.executable).parent / "flwr")


def start_simulation_superlink(processes, kit, port: int):
    home = Path(processes.env["FLWR_HOME"])
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    superlink = processes.start(
        ["flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port),
         "--disable-runtime-dependency-installation"],
        log="superlink.out",
    )  # fmt: skip
    kit.wait_for(lambda: kit.listening(port) or superlink.poll() is not None, 60, "the simulation SuperLink")
    assert superlink.poll() is None, processes.log("superlink.out")
    return superlink


def flwr_run(processes, run_config: dict[str, str | int], timeout: float) -> subprocess.CompletedProcess:
    pairs = " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in run_config.items())
    return subprocess.run(
        [FLWR, "run", ".", "sim", "--stream", "--run-config", pairs,
         "--federation-config", "num-supernodes=2 client-resources-num-cpus=1"],
        cwd=REPO_ROOT, env=processes.env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_flwr_run_simulation_trains_three_phases_and_writes_release(tmp_path, phantom_sites, processes, kit):
    port = kit.free_port()
    start_simulation_superlink(processes, kit, port)
    run_dir = tmp_path / "run"
    result = flwr_run(
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
