"""One train or evaluate message, as the site runs it: config fields and encoded arrays in, metrics and encoded
arrays out. The ClientApp calls these in its own process, or the warm site worker calls them for it (same code,
same seed per message, so the two give the same weights). No Flower types here."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.site.budget import dp_ledger_path
from cccmr_model.site.config import SiteSettings
from cccmr_model.site.data import prepare_site
from cccmr_model.site.tasks import evaluate_round, train_round
from cccmr_model.wire import EvaluateOrder, TrainOrder, experiment_from_json, with_evaluation
from cccmr_model.wire_codec import decode_model, encode_update, residual_path

SiteResolver = Callable[[ExperimentConfig], SiteSettings]  # the site's settings under the run's config


def handle_train(
    fields: Mapping[str, Any], arrays: list[np.ndarray], resolve_site: SiteResolver
) -> tuple[str, dict[str, Any], list[np.ndarray]]:
    """(site name, reply metrics, encoded trained groups) of one train message (the caller adds its timing). When
    the order asks for it, the received model is first evaluated (the cine-only prediction, and each sequence head
    the message holds) and the reply's metrics carry that evaluation under `eval:`; training seeds itself afterwards."""
    order = TrainOrder.from_config(fields)
    config, site = _setup(order.experiment_json, resolve_site)
    received = decode_model(arrays, order.wire, "message from the server")  # float32 (bf16-rounded with bf16, int8)
    tensors, data = _tensors(received), prepare_site(site, config)
    evaluation: dict[str, Any] = {}
    timing: dict[str, float] = {}
    if order.evaluate_round is not None:
        started = time.perf_counter()
        evaluation = evaluate_round(tensors, data, config, device=site.device, share_scores=order.share_scores)
        timing["evaluate_seconds"] = time.perf_counter() - started
    trained, metrics = train_round(
        tensors,
        order.phase,
        data,
        config,
        epochs=order.local_epochs,
        lr_window=order.lr_window,
        device=site.device,
        seed=order.seed,
        ledger_path=dp_ledger_path(site.cache_path),
    )
    numpy = {k: v.detach().cpu().numpy() for k, v in trained.items()}
    residuals = residual_path(site.cache_path)  # int8's error feedback
    trained_arrays = encode_update(numpy, received, order.wire, residuals=residuals, run_key=order.run_key)
    return site.name, with_evaluation({**metrics, **timing}, evaluation), trained_arrays


def handle_evaluate(
    fields: Mapping[str, Any], arrays: list[np.ndarray], resolve_site: SiteResolver
) -> tuple[str, dict[str, Any], list[np.ndarray]]:
    """(site name, reply metrics, no arrays) of one evaluate message: the cine-only model on the validation split."""
    order = EvaluateOrder.from_config(fields)
    config, site = _setup(order.experiment_json, resolve_site)
    received = _tensors(decode_model(arrays, order.wire, "message from the server"))
    metrics = evaluate_round(
        received, prepare_site(site, config), config, device=site.device, share_scores=order.share_scores
    )
    return site.name, metrics, []


def _tensors(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The received parameters as tensors (views into the decoded buffer)."""
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def _setup(experiment_json: str, resolve_site: SiteResolver) -> tuple[ExperimentConfig, SiteSettings]:
    config = experiment_from_json(experiment_json)
    return config, resolve_site(config)
