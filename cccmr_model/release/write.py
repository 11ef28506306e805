"""Write a release folder: cine-only weights, resolved config, metrics, model card and hashes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from cccmr_model import __version__
from cccmr_model.config import CONFIG_VERSION, ExperimentConfig, dump_config
from cccmr_model.errors import CccmrError
from cccmr_model.release.card import render_card
from cccmr_model.release.files import (
    CARD_FILE,
    CONFIG_FILE,
    FORMAT_VERSION,
    HASHED_FILES,
    MANIFEST_FILE,
    METRICS_FILE,
    TRAINING_FILE,
    WEIGHTS_FILE,
    content_hash,
    file_sha256,
    is_release_key,
)
from cccmr_model.release.keys import check_release_state
from cccmr_model.release.privacy import privacy_record

MODES = ("federated", "central")


def release_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The cine encoders and fusion MLP of a full (or already cine-only) state dict, as contiguous float tensors."""
    selected = {}
    for key, tensor in state.items():
        if is_release_key(key):
            tensor = tensor.detach().to("cpu")
            if tensor.is_floating_point():
                tensor = tensor.float()
            selected[key] = tensor.contiguous().clone()
    return selected


def write_release(
    out_dir: str | Path,
    *,
    state: Mapping[str, torch.Tensor],
    config: ExperimentConfig,
    metrics: Mapping[str, Any],
    training_info: Mapping[str, Any],
) -> Path:
    """Write the release folder `out_dir` and return its path.

    `state`: a full or cine-only model state dict (keys as in `build_model`); only `encoders.cine_4ch.*`,
    `encoders.cine_sax.*` and `fusion.*` are kept, and they must match `build_model(config, with_lge=False)`
    exactly. `metrics`: the final evaluation, e.g. {"pooled": {...}, "sites": {site: {...}}} where a metric is a
    number or {"value", "ci_low", "ci_high"}. `training_info`: {"mode": "federated" | "central", "sites":
    {site: {"subjects": n, ...}}, "phases": {phase: {"rounds": r, "local_epochs": e} or {"epochs": e}},
    "privacy": {mechanism: what it achieved} (see `release.privacy`; a mechanism the config enables must be
    reported, one it does not must not be), any other JSON-able keys}.
    An existing release at `out_dir` is replaced as a whole; any other non-empty folder is refused.
    """
    out = Path(out_dir)
    weights = release_state(state)
    check_release_state(weights, config, source="state given to write_release")
    training = _training_record(training_info, config)
    metrics_plain = _jsonable(dict(metrics))
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise CccmrError(f"{out}: folder exists and is not a release; choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    created = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", "cccmr_release": str(FORMAT_VERSION)})
        (tmp / CONFIG_FILE).write_text(dump_config(config))
        (tmp / METRICS_FILE).write_text(json.dumps(metrics_plain, indent=2, allow_nan=False) + "\n")
        (tmp / TRAINING_FILE).write_text(json.dumps(training, indent=2, allow_nan=False) + "\n")
        card = render_card(config, metrics_plain, training, created=created, cccmr_version=__version__)
        (tmp / CARD_FILE).write_text(card)
        hashes = {name: file_sha256(tmp / name) for name in HASHED_FILES}
        manifest = {
            "format_version": FORMAT_VERSION,
            "config_version": CONFIG_VERSION,
            "cccmr_version": __version__,
            "created": created,
            "name": config.name,
            "task": config.task,
            "num_classes": config.num_classes,
            "mode": training["mode"],
            "files": hashes,
            "content_hash": content_hash(hashes),
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        _publishable(tmp)
        _replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished folder into place so a reader never sees half a release."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def _training_record(info: Mapping[str, Any], config: ExperimentConfig) -> dict[str, Any]:
    mode = info.get("mode")
    if mode not in MODES:
        raise CccmrError(f"write_release: training_info['mode'] must be one of {', '.join(MODES)}, got {mode!r}")
    for key in ("sites", "phases"):
        if not isinstance(info.get(key), Mapping) or not info[key]:
            raise CccmrError(f"write_release: training_info['{key}'] must be a non-empty mapping")
    record = _jsonable(dict(info))
    record["privacy"] = privacy_record(config, record.get("privacy") or {})
    return record


def _publishable(folder: Path) -> None:
    """Give the folder and its files the usual permissions (mkdtemp and safetensors create them owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        file.chmod(0o666 & ~umask)


def _jsonable(value: Any) -> Any:
    """Plain JSON data: dataclasses and numpy/torch scalars converted, non-finite floats written as null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays/scalars, tensors
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    raise CccmrError(f"write_release: cannot store {type(value).__name__} value {value!r} in JSON")
