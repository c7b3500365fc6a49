"""The hot standbys: copies of the leader's scheduler, kept current by the leader.

The standbys are the live members after the leader in ring order: as many as it takes
to make a majority of the configured nodes with the leader, and a spare (see
:mod:`inference.service`).  Two halves:

* :class:`StandbyCopy` runs on every node and answers the leader's
  :class:`~net.messages.StandbySnapshotPart` (the whole scheduler state as plain data,
  msgpack-encoded and cut into parts of at most ``SNAPSHOT_PART`` bytes, so that a
  state of any size fits the frame limit; restored, all at once, when the last part
  is in: until then the copy is the one it had) and
  :class:`~net.messages.StandbyEvent` (the events the leader applied since, each a
  ``net.wire``-encoded event of :mod:`inference.events`).  It applies events only in
  sequence: one that does not follow its copy (another leader, a gap), or does not
  decode to a scheduler event, is refused, and the leader answers that with a snapshot.
  The copy also keeps this node's own scheduler when it stops leading
  (:meth:`StandbyCopy.keep`), tells a node taking over which state it holds
  (:meth:`StandbyCopy.state`) and hands it over part by part (:meth:`StandbyCopy.fetch`);
  the node that takes over calls :meth:`StandbyCopy.take`.
* :class:`Replicator` runs on the leader, one per standby (``rank``: 1 for the next
  member in ring order, 2 for the one after, ...): every applied event is queued with
  its sequence number (:meth:`Replicator.push`), and :meth:`Replicator.run` sends what
  is queued to its standby, a snapshot first whenever the standby changed, the
  leader changed, or a send failed.  A request carries at most ``STANDBY_BATCH``
  events and about ``STANDBY_BYTES`` of them; an event too large for any request (a
  submission of millions of inputs) is sent as part of a snapshot instead.

Terms.  Every copy is tagged with the lease term under which its leader produced it
(:mod:`inference.leader`), and copies are ordered by (term, event number): a copy
takes a snapshot only from a state at least as fresh as its own, and events only from
the leader, term and next number it holds.  So a leader of an older term (one cut off
on a minority side, whose lease has expired) can never overwrite what a newer
leadership replicated; it is refused and retries with snapshots, refused too, until
it stops.  The (term, seq) of a copy stays after :meth:`StandbyCopy.take`, as the
floor of what it accepts later.

Each replicator knows the newest event its standby holds (:attr:`Replicator.acked`),
and :meth:`Replicator.replicated` waits for one; the service waits for enough of them
(a majority with the leader) before the leader answers a worker's result or a client's
submission, so nothing acknowledged is lost with the leader or a minority.

What the standbys hold is bounded by what the leader holds: finished jobs are
forgotten (a replicated ``Forget``) once their output is in the file store.  Each
replicator counts what it sends (:attr:`Replicator.sent`) and logs it with each
snapshot and every ``REPORT_EVERY`` seconds while it sends.

Invariants: a copy is its leader's scheduler as of event ``seq`` under ``term``;
events are applied exactly once, in order, because each request names the first
event's number and term and the copy accepts only ``seq + 1`` of its own term;
(term, seq) of a copy never decreases.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from inference.events import EVENT_TYPES
from inference.scheduler import Scheduler
from membership.peers import ClusterView
from net import wire
from net.errors import one_line
from net.messages import (
    CopyPartRequest,
    CopyState,
    ErrorReply,
    StandbyEvent,
    StandbySnapshot,
    StandbySnapshotPart,
    StoreAck,
)
from net.rpc import MAX_FRAME, RpcError

# Scheduler events sent to the standby per request, at most, and their bytes (the
# first event goes even if larger, as long as it fits a frame).
STANDBY_BATCH = 512
STANDBY_BYTES = 4 * 1024 * 1024
# Bytes of snapshot per StandbySnapshotPart: well inside a frame with its envelope.
SNAPSHOT_PART = 4 * 1024 * 1024
# A single event larger than this cannot go in a StandbyEvent; a snapshot carries it.
MAX_EVENT = MAX_FRAME - 64 * 1024
# The most snapshot bytes a standby buffers (a peer's parts: bounded whatever they say).
MAX_SNAPSHOT = 1024 * 1024 * 1024
# How often the replicator logs what it has sent, at most (while it sends, and after a
# pause in sending).
REPORT_EVERY = 1.0
# Pause after a refused snapshot or an unreachable standby before trying again.
RETRY_PAUSE = 0.5


# What a copy holds, as a takeover compares them: (lease term, event number).
Fresh = tuple[int, int]


class StandbyCopy:
    """This node's copy of a leader's scheduler (empty until a leader sends one), or
    this node's own scheduler from when it led (kept by :meth:`keep`)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.scheduler: Scheduler | None = None
        self.seq = 0
        self.term = 0
        self.leader: str | None = None
        # The parts of a snapshot coming in: (leader, term, seq, parts) and the data so far.
        self._incoming: tuple[str, int, int, int] | None = None
        self._parts: list[bytes] = []
        self._size = 0
        # The copy packed for a new leader that fetches it: ((term, seq), bytes).
        self._packed: tuple[Fresh, bytes] | None = None

    @property
    def fresh(self) -> Fresh:
        """(term, seq) of what this copy holds (or last held: a floor for what it takes)."""
        return self.term, self.seq

    def state(self, me: str) -> CopyState:
        """What a node taking over is told (:class:`~net.messages.CopyStateRequest`)."""
        if self.scheduler is None or self.leader is None:
            return CopyState(me, "", 0, 0)
        return CopyState(me, self.leader, self.term, self.seq)

    def _older(self, term: int, seq: int) -> str | None:
        """Why a state of (term, seq) may not replace this copy's, or None."""
        if (term, seq) < self.fresh:
            mine = f"term {self.term} event {self.seq}"
            return f"older than this copy: term {term} event {seq} < {mine}"
        return None

    def snapshot(self, msg: StandbySnapshot) -> StoreAck:
        if (why := self._older(msg.term, msg.seq)) is not None:
            return StoreAck(False, why)
        return self._restore(msg.leader, msg.term, msg.seq, msg.snapshot)

    def part(self, msg: StandbySnapshotPart) -> StoreAck:
        """One part of a snapshot; the parts come in order, and the last restores it."""
        key = (msg.leader, msg.term, msg.seq, msg.parts)
        if not 0 <= msg.part < msg.parts:
            self._drop_parts()
            return StoreAck(False, f"snapshot part {msg.part} of {msg.parts}?")
        if (why := self._older(msg.term, msg.seq)) is not None:
            self._drop_parts()
            return StoreAck(False, why)
        if msg.part == 0:
            self._drop_parts()
            self._incoming = key
        elif self._incoming != key or len(self._parts) != msg.part:
            self._drop_parts()
            return StoreAck(False, "snapshot part out of order; send the snapshot again")
        self._size += len(msg.data)
        if self._size > MAX_SNAPSHOT:
            self._drop_parts()
            return StoreAck(False, f"snapshot over {MAX_SNAPSHOT} bytes")
        self._parts.append(msg.data)
        if msg.part + 1 < msg.parts:
            return StoreAck(True)
        data = b"".join(self._parts)
        self._drop_parts()
        try:
            plain = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several unrelated types on garbage
            return StoreAck(False, one_line(f"undecodable scheduler snapshot: {type(e).__name__}"))
        if not isinstance(plain, dict):
            return StoreAck(False, f"a scheduler snapshot is a map, not {type(plain).__name__}")
        return self._restore(msg.leader, msg.term, msg.seq, plain)

    def _drop_parts(self) -> None:
        self._incoming, self._parts, self._size = None, [], 0

    def _restore(self, leader: str, term: int, seq: int, plain: dict[str, Any]) -> StoreAck:
        try:
            scheduler = Scheduler.restore(plain)
        except Exception as e:  # a peer's plain data: any shape at all
            return StoreAck(
                False, one_line(f"unusable scheduler snapshot: {type(e).__name__}: {e}")
            )
        self._set(scheduler, leader, term, seq)
        self.log.info("standby copy of %s's scheduler at term %d event %d", leader, term, seq)
        return StoreAck(True)

    def _set(self, scheduler: Scheduler | None, leader: str | None, term: int, seq: int) -> None:
        self.scheduler, self.leader, self.term, self.seq = scheduler, leader, term, seq
        self._packed = None

    def keep(self, scheduler: Scheduler, leader: str, term: int, seq: int) -> bool:
        """Keep a leader's own scheduler as this node's copy when it stops leading (it
        may be the freshest state there is); False if the copy holds a fresher one."""
        if self._older(term, seq) is not None:
            self.log.warning(
                "%s's scheduler at term %d event %d is older than the copy here (term %d "
                "event %d): dropped",
                leader,
                term,
                seq,
                self.term,
                self.seq,
            )
            return False
        self._drop_parts()
        self._set(scheduler, leader, term, seq)
        return True

    def events(self, msg: StandbyEvent) -> StoreAck:
        if msg.term < self.term:
            return StoreAck(False, f"older than this copy: term {msg.term} < term {self.term}")
        if (
            self.scheduler is None
            or msg.leader != self.leader
            or msg.term != self.term
            or msg.seq != self.seq + 1
        ):
            return StoreAck(False, "standby copy is behind; send a snapshot")
        self._packed = None
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

    def fetch(self, msg: CopyPartRequest) -> StandbySnapshotPart | ErrorReply:
        """Part ``msg.part`` of this copy for a node taking over, if it still holds the
        state that node chose (packed once, at the first part, for all of them)."""
        if self.scheduler is None or self.leader is None or (msg.term, msg.seq) != self.fresh:
            return ErrorReply(
                f"no copy at term {msg.term} event {msg.seq} here (term {self.term} "
                f"event {self.seq}); ask again"
            )
        if self._packed is None or self._packed[0] != self.fresh:
            self._packed = (self.fresh, pack(self.scheduler))
        data = self._packed[1]
        cuts = range(0, max(len(data), 1), SNAPSHOT_PART)
        if not 0 <= msg.part < len(cuts):
            return ErrorReply(f"snapshot part {msg.part} of {len(cuts)}?")
        at = cuts[msg.part]
        return StandbySnapshotPart(
            self.leader,
            self.seq,
            msg.part,
            len(cuts),
            data[at : at + SNAPSHOT_PART],
            self.term,
        )

    def take(self) -> tuple[Scheduler, int, str] | None:
        """The copy (scheduler, event number, its leader) for this node taking over, once;
        its (term, seq) stays as the floor of what this copy accepts afterwards."""
        sched, leader = self.scheduler, self.leader
        if sched is None or leader is None:
            return None
        self.scheduler = None
        self._packed = None
        return sched, self.seq, leader


def pack(sched: Scheduler) -> bytes:
    return msgpack.packb(sched.snapshot(), use_bin_type=True)  # type: ignore[no-any-return]


def snapshot_parts(
    leader: str, seq: int, sched: Scheduler, term: int = 0
) -> list[StandbySnapshotPart]:
    """``sched``'s state as of event ``seq``, in parts of at most ``SNAPSHOT_PART`` bytes."""
    data = pack(sched)
    cuts = range(0, max(len(data), 1), SNAPSHOT_PART)
    return [
        StandbySnapshotPart(leader, seq, k, len(cuts), data[at : at + SNAPSHOT_PART], term)
        for k, at in enumerate(cuts)
    ]


@dataclass
class Sent:
    """What a replicator has sent its standbys (accepted or not), since it started."""

    snapshots: int = 0
    snapshot_bytes: int = 0
    events: int = 0
    event_bytes: int = 0
    requests: int = 0

    @property
    def bytes(self) -> int:
        return self.snapshot_bytes + self.event_bytes


# What a replicator reads from its leader: the scheduler, its event number and the
# lease term it leads under; None when not leading.
LeaderState = tuple[Scheduler, int, int]


class Replicator:
    """On the leader: keeps one standby's :class:`StandbyCopy` current, the member
    ``rank`` places after the leader in ring order (1: the next one)."""

    def __init__(
        self,
        me: str,
        view: ClusterView,
        state: Callable[[], LeaderState | None],
        log: logging.Logger,
        rank: int = 1,
    ) -> None:
        self.me = me
        self.view = view
        # The leader's scheduler, its event number and term, or None when not the leader.
        self._state = state
        self.log = log
        self.rank = rank
        self.standby: str | None = None
        self._queue: list[tuple[int, bytes]] = []
        self._needs_snapshot = True
        self._wake = trio.Event()
        self.sent = Sent()
        self._reported: tuple[int, float] = (0, 0.0)  # (bytes, when) of the last report
        # The newest event the current standby holds, and who waits for it to grow.
        self.acked = 0
        self._acked_changed = trio.Event()
        # Called whenever ``acked`` changes (the service waits on several replicators).
        self.on_acked: Callable[[], None] | None = None

    async def replicated(self, seq: int, timeout: float) -> bool:
        """Wait (up to ``timeout``) until the standby holds event ``seq``; True at once
        when there is no standby (a cluster of one) or this node does not lead."""
        with trio.move_on_after(timeout):
            while self.acked < seq and self._has_standby():
                await self._acked_changed.wait()
            return True
        return False

    def _has_standby(self) -> bool:
        if self._state() is None:
            return False
        return self._standby_now() is not None

    def _standby_now(self) -> str | None:
        ring = self.view.ring()
        return ring[self.rank] if len(ring) > self.rank and ring[0] == self.me else None

    def _acked_to(self, seq: int) -> None:
        self.acked = seq
        self._acked_changed.set()
        self._acked_changed = trio.Event()
        if self.on_acked is not None:
            self.on_acked()

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
        self._acked_to(0)  # until the snapshot is in (a new leadership numbers afresh)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with trio.move_on_after(REPORT_EVERY):
                await self._wake.wait()
            self._report()  # what was sent before this pause, once
            self._wake = trio.Event()
            while (state := self._state()) is not None:
                standby = self._standby_now()
                if standby != self.standby:
                    self.standby = standby
                    self._needs_snapshot = True
                    self._acked_to(0)
                if standby is None:
                    self._queue.clear()
                    self._acked_to(0)  # nobody to wait for
                    break
                try:
                    if self._needs_snapshot:
                        if await self._send_snapshot(standby, *state):
                            self._needs_snapshot = False
                            self._acked_to(state[1])
                        else:
                            await trio.sleep(RETRY_PAUSE)
                        continue
                    if not self._queue:
                        break
                    if len(self._queue[0][1]) > MAX_EVENT:
                        self.log.info("event %d too large to send alone", self._queue[0][0])
                        self._needs_snapshot = True
                        continue
                    # Everything queued goes in one request (up to a bound): under load
                    # that is many events per round trip, so replication never limits
                    # dispatch.
                    events = self._next_events()
                    first = self._queue[0][0]
                    self._count(events=len(events), event_bytes=sum(map(len, events)))
                    request = StandbyEvent(self.me, first, events, state[2])
                    reply = await self.view.call(standby, request)
                    if isinstance(reply, StoreAck) and reply.ok:
                        del self._queue[: len(events)]
                        self._acked_to(first + len(events) - 1)
                    else:
                        why = reply.error if isinstance(reply, StoreAck) else type(reply).__name__
                        self.log.debug("standby %s refused events from %d: %s", standby, first, why)
                        self._needs_snapshot = True
                except RpcError as e:
                    self.log.debug("standby %s unreachable: %s", standby, e)
                    self._needs_snapshot = True
                    await trio.sleep(RETRY_PAUSE)

    def _next_events(self) -> tuple[bytes, ...]:
        events: list[bytes] = []
        size = 0
        for _, data in self._queue[:STANDBY_BATCH]:
            if events and size + len(data) > STANDBY_BYTES:
                break
            events.append(data)
            size += len(data)
        return tuple(events)

    async def _send_snapshot(self, standby: str, sched: Scheduler, seq: int, term: int) -> bool:
        """The whole state as of ``seq``, part by part; True when the standby took it."""
        parts = snapshot_parts(self.me, seq, sched, term)
        self._queue = [e for e in self._queue if e[0] > seq]
        size = sum(len(p.data) for p in parts)
        self.sent.snapshots += 1
        for p in parts:
            self._count(snapshot_bytes=len(p.data))
            reply = await self.view.call(standby, p)
            if not (isinstance(reply, StoreAck) and reply.ok):
                why = reply.error if isinstance(reply, StoreAck) else type(reply).__name__
                self.log.info("standby %s refused snapshot part %d: %s", standby, p.part, why)
                return False
        self.log.info(
            "standby %s: snapshot at event %d, %d bytes in %d parts (%s)",
            standby,
            seq,
            size,
            len(parts),
            self.report(),
        )
        return True

    def _count(self, *, events: int = 0, event_bytes: int = 0, snapshot_bytes: int = 0) -> None:
        self.sent.requests += 1
        self.sent.events += events
        self.sent.event_bytes += event_bytes
        self.sent.snapshot_bytes += snapshot_bytes
        self._report()

    def _report(self) -> None:
        now = trio.current_time()
        if now - self._reported[1] >= REPORT_EVERY and self.sent.bytes > self._reported[0]:
            self.log.info("replication to standby %d: %s", self.rank, self.report())
            self._reported = (self.sent.bytes, now)

    def report(self) -> str:
        """What was sent to standbys so far, for the node's log (the bench reads it)."""
        s = self.sent
        return (
            f"sent {s.bytes} bytes in {s.requests} requests: {s.events} events "
            f"({s.event_bytes} bytes), {s.snapshots} snapshots ({s.snapshot_bytes} bytes)"
        )
