"""The `cccmr` command: one subcommand per module of this package, each with `add_parser` and `run`.

A module is listed in `COMMANDS` only once its subcommand does its real job.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cccmr_model import __version__
from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.console import setup_logging
from cccmr_model.errors import CccmrError, ConfigError, not_utf8

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
    "rounds": "rounds_cmd",
    "site-worker": "site_worker_cmd",
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
    help_text = f"YAML config file, or the name of a packaged config: default, tiny (default: {default})"
    parser.add_argument("--config", default=default, help=help_text)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.lr=3e-4 (repeatable)",
    )


def add_manifest_arguments(parser: argparse.ArgumentParser) -> None:
    """How a site's manifest.csv is read: `--allow-outside-paths` for series outside the data root."""
    parser.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="read manifest series paths that leave the data root (absolute, or with ..); refused by default",
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


def central_training_setup(args: argparse.Namespace) -> tuple[ExperimentConfig, Path]:
    """What `cccmr train` and `cccmr ablation` check before any work: the config (`--config`, `--set`) enables no
    privacy they would not apply, and `--out` and `--cache` (default OUT/cache) can be written. Returns the config
    and the cache folder."""
    from cccmr_model.config import load_config

    config = load_config(args.config, args.overrides)
    refuse_unapplied_privacy(config, args, "trains centrally on pooled data")
    cache = args.cache or args.out / "cache"
    check_writable_folder(args.out, "--out")
    check_writable_folder(cache, "--cache")
    return config, cache


def check_writable_folder(path: Path, option: str) -> None:
    """Create `path` if needed and write a probe file in it, before any work; a CccmrError naming the option."""
    if path.exists() and not path.is_dir():
        raise CccmrError(f"{option} {path}: is a file, not a folder")
    problem = _write_problem(path)
    if problem is not None:
        raise CccmrError(f"{option} {path}: cannot write there ({problem})")


def check_writable_file(path: Path, option: str) -> None:
    """The output file `path` can be written (its folder created if needed), checked before any work."""
    if path.is_dir():
        raise CccmrError(f"{option} {path}: is a folder; give a file name")
    problem = _write_problem(path.parent)
    if problem is None and path.exists() and not os.access(path, os.W_OK):
        problem = "permission denied"
    if problem is not None:
        raise CccmrError(f"{option} {path}: cannot write there ({problem})")


def _write_problem(folder: Path) -> str | None:
    """Why no file can be written in `folder` (created if missing), or None when one can."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror}" if exc.filename and Path(exc.filename) != folder else exc.strerror
    return None


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
    except UnicodeDecodeError as exc:  # a text file no reader caught: name it, no traceback
        print(f"cccmr {args.command}: error: {_file_in(exc)}: not {not_utf8(exc)}", file=sys.stderr)
        return CccmrError.exit_code
    except OSError as exc:
        print(f"cccmr {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return CccmrError.exit_code
    except KeyboardInterrupt:
        logging.getLogger("cccmr").warning("interrupted")
        return 130


def _os_error(exc: OSError) -> str:
    """`FILE: what went wrong` (both files of a rename or copy), in one line."""
    files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    problem = " ".join(str(exc.strerror or exc).split())
    return f"{files}: {problem}" if files else problem


def _file_in(exc: BaseException) -> str:
    """The file being read when `exc` was raised: the innermost frame's `path`/`file`/`filename` variable."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name in ("path", "file", "filename"):
            value = frame.f_locals.get(name)
            if isinstance(value, str | Path):
                return str(value)
    return "a file"


if __name__ == "__main__":
    sys.exit(main())
