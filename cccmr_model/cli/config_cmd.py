"""`cccmr config`: validate a config and print it fully resolved (defaults, base files and overrides applied)."""

from __future__ import annotations

import argparse

from cccmr_model.cli import add_config_arguments
from cccmr_model.config import dump_config, load_config

HELP = "validate an experiment config and print it fully resolved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    print(dump_config(config), end="")
    return 0
