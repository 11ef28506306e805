"""`cccmr export`: the cine-only predictor of a release as an ONNX graph, verified against PyTorch."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cccmr_model.cli import check_writable_file
from cccmr_model.runtime_options import DEFAULT_OPSET, check_opset

HELP = "export a release's cine-only predictor to ONNX (checked against PyTorch with onnxruntime)"
log = logging.getLogger("cccmr.export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--release", required=True, type=Path, help="release folder")
    parser.add_argument("--format", choices=["onnx"], default="onnx", help="export format (onnx)")
    parser.add_argument("--out", type=Path, help="output file (default: <release folder>.onnx beside the release)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime-vs-PyTorch check")


def run(args: argparse.Namespace) -> int:
    check_opset(args.opset)
    out = args.out or args.release.resolve().with_name(args.release.resolve().name + ".onnx")
    check_writable_file(out, "--out")
    from cccmr_model.export import TOLERANCE, export_and_check  # torch: not needed to build the parser
    from cccmr_model.release import load_release

    release = load_release(args.release)
    report = export_and_check(release, out, opset=args.opset, check=not args.no_check)
    if report.checked_batches:
        log.info(
            "onnxruntime vs PyTorch: max abs difference %.2e over batches %s (tolerance %g)",
            report.max_abs_diff, report.checked_batches, TOLERANCE,
        )  # fmt: skip
    print(report.path)
    return 0
