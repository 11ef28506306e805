"""The in-process Grid: replies in message order, a handler's exception as an error reply (or raised), kept replies,
and a clear error from the parts of the Grid interface that need a SuperLink."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from benchmarks.support.inprocess_grid import InProcessGrid, node_context


def echo(msg: Message, context: Context) -> Message:
    return Message(RecordDict({"site": ConfigRecord({"name": context.node_config["site"]})}), reply_to=msg)


def broken(msg: Message, context: Context) -> Message:
    raise RuntimeError("disk full")


def message(node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type="train.pretrain")


def test_replies_follow_messages_and_exceptions_become_error_replies():
    grid = InProcessGrid({1: (echo, node_context(1, {"site": "a"})), 2: (broken, node_context(2, {"site": "b"}))},
                         keep_replies=True)  # fmt: skip
    assert grid.get_node_ids() == [1, 2]
    first, second = grid.send_and_receive([message(1), message(2)])
    assert first.content["site"]["name"] == "a" and not first.has_error()
    assert second.has_error() and "disk full" in second.error.reason
    assert [(site, kind) for site, kind, _ in grid.replies] == [("a", "train.pretrain"), ("b", "train.pretrain")]


def test_raise_errors_and_unsupported_grid_calls():
    grid = InProcessGrid({2: (broken, node_context(2, {"site": "b"}))}, raise_errors=True)
    with pytest.raises(RuntimeError, match="disk full"):
        grid.send_and_receive([message(2)])
    assert grid.replies == []
    with pytest.raises(TypeError, match="push/pull"):
        grid.push_messages([message(2)])
    with pytest.raises(TypeError, match="push/pull"):
        grid.pull_messages(["x"])
