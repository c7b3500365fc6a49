"""An in-process datagram network for tests and the detection benchmark.

Dozens of members run in one trio process (usually on ``MockClock`` virtual time)
and talk through :class:`MemoryTransport` endpoints of one :class:`MemoryNetwork`.
The network drops datagrams with probability ``loss`` and delivers the rest after
``delay`` seconds; ``block`` (a crash) and ``partition`` cut members off, silently;
``fail_sends`` makes the local stack refuse sends instead, as a real socket does
with EINVAL for a blackhole route or ENETUNREACH when its own link is down (the
endpoint counts and drops them, as :class:`~net.transport.UdpTransport` does).  Nothing
here is used by a real node.  :mod:`net.memrpc` is the request/response twin, and
shares :class:`Partition` so one test can cut both at once.
"""

from __future__ import annotations

import errno
import math
import os
import random
from collections.abc import Iterable

import trio

from net.transport import Address, SendErrors


class Partition:
    """Which addresses can reach which: groups that cannot talk across their cut.

    An address listed in a group reaches only the addresses of its own group and those
    listed in none; an address listed in none (a client outside the cluster, say) is
    untouched.  To isolate one member, list it alone and the rest in a second group.
    """

    def __init__(self) -> None:
        self._group: dict[Address, int] = {}

    def split(self, groups: Iterable[Iterable[Address]]) -> None:
        """Replace any earlier partition with ``groups``."""
        self._group = {}
        for i, group in enumerate(groups):
            for addr in group:
                if addr in self._group:
                    raise ValueError(f"{addr} is in two groups")
                self._group[addr] = i

    def heal(self) -> None:
        self._group = {}

    def cut(self, a: Address, b: Address) -> bool:
        """Whether ``a`` and ``b`` are on different sides."""
        ga, gb = self._group.get(a), self._group.get(b)
        return ga is not None and gb is not None and ga != gb


class MemoryNetwork:
    def __init__(self, loss: float = 0.0, delay: float = 0.0, seed: int | None = None) -> None:
        self.loss = loss
        self.delay = delay
        self.rng = random.Random(seed)
        self._endpoints: dict[Address, MemoryTransport] = {}
        self._blocked: set[Address] = set()
        self._partition = Partition()
        # src -> (errno, destinations it applies to; None = every destination)
        self._send_faults: dict[Address, tuple[int, frozenset[Address] | None]] = {}
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

    def partition(self, *groups: Iterable[Address]) -> None:
        """Drop datagrams between different groups (see :class:`Partition`) until ``heal``."""
        self._partition.split(groups)

    def heal(self) -> None:
        self._partition.heal()

    def fail_sends(
        self, src: Address, code: int = errno.EINVAL, to: Iterable[Address] | None = None
    ) -> None:
        """Make every send from ``src`` (to ``to`` only, if given) fail with ``code``.

        EINVAL is what a blackhole route gives, ENETUNREACH what a member whose own
        link is down gets.  Replaces any earlier fault of ``src``.
        """
        self._send_faults[src] = (code, None if to is None else frozenset(to))

    def restore_sends(self, src: Address | None = None) -> None:
        """Undo :meth:`fail_sends` for ``src`` (every address if None)."""
        if src is None:
            self._send_faults.clear()
        else:
            self._send_faults.pop(src, None)

    def _send_error(self, src: Address, dst: Address) -> OSError | None:
        fault = self._send_faults.get(src)
        if fault is None or (fault[1] is not None and dst not in fault[1]):
            return None
        return OSError(fault[0], os.strerror(fault[0]))

    def _deliver(self, data: bytes, src: Address, dst: Address) -> None:
        # Checked on arrival: a datagram in flight when the cut happens is lost.
        if src in self._blocked or dst in self._blocked or self._partition.cut(src, dst):
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
        self.send_errors = SendErrors(f"memory {addr[0]}:{addr[1]}")

    @property
    def local_address(self) -> Address:
        return self._address

    async def send(self, data: bytes, addr: Address) -> None:
        if self.closed:
            return
        err = self._network._send_error(self._address, addr)
        if err is not None:
            self.send_errors.record(err, addr)
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
