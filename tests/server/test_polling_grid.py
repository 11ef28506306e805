"""PollingGrid: replies are collected as they arrive (not on Flower's 3 s beat), and the timeout still holds."""

from __future__ import annotations

import time
from types import SimpleNamespace

from server.polling_grid import PollingGrid


class FakeGrid:
    """Replies to message i become available `ready_after[i]` seconds after the push."""

    def __init__(self, ready_after: list[float]) -> None:
        self.ready_after, self.pushed_at, self.pulls = ready_after, 0.0, 0

    def push_messages(self, messages):
        self.pushed_at = time.monotonic()
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids):
        self.pulls += 1
        now = time.monotonic() - self.pushed_at
        ready = [i for i, t in enumerate(self.ready_after) if t <= now and f"m{i}" in set(message_ids)]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=f"m{i}")) for i in ready]


def test_replies_are_collected_soon_after_they_arrive():
    fake = FakeGrid([0.1, 0.5])
    start = time.monotonic()
    replies = PollingGrid(fake, interval=0.05).send_and_receive(["a", "b"], timeout=10)
    elapsed = time.monotonic() - start
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1"]
    assert elapsed < 1.0  # Flower's own loop would have slept 3 s after the first pull
    assert fake.pulls >= 3


def test_timeout_returns_the_replies_in_so_far():
    fake = FakeGrid([0.0, 60.0])
    start = time.monotonic()
    replies = PollingGrid(fake, interval=0.05).send_and_receive(["a", "b"], timeout=0.3)
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 0.25 < time.monotonic() - start < 1.5


def test_other_calls_go_to_the_wrapped_grid():
    inner = SimpleNamespace(get_node_ids=lambda: [3, 4], run="run-7")
    grid = PollingGrid(inner)
    assert list(grid.get_node_ids()) == [3, 4]
    assert grid.run == "run-7"
