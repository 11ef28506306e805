"""A Grid that collects replies as soon as they arrive.

Flower's `Grid.send_and_receive` sleeps 3 s between pulls, so every exchange waits 1.5 s on average after the
last reply is in (twice a round: training and evaluation). `PollingGrid` delegates everything to the real grid
and only replaces that loop with one that pulls every `interval` seconds (a cheap request to the SuperLink when
nothing is ready)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class PollingGrid(Grid):
    """`grid` with `send_and_receive` pulling every `interval` seconds."""

    def __init__(self, grid: Grid, interval: float = 0.2) -> None:
        self.grid, self.interval = grid, interval

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, *args, **kwargs) -> Message:  # Flower's own signature
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push `messages`, then pull replies every `interval` s until all are in or `timeout` s have passed."""
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            got = list(self.pull_messages(waiting))
            replies += got
            waiting -= {msg.metadata.reply_to_message_id for msg in got}
            if not waiting:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            time.sleep(self.interval if remaining is None else min(self.interval, remaining))
        return replies
