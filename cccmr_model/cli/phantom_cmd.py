"""`cccmr phantom`: write a synthetic multi-centre CMR cohort as DICOM exports, or a PNG preview of one."""

from __future__ import annotations

import argparse
import logging
import time

from cccmr_model.console import progress
from cccmr_model.errors import DataError

HELP = "generate a synthetic multi-centre CMR cohort (DICOM + manifests + ground truth), or preview one"
log = logging.getLogger("cccmr.phantom")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="cohort folder to write (one sub-folder per site, plus test/)")
    parser.add_argument("--sites", default="anzhen,lanzhou", help="comma-separated site names (default: %(default)s)")
    parser.add_argument("--subjects", type=int, default=60, help="subjects per site (default: %(default)s)")
    parser.add_argument("--test-subjects", type=int, default=0, help="held-out subjects in OUT/test (default: 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="full", choices=("full", "small", "tiny"),
                        help="full: 192-256 matrix, 20-30 frames; small, tiny: for tests and the demo")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="processes (default: %(default)s)")
    parser.add_argument("--preview", metavar="DIR", help="write DIR/preview.png from an existing cohort instead")


def run(args: argparse.Namespace) -> int:
    if args.preview:
        from cccmr_model.phantom.preview import write_preview

        print(write_preview(args.preview))
        return 0
    if not args.out:
        raise DataError("phantom: give --out DIR (or --preview DIR)")
    from cccmr_model.phantom.cohort import generate_cohort

    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    start = time.perf_counter()
    truths = generate_cohort(
        args.out, sites, args.subjects, args.seed, test_subjects=args.test_subjects, size=args.size,
        workers=args.workers, progress=progress,
    )  # fmt: skip
    for group, items in truths.items():
        patients = sum(t["label"] for t in items)
        log.info("%s: %d subjects, %d patients", group, len(items), patients)
    log.info("wrote %s in %.1f s", args.out, time.perf_counter() - start)
    print(args.out)
    return 0
