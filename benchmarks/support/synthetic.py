"""A small in-memory cohort of random tensors with the data package's item layout, for tests and benchmarks.

Patients (label 1) carry a faint class signal (a brighter centre that beats over the cycle) so that training can
move the loss; about a third of the subjects have no LGE (zeros, `has_lge` false), like a real cohort.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from cccmr_model.config.schema import DataConfig


class SyntheticCohort(Dataset):
    def __init__(self, n: int, data: DataConfig, *, seed: int = 0, positive_fraction: float = 0.5) -> None:
        rng = np.random.default_rng(seed)
        self.size, self.frames, self.slices = data.image_size, data.frames, data.slices
        self.labels = (np.arange(n) < round(n * positive_fraction)).astype(np.int64)[rng.permutation(n)]
        self.subtypes = np.where(self.labels == 1, rng.integers(0, 5, n), -1).astype(np.int64)
        self.has_lge = rng.random(n) > 0.33
        self.seeds = rng.integers(0, 2**31 - 1, n)
        self.subject_ids = [f"synthetic-{i:04d}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(int(self.seeds[index]))
        h = w = self.size
        label = int(self.labels[index])
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        blob = torch.exp(-(xx**2 + yy**2) * 6)  # H, W
        beat = torch.cos(torch.linspace(0, 2 * torch.pi, self.frames + 1)[:-1])  # T
        signal = 0.8 * label * blob * (1 + 0.5 * beat[:, None, None])  # T, H, W
        item = {
            "cine_4ch": torch.randn(1, self.frames, h, w, generator=g) + signal,
            "cine_sax": torch.randn(self.slices["cine_sax"], self.frames, h, w, generator=g) + signal,
            "lge_sax": torch.zeros(self.slices["lge_sax"], h, w),
            "has_lge": torch.tensor(bool(self.has_lge[index])),
            "label": torch.tensor(label, dtype=torch.int64),
            "subtype": torch.tensor(int(self.subtypes[index]), dtype=torch.int64),
        }
        if self.has_lge[index]:
            item["lge_sax"] = torch.randn(self.slices["lge_sax"], h, w, generator=g) + 1.5 * label * blob
        return item
