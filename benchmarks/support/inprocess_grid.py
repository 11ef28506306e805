"""A Flower Grid without a network: each message goes straight to a ClientApp (or one of its handlers) in this
process, with the node's Context, and the reply comes back as a SuperNode would send it. Runs the real strategy
and ClientApp code in one process for benchmarks and tests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid

# A node: `ClientApp` object or handler, called with (message, context), returning the reply message.
Handler = Callable[[Message, Context], Message]


def node_context(node_id: int, node_config: Mapping[str, Any], run_config: Mapping[str, Any] | None = None) -> Context:
    """The Context a SuperNode gives its ClientApp: run 1, the node's id and config, empty state."""
    return Context(run_id=1, node_id=node_id, node_config=dict(node_config), state=RecordDict(),
                   run_config=dict(run_config or {}))  # fmt: skip


class InProcessGrid(Grid):
    """Delivers each message to `nodes[dst_node_id] = (handler, context)` and returns the replies in message order.

    An exception raised by a handler becomes an error reply, as the SuperNode sends it, unless `raise_errors`.
    With `keep_replies`, every (site, message type, reply) is kept in `replies` (site from node_config["site"]).
    """

    def __init__(
        self, nodes: Mapping[int, tuple[Handler, Context]], *, raise_errors: bool = False, keep_replies: bool = False
    ) -> None:
        self.nodes = dict(nodes)
        self.raise_errors = raise_errors
        self.keep_replies = keep_replies
        self.replies: list[tuple[str, str, Message]] = []

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        out = []
        for msg in messages:
            handler, context = self.nodes[msg.metadata.dst_node_id]
            try:
                reply = handler(msg, context)
            except Exception as exc:  # the SuperNode turns an exception into an error reply
                if self.raise_errors:
                    raise
                reply = Message(Error(code=0, reason=repr(exc)), reply_to=msg)
            if self.keep_replies:
                self.replies.append((str(context.node_config.get("site", "")), msg.metadata.message_type, reply))
            out.append(reply)
        return out

    # The rest of the Grid interface serves a SuperLink connection, which an in-process grid does not have.
    def set_run(self, run_id: int) -> None:
        """Nothing to bind: there is no SuperLink run."""

    @property
    def run(self):
        raise TypeError("InProcessGrid has no SuperLink run; strategies only call get_node_ids and send_and_receive")

    def create_message(self, *args: object, **kwargs: object) -> Message:
        raise TypeError("InProcessGrid does not create messages; build Message(...) directly")

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise TypeError("InProcessGrid delivers messages directly; push/pull are not used")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise TypeError("InProcessGrid delivers messages directly; push/pull are not used")
