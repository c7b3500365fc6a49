"""The trio shell around :class:`membership.core.MembershipCore`.

It owns a datagram transport and a codec, feeds the core what arrives and what
time it is, and carries out the sends the core returns.  The timer is one cancel
scope whose deadline follows ``core.next_deadline()``, so the shell sleeps until
there is work and runs unchanged on trio's ``MockClock``.

Nothing a peer sends can stop the service: datagrams that fail authentication,
freshness (stale, misaddressed or replayed: net.codec.DatagramCodec) or decoding
are counted by the codec and dropped, and an error in the core while
handling one message is logged and counted, not raised.  Nor can the network: a
send the local stack refuses (a withdrawn route, our own link down) is counted per
errno and dropped; the detector treats the peer as silent, as it should.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable

import trio

from membership.checks import datagram_problem
from membership.core import Action, Event, MembershipCore, Send
from net.codec import DatagramCodec, Rejected
from net.messages import Ack, Gossip, MemberRecord, Merge, Ping, PingReq
from net.transport import DatagramTransport, SendErrors

DATAGRAM_TYPES = (Ping, Ack, PingReq, Gossip, Merge)

EventListener = Callable[[Event, float], None]


class MembershipService:
    def __init__(
        self,
        core: MembershipCore,
        transport: DatagramTransport,
        codec: DatagramCodec,
        logger: logging.Logger | None = None,
    ) -> None:
        self.core = core
        self.transport = transport
        self.codec = codec
        self.log = logger or logging.getLogger(f"membership.{core.me.name}")
        self.listeners: list[EventListener] = []
        self.errors: collections.Counter[str] = collections.Counter()
        # Transports count their own refused sends; this catches any that raise anyway.
        self.send_errors = SendErrors(core.me.name, self.log)
        self._timer: trio.CancelScope | None = None
        self._changed = trio.Event()

    # --- life cycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._timer_loop)
            task_status.started()

    async def join(self, snapshot: Iterable[MemberRecord]) -> None:
        await self._execute(self.core.start(trio.current_time(), snapshot))

    async def leave(self) -> None:
        await self._execute(self.core.leave(trio.current_time()))

    async def wait_changed(self) -> None:
        """Return after the next change of the membership (for watchers)."""
        await self._changed.wait()

    # --- loops -----------------------------------------------------------------

    async def _receive_loop(self) -> None:
        port = self.transport.local_address[1]
        while True:
            data, addr = await self.transport.receive()
            try:
                msg = self.codec.open(data, port)
            except Rejected as r:
                self.log.debug("dropped datagram from %s:%s: %s", addr[0], addr[1], r)
                continue
            if not isinstance(msg, DATAGRAM_TYPES):
                self.codec.rejected["unexpected_type"] += 1
                continue
            problem = datagram_problem(msg)
            if problem is not None:
                self.codec.rejected["out_of_range"] += 1
                self.log.debug("dropped datagram from %s:%s: %s", addr[0], addr[1], problem)
                continue
            try:
                actions = self.core.on_message(msg, addr, trio.current_time())
            except Exception:
                self.errors["on_message"] += 1
                self.log.exception("error handling %s from %s", type(msg).__name__, addr)
                continue
            await self._execute(actions)

    async def _timer_loop(self) -> None:
        while True:
            with trio.CancelScope(deadline=self.core.next_deadline()) as scope:
                self._timer = scope
                await trio.sleep_forever()
            self._timer = None
            try:
                actions = self.core.tick(trio.current_time())
            except Exception:
                self.errors["tick"] += 1
                self.log.exception("error in membership timer")
                await trio.sleep(0.1)
                continue
            await self._execute(actions)

    async def _execute(self, actions: list[Action]) -> None:
        now = trio.current_time()
        changed = False
        for a in actions:
            if isinstance(a, Send):
                try:
                    data = self.codec.seal(a.message, a.addr[1])
                except Exception:  # oversize, or a value msgpack refuses
                    self.errors["oversize_send"] += 1
                    self.log.exception("refused to send an oversize %s", type(a.message).__name__)
                    continue
                try:
                    await self.transport.send(data, a.addr)
                except OSError as e:
                    self.send_errors.record(e, a.addr)  # by errno, each logged once
                except (ValueError, OverflowError) as e:
                    # An address no datagram can go to (a port beyond 65535, a host
                    # name that does not resolve): that message is lost, nothing more.
                    self.errors["send_failed"] += 1
                    self.log.warning(
                        "cannot send %s to %s: %s", type(a.message).__name__, a.addr, e
                    )
            else:
                changed = True
                self._log_event(a)
                for listener in self.listeners:
                    listener(a, now)
        if changed:
            self._changed.set()
            self._changed = trio.Event()
        # The core may now have an earlier deadline (a new probe, a suspicion).
        if self._timer is not None:
            deadline = self.core.next_deadline()
            if deadline < self._timer.deadline:
                self._timer.deadline = deadline

    def _log_event(self, e: Event) -> None:
        level = logging.WARNING if e.kind in ("failed", "suspected") else logging.INFO
        if e.kind == "self_refuted":
            self.log.log(level, "%s (self) %s; incarnation now %d", e.name, e.detail, e.incarnation)
        else:
            self.log.log(
                level, "%s %s: %s (incarnation %d)", e.name, e.kind, e.detail, e.incarnation
            )
