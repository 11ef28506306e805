"""Train/validation split of one site's subjects: stratified, seeded, reproducible.

`split_site` is the one rule, used by a federated site (client/site.py) and by central training
(engine/central.py), so both train and validate on the same subjects of a site.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cccmr_model.config.schema import ExperimentConfig


def split_site(dataset: Any, config: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_indices, val_indices) into a site's `dataset` (`.labels`, optional `.subtypes`): about
    `data.val_fraction` of each `stratification_groups` group to validation, seeded by `config.seed`."""
    return split_train_val(stratification_groups(dataset, config.task), config.data.val_fraction, config.seed)


def stratification_groups(dataset: Any, task: str) -> np.ndarray:
    """What a split stratifies on: the label (screening), or the subtype with every subject that has none (healthy,
    or a patient without a subtype) as one more group (subtyping), so each subtype reaches both parts."""
    if task == "screening":
        return np.asarray(dataset.labels, dtype=np.int64)
    if task == "subtyping":
        subtypes = getattr(dataset, "subtypes", None)
        return np.full(len(dataset), -1, dtype=np.int64) if subtypes is None else np.asarray(subtypes, dtype=np.int64)
    raise ValueError(f"unknown task {task!r}")


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
