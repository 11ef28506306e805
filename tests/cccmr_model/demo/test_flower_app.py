"""The demo's Flower app folder: the source checkout, or for an installed package a generated pyproject.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from cccmr_model.config import load_config
from cccmr_model.demo import flower
from cccmr_model.demo.plan import CONFIG, CONFIG_NAME

REPO_ROOT = Path(__file__).resolve().parents[3]


def _not_a_checkout() -> Path:
    raise flower.FlowerError("no Flower app here")


def test_source_checkout_is_the_app(tmp_path: Path) -> None:
    assert flower.flower_app(tmp_path) == REPO_ROOT
    assert not (tmp_path / "app").exists()


def test_generated_app_is_the_repository_app(tmp_path: Path) -> None:
    """`FLOWER_APP` is `[tool.flwr.app]` of pyproject.toml, and an installed package writes exactly that."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    repo_app = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert repo_app == flower.FLOWER_APP
    generated = tomllib.loads((flower.write_app(tmp_path / "app") / "pyproject.toml").read_text())
    assert generated["tool"]["flwr"]["app"] == repo_app
    assert generated["project"]["name"] == "cccmr-federated"


def test_installed_package_runs_a_generated_app_that_flower_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a checkout the demo writes work_dir/app; `flwr run`'s own check (components importable from the
    installed `server` and `client`) passes, and the run config's config-path names a packaged config."""
    from flwr.common.config import validate_config

    tomllib = pytest.importorskip("tomllib")
    monkeypatch.setattr(flower, "app_dir", _not_a_checkout)
    monkeypatch.chdir(tmp_path)
    app = flower.flower_app(tmp_path / "work")
    assert app == tmp_path / "work" / "app"
    assert [p.name for p in app.iterdir()] == ["pyproject.toml"]
    valid, errors, warnings = validate_config(tomllib.loads((app / "pyproject.toml").read_text()), True, app)
    assert valid, errors
    assert not warnings
    assert CONFIG == CONFIG_NAME and not Path(CONFIG).exists()
    assert load_config(CONFIG).name == "cc-cmr-tiny"
