"""The plan of a federated run: `federation.phases` as a list of rounds, and what each round sends and trains.

A phase of R rounds x E local epochs covers the phase's cosine learning-rate schedule once: round k of R trains
the slice [(k - 1) / R, k / R] of it (`lr_window`), so R rounds of E epochs follow the same schedule as one
central run of R x E epochs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cccmr_model.config.schema import PHASES, FederatedPhaseConfig
from cccmr_model.sequences import CINE_SEQUENCES

# Frozen parameter groups a phase needs for its forward pass besides the groups it trains: the fusion MLP runs on
# the features of the two cine encoders. The sites start each message from a fresh process, so they keep no copy.
FORWARD_INPUTS: dict[str, tuple[str, ...]] = {
    "pretrain": (),
    "fim": (),
    "fusion": tuple(f"encoders.{seq}." for seq in CINE_SEQUENCES),
}


@dataclass(frozen=True)
class RoundPlan:
    server_round: int  # 1-based over the whole run
    phase: str
    phase_round: int  # 1-based within the phase
    phase_rounds: int
    local_epochs: int
    lr_window: tuple[float, float]  # fraction of the phase's cosine schedule this round covers
    trains: tuple[str, ...]  # parameter-name prefixes the sites train and send back
    sends: tuple[str, ...]  # prefixes sent to the sites: the trained ones plus frozen forward inputs


def plan_rounds(
    phases: Mapping[str, FederatedPhaseConfig], phase_groups: Mapping[str, tuple[str, ...]]
) -> list[RoundPlan]:
    """Every round of the run, phase after phase in the paper's order (pretrain, fim, fusion); a phase with 0 rounds
    is skipped (the cine-only baseline runs pretrain then fusion)."""
    plan: list[RoundPlan] = []
    for phase in PHASES:
        spec = phases[phase]
        trains = tuple(phase_groups[phase])
        sends = trains + tuple(p for p in FORWARD_INPUTS[phase] if not p.startswith(trains))
        for k in range(1, spec.rounds + 1):
            window = ((k - 1) / spec.rounds, k / spec.rounds)
            plan.append(RoundPlan(len(plan) + 1, phase, k, spec.rounds, spec.local_epochs, window, trains, sends))
    return plan


def round_seed(base_seed: int, plan: RoundPlan) -> int:
    """The seed of a round's local training: the run's seed for a phase's first round (as central training uses),
    then one more per round so that rounds draw different augmentations and batch orders."""
    return base_seed + plan.phase_round - 1


def select(state: Mapping[str, np.ndarray], prefixes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The entries of `state` whose name starts with one of `prefixes`, in the state's order."""
    return {k: v for k, v in state.items() if k.startswith(prefixes)}
