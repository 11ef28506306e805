"""The site's side of the two privacy levels.

- Site-level (central) DP: `clip_update_mod` clips the L2 norm of the site's update (trained groups returned minus
  the values received) to the clipping norm the server's `server.privacy` wrapper puts in the train config
  (Flower's `KEY_CLIPPING_NORM`): with `federation.wire` fp32 with Flower's own `compute_clip_model_update`; with
  bf16 and int8 it clips the update as quantised, i.e. as sent (`cccmr_model.wire_codec.clip_update`: the decoded
  update's norm never exceeds the clipping norm; int8's error feedback keeps the rounding residual only, not what
  clipping removed). Flower's `fixedclipping_mod`
  cannot be used as is: it requires the reply to hold exactly the arrays received, while a phase sends frozen
  inputs it does not train (fusion receives the cine encoders and returns only `fusion.`), and it errors on
  evaluation messages, which carry no clipping norm.
- Sample-level DP-SGD: `cccmr_model/site/budget.py` (the site's ledger and the budget check).
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ArrayRecord, Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.constant import ErrorCode
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_clip_model_update

from cccmr_model.wire import ARRAYS, CONFIG, encode, order_wire
from cccmr_model.wire_codec import clip_update, decode_model, decode_reply

log = logging.getLogger("cccmr.client")


def clip_update_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Clip the update of a train reply to the server's clipping norm; other messages pass through."""
    is_train = msg.metadata.message_type.split(".")[0] == MessageType.TRAIN
    config = msg.content.config_records.get(CONFIG)
    if not is_train or config is None or KEY_CLIPPING_NORM not in config:
        return call_next(msg, context)
    clipping_norm, wire = float(config[KEY_CLIPPING_NORM]), order_wire(config, "train")
    received = decode_model(msg.content.array_records[ARRAYS].to_numpy_ndarrays(), wire, "message from the server")
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    record = reply.content.array_records.get(ARRAYS)
    arrays = None if record is None else record.to_numpy_ndarrays()
    sent = None if arrays is None else decode_reply(arrays, wire, "reply", received)
    if sent is None or any(k not in received or received[k].shape != v.shape for k, v in sent.items()):
        reason = "clip_update_mod: the reply's arrays are not a subset of the arrays received; nothing sent"
        log.error(reason)
        return Message(Error(code=ErrorCode.MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)
    if wire == "fp32":
        reply.content[ARRAYS] = ArrayRecord(encode(_clipped(sent, received, clipping_norm)))
    else:
        reply.content[ARRAYS] = ArrayRecord(clip_update(arrays, wire, clipping_norm)[0])
    log.info("update clipped to L2 norm %.4g (central DP, %s)", clipping_norm, wire)
    return reply


def _clipped(sent: dict[str, np.ndarray], received: dict[str, np.ndarray], clipping_norm: float) -> dict:
    """fp32: the trained groups with their update clipped by Flower's `compute_clip_model_update`."""
    keys = list(sent)
    updated = [sent[k].copy() for k in keys]
    if any(np.any(updated[i] != received[k]) for i, k in enumerate(keys)):  # Flower divides by the update's norm
        compute_clip_model_update(updated, [received[k] for k in keys], clipping_norm)
    return dict(zip(keys, updated, strict=True))
