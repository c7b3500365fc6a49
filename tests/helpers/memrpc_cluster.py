"""Whole nodes in one trio process: membership and RPC on in-memory networks, virtual time.

:class:`RpcCluster` is :class:`tests.helpers.memcluster.SimCluster` (real
MembershipServices on a MemoryNetwork) plus a :class:`net.memrpc.MemoryRpc` on which
each node serves one handler and reaches the others through its own
:class:`membership.peers.Peers`.  Faults hit both networks at once, along the same
addresses: :meth:`RpcCluster.crash` is kill -9 of a whole node (membership, RPC, and
every task started on it), :meth:`RpcCluster.partition` cuts datagrams and calls
along the same line.  Run it under ``MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock``).

A service test builds its service on each node from what the node offers::

    cluster = RpcCluster(nursery, 5)
    await cluster.start_all()
    await cluster.wait_until(cluster.converged, timeout=60)
    for node in cluster.live():
        service = SomeService(..., peers=node.peers, blocking=cluster.blocking)
        node.serve(service.handle)                 # what calls to this node reach
        node.nursery.start_soon(service.run)       # stops when the node crashes

``node.peers`` answers calls to the node itself with whatever ``serve`` installed,
so a service may also build its own Peers from ``node.core``, ``cluster.config``,
``node.frames`` and ``node.caller``.  Until ``serve``, calls from other nodes are
refused, as a node whose service has not started yet refuses them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from config.topology import ClusterConfig, MembershipConfig
from membership.core import MembershipCore
from membership.peers import Peers
from net.blocking import InlineRunner
from net.codec import Codec
from net.memrpc import Caller, MemoryRpc
from net.rpc import Handler, frame_codec
from net.transport import Address
from tests.helpers.memcluster import SECRET, SimCluster, SimMember


@dataclass(eq=False)
class RpcNode:
    """One running node: its membership member, its RPC endpoint and its tasks."""

    member: SimMember
    config: ClusterConfig
    rpc: MemoryRpc
    frames: Codec
    caller: Caller
    # The node's own tasks (services' loops); cancelled when the node crashes.
    nursery: trio.Nursery
    scope: trio.CancelScope
    handler: Handler | None = None
    peers: Peers = field(init=False)

    def __post_init__(self) -> None:
        self.peers = Peers(self.core, self.config, self.frames, self.handle, self.caller)

    @property
    def name(self) -> str:
        return self.member.node.name

    @property
    def address(self) -> Address:
        return self.member.node.address

    @property
    def core(self) -> MembershipCore:
        return self.member.core

    def serve(self, handler: Handler) -> None:
        """Answer requests with ``handler``, from other nodes and from this one."""
        self.handler = handler
        self.rpc.serve(self.address, self.frames, handler)

    async def handle(self, request: Any, addr: Address) -> Any:
        """The local handler Peers uses for requests to this node itself."""
        if self.handler is None:
            raise RuntimeError(f"{self.name} serves nothing yet")
        return await self.handler(request, addr)


class RpcCluster:
    """Nodes H1..Hn (10.0.0.1:8001...) with membership, RPC and Peers each."""

    def __init__(
        self,
        nursery: trio.Nursery,
        n: int,
        membership: MembershipConfig | None = None,
        delay: float = 0.0,
        drop: float = 0.0,
        seed: int = 1,
        trace: bool = False,
    ) -> None:
        self.nursery = nursery
        # trace keeps every datagram for sim.sent() (when did whom ping whom).
        self.sim = SimCluster(nursery, n, config=membership, seed=seed, trace=trace)
        # RPC faults (delay, drop) are the RPC network's; datagrams keep SimCluster's
        # zero-delay, lossless network unless the test sets sim.network's own.
        self.rpc = MemoryRpc(nursery, delay=delay, drop=drop, seed=seed)
        self.config = ClusterConfig(
            nodes=tuple(self.sim.nodes), secret=SECRET.decode(), membership=self.sim.config
        )
        # File work on virtual time: inline, no thread hops (see net.blocking).
        self.blocking = InlineRunner()
        self.nodes: dict[str, RpcNode] = {}

    # --- building -------------------------------------------------------------------------

    async def start_all(self, settle: float = 0.0) -> None:
        """Start every node; each joins as through the introducer (SimCluster.start_all)."""
        await self.sim.start_all(settle)
        for member in self.sim.live():
            await self._attach(member)

    async def restart(self, name: str, via: str) -> RpcNode:
        """A fresh process for a crashed node, joining with ``via``'s view; it serves
        nothing until the test calls ``serve`` again."""
        return await self._attach(await self.sim.restart(name, via))

    async def _attach(self, member: SimMember) -> RpcNode:
        scope = trio.CancelScope()
        node_nursery: trio.Nursery = await self.nursery.start(_node_tasks, scope)
        node = RpcNode(
            member,
            self.config,
            self.rpc,
            frame_codec(self.config.secret_bytes),
            self.rpc.caller(member.node.address),
            node_nursery,
            scope,
        )
        self.nodes[node.name] = node
        return node

    # --- faults ---------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        """kill -9: membership stops and goes silent, RPC refuses, the node's tasks end."""
        node = self.nodes.pop(name)
        self.sim.crash(name)
        if self.rpc.serving(node.address):
            self.rpc.crash(node.address)
        node.scope.cancel()

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut datagrams and calls between groups of node names (see net.memory.Partition)."""
        by_address = [[self.sim.node(name).address for name in group] for group in groups]
        self.sim.network.partition(*by_address)
        self.rpc.partition(*by_address)

    def isolate(self, name: str) -> None:
        """Cut ``name`` off from every other node (clients outside still reach it)."""
        self.partition([name], [n.name for n in self.sim.nodes if n.name != name])

    def heal(self) -> None:
        self.sim.network.heal()
        self.rpc.heal()

    # --- looking --------------------------------------------------------------------------

    def node(self, name: str) -> RpcNode:
        return self.nodes[name]

    def live(self) -> list[RpcNode]:
        return list(self.nodes.values())

    def converged(self) -> bool:
        return self.sim.converged()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> float:
        """The virtual time ``predicate`` became true (polled; see SimCluster.wait_until)."""
        return await self.sim.wait_until(predicate, timeout)


async def _node_tasks(
    scope: trio.CancelScope, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
) -> None:
    """Hold a nursery for one node's tasks until the node crashes (``scope`` cancelled)."""
    with scope:
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()
