"""The client's typed errors and its generic command, against a real node on 127.0.0.1.

The node (NodeApp in this process, as in tests/console) never joins: its introducer's
port is unused, so it answers node commands but is in no cluster.  Calls of the
blocking :class:`Client` run in a worker thread (each is its own trio.run).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from idunno import (
    AsyncClient,
    Client,
    ClusterError,
    Invalid,
    Refused,
    Unreachable,
    UsageError,
)
from tests.console.conftest import REPO, NodeFixture, cluster_toml, free_port, start_node

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
async def node(nursery: trio.Nursery, tmp_path: Path) -> NodeFixture:
    return await start_node(nursery, tmp_path)


async def test_command_runs_any_console_command_and_returns_its_reply(node: NodeFixture) -> None:
    client = AsyncClient(node.config_file, node.address, timeout=5)
    me = await client.command("list_self")
    assert (me["name"], me["port"], me["member"]) == ("H1", node.port, False)
    # A name from the cluster file is as good as HOST:PORT.
    by_name = AsyncClient(str(node.config_file), "H1")
    assert (await by_name.command("list_mem"))["self"] == "H1"
    assert (await by_name.command("help", "ls"))["help"].startswith("ls SDFSNAME")


@pytest.mark.parametrize(
    ("words", "error", "message"),
    [
        (("bogus",), UsageError, "unknown command 'bogus'; type 'help' for the list"),
        (("list_self", "x"), UsageError, "usage: list_self"),
        (("exit",), UsageError, "exit only means something in the interactive console"),
        (("C3", "resnet50", "0"), Invalid, "BATCH must be a whole number from 1 to 4096, got '0'"),
        (("leave",), Refused, "H1 is not a member; use 'join'"),
    ],
)
async def test_command_errors_are_typed_with_one_line_messages(
    node: NodeFixture, words: tuple[str, ...], error: type[ClusterError], message: str
) -> None:
    client = AsyncClient(node.config_file, node.address, timeout=5)
    with pytest.raises(error) as caught:
        await client.command(*words)
    assert str(caught.value) == message
    if error is not UsageError:
        assert not isinstance(caught.value, UsageError)


async def test_connecting_to_a_node_outside_the_cluster_is_unreachable(node: NodeFixture) -> None:
    with pytest.raises(Unreachable, match=rf"^cannot learn the members: {node.address} is not in"):
        await AsyncClient.connect(node.config_file, "H1")


async def test_bad_nodes_and_secrets(node: NodeFixture, tmp_path: Path) -> None:
    def connect(*args: object, **kwargs: object) -> Client:
        return Client.connect(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.raises(UsageError, match=r"^node: 'H9' is neither HOST:PORT nor a node of the"):
        await trio.to_thread.run_sync(connect, node.config_file, "H9")
    with pytest.raises(UsageError, match=r"^node: port 70000 is outside 1..65535$"):
        await trio.to_thread.run_sync(connect, node.config_file, "127.0.0.1:70000")
    closed = f"127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=rf"^cannot learn the members: cannot reach {closed}"):
        await trio.to_thread.run_sync(connect, node.config_file, closed)
    # Without a node: the file's nodes in turn (here its only one, not in a cluster).
    with pytest.raises(Unreachable, match="is not in the cluster"):
        await trio.to_thread.run_sync(connect, node.config_file)
    with pytest.raises(UsageError, match="cannot read cluster file"):
        Client(tmp_path / "missing.toml")
    with pytest.raises(UsageError, match="timeout: must be positive"):
        Client(node.config_file, timeout=0)

    other = tmp_path / "other.toml"
    other.write_text(cluster_toml(node.port, free_port(), secret="not-the-secret"))
    wrong = Client(other, node.address, timeout=3)
    with pytest.raises(Unreachable) as caught:
        await trio.to_thread.run_sync(wrong.command, "list_self")
    assert "\n" not in str(caught.value)


def test_a_forwarded_console_command_does_not_import_the_file_store_client() -> None:
    """python -m console, built on the client, stays cheap for scripts' loops: a
    command the node runs needs neither the SDFS client nor the inference client."""
    code = (
        "import sys, idunno.client, idunno\n"
        "heavy = ('sdfs.client', 'inference.client', 'membership.remote', 'torch')\n"
        "print('LOADED', [m for m in heavy if m in sys.modules], idunno.Client.__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "LOADED [] Client"
