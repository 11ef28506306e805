"""Deployment on loopback: `flower-superlink` with TLS and SuperNode authentication, two `flower-supernode`
daemons (anzhen, lanzhou) with their own `--node-config` and data, `flwr run` of a short three-phase schedule, a
release at the end. Certificates, keys, registration and daemon start use the deploy/ scripts a hospital uses.
Every process is started here in its own session and stopped by pid; no port stays bound."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cccmr_model.release.load import verify_release
from cccmr_model.run_folder import read_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
FLWR = str(Path(sys.executable).parent / "flwr")
SITES = ("anzhen", "lanzhou")


def test_tls_and_authenticated_supernodes_run_three_phases_to_a_release(tmp_path, phantom_sites, processes, kit):
    link = kit.start_tls_superlink(tmp_path, processes, SITES)
    address, certs, keys, daemon_env, port = link.address, link.certs, link.keys, link.env, link.port

    node_ports = {site: kit.free_port() for site in SITES}
    for site in SITES:
        processes.start(
            ["bash", str(DEPLOY / "start-supernode.sh"), "--superlink", address, "--site", site,
             "--data-path", str(phantom_sites / site), "--cache-path", str(tmp_path / f"cache-{site}"),
             "--root-cert", str(certs / "ca.crt"), "--key", str(keys / site), "--port", str(node_ports[site]),
             "--state-dir", str(tmp_path / site)],
            log=f"{site}.out", env=daemon_env,
        )  # fmt: skip
    log = tmp_path / "link" / "logs" / "superlink.log"
    kit.wait_for(lambda: log.exists() and log.read_text().count("Activated node_id") >= 2, 60, "both SuperNodes")

    home = Path(processes.env["FLWR_HOME"])
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "cccmr"\n\n[superlink.cccmr]\naddress = "{address}"\n'
        f'root-certificates = "{certs / "ca.crt"}"\n'
    )
    run_dir = tmp_path / "run"
    overrides = ";".join(
        ["train.resample_factor=1", "federation.round_timeout_s=240", "federation.min_sites=2"]
        + [f"federation.phases.{p}.rounds=1" for p in ("pretrain", "fim", "fusion")]
    )
    run_config = f'config-path="configs/tiny.yaml" config-overrides="{overrides}" run-dir="{run_dir}"'
    result = subprocess.run(
        [FLWR, "run", ".", "cccmr", "--stream", "--run-config", run_config],
        cwd=REPO_ROOT, env=processes.env, capture_output=True, text=True, timeout=480, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    rounds = read_history(run_dir / "history.jsonl")
    assert [r["phase"] for r in rounds] == ["pretrain", "fim", "fusion"], output[-4000:]
    assert all(r["sites_replied"] == list(SITES) for r in rounds), rounds
    assert verify_release(run_dir / "release")["mode"] == "federated"

    processes.stop_all()
    assert all(p.poll() is not None for p in processes.started)
    assert not any(kit.listening(p) for p in (port, *node_ports.values()))
