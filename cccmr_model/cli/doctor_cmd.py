"""`cccmr doctor`: check a hospital site (Python, torch/CUDA, data, certificates, key, SuperLink) before it joins."""

from __future__ import annotations

import argparse

from cccmr_model.doctor import FAIL, format_checklist, load_site_config, run_checks

HELP = "check a hospital site before it joins the federation and print what to fix"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--site-config",
        required=True,
        metavar="FILE",
        help="TOML or YAML file: site, data-path, cache-path, device, superlink, root-certificate, private-key "
        "(and worker-socket, to check the warm site worker)",
    )


def run(args: argparse.Namespace) -> int:
    site = load_site_config(args.site_config)
    checks = run_checks(site)
    print(format_checklist(site, checks))
    return 1 if any(c.status == FAIL for c in checks) else 0
