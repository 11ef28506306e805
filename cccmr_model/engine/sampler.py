"""Batches for one epoch: four-fold resampling with every class present in every batch.

The FSA loss compares classes within a batch, so a batch with a single class teaches it nothing. An epoch holds
each training sample `resample_factor` times (each time with its own augmentation seed); each class's draws are
spread evenly over the batches, and a class with fewer draws than there are batches is topped up by drawing it
again, so every batch holds every class. Everything is a pure function of (labels, seed, epoch).
"""

from __future__ import annotations

import math

import numpy as np

# One element of a batch: (dataset index, augmentation seed).
Draw = tuple[int, int]


def epoch_batches(
    labels: np.ndarray, *, batch_size: int, resample_factor: int, seed: int, epoch: int
) -> list[list[Draw]]:
    """The batches of one epoch as lists of (index, augmentation seed); every class of `labels` in every batch."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError("epoch_batches needs a non-empty 1-D label array")
    classes = np.unique(labels)
    if len(classes) > batch_size:
        raise ValueError(f"batch_size {batch_size} cannot hold all {len(classes)} classes in every batch")
    rng = np.random.default_rng([seed, epoch, 0x5A4D])
    num_batches = max(1, math.ceil(len(labels) * resample_factor / batch_size))
    chunks: list[list[np.ndarray]] = [[] for _ in range(num_batches)]
    for cls in classes:
        members = np.flatnonzero(labels == cls)
        draws = rng.permutation(np.repeat(members, resample_factor))
        if len(draws) < num_batches:  # top up a rare class so that it reaches every batch
            draws = np.concatenate([draws, rng.choice(members, num_batches - len(draws))])
        for batch, part in zip(chunks, np.array_split(draws, num_batches), strict=True):
            batch.append(part)
    aug_seeds = iter(rng.integers(0, 2**31 - 1, size=sum(len(p) for c in chunks for p in c)).tolist())
    batches: list[list[Draw]] = []
    for parts in chunks:
        indices = rng.permutation(np.concatenate(parts))
        batches.append([(int(i), next(aug_seeds)) for i in indices])
    return batches


def samples_in(batches: list[list[Draw]]) -> int:
    return sum(len(b) for b in batches)
