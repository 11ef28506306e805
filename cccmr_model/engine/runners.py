"""What differs between the three phases: where a batch comes from, which loss it gives and which classification
heads it scores (`StepOutput.heads`, read by the per-epoch head metrics of `train_phase`).

- `EncoderRunner` (phases "pretrain" and "fim"): augmented samples in class-balanced batches through the full
  model; "pretrain" sums the three focal CLS terms (the LGE term over subjects with LGE only), "fim" combines all six
  FIM terms with the model's uncertainty (or fixed) weighting.
- `FusionRunner` (phase "fusion"): the encoders are frozen, so the cine features of `resample_factor` augmented
  views of every sample are computed once (eval mode, no grad) and the fusion MLP trains on those rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.engine.augment import Augmenter
from cccmr_model.engine.datasets import AugmentedView
from cccmr_model.engine.loading import to_device
from cccmr_model.engine.sampler import Draw, epoch_batches
from cccmr_model.losses import focal_loss
from cccmr_model.model import CCCMRModel
from cccmr_model.sequences import CINE_4CH, CINE_SAX, LGE_SAX

Batch = dict[str, Tensor]


class HeadOutput(NamedTuple):
    """One head's logits of a step, with the labels and the rows it is scored on (None: every row)."""

    logits: Tensor  # B, C
    labels: Tensor  # B
    rows: Tensor | None  # B, bool


class StepOutput(NamedTuple):
    """A step's loss to minimise, its named terms and the outputs of every classification head."""

    loss: Tensor
    terms: dict[str, Tensor]
    heads: dict[str, HeadOutput]


class EpochBatchSampler:
    """A DataLoader batch sampler over `epoch_batches`; `set_epoch` selects the epoch (main process only)."""

    def __init__(self, labels: np.ndarray, batch_size: int, resample_factor: int, seed: int) -> None:
        self.labels, self.batch_size, self.resample_factor, self.seed = labels, batch_size, resample_factor, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[Draw]]:
        return epoch_batches(
            self.labels,
            batch_size=self.batch_size,
            resample_factor=self.resample_factor,
            seed=self.seed,
            epoch=self.epoch,
        )

    def __iter__(self) -> Iterator[list[Draw]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def make_loader(dataset: Dataset, batch_sampler: object, config: ExperimentConfig, device: torch.device) -> DataLoader:
    workers = config.train.num_workers
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


class EncoderRunner:
    """Phases "pretrain" and "fim": the full model on augmented, class-balanced batches."""

    def __init__(
        self,
        phase: str,
        model: CCCMRModel,
        dataset: Dataset,
        labels: np.ndarray,
        config: ExperimentConfig,
        device: torch.device,
        seed: int,
    ) -> None:
        self.phase, self.model, self.device = phase, model, device
        batch = config.train.phase_batch_size(phase)
        self.sampler = EpochBatchSampler(labels, batch, config.train.resample_factor, seed)
        view = AugmentedView(dataset, Augmenter(config.train.augment))
        self.loader = make_loader(view, self.sampler, config, device)

    def steps_per_epoch(self) -> int:
        return len(self.sampler)

    def set_modes(self) -> None:
        self.model.train()

    def epoch(self, epoch: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        for batch in self.loader:
            yield to_device(batch, self.device)

    def loss(self, batch: Batch) -> StepOutput:
        output = self.model(batch)
        labels, has_lge = batch["label"], batch["has_lge"]
        terms = self.model.fim_losses(output, labels, has_lge)
        heads = {
            seq: HeadOutput(logits, labels, has_lge.bool() if seq == LGE_SAX else None)
            for seq, logits in output.logits.items()
        }  # the LGE head is scored on subjects with LGE only, as its loss is
        if self.phase == "pretrain":
            terms = {name: value for name, value in terms.items() if name.startswith("cls:")}
            return StepOutput(torch.stack(list(terms.values())).sum(), terms, heads)
        return StepOutput(self.model.fim_total(terms), terms, heads)


class FusionRunner:
    """Phase "fusion": frozen encoders (eval mode), cached cine features of augmented views, MLP trained on them."""

    def __init__(
        self,
        model: CCCMRModel,
        dataset: Dataset,
        labels: np.ndarray,
        config: ExperimentConfig,
        device: torch.device,
        seed: int,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.model, self.device, self.config, self.seed = model, device, config, seed
        self.gamma = config.train.focal_gamma
        self.feat_4ch, self.feat_sax, self.labels = self._cache(dataset, labels, autocast)
        self.labels_np = np.repeat(labels, config.train.resample_factor)

    def _cache(
        self, dataset: Dataset, labels: np.ndarray, autocast: Callable[[], AbstractContextManager]
    ) -> tuple[Tensor, Tensor, Tensor]:
        factor = self.config.train.resample_factor
        rng = np.random.default_rng([self.seed, 0xF05E])
        seeds = rng.integers(0, 2**31 - 1, size=len(labels) * factor).tolist()
        draws = [(i, seeds[i * factor + k]) for i in range(len(labels)) for k in range(factor)]
        chunks = [
            draws[s : s + self.config.train.batch_size] for s in range(0, len(draws), self.config.train.batch_size)
        ]
        loader = make_loader(
            AugmentedView(dataset, Augmenter(self.config.train.augment)), chunks, self.config, self.device
        )
        self.model.eval()
        f4, fs, ys = [], [], []
        with torch.no_grad():
            for batch in loader:
                batch = to_device(batch, self.device)
                with autocast():
                    f4.append(self.model.encode(CINE_4CH, batch[CINE_4CH]).float())  # B, D
                    fs.append(self.model.encode(CINE_SAX, batch[CINE_SAX]).float())  # B, D
                ys.append(batch["label"])
        return torch.cat(f4), torch.cat(fs), torch.cat(ys)

    def steps_per_epoch(self) -> int:
        return len(self._batches(0))

    def _batches(self, epoch: int) -> list[list[Draw]]:
        return epoch_batches(
            self.labels_np,
            batch_size=self.config.train.phase_batch_size("fusion"),
            resample_factor=1,
            seed=self.seed,
            epoch=epoch,
        )

    def set_modes(self) -> None:
        self.model.eval()
        self.model.fusion.train()

    def epoch(self, epoch: int) -> Iterator[Batch]:
        batches = self._batches(epoch)
        # The epoch's row indices go to the device in one copy (a pageable host->device copy per step would wait
        # for the GPU); each step slices its batch out of them with host-side offsets.
        rows = torch.tensor([i for batch in batches for i, _ in batch], dtype=torch.long).to(self.device)  # epoch
        start = 0
        for batch in batches:
            part = rows[start : start + len(batch)]  # B
            start += len(batch)
            yield {"feat_4ch": self.feat_4ch[part], "feat_sax": self.feat_sax[part], "label": self.labels[part]}

    def loss(self, batch: Batch) -> StepOutput:
        logits = self.model.fuse(batch["feat_4ch"], batch["feat_sax"])  # B, C
        loss = focal_loss(logits, batch["label"], gamma=self.gamma)
        return StepOutput(loss, {"cls:fusion": loss}, {"fusion": HeadOutput(logits, batch["label"], None)})
