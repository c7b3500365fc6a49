"""An in-process datagram network for tests and the detection benchmark.

Dozens of members run in one trio process (usually on ``MockClock`` virtual time)
and talk through :class:`MemoryTransport` endpoints of one :class:`MemoryNetwork`.
The network drops datagrams with probability ``loss`` and delivers the rest after
``delay`` seconds; ``partition`` and ``crash`` cut members off.  Nothing here is
used by a real node.
"""

from __future__ import annotations

import math
import random

import trio

from net.transport import Address


class MemoryNetwork:
    def __init__(self, loss: float = 0.0, delay: float = 0.0, seed: int | None = None) -> None:
        self.loss = loss
        self.delay = delay
        self.rng = random.Random(seed)
        self._endpoints: dict[Address, MemoryTransport] = {}
        self._blocked: set[Address] = set()
        self.delivered = 0
        self.lost = 0

    def endpoint(self, addr: Address) -> MemoryTransport:
        if addr in self._endpoints and not self._endpoints[addr].closed:
            raise OSError(f"address {addr} is in use")
        ep = MemoryTransport(self, addr)
        self._endpoints[addr] = ep
        return ep

    def block(self, addr: Address) -> None:
        """Silently drop everything to and from ``addr`` (a crash or partition)."""
        self._blocked.add(addr)

    def unblock(self, addr: Address) -> None:
        self._blocked.discard(addr)

    def _deliver(self, data: bytes, src: Address, dst: Address) -> None:
        if src in self._blocked or dst in self._blocked:
            self.lost += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return
        ep = self._endpoints.get(dst)
        if ep is None or ep.closed:
            self.lost += 1
            return
        self.delivered += 1
        try:
            ep._inbox_send.send_nowait((data, src))
        except trio.WouldBlock:
            self.lost += 1  # a full socket buffer drops, as UDP does


class MemoryTransport:
    """One member's endpoint on a :class:`MemoryNetwork`."""

    def __init__(self, network: MemoryNetwork, addr: Address) -> None:
        self._network = network
        self._address = addr
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[bytes, Address]](1024)
        self.closed = False
        self._delayed: list[tuple[float, bytes, Address]] = []

    @property
    def local_address(self) -> Address:
        return self._address

    async def send(self, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        if self._network.delay:
            # Deliver later without a task per datagram: the receiver's inbox is fed
            # by a system task that sleeps until the due time.
            due = trio.current_time() + self._network.delay
            trio.lowlevel.spawn_system_task(self._later, due, data, addr)
        else:
            self._network._deliver(data, self._address, addr)

    async def _later(self, due: float, data: bytes, addr: Address) -> None:
        await trio.sleep_until(due)
        self._network._deliver(data, self._address, addr)

    async def receive(self) -> tuple[bytes, Address]:
        try:
            return await self._inbox_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            await trio.sleep(math.inf)
            raise  # unreachable

    def close(self) -> None:
        self.closed = True
        self._inbox_send.close()
