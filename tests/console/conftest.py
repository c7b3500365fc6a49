"""Fixtures for the console tests: free loopback ports, cluster files, a live node."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from config.topology import ClusterConfig, Node
from node.app import NodeApp

REPO = Path(__file__).resolve().parents[2]
SECRET = "console-test-secret"


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (a node binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free port on 127.0.0.1")


def cluster_toml(node_port: int, introducer_port: int, secret: str = SECRET) -> str:
    return (
        "[cluster]\n"
        f'introducer = "127.0.0.1:{introducer_port}"\n'
        f'secret = "{secret}"\n'
        "\n[[nodes]]\n"
        'name = "H1"\n'
        'host = "127.0.0.1"\n'
        f"port = {node_port}\n"
    )


class NodeFixture:
    def __init__(self, app: NodeApp, config_file: Path) -> None:
        self.app = app
        self.config_file = config_file

    @property
    def port(self) -> int:
        return self.app.me.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def argv(self, *command: str, json: bool = False) -> list[str]:
        """Arguments for console.__main__.main() against this node."""
        opts = ["--node", self.address, "--config", str(self.config_file), "--timeout", "5"]
        return [*opts, *(["--json"] if json else []), *command]

    def subprocess_argv(self, *command: str, json: bool = False) -> list[str]:
        return [sys.executable, "-m", "console", *self.argv(*command, json=json)]


async def start_node(
    nursery: trio.Nursery, tmp_path: Path, *, test_mode: bool = False
) -> NodeFixture:
    """H1 on a free loopback port; its introducer's port is unused, so it never joins."""
    port, introducer = free_port(), free_port()
    config = ClusterConfig(
        nodes=(Node("H1", "127.0.0.1", port),),
        introducer=("127.0.0.1", introducer),
        secret=SECRET,
    )
    config_file = tmp_path / "cluster.toml"
    config_file.write_text(cluster_toml(port, introducer))
    app = NodeApp(config, config.nodes[0], tmp_path / "H1", test_mode=test_mode, drop_rate=0.0)
    await nursery.start(app.run)
    return NodeFixture(app, config_file)


@pytest.fixture
async def node(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[NodeFixture]:
    yield await start_node(nursery, tmp_path)


@pytest.fixture
async def test_mode_node(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[NodeFixture]:
    yield await start_node(nursery, tmp_path, test_mode=True)
