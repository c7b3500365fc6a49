"""The node's console conversation answers one line, whatever goes wrong in a command."""

from __future__ import annotations

from typing import Any

import pytest

from config.topology import default_config
from net.messages import ConsoleReply, ConsoleRequest
from node import commands
from node.app import NodeApp


class SilentConnection:
    """Stands in for the stream: progress frames go nowhere."""

    async def send(self, msg: Any) -> None:
        pass


@pytest.fixture
def node(tmp_path) -> NodeApp:
    config = default_config()
    return NodeApp(config, config.nodes[0], tmp_path)


async def test_a_command_that_raises_answers_one_line(node, monkeypatch):
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the handler broke\nwith a second line")

    monkeypatch.setattr(commands, "run", broken)
    reply = await node._console_request(ConsoleRequest("list_self"), SilentConnection())
    assert reply == ConsoleReply(
        False, {}, "internal error: RuntimeError: the handler broke with a second line"
    )


@pytest.mark.parametrize(
    ("command", "args"),
    [("", ()), ("\x1b[2J", ()), ("x" * 100_000, ()), ("list_self", ("\x00",) * 1000)],
    ids=["empty", "escape", "long", "many-args"],
)
async def test_bad_console_requests_answer_one_line(node, command, args):
    reply = await node._console_request(ConsoleRequest(command, args), SilentConnection())
    assert isinstance(reply, ConsoleReply) and not reply.ok
    assert "\n" not in reply.error and reply.error
