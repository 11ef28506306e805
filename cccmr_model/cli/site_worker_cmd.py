"""`cccmr site-worker`: the warm training process of one hospital site, next to its SuperNode.

It reads the site file (`--site-config`, the one `cccmr doctor` checks), listens on its `worker-socket`
(mode 600) and answers the ClientApp's forwarded train and evaluate messages with the same code the ClientApp
would run in its own process (`cccmr_model/site/handlers.py`), keeping torch, the ingestion cache and a GPU's
CUDA context warm between rounds. SIGTERM or SIGINT stops it after the current message.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

HELP = "run the warm site worker that trains for this site's ClientApp (next to its SuperNode)"

log = logging.getLogger("cccmr.worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site-config", required=True, metavar="FILE", help="the site file (as for cccmr doctor)")
    parser.add_argument("--socket", type=Path, help="UNIX socket path (default: the site file's worker-socket)")


def run(args: argparse.Namespace) -> int:
    from cccmr_model.channel import app_fingerprint
    from cccmr_model.doctor import load_site_config
    from cccmr_model.errors import ConfigError
    from cccmr_model.site.worker import open_socket, serve

    site = load_site_config(args.site_config)
    path = args.socket or site.worker_socket
    if path is None:
        raise ConfigError(f"{args.site_config}: worker-socket is not set (or pass --socket PATH)")
    handle = site_handler(site)
    fingerprint = app_fingerprint()
    server = open_socket(Path(path))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("site worker for %s on %s (app %s)", site.name, path, fingerprint)
    try:
        serve(server, handle, fingerprint=fingerprint, stop=stop)
    finally:
        server.close()
        Path(path).unlink(missing_ok=True)
    log.info("site worker for %s stopped", site.name)
    return 0


def site_handler(site: Any):
    """The worker's handler for `site`: train and evaluate messages through the site handlers; a message whose
    node config names another site is refused."""
    from cccmr_model.site.handlers import handle_evaluate, handle_train

    def handle(kind: str, header: Mapping[str, Any], arrays: list[np.ndarray]) -> tuple[dict, list[np.ndarray]]:
        named = header.get("site")
        if named is not None and named != site.name:
            raise ValueError(f"this worker serves site {site.name}, the SuperNode's node config names {named}")
        fields = header.get("config", {})
        if kind == "train":
            name, metrics, out = handle_train(fields, arrays, lambda _config: site)
        elif kind == "evaluate":
            name, metrics, out = handle_evaluate(fields, arrays, lambda _config: site)
        else:
            raise ValueError(f"unknown message kind {kind!r}")
        return {"site": name, "metrics": metrics}, out

    return handle
