"""Equivalence: one site holding all the data, one round per phase with all of that phase's epochs, ends with the
same weights as central training (the three `train_phase` calls `cccmr train` makes) with the same seed.

The federated side runs the real pieces in-process: the ServerApp's initial model, `PhaseFedAvg`, messages built
by the strategy and answered by the ClientApp's own handlers (ingestion cache, split, engine); only the network
is replaced by a direct call.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Message
from flwr.supercore.task_identity import TaskIdentity

from benchmarks.support.inprocess_grid import InProcessGrid, node_context
from cccmr_model.config import PHASES
from cccmr_model.engine import train_phase
from cccmr_model.model import PHASE_GROUPS
from cccmr_model.release.files import is_release_key
from cccmr_model.run_folder import read_history
from cccmr_model.site.data import prepare_site, site_settings
from client import app as client_app
from server.app import initial_state
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg

pytestmark = pytest.mark.slow


def handlers(msg: Message, context: Context) -> Message:
    """The ClientApp's own train or evaluate handler for the message."""
    handler = client_app.evaluate if msg.metadata.message_type == "evaluate" else client_app.train
    return handler(msg, context)


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def test_one_site_one_round_per_phase_equals_central_training(tmp_path, phantom_sites, one_round_per_phase):
    config, epochs = one_round_per_phase
    node_config = {"site": "anzhen", "data-path": str(phantom_sites / "anzhen"), "cache-path": str(tmp_path / "c")}

    start = initial_state(config)
    strategy = PhaseFedAvg(
        plan_rounds(config.federation.phases, PHASE_GROUPS),
        start,
        config=config,
        run_dir=tmp_path / "run",
        eval_keys=[k for k in start if is_release_key(k)],
    )
    strategy.start(
        grid=InProcessGrid({1: (handlers, node_context(1, node_config))}),
        initial_arrays=strategy.global_arrays(),
        num_rounds=3,
        timeout=60,
    )

    data = prepare_site(site_settings(node_config, {}, config), config)
    state = None
    for phase in PHASES:
        state = train_phase(state, phase, data.train, config, epochs=epochs[phase], seed=config.seed).state
    federated = strategy.global_state
    assert set(federated) == set(state)
    for key, value in state.items():
        np.testing.assert_allclose(federated[key], value.numpy(), rtol=1e-6, atol=1e-7, err_msg=key)
    trained = [k for k in state if k.startswith(("encoders.", "fusion."))]
    assert any(not torch.equal(torch.from_numpy(start[k]), state[k]) for k in trained)
    rounds = read_history(tmp_path / "run" / "history.jsonl")
    assert [r["sites_replied"] for r in rounds] == [["anzhen"]] * 3 and not rounds[-1]["sites_failed"]
    assert rounds[-1]["evaluate_global"]["num-examples"] == len(data.val)
