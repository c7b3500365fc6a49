"""RpcCluster (tests/helpers/memrpc_cluster.py): whole nodes, membership and RPC, one process.

What service tests will lean on: every node's Peers reach every node, a crash stops a
node everywhere at once, and call_leader rides out the leader's crash exactly when
membership lets it.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from membership import peers as peers_module
from net.messages import ConsoleReply, ConsoleRequest
from net.rpc import RpcError
from net.transport import Address
from tests.helpers.memrpc_cluster import RpcCluster, RpcNode


@pytest.fixture(autouse=True)
def _quiet_membership_logs(caplog):
    caplog.set_level(logging.ERROR, logger="membership")


def answer_as(node: RpcNode) -> None:
    """Serve a handler that says which node answered, and to whom."""

    async def handler(request: Any, addr: Address) -> Any:
        return ConsoleReply(True, {"by": node.name, "to": list(addr)})

    node.serve(handler)


async def running(nursery: trio.Nursery, n: int, **kw: Any) -> RpcCluster:
    cluster = RpcCluster(nursery, n, **kw)
    await cluster.start_all()
    await cluster.wait_until(cluster.converged, timeout=60)
    for node in cluster.live():
        answer_as(node)
    return cluster


def back_off_from(start: float, until: float) -> list[float]:
    """When call_leader attempts, from ``start``, when each attempt fails at once."""
    times, t, delay = [start], start, peers_module.LEADER_RETRY_FIRST
    while t + delay < until:
        t += delay
        times.append(t)
        delay = min(delay * 2, peers_module.LEADER_RETRY_MAX)
    return times


async def test_every_node_reaches_every_node_and_agrees_on_the_leader(nursery, autojump_clock):
    cluster = await running(nursery, 5, delay=0.25)
    assert {node.peers.leader() for node in cluster.live()} == {"H1"}
    h4 = cluster.node("H4")
    start = trio.current_time()
    reply = await h4.peers.call_leader(ConsoleRequest("who"))
    assert reply.data == {"by": "H1", "to": ["10.0.0.1", 8004]}
    assert trio.current_time() - start == 0.5
    # A call to itself is answered in-process: no delay, no network.
    served = sum(cluster.rpc.served.values())
    assert (await h4.peers.call("H4", ConsoleRequest("me"))).data["by"] == "H4"
    assert trio.current_time() - start == 0.5
    assert sum(cluster.rpc.served.values()) == served


async def test_a_node_serves_nothing_until_told(nursery, autojump_clock):
    cluster = RpcCluster(nursery, 2)
    await cluster.start_all()
    await cluster.wait_until(cluster.converged, timeout=60)
    with pytest.raises(RpcError, match="Connection refused"):
        await cluster.node("H1").peers.call("H2", ConsoleRequest("x"))


async def test_a_crash_stops_the_node_everywhere_and_call_leader_follows_the_new_leader(
    nursery, autojump_clock
):
    cluster = await running(nursery, 5)
    ticks: list[float] = []

    async def background() -> None:  # a service's loop on H1
        while True:
            ticks.append(trio.current_time())
            await trio.sleep(1)

    cluster.node("H1").nursery.start_soon(background)
    await trio.sleep(2.5)
    t_crash = trio.current_time()
    cluster.crash("H1")
    reply = await cluster.node("H3").peers.call_leader(ConsoleRequest("who"))
    t_reply = trio.current_time()

    # H1's loop stopped with it.
    assert ticks[-1] < t_crash
    # H3 was refused at once on every attempt until its membership removed H1; the
    # first attempt after that went to H2, the new leader.
    removed = next(t for t, who, _ in cluster.sim.events("failed", "H1") if who == "H3")
    expected = next(t for t in back_off_from(t_crash, t_crash + 30) if t >= removed)
    assert reply.data["by"] == "H2"
    assert t_reply == pytest.approx(expected, abs=1e-9)
    assert removed - t_crash <= cluster.config.membership.ping_duration + (
        cluster.config.membership.ping_timeout + cluster.config.membership.cleanup_time
    )
    assert cluster.rpc.failures["refused"] == len(
        [t for t in back_off_from(t_crash, t_crash + 30) if t < expected]
    )


async def test_an_isolated_node_is_cut_off_in_membership_and_rpc(nursery, autojump_clock):
    cluster = await running(nursery, 5)
    cluster.isolate("H5")
    h1, h5 = cluster.node("H1"), cluster.node("H5")
    start = trio.current_time()
    with pytest.raises(RpcError, match=r"^10\.0\.0\.1:8005 did not answer within 2 s$"):
        await h1.peers.call("H5", ConsoleRequest("x"), timeout=2.0)
    assert trio.current_time() - start == 2.0

    # Both sides drop each other: the majority keeps H1, H5 is alone and leads itself.
    await cluster.wait_until(lambda: h1.peers.ring() == ["H1", "H2", "H3", "H4"], timeout=30)
    await cluster.wait_until(lambda: h5.peers.ring() == ["H5"], timeout=30)
    assert h5.peers.leader() == "H5"
    assert (await h5.peers.call_leader(ConsoleRequest("who"))).data["by"] == "H5"

    cluster.heal()
    assert (await h1.peers.call("H5", ConsoleRequest("x"))).data["by"] == "H5"


async def test_a_restarted_node_serves_again_when_told(nursery, autojump_clock):
    cluster = await running(nursery, 3)
    cluster.crash("H2")
    await cluster.wait_until(lambda: "H2" not in cluster.node("H1").peers.ring(), timeout=30)
    h2 = await cluster.restart("H2", via="H1")
    with pytest.raises(RpcError, match="Connection refused"):
        await cluster.node("H1").peers.call("H2", ConsoleRequest("x"))
    answer_as(h2)
    await cluster.wait_until(cluster.converged, timeout=30)
    assert (await cluster.node("H1").peers.call("H2", ConsoleRequest("x"))).data["by"] == "H2"
