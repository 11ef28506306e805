"""A site's DP-SGD budget: where its privacy ledger lives (its cache folder, so epsilon accumulates across rounds,
runs and restarts) and local DP-SGD training that fails the round with a clear reason once the budget allows no
further step."""

from __future__ import annotations

from pathlib import Path

from cccmr_model.engine.dp_sgd import LEDGER_NAME, train_phase_dp
from cccmr_model.engine.train import PhaseResult
from cccmr_model.errors import CccmrError


class PrivacyBudgetError(CccmrError):
    """The site's DP-SGD budget allows no further training step."""


def dp_ledger_path(cache_path: Path) -> Path:
    """Where a site keeps its DP-SGD privacy ledger."""
    return Path(cache_path) / "privacy" / LEDGER_NAME


def train_dp_sgd(*args, ledger_path: Path | None, **kwargs) -> PhaseResult:
    """`train_phase_dp`; raises PrivacyBudgetError when it could take no step at all."""
    if ledger_path is None:
        raise ValueError("DP-SGD needs the site's ledger path")
    result = train_phase_dp(*args, ledger_path=ledger_path, **kwargs)
    if result.num_examples == 0:
        raise PrivacyBudgetError(
            f"DP-SGD budget privacy.dp_sgd.epsilon_budget is spent at this site (epsilon "
            f"{result.metrics['dp_epsilon']:.3f} at delta {result.metrics['dp_delta']:g}, ledger {ledger_path}); "
            "it trains no further"
        )
    return result
