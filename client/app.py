"""The ClientApp each hospital's SuperNode runs: read the message and the site's settings, call plain functions,
wrap the results in records. The server sends the resolved experiment config with every message, so all sites
train the same model with the same settings."""

from __future__ import annotations

import time

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from cccmr_model.config.schema import ExperimentConfig
from cccmr_model.site.budget import dp_ledger_path
from cccmr_model.site.data import SiteSettings, prepare_site, site_settings
from cccmr_model.site.tasks import evaluate_round, train_round
from cccmr_model.site.timing import task_timing
from cccmr_model.wire import (
    ARRAYS,
    CONFIG,
    METRICS,
    SITE,
    SITE_NAME,
    EvaluateOrder,
    TrainOrder,
    decode,
    encode,
    experiment_from_json,
)
from client.privacy import clip_update_mod

app = ClientApp(mods=[clip_update_mod])  # clips the update only when the server asks (central DP)


@app.train("pretrain")
@app.train("fim")
@app.train("fusion")
def train(msg: Message, context: Context) -> Message:
    """Train the message's phase for its local epochs and learning-rate window; reply with the trained groups."""
    started = time.time()
    order = TrainOrder.from_config(msg.content[CONFIG])
    config, site = _setup(order.experiment_json, context)
    trained, metrics = train_round(
        _received(msg),
        order.phase,
        prepare_site(site, config),
        config,
        epochs=order.local_epochs,
        lr_window=order.lr_window,
        device=site.device,
        seed=order.seed,
        ledger_path=dp_ledger_path(site.cache_path),
    )
    metrics.update(task_timing(started))
    arrays = ArrayRecord(encode({k: v.detach().cpu().numpy() for k, v in trained.items()}))
    return _reply(msg, site, {ARRAYS: arrays, METRICS: MetricRecord(metrics)})


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the cine-only model on the site's validation split; reply with counts and loss."""
    order = EvaluateOrder.from_config(msg.content[CONFIG])
    config, site = _setup(order.experiment_json, context)
    metrics = evaluate_round(
        _received(msg),
        prepare_site(site, config),
        config,
        device=site.device,
        share_scores=order.share_scores,
    )
    return _reply(msg, site, {METRICS: MetricRecord(metrics)})


def _received(msg: Message) -> dict[str, torch.Tensor]:
    """The message's parameters as tensors (views into the packed buffer)."""
    arrays = decode(msg.content[ARRAYS].to_numpy_ndarrays(), "message from the server")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def _setup(experiment_json: str, context: Context) -> tuple[ExperimentConfig, SiteSettings]:
    config = experiment_from_json(experiment_json)
    return config, site_settings(context.node_config, context.run_config, config)


def _reply(msg: Message, site: SiteSettings, records: dict) -> Message:
    return Message(RecordDict({**records, SITE: ConfigRecord({SITE_NAME: site.name})}), reply_to=msg)
