"""Datagram transports: the narrow interface membership talks through.

``DatagramTransport`` is all the failure detector needs: send bytes to an address,
receive the next datagram.  Three implementations compose:

* :class:`UdpTransport` - a real trio UDP socket;
* :class:`net.memory.MemoryTransport` - an in-process network for tests and the
  benchmark, with loss and delay;
* :class:`MeteredTransport` - wraps either, drops datagrams at random in both
  directions (test mode ``-t``), and counts bytes for ``bps``.

A send never raises: a datagram that the local stack refuses (EINVAL for a
blackhole route, ENETUNREACH when our own link is down, EPERM, ENOBUFS, ...) is a
datagram the network lost, and the failure detector already treats a peer that
stays silent as a suspect.  :class:`SendErrors` counts such refusals per errno
and logs the cause once per errno, so a flapping link cannot flood the log.
"""

from __future__ import annotations

import collections
import errno
import logging
import random
from typing import Protocol

import trio
import trio.socket

Address = tuple[str, int]

# Largest datagram a receive will accept; anything longer was not sent by a member
# (members stay under MembershipConfig.max_datagram) and is cut short, then
# rejected by the codec as malformed.
RECEIVE_BUFFER = 65536

log = logging.getLogger(__name__)


class SendErrors:
    """Sends the local stack refused, counted per errno name; each cause logged once."""

    def __init__(self, owner: str, logger: logging.Logger | None = None) -> None:
        self.owner = owner
        self.log = logger or log
        self.counts: collections.Counter[str] = collections.Counter()

    def record(self, err: OSError, addr: Address) -> None:
        name = errno.errorcode.get(err.errno or 0, str(err.errno))
        first = name not in self.counts
        self.counts[name] += 1
        if first:
            self.log.warning(
                "%s: send to %s:%s failed: %s (%s); treating the peer as silent, "
                "further %s errors are counted, not logged",
                self.owner,
                addr[0],
                addr[1],
                err.strerror or err,
                name,
                name,
            )

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class DatagramTransport(Protocol):
    """An unreliable, unordered datagram service."""

    @property
    def local_address(self) -> Address: ...

    async def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram; failures are dropped (and counted), never raised."""

    async def receive(self) -> tuple[bytes, Address]:
        """The next datagram and the address it came from."""

    def close(self) -> None: ...


_ICMP_ERRORS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
)


class UdpTransport:
    """A trio UDP socket bound to host:port."""

    def __init__(self, sock: trio.socket.SocketType, address: Address) -> None:
        self._sock = sock
        self._address = address
        self.send_errors = SendErrors(f"udp {address[0]}:{address[1]}")

    @classmethod
    async def bind(cls, host: str, port: int) -> UdpTransport:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        try:
            await sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        bound = sock.getsockname()
        return cls(sock, (bound[0], bound[1]))

    @property
    def local_address(self) -> Address:
        return self._address

    async def send(self, data: bytes, addr: Address) -> None:
        try:
            await self._sock.sendto(data, addr)
        except OSError as e:
            # ECONNREFUSED and friends arrive from ICMP errors of earlier sends to a
            # dead peer; EINVAL (a blackhole route), ENETUNREACH (our link is down),
            # EPERM, ENOBUFS come from the local stack.  Every one of them is a lost
            # datagram to the failure detector, which exists for unreachable peers:
            # none may end the node.
            self.send_errors.record(e, addr)

    async def receive(self) -> tuple[bytes, Address]:
        while True:
            try:
                data, addr = await self._sock.recvfrom(RECEIVE_BUFFER)
            except OSError as e:
                # An ICMP error for an earlier send (refused, unreachable), reported
                # on the next receive: not a datagram.  Anything else (a closed
                # socket) is a real error.
                if e.errno in _ICMP_ERRORS:
                    continue
                raise
            return data, (addr[0], addr[1])

    def close(self) -> None:
        self._sock.close()


class RateWindow:
    """Bytes per second over the last ``window`` seconds, in one-second buckets."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._buckets: collections.deque[tuple[int, int]] = collections.deque()
        self.total = 0

    def add(self, now: float, n: int) -> None:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            s, v = self._buckets[-1]
            self._buckets[-1] = (s, v + n)
        else:
            self._buckets.append((second, n))
        self.total += n
        self._trim(now)

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self._buckets and self._buckets[0][0] + 1 <= horizon:
            self._buckets.popleft()

    def rate(self, now: float, since: float) -> float:
        """Average rate over the window, or since ``since`` if that is shorter."""
        self._trim(now)
        span = min(self.window, max(now - since, 1e-9))
        return sum(v for _, v in self._buckets) / span


class MeteredTransport:
    """Counts bytes both ways and, in test mode, drops datagrams at random.

    The drop happens on both sides, as the test mode of INTERFACE.md asks: an
    outgoing datagram is dropped before it is sent, an incoming one after it is
    received, each with probability ``drop_rate``.
    """

    def __init__(
        self,
        inner: DatagramTransport,
        drop_rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop rate must be in [0, 1), got {drop_rate}")
        self.inner = inner
        self.drop_rate = drop_rate
        self._rng = rng or random.Random()
        self.sent = RateWindow()
        self.received = RateWindow()
        self.dropped_out = 0
        self.dropped_in = 0
        self.started_at = trio.current_time()

    @property
    def local_address(self) -> Address:
        return self.inner.local_address

    async def send(self, data: bytes, addr: Address) -> None:
        if self.drop_rate and self._rng.random() < self.drop_rate:
            self.dropped_out += 1
            return
        self.sent.add(trio.current_time(), len(data))
        await self.inner.send(data, addr)

    async def receive(self) -> tuple[bytes, Address]:
        while True:
            data, addr = await self.inner.receive()
            if self.drop_rate and self._rng.random() < self.drop_rate:
                self.dropped_in += 1
                continue
            self.received.add(trio.current_time(), len(data))
            return data, addr

    def close(self) -> None:
        self.inner.close()

    def rates(self) -> tuple[float, float]:
        """(bytes sent per second, bytes received per second) over the last 10 s."""
        now = trio.current_time()
        return (
            self.sent.rate(now, self.started_at),
            self.received.rate(now, self.started_at),
        )
