"""Experiment configuration: YAML files (the packaged ones in the repository's `configs/`) loaded into typed, frozen
dataclasses."""

from cccmr_model.config.loader import (
    CONFIG_DIR,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    resolve_config_path,
)
from cccmr_model.config.schema import CONFIG_VERSION, PHASES, ExperimentConfig

__all__ = [
    "CONFIG_DIR",
    "CONFIG_VERSION",
    "PHASES",
    "ExperimentConfig",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "resolve_config_path",
]
