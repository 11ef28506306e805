"""Dataset views the engine trains on: subsets and pools that keep `.labels`/`.subtypes`, the subtyping view, and
the augmented view that the epoch sampler indexes with (index, augmentation seed) pairs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

Sample = dict[str, torch.Tensor]


def dataset_labels(dataset: Any) -> np.ndarray:
    return np.asarray(dataset.labels, dtype=np.int64)


def dataset_subtypes(dataset: Any) -> np.ndarray:
    subtypes = getattr(dataset, "subtypes", None)
    if subtypes is None:
        return np.full(len(dataset), -1, dtype=np.int64)
    return np.asarray(subtypes, dtype=np.int64)


class LabelledSubset(Dataset):
    """`dataset[indices]`; with `relabel_subtype` the item's `label` becomes its subtype (the subtyping task)."""

    def __init__(self, dataset: Any, indices: Sequence[int], *, relabel_subtype: bool = False) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.relabel_subtype = relabel_subtype
        self.subtypes = dataset_subtypes(dataset)[self.indices]
        self.labels = self.subtypes.copy() if relabel_subtype else dataset_labels(dataset)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        item = dict(self.dataset[int(self.indices[index])])
        if self.relabel_subtype:
            item["label"] = item["subtype"].clone()
        return item


class PooledDataset(Dataset):
    """Several sites' datasets one after the other (central training on pooled data)."""

    def __init__(self, datasets: Sequence[Any]) -> None:
        if not datasets:
            raise ValueError("PooledDataset needs at least one dataset")
        self.datasets = list(datasets)
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self.labels = np.concatenate([dataset_labels(d) for d in self.datasets])
        self.subtypes = np.concatenate([dataset_subtypes(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> Sample:
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.datasets[part][index - int(self.offsets[part])]


def task_dataset(dataset: Any, task: str) -> Any:
    """The dataset a task trains and evaluates on: all subjects (screening) or those with a subtype (subtyping)."""
    if task == "screening":
        return dataset
    if task == "subtyping":
        return LabelledSubset(dataset, np.flatnonzero(dataset_subtypes(dataset) >= 0), relabel_subtype=True)
    raise ValueError(f"unknown task {task!r}")


class AugmentedView(Dataset):
    """Indexed by (index, seed): `augment(dataset[index], torch.Generator seeded with seed)`."""

    def __init__(self, dataset: Any, augment: Callable[[Sample, torch.Generator], Sample] | None) -> None:
        self.dataset = dataset
        self.augment = augment

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, draw: tuple[int, int]) -> Sample:
        index, seed = draw
        item = self.dataset[index]
        if self.augment is None:
            return item
        generator = torch.Generator().manual_seed(int(seed))
        return self.augment(item, generator)
