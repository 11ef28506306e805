"""Loading published Swin weights into `cccmr_model.swin3d.SwinTransformer3d` from a local file or state dict.

Recognised by key patterns (after unwrapping `state_dict` / `model` / `module` and a `backbone.` prefix):
* torchvision `swin3d_t/s/b` (`features.{2i}.{j}...`, `features.{2i+1}` patch merging, `mlp.0/3`);
* official Video-Swin-Transformer checkpoints (`layers.{i}.blocks.{j}...`, 5D patch embedding) and this
  model's own state dicts, which use the same names;
* 2D ImageNet Swin from microsoft/Swin-Transformer (`layers.{i}.downsample` ends stage i, `head`) or timm
  (`layers.{i+1}.downsample` starts stage i+1, `head.fc`), inflated to 3D as the official `inflate_weights`:
  patch embedding repeated over time / Pt, bias table resized bicubically if the window differs, then tiled
  over the (2Wd-1) temporal offsets.

Classification heads are dropped on purpose; `relative_position_index` and `attn_mask` buffers are dropped
(they are derived from shapes). A 3-channel patch embedding loads into an `in_chans=1` model by summing over
input channels. Every other missing, unexpected or mis-shaped key raises `WeightsError` naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cccmr_model.errors import CccmrError

__all__ = ["LoadReport", "WeightsError", "convert_state_dict", "detect_format", "load_pretrained"]

_BUFFER_SUFFIXES = ("relative_position_index", "attn_mask")
_HEAD_PREFIXES = ("head.", "cls_head.", "fc_cls.")


class WeightsError(CccmrError):
    """A weight file or state dict that cannot be loaded into the encoder."""


@dataclass(frozen=True)
class LoadReport:
    """What `load_pretrained` did: the format it recognised, how many tensors it loaded, what it dropped."""

    format: str
    loaded: int
    dropped: tuple[str, ...]
    source: str = "<state dict>"

    def __str__(self) -> str:
        return f"{self.source}: {self.format}, {self.loaded} tensors loaded, {len(self.dropped)} dropped"


def _read(source: str | Path | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(source, Mapping):
        return dict(source), "<state dict>"
    path = Path(source)
    if not path.is_file():
        raise WeightsError(f"{path}: weight file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu"), str(path)
        return torch.load(path, map_location="cpu", weights_only=True), str(path)
    except Exception as exc:  # unreadable, pickled objects refused by weights_only, truncated file
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc


def _unwrap(state: dict) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "module"):
        if key in state and isinstance(state[key], Mapping):
            state = dict(state[key])
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items()}  # `cls_head.*` stays, dropped later
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def detect_format(state: Mapping[str, torch.Tensor]) -> str:
    """One of "torchvision-swin3d", "video-swin", "swin2d-microsoft", "swin2d-timm" (after `_unwrap`)."""
    if any(k.startswith("features.") for k in state) and "patch_embed.proj.weight" in state:
        return "torchvision-swin3d"
    proj = state.get("patch_embed.proj.weight")
    if proj is None or not any(k.startswith("layers.") for k in state):
        raise WeightsError("no Swin patch embedding ('patch_embed.proj.weight') or 'layers.*' keys: not Swin weights")
    if proj.ndim == 5:
        return "video-swin"
    if proj.ndim == 4:
        return "swin2d-microsoft" if "layers.0.downsample.reduction.weight" in state else "swin2d-timm"
    raise WeightsError(f"'patch_embed.proj.weight' has shape {tuple(proj.shape)}: neither 2D nor 3D convolution")


def _rename_torchvision(key: str) -> str:
    m = re.match(r"features\.(\d+)\.(\d+)\.(.*)", key)
    if m:
        rest = m[3].replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
        return f"layers.{int(m[1]) // 2}.blocks.{m[2]}.{rest}"
    m = re.match(r"features\.(\d+)\.(.*)", key)
    if m:
        return f"layers.{int(m[1]) // 2}.downsample.{m[2]}"
    return key


def _rename_timm2d(key: str) -> str:
    m = re.match(r"layers\.(\d+)\.downsample\.(.*)", key)
    return f"layers.{int(m[1]) - 1}.downsample.{m[2]}" if m else key


def _inflate_bias_table(table: torch.Tensor, window: tuple[int, int, int], key: str) -> torch.Tensor:
    """2D table ((2Wh-1)(2Ww-1), nH) -> 3D ((2Wd-1)(2Wh-1)(2Ww-1), nH), resized bicubically if needed."""
    wd, wh, ww = window
    rows, heads = table.shape
    side = round(rows**0.5)
    if side * side != rows:
        raise WeightsError(f"'{key}': 2D bias table with {rows} rows is not square")
    if (side, side) != (2 * wh - 1, 2 * ww - 1):
        grid = table.T.reshape(1, heads, side, side)
        grid = F.interpolate(grid, size=(2 * wh - 1, 2 * ww - 1), mode="bicubic", align_corners=False)
        table = grid.reshape(heads, -1).T
    return table.repeat(2 * wd - 1, 1)


def convert_state_dict(
    state: Mapping[str, torch.Tensor], model: nn.Module, fmt: str | None = None
) -> tuple[dict[str, torch.Tensor], list[str], str]:
    """Rename, inflate and adapt `state` to `model`'s names; returns (converted, dropped keys, format)."""
    state = _unwrap(dict(state))
    fmt = fmt or detect_format(state)
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if key.endswith(_BUFFER_SUFFIXES) or key.startswith(_HEAD_PREFIXES):
            dropped.append(key)
            continue
        name = key
        if fmt == "torchvision-swin3d":
            name = _rename_torchvision(key)
        elif fmt == "swin2d-timm":
            name = _rename_timm2d(key)
        if fmt.startswith("swin2d"):
            if name == "patch_embed.proj.weight":
                pt = model.patch_size[0]
                value = value.unsqueeze(2).repeat(1, 1, pt, 1, 1) / pt  # E, C, Pt, Ph, Pw
            elif name.endswith("relative_position_bias_table"):
                value = _inflate_bias_table(value, model.window_size, key)
        if name == "patch_embed.proj.weight" and name in target:
            value = _adapt_input_channels(value, target[name].shape[1], key)
        out[name] = value
    return out, dropped, fmt


def _adapt_input_channels(weight: torch.Tensor, in_chans: int, key: str) -> torch.Tensor:
    if weight.shape[1] == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)  # a gray input equals the same image on every colour channel
    raise WeightsError(f"'{key}': weights take {weight.shape[1]} input channels, the model {in_chans}")


def load_pretrained(model: nn.Module, source: str | Path | Mapping[str, torch.Tensor]) -> LoadReport:
    """Load torchvision, official Video-Swin or 2D ImageNet Swin weights into `model` (see module docstring)."""
    raw, where = _read(source)
    try:
        state, dropped, fmt = convert_state_dict(raw, model)
    except WeightsError as exc:
        raise WeightsError(f"{where}: {exc}") from None
    target = model.state_dict()
    for name, value in state.items():
        if name not in target:
            raise WeightsError(f"{where} ({fmt}): unexpected key '{name}' that the model does not have")
        if tuple(value.shape) != tuple(target[name].shape):
            expected = tuple(target[name].shape)
            raise WeightsError(
                f"{where} ({fmt}): '{name}' has shape {tuple(value.shape)}, the model expects {expected}"
            )
    missing = [n for n in target if n not in state and not n.startswith("head.")]
    if missing:
        raise WeightsError(f"{where} ({fmt}): missing key '{missing[0]}' ({len(missing)} missing in all)")
    own_head = {n: v for n, v in target.items() if n.startswith("head.") and n not in state}
    model.load_state_dict({**state, **own_head}, strict=True)
    return LoadReport(format=fmt, loaded=len(state), dropped=tuple(dropped), source=where)
