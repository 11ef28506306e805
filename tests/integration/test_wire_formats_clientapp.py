"""`federation.wire` through the real ClientApp (its mods included) and PhaseFedAvg in-process, on small DICOM
sites: the override a demo or benchmark passes (`--set federation.wire=...`) reaches the sites through the orders,
every format completes a training and an evaluation round, the bytes per site shrink as expected, an int8 site
keeps its error feedback in its cache under the run's key, and central DP clips the quantised update so that the
server accepts it."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.supercore.task_identity import TaskIdentity

from benchmarks.support.inprocess_grid import InProcessGrid, node_context
from cccmr_model.compression import TAG
from cccmr_model.model import PHASE_GROUPS
from cccmr_model.release.files import is_release_key
from cccmr_model.run_folder import read_history
from cccmr_model.wire_codec import residual_path
from client import app as client_app
from server.app import initial_state
from server.privacy import with_central_dp
from server.schedule import plan_rounds
from server.settings import experiment_config, server_settings
from server.strategy import PhaseFedAvg

pytestmark = pytest.mark.slow

ONE_ROUND = ";".join(
    ["federation.sites=[anzhen]", "federation.phases.pretrain.rounds=1", "federation.phases.fim.rounds=0",
     "federation.phases.fusion.rounds=0", "federation.phases.pretrain.local_epochs=1", "train.resample_factor=1"]
)  # fmt: skip


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def federate(tmp_path, phantom_sites, overrides: str) -> tuple[PhaseFedAvg, dict]:
    """One pretrain round and its evaluation, configured as the demo's ServerApp reads its run config."""
    settings = server_settings({"config-path": "tiny", "config-overrides": f"{ONE_ROUND};{overrides}",
                                "run-dir": str(tmp_path / overrides.replace("=", "-").replace(";", "_"))})  # fmt: skip
    config = experiment_config(settings)
    start = initial_state(config)
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, PHASE_GROUPS), start, config=config,
                           run_dir=settings.run_dir, eval_keys=[k for k in start if is_release_key(k)])  # fmt: skip
    node_config = {"site": "anzhen", "data-path": str(phantom_sites / "anzhen"), "cache-path": str(tmp_path / "c")}
    grid = InProcessGrid({1: (client_app.app, node_context(1, node_config))})  # the ClientApp object: mods run
    runner = with_central_dp(strategy, config)
    runner.start(grid=grid, initial_arrays=strategy.global_arrays(), num_rounds=1, timeout=60)
    strategy.checkpoints.wait()
    (record,) = read_history(strategy.history_path)
    assert record["sites_replied"] == ["anzhen"] and not record["sites_failed"], record["sites_failed"]
    assert record["evaluate_global"]["num-examples"] > 0
    return strategy, record


def test_every_wire_format_runs_through_the_client_app_with_fewer_bytes(tmp_path, phantom_sites):
    records = {}
    for wire in ("fp32", "bf16", "int8"):
        strategy, records[wire] = federate(tmp_path, phantom_sites, f"federation.wire={wire}")
        assert strategy.config.federation.wire == wire
    sent = {w: r["bytes_sent"] for w, r in records.items()}
    received = {w: r["bytes_received"] for w, r in records.items()}
    assert sent["bf16"] / sent["fp32"] == pytest.approx(0.5, rel=0.01) and sent["int8"] == sent["bf16"]
    assert received["bf16"] / received["fp32"] == pytest.approx(0.5, rel=0.01)
    assert received["int8"] / received["fp32"] == pytest.approx(0.254, rel=0.02)
    with np.load(residual_path(tmp_path / "c")) as saved:  # the int8 run's error feedback, under its run key
        assert str(saved[TAG]) == strategy.run_key and len(saved.files) > 1


@pytest.mark.parametrize("wire", ["bf16", "int8"])
def test_central_dp_clips_the_quantised_update_and_the_server_accepts_it(tmp_path, phantom_sites, wire):
    dp = "privacy.central_dp.enabled=true;privacy.central_dp.clipping_norm=0.01;privacy.central_dp.noise_multiplier=0"
    _, record = federate(tmp_path, phantom_sites, f"federation.wire={wire};{dp}")
    (norm,) = record["update_norms"].values()
    assert 0.0099 < norm <= 0.01 * (1 + 1e-3)  # clipped (one epoch moves the weights further than 0.01)
