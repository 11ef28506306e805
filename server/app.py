"""The ServerApp: read the run settings, start or resume the global model, run the phase schedule with
`PhaseFedAvg`, then write the release. Everything it does lives in plain functions and the strategy."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from cccmr_model import run_folder
from cccmr_model.config import ExperimentConfig, config_to_dict
from cccmr_model.engine.checkpoint import seed_everything
from cccmr_model.model import PHASE_GROUPS, build_model
from cccmr_model.release.files import is_release_key
from cccmr_model.sequences import CINE_SEQUENCES
from server.checkpoint import check_resumable, known_sites
from server.polling_grid import PollingGrid
from server.privacy import check_privacy_config, check_update_bound, with_central_dp
from server.release import write_release
from server.schedule import plan_rounds
from server.settings import experiment_config, server_settings
from server.strategy import PhaseFedAvg

log = logging.getLogger("cccmr.server")
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    settings = server_settings(context.run_config)
    config = experiment_config(settings)
    check_privacy_config(config)
    check_update_bound(config)
    state, completed, sites = initial_state(config), 0, {}
    if settings.resume_from is not None:
        ckpt = run_folder.load_checkpoint(settings.resume_from)
        check_resumable(ckpt, config_to_dict(config), settings.resume_from)
        state, completed = ckpt.state, ckpt.server_round
        sites = known_sites(ckpt)
        run_folder.truncate_after(run_folder.history_path(settings.run_dir), completed)
        log.info("resuming after round %d from %s", completed, settings.resume_from)
    strategy = PhaseFedAvg(
        plan_rounds(config.federation.phases, PHASE_GROUPS),
        state,
        config=config,
        run_dir=settings.run_dir,
        eval_keys=evaluation_keys(state),
        completed_rounds=completed,
        known_sites=sites,
    )
    past = run_folder.read_history(strategy.history_path) if completed else []
    runner = with_central_dp(strategy, config, past)  # Flower's DP wrapper when privacy.central_dp.enabled
    if strategy.remaining_rounds() > 0:
        runner.start(
            grid=PollingGrid(grid),
            initial_arrays=strategy.global_arrays(),
            num_rounds=strategy.remaining_rounds(),
            timeout=config.federation.round_timeout_s,
        )
    strategy.checkpoints.wait()
    rounds = run_folder.read_history(strategy.history_path)
    out = write_release(
        run_folder.release_dir(settings.run_dir), strategy.global_state, config, rounds, strategy.final_evaluation
    )
    log.info("release written to %s", out)


def evaluation_keys(state: Mapping[str, np.ndarray]) -> list[str]:
    """What an evaluation sends: the cine-only model (the release's groups) and the cine heads (a few thousand
    numbers), so that every evaluation also scores the 4CH and SAX heads; the LGE head is scored only in rounds
    whose message holds the LGE encoder (pretraining, FIM)."""
    heads = tuple(f"heads.{seq}." for seq in CINE_SEQUENCES)
    return [k for k in state if is_release_key(k) or k.startswith(heads)]


def initial_state(config: ExperimentConfig) -> dict[str, np.ndarray]:
    """The starting global model: what `train_phase(None, ..., seed=config.seed)` builds for central training."""
    seed_everything(config.seed)
    return {k: v.detach().cpu().numpy() for k, v in build_model(config).state_dict().items()}
