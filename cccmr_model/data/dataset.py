"""A `torch.utils.data.Dataset` over an ingestion cache: one item per usable subject.

Item: float32 tensors `cine_4ch` (1, T, H, W), `cine_sax` (3, T, H, W), `lge_sax` (6, H, W) (zeros when the
subject has no LGE), `has_lge` (bool), `label` (int64: 0 healthy, 1 cardiomyopathy) and `subtype` (int64: 0..4 in
the order of `cccmr_model.metrics.SUBTYPE_NAMES`; -1 if none). Labels come from the manifest, kept in the cache index.
`subject_ids` are for local use only and are never sent off the site.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cccmr_model.config.schema import DataConfig
from cccmr_model.data import cache
from cccmr_model.errors import DataError
from cccmr_model.sequences import SEQUENCES

Item = dict[str, torch.Tensor]


class CachedDataset(Dataset):
    """Usable subjects of a cache (all, or the listed `subjects`), optionally transformed item by item."""

    def __init__(
        self,
        cache_dir: str | Path,
        subjects: Sequence[str] | None = None,
        transform: Callable[[Item], Item] | None = None,
        *,
        data_config: DataConfig | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        index = cache.read_json(self.cache_dir / cache.INDEX_NAME)
        if not isinstance(index, dict) or index.get("version") != cache.CACHE_VERSION:
            raise DataError(f"{self.cache_dir / cache.INDEX_NAME}: no ingestion cache here (run `cccmr ingest`)")
        self.settings: dict[str, Any] = index["settings"]
        if data_config is not None:
            self._check_settings(data_config)
        usable = {sid: info for sid, info in index["subjects"].items() if info["usable"]}
        if subjects is None:
            chosen = sorted(usable)
        else:
            missing = [s for s in subjects if s not in usable]
            if missing:
                raise DataError(f"{self.cache_dir}: subjects not usable in this cache: {', '.join(missing)}")
            chosen = list(subjects)
        self.subject_ids: list[str] = chosen
        self._entries = [usable[sid] for sid in chosen]
        self.labels = np.array([e["label"] for e in self._entries], dtype=np.int64)
        self.subtypes = np.array([e["subtype"] for e in self._entries], dtype=np.int64)
        self.has_lge = np.array([e["has_lge"] for e in self._entries], dtype=bool)
        self.transform = transform

    def _check_settings(self, config: DataConfig) -> None:
        expected = cache.cache_settings(config)
        for key in ("image_size", "frames", "slices"):
            if self.settings.get(key) != expected[key]:
                raise DataError(
                    f"{self.cache_dir}: cache built with {key}={self.settings.get(key)}, the config asks for "
                    f"{expected[key]}; re-run `cccmr ingest` with this config"
                )

    def __len__(self) -> int:
        return len(self.subject_ids)

    def _lge_shape(self) -> tuple[int, int, int]:
        size = int(self.settings["image_size"])
        return (int(self.settings["slices"]["lge_sax"]), size, size)

    def __getitem__(self, index: int) -> Item:
        entry = self._entries[index]
        item: Item = {}
        for sequence in SEQUENCES:
            relative = entry["sequences"].get(sequence)
            if relative is None:
                item[sequence] = torch.zeros(self._lge_shape(), dtype=torch.float32)  # S, H, W
                continue
            array = np.load(self.cache_dir / relative)
            item[sequence] = torch.from_numpy(array.astype(np.float32))  # S, T, H, W or S, H, W
        item["has_lge"] = torch.tensor(bool(entry["has_lge"]))
        item["label"] = torch.tensor(int(entry["label"]), dtype=torch.int64)
        item["subtype"] = torch.tensor(int(entry["subtype"]), dtype=torch.int64)
        return self.transform(item) if self.transform is not None else item
