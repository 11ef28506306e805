"""Shared test fixtures: paths to the repository, its configs, and the shared Sunnybrook data when present."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
SUNNYBROOK_DIR = SHARED_DIR / "data" / "sunnybrook-scd"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sunnybrook_dir() -> Path:
    if not SUNNYBROOK_DIR.is_dir():
        pytest.skip(f"Sunnybrook data not found at {SUNNYBROOK_DIR}")
    return SUNNYBROOK_DIR
