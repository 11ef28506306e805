"""The ClientApp each hospital's SuperNode runs: read the message, run it, wrap the result in records.

Two ways to run a message, with the same code (`cccmr_model/site/handlers.py`) and the same result:
- with `worker-socket` in the node config, forward it to the site's warm worker (`cccmr site-worker`) over the
  local channel (`cccmr_model/channel.py`): this process then imports flwr and numpy only, no torch;
- without it (simulation, tests, a site without a worker), run it in this process.
The server sends the resolved experiment config with every message, so all sites train the same model with the
same settings. A worker that is down, dies mid-message or runs other code gives an error, which the SuperNode
sends back as this site's error reply for the round.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from cccmr_model.errors import CccmrError
from cccmr_model.site.timing import task_timing
from cccmr_model.wire import ARRAYS, CONFIG, METRICS, SITE, SITE_NAME
from client.privacy import clip_update_mod

app = ClientApp(mods=[clip_update_mod])  # clips the update only when the server asks (central DP)

WORKER_SOCKET = "worker-socket"  # node-config key: the warm site worker's UNIX socket
WORKER_TIMEOUT_S = 7200.0  # the longest a forwarded message may take (a round's timeout is the server's)


class SiteWorkerError(CccmrError):
    """The site worker refused the message or could not be reached; one line, sent as the site's error reply."""


@app.train("pretrain")
@app.train("fim")
@app.train("fusion")
def train(msg: Message, context: Context) -> Message:
    """Train the message's phase for its local epochs and learning-rate window; reply with the trained groups."""
    started = time.time()
    name, metrics, arrays = run_message("train", msg, context)
    metrics.update(task_timing(started))
    return _reply(msg, name, {ARRAYS: ArrayRecord(arrays), METRICS: MetricRecord(metrics)})


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the cine-only model on the site's validation split; reply with counts and loss."""
    name, metrics, _ = run_message("evaluate", msg, context)
    return _reply(msg, name, {METRICS: MetricRecord(metrics)})


def run_message(kind: str, msg: Message, context: Context) -> tuple[str, dict[str, Any], list[np.ndarray]]:
    """(site name, metrics, encoded arrays) of the message, from the worker or from this process."""
    fields = dict(msg.content[CONFIG])
    arrays = msg.content[ARRAYS].to_numpy_ndarrays() if ARRAYS in msg.content.array_records else []
    socket = context.node_config.get(WORKER_SOCKET)
    if socket:
        return forward(Path(str(socket)), kind, fields, arrays, context.node_config)
    from cccmr_model.site.data import site_settings
    from cccmr_model.site.handlers import handle_evaluate, handle_train

    def resolve(config):
        return site_settings(context.node_config, context.run_config, config)

    handler = handle_train if kind == "train" else handle_evaluate
    return handler(fields, arrays, resolve)


def forward(
    socket: Path, kind: str, fields: Mapping[str, Any], arrays: list[np.ndarray], node_config: Mapping[str, Any]
) -> tuple[str, dict[str, Any], list[np.ndarray]]:
    """The worker's answer to the message; SiteWorkerError (one line) when it refuses or cannot answer."""
    from cccmr_model.channel import ChannelError, app_fingerprint, request

    header = {"kind": kind, "fingerprint": app_fingerprint(), "config": dict(fields), "site": node_config.get("site")}
    try:
        reply, out = request(socket, header, arrays, WORKER_TIMEOUT_S)
    except ChannelError as err:
        raise SiteWorkerError(str(err)) from None
    if "error" in reply:
        raise SiteWorkerError(str(reply["error"]))
    return str(reply["site"]), dict(reply["metrics"]), out


def _reply(msg: Message, name: str, records: dict) -> Message:
    return Message(RecordDict({**records, SITE: ConfigRecord({SITE_NAME: name})}), reply_to=msg)
