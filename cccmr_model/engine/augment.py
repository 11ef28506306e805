"""Augmentation a cine series survives, applied alike to every slice (and frame) of one sequence.

Per sequence one set of parameters is drawn: a cyclic temporal offset (a cine covers one cardiac cycle, so rolling
the frames gives another valid cine), a small rotation, a zoom about the centre and a shift sized as a fraction of
the image (edge pixels repeated where the image moves in, not a fill value), a left-right flip, optionally a contrast
curve (gamma) and a blur, and an intensity jitter (scale and offset on the z-scored intensities). An absent LGE
(zeros, `has_lge` false) is left untouched. All randomness comes from the `torch.Generator` passed in, so a (sample,
seed) pair always gives the same result.
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
    gamma = (
        math.exp(_uniform(generator, -math.log1p(cfg.max_gamma), math.log1p(cfg.max_gamma))) if cfg.max_gamma else 1.0
    )
    blur = _uniform(generator, 0.0, cfg.max_blur_px) if cfg.max_blur_px else 0.0
    if angle != 0.0 or shift != (0.0, 0.0) or zoom != 1.0:
        x = affine_warp(x, angle, shift, zoom)
    if flip:
        x = torch.flip(x, dims=(-1,))
    if gamma != 1.0:
        x = contrast_curve(x, gamma)
    if blur > 0.0:
        x = gaussian_blur(x, blur)
    return x.mul(scale).add_(bias)


def contrast_curve(x: torch.Tensor, gamma: float) -> torch.Tensor:
    """x (..., H, W) scaled to 0..1 over the whole sequence, raised to `gamma`, and brought back to x's mean and
    standard deviation (a z-scored sequence stays z-scored)."""
    low, high = x.min(), x.max()
    if float(high - low) <= 1e-6:
        return x
    curved = ((x - low) / (high - low)).pow(gamma)
    spread = curved.std().clamp_min(1e-6)
    return (curved - curved.mean()) / spread * x.std() + x.mean()


def gaussian_blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Every image of x (..., H, W) blurred by a Gaussian of `sigma_px` pixels (separable, edges repeated)."""
    radius = max(1, math.ceil(3.0 * sigma_px))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma_px) ** 2)
    kernel = kernel / kernel.sum()  # 2r + 1
    height, width = x.shape[-2:]
    flat = x.reshape(-1, 1, height, width).float()  # N, 1, H, W
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(x.shape)


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
