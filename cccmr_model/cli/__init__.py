"""The `cccmr` command: one subcommand per module of this package, each with `add_parser` and `run`.

A module is listed in `COMMANDS` only once its subcommand does its real job.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cccmr_model import __version__
from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.console import setup_logging
from cccmr_model.errors import CccmrError, ConfigError

# subcommand name -> module in cccmr_model.cli
COMMANDS: dict[str, str] = {
    "ablation": "ablation_cmd",
    "config": "config_cmd",
    "demo": "demo_cmd",
    "doctor": "doctor_cmd",
    "evaluate": "evaluate_cmd",
    "ingest": "ingest_cmd",
    "phantom": "phantom_cmd",
    "export": "export_cmd",
    "predict": "predict_cmd",
    "train": "train_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cccmr",
        description="CC-CMR Federated: gadolinium-free cardiomyopathy screening from cine CMR, trained on Flower.",
    )
    parser.add_argument("--version", action="version", version=f"cccmr {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress or info lines, warnings only")
    common.add_argument("-v", "--verbose", action="store_true", help="debug log lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"cccmr_model.cli.{module_name}")
        sp = sub.add_parser(name, parents=[common], help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser, default: str = "default") -> None:
    """The `--config` / `--set` pair every config-driven subcommand takes."""
    parser.add_argument("--config", default=default, help=f"YAML config file or name in configs/ (default: {default})")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.lr=3e-4 (repeatable)",
    )


def refuse_unapplied_privacy(config: ExperimentConfig, args: argparse.Namespace, why: str) -> None:
    """Central training applies no differential privacy: an enabled `privacy.*` setting is refused, naming where
    it was set (the `--set` or the config file), so no result claims privacy that did not happen."""
    from cccmr_model.config.loader import resolve_config_path

    mechanisms = {"dp_sgd": ("DP-SGD", config.privacy.dp_sgd), "central_dp": ("central DP", config.privacy.central_dp)}
    for name, (title, mechanism) in mechanisms.items():
        if not mechanism.enabled:
            continue
        key = f"privacy.{name}.enabled"
        given = [item for item in args.overrides if item.split("=", 1)[0].strip() == key]
        source = f"--set {given[-1]}" if given else f"{resolve_config_path(args.config)}: key '{key}'"
        raise ConfigError(
            f"{source}: `cccmr {args.command}` {why} and applies no {title} (no epsilon is spent); set it false, "
            "or train federated (flwr run), where the sites and the server apply it"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    setup_logging(quiet=args.quiet, verbose=args.verbose)
    try:
        return int(args._run(args) or 0)
    except CccmrError as exc:
        print(f"cccmr {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        logging.getLogger("cccmr").warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
