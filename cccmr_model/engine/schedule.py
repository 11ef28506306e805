"""Learning-rate schedule of one training phase: cosine annealing with an optional linear warmup.

The schedule is a pure function of the *phase progress* in [0, 1]. A call of `train_phase` covers a window
`(start, end)` of that progress (the whole phase centrally, one slice of it per federated round), so a federation
that splits a phase into rounds follows the same curve as one central run.
"""

from __future__ import annotations

import math


def lr_at(progress: float, *, base_lr: float, min_lr: float = 0.0, warmup_fraction: float = 0.0) -> float:
    """Learning rate at `progress` in [0, 1] of a phase: linear warmup to `base_lr`, then cosine down to `min_lr`.

    Pure (nanoGPT's `get_lr`, with progress instead of the iteration number).
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0.0 and progress < warmup_fraction:
        return base_lr * progress / warmup_fraction
    span = 1.0 - warmup_fraction
    decay = 0.0 if span <= 0.0 else (progress - warmup_fraction) / span
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay))  # 1 -> 0
    return min_lr + coeff * (base_lr - min_lr)


def window_progress(step: int, total_steps: int, lr_window: tuple[float, float]) -> float:
    """Phase progress at the middle of optimizer step `step` (0-based) of a call that takes `total_steps` steps in
    `lr_window`. The middle, not the start: a warm-up's first step then gets a learning rate above 0, and a
    window's steps are placed alike whether the phase runs as one call or as rounds."""
    start, end = lr_window
    return start + (end - start) * (step + 0.5) / max(total_steps, 1)


def warmup_fraction(warmup_steps: int, total_steps: int, lr_window: tuple[float, float]) -> float:
    """`warmup_steps` as a fraction of the whole phase, whose length is estimated from this call's window."""
    if warmup_steps <= 0:
        return 0.0
    width = lr_window[1] - lr_window[0]
    phase_steps = total_steps / width if width > 0 else float(total_steps)
    return min(1.0, warmup_steps / max(phase_steps, 1.0))


def check_lr_window(lr_window: tuple[float, float]) -> tuple[float, float]:
    start, end = float(lr_window[0]), float(lr_window[1])
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"lr_window must satisfy 0 <= start < end <= 1, got {lr_window}")
    return start, end
