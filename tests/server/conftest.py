"""Hand-made Flower messages for strategy tests: a Grid that calls plain Python "sites" in-process (no network)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from benchmarks.support.inprocess_grid import InProcessGrid
from cccmr_model.wire import encode

# A site: (message) -> reply content, or an Exception to send an error reply, or None to stay silent (timeout).
Site = Callable[[Message], RecordDict | Exception | None]


class FakeGrid(InProcessGrid):
    """Delivers each message to `sites[dst_node_id]` and returns their replies in node order."""

    def __init__(self, sites: dict[int, Site]) -> None:
        super().__init__({})
        self.sites = sites
        self.sent: list[Message] = []

    def get_node_ids(self) -> Iterable[int]:
        return list(self.sites)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            self.sent.append(msg)
            out = self.sites[msg.metadata.dst_node_id](msg)
            if out is None:
                continue
            if isinstance(out, Exception):
                replies.append(Message(Error(code=0, reason=f"ClientAppException: {out}"), reply_to=msg))
            else:
                replies.append(Message(out, reply_to=msg))
        return replies


def train_reply(site: str, arrays: dict[str, np.ndarray], num_examples: int, **metrics: float) -> RecordDict:
    return RecordDict(
        {
            "arrays": ArrayRecord(encode(arrays)),
            "metrics": MetricRecord({"num-examples": num_examples, **metrics}),
            "site": ConfigRecord({"name": site}),
        }
    )


def eval_reply(site: str, confusion: list[int], loss: float, **extra) -> RecordDict:
    n = int(sum(confusion))
    return RecordDict(
        {
            "metrics": MetricRecord({"num-examples": n, "loss": loss, "confusion": confusion, **extra}),
            "site": ConfigRecord({"name": site}),
        }
    )


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Messages need a run and node identity; the SuperLink sets it in a real ServerApp process."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


class Kit:
    """What strategy tests build messages with."""

    FakeGrid = FakeGrid
    train_reply = staticmethod(train_reply)
    eval_reply = staticmethod(eval_reply)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
