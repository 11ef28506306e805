"""Helpers for the Flower integration tests: small DICOM sites, an offline Flower environment, and processes that
are started with their own session and stopped by pid (with their descendants), leaving no port bound."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cccmr_model.config import ExperimentConfig, load_config
from cccmr_model.demo.flower import offline_env
from cccmr_model.phantom.dicom_writer import Geometry, Sampling, SeriesTags, write_series
from cccmr_model.processes import alive, descendants, free_port, listening, stop, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
HEADER = "subject_id,label,subtype,cine_4ch,cine_sax,lge_sax\n"


def write_site(root: Path, subjects: int, seed: int) -> Path:
    """A site folder with `manifest.csv` and small classic DICOM series; patients (label 1) get a bright centre."""
    rng = np.random.default_rng(seed)
    rows = []
    yy, xx = np.mgrid[-1:1:24j, -1:1:24j]
    blob = np.exp(-(xx**2 + yy**2) * 4)  # R, C
    for index in range(subjects):
        name, label = f"s{seed}-{index:02d}", index % 2
        for folder, slices, frames, description in (
            ("cine4ch", 1, 8, "cine 4ch"),
            ("cinesax", 3, 8, "cine sax"),
            ("lge", 6, 1, "LGE"),
        ):
            base = rng.gamma(2.0, 60.0, (slices, frames, 24, 24))  # S, F, R, C
            array = (base + 200.0 * label * blob).astype(np.float32)
            geometry = Geometry.stack([-40.0, 0.0, 30.0], (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), slices, 8.0)
            trigger = np.tile(np.arange(frames) * 50.0, (slices, 1)) if frames > 1 else None
            tags = SeriesTags(series_description=description, inversion_time=300.0 if folder == "lge" else None)
            write_series(root / name / folder, array, Sampling(geometry, (9.0, 9.0), 8.0, trigger), tags=tags)
        rows.append(f"{name},{label},{'HCM' if label else ''},{name}/cine4ch,{name}/cinesax,{name}/lge")
    (root / "manifest.csv").write_text(HEADER + "\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def phantom_sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<dir>/anzhen` and `<dir>/lanzhou`, six subjects each (three healthy, three patients)."""
    root = tmp_path_factory.mktemp("sites")
    for seed, site in enumerate(("anzhen", "lanzhou")):
        write_site(root / site, 6, seed)
    return root


@pytest.fixture
def one_round_per_phase() -> tuple[ExperimentConfig, dict[str, int]]:
    """The equivalence tests' run: site anzhen alone, one round per phase holding all of that phase's epochs, and
    the same epochs for central training; (config, epochs per phase)."""
    epochs = {"pretrain": 2, "fim": 1, "fusion": 2}
    sets = ["train.resample_factor=1", "federation.sites=[anzhen]"]
    for phase, e in epochs.items():
        sets += [f"train.phases.{phase}.epochs={e}", f"federation.phases.{phase}.rounds=1"]
        sets += [f"federation.phases.{phase}.local_epochs={e}"]
    return load_config("tiny", sets), epochs


def flower_env(home: Path) -> dict[str, str]:
    """An offline Flower environment with its own FLWR_HOME and the venv's executables first on PATH."""
    home.mkdir(parents=True, exist_ok=True)
    return offline_env(home, Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))  # Ray's socket paths stay short


class Processes:
    """Processes started by one test, each in its own session; all stopped (by pid) at the end of the test."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir, self.env, self.started = log_dir, env, []

    def start(self, args: list[str], log: str, **kwargs) -> subprocess.Popen:
        out = (self.log_dir / log).open("w")
        process = subprocess.Popen(
            args, env=kwargs.pop("env", self.env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=kwargs.pop("cwd", REPO_ROOT), **kwargs,
        )  # fmt: skip
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.log_dir / name).read_text(errors="replace")

    def stop_all(self) -> None:
        for process in reversed(self.started):
            stop(process)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path, flower_env(tmp_path / "flwr-home"))
    yield procs
    procs.stop_all()
    shutil.rmtree(procs.env["RAY_TMPDIR"], ignore_errors=True)


FLWR = str(VENV_BIN / "flwr")


def start_simulation_superlink(processes: Processes, port: int) -> subprocess.Popen:
    """A `flower-superlink --simulation` on 127.0.0.1:`port`, registered as connection `sim` in FLWR_HOME."""
    home = Path(processes.env["FLWR_HOME"])
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    superlink = processes.start(
        ["flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port),
         "--disable-runtime-dependency-installation"],
        log="superlink.out",
    )  # fmt: skip
    wait_for(lambda: listening(port) or superlink.poll() is not None, 60, "the simulation SuperLink")
    assert superlink.poll() is None, processes.log("superlink.out")
    return superlink


def flwr_run(
    processes: Processes, run_config: dict[str, str | int], timeout: float, *, stream: bool = True
) -> subprocess.CompletedProcess:
    """`flwr run . sim` of this app with two simulated SuperNodes; without `stream` it returns once submitted."""
    pairs = " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}" for k, v in run_config.items())
    return subprocess.run(
        [FLWR, "run", ".", "sim", *(["--stream"] if stream else []), "--run-config", pairs,
         "--federation-config", "num-supernodes=2 client-resources-num-cpus=1"],
        cwd=REPO_ROOT, env=processes.env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def descendants_named(pid: int, name: str) -> list[int]:
    """Descendants of `pid` whose command line contains `name`."""
    found = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if name in cmdline:
            found.append(child)
    return found


def kill_tree(pid: int, timeout: float = 15.0) -> None:
    """SIGKILL `pid` (a crash, no clean-up), then SIGTERM/SIGKILL the descendants it leaves behind."""
    family = descendants(pid)
    os.kill(pid, signal.SIGKILL)
    for child in family:
        if alive(child):
            os.kill(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in [pid, *family]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for child in family:
        if alive(child):
            os.kill(child, signal.SIGKILL)


DEPLOY = REPO_ROOT / "deploy"


def deploy_script(env: dict[str, str], name: str, *args: object) -> subprocess.CompletedProcess:
    """Run `deploy/<name>` as an operator would; a failure shows the script's output."""
    result = subprocess.run(
        ["bash", str(DEPLOY / name), *map(str, args)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    return result


@dataclass
class TlsSuperLink:
    """A SuperLink started by deploy/start-superlink.sh (TLS + SuperNode auth) with `sites` registered."""

    address: str
    port: int
    certs: Path
    keys: Path
    env: dict[str, str]  # for the daemons: each gets its own state dir, so no shared FLWR_HOME
    process: subprocess.Popen


def start_tls_superlink(tmp_path: Path, processes: Processes, sites: tuple[str, ...]) -> TlsSuperLink:
    """Consortium CA and SuperLink certificate, a key pair per site, the SuperLink, and each site registered."""
    env = {k: v for k, v in processes.env.items() if k != "FLWR_HOME"}
    certs, keys = tmp_path / "certs", tmp_path / "keys"
    deploy_script(env, "make-ca.sh", "--out", certs, "127.0.0.1", "localhost")
    for site in sites:
        deploy_script(env, "make-site-keys.sh", "--out", keys, site)
    port = free_port()
    superlink = processes.start(
        ["bash", str(DEPLOY / "start-superlink.sh"), "--certs", str(certs), "--state-dir", str(tmp_path / "link"),
         "--host", "127.0.0.1", "--port", str(port)],
        log="superlink.out", env=env,
    )  # fmt: skip
    wait_for(lambda: listening(port) or superlink.poll() is not None, 60, "the SuperLink to listen")
    assert superlink.poll() is None, processes.log("superlink.out")
    address = f"127.0.0.1:{port}"
    for site in sites:
        deploy_script(env, "register-site.sh", "--superlink", address, "--root-cert", certs / "ca.crt", site,
                      keys / f"{site}.pub")  # fmt: skip
    return TlsSuperLink(address, port, certs, keys, env, superlink)


class Kit:
    write_site = staticmethod(write_site)
    deploy_script = staticmethod(deploy_script)
    start_tls_superlink = staticmethod(start_tls_superlink)
    start_simulation_superlink = staticmethod(start_simulation_superlink)
    flwr_run = staticmethod(flwr_run)
    descendants_named = staticmethod(descendants_named)
    kill_tree = staticmethod(kill_tree)
    flower_env = staticmethod(flower_env)
    free_port = staticmethod(free_port)
    listening = staticmethod(listening)
    wait_for = staticmethod(wait_for)
    stop = staticmethod(stop)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
