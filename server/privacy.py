"""Site-level (central) differential privacy on the server, and the privacy checks of a run's config.

`PhaseClientSideFixedClipping` is Flower's `DifferentialPrivacyClientSideFixedClipping` fitted to `PhaseFedAvg`:
- `configure_train` puts the clipping norm into every train message (PhaseFedAvg builds its own ConfigRecord, so
  the config that Flower's wrapper fills never reaches the sites); `client.privacy.clip_update_mod` clips there,
  with `federation.wire` bf16 or int8 the update as quantised (what is sent);
- the server verifies the clipping: a reply whose update norm exceeds the clipping norm is rejected like any
  faulty reply (`federation.max_update_norm` is lowered to it), so one site that does not clip cannot weaken the
  guarantee;
- the release is the *uniform* mean of the m accepted updates plus Gaussian noise of standard deviation
  noise_multiplier x clipping_norm / m, added to the trained groups of the round only (Flower's wrapper would add
  it to the whole model PhaseFedAvg returns, frozen groups included, with num-examples weights whose sensitivity
  the noise does not cover). The noise comes from OS entropy;
- every release is composed in Flower's `RdpAccountant` (dp-accounting backend, add/remove-one site, no sampling
  amplification since every connected site takes part), and the epsilon spent so far at `delta` goes into the
  round's history line (`central_dp`); a resumed run replays the kept history lines first.
Training and evaluation metrics are released as they are and are not covered by this epsilon.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import GaussianPrivacyEvent, Grid, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from cccmr_model.config.schema import CentralDPConfig, ExperimentConfig
from cccmr_model.errors import ConfigError
from server.strategy import PhaseFedAvg

log = logging.getLogger("cccmr.server")

CLIP_TOLERANCE = 1e-3  # relative slack for float32 rounding of a clipped update


def check_privacy_config(config: ExperimentConfig) -> None:
    """Refuse a run the sites would refuse later (DP-SGD with FIM rounds), and central DP over a robust aggregate
    or with a server step other than 1 (its noise is calibrated to the clipped mean's sensitivity, not a median's
    nor a scaled mean's)."""
    if config.privacy.central_dp.enabled and config.federation.aggregation != "fedavg":
        raise ConfigError(
            f"privacy.central_dp.enabled with federation.aggregation {config.federation.aggregation}: central DP's "
            "noise is calibrated to the mean of clipped updates; use federation.aggregation=fedavg with central DP"
        )
    if config.privacy.central_dp.enabled and config.federation.server_lr != 1.0:
        raise ConfigError(
            f"privacy.central_dp.enabled with federation.server_lr {config.federation.server_lr}: Flower adds the "
            "noise after the server step, calibrated to the unscaled mean; use federation.server_lr=1 with central DP"
        )
    if config.privacy.dp_sgd.enabled and config.federation.phases["fim"].rounds > 0:
        raise ConfigError(
            "privacy.dp_sgd.enabled with federation.phases.fim.rounds > 0: the FIM loss is not a sum of per-sample "
            "terms, so DP-SGD cannot bound one subject's influence on it; set federation.phases.fim.rounds=0 "
            "or use privacy.central_dp"
        )


def check_update_bound(config: ExperimentConfig) -> None:
    """Refuse a run that would average updates of any size: no `max_update_norm`, no `max_update_ratio` and no
    central DP clipping (which bounds them by `clipping_norm`)."""
    federation = config.federation
    if (
        federation.max_update_norm is None
        and federation.max_update_ratio is None
        and not config.privacy.central_dp.enabled
    ):
        raise ConfigError(
            "federation.max_update_norm and federation.max_update_ratio are both null and privacy.central_dp is off: "
            "one site could send an update of any size; set one of them (default max_update_ratio: 3.0)"
        )


def with_central_dp(
    strategy: PhaseFedAvg, config: ExperimentConfig, past_rounds: Sequence[Mapping[str, Any]] = ()
) -> PhaseFedAvg | PhaseClientSideFixedClipping:
    """The strategy wrapped for central DP when `privacy.central_dp.enabled`, else unchanged."""
    central = config.privacy.central_dp
    if not central.enabled:
        return strategy
    return PhaseClientSideFixedClipping(strategy, central, num_sites=len(config.federation.sites),
                                        past_rounds=past_rounds)  # fmt: skip


class PhaseClientSideFixedClipping(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed clipping wrapper around `PhaseFedAvg` (see the module docstring)."""

    def __init__(
        self,
        strategy: PhaseFedAvg,
        settings: CentralDPConfig,
        *,
        num_sites: int,
        past_rounds: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(strategy, settings.noise_multiplier, settings.clipping_norm, num_sites)
        self.strategy: PhaseFedAvg = strategy
        self.delta = settings.delta
        self.num_sites = num_sites
        self.rng = np.random.default_rng()  # OS entropy: the noise must not be reproducible by anyone
        bound = settings.clipping_norm * (1.0 + CLIP_TOLERANCE)
        current = strategy.max_update_norm
        strategy.max_update_norm = bound if current is None else min(float(current), bound)
        self.ledger = _accountant(settings.delta, num_sites) if settings.noise_multiplier > 0 else None
        for record in past_rounds:
            if "central_dp" in record:
                self._compose(int(record["central_dp"]["sites_averaged"]))

    def __repr__(self) -> str:
        return "Differential Privacy Strategy Wrapper (Client-Side Fixed Clipping, phase-aware)"

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        for msg in messages:
            msg.content.config_records[self.strategy.configrecord_key][KEY_CLIPPING_NORM] = self.clipping_norm
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """PhaseFedAvg checks the replies (update norm within the clipping norm); the release replaces its average
        with the uniform mean plus Gaussian noise."""
        _, metrics = self.strategy.aggregate_train(server_round, replies)
        accepted = self.strategy.accepted
        m = len(accepted)
        std = self.noise_multiplier * self.clipping_norm / m
        state = self.strategy.global_state
        for name in accepted[0]:
            mean = np.mean([arrays[name].astype(np.float64) for arrays in accepted], axis=0)
            noisy = mean + self.rng.normal(0.0, std, size=mean.shape)
            state[name] = noisy.astype(state[name].dtype)
        epsilon = self._compose(m)
        self.strategy.round_extras["central_dp"] = {
            "noise_multiplier": self.noise_multiplier,
            "clipping_norm": self.clipping_norm,
            "sites_averaged": m,
            "noise_std": std,
            "epsilon": epsilon,
            "delta": self.delta,
        }
        log.info("central DP: uniform mean of %d updates + noise std %.4g; epsilon %.4g at delta %g", m, std,
                 epsilon, self.delta)  # fmt: skip
        return self.strategy.global_arrays(), metrics

    def _compose(self, sites: int) -> float:
        """Account one release averaging `sites` updates; returns epsilon spent so far (inf without noise)."""
        if self.ledger is None:
            return math.inf
        self.ledger.compose(GaussianPrivacyEvent(self.noise_multiplier, sites, self.num_sites))
        return self.ledger.get_epsilon(self.delta)


def _accountant(delta: float, num_sites: int):
    from flwr.serverapp import RdpAccountant  # lazy in Flower: needs the dp-accounting package (flwr[dp])

    return RdpAccountant(
        PrivacyConfig(
            target_delta=delta,
            population_size=num_sites,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION,
        )
    )
