"""The hot standby: a copy of the leader's scheduler, kept current by the leader.

The standby is the next live member after the leader in ring order.  Two halves:

* :class:`StandbyCopy` runs on every node and answers the leader's
  :class:`~net.messages.StandbySnapshot` (the whole scheduler state as plain data) and
  :class:`~net.messages.StandbyEvent` (the events the leader applied since, each a
  ``net.wire``-encoded event of :mod:`inference.events`).  It applies events only in
  sequence: one that does not follow its copy (another leader, a gap), or does not
  decode to a scheduler event, is refused, and the leader answers that with a snapshot.
  When the leader fails and this node becomes leader, :meth:`StandbyCopy.take` hands
  the copy to :class:`~inference.leader.Leader`, which calls ``takeover``.
* :class:`Replicator` runs on the leader: every applied event is queued with its
  sequence number (:meth:`Replicator.push`), and :meth:`Replicator.run` sends what is
  queued to the current standby, a snapshot first whenever the standby changed, the
  leader changed, or a send failed.

Invariant: the copy is the leader's scheduler as of event ``seq``; events are applied
exactly once, in order, because each request names the first event's number and the
copy accepts only ``seq + 1``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from inference.events import EVENT_TYPES
from inference.scheduler import Scheduler
from membership.peers import ClusterView
from net import wire
from net.errors import one_line
from net.messages import StandbyEvent, StandbySnapshot, StoreAck
from net.rpc import RpcError

# Scheduler events sent to the standby per request, at most.
STANDBY_BATCH = 512
# Pause after a refused snapshot or an unreachable standby before trying again.
RETRY_PAUSE = 0.5


class StandbyCopy:
    """This node's copy of the leader's scheduler (empty until a leader sends one)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.scheduler: Scheduler | None = None
        self.seq = 0
        self.leader: str | None = None

    def snapshot(self, msg: StandbySnapshot) -> StoreAck:
        try:
            scheduler = Scheduler.restore(msg.snapshot)
        except Exception as e:  # a peer's plain data: any shape at all
            return StoreAck(
                False, one_line(f"unusable scheduler snapshot: {type(e).__name__}: {e}")
            )
        self.scheduler = scheduler
        self.seq = msg.seq
        self.leader = msg.leader
        self.log.info("standby copy of %s's scheduler at event %d", msg.leader, msg.seq)
        return StoreAck(True)

    def events(self, msg: StandbyEvent) -> StoreAck:
        if self.scheduler is None or msg.leader != self.leader or msg.seq != self.seq + 1:
            return StoreAck(False, "standby copy is behind; send a snapshot")
        for data in msg.events:
            try:
                event = wire.decode(data)
            except wire.DecodeError as e:
                return StoreAck(False, f"undecodable scheduler event: {e}")
            if not isinstance(event, EVENT_TYPES):
                return StoreAck(False, f"{type(event).__name__} is not a scheduler event")
            try:
                self.scheduler.handle(event)
            except Exception as e:
                # Half applied, the copy is no longer the leader's: drop it, so the
                # leader sends a snapshot (and a takeover never starts from it).
                self.scheduler = None
                why = one_line(f"{type(event).__name__} failed: {type(e).__name__}: {e}")
                return StoreAck(False, f"standby copy dropped: {why}")
            self.seq += 1
        return StoreAck(True)

    def take(self, me: str) -> tuple[Scheduler, int, str] | None:
        """The copy (scheduler, event number, its leader) for a new leader, once.

        None when there is no copy or it is this node's own (it led before)."""
        sched, leader = self.scheduler, self.leader
        if sched is None or leader is None or leader == me:
            return None
        self.scheduler = None
        return sched, self.seq, leader


class Replicator:
    """On the leader: keeps the next live member's :class:`StandbyCopy` current."""

    def __init__(
        self,
        me: str,
        view: ClusterView,
        state: Callable[[], tuple[Scheduler, int] | None],
        log: logging.Logger,
    ) -> None:
        self.me = me
        self.view = view
        # The leader's scheduler and its event number, or None when not the leader.
        self._state = state
        self.log = log
        self.standby: str | None = None
        self._queue: list[tuple[int, bytes]] = []
        self._needs_snapshot = True
        self._wake = trio.Event()

    def push(self, seq: int, event: Any) -> None:
        """Queue the event the leader just applied as number ``seq``."""
        self._queue.append((seq, wire.encode(event)))
        self._wake.set()

    def clear(self) -> None:
        """Drop what is queued (a new leadership numbers its events afresh)."""
        self._queue.clear()

    def restart(self) -> None:
        """Start over with a snapshot (a new leadership, a membership change)."""
        self._needs_snapshot = True
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while (state := self._state()) is not None:
                ring = self.view.ring()
                standby = ring[1] if len(ring) > 1 and ring[0] == self.me else None
                if standby != self.standby:
                    self.standby = standby
                    self._needs_snapshot = True
                if standby is None:
                    self._queue.clear()
                    break
                try:
                    if self._needs_snapshot:
                        sched, seq = state
                        snap = sched.snapshot()
                        self._queue = [e for e in self._queue if e[0] > seq]
                        reply = await self.view.call(standby, StandbySnapshot(self.me, seq, snap))
                        if isinstance(reply, StoreAck) and reply.ok:
                            self._needs_snapshot = False
                        else:
                            await trio.sleep(RETRY_PAUSE)
                        continue
                    if not self._queue:
                        break
                    # Everything queued goes in one request: under load that is many
                    # events per round trip, so replication never limits dispatch.
                    batch = self._queue[:STANDBY_BATCH]
                    events = tuple(data for _, data in batch)
                    reply = await self.view.call(
                        standby, StandbyEvent(self.me, batch[0][0], events)
                    )
                    if isinstance(reply, StoreAck) and reply.ok:
                        del self._queue[: len(batch)]
                    else:
                        self._needs_snapshot = True
                except RpcError as e:
                    self.log.debug("standby %s unreachable: %s", standby, e)
                    self._needs_snapshot = True
                    await trio.sleep(RETRY_PAUSE)
