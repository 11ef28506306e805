"""A SuperNode killed and restarted mid-run, on loopback with TLS and SuperNode authentication (the deploy/ scripts).

Two sites train a short schedule with `federation.min_sites=1`. Once round 1 is in the history, the test SIGKILLs
lanzhou's `flower-supernode` (a crash: no deactivation, its ClientApp killed with it). The ServerApp keeps waiting
for lanzhou's reply until the SuperLink marks the node offline (Flower 1.42: no heartbeat within 2 x 30 s; the
interval is fixed in flower-supernode and has no flag) and answers with a "Node Unavailable" error, so round 2 is
averaged from anzhen alone and names lanzhou as failed. Lanzhou is then restarted with the same key, as systemd's
`Restart=on-failure` would (a start the SuperLink refuses, ApiError 2004, while the dead node still counts as
online is retried after `RESTART_SEC`), and a later round has both sites again.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from cccmr_model.run_folder import read_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
FLWR = str(Path(sys.executable).parent / "flwr")
SITES = ("anzhen", "lanzhou")
RESTART_SEC = 2.0
OVERRIDES = ";".join(
    [
        "train.resample_factor=1",
        "federation.min_sites=1",
        "federation.round_timeout_s=120",  # longer than the 60 s the SuperLink needs to see the dead node offline
        "federation.evaluate_every=100",  # evaluate after the last round only
        "federation.phases.pretrain.rounds=1",
        "federation.phases.fim.rounds=2",
        "federation.phases.fusion.rounds=1",
        "federation.phases.fusion.local_epochs=1",
    ]
)
PHASES = ["pretrain", "fim", "fim", "fusion"]


def activations(log: Path) -> int:
    return log.read_text().count("Activated node_id") if log.exists() else 0


def test_supernode_killed_mid_run_is_left_out_then_takes_part_after_restart(tmp_path, processes, kit):
    started = time.monotonic()
    sites = tmp_path / "sites"
    for seed, site in enumerate(SITES):
        kit.write_site(sites / site, 4, seed)
    link = kit.start_tls_superlink(tmp_path, processes, SITES)
    address, certs, keys, daemon_env, port = link.address, link.certs, link.keys, link.env, link.port

    node_ports = {site: kit.free_port() for site in SITES}

    def start_node(site: str, log: str) -> subprocess.Popen:
        return processes.start(
            ["bash", str(DEPLOY / "start-supernode.sh"), "--superlink", address, "--site", site,
             "--data-path", str(sites / site), "--cache-path", str(tmp_path / f"cache-{site}"),
             "--root-cert", str(certs / "ca.crt"), "--key", str(keys / site), "--port", str(node_ports[site]),
             "--state-dir", str(tmp_path / site)],
            log=log, env=daemon_env,
        )  # fmt: skip

    nodes = {site: start_node(site, f"{site}.out") for site in SITES}
    link_log = tmp_path / "link" / "logs" / "superlink.log"
    kit.wait_for(lambda: activations(link_log) >= 2, 60, "both SuperNodes")

    home = Path(processes.env["FLWR_HOME"])
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "cccmr"\n\n[superlink.cccmr]\naddress = "{address}"\n'
        f'root-certificates = "{certs / "ca.crt"}"\n'
    )
    run_dir = tmp_path / "run"
    history = run_dir / "history.jsonl"
    run_config = f'config-path="configs/tiny.yaml" config-overrides="{OVERRIDES}" run-dir="{run_dir}"'
    run = processes.start([FLWR, "run", ".", "cccmr", "--stream", "--run-config", run_config], log="run.out")

    def recorded() -> int:
        return len(read_history(history)) if history.is_file() else 0

    # Crash lanzhou once round 1 (both sites) is recorded.
    kit.wait_for(lambda: recorded() >= 1 or run.poll() is not None, 180, "round 1")
    assert run.poll() is None, processes.log("run.out")[-4000:]
    kit.kill_tree(nodes["lanzhou"].pid)
    killed_at = time.monotonic()
    assert not kit.listening(node_ports["lanzhou"])

    # Round 2 goes on without it: the SuperLink declares the node unavailable, anzhen alone is averaged.
    kit.wait_for(lambda: recorded() >= 2 or run.poll() is not None, 150, "round 2")
    missed = read_history(history)[1]
    assert missed["sites_replied"] == ["anzhen"], missed
    assert "lanzhou" in missed["sites_failed"], missed
    assert any("Node Unavailable" in reason for reason in missed["sites_failed"].values()), missed
    offline_after = time.monotonic() - killed_at

    # Restart lanzhou with the same key, retrying like systemd's Restart=on-failure until the SuperLink accepts it.
    attempts = 0
    while activations(link_log) < 3:
        assert attempts < 20, processes.log(f"lanzhou-restart-{attempts - 1}.out")[-4000:]
        node = start_node("lanzhou", f"lanzhou-restart-{attempts}.out")
        attempts += 1
        kit.wait_for(lambda n=node: activations(link_log) >= 3 or n.poll() is not None, 60, "the restarted SuperNode")
        if node.poll() is not None:
            assert "ApiError:2004" in processes.log(f"lanzhou-restart-{attempts - 1}.out")  # refused while online
            time.sleep(RESTART_SEC)

    assert run.wait(timeout=240) == 0, processes.log("run.out")[-4000:]
    rounds = read_history(history)
    assert [r["phase"] for r in rounds] == PHASES
    assert rounds[0]["sites_replied"] == list(SITES)
    assert rounds[-1]["sites_replied"] == list(SITES), rounds  # lanzhou takes part again after its restart
    assert set(rounds[-1]["evaluate"]) == set(SITES)
    replies = [r["sites_replied"] for r in rounds]
    print(
        f"\nlanzhou declared unavailable {offline_after:.0f} s after the kill; restart accepted after {attempts} "
        f"attempt(s); per-round replies {replies}; total {time.monotonic() - started:.0f} s"
    )

    processes.stop_all()
    assert all(p.poll() is not None for p in processes.started)
    assert not any(kit.listening(p) for p in (port, *node_ports.values()))
