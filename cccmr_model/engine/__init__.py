"""Local training engine: the three CC-CMR phases (`train_phase`) and cine-only evaluation (`evaluate_model`)."""

from cccmr_model.engine.evaluate import EvalResult, evaluate_model
from cccmr_model.engine.train import PhaseResult, train_phase

__all__ = ["EvalResult", "PhaseResult", "evaluate_model", "train_phase"]
