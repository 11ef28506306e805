"""Check a cine-only weight set against the model a config builds: every key present, none extra, shapes equal."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
from torch import nn

from cccmr_model.config import ExperimentConfig
from cccmr_model.errors import CccmrError
from cccmr_model.release.files import RELEASE_PREFIXES, is_release_key


def build_release_model(config: ExperimentConfig) -> nn.Module:
    """The cine-only inference model of `config`: random weights, eval mode, exactly the parameters a release holds.

    Built by `build_model(config, with_lge=False)` without pretrained-weight files (the release replaces every
    encoder weight, and the training site's files do not exist where a release is used); the per-sequence heads
    and the uncertainty weights are removed, since they serve only training: the model answers `predict` and
    `fuse`, not `forward` or `fim_total`.
    """
    from cccmr_model.model import build_model  # the model module pulls in the encoder; import when needed

    encoder = dataclasses.replace(config.model.encoder, pretrained={}, grad_checkpointing=False)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, encoder=encoder))
    model = build_model(config, with_lge=False)
    model.heads = nn.ModuleDict()
    del model.uncertainty
    return model.eval()


def release_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter a release stores for `model`."""
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if is_release_key(k)}
    for prefix in RELEASE_PREFIXES:
        if not any(k.startswith(prefix) for k in shapes):
            raise CccmrError(f"the model built from the config has no parameters under '{prefix}'")
    return shapes


def check_release_state(
    weights: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]] | ExperimentConfig, *, source: str
) -> None:
    """Raise one clear line naming `source` when `weights` lacks, adds or mis-shapes a release parameter."""
    if isinstance(expected, ExperimentConfig):
        expected = release_shapes(build_release_model(expected))
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        raise CccmrError(f"{source}: {len(missing)} weight(s) missing, e.g. {_few(missing)}")
    if unexpected:
        raise CccmrError(f"{source}: {len(unexpected)} unexpected weight(s), e.g. {_few(unexpected)}")
    wrong = [k for k in sorted(expected) if tuple(weights[k].shape) != tuple(expected[k])]
    if wrong:
        key = wrong[0]
        raise CccmrError(
            f"{source}: {len(wrong)} weight(s) with the wrong shape, e.g. {key} is {tuple(weights[key].shape)},"
            f" the config builds {tuple(expected[key])}"
        )


def _few(keys: list[str], n: int = 3) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
