"""Train/validation split of one site's subjects: stratified by label, seeded, reproducible."""

from __future__ import annotations

import numpy as np


def split_train_val(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_indices, val_indices): about `val_fraction` of each class goes to validation.

    A class keeps at least one training subject; with `val_fraction > 0` a class of two or more subjects puts at
    least one in validation, so both classes reach the validation metrics.
    """
    labels = np.asarray(labels)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng([seed, 0x5B17])
    train, val = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = round(len(members) * val_fraction)
        if val_fraction > 0 and len(members) >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.sort(np.concatenate(train)).astype(np.int64) if train else empty,
        np.sort(np.concatenate(val)).astype(np.int64) if val else empty,
    )
