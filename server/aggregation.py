"""How a round's accepted replies become one update: FedAvg's weighted mean, or a robust choice through Flower's
own strategies for consortia of three or more sites.

- `fedavg`: the mean weighted by each reply's `num-examples` (bit-identical to Flower's FedAvg, see
  `cccmr_model.packing.weighted_average`).
- `median`: the coordinate-wise median of the replies (Flower's `FedMedian`, Yin et al. 2018); unweighted.
- `trimmed_mean`: per coordinate, the mean after dropping the `trim_fraction` largest and smallest values
  (Flower's `FedTrimmedAvg` with `beta = trim_fraction`); unweighted.

`federation.server_lr` scales the server's step (FedOpt's server learning rate, Reddi et al. 2021: global +=
server_lr x (aggregate - global)). FedAvg over K sites with E local epochs takes about 1/K of the sequential
optimizer steps that central training over the same epochs takes (each round is about one step of K times the
batch); on the two-site phantom a step of 2 gave part of them back and 3 overshot (benchmarks/federation_gap.py).
1.0 is plain FedAvg, bit for bit.

A round trains one phase's parameter groups (encoders and heads, + uncertainty, or fusion) and the aggregation
applies to exactly those, coordinate by coordinate. Each reply arrives packed into one flat buffer
(`cccmr_model.packing`), so Flower's strategy sees one array per site: the same numbers array by array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedMedian, FedTrimmedAvg

from cccmr_model.config.schema import AGGREGATIONS
from cccmr_model.packing import weighted_average

__all__ = ["AGGREGATIONS", "aggregate", "server_step"]

_KEY = "packed"


def aggregate(buffers: Sequence[np.ndarray], weights: Sequence[float], method: str, trim_fraction: float) -> np.ndarray:
    """One buffer from the replies' packed buffers (each [P]) -> [P], by `method` (see the module docstring)."""
    if method == "fedavg":
        return weighted_average(buffers, weights)
    if method == "median":
        strategy = FedMedian()
    elif method == "trimmed_mean":
        strategy = FedTrimmedAvg(beta=trim_fraction)
    else:
        raise ValueError(f"unknown aggregation {method!r}; choose one of {', '.join(AGGREGATIONS)}")
    replies = [_as_reply(buffer) for buffer in buffers]
    arrays, _ = strategy.aggregate_train(0, replies)
    if arrays is None:
        raise ValueError(f"{method}: Flower's strategy aggregated nothing from {len(buffers)} replies")
    return arrays[_KEY].numpy().astype(buffers[0].dtype, copy=False)


def server_step(start: np.ndarray, aggregated: np.ndarray, server_lr: float) -> np.ndarray:
    """The new global buffer [P]: `start + server_lr * (aggregated - start)`; `aggregated` itself at 1.0."""
    if server_lr == 1.0:
        return aggregated
    step = aggregated - start.astype(aggregated.dtype, copy=False)  # P
    step *= np.asarray(server_lr, dtype=step.dtype)
    step += start
    return step


def _as_reply(buffer: np.ndarray) -> Message:
    """A train reply as Flower's strategies read it: one ArrayRecord, one MetricRecord with the weight key."""
    content = RecordDict({"arrays": ArrayRecord({_KEY: Array(buffer)}), "metrics": MetricRecord({"num-examples": 1})})
    return Message(content, dst_node_id=0, message_type="train")
