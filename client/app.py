"""The ClientApp each hospital's SuperNode runs: read the message and the site's settings, call plain functions,
wrap the results in records. The server sends the resolved experiment config with every message, so all sites
train the same model with the same settings."""

from __future__ import annotations

import json
import time

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from cccmr_model.config import config_from_dict
from cccmr_model.config.schema import ExperimentConfig
from client.privacy import clip_update_mod, dp_ledger_path
from client.site import SiteSettings, prepare_site, site_settings
from client.tasks import evaluate_round, train_round
from client.timing import task_timing
from server.wire import from_array_record, to_array_record

app = ClientApp(mods=[clip_update_mod])  # clips the update only when the server asks (central DP)


@app.train("pretrain")
@app.train("fim")
@app.train("fusion")
def train(msg: Message, context: Context) -> Message:
    """Train the message's phase for its local epochs and learning-rate window; reply with the trained groups."""
    started = time.time()
    cfg = msg.content["config"]
    config, site = _setup(cfg, context)
    trained, metrics = train_round(
        _received(msg),
        str(cfg["phase"]),
        prepare_site(site, config),
        config,
        epochs=int(cfg["local-epochs"]),
        lr_window=(float(cfg["lr-window-start"]), float(cfg["lr-window-end"])),
        device=site.device,
        seed=int(cfg["seed"]),
        ledger_path=dp_ledger_path(site.cache_path),
    )
    metrics.update(task_timing(started))
    arrays = to_array_record({k: v.detach().cpu().numpy() for k, v in trained.items()})
    return _reply(msg, site, {"arrays": arrays, "metrics": MetricRecord(metrics)})


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the cine-only model on the site's validation split; reply with counts and loss."""
    cfg = msg.content["config"]
    config, site = _setup(cfg, context)
    metrics = evaluate_round(
        _received(msg),
        prepare_site(site, config),
        config,
        device=site.device,
        share_scores=bool(cfg["share-subject-scores"]),
    )
    return _reply(msg, site, {"metrics": MetricRecord(metrics)})


def _received(msg: Message) -> dict[str, torch.Tensor]:
    """The message's parameters as tensors (views into the packed buffer)."""
    arrays = from_array_record(msg.content["arrays"], "message from the server")
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def _setup(cfg: ConfigRecord, context: Context) -> tuple[ExperimentConfig, SiteSettings]:
    config = config_from_dict(json.loads(str(cfg["experiment"])), source="experiment config sent by the server")
    return config, site_settings(context.node_config, context.run_config, config)


def _reply(msg: Message, site: SiteSettings, records: dict) -> Message:
    return Message(RecordDict({**records, "site": ConfigRecord({"name": site.name})}), reply_to=msg)
