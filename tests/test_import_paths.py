"""The tests import the repository's own packages, however pytest is started (issue 18 point 8).

Two shadows hide them when the working folder is not on sys.path (the `pytest` console script): test folders
named like the packages (tests/cccmr_model/, tests/client/, ...) become namespace packages ahead of the editable
install's finder, and opacus installs a top-level `benchmarks` package into site-packages.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cccmr_model", "client", "server", "benchmarks")


@pytest.mark.parametrize("name", PACKAGES)
def test_packages_are_the_repository_ones(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None, f"{name} is a namespace package: {list(module.__path__)}"
    assert Path(module.__file__).resolve() == REPO_ROOT / name / "__init__.py"


def test_test_file_names_are_unique() -> None:
    """pytest's default import mode imports a test file by its base name: two tests/**/test_x.py cannot both load."""
    folders: dict[str, list[str]] = defaultdict(list)
    for path in sorted((REPO_ROOT / "tests").rglob("test_*.py")):
        folders[path.name].append(str(path.parent.relative_to(REPO_ROOT)))
    assert {name: where for name, where in folders.items() if len(where) > 1} == {}


def test_pytest_console_script_finds_the_repository_packages() -> None:
    script = Path(sys.executable).parent / "pytest"
    if not script.is_file():
        pytest.skip(f"no pytest console script next to {sys.executable}")
    # Collects a test file under each shadowing folder and runs the check above, all without the working folder
    # on sys.path (the console script's sys.path[0] is the venv's bin folder).
    files = [
        "tests/test_import_paths.py",
        "tests/cccmr_model/test_cli.py",
        "tests/benchmarks/test_explain_speed.py",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
    result = subprocess.run(
        [str(script), "-q", "-p", "no:cacheprovider", "-k", "repository_ones", *files],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{len(PACKAGES)} passed" in result.stdout, result.stdout[-3000:]
