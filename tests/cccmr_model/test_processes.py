"""Process and port helpers: a started process and its child are stopped by pid, found by an environment marker
until then, and a listening port is seen as listening and in use until its socket closes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest

from cccmr_model.processes import (
    alive,
    descendants,
    free_port,
    listening,
    port_in_use,
    processes_with_env,
    stop,
    wait_for,
)


def test_stop_ends_the_process_and_its_descendants_found_by_their_environment():
    marker = uuid.uuid4().hex
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"  # noqa: E501
    process = subprocess.Popen([sys.executable, "-c", child], env={**os.environ, "TEST_MARKER": marker},
                               start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: len(descendants(process.pid)) == 1, 20, "the grandchild to start")
        family = [process.pid, *descendants(process.pid)]
        assert sorted(processes_with_env("TEST_MARKER", marker)) == sorted(family)
        stop(process, timeout=1)  # the grandchild ignores its parent's end: SIGKILLed after the timeout
        assert process.poll() is not None
        wait_for(lambda: not any(alive(pid) for pid in family), 5, "the killed grandchild to disappear")
        assert processes_with_env("TEST_MARKER", marker) == []
    finally:
        if process.poll() is None:
            process.kill()


def test_ports_and_wait_for_timeout():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listening(port) and port_in_use(port)
    port = free_port()
    assert not listening(port) and not port_in_use(port)
    with pytest.raises(TimeoutError, match="waiting for nothing"):
        wait_for(lambda: False, 0.5, "nothing")
