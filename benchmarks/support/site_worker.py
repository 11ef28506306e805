"""A site file for `cccmr site-worker` and the wait for its socket, as the worker benchmarks and tests start it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cccmr_model.processes import wait_for


def write_site_file(
    path: Path,
    *,
    site: str,
    data: Path,
    cache: Path,
    socket: Path,
    superlink: str = "127.0.0.1:9092",
    root_certificate: Path | str = "ca.crt",
    private_key: Path | str = "site.key",
) -> Path:
    """The site file (TOML) a worker reads; the certificate and key are only read by a SuperNode started from it."""
    path.write_text(
        f'site = "{site}"\ndata-path = "{data}"\ncache-path = "{cache}"\nworker-socket = "{socket}"\n'
        f'superlink = "{superlink}"\nroot-certificate = "{root_certificate}"\nprivate-key = "{private_key}"\n'
    )
    return path


def wait_for_socket(worker: subprocess.Popen, socket: Path, log: Path, timeout_s: float = 180) -> None:
    """Wait until the worker listens on `socket`; RuntimeError with its log's tail if it exits first."""
    wait_for(lambda: socket.exists() or worker.poll() is not None, timeout_s, "the site worker's socket")
    if worker.poll() is not None:
        raise RuntimeError(f"site worker exited: {log.read_text()[-2000:]}")
