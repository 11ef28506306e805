"""`cccmr ingest`: a site's DICOM into the training cache, or (`--discover`) a draft manifest from a raw export."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cccmr_model.cli import add_config_arguments, add_manifest_arguments, check_writable_file, check_writable_folder
from cccmr_model.config import load_config
from cccmr_model.config.schema import DataConfig
from cccmr_model.errors import DataError

HELP = "read a site's DICOM (manifest.csv) into the preprocessed cache; --discover drafts the manifest"

log = logging.getLogger("cccmr.ingest")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="site data root (holds manifest.csv)")
    parser.add_argument("--cache", type=Path, help="cache folder to fill (required unless --discover)")
    add_config_arguments(parser)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse the whole manifest on any bad row (otherwise only that subject is skipped), "
        "and exit 1 on any rejected series",
    )
    add_manifest_arguments(parser)
    parser.add_argument(
        "--discover",
        action="store_true",
        help="scan a raw export, classify its series and write a draft manifest (labels left empty)",
    )
    parser.add_argument("--out", type=Path, help="with --discover: draft path (default DATA/manifest.draft.csv)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.discover:
        return _discover(args, config.data)
    if args.cache is None:
        raise DataError("--cache is required (the folder to write the preprocessed subjects to)")
    if args.workers < 1:
        raise DataError(f"--workers must be at least 1, got {args.workers}")
    check_writable_folder(args.cache, "--cache")
    from cccmr_model.data import ingest_site

    report = ingest_site(
        args.data,
        args.cache,
        config.data,
        workers=args.workers,
        strict=args.strict,
        allow_outside_paths=args.allow_outside_paths,
    )
    print(report.summary())
    print(f"report: {args.cache / 'ingest-report.json'}")
    if not report.ok:
        log.error("no usable subjects in %s", args.data)
        return 1
    if args.strict and report.rejections:
        log.error("--strict: %d rejected series", len(report.rejections))
        return 1
    return 0


def _discover(args: argparse.Namespace, data_config: DataConfig) -> int:
    from cccmr_model.data.discover import discover_series, write_draft

    if args.out is not None:
        check_writable_file(args.out, "--out")
    discovery = discover_series(args.data, data_config)
    path = write_draft(discovery, args.out)
    print(discovery.summary())
    print(f"draft manifest: {path} (fill in the labels, then save it as {args.data / 'manifest.csv'})")
    return 0
