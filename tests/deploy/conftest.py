"""Fixtures for the deploy/ scripts: run a script, a CA with a SuperLink certificate, site keys."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
VENV_BIN = Path(sys.executable).parent

ScriptRunner = Callable[..., subprocess.CompletedProcess]


def script_env(**extra: str) -> dict[str, str]:
    """The test's environment with the venv's flower executables first on PATH and no inherited FLWR_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLWR_", "CCCMR_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_script(name: str, *args: str | Path, cwd: Path | None = None, timeout: float = 60, **env: str):
    return subprocess.run(
        ["bash", str(DEPLOY_DIR / name), *map(str, args)],
        cwd=cwd,
        env=script_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(name="run_script", scope="session")
def run_script_fixture() -> ScriptRunner:
    """`run_script(name, *args, cwd=None, timeout=60, **env)`: run deploy/NAME with bash, output captured."""
    return run_script


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return DEPLOY_DIR


@pytest.fixture(name="script_env", scope="session")
def script_env_fixture() -> Callable[..., dict[str, str]]:
    return script_env


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A consortium CA and a SuperLink certificate for 127.0.0.1 and localhost."""
    out = tmp_path_factory.mktemp("pki") / "certs"
    result = run_script("make-ca.sh", "--out", out, "127.0.0.1", "localhost", "superlink")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Key pairs of two sites, `alpha` (to be registered) and `beta` (never registered)."""
    out = tmp_path_factory.mktemp("site-keys") / "keys"
    for site in ("alpha", "beta"):
        result = run_script("make-site-keys.sh", "--out", out, site)
        assert result.returncode == 0, result.stderr
    return out
