"""Checked weight loading and small device helpers shared by training and evaluation."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping

import torch
from torch import nn

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.errors import CccmrError


def without_pretrained(config: ExperimentConfig) -> ExperimentConfig:
    """The config with no pretrained-weight files: for building a model whose weights are replaced at once."""
    encoder = dataclasses.replace(config.model.encoder, pretrained={})
    return dataclasses.replace(config, model=dataclasses.replace(config.model, encoder=encoder))


def load_checked(model: nn.Module, state: Mapping[str, torch.Tensor], required: tuple[str, ...] | None = None) -> None:
    """Load `state` into `model`, checking every key and shape.

    `required=None`: the state must hold exactly the model's keys (strict). With `required` prefixes (evaluation
    of a release that ships only the inference path), every model key under those prefixes must be present; keys
    outside them may be absent and keep the model's values (they are never used on that path). Unexpected keys or
    shape mismatches always raise.
    """
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    needed = set(own) if required is None else {k for k in own if k.startswith(required)}
    missing = sorted(needed - set(state))
    if unexpected or missing:
        raise CccmrError(
            f"weights do not fit the model of this config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
            f" unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise CccmrError(
            f"weights do not fit the model: {k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)}"
        )
    merged = dict(own)
    merged.update(state)
    model.load_state_dict(merged, strict=True)


def model_holding(
    state: Mapping[str, torch.Tensor], build: Callable[[], nn.Module], required: tuple[str, ...] | None = None
) -> nn.Module:
    """`build()` loaded with `state` (checked as by `load_checked`). When `state` gives every parameter, the model is
    built on the meta device and its memory allocated empty: initialising ~90 M parameters only to overwrite them
    costs 1-2 s on a CPU (every federated message pays it). A model with buffers (not in a state dict) or a
    partial state is built and initialised as usual."""
    with torch.device("meta"):
        skeleton = build()
    complete = not any(True for _ in skeleton.buffers()) and set(skeleton.state_dict()) <= set(state)
    model = skeleton.to_empty(device="cpu") if complete else build()
    load_checked(model, state, required=None if complete else required)
    return model


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the full state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def state_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """A short content hash of a state dict (names, shapes, bytes), used to tie a checkpoint to its start weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def resolve_device(device: str | torch.device) -> torch.device:
    """`auto` -> cuda when available, else cpu; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CccmrError(f"device {device} requested but CUDA is not available")
    return resolved


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
