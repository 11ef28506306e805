"""A non-editable install carries its configs: `cccmr config --config tiny` works from an empty folder.

The wheel is built from this checkout and installed with `pip install --target` (no dependencies: they come from
the running environment); the checkout is kept off sys.path, so everything runs from the installed copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import sys, tomllib
from pathlib import Path
import cccmr_model
from cccmr_model.config import load_config
from cccmr_model.demo.flower import flower_app
from cccmr_model.demo.plan import CONFIG
from flwr.common.config import validate_config

site = Path(sys.argv[1])
assert Path(cccmr_model.__file__).is_relative_to(site), cccmr_model.__file__
app = flower_app(Path.cwd() / "work")  # not a checkout: the demo writes its app folder
assert app == Path.cwd() / "work" / "app", app
valid, errors, _ = validate_config(tomllib.loads((app / "pyproject.toml").read_text()), True, app)
assert valid, errors
import server.settings
assert Path(server.settings.__file__).is_relative_to(site), server.settings.__file__
print("demo config:", load_config(CONFIG).name)
"""


@pytest.mark.slow
def test_wheel_ships_the_configs_and_cccmr_config_runs_from_an_empty_folder(tmp_path: Path) -> None:
    pytest.importorskip("tomllib")  # the check below reads pyproject.toml (Python 3.11+)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    pip = [sys.executable, "-m", "pip"]
    source, wheels, site, empty = tmp_path / "src", tmp_path / "wheels", tmp_path / "site", tmp_path / "empty"
    empty.mkdir()
    # A copy of what the wheel is built from, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source.mkdir(exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for name in ("cccmr_model", "server", "client", "configs"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("cccmr_federated-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"cccmr_model/configs/default.yaml", "cccmr_model/configs/tiny.yaml"} <= set(names)
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    env["PYTHONPATH"] = str(site)  # ahead of the editable install's finder, which points at the checkout
    script = site / "bin" / "cccmr"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "cccmr_model"]
    shown = subprocess.run(
        [*command, "config", "--config", "tiny"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "cc-cmr-tiny" in shown.stdout
    checked = subprocess.run(
        [sys.executable, "-c", CHECK, str(site)],
        cwd=empty, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "demo config: cc-cmr-tiny" in checked.stdout
