"""Many members in one trio process on an in-memory network (virtual-time friendly)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

import trio

from config.topology import MembershipConfig, Node
from membership.core import Event, MembershipCore
from membership.service import MembershipService
from net.codec import Codec
from net.memory import MemoryNetwork
from net.messages import MemberRecord
from net.transport import MeteredTransport

SECRET = b"test-secret"


@dataclass
class SimMember:
    node: Node
    service: MembershipService
    transport: MeteredTransport
    scope: trio.CancelScope
    events: list[tuple[float, Event]] = field(default_factory=list)

    @property
    def core(self) -> MembershipCore:
        return self.service.core

    def view(self) -> set[str]:
        return {m.name for m in self.core.live_members()}


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
    ) -> None:
        self.nursery = nursery
        self.config = config or MembershipConfig()
        self.network = MemoryNetwork(loss=loss, delay=delay, seed=seed)
        self.nodes = [Node(f"H{i}", "10.0.0.1", 8000 + i) for i in range(1, n + 1)]
        self.ring = {node.name: i for i, node in enumerate(self.nodes)}
        self.rng = random.Random(seed)
        self.members: dict[str, SimMember] = {}

    async def start(self, node: Node, snapshot_from: str | None = None) -> SimMember:
        core = MembershipCore(node, self.config, self.ring, random.Random(self.rng.random()))
        transport = MeteredTransport(self.network.endpoint(node.address))
        codec = Codec(SECRET, self.config.max_datagram)
        service = MembershipService(core, transport, codec)
        scope = trio.CancelScope()
        member = SimMember(node, service, transport, scope)
        service.listeners.append(lambda e, now: member.events.append((now, e)))

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await service.run(task_status=task_status)

        await self.nursery.start(run)
        snapshot: tuple[MemberRecord, ...] = ()
        if snapshot_from is not None:
            snapshot = self.members[snapshot_from].core.snapshot()
        await service.join(snapshot)
        self.members[node.name] = member
        return member

    async def start_all(self, settle: float = 0.0) -> None:
        """Start every node, each joining through the previous one's view."""
        previous = None
        for node in self.nodes:
            await self.start(node, previous)
            previous = node.name
            await trio.sleep(settle)

    def crash(self, name: str) -> None:
        """kill -9: the member stops at once and its address goes silent."""
        member = self.members.pop(name)
        self.network.block(member.node.address)
        member.scope.cancel()
        member.transport.close()

    def restart_network(self, name: str) -> None:
        node = next(n for n in self.nodes if n.name == name)
        self.network.unblock(node.address)

    def live(self) -> list[SimMember]:
        return list(self.members.values())

    def converged(self, expected: set[str] | None = None) -> bool:
        expected = expected if expected is not None else set(self.members)
        return all(m.view() == expected for m in self.members.values())


def fast_config(**overrides: float | int) -> MembershipConfig:
    return dataclasses.replace(MembershipConfig(), **overrides)  # type: ignore[arg-type]
