"""Sample-level DP-SGD (opacus) for the phases whose loss is a sum over samples: "pretrain" and "fusion".

`train_phase_dp` is `train_phase` under differential privacy with respect to one training subject (add/remove):
- every step clips each sample's gradient to `privacy.dp_sgd.max_grad_norm` and adds Gaussian noise of standard
  deviation `noise_multiplier x max_grad_norm` to their sum (opacus `GradSampleModule` + `DPOptimizer`);
- batches are Poisson samples of the training subjects at rate q = batch_size / N (the sampling the RDP accountant
  assumes; the class-balanced sampler of `train_phase` is not), each subject at most once per step, with its own
  augmentation (pretrain) or one of its cached augmented views (fusion); an epoch is as many steps as `train_phase`
  takes (N x resample_factor / batch_size), so the learning-rate schedule covers the same span;
- the loss is the mean over the batch of per-sample terms. Pretrain: each subject's focal CLS terms of its three
  sequences (its LGE term only when it has LGE). `train_phase` averages the LGE term over the LGE subjects of the
  batch instead, a batch statistic that would tie one subject's gradient to the others;
- the Poisson draws and the noise come from OS entropy, not from the round seed the server sends: a server that
  knew the seed could recompute the noise and subtract it. DP training is therefore not bit-reproducible;
- privacy spent accumulates in the site's `PrivacyLedger` (JSON). A call first works out how many of its steps
  the budget `privacy.dp_sgd.epsilon_budget` still allows, records them, then trains; when the budget cuts the call
  short it stops there and says so in its metrics (`dp_stopped` 1), and with nothing left it trains nothing.
- no bf16 autocast, no gradient checkpointing (opacus hooks would see the recomputed forward twice), no
  `train.grad_clip_norm` (per-sample clipping replaces it), no per-epoch checkpoints (a round is the unit).

Phase "fim" is refused: its FSA terms compare every sample with the label-averaged similarities of the others
(eq. 2-3), so the loss is not a sum of per-sample terms; one subject moves every other sample's gradient, and
clipping per-sample gradients does not bound what one subject changes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.engine.augment import Augmenter
from cccmr_model.engine.checkpoint import seed_everything
from cccmr_model.engine.datasets import AugmentedView, dataset_labels, task_dataset
from cccmr_model.engine.dp_accounting import PrivacyLedger
from cccmr_model.engine.loading import cpu_state, load_checked, resolve_device, to_device, without_pretrained
from cccmr_model.engine.runners import FusionRunner, make_loader
from cccmr_model.engine.schedule import check_lr_window, lr_at, warmup_fraction, window_progress
from cccmr_model.engine.train import PhaseResult, check_finite_epoch, make_optimizer, set_learning_rate
from cccmr_model.errors import ConfigError, DataError
from cccmr_model.losses import focal_loss
from cccmr_model.model import CCCMRModel, build_model, set_trainable
from cccmr_model.sequences import LGE_SAX

log = logging.getLogger(__name__)

DP_PHASES = ("pretrain", "fusion")
LEDGER_NAME = "dp-sgd-accountant.json"


def check_dp_phase(phase: str) -> None:
    """Raise ConfigError for a phase DP-SGD cannot protect (fim), naming why."""
    if phase == "fim":
        raise ConfigError(
            "privacy.dp_sgd: DP-SGD is refused for phase fim: its FSA loss averages similarities over each label's "
            "samples, so it is not a sum of per-sample terms and per-sample clipping does not bound one subject's "
            "influence; set federation.phases.fim.rounds=0 (cine baseline without LGE guidance) or use central DP"
        )
    if phase not in DP_PHASES:
        raise ValueError(f"unknown phase {phase!r}; DP-SGD runs phases {list(DP_PHASES)}")


def train_phase_dp(
    state: dict[str, Tensor] | None,
    phase: str,
    train_set: Dataset,
    config: ExperimentConfig,
    *,
    epochs: int,
    ledger_path: Path,
    lr_window: tuple[float, float] = (0.0, 1.0),
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> PhaseResult:
    """`train_phase` under DP-SGD (see the module docstring); privacy spent is kept in `ledger_path`."""
    check_dp_phase(phase)
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    dp = config.privacy.dp_sgd
    lr_window = check_lr_window(lr_window)
    dev = resolve_device(device)
    data = task_dataset(train_set, config.task)
    labels = dataset_labels(data)
    if len(labels) == 0:
        raise DataError(f"phase {phase}: no training samples for task {config.task}")

    n = len(labels)
    batch = config.train.phase_batch_size(phase)
    sample_rate = min(1.0, batch / n)
    steps_per_epoch = max(1, math.ceil(n * config.train.resample_factor / batch))
    planned = steps_per_epoch * epochs
    ledger = PrivacyLedger.load(ledger_path)
    steps = ledger.affordable_steps(dp.noise_multiplier, sample_rate, planned, delta=dp.delta,
                                    budget=dp.epsilon_budget)  # fmt: skip
    ledger.reserve(dp.noise_multiplier, sample_rate, steps)
    epsilon = ledger.epsilon(dp.delta)
    report = {"dp_epsilon": epsilon, "dp_delta": dp.delta, "dp_steps": float(steps), "dp_stopped": 0.0}
    if steps < planned:
        report["dp_stopped"] = 1.0
        log.warning(
            "phase %s: DP-SGD budget epsilon %.3g reached: %d of %d steps taken (epsilon now %.3f at delta %g)",
            phase, dp.epsilon_budget, steps, planned, epsilon, dp.delta,
        )  # fmt: skip

    seed_everything(seed)
    model = _dp_model(state, config, phase, dev)
    if steps == 0:
        return PhaseResult(cpu_state(model), 0, report)
    entropy = secrets.randbits(63)
    noise_gen = torch.Generator(device=dev).manual_seed(entropy)
    draw_rng = np.random.default_rng(entropy)
    runner = _dp_runner(phase, model, data, labels, config, dev, seed)
    # imported here: opacus (with scipy) takes about a second to import, which every ClientApp process (one per
    # message) would otherwise pay, DP or not
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    private = GradSampleModule(model, batch_first=True, loss_reduction="mean", strict=True)
    optimizer = DPOptimizer(
        make_optimizer(model, config, phase, dev),
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        expected_batch_size=max(1, round(sample_rate * n)),
        loss_reduction="mean",
        generator=noise_gen,
    )
    try:
        record = _train_steps(runner, model, optimizer, config, phase, steps, planned, lr_window, draw_rng, n,
                              sample_rate)  # fmt: skip
    finally:
        private._close()
    record.update(report)
    record["epochs"] = steps / steps_per_epoch
    log.info("phase %s: DP-SGD %d steps, loss %.4f, epsilon %.3f at delta %g", phase, steps, record["loss"],
             epsilon, dp.delta)  # fmt: skip
    return PhaseResult(cpu_state(model), int(record.pop("samples")), record)


def _dp_model(state, config: ExperimentConfig, phase: str, dev: torch.device) -> CCCMRModel:
    """The model for DP training: no gradient checkpointing, the given weights, the phase's groups trainable."""
    encoder = dataclasses.replace(config.model.encoder, grad_checkpointing=False)
    built = dataclasses.replace(config, model=dataclasses.replace(config.model, encoder=encoder))
    model = build_model(built if state is None else without_pretrained(built))
    if state is not None:
        load_checked(model, state)
    set_trainable(model, phase)
    return model.to(dev)


def _dp_runner(phase, model, data, labels, config, dev, seed):
    if phase == "fusion":
        return FusionRows(model, data, labels, config, dev, seed)
    return EncoderSamples(model, data, config, dev)


class EncoderSamples:
    """Pretrain under DP: the drawn subjects, each with a fresh augmentation, through the full model."""

    def __init__(self, model: CCCMRModel, data: Dataset, config: ExperimentConfig, dev: torch.device) -> None:
        self.model, self.config, self.device = model, config, dev
        self.view = AugmentedView(data, Augmenter(config.train.augment))
        self.gamma = config.train.focal_gamma

    def set_modes(self) -> None:
        self.model.train()

    def batches(self, draws: list[np.ndarray], rng: np.random.Generator):
        """Batches in the order of `draws` (None for an empty draw), loaded with the config's workers."""
        seeds = [rng.integers(0, 2**31 - 1, size=len(d)).tolist() for d in draws]
        filled = [list(zip(d.tolist(), s, strict=True)) for d, s in zip(draws, seeds, strict=True) if len(d)]
        loaded = iter(make_loader(self.view, filled, self.config, self.device))
        for drawn in draws:
            yield to_device(next(loaded), self.device) if len(drawn) else None

    def per_sample_losses(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        output = self.model(batch)
        has_lge = batch["has_lge"].bool()
        terms = {}
        for seq, logits in output.logits.items():
            values = per_sample_focal(logits, batch["label"], self.gamma)  # B
            terms[f"cls:{seq}"] = values * has_lge if seq == LGE_SAX else values
        return torch.stack(list(terms.values())).sum(dim=0), terms


class FusionRows:
    """Fusion under DP: frozen-encoder features cached as `FusionRunner` does; a drawn subject uses one of its views."""

    def __init__(self, model, data, labels, config: ExperimentConfig, dev: torch.device, seed: int) -> None:
        self.model, self.factor = model, config.train.resample_factor
        self.gamma = config.train.focal_gamma
        self.cache = FusionRunner(model, data, labels, config, dev, seed)  # rows: subject i, view k -> i * factor + k

    def set_modes(self) -> None:
        self.cache.set_modes()

    def batches(self, draws: list[np.ndarray], rng: np.random.Generator):
        for drawn in draws:
            if not len(drawn):
                yield None
                continue
            rows = torch.as_tensor(drawn * self.factor + rng.integers(0, self.factor, size=len(drawn)))
            rows = rows.to(self.cache.feat_4ch.device)
            yield {"feat_4ch": self.cache.feat_4ch[rows], "feat_sax": self.cache.feat_sax[rows],
                   "label": self.cache.labels[rows]}  # fmt: skip

    def per_sample_losses(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.model.fuse(batch["feat_4ch"], batch["feat_sax"])  # B, C
        values = per_sample_focal(logits, batch["label"], self.gamma)  # B
        return values, {"cls:fusion": values}


def per_sample_focal(logits: Tensor, labels: Tensor, gamma: float) -> Tensor:
    """The focal loss of each row (B,): `focal_loss` of a one-row batch, row by row (vectorised)."""
    return focal_loss(logits, labels, gamma=gamma, reduction="none")  # B


def _train_steps(runner, model, optimizer, config, phase, steps, planned, lr_window, rng, n, sample_rate):
    """`steps` DP-SGD steps of a call planned for `planned` steps; returns the mean losses over the samples seen."""
    base_lr = config.train.phase_lr(phase)
    warmup = warmup_fraction(config.train.warmup_steps, planned, lr_window)
    draws = [np.flatnonzero(rng.random(n) < sample_rate) for _ in range(steps)]  # Poisson sampling
    params = [p for p in model.parameters() if p.requires_grad]
    runner.set_modes()
    sums: dict[str, Tensor] = {}  # summed on the device: no host sync per step
    samples, start, lr = 0, time.perf_counter(), base_lr
    for step, batch in enumerate(runner.batches(draws, rng)):
        lr = lr_at(window_progress(step, planned, lr_window), base_lr=base_lr, min_lr=config.train.min_lr,
                   warmup_fraction=warmup)  # fmt: skip
        set_learning_rate(optimizer, lr)
        optimizer.zero_grad(set_to_none=True)
        if batch is None:  # an empty Poisson draw still takes a (noise-only) step
            for p in params:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
            optimizer.step()
            continue
        per_sample, terms = runner.per_sample_losses(batch)
        per_sample.mean().backward()
        optimizer.step()
        b = int(per_sample.shape[0])
        for name, values in {"loss": per_sample, **terms}.items():
            sums[name] = sums.get(name, 0.0) + values.detach().float().sum()
        samples += b
    seconds = time.perf_counter() - start
    record: dict[str, Any] = {name: float(total) / max(samples, 1) for name, total in sums.items()}  # one sync
    record.setdefault("loss", 0.0)
    check_finite_epoch(record, params, f"phase {phase} (DP-SGD, {steps} steps)", "none (DP-SGD calls keep none)")
    record.update(samples=samples, lr=lr, samples_per_s=samples / max(seconds, 1e-9), train_seconds=seconds)
    return record
