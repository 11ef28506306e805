"""The warm site worker's serving loop: one long-running process per hospital that answers the ClientApp's
forwarded train and evaluate messages over the local channel (`cccmr_model/channel.py`).

It keeps what a fresh ClientApp process would rebuild for every message (torch, the ingested cache, the model
code, a GPU's CUDA context) and serves one message at a time. Every request carries the app's fingerprint; a
mismatch with the worker's own is refused in one line. A handler error becomes a one-line error reply, so the
ClientApp turns it into Flower's error reply for that site; the worker itself goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cccmr_model.channel import ChannelError, receive, send

log = logging.getLogger("cccmr.worker")

# (kind, request header, arrays) -> (reply header fields, arrays)
Handler = Callable[[str, Mapping[str, Any], list[np.ndarray]], tuple[dict[str, Any], list[np.ndarray]]]


def open_socket(path: Path) -> socket.socket:
    """A listening UNIX socket at `path`, mode 600; a stale socket file (no one listening) is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise OSError(f"{path}: exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: its worker is gone
        else:
            raise OSError(f"{path}: another site worker is listening there")
        finally:
            probe.close()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file is created 600: only the site's user may connect
    try:
        server.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    server.listen(4)
    return server


def serve(
    server: socket.socket,
    handle: Handler,
    *,
    fingerprint: str,
    stop: threading.Event | None = None,
    poll_s: float = 0.5,
) -> None:
    """Answer requests on `server` one at a time until `stop` is set."""
    server.settimeout(poll_s)
    while stop is None or not stop.is_set():
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(None)
            answer(conn, handle, fingerprint)


def answer(conn: socket.socket, handle: Handler, fingerprint: str) -> None:
    """Read one request from `conn`, run it and send the reply (an error reply on any failure)."""
    try:
        header, arrays = receive(conn)
    except (ChannelError, OSError) as err:
        log.warning("site worker: unreadable request (%s)", err)
        return
    kind = str(header.get("kind", ""))
    theirs = header.get("fingerprint")
    if theirs != fingerprint:
        _reply_error(conn, f"app mismatch: the ClientApp runs {theirs}, this site worker runs {fingerprint}; "
                     "install the same release at the site and restart the worker",
                     fingerprint=fingerprint)  # fmt: skip
        return
    if kind == "ping":
        _reply(conn, {"metrics": {"pid": os.getpid()}}, [])
        return
    try:
        fields, out = handle(kind, header, arrays)
    except Exception as err:  # the site's error reply; the worker goes on
        log.exception("site worker: %s failed", kind)
        _reply_error(conn, f"site worker: {kind} failed: {type(err).__name__}: {_one_line(err)}")
        return
    _reply(conn, fields, out)


def _reply(conn: socket.socket, header: Mapping[str, Any], arrays: list[np.ndarray]) -> None:
    with contextlib.suppress(OSError):  # the ClientApp gave up waiting: nothing to tell it
        send(conn, header, arrays)


def _reply_error(conn: socket.socket, message: str, **fields: Any) -> None:
    """A one-line error reply; `fields` add to its header (a mismatch names the worker's `fingerprint`)."""
    log.warning("%s", message)
    _reply(conn, {"error": message, **fields}, [])


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500]
