"""The warm site worker as a real process (`cccmr site-worker`): a federation through it ends with the same weights
as central training, it answers many messages from one process, a worker that is down gives the site an error
reply, and a restarted worker serves the next round again."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, Message
from flwr.supercore.task_identity import TaskIdentity

from benchmarks.support.inprocess_grid import InProcessGrid, node_context
from benchmarks.support.site_worker import write_site_file
from cccmr_model.channel import app_fingerprint, request
from cccmr_model.config import PHASES, load_config
from cccmr_model.engine import train_phase
from cccmr_model.model import PHASE_GROUPS
from cccmr_model.processes import stop, wait_for
from cccmr_model.release.files import is_release_key
from cccmr_model.run_folder import read_history
from cccmr_model.site.data import prepare_site, site_settings
from client import app as client_app
from client.app import SiteWorkerError
from server.app import initial_state
from server.schedule import plan_rounds
from server.strategy import PhaseFedAvg

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CCCMR = str(Path(os.sys.executable).parent / "cccmr")


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def handlers(msg: Message, context: Context) -> Message:
    handler = client_app.evaluate if msg.metadata.message_type == "evaluate" else client_app.train
    return handler(msg, context)


def site_file(tmp_path: Path, data: Path, socket: Path) -> Path:
    return write_site_file(tmp_path / "site.toml", site="anzhen", data=data, cache=tmp_path / "cache", socket=socket)


def start_worker(processes, site: Path, socket: Path, log: str):
    env = {**processes.env, "OMP_NUM_THREADS": str(torch.get_num_threads())}  # the same sums as this process
    worker = processes.start([CCCMR, "site-worker", "--site-config", str(site)], log=log, env=env)
    wait_for(lambda: socket.exists() or worker.poll() is not None, 120, "the site worker's socket")
    assert worker.poll() is None, processes.log(log)
    return worker


def test_a_federation_through_the_worker_equals_central_training(
    tmp_path, phantom_sites, processes, one_round_per_phase
):
    socket = tmp_path / "run" / "worker.sock"
    worker = start_worker(processes, site_file(tmp_path, phantom_sites / "anzhen", socket), socket, "worker.out")
    config, epochs = one_round_per_phase
    node_config = {"site": "anzhen", "worker-socket": str(socket)}  # the SuperNode only knows where the worker is
    start = initial_state(config)
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, PHASE_GROUPS), start, config=config,
                           run_dir=tmp_path / "fed", eval_keys=[k for k in start if is_release_key(k)])  # fmt: skip
    strategy.start(grid=InProcessGrid({1: (handlers, node_context(1, node_config))}),
                   initial_arrays=strategy.global_arrays(), num_rounds=3, timeout=120)  # fmt: skip

    central_node = {"site": "anzhen", "data-path": str(phantom_sites / "anzhen"), "cache-path": str(tmp_path / "c")}
    data = prepare_site(site_settings(central_node, {}, config), config)
    state = None
    for phase in PHASES:
        state = train_phase(state, phase, data.train, config, epochs=epochs[phase], seed=config.seed).state
    for key, value in state.items():
        np.testing.assert_allclose(strategy.global_state[key], value.numpy(), rtol=1e-6, atol=1e-7, err_msg=key)
    rounds = read_history(tmp_path / "fed" / "history.jsonl")
    assert [r["sites_replied"] for r in rounds] == [["anzhen"]] * 3 and not rounds[-1]["sites_failed"]
    ping, _ = request(socket, {"kind": "ping", "fingerprint": app_fingerprint()}, [], 10)
    assert ping["metrics"]["pid"] == worker.pid  # one warm process answered every message


def test_a_worker_that_is_down_fails_the_message_and_a_restarted_one_serves_again(tmp_path, phantom_sites, processes):
    socket = tmp_path / "w.sock"
    site = site_file(tmp_path, phantom_sites / "anzhen", socket)
    worker = start_worker(processes, site, socket, "worker1.out")
    config = load_config("tiny", ["federation.sites=[anzhen]", "federation.phases.pretrain.rounds=1",
                                  "federation.phases.pretrain.local_epochs=1", "train.resample_factor=1"])  # fmt: skip
    start = initial_state(config)
    strategy = PhaseFedAvg(plan_rounds(config.federation.phases, PHASE_GROUPS), start, config=config,
                           run_dir=tmp_path / "fed", eval_keys=[k for k in start if is_release_key(k)])  # fmt: skip
    node = {1: (handlers, node_context(1, {"site": "anzhen", "worker-socket": str(socket)}))}
    msg = next(iter(strategy.configure_train(1, strategy.global_arrays(), None, InProcessGrid(node))))
    stop(worker)  # the worker dies (systemd or compose would restart it)
    with pytest.raises(SiteWorkerError, match=r"w\.sock: cannot connect .*is it running\?"):
        handlers(msg, node[1][1])
    reply = InProcessGrid(node).send_and_receive([msg])[0]
    assert reply.has_error() and "is it running?" in reply.error.reason  # the round gets an error reply, no hang
    start_worker(processes, site, socket, "worker2.out")  # restarted: it replaces the stale socket file
    reply = InProcessGrid(node).send_and_receive([msg])[0]
    assert not reply.has_error() and reply.content["metrics"]["num-examples"] > 0
