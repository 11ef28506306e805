"""Augmentation a cine series survives, applied alike to every slice (and frame) of one sequence.

Per sequence one set of parameters is drawn: a cyclic temporal offset (a cine covers one cardiac cycle, so rolling
the frames gives another valid cine), a small rotation, a zoom about the centre and a shift sized as a fraction of
the image (edge pixels repeated where the image moves in, not a fill value), a left-right flip and an intensity jitter
(scale and offset on the z-scored intensities). An absent LGE (zeros, `has_lge` false) is left untouched.
All randomness comes from the `torch.Generator` passed in, so a (sample, seed) pair always gives the same result.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from cccmr_model.config.schema import AugmentConfig
from cccmr_model.sequences import CINE_SEQUENCES, LGE_SAX

Sample = dict[str, torch.Tensor]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


@functools.lru_cache(maxsize=8)
def _base_grid(height: int, width: int) -> torch.Tensor:
    """Normalised pixel-centre coordinates (H, W, 3) as (x, y, 1), the align_corners=False convention."""
    xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1
    ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy, torch.ones_like(xx)], dim=-1)  # H, W, 3


def affine_grid_2d(
    angle_deg: float, shift_px: tuple[float, float], size: tuple[int, int], zoom: float = 1.0
) -> torch.Tensor:
    """Sampling grid (1, H, W, 2) rotating by `angle_deg` and zooming by `zoom` (> 1: content larger) about the
    centre, then shifting by (dx, dy) pixels.

    Equal to `F.affine_grid(theta, align_corners=False)`, with the base grid cached per image size.
    """
    height, width = size
    angle = math.radians(angle_deg)
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    dx, dy = shift_px
    theta = torch.tensor([[cos, -sin, -2.0 * dx / width], [sin, cos, -2.0 * dy / height]], dtype=torch.float32)
    return (_base_grid(height, width) @ theta.T).unsqueeze(0)  # 1, H, W, 2


def affine_warp(x: torch.Tensor, angle_deg: float, shift_px: tuple[float, float], zoom: float = 1.0) -> torch.Tensor:
    """Every image of x (..., H, W) rotated, zoomed and shifted alike (`affine_grid_2d`), bilinear, edges repeated."""
    height, width = x.shape[-2:]
    flat = x.reshape(1, -1, height, width).float()  # 1, N, H, W
    grid = affine_grid_2d(angle_deg, shift_px, (height, width), zoom)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=False).reshape(x.shape)


def augment_volume(
    x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator, *, temporal: bool, geometry_scale: float = 1.0
) -> torch.Tensor:
    """Augment one sequence: x (S, T, H, W) for cine (`temporal`), (S, H, W) for LGE; same draw for all slices.

    `geometry_scale` multiplies the drawn rotation, shift and log-zoom (the draws themselves are unchanged).
    """
    height, width = x.shape[-2:]
    if temporal and cfg.temporal_offset:
        offset = int(torch.randint(0, x.shape[1], (), generator=generator))
        x = torch.roll(x, shifts=offset, dims=1)  # S, T, H, W
    angle = _uniform(generator, -cfg.max_rotation_deg, cfg.max_rotation_deg) * geometry_scale
    dx = _uniform(generator, -cfg.max_shift_fraction, cfg.max_shift_fraction) * width * geometry_scale
    dy = _uniform(generator, -cfg.max_shift_fraction, cfg.max_shift_fraction) * height * geometry_scale
    shift = (dx, dy)
    log_zoom = _uniform(generator, -math.log1p(cfg.max_zoom), math.log1p(cfg.max_zoom)) if cfg.max_zoom else 0.0
    zoom = math.exp(log_zoom * geometry_scale)
    flip = float(torch.rand((), generator=generator)) < cfg.flip_prob
    scale = 1.0 + _uniform(generator, -cfg.intensity_jitter, cfg.intensity_jitter)
    bias = _uniform(generator, -cfg.intensity_jitter, cfg.intensity_jitter)
    if angle != 0.0 or shift != (0.0, 0.0) or zoom != 1.0:
        x = affine_warp(x, angle, shift, zoom)
    if flip:
        x = torch.flip(x, dims=(-1,))
    return x.mul(scale).add_(bias)


def augment_sample(sample: Sample, cfg: AugmentConfig, generator: torch.Generator) -> Sample:
    """A new sample dict with each image sequence augmented independently; labels and flags copied."""
    out = dict(sample)
    for seq in CINE_SEQUENCES:
        out[seq] = augment_volume(sample[seq], cfg, generator, temporal=True)
    if bool(sample["has_lge"]):
        out[LGE_SAX] = augment_volume(
            sample[LGE_SAX], cfg, generator, temporal=False, geometry_scale=cfg.lge_geometry_scale
        )
    return out


class Augmenter:
    """Picklable callable (DataLoader workers) binding an `AugmentConfig`."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, sample: Sample, generator: torch.Generator) -> Sample:
        return augment_sample(sample, self.cfg, generator)
