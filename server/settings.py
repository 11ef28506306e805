"""The ServerApp's run settings, read from the `[tool.flwr.app.config]` keys (overridable with `--run-config`).

- `config-path`: the YAML experiment config, relative to the app folder (it travels in the FAB) or a name in
  `configs/` such as `tiny`; `config-overrides`: `key=value` pairs separated by `;`.
- `run-dir`: history, checkpoints and the release; a relative path is taken from the working directory.
- `resume-from`: a checkpoint file or a checkpoints folder of an earlier run (empty: start fresh).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cccmr_model.config import ExperimentConfig, load_config

APP_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServerSettings:
    config_path: str
    overrides: tuple[str, ...]
    run_dir: Path
    resume_from: Path | None


def server_settings(run_config: Mapping[str, Any]) -> ServerSettings:
    overrides = tuple(p.strip() for p in str(run_config.get("config-overrides", "")).split(";") if p.strip())
    resume = str(run_config.get("resume-from", "")).strip()
    return ServerSettings(
        config_path=str(run_config.get("config-path", "configs/default.yaml")),
        overrides=overrides,
        run_dir=Path(str(run_config.get("run-dir", "runs/federated"))).resolve(),
        resume_from=Path(resume).resolve() if resume else None,
    )


def experiment_config(settings: ServerSettings) -> ExperimentConfig:
    """Load the YAML config: a path relative to the app folder first, else as `load_config` resolves it."""
    path = Path(settings.config_path)
    if not path.is_absolute() and (APP_DIR / path).is_file():
        path = APP_DIR / path
    return load_config(path if path.is_file() else settings.config_path, settings.overrides)
