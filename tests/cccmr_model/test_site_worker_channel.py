"""The local channel and the site worker's serving loop with a stand-in handler: arrays round-trip through a
memfd, the socket is 600, a fingerprint mismatch and a handler error are one-line error replies, a worker that
dies mid-message gives the ClientApp an error instead of a hang, and the forwarding side imports no torch."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest

from cccmr_model.channel import ChannelError, app_fingerprint, request
from cccmr_model.site.worker import answer, open_socket, serve

FP = "0.1.0+test"


def echo(kind, header, arrays):
    if kind == "boom":
        raise ValueError("bad\nthing happened")
    return {"metrics": {"kind": kind, "seed": header["config"].get("seed"), "n": len(arrays)}}, [a * 2 for a in arrays]


@pytest.fixture
def worker(tmp_path):
    path = tmp_path / "w" / "worker.sock"
    server = open_socket(path)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(server, echo), kwargs={"fingerprint": FP, "stop": stop,
                                                                          "poll_s": 0.05})  # fmt: skip
    thread.start()
    yield path
    stop.set()
    thread.join(5)
    server.close()


def test_arrays_and_config_round_trip_and_the_socket_is_600(worker) -> None:
    assert stat.S_IMODE(worker.stat().st_mode) == 0o600 and stat.S_ISSOCK(worker.stat().st_mode)
    big = np.arange(3_000_000, dtype=np.float32)
    codes = np.array([-127, 0, 127], np.int8)
    header, out = request(worker, {"kind": "train", "fingerprint": FP, "config": {"seed": 7}}, [big, codes], 10)
    assert header["metrics"] == {"kind": "train", "seed": 7, "n": 2}
    np.testing.assert_array_equal(out[0], big * 2)
    assert out[1].dtype == np.int8 and list(out[1]) == [2, 0, -2]  # int8 wraps like numpy does
    header, out = request(worker, {"kind": "ping", "fingerprint": FP}, [], 10)
    assert header["metrics"]["pid"] == os.getpid() and out == []


def test_a_fingerprint_mismatch_and_a_failed_handler_are_one_line_errors(worker) -> None:
    header, _ = request(worker, {"kind": "train", "fingerprint": "0.0.9+old"}, [], 10)
    assert header["error"].startswith("app mismatch: the ClientApp runs 0.0.9+old, this site worker runs 0.1.0+test")
    assert header["fingerprint"] == FP  # named apart too, for cccmr doctor
    header, _ = request(worker, {"kind": "boom", "fingerprint": FP}, [], 10)
    assert header["error"] == "site worker: boom failed: ValueError: bad thing happened"
    header, _ = request(worker, {"kind": "ping", "fingerprint": FP}, [], 10)  # the worker went on
    assert "error" not in header


def test_a_worker_that_dies_mid_message_is_an_error_not_a_hang(tmp_path) -> None:
    path = tmp_path / "worker.sock"
    server = open_socket(path)

    def die():
        conn, _ = server.accept()
        conn.recv(10)  # takes the request, then the process "dies": the connection closes with no reply
        conn.close()

    thread = threading.Thread(target=die)
    thread.start()
    with pytest.raises(ChannelError, match=r"connection lost mid-message|closed the connection"):
        request(path, {"kind": "train", "fingerprint": FP}, [np.ones(10, np.float32)], 5)
    thread.join(5)
    server.close()
    with pytest.raises(ChannelError, match=r"cannot connect .*is it running\?"):
        request(path, {"kind": "ping", "fingerprint": FP}, [], 1)


def test_a_worker_that_does_not_answer_times_out(tmp_path) -> None:
    path = tmp_path / "worker.sock"
    server = open_socket(path)
    with pytest.raises(ChannelError, match="no reply within 1 s"):
        request(path, {"kind": "train", "fingerprint": FP}, [], 1)  # accepted by the backlog, never answered
    server.close()


def test_a_stale_socket_is_replaced_and_a_live_one_refused(tmp_path) -> None:
    path = tmp_path / "worker.sock"
    first = open_socket(path)
    with pytest.raises(OSError, match="another site worker is listening there"):
        open_socket(path)
    first.close()  # the worker died; its socket file stays
    open_socket(path).close()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OSError, match="exists and is not a socket"):
        open_socket(tmp_path / "plain")


def test_a_garbled_request_is_dropped_and_the_worker_goes_on(tmp_path) -> None:
    a, b = socket.socketpair()
    a.sendall(b"garbage without a memfd")
    a.close()
    answer(b, echo, FP)  # no exception escapes
    b.close()


def test_the_fingerprint_names_version_and_sources() -> None:
    import cccmr_model

    fp = app_fingerprint()
    assert fp.startswith(cccmr_model.__version__ + "+") and len(fp.split("+")[1]) == 16 and fp == app_fingerprint()


def test_the_channel_imports_no_torch() -> None:
    code = "import sys, cccmr_model.channel; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
