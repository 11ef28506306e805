"""A phase with `rounds: 0` is skipped by the round plan (the cine-only baseline: pretrain then fusion)."""

from __future__ import annotations

import pytest

from cccmr_model.config import load_config
from cccmr_model.errors import ConfigError
from cccmr_model.model import PHASE_GROUPS
from server.schedule import plan_rounds


def test_zero_round_phase_is_skipped_and_rounds_stay_numbered():
    config = load_config("tiny", ["federation.phases.fim.rounds=0"])
    plan = plan_rounds(config.federation.phases, PHASE_GROUPS)
    assert [(p.server_round, p.phase, p.phase_round) for p in plan] == [
        (1, "pretrain", 1),
        (2, "pretrain", 2),
        (3, "fusion", 1),
    ]
    assert plan[-1].lr_window == (0.0, 1.0)
    assert plan[-1].trains == PHASE_GROUPS["fusion"]


def test_all_phases_zero_rounds_is_a_config_error():
    zero = [f"federation.phases.{p}.rounds=0" for p in ("pretrain", "fim", "fusion")]
    with pytest.raises(ConfigError, match="at least one phase needs rounds > 0"):
        load_config("tiny", zero)


def test_negative_rounds_is_a_config_error():
    with pytest.raises(ConfigError, match="rounds must be >= 0"):
        load_config("tiny", ["federation.phases.fim.rounds=-1"])
