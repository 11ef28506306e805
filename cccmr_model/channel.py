"""The local channel between a site's ClientApp and its warm site worker (`cccmr site-worker`).

One UNIX stream socket (mode 600, owned by the site's user) carries one request and one reply per connection:
a 4-byte length and a JSON header, with the parameter arrays in an anonymous memory file (memfd) whose file
descriptor travels with the header (SCM_RIGHTS). No parameter byte goes through the socket, and nothing uses
/dev/shm (64 MB in a default Docker container). Imports numpy and the standard library only: the ClientApp that
forwards to a worker loads neither torch nor the model.

Header fields: `kind` (train, evaluate, ping), `fingerprint` (the app's, see `app_fingerprint`), `config`
(the message's config, JSON-safe), `arrays` (dtype and shape of each array in the memfd, in order); a reply
has `metrics` or `error` (one line) instead of `config`.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import socket
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_HEADER = 16 * 1024 * 1024  # bytes of JSON header (metrics may hold per-subject scores)
_LENGTH = struct.Struct("!I")


class ChannelError(Exception):
    """The other end broke the protocol, closed the connection or did not answer in time."""


def app_fingerprint() -> str:
    """`<version>+<sha256 prefix>` of this installation's cccmr_model sources: the ClientApp (from the app bundle)
    and the worker (from the site's install) must run the same code."""
    import cccmr_model

    root = Path(cccmr_model.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{cccmr_model.__version__}+{digest.hexdigest()[:16]}"


def send(sock: socket.socket, header: Mapping[str, Any], arrays: Sequence[np.ndarray] = ()) -> None:
    """Write `arrays` into a fresh memfd and send the header (with their layout) and the descriptor."""
    layout = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    body = json.dumps({**header, "arrays": layout}, allow_nan=False).encode()
    if len(body) > MAX_HEADER:
        raise ChannelError(f"header of {len(body)} bytes exceeds {MAX_HEADER}")
    fd = _memfd_with(arrays)
    try:
        socket.send_fds(sock, [_LENGTH.pack(len(body)) + body], [fd])
    finally:
        os.close(fd)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The header and the arrays (copied out of the memfd) of one message; ChannelError if none arrives whole."""
    first, fds, _, _ = socket.recv_fds(sock, 65536, 4)
    if not first:
        raise ChannelError("the other end closed the connection without a message")
    try:
        if len(fds) != 1:
            raise ChannelError(f"expected one memory file with the message, got {len(fds)}")
        data = _read_exactly(sock, first, _LENGTH.size)
        (length,) = _LENGTH.unpack(data[: _LENGTH.size])
        if length > MAX_HEADER:
            raise ChannelError(f"header of {length} bytes exceeds {MAX_HEADER}")
        data = _read_exactly(sock, data, _LENGTH.size + length)
        try:
            header = json.loads(data[_LENGTH.size : _LENGTH.size + length])
        except ValueError as err:
            raise ChannelError(f"unreadable header ({err})") from None
        return header, _arrays_from(fds[0], header.get("arrays", []))
    finally:
        for fd in fds:
            os.close(fd)


def connect(path: Path, timeout: float) -> socket.socket:
    """A connection to the worker's socket, or ChannelError naming the path and what is wrong."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as err:
        sock.close()
        raise ChannelError(
            f"site worker socket {path}: cannot connect ({err.strerror or err}); is it running?"
        ) from None
    return sock


def request(
    path: Path, header: Mapping[str, Any], arrays: Sequence[np.ndarray], timeout: float
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """One request to the worker at `path` and its reply; ChannelError if the worker dies or times out."""
    with connect(path, timeout) as sock:
        try:
            send(sock, header, arrays)
            return receive(sock)
        except TimeoutError:
            raise ChannelError(f"site worker {path}: no reply within {timeout:.0f} s") from None
        except (ConnectionError, BrokenPipeError) as err:
            raise ChannelError(f"site worker {path}: connection lost mid-message ({err}); did it stop?") from None


def _memfd_with(arrays: Sequence[np.ndarray]) -> int:
    fd = os.memfd_create("cccmr-parameters", os.MFD_CLOEXEC)
    total = sum(a.nbytes for a in arrays)
    os.ftruncate(fd, max(total, 1))
    if total:
        with mmap.mmap(fd, total) as view:
            offset = 0
            for a in arrays:
                view[offset : offset + a.nbytes] = np.ascontiguousarray(a).tobytes(order="C")
                offset += a.nbytes
    return fd


def _arrays_from(fd: int, layout: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    try:
        specs = [(np.dtype(item["dtype"]), tuple(int(d) for d in item["shape"])) for item in layout]
    except (KeyError, TypeError, ValueError) as err:
        raise ChannelError(f"bad array layout in the header ({err})") from None
    sizes = [dtype.itemsize * int(np.prod(shape, dtype=np.int64)) for dtype, shape in specs]
    total = sum(sizes)
    if total == 0:
        return [np.zeros(shape, dtype) for dtype, shape in specs]
    if os.fstat(fd).st_size < total:
        raise ChannelError(f"memory file holds {os.fstat(fd).st_size} bytes, the header describes {total}")
    out, offset = [], 0
    with mmap.mmap(fd, total, prot=mmap.PROT_READ) as view:
        for (dtype, shape), size in zip(specs, sizes, strict=True):
            out.append(
                np.frombuffer(view, dtype=dtype, count=size // dtype.itemsize, offset=offset).reshape(shape).copy()
            )
            offset += size
    return out


def _read_exactly(sock: socket.socket, data: bytes, size: int) -> bytes:
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ChannelError("the other end closed the connection mid-header")
        data += chunk
    return data
