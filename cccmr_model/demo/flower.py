"""Flower's simulation runtime driven from outside: a local `flower-superlink --simulation` and `flwr run`.

The demo never imports flwr (`cccmr_model` stays plain PyTorch): it starts Flower's own executables as
subprocesses, so the federation is the same ServerApp and ClientApp a real deployment runs. Everything runs offline
with its own FLWR_HOME and Ray temp folder. Every process is started in a new session and carries a marker in its
environment; `close()` stops the SuperLink, `flwr run` and everything that carries the marker (Ray's workers
included, even when re-parented), then checks that the port is free again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cccmr_model.errors import CccmrError
from cccmr_model.processes import free_port, port_in_use, processes_with_env, signal_all

log = logging.getLogger("cccmr.demo.flower")

MARKER = "CCCMR_DEMO_PROCESS"  # environment variable every process of one simulation carries
# Flower's round lines and our ServerApp's log lines worth showing while the federation runs.
SHOWN = re.compile(r"\[ROUND|cccmr\.server|round \d+|release|ERROR|WARNING|Traceback|Error", re.IGNORECASE)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class FlowerError(CccmrError):
    """The local Flower simulation could not start or a run failed."""


# `[tool.flwr.app]` of the repository's pyproject.toml, for an installed package, which has no pyproject.toml
# (tests/cccmr_model/demo/test_flower_app.py keeps the two equal).
FLOWER_APP: dict[str, Any] = {
    "publisher": "cccmr",
    "components": {"serverapp": "server.app:app", "clientapp": "client.app:app"},
    "config": {
        "config-path": "default",
        "config-overrides": "",
        "run-dir": "runs/federated",
        "resume-from": "",
        "sim-data-dir": "",
        "sim-cache-dir": "",
    },
}


def app_dir() -> Path:
    """The Flower app folder (pyproject.toml with `[tool.flwr.app]`): the repository holding this package."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or "[tool.flwr.app]" not in pyproject.read_text():
        raise FlowerError(f"{root}: no Flower app here (pyproject.toml with [tool.flwr.app]); not a source checkout")
    return root


def flower_app(work_dir: Path) -> Path:
    """The Flower app folder for `flwr run`: the source checkout holding this package when there is one; for an
    installed package (`pip install .`), `work_dir/app` with just the app's pyproject.toml. Its bundle then holds no
    code: the ServerApp and ClientApp come from the installed `server` and `client` packages, and the configs from
    the installed `cccmr_model` (package data)."""
    try:
        return app_dir()
    except FlowerError:
        return write_app(Path(work_dir) / "app")


def write_app(folder: Path) -> Path:
    """Write a Flower app folder holding only pyproject.toml: `[project]` and `FLOWER_APP` as `[tool.flwr.app]`."""
    from cccmr_model import __version__

    def table(name: str, values: Mapping[str, Any]) -> str:
        return f"[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()) + "\n"

    project = {"name": "cccmr-federated", "version": __version__, "description": "CC-CMR Federated (installed)",
               "license": "Apache-2.0", "dependencies": []}  # fmt: skip
    app = {k: v for k, v in FLOWER_APP.items() if not isinstance(v, dict)}
    text = table("project", project) + table("tool.flwr.app", app)
    text += "".join(table(f"tool.flwr.app.{k}", v) for k, v in FLOWER_APP.items() if isinstance(v, dict))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(text)
    return folder


def offline_env(home: Path, ray_tmp: Path, marker: str | None = None) -> dict[str, str]:
    """The environment of every Flower process: offline, its own FLWR_HOME, the venv's executables first; with
    `marker`, `MARKER=marker` so that `marked_processes` finds them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLWR_", "RAY_"))}
    env.update(
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TMPDIR=str(ray_tmp),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        OMP_NUM_THREADS="1",
        FLWR_SUPEREXEC_TASK_POLL_INTERVAL="0.2",  # the SuperExec starts app processes sooner (default 1 s)
        PYTHONUNBUFFERED="1",
    )
    if marker is not None:
        env[MARKER] = marker
    return env


def marked_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment carries `MARKER=marker` (ours, wherever they were re-parented)."""
    return processes_with_env(MARKER, marker)


class FlowerSimulation:
    """A local simulation SuperLink for `flwr run`; use as a context manager so it is always stopped."""

    def __init__(self, work_dir: Path, *, start_timeout: float = 90.0) -> None:
        self.work_dir = Path(work_dir)
        self.start_timeout = start_timeout
        self.marker = uuid.uuid4().hex
        self.port = 0
        self.app = flower_app(self.work_dir)
        self.processes: list[subprocess.Popen] = []
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # Ray's socket paths must stay short
        self.env = offline_env(self.work_dir / "flwr-home", self.ray_tmp, self.marker)

    def __enter__(self) -> FlowerSimulation:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Write FLWR_HOME/config.toml with a `sim` connection and start the SuperLink; wait until it listens."""
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )
        args = ["flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(self.port),
                "--disable-runtime-dependency-installation"]  # fmt: skip
        with (self.work_dir / "superlink.log").open("w") as out:
            superlink = self._popen(args, stdout=out)
        log.info("simulation SuperLink starting on 127.0.0.1:%d (pid %d)", self.port, superlink.pid)
        deadline = time.monotonic() + self.start_timeout
        while not port_in_use(self.port):
            if superlink.poll() is not None:
                raise FlowerError(f"flower-superlink exited ({superlink.returncode}): {self._tail('superlink.log')}")
            if time.monotonic() > deadline:
                raise FlowerError(f"flower-superlink did not listen within {self.start_timeout:.0f} s")
            time.sleep(0.3)

    def run_app(
        self,
        run_config: Mapping[str, str | int | float | bool],
        *,
        num_supernodes: int,
        name: str,
        timeout: float,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        """`flwr run <app> sim --stream` with `run_config` (a TOML file); streams round lines; raises on failure."""
        config_file = self.work_dir / f"{name}-run-config.toml"
        config_file.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in run_config.items()))
        args = [
            str(Path(sys.executable).parent / "flwr"), "run", str(self.app), "sim", "--stream",
            "--run-config", str(config_file),
            "--federation-config", f"num-supernodes={num_supernodes} client-resources-num-cpus=1",
        ]  # fmt: skip
        log_path = self.work_dir / f"{name}.log"
        process = self._popen(args, stdout=subprocess.PIPE, text=True, bufsize=1)
        started = time.monotonic()
        watchdog = threading.Timer(timeout, process.terminate)  # a silent hang ends too
        watchdog.start()
        try:
            with log_path.open("w") as out:
                for line in process.stdout:  # type: ignore[union-attr]
                    text = ANSI.sub("", line.rstrip())
                    out.write(text + "\n")
                    out.flush()
                    if text and SHOWN.search(text):
                        (on_line or _show)(text)
            code = process.wait()
        finally:
            watchdog.cancel()
        if code != 0 and time.monotonic() - started >= timeout:
            raise FlowerError(f"flwr run {name}: stopped after {timeout:.0f} s; see {log_path}")
        if code != 0:
            raise FlowerError(f"flwr run {name} failed ({code}); see {log_path}: {self._tail(log_path.name)}")

    def close(self) -> None:
        """Stop every process of this simulation (SIGTERM, then SIGKILL) and check the port is free."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        while (left := marked_processes(self.marker)) and time.monotonic() < deadline:
            signal_all(left, signal.SIGTERM)
            time.sleep(0.3)
        signal_all(marked_processes(self.marker), signal.SIGKILL)
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("process %d did not exit after SIGKILL", process.pid)
        self.processes = []
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        if self.port:
            deadline = time.monotonic() + 10.0
            while port_in_use(self.port) and time.monotonic() < deadline:
                time.sleep(0.3)
            if port_in_use(self.port):
                log.warning("port %d is still in use after stopping the SuperLink", self.port)
            else:
                log.info("simulation SuperLink stopped; port %d is free", self.port)

    def leftovers(self) -> list[int]:
        """Pids of this simulation's processes still alive (empty after `close`)."""
        return marked_processes(self.marker)

    def _popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(
            args, env=self.env, cwd=self.work_dir, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
        self.processes.append(process)
        return process

    def _tail(self, name: str, lines: int = 15) -> str:
        path = self.work_dir / name
        text = path.read_text(errors="replace") if path.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])


def _show(line: str) -> None:
    log.info("%s", line)
