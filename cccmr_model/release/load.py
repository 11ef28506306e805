"""Load and verify a release folder: hashes, versions, config, then the cine-only model with every weight checked."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from cccmr_model.config import CONFIG_VERSION, ExperimentConfig, config_from_dict
from cccmr_model.errors import CccmrError
from cccmr_model.release.files import (
    CONFIG_FILE,
    FORMAT_VERSION,
    HASHED_FILES,
    MANIFEST_FILE,
    METRICS_FILE,
    TRAINING_FILE,
    WEIGHTS_FILE,
    content_hash,
    file_sha256,
)
from cccmr_model.release.keys import build_release_model, check_release_state, release_shapes


class ReleaseError(CccmrError):
    """A release folder that cannot be trusted or used: missing file, hash mismatch, unsupported version."""


@dataclass
class Release:
    """A verified release: its resolved config, the cine-only model (eval mode, CPU) and the final metrics."""

    path: Path
    config: ExperimentConfig
    model: nn.Module
    metrics: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])


def verify_release(path: str | Path) -> dict[str, Any]:
    """Check the manifest, the versions and every file's sha256; return the manifest."""
    root = Path(path)
    if not root.is_dir():
        raise ReleaseError(f"{root}: release folder not found")
    manifest = _read_json(root / MANIFEST_FILE, "release manifest")
    if not isinstance(manifest, dict):
        raise ReleaseError(f"{root / MANIFEST_FILE}: expected a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ReleaseError(
            f"{root / MANIFEST_FILE}: release format version {version!r} is not supported"
            f" (this cccmr reads version {FORMAT_VERSION})"
        )
    config_version = manifest.get("config_version")
    if config_version != CONFIG_VERSION:
        raise ReleaseError(
            f"{root / MANIFEST_FILE}: config version {config_version!r} is not supported"
            f" (this cccmr reads config version {CONFIG_VERSION})"
        )
    hashes = manifest.get("files")
    if not isinstance(hashes, dict) or set(hashes) != set(HASHED_FILES):
        raise ReleaseError(f"{root / MANIFEST_FILE}: 'files' must list the sha256 of {', '.join(HASHED_FILES)}")
    for name in HASHED_FILES:
        file = root / name
        if not file.is_file():
            raise ReleaseError(f"{file}: missing from the release")
        if file_sha256(file) != hashes[name]:
            raise ReleaseError(f"{file}: sha256 does not match release.json (file is corrupt or was modified)")
    if manifest.get("content_hash") != content_hash(hashes):
        raise ReleaseError(f"{root / MANIFEST_FILE}: content_hash does not match the file hashes (manifest modified)")
    return manifest


def load_release(path: str | Path) -> Release:
    """Verify the release at `path` and build its cine-only model with the released weights (CPU, eval mode)."""
    root = Path(path)
    manifest = verify_release(root)
    config = _read_config(root / CONFIG_FILE)
    if config.task != manifest.get("task"):
        raise ReleaseError(f"{root / MANIFEST_FILE}: task {manifest.get('task')!r} differs from config.yaml")
    model = build_release_model(config)
    weights = _read_weights(root / WEIGHTS_FILE)
    check_release_state(weights, release_shapes(model), source=str(root / WEIGHTS_FILE))
    load_release_weights(model, weights)
    metrics = _read_json(root / METRICS_FILE, "metrics")
    training = _read_json(root / TRAINING_FILE, "training record")
    return Release(root, config, model, metrics, training, manifest)


def load_release_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy the (already checked) release weights into the model of `build_release_model`, strictly."""
    model.load_state_dict(weights, strict=True)


def _read_json(file: Path, what: str) -> Any:
    if not file.is_file():
        raise ReleaseError(f"{file}: missing ({what}); not a release folder?")
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReleaseError(f"{file}: cannot read {what} ({exc})") from None


def _read_config(file: Path) -> ExperimentConfig:
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ReleaseError(f"{file}: cannot read the release config ({exc})") from None
    if not isinstance(data, dict):
        raise ReleaseError(f"{file}: expected a mapping")
    return config_from_dict(data, source=str(file))


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file), device="cpu")
    except (OSError, SafetensorError) as exc:
        raise ReleaseError(f"{file}: cannot read weights ({exc})") from None
