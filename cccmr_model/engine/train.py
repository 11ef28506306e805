"""`train_phase`: one training phase for E epochs from given weights (paper section 3.1).

This is the one function the federation calls (and `cccmr train` calls three times). It builds the model from the
config, loads the given weights with every key checked, trains the phase's parameter groups with AdamW under the
cosine schedule over `lr_window` of the phase, checkpoints every epoch and resumes exactly from a checkpoint in
`checkpoint_dir`. Batches, augmentation and fusion views are pure functions of (seed, epoch); dropout draws from
the torch RNG, whose state the checkpoint holds, so a resumed run gives the same weights as an uninterrupted one.
On CUDA: bf16 autocast, pinned memory, and no host sync per step (losses are summed on the device and read once
per epoch).

Every epoch also scores each classification head on the batches it trained on (the three sequence heads in
pretrain/fim, the LGE head over subjects with LGE only; the fused head in fusion): `acc:<head>` and `auc:<head>`
(left out when the epoch saw one class) go into the epoch's record, and a head whose predictions were constant
over the epoch is logged as a warning and recorded as `constant:<head>` = 1.0, so a model that cannot learn is
noticed in the log, in `PhaseResult.metrics` and (federated) in the server's history.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cccmr_model.config import PHASES, config_to_dict, dump_config
from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.engine.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    restore_rng_states,
    save_checkpoint,
    seed_everything,
)
from cccmr_model.engine.datasets import dataset_labels, task_dataset
from cccmr_model.engine.loading import (
    cpu_state,
    model_holding,
    resolve_device,
    state_fingerprint,
    without_pretrained,
)
from cccmr_model.engine.runners import EncoderRunner, FusionRunner, HeadOutput
from cccmr_model.engine.schedule import check_lr_window, lr_at, warmup_fraction, window_progress
from cccmr_model.errors import DataError, TrainingError
from cccmr_model.metrics import binary_auc, subtyping_metrics
from cccmr_model.model import CCCMRModel, build_model, set_trainable

log = logging.getLogger(__name__)

CONSTANT_SPREAD = 1e-3  # a head whose class probabilities vary less than this over an epoch predicts a constant
UNINFORMATIVE_AUC = 0.6  # one call for every sample counts as constant only when the ranking is this poor too


@dataclass
class PhaseResult:
    state: dict[str, Tensor]  # the full model state after training
    num_examples: int  # training samples seen (batches x their sizes), for FedAvg weighting
    metrics: dict[str, float] = field(default_factory=dict)


def autocast_for(device: torch.device, config: ExperimentConfig) -> Callable[[], AbstractContextManager]:
    """bf16 autocast on CUDA when `train.amp`; a no-op elsewhere."""
    if device.type == "cuda" and config.train.amp:
        return partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    return nullcontext


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled learning rate `lr` on every parameter group, times the group's `lr_scale` (make_optimizer)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


def make_optimizer(model: CCCMRModel, config: ExperimentConfig, phase: str, device: torch.device):
    """AdamW over the trainable parameters; matrices decay, vectors, norms, biases and sigmas do not (nanoGPT).
    Each group's `lr_scale` multiplies the scheduled learning rate: `train.uncertainty_lr_scale` for the sigmas."""
    skip = model.no_weight_decay()
    decay, no_decay, sigmas = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("uncertainty."):
            sigmas.append(param)
        else:
            (decay if param.ndim >= 2 and name not in skip else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.train.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": sigmas, "weight_decay": 0.0, "lr_scale": config.train.uncertainty_lr_scale},
    ]
    groups = [group for group in groups if group["params"]]
    return torch.optim.AdamW(groups, lr=config.train.phase_lr(phase), fused=device.type == "cuda")


def _run_signature(phase, epochs, lr_window, seed, n, config, start_state) -> dict:
    return {
        "phase": phase,
        "epochs": epochs,
        "lr_window": list(lr_window),
        "seed": seed,
        "num_train": n,
        "task": config.task,
        "config": hashlib.sha256(dump_config(config).encode()).hexdigest()[:16],
        "start": state_fingerprint(start_state),
    }


def train_phase(
    state: Mapping[str, Tensor] | None,
    phase: str,
    train_set: Dataset,
    config: ExperimentConfig,
    *,
    epochs: int,
    lr_window: tuple[float, float] = (0.0, 1.0),
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint_dir: Path | None = None,
) -> PhaseResult:
    """Train `phase` ("pretrain", "fim" or "fusion") for `epochs` epochs from `state` (None: fresh weights)."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {list(PHASES)}")
    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    lr_window = check_lr_window(lr_window)
    dev = resolve_device(device)
    data = task_dataset(train_set, config.task)
    labels = dataset_labels(data)
    if len(labels) == 0:
        raise DataError(f"phase {phase}: no training samples for task {config.task}")

    seed_everything(seed)
    if state is None:
        model = build_model(config)  # fresh weights (and the init files of model.encoder.pretrained)
    else:
        model = model_holding(state, lambda: build_model(without_pretrained(config)))
    seed_everything(seed)  # training draws the same random numbers whether or not the weights were initialised here
    start_state = state if state is not None else model.state_dict()
    model.to(dev)
    set_trainable(model, phase)
    optimizer = make_optimizer(model, config, phase, dev)
    autocast = autocast_for(dev, config)
    path = checkpoint_path(checkpoint_dir, phase) if checkpoint_dir is not None else None
    # Hashing the start weights costs about a second at the default size: only where epochs are checkpointed.
    run = _run_signature(phase, epochs, lr_window, seed, len(labels), config, start_state) if path else None
    ckpt = load_checkpoint(path, run) if path is not None else None
    history: list[dict[str, float]] = []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"], strict=True)
        optimizer.load_state_dict(ckpt["optimizer"])
        history = ckpt["history"]
        log.info("phase %s: resuming after epoch %d of %d from %s", phase, len(history), epochs, path)
    if len(history) < epochs:
        runner = _make_runner(phase, model, data, labels, config, dev, seed, autocast)
        if ckpt is not None:
            restore_rng_states(ckpt["rng"])
        loop = _PhaseLoop(
            model=model, runner=runner, optimizer=optimizer, config=config, phase=phase, epochs=epochs,
            lr_window=lr_window, autocast=autocast, checkpoint=path, signature=run,
        )  # fmt: skip
        _train_epochs(loop, history)
    return PhaseResult(cpu_state(model), int(sum(h["samples"] for h in history)), _summary(history, model, phase))


def _make_runner(phase, model, data, labels, config, dev, seed, autocast):
    if phase == "fusion":
        return FusionRunner(model, data, labels, config, dev, seed, autocast)
    return EncoderRunner(phase, model, data, labels, config, dev, seed)


@dataclass(frozen=True)
class _PhaseLoop:
    """One phase's epoch loop: the model and how a batch trains it, the schedule, and where epochs are checkpointed."""

    model: CCCMRModel
    runner: EncoderRunner | FusionRunner
    optimizer: torch.optim.Optimizer
    config: ExperimentConfig
    phase: str
    epochs: int
    lr_window: tuple[float, float]
    autocast: Callable[[], AbstractContextManager]
    checkpoint: Path | None  # None: no checkpoints
    signature: dict | None  # the run a checkpoint belongs to (`_run_signature`; None: no checkpoints)


def _train_epochs(loop: _PhaseLoop, history: list[dict[str, float]]) -> None:
    """Train the epochs after those in `history`, appending each epoch's record and checkpointing it."""
    config, phase, epochs, optimizer = loop.config, loop.phase, loop.epochs, loop.optimizer
    steps_per_epoch = loop.runner.steps_per_epoch()
    total_steps = steps_per_epoch * epochs
    base_lr = config.train.phase_lr(phase)
    warmup = warmup_fraction(config.train.warmup_steps, total_steps, loop.lr_window)
    params = [p for p in loop.model.parameters() if p.requires_grad]
    clip = config.train.grad_clip_norm
    for epoch in range(len(history), epochs):
        loop.runner.set_modes()
        start = time.perf_counter()
        sums: dict[str, Tensor] = {}
        tracker = HeadTracker()
        samples, step = 0, epoch * steps_per_epoch
        for batch in loop.runner.epoch(epoch):
            lr = lr_at(
                window_progress(step, total_steps, loop.lr_window),
                base_lr=base_lr,
                min_lr=config.train.min_lr,
                warmup_fraction=warmup,
            )
            set_learning_rate(optimizer, lr)
            with loop.autocast():
                loss, terms, heads = loop.runner.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            n = int(batch["label"].shape[0])
            for name, value in {"loss": loss, **terms}.items():  # summed on the device: no sync per step
                sums[name] = sums.get(name, 0.0) + value.detach().float() * n
            tracker.add(heads)  # kept on the device too
            samples += n
            step += 1
        seconds = time.perf_counter() - start
        record = {name: float(total) / samples for name, total in sums.items()}  # one sync per epoch
        record.update(tracker.metrics(phase, epoch + 1))
        record.update(samples=samples, seconds=seconds, lr=lr)
        check_finite_epoch(
            record, params, f"phase {phase} epoch {epoch + 1}/{epochs}", _kept(loop.checkpoint, len(history))
        )
        history.append(record)
        log.info(
            "phase %s epoch %d/%d: loss %.4f%s (%.1f samples/s)",
            phase,
            epoch + 1,
            epochs,
            record["loss"],
            _heads_text(record, tracker.names()),
            samples / max(seconds, 1e-9),
        )
        if loop.checkpoint is not None:
            payload = {
                "model": loop.model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": history,
                "epoch": epoch + 1,
                "step": step,
                "run": loop.signature,
                "config": config_to_dict(config),
            }
            save_checkpoint(loop.checkpoint, payload)


def check_finite_epoch(record: Mapping[str, float], params: list[Tensor], where: str, kept: str) -> None:
    """Stop training when an epoch's losses or the weights it left are not finite (one host sync).

    Raised before the epoch is checkpointed, so the checkpoint of the last good epoch (`kept` says which) stays.
    """
    bad = {name: value for name, value in record.items() if not math.isfinite(value)}
    finite_weights = bool(torch.stack([torch.isfinite(p.detach()).all() for p in params]).all()) if params else True
    if not bad and finite_weights:
        return
    what = ", ".join(f"{name} {value}" for name, value in bad.items()) if bad else "non-finite weights"
    raise TrainingError(
        f"{where}: non-finite training loss ({what}); training stopped, last good checkpoint: {kept}. "
        "Check the input data for non-finite values, or lower train.lr"
    )


def _kept(path: Path | None, good_epochs: int) -> str:
    """Which checkpoint a stopped run leaves, in words."""
    if path is None:
        return "none (no checkpoint directory)"
    if good_epochs == 0:
        return f"none, no epoch finished ({path} not written)"
    return f"{path} (epoch {good_epochs}) kept"


class HeadTracker:
    """Each head's class probabilities and labels over an epoch, kept on the device and read once at its end."""

    def __init__(self) -> None:
        self.parts: dict[str, list[HeadOutput]] = {}

    def add(self, heads: Mapping[str, HeadOutput]) -> None:
        """Keep a step's detached probabilities (no host sync)."""
        for name, (logits, labels, rows) in heads.items():
            probs = torch.softmax(logits.detach().float(), dim=1)  # B, C
            self.parts.setdefault(name, []).append(HeadOutput(probs, labels.detach(), rows))

    def names(self) -> list[str]:
        return list(self.parts)

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's (N, C) probabilities and (N,) labels of head `name`, over its scored rows only."""
        parts = self.parts[name]
        probs, labels = torch.cat([p.logits for p in parts]), torch.cat([p.labels for p in parts])
        if any(p.rows is not None for p in parts):
            rows = torch.cat([torch.ones_like(p.labels, dtype=torch.bool) if p.rows is None else p.rows for p in parts])
            probs, labels = probs[rows], labels[rows]
        return probs.cpu().numpy().astype(np.float64), labels.cpu().numpy().astype(np.int64)

    def metrics(self, phase: str, epoch: int) -> dict[str, float]:
        """`acc:<head>`, `auc:<head>` (when defined) and `constant:<head>` (1.0, with a warning) per head."""
        out: dict[str, float] = {}
        for name in self.parts:
            probs, labels = self.arrays(name)
            if len(labels) == 0:
                continue  # e.g. the LGE head at a site without LGE
            out.update({f"{key}:{name}": value for key, value in head_metrics(probs, labels).items()})
            constant = constant_prediction(probs, labels)
            if constant is not None:
                log.warning("phase %s epoch %d: head %s predicts a constant (%s)", phase, epoch, name, constant)
                out[f"constant:{name}"] = 1.0
        return out


def head_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (most probable class) and AUC (binary, or macro one-vs-rest); AUC is left out when undefined."""
    out = {"acc": float((probs.argmax(axis=1) == labels).mean())}
    binary = probs.shape[1] == 2
    auc = binary_auc(probs[:, 1], labels) if binary else subtyping_metrics(probs, labels)["macro_auc"]
    if math.isfinite(auc):
        out["auc"] = float(auc)
    return out


def constant_prediction(probs: np.ndarray, labels: np.ndarray, spread: float = CONSTANT_SPREAD) -> str | None:
    """Why the (N, C) probabilities are constant over the rows; None when they are not, or when the labels hold one
    class only (then a constant is the right answer, e.g. the LGE head where only patients have LGE)."""
    if len(np.unique(labels)) < 2:
        return None
    predicted = probs.argmax(axis=1)
    width = float((probs.max(axis=0) - probs.min(axis=0)).max())
    if width < spread:
        return f"class probabilities vary by {width:.2g} over {len(probs)} samples"
    if np.all(predicted == predicted[0]) and probs.shape[1] == 2:
        auc = binary_auc(probs[:, 1], labels)
        if not auc > UNINFORMATIVE_AUC:  # one call for everyone and a ranking no better than chance
            return f"class {int(predicted[0])} for all {len(probs)} samples, AUC {auc:.2f}"
    return None


def _heads_text(record: Mapping[str, float], heads: list[str]) -> str:
    """` | <head> acc 0.62 auc 0.70` per head (`auc -` when undefined, `constant` when flagged)."""
    parts = []
    for name in heads:
        if f"acc:{name}" not in record:
            continue
        auc = record.get(f"auc:{name}")
        text = f"{name} acc {record[f'acc:{name}']:.2f} auc {'-' if auc is None else f'{auc:.2f}'}"
        parts.append(text + (" constant" if f"constant:{name}" in record else ""))
    return "".join(f" | {part}" for part in parts)


def _summary(history: list[dict[str, float]], model: CCCMRModel, phase: str) -> dict[str, float]:
    """Metrics of the call: the last epoch's mean losses, per-head acc/auc/constant flags, lr, throughput and (FIM)
    the learned sigmas."""
    last = history[-1]
    seconds = sum(h["seconds"] for h in history)
    samples = sum(h["samples"] for h in history)
    metrics = {name: float(value) for name, value in last.items() if name not in ("samples", "seconds")}
    metrics["epochs"] = float(len(history))
    metrics["samples_per_s"] = float(samples / seconds) if seconds > 0 else 0.0
    metrics["train_seconds"] = float(seconds)  # the epoch loops only: data, forward, backward, optimiser
    if phase == "fim":
        for name, sigma in model.uncertainty.sigmas().items():
            metrics[f"sigma:{name}"] = float(sigma)
    return metrics
