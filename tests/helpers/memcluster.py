"""Many members in one trio process on an in-memory network (virtual-time friendly).

Run it under ``trio.testing.MockClock(autojump_threshold=0)`` (pytest-trio's
``autojump_clock`` fixture): the clock jumps straight to the next timer whenever
every task is blocked, so a minute of protocol takes milliseconds and every event
is stamped with the exact virtual time at which it happened.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from config.topology import MembershipConfig, Node
from membership.core import Event, MembershipCore
from membership.service import MembershipService
from net.codec import DatagramCodec
from net.memory import MemoryNetwork
from net.messages import MemberRecord
from net.transport import Address, DatagramTransport, MeteredTransport

SECRET = b"test-secret"


@dataclass(frozen=True)
class Sent:
    """One datagram a member handed to its transport, decoded again for tests."""

    time: float
    src: str
    dst: str
    message: Any


class TracingTransport:
    """Passes everything through to ``inner`` and notes each send (time, to, bytes)."""

    def __init__(self, inner: DatagramTransport, log: list[tuple[float, Address, bytes]]):
        self.inner = inner
        self.log = log

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    async def send(self, data: bytes, addr: Address) -> None:
        self.log.append((trio.current_time(), addr, data))
        await self.inner.send(data, addr)

    async def receive(self) -> tuple[bytes, Address]:
        return await self.inner.receive()

    def close(self) -> None:
        self.inner.close()


@dataclass
class SimMember:
    node: Node
    service: MembershipService
    transport: MeteredTransport
    scope: trio.CancelScope
    events: list[tuple[float, Event]] = field(default_factory=list)
    sent: list[tuple[float, Address, bytes]] = field(default_factory=list)

    @property
    def core(self) -> MembershipCore:
        return self.service.core

    def view(self) -> set[str]:
        return {m.name for m in self.core.live_members()}

    def events_of(self, kind: str, name: str | None = None) -> list[tuple[float, Event]]:
        return [(t, e) for t, e in self.events if e.kind == kind and name in (None, e.name)]


class SimCluster:
    """Builds members on one MemoryNetwork; every member runs the real trio shell."""

    def __init__(
        self,
        nursery: trio.Nursery,
        n: int,
        config: MembershipConfig | None = None,
        loss: float = 0.0,
        delay: float = 0.0,
        seed: int = 1,
        drop_rate: float = 0.0,
        trace: bool = False,
    ) -> None:
        self.nursery = nursery
        self.config = config or MembershipConfig()
        self.network = MemoryNetwork(loss=loss, delay=delay, seed=seed)
        # Test mode (-t): each member's own transport drops in and out at random.
        self.drop_rate = drop_rate
        # Keep every datagram sent, for sent(); off by default (benchmarks run long).
        self.trace = trace
        self.nodes = [Node(f"H{i}", "10.0.0.1", 8000 + i) for i in range(1, n + 1)]
        self.ring = {node.name: i for i, node in enumerate(self.nodes)}
        self.rng = random.Random(seed)
        self.members: dict[str, SimMember] = {}
        # Every member that ever ran, crashed ones included (their events stay here).
        self.history: list[SimMember] = []
        self._names = {node.address: node.name for node in self.nodes}

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    async def start(
        self,
        node: Node,
        snapshot_from: str | None = None,
        snapshot: Iterable[MemberRecord] | None = None,
    ) -> SimMember:
        core = MembershipCore(node, self.config, self.ring, random.Random(self.rng.random()))
        log: list[tuple[float, Address, bytes]] = []
        inner: DatagramTransport = self.network.endpoint(node.address)
        if self.trace:
            inner = TracingTransport(inner, log)
        drops = random.Random(self.rng.random()) if self.drop_rate else None
        transport = MeteredTransport(inner, self.drop_rate, drops)
        # Freshness on the cluster's virtual clock (all members share it).
        codec = DatagramCodec(SECRET, self.config.max_datagram, clock=trio.current_time)
        service = MembershipService(core, transport, codec)
        scope = trio.CancelScope()
        member = SimMember(node, service, transport, scope, sent=log)
        self.history.append(member)
        service.listeners.append(lambda e, now: member.events.append((now, e)))

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await service.run(task_status=task_status)

        await self.nursery.start(run)
        if snapshot is None:
            snapshot = () if snapshot_from is None else self.members[snapshot_from].core.snapshot()
        await service.join(snapshot)
        self.members[node.name] = member
        return member

    async def start_all(self, settle: float = 0.0) -> None:
        """Start every node, each joining with the view the introducer would give it.

        Like ``introducer.service.Introducer``, the view is the previous member's
        snapshot plus every member admitted so far (their own announcements may
        not have reached that member yet).
        """
        previous: str | None = None
        for node in self.nodes:
            view = {r.name: r for r in self.introducer_snapshot(previous)}
            await self.start(node, snapshot=view.values())
            previous = node.name
            await trio.sleep(settle)

    def introducer_snapshot(self, source: str | None) -> list[MemberRecord]:
        """``source``'s view plus a record for every running member it lacks."""
        records = (
            {} if source is None else {r.name: r for r in self.members[source].core.snapshot()}
        )
        for name, m in self.members.items():
            if name not in records:
                records[name] = MemberRecord(name, m.node.host, m.node.port, m.core.incarnation, 0)
        return list(records.values())

    def crash(self, name: str) -> None:
        """kill -9: the member stops at once and its address goes silent."""
        member = self.members.pop(name)
        self.network.block(member.node.address)
        member.scope.cancel()
        member.transport.close()

    def restart_network(self, name: str) -> None:
        self.network.unblock(self.node(name).address)

    async def restart(self, name: str, snapshot_from: str) -> SimMember:
        """A fresh process (incarnation 0) for a crashed member, joining via a view."""
        self.restart_network(name)
        return await self.start(self.node(name), snapshot_from)

    def live(self) -> list[SimMember]:
        return list(self.members.values())

    def converged(self, expected: set[str] | None = None) -> bool:
        expected = expected if expected is not None else set(self.members)
        return all(m.view() == expected for m in self.members.values())

    def events(self, kind: str, name: str | None = None) -> list[tuple[float, str, Event]]:
        """Every event of ``kind`` (about ``name``) seen by any member, in time order."""
        found = [
            (t, m.node.name, e)
            for m in self.history
            for t, e in m.events
            if e.kind == kind and name in (None, e.name)
        ]
        return sorted(found, key=lambda x: x[0])

    def sent(
        self,
        kind: type[Any] | None = None,
        src: str | None = None,
        dst: str | None = None,
        since: float = -math.inf,
    ) -> list[Sent]:
        """Datagrams members handed to their transports (before any loss), decoded."""
        if not self.trace:
            raise RuntimeError("SimCluster(trace=True) keeps the datagrams sent()")
        found = []
        for m in self.history:
            if src is not None and m.node.name != src:
                continue
            for t, addr, data in m.sent:
                to = self._names.get(addr, f"{addr[0]}:{addr[1]}")
                if t < since or (dst is not None and to != dst):
                    continue
                # A reader of its own: the trace is read many times, replays and all.
                msg = DatagramCodec(
                    SECRET, self.config.max_datagram, window=math.inf, clock=lambda: 0.0
                ).open(data)
                if kind is None or isinstance(msg, kind):
                    found.append(Sent(t, m.node.name, to, msg))
        return sorted(found, key=lambda s: s.time)

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float, step: float = 0.05
    ) -> float:
        """Poll ``predicate`` every ``step`` virtual seconds; the time it became true.

        Polling is deliberate: the predicate reads many members' state, no single
        event announces it, and on the MockClock a poll costs no real time.
        """
        with trio.move_on_after(timeout):
            while not predicate():  # noqa: ASYNC110
                await trio.sleep(step)
            return trio.current_time()
        raise AssertionError(f"condition not met within {timeout} virtual seconds")


def fast_config(**overrides: float | int) -> MembershipConfig:
    return dataclasses.replace(MembershipConfig(), **overrides)  # type: ignore[arg-type]
